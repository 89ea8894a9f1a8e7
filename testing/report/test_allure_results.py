"""The Allure reporter: steps, labels, parameters, attachments with MIME types, masking, environment under xdist."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reportsuite import (
    IMEI,
    READ_ANDROID_ID,
    SERIAL,
    WIFI_MAC,
    load_results,
    run_sample_suite,
    write_sample_suite,
)

from phonehome.identifiers import mask
from phonehome.provisions import provision_ids
from phonehome.report.allure_results import (
    MIME_PCAP,
    PhaseSeen,
    Redactor,
    device_tags,
    findings_html,
    flows_csv,
    identifier_values,
    properties_line,
    sending_apps,
    severity_for,
)
from phonehome.report.verdicts import PhaseLeaks, load_records

LEAKY = "Nokia 7 Plus (nokia-7-plus): unlock sends no identifier in cleartext"
FIXED = "Pixel 7 (fixed-phone): unlock sends no identifier in cleartext"
POWER_ON = "Pixel 7 (fixed-phone): power on capture fault"
CONNECT = "Nokia 7 Plus (nokia-7-plus): connect only"
RAW_SPELLINGS = (IMEI, WIFI_MAC, WIFI_MAC.upper(), WIFI_MAC.replace(":", ""), SERIAL, READ_ANDROID_ID)
BINARY_SUFFIXES = (".pcapng", ".pcap", ".png")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("reporter")
    out = base / "results"
    proc = run_sample_suite(write_sample_suite(base / "suite"), out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "3 failed, 3 passed, 1 error" in proc.stdout, proc.stdout
    return out


def _labels(result: dict[str, Any], name: str) -> list[str]:
    return [label["value"] for label in result["labels"] if label["name"] == name]


def _attachments(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from node.get("attachments", [])
    for step in node.get("steps", []):
        yield from _attachments(step)


@pytest.mark.timeout(120)
def test_outcomes_severity_and_verdict(results: Path) -> None:
    by_name = load_results(results)
    expected = {  # name: (status, severity, verdict)
        LEAKY: ("failed", "critical", ["cleartext identifier leak"]),
        FIXED: ("passed", "normal", []),
        POWER_ON: ("broken", "normal", ["capture fault"]),
        "Pixel 7 (fixed-phone): no traffic to denied hosts": ("failed", "critical", ["traffic to a denied host"]),
        "Pixel 7 (fixed-phone): idle cleartext without identifiers": ("passed", "minor", []),
        CONNECT: ("passed", "normal", []),
        "fixture error is masked": ("broken", "normal", []),
    }
    assert set(by_name) == set(expected)
    for name, (status, severity, verdict) in expected.items():
        result = by_name[name]
        assert result["status"] == status, name
        assert _labels(result, "severity") == [severity], name
        assert _labels(result, "verdict") == verdict, name


@pytest.mark.timeout(120)
def test_device_parameter_feature_story_and_tags(results: Path) -> None:
    by_name = load_results(results)
    leaky, fixed = by_name[LEAKY], by_name[FIXED]
    assert {p["name"]: p["value"] for p in leaky["parameters"]}["device"] == "'nokia-7-plus'"
    assert {p["name"]: p["value"] for p in fixed["parameters"]}["device"] == "'fixed-phone'"
    assert leaky["historyId"] != fixed["historyId"]  # two results, not one with a retry
    assert _labels(leaky, "feature") == ["unlock"]
    assert _labels(leaky, "story") == ["Unlock sends no identifier in cleartext"]
    assert set(_labels(leaky, "tag")) >= {"model: Nokia 7 Plus", "build: 00WW_3_22C"}
    assert _labels(by_name[POWER_ON], "feature") == ["power-on"]
    connect = by_name[CONNECT]
    assert [p["name"] for p in connect["parameters"]] == ["device"]  # "_entry" (plugin-internal) dropped


@pytest.mark.timeout(120)
def test_steps_and_attachments_with_mime_types(results: Path) -> None:
    leaky = load_results(results)[LEAKY]
    step_names = [step["name"] for step in leaky["steps"]]
    assert step_names[0] == "unlock"
    assert step_names[1] == "phase unlock: 1 cleartext findings, 1 flows (1 cleartext)"
    phase_step = leaky["steps"][1]
    # a step that carries findings is failed (an assertion), one without is passed
    assert phase_step["status"] == "failed"
    assert phase_step["statusDetails"]["message"].strip() == (
        "AssertionError: 1 cleartext finding(s) in phase unlock: imei")
    fixed_phase = load_results(results)[FIXED]["steps"][1]
    assert fixed_phase["name"].startswith("phase unlock: 0 cleartext findings")
    assert fixed_phase["status"] == "passed"
    by_name = {a["name"]: a for a in phase_step["attachments"]}
    assert by_name["findings (unlock)"]["type"] == "text/html"
    assert by_name["findings (unlock).json"]["type"] == "application/json"
    assert by_name["flows (unlock).csv"]["type"] == "text/csv"
    pcap = by_name["capture (unlock).pcapng"]
    assert pcap["type"] == MIME_PCAP and pcap["source"].endswith(".pcapng")
    assert (results / pcap["source"]).read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    evidence = {a["name"]: a["type"] for a in leaky["attachments"]}
    assert evidence == {"screenshot": "image/png", "logcat": "text/plain", "frames": "text/plain",
                        "frames cited by findings": "text/plain"}
    dissected = next(a for a in leaky["attachments"] if a["name"] == "frames cited by findings")
    dissected_text = (results / dissected["source"]).read_text()
    first, addresses = dissected_text.splitlines()[:2]
    assert first.startswith("frame 1 ") and first.endswith("raw:ip:udp:DATA")
    assert addresses == "  10.23.0.2:40000 -> 203.0.113.7:80 (UDP)"
    # frame 2 names an identifier only ``traffic.identifiers`` holds (read from the phone): masked all the same
    assert f"  dns.qry_name: {mask(READ_ANDROID_ID)}.checkin.example" in dissected_text.splitlines()
    assert READ_ANDROID_ID not in dissected_text.lower()
    for attachment in _attachments(leaky):
        assert attachment["type"], attachment
        assert (results / attachment["source"]).is_file()
    findings = json.loads((results / by_name["findings (unlock).json"]["source"]).read_text())
    assert findings[0]["identifier"] == "imei" and findings[0]["host"] == "fota.nokia-updates.example"
    table = (results / by_name["findings (unlock)"]["source"]).read_text()
    assert "<td>base64</td>" in table and "<td>fota.nokia-updates.example</td>" in table
    rows = list(csv.DictReader(io.StringIO((results / by_name["flows (unlock).csv"]["source"]).read_text())))
    assert rows == [{"destination": "203.0.113.7:80", "host": "fota.nokia-updates.example", "protocol": "http",
                     "transport": "tcp", "encrypted": "False", "bytes": "420", "source": "10.23.0.2:40000",
                     "frames": "3", "denied": "False", "decryption": "", "app": "", "uid": ""}]


@pytest.mark.timeout(120)
def test_readable_titles_and_verdict_records(results: Path) -> None:
    """Titles name the phone and what the test checks; the full name keeps the function; each process writes
    the records of the verdict page (names and hosts, never values)."""
    leaky = load_results(results)[LEAKY]
    assert leaky["fullName"] == "test_sample_suite#test_unlock_sends_no_identifier_in_cleartext"
    records = {(r.title, r.device): r for r in load_records([results])}
    assert len(records) == 7
    record = records[(LEAKY, "nokia-7-plus")]
    assert (record.status, record.model) == ("failed", "Nokia 7 Plus")
    assert record.phases == (PhaseLeaks("unlock", 1, ("imei",), ("fota.nokia-updates.example",)),)
    assert record.reason is not None and record.reason.startswith(f"imei {mask(IMEI)} sent in cleartext")
    assert records[(POWER_ON, "fixed-phone")].reason == (
        f"CaptureError: dumpcap saw no packet from the phone during phase power-on; command: dumpcap -i veth0 "
        f"-f ether host {mask(WIFI_MAC)}; rc=0")
    assert records[("fixture error is masked", None)].status == "broken"
    denied = records[("Pixel 7 (fixed-phone): no traffic to denied hosts", "fixed-phone")]
    assert denied.phases[0].denied_hosts == ("telemetry.denied.example",)


@pytest.mark.timeout(120)
def test_privacy_tests_carry_their_provisions(results: Path) -> None:
    """A test that judged traffic is labelled and linked with the provisions it checks; one that did not is not."""
    by_name = load_results(results)
    leaky = by_name[LEAKY]
    assert _labels(leaky, "provision") == list(provision_ids())
    links = {link["name"]: link["url"] for link in leaky["links"]}
    assert links["OWASP MASTG-TEST-0236"].endswith("/MASTG-TEST-0236/")
    assert set(links) == set(provision_ids())
    assert _labels(by_name[CONNECT], "provision") == []


@pytest.mark.timeout(120)
def test_identifiers_masked_everywhere_but_the_pcap(results: Path) -> None:
    for path in results.iterdir():
        if path.suffix in BINARY_SUFFIXES:
            continue
        text = path.read_text(encoding="utf-8")
        for raw in RAW_SPELLINGS:
            assert raw not in text, f"{raw} in {path.name}"
    leaky = load_results(results)[LEAKY]
    logcat = next(a for a in leaky["attachments"] if a["name"] == "logcat")
    assert (results / logcat["source"]).read_text() == (
        f"I/Checkin: sending imei={mask(IMEI)} mac={mask(WIFI_MAC.upper())} serial={mask(SERIAL)}")
    assert mask(IMEI) in leaky["statusDetails"]["message"]
    containers = [json.loads(p.read_text()) for p in results.glob("*-container.json")]
    fixture_errors = [before["statusDetails"]["message"].strip() for c in containers for before in c.get("befores", [])
                      if before["name"] == "wifi_off"]
    assert fixture_errors == [f"RuntimeError: adb: svc wifi disable failed on {mask(SERIAL)}"]


@pytest.mark.timeout(120)
def test_show_identifiers_keeps_them(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = run_sample_suite(write_sample_suite(tmp_path / "suite"), results, "-k", "nokia",
                            env={"PHONEHOME_SHOW_IDENTIFIERS": "1"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    leaky = load_results(results)[LEAKY]
    logcat = next(a for a in leaky["attachments"] if a["name"] == "logcat")
    assert IMEI in (results / logcat["source"]).read_text()
    assert IMEI in leaky["statusDetails"]["message"]


@pytest.mark.timeout(120)
def test_a_farm_shard_is_a_label(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = run_sample_suite(write_sample_suite(tmp_path / "suite"), results, "-k", "connect_only",
                            env={"PHONEHOME_SHARD": "farm-host-2-nokia"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # alone, the test never saw the phone's info: its title names the label only
    assert _labels(load_results(results)["nokia-7-plus: connect only"], "shard") == ["farm-host-2-nokia"]


@pytest.mark.timeout(180)
def test_environment_written_once_by_the_xdist_controller(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = run_sample_suite(write_sample_suite(tmp_path / "suite"), results, "-n", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(load_results(results)) == 7
    env = (results / "environment.properties").read_text(encoding="utf-8")
    assert "nokia-7-plus.model=Nokia 7 Plus" in env
    assert "fixed-phone.model=Pixel 7" in env
    assert "fixed-phone.fingerprint=google/panther/panther\\:13/TQ3A.230901.001/10750268\\:user/release-keys" in env
    assert IMEI not in env and SERIAL not in env and "identifiers" not in env and "adb_server" not in env
    assert "tools=dumpcap 4.0.17; adb 1.0.41" in env
    observed = list(results.glob("phonehome-observed-*.json"))
    assert observed  # one per worker that saw a phase
    devices = set()
    for path in observed:
        devices |= set(json.loads(path.read_text())["devices"])
    assert devices == {"nokia-7-plus", "fixed-phone"}


# --- pure parts ------------------------------------------------------------------------------------------------


def test_redactor_masks_every_spelling() -> None:
    redact = Redactor().with_values([IMEI, WIFI_MAC, "+49 30 1234567", "abc"])
    text = f"imei {IMEI} mac {WIFI_MAC.upper()} bare {WIFI_MAC.replace(':', '')} tel +493012345 67 4930 1234567"
    out = redact(text)
    assert IMEI not in out and WIFI_MAC.upper() not in out and WIFI_MAC.replace(":", "") not in out
    assert mask(IMEI) in out
    assert "abc" in redact("abc")  # too short to search for in free text
    assert Redactor(frozenset({IMEI}), show=True)(IMEI) == IMEI


def test_identifier_values_from_schema_mapping_and_objects() -> None:
    from phonehome.identifiers import parse_identifiers

    ids = parse_identifiers({"imei": IMEI, "custom": {"account": "alice@example.org"}}, source="t")
    assert set(identifier_values(ids)) == {IMEI, "alice@example.org"}
    assert set(identifier_values({"identifiers": {"imei": [IMEI], "serial": SERIAL}})) == {IMEI, SERIAL}
    info = {"model": "Nokia 7 Plus", "serial": SERIAL, "label": "nokia-7-plus", "location": {"lat": 1.5, "lon": 2}}
    assert set(identifier_values(info)) == {SERIAL, "1.5", "2"}  # schema keys only: the model is no identifier

    class Phone:
        identifiers = ids

    assert IMEI in identifier_values(Phone())
    assert identifier_values(None) == []


def test_severity_rules() -> None:
    leak = {"identifier": "imei", "encrypted": False}
    clear_flow = {"dst": "1.2.3.4", "encrypted": False}
    tls_flow = {"dst": "1.2.3.4", "encrypted": True}
    assert severity_for([PhaseSeen("unlock", (leak,), (clear_flow,))], None) == "critical"
    assert severity_for([PhaseSeen("idle", (), ({**tls_flow, "denied": True},))], None) == "critical"
    assert severity_for([], "traffic to a denied host: x") == "critical"
    assert severity_for([PhaseSeen("idle", (), (clear_flow, tls_flow))], None) == "minor"
    assert severity_for([PhaseSeen("idle", (), (tls_flow,))], None) == "normal"
    assert severity_for([], None) == "normal"


def test_tables_escape_and_mask() -> None:
    redact = Redactor().with_values([IMEI])
    table = findings_html([{"identifier": "imei", "excerpt": f"<b>{IMEI}</b>", "frames": [4, 5],
                            "time": 1764400001.25}], redact)
    assert "&lt;b&gt;" in table and IMEI not in table and "<td>4, 5</td>" in table
    assert "<td>2025-11-29 07:06:41.250Z</td>" in table
    assert "no findings" in findings_html([], redact)
    assert flows_csv([], redact).splitlines() == [
        "destination,host,protocol,transport,encrypted,bytes,source,frames,denied,decryption,app,uid"]


def test_findings_grouped_by_app() -> None:
    findings: list[dict[str, Any]] = [{"identifier": "imei", "app": None}, {"identifier": "serial", "app": "com.zeta"},
                {"identifier": "imsi", "app": "com.alpha"}, {"identifier": "iccid", "app": "com.zeta"}]
    table = findings_html(findings, Redactor())
    order = [table.index(f"<td>{name}</td>") for name in ("imsi", "serial", "iccid", "imei")]
    assert order == sorted(order)  # com.alpha, then both of com.zeta, the unattributed one last
    phases = [PhaseSeen("unlock", (*findings, {"identifier": "x", "app": "com.tls", "encrypted": True}), ())]
    assert sending_apps(phases) == ["com.alpha", "com.zeta"]


def test_device_tags() -> None:
    info = {"model": "Nokia 7 Plus", "android": "9",
            "fingerprint": "Nokia/Onyx_00WW/B2N_sprout:9/PPR1.180610.011/00WW_3_22C:user/release-keys"}
    assert device_tags(info) == ["model: Nokia 7 Plus", "android: 9", "build: PPR1.180610.011/00WW_3_22C"]
    assert device_tags({"model": "X", "fingerprint": "not a fingerprint"}) == ["model: X"]


def test_properties_escaping() -> None:
    assert properties_line("nokia 7.model", "a=b:c\nd") == "nokia\\ 7.model=a\\=b\\:c\\nd"
    assert properties_line("x", "é") == "x=\\u00e9"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("with_alluredir", [True, False], ids=["alluredir", "no-alluredir"])
def test_phonehome_plugin_registers_the_reporter_only_with_alluredir(pytester: pytest.Pytester,
                                                                      with_alluredir: bool) -> None:
    pytester.makepyfile(test_probe="""
        import sys

        def test_probe(request):
            registered = request.config.pluginmanager.has_plugin("phonehome-allure")
            imported = "phonehome.report.allure_results" in sys.modules
            print(f"PROBE registered={registered} imported={imported}")
    """)
    args = ["-s", "-p", "no:cacheprovider"]
    if with_alluredir:
        args.append(f"--alluredir={pytester.path / 'results'}")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*PROBE registered={with_alluredir} imported={with_alluredir}"])
