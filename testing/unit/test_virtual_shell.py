"""The virtual phone's shell and state machine, without sockets: parsing, Android command output, keyguard."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phonehome.devices.android import parse_keyguard_showing
from phonehome.errors import InputError
from phonehome.identifiers import Identifiers, Location, parse_identifiers
from phonehome.virtual.phone import BootTimings, VirtualPhone, VirtualPhoneSpec
from phonehome.virtual.shell import Shell, ShellSyntaxError, parcel_dump, parcel_string16, parse

IMEI = "352099001761481"
IMEI2 = "352099001761499"
IMSI = "310260000000000"
PIN = "4711"
FAST = BootTimings(adbd_linger_s=0.1, absent_s=0.1, offline_s=0.1, booting_s=0.1)
IDS = Identifiers(values=(("imei", IMEI), ("imei", IMEI2), ("imsi", IMSI), ("iccid", "8901260000000000001"),
                          ("serial", "R58M12ABCDE"), ("phone", "+4930123456"), ("android_id", "9774d56d682e549c"),
                          ("wifi_mac", "ac:37:43:4d:5e:6f"), ("bt_mac", "ac:37:43:4d:5e:70")),
                  locations=(Location(52.5163, 13.3777),))


def make_phone(tmp_path: Path, **overrides: object) -> VirtualPhone:
    fields: dict[str, object] = {"serial": "VIRT0001", "label": "virtual-1", "model": "Nokia 7 Plus",
                                 "identifiers": IDS, "unlock_method": "pin", "unlock_secret": PIN, "timings": FAST}
    fields.update(overrides)
    return VirtualPhone(VirtualPhoneSpec(**fields), storage_dir=tmp_path)  # type: ignore[arg-type]


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[VirtualPhone]:
    p = make_phone(tmp_path)
    yield p
    p.close()


def sh(phone: VirtualPhone, line: str) -> tuple[int, str, str]:
    out: list[bytes] = []
    err: list[bytes] = []
    status = Shell(phone).run(line, out.append, err.append)
    return status, b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")


# --- the interpreter -------------------------------------------------------------------------------------------

def test_adbutils_exit_marker_reports_the_status_of_the_command(phone: VirtualPhone) -> None:
    assert sh(phone, "false; echo X4EXIT:$?") == (0, "X4EXIT:1\n", "")
    assert sh(phone, "getprop ro.product.model; echo X4EXIT:$?")[1] == "Nokia 7 Plus\nX4EXIT:0\n"
    assert sh(phone, "nosuch --flag; echo X4EXIT:$?")[1] == "X4EXIT:127\n"


def test_and_or_lists_short_circuit(phone: VirtualPhone) -> None:
    assert sh(phone, "true && echo yes || echo no")[1] == "yes\n"
    assert sh(phone, "false && echo yes || echo no")[1] == "no\n"
    assert sh(phone, "false || false")[0] == 1


def test_quoting_and_expansion(phone: VirtualPhone) -> None:
    assert sh(phone, "echo 'a  b' \"c $?\" d\\ e")[1] == "a  b c 0 d e\n"
    assert sh(phone, "X=5; echo ${X}x \"$X\" '$X'")[1] == "5x 5 $X\n"
    with pytest.raises(ShellSyntaxError):
        parse("echo 'unterminated")
    assert sh(phone, "echo 'open")[0] == 2


def test_assignment_prefix_is_passed_to_the_command_only(phone: VirtualPhone) -> None:
    status, _, err = sh(phone, "CLASSPATH=/data/local/tmp/missing.jar app_process / com.wetest.uia2.Main")
    assert status == 1
    assert "/data/local/tmp/missing.jar" in err
    assert sh(phone, "A=1 true; echo \"[$A]\"")[1] == "[]\n"


def test_pipes_and_redirections(phone: VirtualPhone) -> None:
    assert sh(phone, "dumpsys power | grep mWakefulness=")[1].strip() == "mWakefulness=Asleep"
    assert sh(phone, "echo hi > /data/local/tmp/f; cat /data/local/tmp/f")[1] == "hi\n"
    assert sh(phone, "echo more >> /data/local/tmp/f; cat /data/local/tmp/f | wc -l")[1] == "2\n"
    _, out, err = sh(phone, "cat /nope 2>/dev/null; echo $?")
    assert (out, err) == ("1\n", "")
    assert sh(phone, "cat /nope 2>&1")[1] == "cat: /nope: No such file or directory\n"
    assert "Read-only file system" in sh(phone, "echo x > /system/f")[2]


def test_unknown_command_fails_as_on_android(phone: VirtualPhone) -> None:
    assert sh(phone, "frobnicate") == (127, "", "/system/bin/sh: frobnicate: inaccessible or not found\n")


def test_exit_and_child_shell(phone: VirtualPhone) -> None:
    assert sh(phone, "sh -c 'exit 3'; echo $?")[1] == "3\n"
    assert sh(phone, "exit 4; echo never") == (4, "", "")


# --- Android commands ------------------------------------------------------------------------------------------

def test_identifiers_where_android_exposes_them(phone: VirtualPhone) -> None:
    assert sh(phone, "getprop ro.serialno")[1] == "R58M12ABCDE\n"
    assert sh(phone, "settings get secure android_id")[1] == "9774d56d682e549c\n"
    assert sh(phone, "settings get secure bluetooth_address")[1] == "AC:37:43:4D:5E:70\n"
    assert sh(phone, "cat /sys/class/net/wlan0/address")[1] == "ac:37:43:4d:5e:6f\n"
    assert "gps 52.516300,13.377700" in sh(phone, "dumpsys location")[1]
    assert f"Device ID = {IMEI}" in sh(phone, "dumpsys iphonesubinfo")[1]


def test_service_call_iphonesubinfo_prints_a_real_parcel(phone: VirtualPhone) -> None:
    out = sh(phone, "service call iphonesubinfo 1")[1]
    assert out.startswith("Result: Parcel(\n  0x00000000: 00000000 0000000f 00350033 00300032 '........3.5.2.0.'")
    assert out.rstrip().endswith("')")
    digits = "".join(ch for line in out.splitlines()[1:] for ch in line.split("'")[1] if ch.isdigit())
    assert digits == IMEI
    imsi_out = sh(phone, "service call iphonesubinfo 7")[1]
    assert "".join(ch for line in imsi_out.splitlines()[1:] for ch in line.split("'")[1] if ch.isdigit()) == IMSI


def test_parcel_dump_round_trips_utf16() -> None:
    data = (0).to_bytes(4, "little") + parcel_string16("ab")
    assert parcel_dump(data) == ("Result: Parcel(\n  0x00000000: 00000000 00000002 00620061 00000000 "
                                 "'........a.b.....')")


def test_android_10_denies_device_identifiers_unless_privileged(tmp_path: Path) -> None:
    plain = make_phone(tmp_path / "a", android_release="10", sdk=29)
    rooted = make_phone(tmp_path / "b", android_release="10", sdk=29, rooted=True)
    try:
        denied = sh(plain, "service call iphonesubinfo 1")[1]
        assert "ffffffff" in denied.splitlines()[1]
        assert "does not meet the requirements" in "".join(
            line.split("'")[1] for line in denied.splitlines()[1:]).replace(".", "")
        assert IMEI not in denied.replace(".", "")
        allowed = sh(rooted, "service call iphonesubinfo 1")[1]
        assert "".join(ch for line in allowed.splitlines()[1:] for ch in line.split("'")[1] if ch.isdigit()) == IMEI
    finally:
        plain.close()
        rooted.close()


def test_md5sum_is_the_real_md5_of_a_stored_file(phone: VirtualPhone) -> None:
    phone.fs.write("/data/local/tmp/u2.jar", b"\x00jar bytes\xff")
    expected = hashlib.md5(b"\x00jar bytes\xff").hexdigest()
    assert sh(phone, "toybox md5sum /data/local/tmp/u2.jar")[1] == f"{expected}  /data/local/tmp/u2.jar\n"
    assert sh(phone, "md5sum /data/local/tmp/none")[0] == 1


def test_wm_size_and_display_rotation_as_adbutils_parses_them(phone: VirtualPhone) -> None:
    assert sh(phone, "wm size")[1] == "Physical size: 1080x2160\n"
    assert "orientation=0," in sh(phone, "dumpsys display")[1]
    sh(phone, "wm size 720x1440")
    assert "Override size: 720x1440" in sh(phone, "wm size")[1]


def test_screencap_is_a_png_of_the_screen(phone: VirtualPhone) -> None:
    from PIL import Image

    out: list[bytes] = []
    assert Shell(phone).run("screencap -p", out.append, out.append) == 0
    image = Image.open(io.BytesIO(b"".join(out)))
    assert image.format == "PNG"
    assert image.size == (1080, 2160)
    assert image.getpixel((10, 10)) == (0, 0, 0)  # screen off


# --- screen and keyguard ---------------------------------------------------------------------------------------

def keyguard_fields(phone: VirtualPhone) -> dict[str, str]:
    out = sh(phone, "dumpsys window policy")[1]
    fields: dict[str, str] = {}
    for token in out.split():
        if "=" in token:
            key, _, value = token.partition("=")
            fields.setdefault(key, value)
    return fields


def test_pin_keyguard_needs_text_and_enter_and_counts_wrong_pins(phone: VirtualPhone) -> None:
    sh(phone, "input text 0000 && input keyevent 66")
    assert phone.wrong_unlock_attempts == 0  # screen off: nothing typed
    sh(phone, "input keyevent KEYCODE_WAKEUP")
    assert phone.screen_on and phone.locked
    assert parse_keyguard_showing(sh(phone, "dumpsys window")[1], phone.spec.sdk)
    assert phone.foreground == "com.android.systemui"
    sh(phone, "input swipe 540 1800 540 300")  # a swipe only brings up the bouncer
    assert phone.locked
    sh(phone, "input text 0000; input keyevent 66")
    sh(phone, "input text 1")
    sh(phone, "input keyevent ENTER")
    assert phone.locked and phone.wrong_unlock_attempts == 2
    sh(phone, f"input text {PIN}")
    assert phone.locked  # not before ENTER
    sh(phone, "input keyevent 66")
    assert not phone.locked
    fields = keyguard_fields(phone)
    assert (fields["showing"], fields["isStatusBarKeyguard"], fields["mInputRestricted"]) == ("false", "false", "false")
    assert not parse_keyguard_showing(sh(phone, "dumpsys window")[1], phone.spec.sdk)
    assert phone.foreground == "com.android.launcher3"
    assert "mCurrentFocus=Window{7c1e2a5 u0 com.android.launcher3/com.android.launcher3.Launcher}" in sh(
        phone, "dumpsys window windows")[1]


def test_screen_off_rearms_the_keyguard_and_power_toggles(phone: VirtualPhone) -> None:
    sh(phone, f"input keyevent 224; input text {PIN}; input keyevent 66")
    assert not phone.locked
    sh(phone, "input keyevent 26")
    assert not phone.screen_on and phone.locked
    assert "mWakefulness=Asleep" in sh(phone, "dumpsys power")[1]
    sh(phone, "input keyevent POWER")
    assert phone.screen_on and "mWakefulness=Awake" in sh(phone, "dumpsys power")[1]


def test_swipe_keyguard_is_dismissed_by_a_swipe_up_only(tmp_path: Path) -> None:
    phone = make_phone(tmp_path, unlock_method="swipe", unlock_secret=None)
    try:
        sh(phone, "input keyevent 224")
        sh(phone, "input swipe 540 300 540 1800")  # downwards: the notification shade, not an unlock
        sh(phone, "input tap 540 1000")
        assert phone.locked
        sh(phone, "input swipe 540 1800 540 300")
        assert not phone.locked
    finally:
        phone.close()


def test_password_keyguard(tmp_path: Path) -> None:
    phone = make_phone(tmp_path, unlock_method="password", unlock_secret="s3cret pw")
    try:
        sh(phone, "input keyevent 224; input text s3cret; input keyevent 66")
        assert phone.locked and phone.wrong_unlock_attempts == 1
        sh(phone, "input text s3cret%spw; input keyevent 66")
        assert not phone.locked
    finally:
        phone.close()


def test_no_keyguard_phone_is_never_locked(tmp_path: Path) -> None:
    phone = make_phone(tmp_path, unlock_method="none", unlock_secret=None)
    try:
        sh(phone, "input keyevent 224")
        assert not phone.locked and phone.foreground == "com.android.launcher3"
        assert keyguard_fields(phone)["mDreamingLockscreen"] == "false"
    finally:
        phone.close()


def test_logcat_records_what_happened_but_never_the_pin(phone: VirtualPhone) -> None:
    sh(phone, "input keyevent 224; input text 9999; input keyevent 66")
    sh(phone, f"input text {PIN}; input keyevent 66")
    log = sh(phone, "logcat -d")[1]
    assert "Waking up" in log and "keyguard dismissed" in log and "failed attempts: 1" in log
    assert PIN not in log and "9999" not in log
    sh(phone, "logcat -c")
    assert sh(phone, "logcat -d")[1] == ""


def test_apps_start_and_show_in_ps(phone: VirtualPhone) -> None:
    sh(phone, f"input keyevent 224; input text {PIN}; input keyevent 66")
    assert "Events injected: 1" in sh(phone, "monkey -p com.android.settings -c "
                                             "android.intent.category.LAUNCHER 1")[1]
    assert phone.foreground == "com.android.settings"
    assert sh(phone, "ps -A | grep com.android.settings")[0] == 0
    assert sh(phone, "monkey -p com.example.missing 1")[0] == 252
    sh(phone, "am force-stop com.android.settings")
    assert phone.foreground == "com.android.launcher3"
    assert "package:com.android.settings" in sh(phone, "pm list packages settings")[1]


# --- boot state machine ----------------------------------------------------------------------------------------

@pytest.mark.timeout(20)
@pytest.mark.parametrize(("transport", "gone_state"), [("usb", None), ("tcp", "offline")])
def test_reboot_runs_the_boot_state_machine(tmp_path: Path, transport: str, gone_state: str | None) -> None:
    events: list[str] = []
    seen: list[tuple[str | None, str]] = []
    phone = VirtualPhone(VirtualPhoneSpec(serial="VIRT0002", label="v2", model="M", transport=transport,
                                          timings=FAST), storage_dir=tmp_path, on_event=events.append)
    done = threading.Event()

    def watch() -> None:
        seen.append((phone.state, phone.getprop("sys.boot_completed")))

    phone.subscribe(watch)
    try:
        phone.fs.write("/data/local/tmp/kept", b"survives")
        sh(phone, "input keyevent 224")
        old_boot = phone.boot_id
        old_transport = phone.transport_id
        phone.reboot()
        assert not phone.screen_on  # at once
        assert phone.wait_boot_completed(10)
        done.set()
        assert [s for s, _ in seen] == [gone_state, "offline", "device"]
        assert seen[-1][1] == ""  # device before boot completed
        assert phone.getprop("sys.boot_completed") == "1"
        assert phone.boot_id != old_boot and phone.transport_id != old_transport
        assert sh(phone, "cat /proc/sys/kernel/random/boot_id")[1].strip() == phone.boot_id
        assert phone.fs.read("/data/local/tmp/kept") == b"survives"
        assert events[:3] == ["screen_on", "screen_off", "shutdown"]
        phone.close()  # flushes the event thread
        assert events[-1] == "boot_completed"
    finally:
        phone.close()


def test_spec_validation_names_the_field_and_the_fix() -> None:
    with pytest.raises(InputError, match=r"unlock.*use one of none, swipe, pin, password"):
        VirtualPhoneSpec(serial="S1", label="x", model="m", unlock_method="face")
    with pytest.raises(InputError, match="needs a secret"):
        VirtualPhoneSpec(serial="S1", label="x", model="m", unlock_method="pin")
    spec = VirtualPhoneSpec(serial="S1", label="x", model="m", unlock_method="pin", unlock_secret="1234")
    assert "1234" not in repr(spec)
    held = VirtualPhoneSpec(serial="VNOKIA0001", label="nokia", model="m",
                            identifiers=parse_identifiers({"imei": "352099001761481"}, source="t"))
    assert "VNOKIA0001" not in repr(held) and "352099001761481" not in repr(held) and "'nokia'" in repr(held)


def test_am_start_and_home(phone: VirtualPhone) -> None:
    sh(phone, f"input keyevent 224; input text {PIN}; input keyevent 66")
    status, out, _ = sh(phone, "am start -a android.intent.action.MAIN -n com.android.settings/.Settings")
    assert status == 0 and "cmp=com.android.settings/.Settings" in out
    assert phone.foreground_activity == ("com.android.settings", "com.android.settings.Settings")
    sh(phone, "input keyevent KEYCODE_HOME")
    assert phone.foreground == "com.android.launcher3"
    assert sh(phone, "am start -n com.example.none/.Main")[0] == 1


def test_dumpsys_trust_reports_the_lock(phone: VirtualPhone) -> None:
    assert "deviceLocked=1" in sh(phone, "dumpsys trust")[1]
    sh(phone, f"input keyevent 224; input text {PIN}; input keyevent 66")
    assert "deviceLocked=0" in sh(phone, "dumpsys trust")[1]


@pytest.mark.timeout(10)
def test_logcat_follows_until_hangup(phone: VirtualPhone) -> None:
    shell = Shell(phone)
    out: list[bytes] = []
    runner = threading.Thread(target=shell.run, args=("logcat -v threadtime", out.append, out.append))
    runner.start()
    phone.log("I", "Tester", "first line after start")
    deadline = threading.Event()
    while b"first line after start" not in b"".join(out) and not deadline.wait(0.05):
        pass
    shell.hangup.set()
    runner.join(5)
    assert not runner.is_alive()
    assert b"I Tester: first line after start" in b"".join(out)


@pytest.mark.timeout(20)
def test_reboot_while_going_down_is_ignored_and_while_booting_starts_over(tmp_path: Path) -> None:
    slow = BootTimings(adbd_linger_s=0.2, absent_s=0.1, offline_s=0.1, booting_s=1.0)
    phone = make_phone(tmp_path, timings=slow)
    boots: list[str] = []
    phone.subscribe(lambda: boots.append(phone.boot_id) if phone.state == "offline" else None)
    try:
        phone.reboot()
        phone.reboot()  # adbd still lingering: the phone is already going down
        while not (phone.state == "device" and not phone.boot_completed):
            threading.Event().wait(0.02)
        assert phone.getprop("sys.boot_completed") == ""
        phone.reboot()  # during the boot: a new reboot starts over
        assert phone.wait_boot_completed(10)
        assert len(set(boots)) == 2
        assert phone.boot_id == boots[-1]
    finally:
        phone.close()


def test_bad_arguments_fail_without_echoing_them(phone: VirtualPhone) -> None:
    status, _, err = sh(phone, "input swipe 1 2 x3 4")
    assert status == 1 and "x3" not in err
    assert sh(phone, "echo x > /data/local/tmp")[0] == 1
    assert sh(phone, "sleep")[0] == 1


def test_logcat_since_epoch_time(phone: VirtualPhone) -> None:
    phone.log("I", "Old", "before")
    threading.Event().wait(0.05)
    since = time.time()
    phone.log("I", "New", "after")
    out = sh(phone, f"logcat -d -v threadtime -T {since:.3f}")[1]
    assert "New: after" in out and "Old: before" not in out
    assert sh(phone, "logcat -d -t 1")[1].strip().endswith("New: after")
