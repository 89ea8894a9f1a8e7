"""The leak scanner: find a device's identifiers sent in cleartext in a capture (``phonehome scan``).

Entry point for callers: :func:`phonehome.scan.scanner.scan_capture`. Nothing heavy is imported here.
"""

from __future__ import annotations
