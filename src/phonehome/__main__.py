from __future__ import annotations

from phonehome.cli import entry

entry()
