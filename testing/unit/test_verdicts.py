"""The verdict per phone: the vocabulary's rules, the pass rate over tests only, the page, the records' files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from phonehome.errors import InputError
from phonehome.provisions import markdown_table
from phonehome.report.verdicts import (
    ERROR,
    FAIL,
    PASS,
    SKIPPED,
    PageLinks,
    PhaseLeaks,
    TestRecord,
    first_line,
    load_records,
    pass_rate,
    phase_leaks,
    phone_verdicts,
    verdict_page,
    write_records,
)

UNLOCK = "test_unlock#test_unlock_sends_no_identifier_in_cleartext"
IDLE = "test_idle#test_idle_sends_no_identifier_in_cleartext"


def _record(full_name: str, status: str, device: str | None = "nokia7plus-2019", *, reason: str | None = None,
            phases: tuple[PhaseLeaks, ...] = ()) -> TestRecord:
    what = full_name.split("#")[1].removeprefix("test_").replace("_", " ")
    return TestRecord(full_name=full_name, title=f"Nokia 7 Plus ({device}): {what}", status=status, device=device,
                      model="Nokia 7 Plus", reason=reason, phases=phases)


def test_fail_beats_error_beats_pass_and_all_skipped_is_skipped() -> None:
    leak = PhaseLeaks("unlock", 2, ("imei", "wifi_mac"), ("zzhc.vnet-cn.example",))
    records = [
        _record(UNLOCK, "failed", "leaky", reason="leaky sent 2 identifier(s)", phases=(leak,)),
        _record(IDLE, "broken", "leaky", reason="CaptureError: no traffic"),
        _record(UNLOCK, "broken", "flaky", reason="DeviceError: offline"),
        _record(IDLE, "passed", "flaky"),
        _record(UNLOCK, "passed", "clean"),
        _record(UNLOCK, "skipped", "absent", reason="Skipped: no keyguard"),
        _record(IDLE, "passed", None),  # a test without a phone is in no verdict
    ]
    verdicts = phone_verdicts(records)
    assert [(v.device, v.verdict) for v in verdicts] == [
        ("leaky", FAIL), ("flaky", ERROR), ("clean", PASS), ("absent", SKIPPED)]
    leaky = verdicts[0]
    assert leaky.name == "Nokia 7 Plus (leaky)"
    assert (leaky.identifiers, leaky.phases, leaky.hosts) == (("imei", "wifi_mac"), ("unlock",),
                                                              ("zzhc.vnet-cn.example",))
    assert leaky.summary() == ("imei, wifi_mac sent in cleartext in unlock to zzhc.vnet-cn.example; "
                               "1 test(s) inconclusive: leaky sent 2 identifier(s)")
    assert verdicts[1].summary() == "1 test(s) inconclusive: DeviceError: offline"
    assert verdicts[2].summary() == "1 test(s) passed: no identifier in cleartext"
    assert verdicts[3].summary() == "1 test(s) not applicable: Skipped: no keyguard"
    assert [t.status for t in leaky.tests] == ["failed", "broken"]  # failures first


def test_pass_rate_counts_tests_only_as_allure_does() -> None:
    records = [_record(UNLOCK, "passed"), _record(IDLE, "failed"), _record(UNLOCK, "broken", "b"),
               _record(UNLOCK, "skipped", "c"), _record(IDLE, "unknown", "d")]
    rate = pass_rate(records)
    assert (rate.passed, rate.rated, rate.total) == (1, 3, 5)
    assert str(rate) == "33.33 % (1 of 3 tests passed)"
    assert pass_rate([]).percent == 0.0


def test_phase_leaks_keep_names_and_hosts_of_cleartext_findings_only() -> None:
    findings: list[dict[str, Any]] = [{"identifier": "imei", "host": "a.example", "encrypted": False, "excerpt": "x"},
                {"identifier": "serial", "host": "b.example", "encrypted": True},
                {"identifier": "imei", "dst": "203.0.113.7", "encrypted": False}]
    flows: list[dict[str, Any]] = [{"host": "denied.example", "denied": True}, {"host": "ok.example"}]
    leaks = phase_leaks("unlock", findings, flows, denied=lambda record: bool(record.get("denied")))
    assert leaks == PhaseLeaks("unlock", 2, ("imei",), ("203.0.113.7", "a.example"), ("denied.example",))


def test_first_line_drops_exception_paths_and_clips() -> None:
    assert first_line("AssertionError: imei 35**09 sent\nmore") == "imei 35**09 sent"
    assert first_line("phonehome.errors.CaptureError: no packet") == "CaptureError: no packet"
    assert first_line("\n\n  Skipped: not here ") == "Skipped: not here"
    assert first_line(None) is None and first_line("  \n") is None
    long = first_line("x" * 500)
    assert long is not None and len(long) == 200 and long.endswith("…")


def test_page_links_escapes_and_keeps_what_changed_apart() -> None:
    leak = PhaseLeaks("unlock", 1, ("imei",), ("<script>.example",))
    records = [_record(UNLOCK, "failed", "nokia7plus-2019", reason="a <b>bold</b> claim", phases=(leak,)),
               _record(UNLOCK, "passed", "fixed")]
    links = PageLinks(tests={(UNLOCK, "nokia7plus-2019"): "allure.html#abc"},
                      changes={"nokia7plus-2019": ("allure.html#chg", "What changed on nokia7plus-2019: 1 new")},
                      files=(("evidence manifest", "manifest.json"),))
    page = verdict_page(phone_verdicts(records), records, links, title="phonehome")
    assert "<script" not in page and "&lt;script&gt;.example" in page and "&lt;b&gt;bold" in page
    assert "phonehome: 1 of 2 phone(s) leak" in page
    assert "<a href='allure.html#abc'>unlock sends no identifier in cleartext</a>" in page
    assert "<a href='allure.html#chg'>What changed on nokia7plus-2019: 1 new</a>" in page
    assert "Pass rate 50.00 % (1 of 2 tests passed)" in page
    assert "<a href='manifest.json'>evidence manifest</a>" in page
    assert page.index("nokia7plus-2019") < page.index("(fixed)")  # the failing phone first
    assert "://" not in page and "src=" not in page  # nothing loaded from anywhere


def test_records_round_trip_and_bad_files_name_themselves(tmp_path: Path) -> None:
    leak = PhaseLeaks("unlock", 1, ("imei",), ("a.example",), ("b.example",))
    records = [_record(UNLOCK, "failed", phases=(leak,), reason="r"), _record(IDLE, "passed", None)]
    assert write_records([], tmp_path) is None
    path = write_records(records, tmp_path)
    assert path is not None and path.name.startswith("phonehome-tests-")
    assert load_records([tmp_path]) == records
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a phonehome-tests/1 file"):
        load_records([tmp_path])
    path.write_text(json.dumps({"format": "phonehome-tests/1", "tests": [{"title": "x"}]}))
    with pytest.raises(InputError, match="malformed test record"):
        load_records([tmp_path])


def test_docs_carry_the_provision_table() -> None:
    """docs/verdicts.md shows the same provisions the reporter labels tests with."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "verdicts.md").read_text(encoding="utf-8")
    assert markdown_table() in doc
    for verdict in (PASS, FAIL, ERROR, SKIPPED):
        assert f"| **{verdict}** |" in doc


def test_a_failure_no_phase_explains_gives_its_own_reason() -> None:
    """A policy test judges flows, not findings: the summary quotes its reason, without the trailing colon."""
    policy = TestRecord(full_name="test_policy#test_no_traffic_to_denied_hosts",
                        title="Nokia 7 Plus (nokia): no traffic to denied hosts", status="failed", device="nokia",
                        model="Nokia 7 Plus", reason=first_line("AssertionError: nokia talked to 2 denied host(s):\n"
                                                                "  - a.example"),
                        phases=(PhaseLeaks("idle"),))
    (verdict,) = phone_verdicts([policy])
    assert verdict.verdict == FAIL
    assert verdict.summary() == "no traffic to denied hosts: nokia talked to 2 denied host(s)"
