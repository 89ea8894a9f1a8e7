"""The uiautomator2 backend on a real phone: the first ``backend: uiautomator2`` device of the inventory.

Skipped unless ``--lab`` (or PHONEHOME_LAB=1) is given; a bench runs it as
``pytest testing/lab --lab --phonehome-inventory bench.yaml`` with the PIN variable of that phone exported.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from phonehome.devices.u2 import U2Phone
from phonehome.inventory import DeviceEntry
from phonehome.runstate import run_state

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def real_entry(pytestconfig: pytest.Config) -> DeviceEntry:
    state = run_state(pytestconfig)
    if not state.settings.lab:
        pytest.skip("needs a real phone: run with --lab")
    if state.inventory is None:
        pytest.skip(f"no inventory at {state.settings.inventory}")
    entry = next((entry for entry in state.selected if entry.backend == "uiautomator2"), None)
    if entry is None:
        pytest.skip(f"no backend: uiautomator2 device selected in {state.settings.inventory}")
    return entry


@pytest.fixture(scope="module")
def real_phone(pytestconfig: pytest.Config, real_entry: DeviceEntry) -> Iterator[U2Phone]:
    host, port = run_state(pytestconfig).adb_address(real_entry)
    phone = U2Phone(real_entry, adb_host=host, adb_port=port)
    phone.connect()
    yield phone
    phone.close()


def test_info_names_the_phone(real_phone: U2Phone, real_entry: DeviceEntry) -> None:
    info = real_phone.info()
    assert info["serial"] == real_entry.serial
    assert str(info["sdk"]).isdigit()
    assert info["fingerprint"]


def test_screen_off_and_on_are_verified_from_dumpsys_power(real_phone: U2Phone) -> None:
    real_phone.screen_off()
    assert not real_phone.screen_state().awake
    assert real_phone.screen_on() is True
    assert real_phone.screen_state().awake
    assert real_phone.screen_on() is False  # already on: nothing to do


def test_unlock_from_a_dark_screen_leaves_no_keyguard(real_phone: U2Phone, real_entry: DeviceEntry) -> None:
    real_phone.screen_off()
    assert real_phone.unlock() is True
    assert real_phone.screen_state().awake
    if real_entry.unlock.method != "none":
        assert not real_phone.keyguard_showing()


def test_identifiers_read_from_the_phone_name_their_source(real_phone: U2Phone, real_entry: DeviceEntry) -> None:
    identifiers, sources = real_phone.read_identifiers()
    assert set(identifiers.names()) <= set(real_entry.read_identifiers)
    assert set(sources) == set(identifiers.names())
    if "serial" in real_entry.read_identifiers:
        assert identifiers.get("serial"), sources


def test_evidence_can_be_collected(real_phone: U2Phone, tmp_path: Path) -> None:
    shot = real_phone.screenshot(tmp_path / "screen.png")
    assert shot.stat().st_size > 0
    assert "mCurrentFocus" in real_phone.dumpsys_window() or "Window" in real_phone.dumpsys_window()


def test_power_on_is_a_new_boot(real_phone: U2Phone) -> None:
    before = real_phone.boot_id()
    real_phone.power_on()
    assert real_phone.boot_id() != before
    assert real_phone.screen_state() is not None
