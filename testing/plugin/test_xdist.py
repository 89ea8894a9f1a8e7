"""Several phones on one host: four virtual phones on ``-n 2`` give the same verdicts as a serial run, and each
phone is owned by exactly one worker (one connection, one capture filter), never two."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_privacy_suite import SUITE_TIMEOUT_S, Outcome, copy_suite, read_junit, run_suite, suite_inventory

from phonehome.inventory import load_inventory
from phonehome.report.verdicts import load_records, phone_verdicts

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("dumpcap") is None or shutil.which("ip") is None,
                       reason="needs dumpcap and iproute2 (run ci/setup.sh)"),
]

PHONES = ("nokia7plus-2019", "nokia7plus-fixed", "clean-phone")
#: a fourth phone: a second fixed Nokia (the ad-SDK profile's verdicts depend on request timing under load)
CLONES = (("nokia7plus-fixed-2", "nokia7plus-fixed"),)
LABELS = (*PHONES, *(label for label, _ in CLONES))
TESTS = ("test_screen_on.py", "test_unlock.py")

#: records which worker connected which phone (the device-info hook runs once per connection)
OWNERSHIP_CONFTEST = '''
from __future__ import annotations

import json
import os


def pytest_phonehome_device_info(device: str, info: dict) -> None:
    record = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "device": device, "pid": os.getpid()}
    with open(os.environ["OWNERS_FILE"], "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\\n")
'''


def run(path: Path, *extra: str) -> tuple[dict[tuple[str, str], Outcome], list[dict[str, object]], str]:
    junit = path / f"junit{len(extra)}.xml"
    owners = path / f"owners{len(extra)}.jsonl"
    output = run_suite(path, ["-p", "no:cacheprovider", "-v", f"--junitxml={junit}", *extra],
                       {"OWNERS_FILE": str(owners), "PHONEHOME_PIN_NOKIA7PLUS_2019": "135790",
                        }, SUITE_TIMEOUT_S)
    verdicts = read_junit(junit)
    records = [json.loads(line) for line in owners.read_text(encoding="utf-8").splitlines()] \
        if owners.exists() else []
    return verdicts, records, output


def test_four_phones_on_two_workers_match_the_serial_run(tmp_path: Path) -> None:
    copy_suite(tmp_path, suite_inventory(PHONES, clones=CLONES), TESTS)
    (tmp_path / "tests" / "conftest.py").write_text(OWNERSHIP_CONFTEST, encoding="utf-8")

    serial, serial_owners, serial_output = run(tmp_path)
    parallel, parallel_owners, parallel_output = run(tmp_path, "-n", "2")

    assert len(serial) == len(LABELS) * len(TESTS), serial_output[-3000:]
    differences = [f"{key}: serial {serial[key].verdict}, -n 2 {parallel[key].verdict if key in parallel else None}"
                   f"\n  serial: {serial[key].message[:400]}\n  -n 2: {parallel[key].message[:400] if key in parallel else ''}"
                   for key in serial if key not in parallel or parallel[key].verdict != serial[key].verdict]
    assert not differences, "\n".join(differences)
    assert set(parallel) == set(serial)
    # the verdicts are the phones' own, not an artefact of scheduling
    assert serial[("test_unlock_sends_no_identifier_in_cleartext", "nokia7plus-2019")].verdict == "leak"
    assert serial[("test_unlock_sends_no_identifier_in_cleartext", "nokia7plus-fixed")].verdict == "passed"
    # one connection per phone in each run; under xdist every phone belongs to exactly one worker
    assert sorted(str(record["device"]) for record in serial_owners) == sorted(LABELS)
    assert sorted(str(record["device"]) for record in parallel_owners) == sorted(LABELS), parallel_owners
    workers = {str(record["worker"]) for record in parallel_owners}
    assert workers <= {"gw0", "gw1"}
    assert len(workers) == 2, f"both workers should own phones: {parallel_owners}"
    # the controller's summary covers the phones of every worker; no phone's serial or IMEI shows in either run
    for label in LABELS:
        assert f"{label}: checked " in parallel_output, parallel_output[-3000:]
    for entry in load_inventory(tmp_path / "devices.yaml").devices:
        for value in (entry.serial, *entry.identifiers.get("imei")):
            assert value not in serial_output and value not in parallel_output, value
    # xdist's own log agrees: each phone's tests ran on its owner
    for record in parallel_owners:
        for line in parallel_output.splitlines():
            if f"[{record['device']}]" in line and line.startswith("[gw"):
                assert line.startswith(f"[{record['worker']}]"), line


#: a test that kills its worker on one phone (as an OOM kill or a crash in a native library would), between two
#: that pass; each test names its phone to the reporters (the step hook), and each run of the crashing test
#: leaves a line in ran-<label>.txt
CRASHING_TESTS = '''
import os
import signal
from pathlib import Path


def _on_the_phone(request, entry):
    with request.config.hook.pytest_phonehome_step(name="act", device=entry.label):
        pass


def test_before_the_crash(request, _phonehome_entry):
    _on_the_phone(request, _phonehome_entry)


def test_crashes_on_alpha(request, _phonehome_entry):
    _on_the_phone(request, _phonehome_entry)
    with Path(f"ran-{_phonehome_entry.label}.txt").open("a", encoding="utf-8") as out:
        out.write("ran\\n")
    if _phonehome_entry.label == "alpha":
        os.kill(os.getpid(), signal.SIGKILL)


def test_after_the_crash(request, _phonehome_entry):
    _on_the_phone(request, _phonehome_entry)
'''


@pytest.mark.timeout(120)
def test_a_test_that_kills_its_worker_is_run_once_and_makes_its_phone_an_error(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """xdist's loadscope requeued the test a worker died in with the rest of its group: every replacement worker
    ran it again (and died again) until xdist gave up. It is reported as crashed, once, and the phone's later
    tests run on a new worker. The verdict page's records of the dead worker's finished tests survive it (they
    were written only when a worker ended), and the crashed test is one: the phone is an error, not a pass."""
    monkeypatch.setenv("ADBUTILS_ADB_PATH", "/bin/false")
    devices = "\n".join(f"  - {{label: {label}, model: Pixel 7, serial: SERIAL{index:04d}, backend: uiautomator2, "
                        f"identifiers: {{imei: '35209900176148{index}'}}}}" for index, label in enumerate(("alpha", "beta")))
    pytester.makefile(".yaml", devices=f"version: 1\ndevices:\n{devices}\n")
    pytester.makepyfile(test_crash=CRASHING_TESTS)
    results = pytester.path / "allure-results"
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", f"--alluredir={results}")
    assert (pytester.path / "ran-alpha.txt").read_text(encoding="utf-8").count("ran") == 1, result.stdout.str()
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*worker 'gw*' crashed while running 'test_crash.py::test_crashes_on_alpha[[]alpha[]]'*"])
    assert "maximum crashed workers reached" not in result.stdout.str()
    statuses = {(record.device, record.full_name.split("#")[-1]): record.status
                for record in load_records([results])}
    assert statuses == {("alpha", "test_before_the_crash"): "passed", ("alpha", "test_crashes_on_alpha"): "broken",
                        ("alpha", "(the pytest process of alpha)"): "broken",  # the dead worker's records
                        ("alpha", "test_after_the_crash"): "passed", ("beta", "test_before_the_crash"): "passed",
                        ("beta", "test_crashes_on_alpha"): "passed", ("beta", "test_after_the_crash"): "passed"}
    verdicts = {verdict.device: verdict for verdict in phone_verdicts(load_records([results]))}
    assert verdicts["alpha"].verdict == "error" and verdicts["beta"].verdict == "pass"
    assert any("the pytest worker died during this test" in reason for reason in verdicts["alpha"].reasons), \
        verdicts["alpha"].reasons


@pytest.mark.parametrize("how", ["SIGKILL", "KeyboardInterrupt"])
def test_a_run_killed_before_its_end_leaves_no_pass(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                    how: str) -> None:
    """A run killed outright (a CI timeout, the OOM killer) or interrupted (Ctrl-C) after some tests of a phone
    passed: its records say so, and the phone is an error on the verdict page, not a pass on the tests that
    happened to finish."""
    monkeypatch.setenv("ADBUTILS_ADB_PATH", "/bin/false")
    pytester.makefile(".yaml", devices="version: 1\ndevices:\n  - {label: alpha, model: Pixel 7, serial: SERIAL0000, "
                                       "backend: uiautomator2, identifiers: {imei: '352099001761480'}}\n")
    tests = CRASHING_TESTS if how == "SIGKILL" else CRASHING_TESTS.replace(
        "os.kill(os.getpid(), signal.SIGKILL)", "raise KeyboardInterrupt")
    pytester.makepyfile(test_crash=tests)
    results = pytester.path / "allure-results"
    pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--alluredir={results}")
    records = load_records([results])
    assert [record.status for record in records] == ["passed", "broken"], records
    [verdict] = phone_verdicts(records)
    assert verdict.verdict == "error" and "died (killed, out of memory?) before it finished" in verdict.summary()
