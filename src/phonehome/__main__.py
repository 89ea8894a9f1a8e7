from __future__ import annotations

from phonehome.cli import main

raise SystemExit(main())
