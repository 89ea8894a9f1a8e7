"""Fixtures shared by the virtual-phone tests of this tier (adb CLI, adbutils, uiautomator2)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from phonehome.virtual.adbserver import AdbServer
from phonehome.virtual.phone import VirtualPhone


@pytest.fixture
def no_real_adb(monkeypatch: pytest.MonkeyPatch) -> None:
    """adbutils (and uiautomator2 through it) must never start a real adb server behind the test's back."""
    monkeypatch.setenv("ADBUTILS_ADB_PATH", "/bin/false")


@pytest.fixture
def server(phones: list[VirtualPhone]) -> Iterator[AdbServer]:
    """A running virtual adb server for the test module's ``phones`` fixture, stopped after the test."""
    srv = AdbServer(phones)
    srv.start()
    yield srv
    srv.stop()
