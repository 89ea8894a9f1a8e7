"""phonehome: catch phones phoning home.

A plain library (inventory, phone control, capture, scanning, findings) with thin pytest glue in
:mod:`phonehome.plugin`. Importing this package imports nothing heavy.
"""

from __future__ import annotations

__version__ = "0.1.0"
