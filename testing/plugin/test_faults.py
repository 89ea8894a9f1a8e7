"""Bench faults injected into a real run of the privacy suite on virtual phones: each fault costs one clear
error, the phone is quarantined instead of failing slowly test after test, no credential is typed twice (or
into a phone without a secure lock), and nothing ends as a pass.

One inner run (module-scoped), four phones, each with its own fault:
- ``wrong-pin``: the PIN variable changes after the phone was built (as a wrong secret in a CI variable would);
- ``no-secure-lock``: the inventory says ``pin``, but the phone's lock was cleared (``locksettings clear``);
- ``boot-hang``: the phone's boots never complete (``persist.phonehome.fault.boot_hang``);
- ``no-adb-server``: a ``backend: uiautomator2`` phone whose adb server does not exist;
- ``locked``: a phone another phonehome run holds (this test process holds its lock);
- ``rebooted``: a phone that reboots by itself in the middle of its screen-on test (``adb reboot`` from outside),
  then loses its adb authorisation in the middle of its unlock test (the lab's transport fault); its power-on
  test is left out (the privacy suite's run shows a reboot the test asks for is no fault).
A second small run kills the virtual lab's daemon in the middle of a test.
"""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_privacy_suite import (
    FIXED,
    INCIDENT,
    Outcome,
    clone,
    copy_suite,
    read_junit,
    run_suite,
    suite_inventory,
)

from phonehome import phonelock

pytestmark = [pytest.mark.timeout(400)]

WRONG_PIN = "wrong-pin"
NO_SECURE_LOCK = "no-secure-lock"
BOOT_HANG = "boot-hang"
NO_SERVER = "no-adb-server"
LOCKED = "locked"
UNSET_PIN = "unset-pin"
REBOOTED = "rebooted"
RIGHT_PIN = "246813"
BOOT_HANG_TIMEOUT_S = 6
TESTS = ("test_power_on_sends_no_identifier_in_cleartext", "test_screen_on_sends_no_identifier_in_cleartext",
         "test_unlock_sends_no_identifier_in_cleartext")

#: the faults, injected by the lab's own means once each phone is built; and, at the end, what each phone's
#: keyguard saw (its logcat counts wrong credentials), read over the lab's adb server with Debian's adb
FAULTS_CONFTEST = f'''
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from phonehome.runstate import run_state

CONFIG = []


def pytest_configure(config):
    CONFIG.append(config)


def pytest_collection_modifyitems(config, items):
    items[:] = [item for item in items if not item.name.startswith("test_power_on") or "[{REBOOTED}]" not in item.name]


@pytest.hookimpl(tryfirst=True)  # before the Allure reporter's step, which answers for this firstresult hook
def pytest_phonehome_step(name, device):
    if device == "{REBOOTED}" and name == "settle screen-on":  # it reboots by itself (a crash, a watchdog)
        _adb(run_state(CONFIG[0]).devices[device].phone, "reboot")
    elif device == "{REBOOTED}" and name == "settle unlock":  # the host's adb key is revoked (the lab's fault)
        _adb(run_state(CONFIG[0]).devices[device].phone, "shell", "setprop", "phonehome.fault.transport",
             "unauthorized")
    return None


def _adb(phone, *args):
    host, port = phone.info()["adb_server"].rsplit(":", 1)
    return subprocess.run([shutil.which("adb"), "-H", host, "-P", port, "-s", phone.serial, *args],
                          check=True, timeout=30, capture_output=True, text=True).stdout


@pytest.hookimpl(wrapper=True)
def pytest_phonehome_make_phone(entry, settings):
    phone = yield
    if entry.label == "{WRONG_PIN}":
        os.environ["PHONEHOME_PIN_WRONG"] = "135790"
    elif entry.label == "{NO_SECURE_LOCK}":
        _adb(phone, "shell", "locksettings", "clear", "--old", "{RIGHT_PIN}")
    elif entry.label == "{UNSET_PIN}":
        os.environ.pop("PHONEHOME_PIN_UNSET")
    elif entry.label == "{BOOT_HANG}":
        _adb(phone, "shell", "setprop", "persist.phonehome.fault.boot_hang", "1")
    return phone


def pytest_sessionfinish(session):
    state = run_state(session.config)
    lines = []
    for label, device in state.devices.items():
        if label == "{REBOOTED}":  # unauthorised: its logcat cannot be read
            continue
        log = _adb(device.phone, "shell", "logcat", "-d")
        lines.append(f"{{label}} {{log.count('wrong pin entered')}} {{log.count('pin accepted')}}")
    Path("keyguard.txt").write_text("\\n".join(lines), encoding="utf-8")
'''


@dataclass(frozen=True)
class FaultRun:
    outcomes: dict[tuple[str, str], Outcome]
    output: str
    keyguard: dict[str, tuple[int, int]]
    seconds: float
    durations: dict[tuple[str, str], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory: pytest.TempPathFactory) -> FaultRun:
    path = tmp_path_factory.mktemp("faults")
    inventory: dict[str, Any] = suite_inventory(())
    devices = {device["label"]: device for device in suite_inventory((INCIDENT, FIXED))["devices"]}
    wrong = clone(devices[INCIDENT], WRONG_PIN, 1)
    wrong["unlock"] = {"method": "pin", "secret_env": "PHONEHOME_PIN_WRONG"}
    no_lock = clone(devices[INCIDENT], NO_SECURE_LOCK, 2)
    no_lock["unlock"] = {"method": "pin", "secret_env": "PHONEHOME_PIN_NO_LOCK"}
    hang = clone(devices[FIXED], BOOT_HANG, 3)
    hang["boot_timeout_s"] = BOOT_HANG_TIMEOUT_S
    absent = clone(devices[FIXED], NO_SERVER, 4)
    absent["backend"] = "uiautomator2"
    absent.pop("firmware")
    absent["capture"] = {"interface": "lo"}
    locked = clone(devices[FIXED], LOCKED, 5)
    locked["backend"] = "uiautomator2"
    locked.pop("firmware")
    unset = clone(devices[INCIDENT], UNSET_PIN, 6)
    unset["unlock"] = {"method": "pin", "secret_env": "PHONEHOME_PIN_UNSET"}
    rebooted = clone(devices[FIXED], REBOOTED, 7)
    inventory["devices"] = [wrong, no_lock, hang, absent, locked, unset, rebooted]
    copy_suite(path, inventory, ("test_power_on.py", "test_screen_on.py", "test_unlock.py"))
    (path / "tests" / "conftest.py").write_text(FAULTS_CONFTEST, encoding="utf-8")
    junit = path / "junit.xml"
    started = time.monotonic()
    port = free_port()
    with phonelock.acquire(f"127.0.0.1:{port}", locked["serial"], label=LOCKED):  # "another run"
        output = run_suite(path, ["-p", "no:cacheprovider", "-rA", f"--junitxml={junit}"],
                           {"PHONEHOME_PIN_WRONG": RIGHT_PIN, "PHONEHOME_PIN_NO_LOCK": RIGHT_PIN, "PHONEHOME_PIN_UNSET": RIGHT_PIN,
                            "ANDROID_ADB_SERVER_PORT": str(port)}, 360)
    seconds = time.monotonic() - started
    keyguard = {}
    keyguard_file = path / "keyguard.txt"
    for line in (keyguard_file.read_text(encoding="utf-8").splitlines() if keyguard_file.exists() else ()):
        label, wrong_count, accepted = line.split()
        keyguard[label] = (int(wrong_count), int(accepted))
    assert junit.exists(), output[-3000:]
    return FaultRun(read_junit(junit), output, keyguard, seconds, junit_durations(junit))


def junit_durations(path: Path) -> dict[tuple[str, str], float]:
    """(test, device) -> the seconds pytest's junit report gives the test case (set-up, call and teardown)."""
    durations = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test, _, rest = case.get("name", "").partition("[")
        durations[(test, rest.split("]")[0])] = float(case.get("time", "0"))
    return durations


def outcomes_of(run: FaultRun, device: str) -> list[Outcome]:
    return [run.outcomes[(test, device)] for test in TESTS]


def test_nothing_ends_as_a_pass(fault_run: FaultRun) -> None:
    for (test, device), outcome in fault_run.outcomes.items():
        if device != BOOT_HANG or test == TESTS[0]:
            assert outcome.verdict == "error", (test, device, outcome.message)


def test_a_wrong_pin_is_typed_once_then_the_phone_is_quarantined(fault_run: FaultRun) -> None:
    first, *later = outcomes_of(fault_run, WRONG_PIN)
    assert "CredentialError" in first.message and "was refused" in first.message, first.message
    assert "not typed again" in first.message
    for outcome in later:
        assert "quarantined for the rest of this run" in outcome.message, outcome.message
        assert "was refused" in outcome.message  # the original cause, not a new one
    assert fault_run.keyguard[WRONG_PIN] == (1, 0), fault_run.keyguard
    assert f"{WRONG_PIN}: QUARANTINED" in fault_run.output


def test_no_credential_goes_into_a_phone_without_a_secure_lock(fault_run: FaultRun) -> None:
    first, *later = outcomes_of(fault_run, NO_SECURE_LOCK)
    assert "the inventory says unlock: pin, but the phone has no secure lock screen" in first.message, \
        first.message
    assert "no credential was typed" in first.message
    for outcome in later:
        assert "quarantined" in outcome.message
    assert fault_run.keyguard[NO_SECURE_LOCK] == (0, 0), fault_run.keyguard


def test_an_unset_pin_is_one_clear_line_and_nothing_is_typed(fault_run: FaultRun) -> None:
    first, *later = outcomes_of(fault_run, UNSET_PIN)
    assert "environment variable PHONEHOME_PIN_UNSET is not set" in first.message, first.message
    assert "Traceback" not in first.message and len(first.message.strip().splitlines()) <= 2, first.message
    for outcome in later:
        assert "quarantined" in outcome.message and "PHONEHOME_PIN_UNSET is not set" in outcome.message
    assert fault_run.keyguard[UNSET_PIN] == (0, 0), fault_run.keyguard


def test_a_boot_that_never_completes_costs_one_timeout(fault_run: FaultRun) -> None:
    power_on, *later = outcomes_of(fault_run, BOOT_HANG)
    assert power_on.verdict == "error"
    assert f"did not boot within {BOOT_HANG_TIMEOUT_S} s" in power_on.message, power_on.message
    # one recovery attempt finds the boot still incomplete: quarantined with the first fault, at once
    for outcome in later:
        assert outcome.verdict == "error"
        assert "quarantined" in outcome.message and "did not boot within" in outcome.message, outcome.message
    assert f"{BOOT_HANG}: QUARANTINED" in fault_run.output


def test_a_missing_adb_server_is_named_and_fails_fast(fault_run: FaultRun) -> None:
    first, *later = outcomes_of(fault_run, NO_SERVER)
    assert "no adb server at 127.0.0.1:" in first.message and "connection refused" in first.message, \
        first.message
    assert "check the serial" not in first.message
    for outcome in later:
        assert "quarantined" in outcome.message and "no adb server" in outcome.message
    assert "ResourceWarning" not in fault_run.output


def test_the_summary_says_what_was_checked(fault_run: FaultRun) -> None:
    assert "phonehome: what was checked" in fault_run.output
    assert f"phonehome: {WRONG_PIN} checks imei" in fault_run.output
    assert f"{WRONG_PIN}: checked imei (phone: service call iphonesubinfo 1)" in fault_run.output
    assert "serial (phone: getprop ro.serialno)" in fault_run.output
    assert "gaid (inventory)" in fault_run.output


def test_faults_never_print_a_serial(fault_run: FaultRun) -> None:
    for index in range(1, 8):
        assert f"VCLONE{index:06d}" not in fault_run.output


def test_a_quarantined_phone_costs_no_time(fault_run: FaultRun) -> None:
    """After its fault, each later test of a quarantined phone errors at once (pytest's own durations)."""
    for device in (WRONG_PIN, NO_SECURE_LOCK, BOOT_HANG, NO_SERVER, LOCKED, UNSET_PIN):
        for test in TESTS[1:]:
            duration = fault_run.durations[(test, device)]
            assert duration < 2.0, (test, device, duration)


def test_a_phone_that_reboots_or_is_lost_mid_test_is_an_error(fault_run: FaultRun) -> None:
    """The capture of a phone that rebooted mid-phase looks complete (the new boot talks too) but records another
    boot; a phone lost after its phase's action leaves a capture that looks complete too. Each is an error naming
    what happened, never a pass. Between the two, the one recovery waits out the reboot's boot: the unlock test
    runs on the phone instead of finding it quarantined."""
    screen_on = fault_run.outcomes[(TESTS[1], REBOOTED)]
    assert screen_on.verdict == "error", screen_on.message
    assert "rebooted during the test without the harness asking" in screen_on.message, screen_on.message
    unlock = fault_run.outcomes[(TESTS[2], REBOOTED)]
    assert unlock.verdict == "error", unlock.message
    assert f"device {REBOOTED}: lost during the test (" in unlock.message and "device unauthorized" in unlock.message, \
        unlock.message
    assert "quarantined" not in unlock.message


def test_a_phone_held_by_another_run_is_refused_at_once(fault_run: FaultRun) -> None:
    first, *later = outcomes_of(fault_run, LOCKED)
    assert "is in use by another phonehome run on this host: pid " in first.message, first.message
    assert "no adb server" not in first.message  # refused before anything touched the phone
    for outcome in later:
        assert "quarantined" in outcome.message and "in use by another phonehome run" in outcome.message


#: kills the lab's daemon (adb server, phones, firmware) in the middle of the first test's screen-on phase
LAB_KILLER_CONFTEST = """
from __future__ import annotations

import os
import signal

from phonehome.runstate import run_state

CONFIG = []


def pytest_configure(config):
    CONFIG.append(config)


def pytest_phonehome_step(name, device):
    state = run_state(CONFIG[0])
    if name.startswith("settle ") and state.lab_state is not None and not getattr(state, "killed", False):
        state.killed = True
        os.kill(state.lab_state.pid, signal.SIGKILL)
    return None
"""


@dataclass(frozen=True)
class LabKilledRun:
    outcomes: dict[tuple[str, str], Outcome]
    output: str
    kept_logs: list[Path]


@pytest.fixture(scope="module")
def lab_killed_run(tmp_path_factory: pytest.TempPathFactory) -> LabKilledRun:
    path = tmp_path_factory.mktemp("labkilled")
    inventory = suite_inventory((FIXED,))
    inventory["defaults"].pop("policy")  # the policy test must say it has nothing to check
    copy_suite(path, inventory, ("test_policy.py", "test_screen_on.py", "test_unlock.py"))
    (path / "tests" / "conftest.py").write_text(LAB_KILLER_CONFTEST, encoding="utf-8")
    junit = path / "junit.xml"
    output = run_suite(path, ["-p", "no:cacheprovider", "-rA", f"--junitxml={junit}"], {}, 240)
    assert junit.exists(), output[-3000:]
    return LabKilledRun(read_junit(junit), output, sorted((path / "results" / "captures").glob("lab-*.log")))


def test_a_dead_lab_is_named_with_its_cause_and_costs_no_wait(lab_killed_run: LabKilledRun) -> None:
    unlock = lab_killed_run.outcomes[("test_unlock_sends_no_identifier_in_cleartext", FIXED)]
    assert unlock.verdict == "error", unlock.message
    assert "the virtual lab stopped" in unlock.message and "SIGKILL" in unlock.message, unlock.message
    assert "adb start-server" not in unlock.message  # the cause is known: no generic advice
    # one fault, one error: no teardown errors and no socket warnings after the adb server went away
    assert lab_killed_run.output.count("ERROR tests/") <= 2, lab_killed_run.output[-4000:]
    assert "ResourceWarning" not in lab_killed_run.output
    assert "at teardown of" not in lab_killed_run.output, lab_killed_run.output[-4000:]


def test_the_policy_test_is_skipped_without_a_policy(lab_killed_run: LabKilledRun) -> None:
    outcome = lab_killed_run.outcomes[("test_no_traffic_to_denied_hosts", FIXED)]
    assert outcome.verdict == "skipped", outcome.message
    assert "no destination policy configured" in outcome.message


def test_the_lab_log_is_kept_with_the_run(lab_killed_run: LabKilledRun) -> None:
    assert lab_killed_run.kept_logs, lab_killed_run.output[-3000:]
    text = lab_killed_run.kept_logs[0].read_text(encoding="utf-8")
    assert "VNOKIA7P0002" not in text
