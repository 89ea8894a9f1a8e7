"""One verdict per phone: what leaked, in which phases, to which hosts, with links to the tests that show it.

The Allure reporter records each finished test (:class:`TestRecord`: the phone, its readable title, its outcome,
and per phase the identifier names and hosts of its cleartext findings) into the raw results folder
(``phonehome-tests-*.json``, one file per pytest process, so shards and xdist workers merge). At report time
:func:`phone_verdicts` folds them into one :class:`PhoneVerdict` per phone and :func:`verdict_page` renders the
page the report opens with: a manager reads it in ten seconds, an engineer follows its links into Allure.

The verdict vocabulary (docs/verdicts.md): **pass** (every test of the phone passed), **fail** (at least one test
found an identifier in cleartext or traffic to a denied host), **error** (inconclusive: a device or capture fault
stopped a test, with the reason), **skipped** (not applicable, with the reason). The "what changed" results are
information, not tests: they are in no verdict and no pass rate.

Only identifier *names*, hosts and masked messages are stored here: never an identifier's value.
"""

from __future__ import annotations

import html
import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phonehome.errors import InputError
from phonehome.report.diff import read_document

RECORDS_PREFIX = "phonehome-tests-"
RECORDS_FORMAT = "phonehome-tests/1"

PASS = "pass"
FAIL = "fail"
ERROR = "error"
SKIPPED = "skipped"
#: how each verdict reads on the page, and what it means (the documented vocabulary)
VERDICT_MEANING = {
    PASS: "every test passed: no identifier in cleartext, no traffic to a denied host",
    FAIL: "an identifier left the phone in cleartext, or the phone talked to a denied host",
    ERROR: "inconclusive: a device or capture fault stopped a test (the reason is given)",
    SKIPPED: "not applicable to this phone (the reason is given)",
}
#: Allure statuses that count in the pass rate (as in Allure 3: skipped and unknown do not)
RATED_STATUSES = ("passed", "failed", "broken")
#: how a flow or finding says it went to a host the device's policy denies (set by the harness)
DENIED_KEYS = ("denied", "policy_denied")
#: the reason shown for a test is the first line of its message, clipped
REASON_MAX_CHARS = 200
#: ``phonehome.errors.CaptureError: `` -> ``CaptureError: ``; an assertion's message needs no class name
_EXCEPTION_PREFIX = re.compile(r"^((?:[A-Za-z_][\w]*\.)*)([A-Z]\w*(?:Error|Exception|Failed|Skipped)): ")
_RECORDS_FIX = "remove the file: phonehome's Allure reporter writes these, one per pytest process"


@dataclass(frozen=True)
class PhaseLeaks:
    """What one phase of one test sent in cleartext: identifier names and hosts (never values)."""

    name: str
    findings: int = 0
    identifiers: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    denied_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class TestRecord:
    """One finished test as the verdict page needs it. ``status`` is Allure's (passed, failed, broken,
    skipped, unknown); ``reason`` the first line of its failure or skip message, already masked."""

    __test__ = False  # not a pytest test class, whatever its name

    full_name: str
    title: str
    status: str
    device: str | None = None
    model: str | None = None
    reason: str | None = None
    phases: tuple[PhaseLeaks, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"full_name": self.full_name, "title": self.title, "status": self.status, "device": self.device,
                "model": self.model, "reason": self.reason,
                "phases": [{"name": p.name, "findings": p.findings, "identifiers": list(p.identifiers),
                            "hosts": list(p.hosts), "denied_hosts": list(p.denied_hosts)} for p in self.phases]}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TestRecord:
        phases = tuple(PhaseLeaks(str(p["name"]), int(p.get("findings", 0)),
                                  tuple(str(v) for v in p.get("identifiers", ())),
                                  tuple(str(v) for v in p.get("hosts", ())),
                                  tuple(str(v) for v in p.get("denied_hosts", ())))
                       for p in raw.get("phases", ()))
        return cls(str(raw["full_name"]), str(raw["title"]), str(raw["status"]),
                   _opt_str(raw.get("device")), _opt_str(raw.get("model")), _opt_str(raw.get("reason")), phases)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def readable_title(name: str, device: str | None, model: str | None) -> str:
    """The title a manager reads: the phone (model and label), then what the test checks, from its name
    (``test_unlock_sends_no_identifier_in_cleartext[nokia7plus-2019]`` ->
    ``Nokia 7 Plus (nokia7plus-2019): unlock sends no identifier in cleartext``)."""
    what = name.split("[", 1)[0].removeprefix("test_").replace("_", " ")
    if device is None:
        return what
    return f"{model} ({device}): {what}" if model else f"{device}: {what}"


def first_line(message: str | None) -> str | None:
    """The reason a reader sees: the first non-empty line of a message, clipped."""
    if not message:
        return None
    line = next((line.strip() for line in message.splitlines() if line.strip()), "")
    line = _EXCEPTION_PREFIX.sub(lambda m: "" if m.group(2) == "AssertionError" else f"{m.group(2)}: ", line)
    line = line.rstrip(":")  # "sent 7 identifier(s) in cleartext (...):" introduces lines the page leaves out
    if not line:
        return None
    return line if len(line) <= REASON_MAX_CHARS else line[:REASON_MAX_CHARS - 1] + "…"


def phase_leaks(name: str, findings: Iterable[Mapping[str, Any]], flows: Iterable[Mapping[str, Any]],
                *, denied: Any) -> PhaseLeaks:
    """The cleartext findings of one phase reduced to names and hosts; ``denied(record)`` says whether a flow
    or finding went to a host the phone's policy denies."""
    leaks = [f for f in findings if not f.get("encrypted", False)]
    denied_hosts = [_host(r) for r in (*flows, *leaks) if denied(r)]
    return PhaseLeaks(name=name, findings=len(leaks),
                      identifiers=tuple(sorted({str(f.get("identifier", "?")) for f in leaks})),
                      hosts=tuple(sorted({_host(f) for f in leaks})),
                      denied_hosts=tuple(sorted(set(denied_hosts))))


def is_denied(record: Mapping[str, Any]) -> bool:
    """A flow or finding the harness marked as going to a host the phone's policy denies."""
    return any(bool(record.get(key)) for key in DENIED_KEYS)


def _host(record: Mapping[str, Any]) -> str:
    return str(record.get("host") or record.get("dst") or "?")


# --- per-process files -------------------------------------------------------------------------------------------


def records_path(results_dir: Path) -> Path:
    """A new file name for one process's records in the raw results folder."""
    return results_dir / f"{RECORDS_PREFIX}{uuid.uuid4()}.json"


def write_records(records: Sequence[TestRecord], results_dir: Path, path: Path | None = None, *,
                  complete: bool = True) -> Path | None:
    """This process's records, into the raw results folder (``path`` there, replaced whole: a process that
    rewrites its file after each test and then dies leaves every finished test's record, marked not
    ``complete``); None when it ran no test."""
    if not records:
        return None
    results_dir.mkdir(parents=True, exist_ok=True)
    path = path if path is not None else records_path(results_dir)
    payload = {"format": RECORDS_FORMAT, "tests": [r.to_json() for r in records], "complete": complete}
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(partial, path)
    return path


def load_records(results_dirs: Sequence[Path]) -> list[TestRecord]:
    """Every record of every pytest process of every shard."""
    records: list[TestRecord] = []
    for results_dir in results_dirs:
        for path in sorted(results_dir.glob(f"{RECORDS_PREFIX}*.json")):
            data = read_document(path, RECORDS_FORMAT, _RECORDS_FIX)
            try:
                tests = [TestRecord.from_json(raw) for raw in data.get("tests", ())]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise InputError(path, f"malformed test record: {exc!r}", where="tests", fix=_RECORDS_FIX) from None
            records.extend(tests)
            if data.get("complete", True) is not True:  # the process died: its phones' later tests never ran
                records.extend(_unfinished(device) for device in dict.fromkeys(
                    test.device for test in tests if test.device is not None))
    return records


def _unfinished(device: str) -> TestRecord:
    return TestRecord(full_name=f"(the pytest process of {device})", title=f"{device}: the rest of its tests",
                      status="broken", device=device,
                      reason="the pytest process running this phone's tests died (killed, out of memory?) before "
                             "it finished: what it was doing then has no result, so the phone cannot pass")


def phones_in_several(results_dirs: Sequence[Path]) -> dict[str, list[str]]:
    """Phones whose tests ran in more than one results folder (shard): device -> the folders' names. Two runners
    whose inventories both list a phone test it twice, at the same time, each capture seeing the other's traffic."""
    seen: dict[str, list[str]] = {}
    for results_dir in results_dirs:
        for device in sorted({r.device for r in load_records([results_dir]) if r.device is not None}):
            seen.setdefault(device, []).append(results_dir.name)
    return {device: dirs for device, dirs in seen.items() if len(dirs) > 1}


# --- verdicts ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhoneVerdict:
    """The verdict of one phone over all its tests in this run."""

    device: str
    model: str | None
    verdict: str
    tests: tuple[TestRecord, ...]
    identifiers: tuple[str, ...] = ()
    phases: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    denied_hosts: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``Nokia 7 Plus (nokia7plus-2019)``, or the label alone when the model is unknown."""
        return f"{self.model} ({self.device})" if self.model else self.device

    def count(self, status: str) -> int:
        return sum(1 for test in self.tests if test.status == status)

    def summary(self) -> str:
        """One sentence: what leaked, in which phases, to which hosts; or why it is inconclusive."""
        parts = []
        if self.identifiers:
            parts.append(f"{', '.join(self.identifiers)} sent in cleartext in {', '.join(self.phases)} "
                         f"to {', '.join(self.hosts)}")
        if self.denied_hosts:
            parts.append(f"talked to denied host(s) {', '.join(self.denied_hosts)}")
        # a failure no phase explains (a policy test judges flows, not findings): its own reason
        unexplained = [t for t in self.tests if t.status == "failed" and t.reason
                       and not any(p.findings or p.denied_hosts for p in t.phases)]
        parts.extend(f"{t.title.removeprefix(f'{self.name}: ')}: {t.reason}" for t in unexplained[:2])
        if self.verdict == PASS:
            parts.append(f"{len(self.tests)} test(s) passed: no identifier in cleartext")
        if self.verdict in (ERROR, SKIPPED) or (self.verdict == FAIL and self.count("broken")):
            broken = self.count("broken") if self.verdict != SKIPPED else self.count("skipped")
            word = "inconclusive" if self.verdict != SKIPPED else "not applicable"
            reason = f": {self.reasons[0]}" if self.reasons else ""
            parts.append(f"{broken} test(s) {word}{reason}")
        return "; ".join(parts)


def verdict_of(tests: Sequence[TestRecord]) -> str:
    """fail beats error beats pass; a phone all of whose tests were skipped is skipped."""
    statuses = {test.status for test in tests}
    if "failed" in statuses:
        return FAIL
    if "broken" in statuses or "unknown" in statuses:
        return ERROR
    if statuses and statuses <= {"skipped"}:
        return SKIPPED
    return PASS


def phone_verdicts(records: Iterable[TestRecord]) -> list[PhoneVerdict]:
    """One verdict per phone (tests without a phone are left out), failing phones first."""
    by_device: dict[str, list[TestRecord]] = {}
    for record in records:
        if record.device is not None:
            by_device.setdefault(record.device, []).append(record)
    verdicts = []
    for device, tests in by_device.items():
        verdict = verdict_of(tests)
        leaky = [phase for test in tests for phase in test.phases if phase.findings]
        relevant = ("failed", "broken", "unknown") if verdict != SKIPPED else ("skipped",)
        verdicts.append(PhoneVerdict(
            device=device, model=next((t.model for t in tests if t.model), None), verdict=verdict,
            tests=tuple(sorted(tests, key=lambda t: (_STATUS_ORDER.get(t.status, 9), t.title))),
            identifiers=tuple(sorted({name for phase in leaky for name in phase.identifiers})),
            phases=tuple(dict.fromkeys(phase.name for phase in leaky)),
            hosts=tuple(sorted({host for phase in leaky for host in phase.hosts})),
            denied_hosts=tuple(sorted({h for t in tests for phase in t.phases for h in phase.denied_hosts})),
            reasons=tuple(dict.fromkeys(t.reason for t in tests if t.status in relevant and t.reason))))
    order = {FAIL: 0, ERROR: 1, PASS: 2, SKIPPED: 3}
    return sorted(verdicts, key=lambda v: (order[v.verdict], v.device))


_STATUS_ORDER = {"failed": 0, "broken": 1, "unknown": 2, "passed": 3, "skipped": 4}


@dataclass(frozen=True)
class PassRate:
    """Passed over passed + failed + broken, as Allure 3 counts it, over the tests only."""

    passed: int
    rated: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.passed / self.rated if self.rated else 0.0

    def __str__(self) -> str:
        return f"{self.percent:.2f} % ({self.passed} of {self.rated} tests passed)"


def pass_rate(records: Iterable[TestRecord]) -> PassRate:
    tests = list(records)
    rated = [t for t in tests if t.status in RATED_STATUSES]
    return PassRate(sum(1 for t in rated if t.status == "passed"), len(rated), len(tests))


# --- the opening page --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageLinks:
    """Where the page links to: the Allure app, each test's result in it (``allure.html#<id>``), each phone's
    "what changed" result, and files beside the page (the evidence manifest)."""

    allure_page: str = "allure.html"
    tests: Mapping[tuple[str, str | None], str] = field(default_factory=dict)
    changes: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    files: Sequence[tuple[str, str]] = ()

    def test(self, record: TestRecord) -> str | None:
        return self.tests.get((record.full_name, record.device))


def _device_parameter(result: Mapping[str, Any]) -> str | None:
    for param in result.get("parameters") or ():
        if isinstance(param, Mapping) and param.get("name") == "device":
            return str(param.get("value", "")).strip("'\"")  # allure-pytest writes repr(): 'nokia7plus-2019'
    return None


def report_links(report: Path, *, allure_page: str, changes_prefix: str,
                 files: Sequence[tuple[str, str]] = ()) -> PageLinks:
    """The links of the page, read from a generated Allure 3 report (``data/test-results/<id>.json``; the app
    opens a result at ``<page>#<id>``). Results whose full name starts with ``changes_prefix`` are the "what
    changed" results, linked per phone."""
    tests: dict[tuple[str, str | None], str] = {}
    changes: dict[str, tuple[str, str]] = {}
    for path in sorted((report / "data" / "test-results").glob("*.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # a page without one link beats no page; the report itself shows the result
        if not isinstance(result, dict) or result.get("isRetry"):
            continue
        href = f"{allure_page}#{result.get('id', path.stem)}"
        full_name = str(result.get("fullName", ""))
        device = _device_parameter(result)
        if full_name.startswith(changes_prefix) and device is not None:
            changes[device] = (href, str(result.get("name", "what changed")))
        else:
            tests[(full_name, device)] = href
    return PageLinks(allure_page=allure_page, tests=tests, changes=changes, files=tuple(files))


_BADGE = {PASS: "#15803d", FAIL: "#dc2626", ERROR: "#d97706", SKIPPED: "#64748b"}
_STATUS_MARK = {"passed": ("✔", _BADGE[PASS]), "failed": ("✘", _BADGE[FAIL]), "broken": ("!", _BADGE[ERROR]),
                "skipped": ("-", _BADGE[SKIPPED]), "unknown": ("?", _BADGE[SKIPPED])}
_PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;color:#111;padding:0 1em}"
    "h1{font-size:1.5em;margin-bottom:.2em}.sub{color:#555;margin-top:0}"
    "table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.5em;"
    "text-align:left;vertical-align:top}th{background:#f4f4f5}"
    ".v{color:#fff;font-weight:bold;padding:.15em .6em;border-radius:.3em;white-space:nowrap}"
    "ul{margin:0;padding-left:1.1em}li{margin:.1em 0}.muted{color:#666}a{color:#1d4ed8}"
    ".warn{background:#fef3c7;border-left:4px solid #d97706;padding:.4em .8em}")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def verdict_page(verdicts: Sequence[PhoneVerdict], records: Sequence[TestRecord], links: PageLinks,
                 *, title: str, warnings: Sequence[str] = ()) -> str:
    """The report's opening page: one row per phone, plain HTML with inline style (no script, nothing loaded
    from anywhere: the page is read where it lies)."""
    failing = sum(1 for v in verdicts if v.verdict == FAIL)
    headline = (f"{failing} of {len(verdicts)} phone(s) leak" if failing
                else f"no phone leaked ({len(verdicts)} phone(s) tested)")
    rate = pass_rate(records)
    rows = []
    for v in verdicts:
        tests = []
        for test in v.tests:
            href = links.test(test)
            label = _e(test.title.removeprefix(f"{v.name}: "))
            text = f"<a href='{_e(href)}'>{label}</a>" if href else label
            reason = (f" <span class='muted'>— {_e(test.reason)}</span>"
                      if test.reason and test.status != "passed" else "")
            mark = _STATUS_MARK.get(test.status, ("?", "#64748b"))
            tests.append(f"<li><b style='color:{mark[1]}' title='{_e(test.status)}'>{mark[0]}</b> {text}{reason}</li>")
        change = links.changes.get(v.device)
        changed = (f"<br><span class='muted'>What changed: <a href='{_e(change[0])}'>{_e(change[1])}</a></span>"
                   if change else "")
        rows.append(
            f"<tr data-phone='{_e(v.device)}'><td><b>{_e(v.name)}</b></td>"
            f"<td><span class='v' style='background:{_BADGE[v.verdict]}'>{v.verdict.upper()}</span></td>"
            f"<td>{_e(v.summary())}{changed}</td><td><ul>{''.join(tests)}</ul></td></tr>")
    body = "".join(rows) or "<tr><td colspan='4'>no test ran on a phone</td></tr>"
    files = "".join(f" · <a href='{_e(href)}'>{_e(name)}</a>" for name, href in links.files)
    legend = "".join(f"<li><b>{_e(k)}</b>: {_e(m)}</li>" for k, m in VERDICT_MEANING.items())
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}: verdict per phone</title><style>{_PAGE_STYLE}</style></head><body>"
        f"<h1>{_e(title)}: {_e(headline)}</h1>"
        f"<p class='sub'>Pass rate {_e(rate)} · <a href='{_e(links.allure_page)}'>full Allure report</a>{files}</p>"
        + "".join(f"<p class='warn'>⚠ {_e(w)}</p>" for w in warnings) +
        "<table><thead><tr><th>Phone</th><th>Verdict</th><th>What leaked, in which phases, to which hosts</th>"
        f"<th>Tests</th></tr></thead><tbody>{body}</tbody></table>"
        f"<p class='muted'>Verdicts:</p><ul class='muted'>{legend}</ul></body></html>")


__all__ = [
    "ERROR", "FAIL", "PASS", "SKIPPED", "PageLinks", "PassRate", "PhaseLeaks", "PhoneVerdict", "TestRecord",
    "load_records", "pass_rate", "phase_leaks", "phone_verdicts", "phones_in_several", "readable_title", "report_links", "verdict_page",
    "write_records",
]
