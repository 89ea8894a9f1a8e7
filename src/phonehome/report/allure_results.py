"""The Allure reporter: the one module that imports ``allure``, registered only when ``--alluredir`` is given.

phonehome's pytest plugin calls :func:`register` from ``pytest_configure``. The reporter then implements
phonehome's own hooks (:mod:`phonehome.hooks`) to turn a run into what a firmware team needs in the morning:

- lifecycle steps (connect, power-on, wait for boot, screen-on, unlock, settle, scan) with timings and outcomes;
- per phase, a step with the findings as an HTML table and as JSON, the flows as CSV and the phase's capture
  slice (pcapng, ``application/vnd.tcpdump.pcap``); on failure the screenshot, the logcat excerpt, ``dumpsys
  window`` and the dissected frames the findings cite;
- labels: a severity on every test (identifier in cleartext or traffic to a denied host = critical, cleartext
  traffic without identifiers = minor, else normal), the lifecycle events as features, a story, the model and
  Android build as tags, the device as a parameter (so one test on five phones is five results), and a
  ``verdict`` label that the report's categories use (cleartext identifier leak, traffic to a denied host,
  device fault, capture fault);
- ``environment.properties`` (models, builds, fingerprints, tool versions) written once per run, by the
  controller only — pytest-xdist workers send theirs to it;
- what each device talked to (:class:`phonehome.report.diff.Observations`) for "what changed since last night".

Identifier values are masked in every text attachment, step name, parameter and failure message unless
``--phonehome-show-identifiers`` is given. Findings from the scanner already carry masked excerpts; the values
to mask elsewhere come from each device's identifiers (device info, or the ``phone`` fixture's ``identifiers``).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import html
import io
import json
import os
import platform
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import allure
import allure_commons
import pytest
from allure_commons.model2 import TestResult

from phonehome.errors import CaptureError, DeviceError
from phonehome.redaction import Redactor, identifier_values
from phonehome.report import verdicts
from phonehome.report.diff import Observations
from phonehome.report.verdicts import is_denied

PLUGIN_NAME = "phonehome-allure"
ENVIRONMENT_FILE = "environment.properties"
#: device info written to the environment section (never identifier values, nor lab plumbing such as ports)
ENVIRONMENT_KEYS = ("model", "manufacturer", "android", "sdk", "android_build", "build", "fingerprint", "backend",
                    "identifier_sources", "identifiers_unreadable", "quarantined")
#: where pytest-xdist workers put their device info for the controller (``config.workeroutput`` key)
WORKEROUTPUT_KEY = "phonehome_device_info"
#: the farm shard this run is (``ci/nightly.sh shard NAME`` sets it): a label of every result
SHARD_ENV = "PHONEHOME_SHARD"

MIME_HTML = "text/html"
MIME_JSON = "application/json"
MIME_CSV = "text/csv"
MIME_TEXT = "text/plain"
MIME_PCAP = "application/vnd.tcpdump.pcap"
MIME_PNG = "image/png"
MIME_JPEG = "image/jpeg"

SEVERITY_CRITICAL = "critical"
SEVERITY_MINOR = "minor"
SEVERITY_NORMAL = "normal"
#: step names that are lifecycle events (the Allure feature of a test whose phases never got scanned)
LIFECYCLE_EVENTS = ("power-on", "screen-off", "screen-on", "unlock", "idle")

VERDICT_LEAK = "cleartext identifier leak"
VERDICT_DENIED = "traffic to a denied host"
VERDICT_DEVICE = "device fault"
VERDICT_CAPTURE = "capture fault"

_DENIED_MESSAGE = re.compile(r"denied host", re.IGNORECASE)
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_PNG_MAGIC = b"\x89PNG"
_JPEG_MAGIC = b"\xff\xd8"


# --- masking -----------------------------------------------------------------------------------------------------


# --- rendering (pure) --------------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _endpoint(record: Mapping[str, Any], addr: str, port: str) -> str:
    host = record.get(addr)
    return f"{host}:{record.get(port)}" if record.get(port) is not None else _cell(host)


def _utc(value: object) -> str:
    """Capture time (epoch seconds) as UTC with milliseconds, the way a reader matches it against logcat."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        stamp = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
        return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    return _cell(value)


FINDING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("app", "app"), ("phase", "phase"), ("identifier", "identifier"), ("encoding", "encoding"), ("host", "host"),
    ("destination", "dst"), ("protocol", "protocol"), ("transport", "transport"), ("encrypted", "encrypted"),
    ("frames", "frames"), ("time", "time"), ("excerpt", "excerpt"),
)


def findings_html(findings: Sequence[Mapping[str, Any]], redact: Redactor) -> str:
    """The findings as a table a firmware engineer reads without opening Wireshark."""
    head = "".join(f"<th>{html.escape(title)}</th>" for title, _ in FINDING_COLUMNS)
    rows = []
    for finding in sorted(findings, key=_by_app):  # grouped by the app that sent them (issue 12)
        cells = []
        for _, key in FINDING_COLUMNS:
            if key == "dst":
                value = _endpoint(finding, "dst", "dport")
            elif key == "time":
                value = _utc(finding.get("time"))
            else:
                value = _cell(finding.get(key))
            cells.append(f"<td>{html.escape(redact(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    body = "".join(rows) or f"<tr><td colspan='{len(FINDING_COLUMNS)}'>no findings</td></tr>"
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><style>table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:2px 6px;font-family:monospace;vertical-align:top}</style>"
            f"</head><body><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>")


def _by_app(finding: Mapping[str, Any]) -> tuple[bool, str]:
    """Attributed findings first, grouped by app; unattributed ones last."""
    return finding.get("app") is None, str(finding.get("app") or "")


def sending_apps(phases: Sequence[PhaseSeen]) -> list[str]:
    """The apps that sent cleartext findings, for an ``app`` label per sender (the report groups by it)."""
    return sorted({str(f["app"]) for phase in phases for f in cleartext_findings(phase.findings) if f.get("app")})


def findings_json(findings: Sequence[Mapping[str, Any]], redact: Redactor) -> str:
    return redact(json.dumps(list(findings), indent=2, sort_keys=True, default=str))


FLOW_COLUMNS = ("destination", "host", "protocol", "transport", "encrypted", "bytes", "source", "frames", "denied",
                "decryption", "app", "uid")


def flows_csv(flows: Sequence[Mapping[str, Any]], redact: Redactor) -> str:
    """The flows of a phase: where the phone talked, in what, encrypted or not, how much."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FLOW_COLUMNS)
    for flow in flows:
        frames = flow.get("frames")
        writer.writerow([redact(_cell(v)) for v in (
            _endpoint(flow, "dst", "dport"), flow.get("host"), flow.get("protocol"), flow.get("transport"),
            flow.get("encrypted"), flow.get("bytes"), _endpoint(flow, "src", "sport"),
            len(frames) if isinstance(frames, list | tuple) else frames, is_denied(flow), flow.get("decryption"),
            flow.get("app"), flow.get("uid"))])
    return out.getvalue()


def cleartext_findings(findings: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [f for f in findings if not f.get("encrypted", False)]


# --- inside TLS (issue 11) ---


def decrypted_findings(findings: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Findings inside TLS, decrypted with the device's key logs: not cleartext leaks, shown apart."""
    return [f for f in findings if f.get("decrypted", False)]


def tls_coverage_text(flows: Sequence[Mapping[str, Any]]) -> str:
    """``3 TLS flows: 2 decrypted, 1 without a key, 0 failed`` ("" when the phase had no TLS flow)."""
    states = [flow.get("decryption") for flow in flows if flow.get("decryption")]
    if not states:
        return ""
    return (f"{len(states)} TLS flows: {states.count('decrypted')} decrypted, {states.count('no-key')} without a "
            f"key, {states.count('failed')} failed")


def severity_for(phases: Sequence[PhaseSeen], failure_message: str | None) -> str:
    """Identifier in cleartext or traffic to a denied host = critical; cleartext without identifiers = minor."""
    findings = [f for phase in phases for f in phase.findings]
    flows = [f for phase in phases for f in phase.flows]
    if cleartext_findings(findings) or any(is_denied(r) for r in (*flows, *findings)):
        return SEVERITY_CRITICAL
    if failure_message and _DENIED_MESSAGE.search(failure_message):
        return SEVERITY_CRITICAL
    if any(flow.get("encrypted") is False for flow in flows):
        return SEVERITY_MINOR
    return SEVERITY_NORMAL


def verdict_for(excinfo: pytest.ExceptionInfo[BaseException] | None, phases: Sequence[PhaseSeen]) -> str | None:
    """Which failure category a failed or broken test belongs to (the report's categories match on it)."""
    if excinfo is None:
        return None
    if isinstance(excinfo.value, CaptureError):
        return VERDICT_CAPTURE
    if isinstance(excinfo.value, DeviceError):
        return VERDICT_DEVICE
    if isinstance(excinfo.value, AssertionError):
        message = str(excinfo.value)
        if _DENIED_MESSAGE.search(message):
            return VERDICT_DENIED
        if "cleartext" in message.lower():
            return VERDICT_LEAK
        records = [r for phase in phases for r in (*phase.flows, *phase.findings)]
        if cleartext_findings(f for phase in phases for f in phase.findings):
            return VERDICT_LEAK
        if any(is_denied(r) for r in records):
            return VERDICT_DENIED
    return None


def device_tags(info: Mapping[str, Any]) -> list[str]:
    """Tags for the model and the Android build, so a morning reader filters by either."""
    tags = []
    if info.get("model"):
        tags.append(f"model: {info['model']}")
    if info.get("android"):
        tags.append(f"android: {info['android']}")
    build = info.get("android_build") or info.get("build") or _build_from_fingerprint(str(info.get("fingerprint") or ""))
    if build:
        tags.append(f"build: {build}")
    return tags


def _build_from_fingerprint(fingerprint: str) -> str | None:
    """``brand/product/device:release/BUILD_ID/incremental:type/tags`` -> ``BUILD_ID/incremental``."""
    parts = fingerprint.split("/")
    if len(parts) >= 5 and ":" in parts[4]:
        return f"{parts[3]}/{parts[4].split(':', 1)[0]}"
    return None


def capture_mime(path: Path) -> tuple[str, str]:
    """(MIME type, extension) of a capture slice: pcapng or classic pcap, by magic number."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    return (MIME_PCAP, "pcapng") if magic == _PCAPNG_MAGIC else (MIME_PCAP, "pcap")


def image_mime(path: Path) -> tuple[str, str]:
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic.startswith(_PNG_MAGIC):
        return MIME_PNG, "png"
    if magic.startswith(_JPEG_MAGIC):
        return MIME_JPEG, "jpg"
    return "application/octet-stream", "bin"


def properties_line(key: str, value: str) -> str:
    """One ``key=value`` line of a Java properties file (what Allure reads), escaped."""
    def esc(text: str, is_key: bool) -> str:
        out = []
        for ch in text:
            if ch in "\\=:#!" or (is_key and ch == " "):
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ord(ch) > 0x7E or ord(ch) < 0x20:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return "".join(out)
    return f"{esc(key, True)}={esc(value, False)}"


# --- per-test state ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseSeen:
    """A finished phase as the reporter keeps it."""

    name: str
    findings: tuple[Mapping[str, Any], ...]
    flows: tuple[Mapping[str, Any], ...]


@dataclass
class _TestState:
    item: pytest.Item
    device: str | None = None
    phases: list[PhaseSeen] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    excinfo: pytest.ExceptionInfo[BaseException] | None = None
    failure_message: str | None = None


def _humanize(name: str) -> str:
    base = name.split("[", 1)[0]
    return base.removeprefix("test_").replace("_", " ")


def _story(item: pytest.Item) -> str:
    doc = getattr(getattr(item, "function", None), "__doc__", None)
    if isinstance(doc, str) and doc.strip():
        return doc.strip().splitlines()[0].rstrip(".")
    return _humanize(item.name)


@contextlib.contextmanager
def judged_step(title: str, failure: str | None) -> Iterator[None]:
    """An Allure step that ends failed (an assertion, as the test's own failure) when ``failure`` is given:
    a phase step that carries findings must not show a green tick, whatever the test judges."""
    step = allure.step(title)
    step.__enter__()  # type: ignore[no-untyped-call]
    try:
        yield
    except BaseException as exc:
        step.__exit__(type(exc), exc, exc.__traceback__)  # type: ignore[no-untyped-call]
        raise
    if failure is None:
        step.__exit__(None, None, None)  # type: ignore[no-untyped-call]
    else:
        error = AssertionError(failure)
        step.__exit__(AssertionError, error, None)  # type: ignore[no-untyped-call]


def _has_label(item: pytest.Item, label_type: str) -> bool:
    return any(mark.kwargs.get("label_type") == label_type for mark in item.iter_markers("allure_label"))


class AllureReporter:
    """The plugin object: phonehome hooks and a few pytest hooks, all translated into Allure calls."""

    def __init__(self, config: pytest.Config, *, show_identifiers: bool = False) -> None:
        self.config = config
        self._own = Redactor(show=show_identifiers)
        self._combined: tuple[Redactor | None, Redactor, Redactor] | None = None
        self.device_info: dict[str, dict[str, Any]] = {}
        self.observations = Observations()
        self.records: list[verdicts.TestRecord] = []
        #: this process's records file, rewritten after each test (a killed worker keeps what it finished)
        self._records_file: Path | None = None
        self._tests: dict[str, _TestState] = {}
        self._current: _TestState | None = None

    # -- helpers

    def _listener_result(self) -> TestResult | None:
        """The allure-pytest result of the running test (allure-pytest 2.16's listener, registered by name)."""
        listener = self.config.pluginmanager.get_plugin("allure_listener")
        if listener is None:
            return None
        result = listener.allure_logger.get_test(None)
        return result if isinstance(result, TestResult) else None

    @property
    def redact(self) -> Redactor:
        """The run's redactor (every inventory phone, values read from phones, secrets) with what this reporter
        learned itself; rebuilt only when either changed."""
        from phonehome.runstate import STATE_KEY

        state = self.config.stash.get(STATE_KEY, None)
        run = state.redactor if state is not None else None
        cached = self._combined
        if cached is None or cached[0] is not run or cached[1] is not self._own:
            cached = self._combined = (run, self._own, self._own if run is None else run.merged(self._own))
        return cached[2]

    def _learn(self, source: Any) -> None:
        values = identifier_values(source)
        if values:
            self._own = self._own.with_values(values)

    def _attach_text(self, body: str, name: str, mime: str, extension: str) -> None:
        allure.attach(self.redact.deep(body), name=self.redact(name), attachment_type=mime, extension=extension)

    def _set_device(self, state: _TestState | None, device: str) -> None:
        if state is not None and state.device is None:
            state.device = device
            allure.dynamic.parameter("device", device)

    # -- pytest hooks

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        state = self._tests.setdefault(item.nodeid, _TestState(item))
        self._current = state
        callspec = getattr(item, "callspec", None)
        for value in (callspec.params.values() if callspec is not None else ()):
            self._learn(value)  # an inventory entry parametrizing the test carries the device's identifiers

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Iterator[None]:
        yield
        state = self._tests.get(item.nodeid)
        if state is None:
            return
        funcargs = getattr(item, "funcargs", {})
        self._learn(funcargs.get("phone"))
        self._learn(funcargs.get("traffic"))  # identifiers read from the phone at run time are only there
        if call.excinfo is not None and state.excinfo is None and not call.excinfo.errisinstance(
                pytest.skip.Exception):
            state.excinfo = call.excinfo
            state.failure_message = str(call.excinfo.value)
            if call.excinfo.errisinstance(AssertionError):
                self._attach_dissected_frames(item, state)

    def _attach_dissected_frames(self, item: pytest.Item, state: _TestState) -> None:
        """Wireshark's view of the frames the cleartext findings cite, read from the test's whole capture
        (finding frame numbers count from its start, not from a phase slice's)."""
        frames = sorted({int(n) for phase in state.phases for f in cleartext_findings(phase.findings)
                         for n in (f.get("frames") or ())})
        pcap = _whole_capture(item)
        if not frames or pcap is None:
            return
        from phonehome.errors import PhonehomeError
        from phonehome.scan.evidence import dissect_frames

        traffic = getattr(item, "funcargs", {}).get("traffic")
        identifiers = None if self.redact.show else getattr(traffic, "identifiers", None)
        try:
            text = dissect_frames(pcap, frames, identifiers=identifiers)
        except PhonehomeError as exc:  # evidence is best effort: the failure itself is already recorded
            text = f"could not dissect frames {frames} of {pcap}: {exc}"
        self._attach_text(text, "frames cited by findings", MIME_TEXT, "txt")

    def pytest_runtest_logfinish(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        """Label the finished test while allure-pytest still holds it open (its wrapper closes it after us)."""
        state = self._tests.pop(nodeid, None)
        self._current = None
        if state is None:
            return
        result = self._listener_result()
        if result is None:
            return
        self._label(state, result)
        self._drop_internal_parameters(result)
        self._title(state, result)
        _trace(state, result)
        if not self.redact.show:
            self._mask_result(result)
        self.records.append(self._record(state, result))
        self._write_records()

    def _write_records(self, *, complete: bool = False) -> None:
        results_dir = Path(self.config.option.allure_report_dir)
        if self._records_file is None:
            self._records_file = verdicts.records_path(results_dir)
        verdicts.write_records(self.records, results_dir, self._records_file, complete=complete)

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        """xdist controller: the test a worker died in has no result of its own (the worker wrote nothing for
        it); its phone's verdict must not be made without it. Recorded as broken, with xdist's message."""
        from phonehome.plugin import device_of
        from phonehome.runstate import STATE_KEY

        state = self.config.stash.get(STATE_KEY, None)
        labels = tuple(entry.label for entry in state.selected) if state is not None else ()
        device = device_of(crashitem, labels)
        path, _, name = crashitem.partition("::")
        full_name = f"{path.removesuffix('.py').replace('/', '.')}#{name.split('[')[0].replace('::', '.')}"  # as Allure's
        reason = (f"the pytest worker died during this test ({report.longrepr}); nothing it recorded is "
                  "known, so the phone's verdict cannot be a pass")
        self.records.append(verdicts.TestRecord(
            full_name=full_name, title=verdicts.readable_title(name.rsplit("::", 1)[-1], device, None), status="broken",
            device=device, reason=verdicts.first_line(self.redact(reason))))
        self._write_records()

    @staticmethod
    def _drop_internal_parameters(result: TestResult) -> None:
        """Parameters named ``_...`` are a plugin's internals (the harness parametrizes with the whole inventory
        entry): noise in the report, identifiers in its ``repr``. The ``device`` parameter names the phone, and
        allure-pytest computed the history id from all parameters before this point, so results stay apart."""
        result.parameters = [p for p in result.parameters if not str(p.name).startswith("_")]

    def _label(self, state: _TestState, result: TestResult) -> None:
        from allure_commons.model2 import Label

        labels: list[tuple[str, str]] = []
        if not _has_label(state.item, "severity"):
            labels.append(("severity", severity_for(state.phases, state.failure_message)))
        features = (list(dict.fromkeys(phase.name for phase in state.phases))
                    or list(dict.fromkeys(step for step in state.steps if step in LIFECYCLE_EVENTS))
                    or state.steps[-1:])
        if not _has_label(state.item, "feature"):
            labels.extend(("feature", feature) for feature in features)
        if not _has_label(state.item, "story"):
            labels.append(("story", _story(state.item)))
        verdict = verdict_for(state.excinfo, state.phases)
        if verdict:
            labels.append(("verdict", verdict))
        if state.device is not None:
            labels.extend(("tag", tag) for tag in device_tags(self.device_info.get(state.device, {})))
        labels.extend(label for app in sending_apps(state.phases) for label in (("app", app), ("tag", f"app: {app}")))
        result.labels.extend(Label(name=name, value=self.redact(value)) for name, value in labels)

    # -- readable titles and the records of the verdict page (phonehome.report.verdicts)

    def _title(self, state: _TestState, result: TestResult) -> None:
        """``Nokia 7 Plus (nokia7plus-2019): unlock sends no identifier in cleartext`` instead of the function
        name, unless the test set its own title (``@allure.title``, ``allure.dynamic.title``)."""
        if result.name != state.item.name:
            return
        model = self.device_info.get(state.device, {}).get("model") if state.device else None
        result.name = verdicts.readable_title(state.item.name, state.device, str(model) if model else None)

    def _record(self, state: _TestState, result: TestResult) -> verdicts.TestRecord:
        model = self.device_info.get(state.device, {}).get("model") if state.device else None
        message = result.statusDetails.message if result.statusDetails is not None else None
        return verdicts.TestRecord(
            full_name=str(result.fullName or state.item.nodeid), title=result.name or state.item.name,
            status=str(result.status or "unknown"), device=state.device,
            model=self.redact(str(model)) if model else None, reason=verdicts.first_line(self.redact(message or "")),
            phases=tuple(verdicts.phase_leaks(phase.name, phase.findings, phase.flows, denied=is_denied)
                         for phase in state.phases))

    def _mask_result(self, result: TestResult) -> None:
        """Masks identifier values left in parameters and the failure text."""
        for param in result.parameters:
            if isinstance(param.value, str):
                param.value = self.redact(param.value)
        self._mask_details(result)
        result.name = self.redact(result.name or "")

    def _mask_details(self, node: Any) -> None:
        """The failure message and trace of a result and of each of its steps (a broken step keeps its own)."""
        details = getattr(node, "statusDetails", None)
        if details is not None:
            if details.message:
                details.message = self.redact.deep(details.message)
            if details.trace:
                details.trace = self.redact.deep(details.trace)
        for step in getattr(node, "steps", None) or ():
            self._mask_details(step)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(self.config, "workeroutput", None)
        results_dir = Path(self.config.option.allure_report_dir)
        self.observations.write(results_dir)
        # an interrupted run (Ctrl-C, a stop signal pytest turns into KeyboardInterrupt) did not run the rest
        self._write_records(complete=session.exitstatus != pytest.ExitCode.INTERRUPTED)
        if workeroutput is not None:  # an xdist worker: the controller writes the environment
            workeroutput[WORKEROUTPUT_KEY] = json.dumps(self.device_info, default=str)
            return
        self.write_environment(results_dir)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: collect the device info a worker saw."""
        raw = getattr(node, "workeroutput", {}).get(WORKEROUTPUT_KEY)
        if raw:
            for device, info in json.loads(raw).items():
                self.device_info.setdefault(device, {}).update(info)

    def environment(self) -> dict[str, str]:
        """Models, builds and fingerprints per device, and the tool versions: what a reader needs to reproduce."""
        env = {
            "phonehome": _version("phonehome"), "pytest": pytest.__version__,
            "allure-pytest": _version("allure-pytest"), "python": platform.python_version(),
        }
        tools: dict[str, None] = {}
        for device, info in sorted(self.device_info.items()):
            for key in ENVIRONMENT_KEYS:
                value = info.get(key)
                if value not in (None, "", [], {}):
                    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
                    env[f"{device}.{key}"] = self.redact(text)
            raw_tools = info.get("tools") or ()
            tools.update(dict.fromkeys(str(t) for t in (raw_tools if isinstance(raw_tools, list | tuple)
                                                        else [raw_tools])))
        if tools:
            env["tools"] = self.redact("; ".join(tools))
        return env

    def write_environment(self, results_dir: Path) -> Path:
        path = results_dir / ENVIRONMENT_FILE
        lines = [properties_line(key, value) for key, value in self.environment().items()]
        results_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    # -- phonehome hooks

    def pytest_phonehome_step(self, name: str, device: str) -> contextlib.AbstractContextManager[Any]:
        self._set_device(self._current, device)
        if self._current is not None:
            self._current.steps.append(name)
        return allure.step(self.redact(name))

    def pytest_phonehome_device_info(self, device: str, info: dict[str, Any]) -> None:
        self._learn(info)
        self.device_info.setdefault(device, {}).update(info)  # a later call adds (a quarantine) to the first

    def pytest_phonehome_phase_finished(self, item: pytest.Item, device: str, phase: Any) -> None:
        state = self._tests.setdefault(item.nodeid, _TestState(item))
        self._set_device(state, device)
        seen = PhaseSeen(str(phase.name), tuple(phase.findings or ()), tuple(phase.flows or ()))
        state.phases.append(seen)
        self.observations.add(device, seen.flows, seen.findings)
        leaks = cleartext_findings(seen.findings)
        inside = decrypted_findings(seen.findings)
        coverage = tls_coverage_text(seen.flows)
        title = (f"phase {seen.name}: {len(leaks)} cleartext findings, "
                 f"{len(seen.flows)} flows ({sum(1 for f in seen.flows if f.get('encrypted') is False)} cleartext)"
                 + (f"; inside TLS: {len(inside)} findings, {coverage}" if coverage or inside else ""))
        failure = (f"{len(leaks)} cleartext finding(s) in phase {seen.name}: "
                   f"{', '.join(sorted({str(f.get('identifier', '?')) for f in leaks}))}") if leaks else None
        with judged_step(self.redact(title), failure):
            self._attach_text(findings_html([f for f in seen.findings if f not in inside], self.redact),
                              f"findings ({seen.name})", MIME_HTML, "html")
            if inside:
                self._attach_text(findings_html(inside, self.redact), f"inside TLS ({seen.name})", MIME_HTML, "html")
            self._attach_text(findings_json(seen.findings, self.redact), f"findings ({seen.name}).json",
                              MIME_JSON, "json")
            self._attach_text(flows_csv(seen.flows, self.redact), f"flows ({seen.name}).csv", MIME_CSV, "csv")
            pcap = getattr(phase, "pcap", None)
            if pcap is not None:
                path = Path(pcap)
                if not path.is_file():
                    raise CaptureError(f"the capture slice of phase {seen.name} on {device} is gone: {path}")
                mime, extension = capture_mime(path)
                allure.attach.file(str(path), name=f"capture ({seen.name}).{extension}",  # type: ignore[no-untyped-call]
                                   attachment_type=mime, extension=extension)

    def pytest_phonehome_failure_evidence(self, item: pytest.Item, device: str, evidence: dict[str, Any]) -> None:
        state = self._tests.get(item.nodeid)
        self._set_device(state, device)
        for key, value in evidence.items():
            if value is None:
                continue
            if key == "screenshot":
                path = Path(value)
                if path.is_file():
                    mime, extension = image_mime(path)
                    allure.attach.file(str(path), name="screenshot",  # type: ignore[no-untyped-call]
                                       attachment_type=mime, extension=extension)
                continue
            if isinstance(value, Path):
                if value.is_file():
                    self._attach_text(value.read_text(encoding="utf-8", errors="replace"), key.replace("_", " "),
                                      MIME_TEXT, "txt")
                continue
            text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
            self._attach_text(text, key.replace("_", " "), MIME_TEXT, "txt")


def _trace(state: _TestState, result: TestResult) -> None:
    """A test that judged a phone's traffic carries the provisions it checks, as labels and links
    (:mod:`phonehome.provisions`); on a farm every result carries its shard."""
    from allure_commons.model2 import Label, Link

    from phonehome.provisions import LABEL, PRIVACY_PROVISIONS

    shard = os.environ.get(SHARD_ENV)
    if shard:  # set by ci/nightly.sh shard NAME: the merged report tells the shards apart
        result.labels.append(Label(name="shard", value=shard))
    if not state.phases:
        return
    result.labels.extend(Label(name=LABEL, value=p.id) for p in PRIVACY_PROVISIONS)
    result.links.extend(Link(type="link", url=p.url, name=p.id) for p in PRIVACY_PROVISIONS)


def _whole_capture(item: pytest.Item) -> Path | None:
    """The capture file of the test's ``traffic`` fixture (``traffic.capture.pcap``), when it still exists."""
    traffic = getattr(item, "funcargs", {}).get("traffic")
    pcap = getattr(getattr(traffic, "capture", None), "pcap", None)
    if pcap is None:
        return None
    path = Path(pcap)
    return path if path.is_file() else None


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def show_identifiers_requested(config: pytest.Config) -> bool:
    """The harness's resolved setting (``--phonehome-show-identifiers`` > ``PHONEHOME_SHOW_IDENTIFIERS`` > ini)
    when its plugin is active, else the option or the environment variable directly."""
    import os

    from phonehome.runstate import SETTINGS_KEY

    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is not None and hasattr(settings, "show_identifiers"):
        return bool(settings.show_identifiers)
    option = config.getoption("phonehome_show_identifiers", default=None)
    if option is not None:
        return bool(option)
    return os.environ.get("PHONEHOME_SHOW_IDENTIFIERS", "").lower() in {"1", "true", "yes"}


class _ContainerMasker:
    """Masks fixture set-up/tear-down failures (allure-pytest writes them as containers, after the test closed)
    before allure-commons' file logger writes them: a fixture's error may quote a device's identifiers."""

    def __init__(self, reporter: AllureReporter) -> None:
        self._reporter = reporter

    @allure_commons.hookimpl(tryfirst=True)
    def report_container(self, container: Any) -> None:
        if self._reporter.redact.show:
            return
        for fixture in (*(container.befores or ()), *(container.afters or ())):
            self._reporter._mask_details(fixture)


def register(config: pytest.Config) -> None:
    """Register the reporter (phonehome's plugin calls this from ``pytest_configure`` when ``--alluredir`` is
    set). Idempotent."""
    if config.pluginmanager.has_plugin(PLUGIN_NAME):
        return
    reporter = AllureReporter(config, show_identifiers=show_identifiers_requested(config))
    config.pluginmanager.register(reporter, PLUGIN_NAME)
    masker = _ContainerMasker(reporter)
    allure_commons.plugin_manager.register(masker)
    config.add_cleanup(lambda: allure_commons.plugin_manager.unregister(masker))


__all__ = [
    "PLUGIN_NAME", "AllureReporter", "PhaseSeen", "Redactor", "findings_html", "findings_json",
    "flows_csv", "identifier_values", "register", "severity_for", "verdict_for",
]
