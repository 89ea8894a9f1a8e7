"""The virtual phone speaks the release its firmware names (9, 11, 13, 14), in the formats real phones of that
release print: the backend's parsers read its state from each style, and each style's fields are those of the
real outputs under ``testing/android_outputs/``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from phonehome.devices.android import (
    checked_subscriber_value,
    iphonesubinfo_code,
    parse_getprop,
    parse_keyguard_showing,
    parse_last_locations,
    parse_parcel_string,
    parse_screen_state,
    parse_subinfo_dump,
    release_of,
)
from phonehome.errors import InputError
from phonehome.identifiers import Identifiers, Location
from phonehome.inventory import load_inventory
from phonehome.virtual.dumps import STYLES, release_style
from phonehome.virtual.firmware import ANDROID_SDK, parse_profile
from phonehome.virtual.lab import LabDevice
from phonehome.virtual.phone import BootTimings, VirtualPhone, VirtualPhoneSpec
from phonehome.virtual.shell import Shell

OUTPUTS = Path(__file__).resolve().parent.parent / "android_outputs"
IMEI = "352099001761481"
PIN = "4711"
FAST = BootTimings(adbd_linger_s=0.1, absent_s=0.1, offline_s=0.1, booting_s=0.1)
IDS = Identifiers(values=(("imei", IMEI), ("imsi", "310260000000000")), locations=(Location(52.5163, 13.3777),))
#: style -> the release a firmware profile names for it
RELEASES = {9: "9", 11: "11", 13: "13", 14: "14"}


@pytest.fixture(params=STYLES, ids=[f"android{style}" for style in STYLES])
def phone(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VirtualPhone]:
    release = RELEASES[request.param]
    spec = VirtualPhoneSpec(serial="VSTYLE01", label="style", model="Style Phone", identifiers=IDS,
                            unlock_method="pin", unlock_secret=PIN, timings=FAST, android_release=release,
                            sdk=ANDROID_SDK[release])
    p = VirtualPhone(spec, storage_dir=tmp_path)
    yield p
    p.close()


def sh(phone: VirtualPhone, line: str) -> str:
    out: list[bytes] = []
    Shell(phone).run(line, out.append, out.append)
    return b"".join(out).decode(errors="replace")


def test_the_parsers_read_screen_and_keyguard_from_every_style(phone: VirtualPhone) -> None:
    sdk, maker = release_of(parse_getprop(sh(phone, "getprop")))
    assert sdk == phone.spec.sdk and release_style(sdk) in STYLES
    states = []
    for step in ("", "input keyevent 224", f"input text {PIN}; input keyevent 66"):
        sh(phone, step)
        states.append((parse_screen_state(sh(phone, "dumpsys power"), sdk, maker).awake,
                       parse_keyguard_showing(sh(phone, "dumpsys window"), sdk, maker)))
    assert states == [(False, True), (True, True), (True, False)]


def test_location_reads_in_every_style(phone: VirtualPhone) -> None:
    assert parse_last_locations(sh(phone, "dumpsys location"), phone.spec.sdk) == ((52.5163, 13.3777),)


def test_the_imei_is_the_shells_on_9_only(phone: VirtualPhone) -> None:
    """From Android 10 the shell is refused device identifiers: the backend reads none, and says so."""
    sdk = phone.spec.sdk
    reply = sh(phone, f"service call iphonesubinfo {iphonesubinfo_code('imei', sdk)}")
    value = parse_parcel_string(reply, sdk)
    imei = checked_subscriber_value("imei", value) if value else None
    dumped = parse_subinfo_dump(sh(phone, "dumpsys iphonesubinfo"), sdk).get("imei")
    assert (imei, dumped) == ((IMEI, IMEI) if release_style(sdk) == 9 else (None, None))


def _fields(text: str) -> set[str]:
    return set(re.findall(r"\b(m?[A-Za-z]\w*)=", text))


@pytest.mark.parametrize(("style", "real"), [(13, "android13-mediatek"), (14, "android14-xiaomi")])
def test_power_fields_are_those_of_a_real_phone_of_the_release(tmp_path: Path, style: int, real: str) -> None:
    release = RELEASES[style]
    phone = VirtualPhone(VirtualPhoneSpec(serial="VSTYLE02", label="s", model="m", android_release=release,
                                          sdk=ANDROID_SDK[release], timings=FAST), storage_dir=tmp_path)
    try:
        virtual = sh(phone, "dumpsys power")
    finally:
        phone.close()
    real_text = (OUTPUTS / real / "dumpsys_power.txt").read_text(encoding="utf-8")
    assert _fields(virtual) <= _fields(real_text)
    assert virtual.splitlines()[:5] == real_text.splitlines()[1:6]  # header and the constants block


def test_keyguard_fields_of_the_13_style_are_those_of_the_real_android_13(tmp_path: Path) -> None:
    phone = VirtualPhone(VirtualPhoneSpec(serial="VSTYLE03", label="s", model="m", android_release="13", sdk=33,
                                          unlock_method="swipe", timings=FAST), storage_dir=tmp_path)
    try:
        virtual = sh(phone, "dumpsys window")
    finally:
        phone.close()
    real = (OUTPUTS / "android13-mediatek" / "dumpsys_window.txt").read_text(encoding="utf-8")
    keyguard = {"showing", "mIsShowing", "mDreamingLockscreen", "isKeyguardShowing", "mInputRestricted",
                "screenState", "interactiveState", "mShowingLockscreen", "isStatusBarKeyguard"}
    assert _fields(virtual) & keyguard == _fields(real) & keyguard


def test_a_profile_names_its_release_and_an_unknown_one_is_refused() -> None:
    profile = parse_profile({"profile": 1, "name": "p", "android": 13, "rules": []}, source="p.yaml")
    assert (profile.android, profile.sdk) == ("13", 33)
    assert parse_profile({"profile": 1, "name": "p", "rules": []}, source="p.yaml").sdk == 0
    with pytest.raises(InputError, match="unknown Android release '7'"):
        parse_profile({"profile": 1, "name": "p", "android": "7", "rules": []}, source="p.yaml")


def test_the_lab_builds_each_shipped_phone_in_its_profiles_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHONEHOME_PIN_NOKIA7PLUS_2019", "2580")
    monkeypatch.setenv("PHONEHOME_PASSWORD_ADSDK_PHONE", "a password")
    inventory = load_inventory(Path(__file__).resolve().parents[2] / "devices.yaml")
    releases = {entry.label: (LabDevice.from_entry(entry).spec.android_release,
                              release_style(LabDevice.from_entry(entry).spec.sdk)) for entry in inventory.devices}
    assert releases == {"nokia7plus-2019": ("9", 9), "nokia7plus-fixed": ("11", 11), "adsdk-phone": ("13", 13),
                        "clean-phone": ("14", 14), "nokia7plus-tls": ("9", 9)}
