"""pytest glue for phonehome (registered through the ``pytest11`` entry point).

Imports nothing heavy: ``pytest --help`` and ``--collect-only`` work with no adb, tshark or phone.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("phonehome", "phonehome: catch phones phoning home")
    group.addoption("--lab", action="store_true", default=False,
                    help="run lab tests that need real phones (skipped otherwise)")
