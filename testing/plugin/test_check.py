"""``phonehome check`` against virtual phones on the virtual adb server, each bench problem injected once.

The phones are served as a real bench serves them (an adb server, ``backend: uiautomator2`` in the inventory),
so the checks talk to them exactly as to USB phones: the adb host protocol, then shell commands through adbutils.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import instance_name

from phonehome.cli import main
from phonehome.identifiers import mask, parse_identifiers
from phonehome.inventory import load_inventory
from phonehome.virtual.adbserver import AdbServer
from phonehome.virtual.phone import VirtualPhone, VirtualPhoneSpec

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_real_adb")]

IMEI = "352099001761481"
OTHER_IMEI = "356938035643809"
MAC = "02:1a:11:f0:00:01"
PIN_ENV = "PHONEHOME_TEST_CHECK_PIN"
FIRMWARE = Path(__file__).parents[2] / "fixtures" / "firmware"


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[list[VirtualPhone]]:
    ids = parse_identifiers({"imei": IMEI, "wifi_mac": MAC}, source="test")
    nokia = VirtualPhone(VirtualPhoneSpec(serial="BENCHNOKIA01", label="nokia", model="Nokia 7 Plus",
                                          identifiers=ids, unlock_method="pin", unlock_secret="1234"),
                         storage_dir=tmp_path / "nokia")
    pixel = VirtualPhone(VirtualPhoneSpec(serial="BENCHPIXEL02", label="pixel", model="Pixel 7",
                                          identifiers=parse_identifiers({"wifi_mac": "02:1a:11:f0:00:02"},
                                                                        source="test")),
                         storage_dir=tmp_path / "pixel")
    yield [nokia, pixel]
    nokia.close()
    pixel.close()


@pytest.fixture
def bench(server: AdbServer, monkeypatch: pytest.MonkeyPatch) -> AdbServer:
    monkeypatch.setenv("ANDROID_ADB_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(server.port))
    monkeypatch.setenv(PIN_ENV, "1234")
    return server


def inventory(tmp_path: Path, *, nokia: str = "", pixel: str = "", nokia_serial: str = "BENCHNOKIA01",
              nokia_model: str = "Nokia 7 Plus", imei: str = IMEI, nokia_unlock: str = "pin") -> Path:
    path = tmp_path / "bench.yaml"
    secret = f", secret_env: {PIN_ENV}" if nokia_unlock in ("pin", "password") else ""
    path.write_text(f"""\
version: 1
defaults:
  backend: uiautomator2
  read_identifiers: [imei, wifi_mac]
  capture: {{source: interface, interface: lo, filter: "ether host {{wifi_mac}}"}}
devices:
  - label: nokia
    model: {nokia_model}
    serial: {nokia_serial}
    unlock: {{method: {nokia_unlock}{secret}}}
    identifiers: {{imei: "{imei}", wifi_mac: "{MAC}"}}
{nokia}
  - label: pixel
    model: Pixel 7
    serial: BENCHPIXEL02
{pixel}
""", encoding="utf-8")
    return path


def check(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, list[str]]:
    code = main(["check", "--inventory", str(path), "--no-dumpcap", *args])
    out, err = capsys.readouterr()
    assert err == "" or code == 2, err
    return code, out.splitlines()


def test_a_good_bench_is_ok(tmp_path: Path, bench: AdbServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = check(capsys, inventory(tmp_path))
    assert lines == ["nokia: ok", "pixel: ok", "phonehome check: 2 phone(s), 0 error(s), 0 warning(s)"]
    assert code == 0


def test_a_wrong_serial_lists_the_serials_the_server_sees(tmp_path: Path, bench: AdbServer,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = check(capsys, inventory(tmp_path, nokia_serial="BENCHNOKIA99"))
    assert code == 1
    assert lines[0] == (f"nokia: error: phone nokia ({mask('BENCHNOKIA99')}) is not on the adb server at "
                        f"127.0.0.1:{bench.port}; the server sees: {mask('BENCHNOKIA01')} (device), "
                        f"{mask('BENCHPIXEL02')} (device); check the cable, the serial in the inventory, and "
                        "'adb devices'")
    assert "pixel: ok" in lines
    assert "BENCHNOKIA01" not in "\n".join(lines)


def test_no_adb_server(tmp_path: Path, bench: AdbServer, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    code, lines = check(capsys, inventory(tmp_path))
    assert code == 1
    assert lines[0].startswith(f"nokia: error: no adb server at 127.0.0.1:{port}: connection refused")
    assert "adb start-server" in lines[0]


def test_a_swapped_phone_by_model_and_by_imei(tmp_path: Path, bench: AdbServer,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = check(capsys, inventory(tmp_path, nokia_model="Galaxy S10"))
    assert code == 0  # a model that differs is a warning
    assert lines[0] == ("nokia: warning: the inventory says model 'Galaxy S10', the phone says 'Nokia 7 Plus': a "
                        "swapped phone, or correct devices[0].model in bench.yaml (line 7)")
    code, lines = check(capsys, inventory(tmp_path, imei=OTHER_IMEI))
    assert code == 1
    assert lines[0].startswith(f"nokia: error: the phone reports imei {mask(IMEI)}, the inventory lists "
                               f"{mask(OTHER_IMEI)}: a swapped phone?")
    assert IMEI not in "\n".join(lines) and OTHER_IMEI not in "\n".join(lines)


def test_a_model_that_cannot_be_read_is_not_a_swapped_phone(tmp_path: Path, bench: AdbServer,
                                                            phones: list[VirtualPhone],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    phones[0].setprop("phonehome.fault.getprop", "ro.product.model")
    code, lines = check(capsys, inventory(tmp_path))
    assert code == 0  # a warning, as a model that differs is
    assert lines[0].startswith("nokia: warning: could not read the phone's model, unavailable (adb shell getprop "
                               "ro.product.model exited 1")
    assert not any("the phone says" in line for line in lines)


def test_unlock_secret_unset_and_lock_kind_differs(tmp_path: Path, bench: AdbServer,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PIN_ENV)
    code, lines = check(capsys, inventory(tmp_path))
    assert code == 1
    assert lines[0] == (f"nokia: error: unlock: pin needs {PIN_ENV}, which is not set: export {PIN_ENV}=... "
                        "(the phone's pin) before the run")
    monkeypatch.setenv(PIN_ENV, "1234")
    code, lines = check(capsys, inventory(tmp_path, nokia_unlock="swipe"))
    assert code == 1
    assert lines[0].startswith("nokia: error: the inventory says unlock: swipe, but the phone has a secure lock "
                               "screen")


def test_capture_interface_filter_and_shared_captures(tmp_path: Path, bench: AdbServer,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = check(capsys, inventory(tmp_path, nokia="    capture: {interface: nope0}",
                                          pixel='    read_identifiers: [wifi_mac, bt_mac]\n'
                                                '    capture: {filter: "ether host {bt_mac}"}'))
    assert code == 1
    assert lines[0].startswith("nokia: error: capture interface 'nope0' does not exist on this host (it has: ")
    assert "lo" in lines[0]
    # the filter names an identifier the inventory leaves to the phone, and the phone does not reveal it
    assert lines[1].startswith("pixel: error: capture filter: ")
    assert "filter uses {bt_mac} but the device has no bt_mac" in lines[1]
    # both phones on lo: pixel with no filter at all records nokia's traffic too
    code, lines = check(capsys, inventory(tmp_path, pixel="    capture: {filter: null}"))
    assert code == 1
    assert lines[0] == ("bench: error: nokia and pixel capture on lo with no filter on one of them: each capture "
                        "would record the other phone's traffic; give each a filter on its own MAC (filter: "
                        "\"ether host {wifi_mac}\") or its own interface")


def test_dumpcap_proves_it_may_capture(tmp_path: Path, bench: AdbServer, capsys: pytest.CaptureFixture[str]) -> None:
    """dumpcap records on the interface for DUMPCAP_PROBE_S (2 s): the one slow check, on by default."""
    code = main(["check", "--inventory", str(inventory(tmp_path)), "--device", "pixel"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines() == ["pixel: ok", "phonehome check: 1 phone(s), 0 error(s), 0 warning(s)"]


def test_traffic_on_a_usb_bench_fills_the_filter_from_the_phone(tmp_path: Path, bench: AdbServer,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A phone on the adb server is woken through the adb server; its filter's MAC is the one it reported, and
    on an interface it is not on (lo) nothing passes the filter: the problem, masked, exit 1."""
    code, lines = check(capsys, inventory(tmp_path, pixel="    settle_s: {screen_off: 0.1, screen_on: 0.5}"),
                        "--traffic", "--device", "pixel")
    assert code == 1
    assert re.match(re.escape("pixel: error: traffic: no packet from the phone under filter 'ether host "
                              f"{mask('02:1a:11:f0:00:02')}' on lo within ") + r"\d+\.\d s of a screen wake: ",
                    lines[0]), lines[0]
    assert "02:1a:11:f0:00:02" not in "\n".join(lines)
    assert lines[1] == "phonehome check: 1 phone(s), 1 error(s), 0 warning(s)"


def test_bad_inventory_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text("version: 1\ndevices:\n  - label: x\n    serail: y\n", encoding="utf-8")
    assert main(["check", "--inventory", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "serail" in err and "Traceback" not in err


def test_the_session_errors_a_failing_phone_at_once(tmp_path: Path, bench: AdbServer, pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin runs the fast checks when the session starts: a phone that fails them errors at once, in
    every test, with the check's message (no connect timeout); tests that need no phone run."""
    monkeypatch.delenv(PIN_ENV)
    bench_yaml = inventory(tmp_path, nokia_serial="BENCHNOKIA99")
    pytester.makepyfile(test_bench="""
        def test_unlock(phone):
            assert phone.label

        def test_no_phone():
            assert True
    """)
    result = pytester.runpytest(f"--phonehome-inventory={bench_yaml}", "--phonehome-device=nokia", "-p",
                                "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        f"*device nokia: quarantined for the rest of this run: phonehome check: phone nokia ({mask('BENCHNOKIA99')})"
        f" is not on the adb server at 127.0.0.1:{bench.port}; the server sees: *"])
    assert "BENCHNOKIA01" not in result.stdout.str()


@pytest.mark.skipif(os.geteuid() != 0, reason="the virtual lab needs root (run the project tests with sudo)")
@pytest.mark.skipif(shutil.which("dumpcap") is None, reason="dumpcap not installed (ci/setup.sh installs it)")
def test_traffic_a_screen_wake_shows_the_phone_under_its_filter(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``--traffic`` against a running lab: the phone whose firmware talks on screen-on is seen under its filter;
    a filter on a MAC no phone has sees nothing within settle_s.screen_on, and says what to check."""
    from phonehome.virtual.lab import Lab, LabDevice

    mac, stray = "02:1a:11:f0:00:21", "02:1a:11:f0:00:99"
    path = tmp_path / "lab.yaml"
    path.write_text(f"""\
version: 1
defaults:
  backend: virtual
  model: Pixel 8
  settle_s: {{screen_off: 0.2, screen_on: 1.5}}
  capture: {{filter: "ether host {{wifi_mac}}"}}
devices:
  - label: wakes
    serial: VWAKE0001
    firmware: {FIRMWARE / 'clean.yaml'}
    identifiers: {{serial: VWAKE0001, wifi_mac: "{mac}"}}
  - label: stray
    serial: VSTRAY0001
    firmware: {FIRMWARE / 'clean.yaml'}
    identifiers: {{serial: VSTRAY0001, wifi_mac: "02:1a:11:f0:00:22"}}
    capture: {{filter: "ether host {stray}"}}
""", encoding="utf-8")
    instance = instance_name()
    # no lab running under that name: the problem, and how to start it
    code, lines = check(capsys, path, "--traffic", "--lab-instance", instance, "--device", "wakes")
    assert code == 1
    assert lines[0] == (f"wakes: error: traffic: virtual phone, and no lab {instance!r} is running to serve it: "
                        f"phonehome lab up --devices lab.yaml --instance {instance}, then check again with "
                        f"--lab-instance {instance}")
    state = Lab.up([LabDevice.from_entry(entry) for entry in load_inventory(path).select()], instance=instance)
    try:
        interfaces = {phone.label: phone.interface for phone in state.phones}
        code, lines = check(capsys, path, "--traffic", "--lab-instance", instance)
    finally:
        Lab.down(instance)
    assert code == 1, lines
    assert re.fullmatch(re.escape("stray: error: traffic: no packet from the phone under filter 'ether host "
                                  f"{mask(stray)}' on {interfaces['stray']} within ") + r"\d+\.\d s of a screen wake: .*",
                        lines[0]), lines[0]
    assert lines[0].endswith(" of a screen wake: check the filter, the phone's MAC (randomisation: turn it off "
                             "for the bench network, or put the MAC the phone uses in the inventory), and that the "
                             "phone is on the access point of that interface")
    ok = re.fullmatch(re.escape("wakes: ok (screen wake: ") + r"(\d+)" + re.escape(
        f" packet(s) from the phone under filter 'ether host {mask(mac)}' on {interfaces['wakes']} in ")
        + r"\d+\.\d s\)", lines[1])
    assert ok is not None and int(ok.group(1)) > 0, lines[1]
    assert lines[2] == "phonehome check: 2 phone(s), 1 error(s), 0 warning(s)"
    assert mac not in "\n".join(lines) and stray not in "\n".join(lines)
