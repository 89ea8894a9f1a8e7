"""What the uiautomator2 backend reads from a phone's own output: power state, keyguard, Parcels, IMEIs, and how
tests are tied to devices for xdist scheduling. Pure functions; no phone needed."""

from __future__ import annotations

import pytest

from phonehome.devices.android import (
    luhn_ok,
    parse_keyguard_showing,
    parse_parcel_string,
    parse_screen_state,
    parse_subinfo_dump,
)
from phonehome.devices.u2 import is_tcp_serial
from phonehome.plugin import device_of
from phonehome.virtual.shell import parcel_dump, parcel_string16


@pytest.mark.parametrize(("dump", "awake"), [
    ("POWER MANAGER\n  mWakefulness=Awake\n  mWakefulnessChanging=false", True),
    ("  mWakefulness=Asleep", False),
    ("  mWakefulness=Dozing", False),
    ("  mWakefulness=Dreaming", False),
    ("Display Power: state=ON\n", True),
    ("Display Power: state=OFF\n", False),
])
def test_screen_state_comes_from_dumpsys_power(dump: str, awake: bool) -> None:
    assert parse_screen_state(dump).awake is awake


def test_unknown_power_output_is_refused() -> None:
    with pytest.raises(ValueError, match="mWakefulness"):
        parse_screen_state("nothing useful")


@pytest.mark.parametrize(("dump", "showing"), [
    ("    mShowingLockscreen=true mShowingDream=false mDreamingLockscreen=true", True),
    ("    mShowingLockscreen=false mShowingDream=false mDreamingLockscreen=false", False),
    ("    isStatusBarKeyguard=false\n    KeyguardServiceDelegate\n      showing=true\n      occluded=false", True),
    ("    KeyguardServiceDelegate\n      showing=false\n      showingAndNotOccluded=false", False),
    ("  KeyguardStateMonitor\n    mIsShowing=true\n    mSimSecure=false", True),
])
def test_keyguard_state_comes_from_dumpsys_window(dump: str, showing: bool) -> None:
    assert parse_keyguard_showing(dump) is showing


def test_a_keyguard_nobody_reports_is_not_taken_as_unlocked() -> None:
    with pytest.raises(ValueError, match="no keyguard field"):
        parse_keyguard_showing("WINDOW MANAGER WINDOWS\n  Window #0 Window{...}")


@pytest.mark.parametrize("value", ["352099001761481", "+8613800138000", "8986011234567890123", "x", "ab\u00e9"])
def test_parcel_strings_decode_as_service_call_prints_them(value: str) -> None:
    reply = (0).to_bytes(4, "little") + parcel_string16(value)
    assert parse_parcel_string(parcel_dump(reply)) == value


def test_a_refused_or_null_parcel_is_no_value() -> None:
    refused = (-1).to_bytes(4, "little", signed=True) + parcel_string16("SecurityException") + bytes(4)
    assert parse_parcel_string(parcel_dump(refused)) is None
    assert parse_parcel_string(parcel_dump((0).to_bytes(4, "little") + parcel_string16(None))) is None
    assert parse_parcel_string("Result: Parcel(NULL)") is None


def test_imei_check_digit() -> None:
    assert luhn_ok("352099001761481")
    assert luhn_ok("490154203237518")
    assert not luhn_ok("352099001761482")
    assert not luhn_ok("35209900176148a")


def test_iphonesubinfo_dump_of_older_androids() -> None:
    dump = "Phone Subscriber Info:\n  Phone Type = GSM\n  Device ID = 352099001761481\n"
    assert parse_subinfo_dump(dump) == {"imei": "352099001761481"}
    assert parse_subinfo_dump("Phone Subscriber Info:\n  Device ID = null\n") == {}


@pytest.mark.parametrize(("serial", "tcp"), [("192.168.1.20:5555", True), ("R58M12ABCDE", False),
                                            ("emulator-5554", False), ("phone.lab:5555", True)])
def test_tcp_serials(serial: str, tcp: bool) -> None:
    assert is_tcp_serial(serial) is tcp


@pytest.mark.parametrize(("nodeid", "device"), [
    ("tests/test_unlock.py::test_unlock[nokia]", "nokia"),
    ("tests/test_unlock.py::test_unlock[nokia-2]", "nokia-2"),
    ("tests/test_unlock.py::test_unlock[nokia-2-fast]", "nokia-2"),
    ("tests/test_unlock.py::test_unlock[slow-nokia]", "nokia"),
    ("tests/test_unlock.py::test_unlock[nokia]@nokia", "nokia"),
    ("tests/test_other.py::test_plain", None),
    ("tests/test_other.py::test_param[pixel]", None),
])
def test_tests_are_tied_to_their_device(nodeid: str, device: str | None) -> None:
    assert device_of(nodeid, ("nokia", "nokia-2")) == device
