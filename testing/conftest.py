"""Shared set-up for the project's own tests (not the privacy suite in ``tests/``)."""

from __future__ import annotations

pytest_plugins = ["pytester"]
