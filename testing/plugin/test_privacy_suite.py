"""The privacy suite in tests/, run by pytester against virtual phones: real uiautomator2 over the virtual adb
server, real dumpcap on the lab interfaces, the real scanner.

One heavy end-to-end run (module-scoped) and several checks on its outcome: the Nokia-incident phone fails
power-on, screen-on and unlock with findings naming identifiers, encodings and the host; the fixed phone passes;
a phone whose capture sees nothing, and one whose dumpcap is killed mid-phase, are errors (CaptureError), never
passes; the PIN never appears in any output.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from phonehome.identifiers import identifiers_loader

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("dumpcap") is None or shutil.which("ip") is None,
                       reason="needs dumpcap and iproute2 (run ci/setup.sh)"),
]

REPO = Path(__file__).resolve().parents[2]
#: short settle times: the phones' firmware answers each event within about a second
FAST_SETTLE_S = {"power_on": 4, "screen_off": 0.5, "screen_on": 2.5, "unlock": 2.5, "idle": 2, "stop_delay": 1}
#: the whole inner run; the outer timeout marker leaves room for set-up
SUITE_TIMEOUT_S = 480
INCIDENT = "nokia7plus-2019"
FIXED = "nokia7plus-fixed"
ADSDK = "adsdk-phone"
CLEAN = "clean-phone"
#: the release style each phone of the run speaks (its firmware profile's ``android:``)
STYLES = {INCIDENT: "9", FIXED: "11", ADSDK: "13", CLEAN: "14"}
SILENT = "silent-capture"
KILLED = "killed-capture"
POWER_CYCLED = "power-cycled.txt"
INCIDENT_HOST = "zzhc.vnet-cn.example"
INCIDENT_IDENTIFIERS = ("cell", "iccid", "imei", "imsi", "location", "phone", "serial", "wifi_mac")
#: the package behind the incident (its firmware profile names it; the phone's socket table shows its UID)
INCIDENT_APP = "com.qualcomm.qti.autoregistration"
ADSDK_APP = "com.example.flashlight"

#: a conftest that sabotages one phone's capture the way a crash would (dumpcap killed in the middle of a phase),
#: and power-cycles the fixed phone the way a lab's relay hook would: by its own means (here Debian's adb CLI)
SABOTAGE_CONFTEST = f'''
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest


def pytest_phonehome_power_cycle(phone):
    if phone.label != "{FIXED}":
        return None
    host, port = phone.info()["adb_server"].rsplit(":", 1)
    subprocess.run([shutil.which("adb"), "-H", host, "-P", port, "-s", phone.serial, "reboot"], check=True,
                   timeout=30, capture_output=True)
    Path("{POWER_CYCLED}").write_text(phone.label, encoding="utf-8")
    return True


def _dumpcap_pids(label: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"dumpcap") and any(label.encode() in arg for arg in argv):
            pids.append(int(proc.name))
    return pids


@pytest.hookimpl(tryfirst=True)  # before the Allure reporter's step, which answers for this firstresult hook
def pytest_phonehome_step(name: str, device: str) -> None:
    if device == "{KILLED}" and name.startswith("settle "):
        for pid in _dumpcap_pids(device):
            os.kill(pid, signal.SIGKILL)
    return None
'''


#: a test that judges a phase it never recorded (a typo): it must not pass for want of findings in that phase
PHASE_TYPO_TEST = f'''
from __future__ import annotations

import pytest


@pytest.mark.phonehome_device("{INCIDENT}")
def test_judges_a_phase_it_never_recorded(phone, traffic):
    phone.screen_off()
    traffic.settle("screen_off")
    with traffic.phase("screen-on"):
        phone.screen_on()
    traffic.assert_no_cleartext_identifiers(phases=["screen_on"])
'''


def clone(device: dict[str, Any], label: str, index: int) -> dict[str, Any]:
    """Another phone with the same model and firmware: its own label, serial and MACs."""
    copy = dict(device)
    copy["label"] = label
    copy["serial"] = f"VCLONE{index:06d}"
    copy["identifiers"] = {**device["identifiers"], "serial": copy["serial"],
                           "wifi_mac": f"02:1a:11:f0:00:{index:02x}", "bt_mac": f"02:1a:11:f0:10:{index:02x}"}
    return copy


def suite_inventory(labels: tuple[str, ...], *, clones: tuple[tuple[str, str], ...] = (),
                    sabotage: bool = False) -> dict[str, Any]:
    """The repository's default devices.yaml, narrowed to ``labels``, with fast settle times and absolute
    firmware paths; ``clones`` adds (label, copy-of-label) phones; with ``sabotage``, two clones of the fixed
    phone whose capture is broken."""
    data = yaml.load((REPO / "devices.yaml").read_text(encoding="utf-8"), Loader=identifiers_loader())
    data["defaults"]["settle_s"] = dict(FAST_SETTLE_S)
    data["defaults"]["boot_timeout_s"] = 60
    devices = {device["label"]: device for device in data["devices"]}
    chosen = [dict(devices[label]) for label in labels]
    chosen += [clone(devices[source], label, index) for index, (label, source) in enumerate(clones, start=16)]
    if sabotage:
        silent, killed = clone(devices[FIXED], SILENT, 5), clone(devices[FIXED], KILLED, 6)
        # a filter that matches no phone: the capture runs and records nothing of it
        silent["capture"] = {"filter": "ether host 02:00:5e:00:53:ff"}
        chosen += [silent, killed]
    for device in chosen:
        device["firmware"] = str(REPO / "fixtures" / "firmware" / f"{device['firmware']}.yaml")
    data["devices"] = chosen
    return dict(data)


def copy_suite(path: Path, inventory: dict[str, Any], tests: tuple[str, ...]) -> None:
    """A project of its own: the inventory, the suite's test files and root conftest, pytest settings."""
    (path / "devices.yaml").write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
    suite = path / "tests"
    suite.mkdir()
    for name in tests:
        shutil.copy(REPO / "tests" / name, suite / name)
    shutil.copy(REPO / "conftest.py", path / "conftest.py")
    (path / "pytest.ini").write_text("[pytest]\ntestpaths = tests\naddopts = --strict-markers\n"
                                     "filterwarnings = error\n", encoding="utf-8")


def run_suite(path: Path, args: list[str], env: dict[str, str], timeout_s: float) -> str:
    """``python -m pytest`` in ``path``, as a user runs it; stdout and stderr together."""
    result = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=path, capture_output=True, text=True,
                            env={**os.environ, "ADBUTILS_ADB_PATH": "/bin/false", **env}, timeout=timeout_s,
                            check=False)
    return result.stdout + result.stderr


@dataclass(frozen=True)
class Outcome:
    """One test case of the inner run, from its JUnit XML."""

    test: str
    device: str
    verdict: str  # passed | leak | error | skipped
    message: str


def read_junit(path: Path) -> dict[tuple[str, str], Outcome]:
    outcomes: dict[tuple[str, str], Outcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        test, _, rest = name.partition("[")
        device = rest.split("]")[0]
        verdict, message = "passed", ""
        for child in case:
            text = f"{child.get('message', '')}\n{child.text or ''}"
            if child.tag == "failure":
                leak = child.get("message", "").startswith("AssertionError")
                verdict, message = ("leak" if leak else "error"), text
            elif child.tag == "error":
                verdict, message = "error", text
            elif child.tag == "skipped":
                verdict, message = "skipped", text
        outcomes[(test, device)] = Outcome(test=test, device=device, verdict=verdict, message=message)
    return outcomes


@dataclass(frozen=True)
class SuiteRun:
    outcomes: dict[tuple[str, str], Outcome]
    output: str
    pin: str
    files_text: str
    path: Path
    inventory: Path


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """Run power-on, screen-on and unlock on the incident, fixed, ad-SDK and clean phones (Android 9, 11, 13 and
    14 styles), and screen-on on the two sabotaged phones, once for all checks below."""
    path = tmp_path_factory.mktemp("suite")
    pin = "".join(secrets.choice("0123456789") for _ in range(8))
    password = "pw " + "".join(secrets.choice("abcdefgh") for _ in range(8))
    copy_suite(path, suite_inventory((INCIDENT, FIXED, ADSDK, CLEAN), sabotage=True),
               ("test_power_on.py", "test_screen_on.py", "test_unlock.py"))
    (path / "tests" / "conftest.py").write_text(SABOTAGE_CONFTEST, encoding="utf-8")
    (path / "tests" / "test_phase_typo.py").write_text(PHASE_TYPO_TEST, encoding="utf-8")
    junit = path / "junit.xml"
    # the most talkative run a user can ask for: every verbosity, locals in tracebacks, Allure results
    output = run_suite(path, ["-p", "no:cacheprovider", "-rA", "--log-level=DEBUG", f"--junitxml={junit}",
                              "-vv", "-l", "--tb=long", "--alluredir=allure-results",
                              "--phonehome-keep-pcaps=failed", "-k",
                              f"not ((power_on or test_unlock) and ({SILENT} or {KILLED}))"
                              f" and not (power_on and ({ADSDK} or {CLEAN}))"],
                       {"PHONEHOME_PIN_NOKIA7PLUS_2019": pin, "PHONEHOME_PASSWORD_ADSDK_PHONE": password},
                       SUITE_TIMEOUT_S)
    files_text = "\n".join(file.read_text(encoding="utf-8", errors="replace")
                           for file in path.rglob("*") if file.is_file()
                           and file.suffix not in (".pcapng", ".pcap") and file.stat().st_size < 5_000_000)
    return SuiteRun(outcomes=read_junit(junit), output=output, pin=pin, files_text=files_text, path=path,
                    inventory=path / "devices.yaml")


def test_incident_phone_fails_every_lifecycle_test_with_its_findings(suite_run: SuiteRun) -> None:
    for test, phase in (("test_power_on_sends_no_identifier_in_cleartext", "power-on"),
                        ("test_screen_on_sends_no_identifier_in_cleartext", "screen-on"),
                        ("test_unlock_sends_no_identifier_in_cleartext", "unlock")):
        outcome = suite_run.outcomes[(test, INCIDENT)]
        assert outcome.verdict == "leak", outcome.message
        for name in INCIDENT_IDENTIFIERS:  # each finding names the app that sent it (issue 12)
            assert f"- {INCIDENT_APP} sent {name} " in outcome.message, (name, outcome.message)
        assert "as plain to" in outcome.message
        assert f"to {INCIDENT_HOST} (" in outcome.message
        assert "over http" in outcome.message
        assert f"phase {phase}" in outcome.message


def test_findings_mask_the_identifiers(suite_run: SuiteRun) -> None:
    message = suite_run.outcomes[("test_unlock_sends_no_identifier_in_cleartext", INCIDENT)].message
    for secret in ("460011234567890", "8986011234567890123", "VNOKIA7P0001", "+8613800138000"):
        assert secret not in message
    assert "46***********90" in message


def test_fixed_phone_passes(suite_run: SuiteRun) -> None:
    fixed = {test: outcome.verdict for (test, device), outcome in suite_run.outcomes.items() if device == FIXED}
    assert fixed == {"test_power_on_sends_no_identifier_in_cleartext": "passed",
                     "test_screen_on_sends_no_identifier_in_cleartext": "passed",
                     "test_unlock_sends_no_identifier_in_cleartext": "passed"}, suite_run.output[-3000:]


def test_the_suite_drives_a_phone_of_every_release_style(suite_run: SuiteRun) -> None:
    """Each phone is read in its release's formats (screen, keyguard, boot, identifiers): every lifecycle test
    ends in the verdict on its traffic (passed, or the findings it sent), never in an error of reading the phone;
    the clean Android 14 phone passes, the ad-SDK Android 13 phone leaks. (Power-on is run on the 9 and 11
    phones only: a boot is read the same way in every style, and each boot costs seconds.)"""
    def verdict(outcome: Outcome) -> str:
        return "leak" if "identifier(s) in cleartext" in outcome.message else outcome.verdict

    for device in STYLES:
        verdicts = {test: verdict(outcome) for (test, name), outcome in suite_run.outcomes.items()
                    if name == device and test.endswith("_sends_no_identifier_in_cleartext")}
        assert len(verdicts) == (3 if device in (INCIDENT, FIXED) else 2), (device, verdicts)
        assert set(verdicts.values()) <= {"passed", "leak"}, (device, verdicts, suite_run.output[-3000:])
    assert {verdict(o) for (_, name), o in suite_run.outcomes.items() if name == CLEAN} == {"passed"}
    assert "leak" in {verdict(o) for (_, name), o in suite_run.outcomes.items() if name == ADSDK}


def test_a_capture_that_sees_nothing_is_an_error_not_a_pass(suite_run: SuiteRun) -> None:
    for test in ("test_screen_on_sends_no_identifier_in_cleartext",):
        outcome = suite_run.outcomes[(test, SILENT)]
        assert outcome.verdict == "error", outcome.message
        assert "CaptureError" in outcome.message
        assert "no traffic from the phone during phase" in outcome.message
        # pytest itself reports it as an error, not as a failed (leaking) phone
        assert f"ERROR tests/test_screen_on.py::{test}[{SILENT}]" in suite_run.output
        assert f"FAILED tests/test_screen_on.py::{test}[{SILENT}]" not in suite_run.output


def test_a_killed_capture_is_an_error_not_a_pass(suite_run: SuiteRun) -> None:
    for test in ("test_screen_on_sends_no_identifier_in_cleartext",):
        outcome = suite_run.outcomes[(test, KILLED)]
        assert outcome.verdict == "error", outcome.message
        assert "CaptureError" in outcome.message
        assert "dumpcap exited" in outcome.message


def test_judging_a_phase_that_was_never_recorded_is_an_error_not_a_pass(suite_run: SuiteRun) -> None:
    """``phases=["screen_on"]`` for the phase recorded as ``screen-on``: filtering on it would find nothing and
    pass a leaking phone."""
    outcome = suite_run.outcomes[("test_judges_a_phase_it_never_recorded", INCIDENT)]
    assert outcome.verdict == "error", outcome.message
    assert "InputError" in outcome.message and "'screen_on'" in outcome.message, outcome.message
    assert "screen-on" in outcome.message, outcome.message


def test_the_pin_never_appears_in_any_output(suite_run: SuiteRun) -> None:
    """The incident phone is PIN-locked and unlocked with it in every test; not one byte of output, report or
    evidence file may carry it (run with --log-level=DEBUG, so library debug logs are included)."""
    assert suite_run.outcomes[("test_unlock_sends_no_identifier_in_cleartext", INCIDENT)].verdict == "leak"
    assert suite_run.pin not in suite_run.output
    assert suite_run.pin not in suite_run.files_text


def test_a_power_cycle_hook_replaces_the_reboot(suite_run: SuiteRun) -> None:
    """The lab's hook power-cycled the fixed phone; the harness still saw the new boot and the test passed."""
    assert (suite_run.path / POWER_CYCLED).read_text(encoding="utf-8") == FIXED
    assert suite_run.outcomes[("test_power_on_sends_no_identifier_in_cleartext", FIXED)].verdict == "passed"


def test_failures_leave_evidence_of_the_phone(suite_run: SuiteRun) -> None:
    """A failed test's screenshot lands beside the captures (reporters get it, with logcat and dumpsys window,
    through the failure-evidence hook); passed tests leave none, and no pcap under keep=failed."""
    evidence = suite_run.path / "results" / "captures" / "evidence"
    shot = evidence / f"{INCIDENT}-test_unlock_sends_no_identifier_in_cleartext.png"
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert not list(evidence.glob(f"{FIXED}-*"))
    captures = suite_run.path / "results" / "captures"
    assert list(captures.glob(f"{INCIDENT}-test_unlock*.pcapng"))
    assert not list(captures.glob(f"{FIXED}-*.pcapng"))


#: what phonehome writes that may hold identifiers as evidence: captures (and their slices attached to reports)
EVIDENCE_MAGICS = (b"\x0a\x0d\x0d\x0a", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                   b"\x89PNG")


def test_canary_no_identifier_of_any_phone_in_anything_phonehome_wrote(suite_run: SuiteRun) -> None:
    """The canary: the run above was as talkative as pytest gets (-vv -l --tb=long, DEBUG logs, Allure results)
    on leaking and faulty phones. phonehome's own matcher, every form of every identifier of every inventory
    phone, and encoded runs peeled, finds nothing in stdout/stderr nor in any file it wrote but the captures
    (evidence) and screenshots."""
    from phonehome.identifiers import Identifiers
    from phonehome.inventory import load_inventory
    from phonehome.redaction import leak_spans
    from phonehome.scan.matcher import build_matcher

    inventory = load_inventory(suite_run.inventory)
    ids = Identifiers(values=())
    for entry in inventory.devices:
        ids = ids.merged(entry.identifiers)
    matcher = build_matcher(ids)
    written = {"<output>": suite_run.output.encode()}
    for file in suite_run.path.rglob("*"):
        if not file.is_file() or file.name == "devices.yaml" or file.suffix in (".py", ".ini"):
            continue  # the inputs the test itself wrote
        data = file.read_bytes()
        if not data.startswith(EVIDENCE_MAGICS):
            written[str(file.relative_to(suite_run.path))] = data
    assert any(name.startswith("allure-results") for name in written), sorted(written)
    hits = {}
    for name, data in written.items():
        spans = leak_spans(data, matcher)
        if spans:
            hits[name] = [data[max(start - 40, 0):end + 40] for start, end in spans[:3]]
    assert not hits, hits


def test_every_finding_names_the_app_that_sent_it(suite_run: SuiteRun) -> None:
    """The phones' socket tables, polled during each phase, name the sender of every finding: the incident's
    activation client, and the app that embeds the ad SDK; coverage is reported, unattributed flows counted."""
    judged = {(INCIDENT, "test_power_on_sends_no_identifier_in_cleartext"): "power-on",
              (INCIDENT, "test_screen_on_sends_no_identifier_in_cleartext"): "screen-on",
              (INCIDENT, "test_unlock_sends_no_identifier_in_cleartext"): "unlock",
              (ADSDK, "test_screen_on_sends_no_identifier_in_cleartext"): "screen-on",
              (ADSDK, "test_unlock_sends_no_identifier_in_cleartext"): "unlock"}
    for (device, test), phase in judged.items():
        app = INCIDENT_APP if device == INCIDENT else ADSDK_APP
        message = suite_run.outcomes[(test, device)].message
        senders = re.findall(r"^[E ]*- (\S+) sent [a-z_]+ ", message, re.MULTILINE)  # one line per finding
        assert senders and set(senders) == {app}, message
        assert re.search(rf"apps: {phase}: attributed \d+ of \d+ flows", message), message
    tables = list((suite_run.path / "results" / "captures").glob(f"{INCIDENT}-test_unlock*.apps.txt"))
    assert tables and f"package:{INCIDENT_APP} uid:10087" in tables[0].read_text(encoding="utf-8")
