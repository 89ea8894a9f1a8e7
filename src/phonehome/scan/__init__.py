"""The leak scanner: find a device's identifiers sent in cleartext in a capture (``phonehome scan``).

Entry point for callers: :func:`phonehome.scan.scanner.scan_capture`. Nothing heavy is imported here.

How it fits: identifiers -> :mod:`.forms` (canonical forms, encoded needles) -> :mod:`.matcher` (hyperscan or
pure Python, verified matches) over the bytes that :mod:`.pcapfile`, :mod:`.packets`, :mod:`.reassembly` and
:mod:`.protocols` recover, and over every layer :mod:`.layers` decodes inside them (gzip>base64>...).
"""

from __future__ import annotations
