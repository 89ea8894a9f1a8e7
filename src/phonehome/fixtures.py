"""The ``phone`` and ``traffic`` fixtures: pytest concepts translated into calls on phonehome's library.

Devices are a test matrix: every test that uses ``phone`` runs once per selected inventory entry (ids = labels),
with one connection per device for the whole session; the per-test fixture only resets the phone (screen on,
unlocked). ``traffic`` records the phone's traffic for one test, in named phases, and turns findings into
assertion failures. A capture or device fault is never a failure of the phone: it is raised as the
:class:`~phonehome.errors.PhonehomeError` it is, so reports show it as broken, not as a leak.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from phonehome.errors import (
    AdbServerGone,
    CaptureError,
    DeviceError,
    InputError,
    PhonehomeError,
    PhoneUnreachable,
)
from phonehome.identifiers import Identifiers, mask
from phonehome.markers import marker_values
from phonehome.redaction import Redactor
from phonehome.runstate import RunState, Settings, item_failed, recoverable, run_state, tool_versions
from phonehome.runstate import fault_reason as _reason

if TYPE_CHECKING:
    from phonehome.capture import Capture
    from phonehome.capture.keylogs import KeylogSource
    from phonehome.capture.sockets import SocketPoller
    from phonehome.devices.base import Phone
    from phonehome.inventory import DeviceEntry, Policy
    from phonehome.scan.attribution import SocketTable
    from phonehome.scan.scanner import Finding, Flow, ScanResult

log = logging.getLogger(__name__)

ENTRY_FIXTURE = "_phonehome_entry"
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
#: a finding's excerpt is cut to this many characters in an assertion message
EXCERPT_MAX_CHARS = 160
#: frame numbers listed per finding in an assertion message
FRAMES_SHOWN = 10


# --- the device matrix ---------------------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that (indirectly) uses ``phone`` over the selected devices, ids = labels."""
    if ENTRY_FIXTURE not in metafunc.fixturenames:
        return
    state = run_state(metafunc.config)
    try:
        state.require_inventory()
    except InputError as exc:
        pytest.fail(str(exc), pytrace=False)
    entries = _narrow(state.selected, metafunc.definition)
    xdist = metafunc.config.pluginmanager.hasplugin("xdist")
    params = [pytest.param(entry, id=entry.label, marks=[pytest.mark.xdist_group(entry.label)] if xdist else [])
              for entry in entries]
    if not params:
        reason = "no selected device matches this test's phonehome_device/phonehome_model markers"
        params = [pytest.param(None, id="no-device", marks=pytest.mark.skip(reason=reason))]
    metafunc.parametrize(ENTRY_FIXTURE, params, scope="session")


def _narrow(entries: Sequence[DeviceEntry], definition: pytest.Item) -> list[DeviceEntry]:
    """Apply ``phonehome_device``/``phonehome_model`` markers (all of them must match)."""
    selected = list(entries)
    for marker in definition.iter_markers("phonehome_device"):
        labels = marker_values(marker)
        selected = [entry for entry in selected if entry.label in labels]
    for marker in definition.iter_markers("phonehome_model"):
        models = marker_values(marker)
        selected = [entry for entry in selected if entry.model in models]
    return selected


# --- one device for the session ------------------------------------------------------------------------------


@dataclass
class DeviceSession:
    """A connected phone and what the harness learned about it once per session."""

    entry: DeviceEntry
    phone: Phone
    identifiers: Identifiers
    sources: dict[str, str]
    lab_phone: Any = None
    secrets: tuple[str, ...] = field(default=(), repr=False)
    #: the run this session belongs to: its redactor knows every phone's identifiers, as the run learns them
    run: RunState | None = field(default=None, repr=False)

    @property
    def redactor(self) -> Redactor:
        return self.run.redactor if self.run is not None else Redactor().with_identifiers(self.identifiers)

    @property
    def label(self) -> str:
        return self.entry.label

    def __repr__(self) -> str:  # pytest prints a failing fixture's value: no serial, no identifier in it
        return f"DeviceSession(label={self.label!r}, identifiers={self.identifiers!r})"

    def redact(self, text: str, settings: Settings) -> str:
        """Mask every identifier of this phone (and always the unlock secret) in text bound for a report."""
        for secret in self.secrets:
            text = text.replace(secret, "*" * len(secret))
        if settings.show_identifiers:
            return text
        return self.redactor.deep(text)


@pytest.fixture(scope="session")
def _phonehome_entry() -> DeviceEntry:
    """Replaced by the device parametrization; reached only when a test asks for ``phone`` dynamically."""
    pytest.fail("the phone fixture must be requested as a test argument (it is parametrized over devices)",
                pytrace=False)


@pytest.fixture
def _phonehome_device(request: pytest.FixtureRequest, _phonehome_entry: DeviceEntry) -> DeviceSession:
    """The device's connection: made on first use, then kept for the whole session and closed when it ends.

    Not a session-scoped fixture on purpose: pytest tears a parametrized higher-scoped fixture down whenever the
    next test has another parameter, and under xdist one worker's tests of several phones interleave; a phone
    would be reconnected (and uiautomator2 restarted on it) again and again.
    """
    state = run_state(request.config)
    entry = _phonehome_entry
    label = entry.label
    quarantined = state.quarantine.get(label)
    if quarantined is not None:
        raise DeviceError(label, f"quarantined for the rest of this run: {quarantined}")
    session = state.devices.get(label)
    fault = state.pending_recovery.pop(label, None)
    if fault is not None:
        session = _recover(request.config, state, entry, session, fault)
    if session is not None:
        return session  # type: ignore[no-any-return]
    try:
        session = _connect(request.config, state, entry)
    except PhonehomeError as exc:
        if label in state.recovered or not recoverable(exc) or isinstance(exc, PhoneUnreachable):
            # a phone that waited out its connect timeout is not retried at once: that would only wait again
            state.quarantine_device(label, _reason(exc))
            raise
        state.recovered.add(label)
        state.first_fault.setdefault(label, _reason(exc))
        log.warning("%s: %s; one recovery attempt", label, state.redactor(_reason(exc)))
        try:
            session = _connect(request.config, state, entry)
        except PhonehomeError as again:
            state.quarantine_device(label, _reason(again))
            raise DeviceError(label, f"quarantined for the rest of this run: {state.quarantine[label]}") from None
    state.devices[label] = session
    return session


def _recover(config: pytest.Config, state: RunState, entry: DeviceEntry, session: DeviceSession | None,
             fault: str) -> DeviceSession | None:
    """The one recovery attempt (after TradeFed's device recovery): reconnect, ``adb connect`` for TCP phones.
    Success keeps the session; failure quarantines the phone and raises with the original fault."""
    label = entry.label
    state.recovered.add(label)
    log.warning("%s: recovering after: %s", label, state.redactor(fault))
    try:
        recover = getattr(session.phone, "recover", None) if session is not None else None
        if recover is not None:
            recover()
            return session
        if session is not None:
            session.phone.close()
            state.devices.pop(label, None)
        held = state.locks.pop(label, None)
        if held is not None:
            held.release()
        return _connect(config, state, entry)
    except PhonehomeError as exc:
        state.quarantine_device(label, _reason(exc))
        raise DeviceError(label, f"quarantined for the rest of this run: {state.quarantine[label]}") from None


def _connect(config: pytest.Config, state: RunState, entry: DeviceEntry) -> DeviceSession:
    """Lock the phone for this run, build it through the hook, read its identifiers and report its info."""
    from phonehome import phonelock

    host, port = state.adb_address(entry)
    lock = phonelock.acquire(f"{host}:{port}", entry.serial, label=entry.label)
    try:
        phone = config.hook.pytest_phonehome_make_phone(entry=entry, settings=state.settings)
        if phone is None:
            raise PhonehomeError(f"device {entry.label}: no pytest_phonehome_make_phone implementation built a "
                                 "phone")
        try:
            session = _open_session(state, entry, phone)
            info = {**phone.info(), "identifier_sources": dict(session.sources), "tools": list(tool_versions()),
                    "identifiers_unreadable": dict(state.unreadable.get(entry.label, ()))}
            config.hook.pytest_phonehome_device_info(device=entry.label, info=info)
        except BaseException:
            phone.close()
            raise
    except BaseException:
        lock.release()
        raise
    state.locks[entry.label] = lock
    return session


def _open_session(state: RunState, entry: DeviceEntry, phone: Phone) -> DeviceSession:
    read, sources = phone.read_identifiers()
    identifiers = entry.identifiers.merged(read)
    all_sources = {name: "inventory" for name in entry.identifiers.names()}
    all_sources.update({name: f"phone: {how}" for name, how in sources.items()})
    if identifiers.is_empty():
        raise InputError(entry.source, f"device {entry.label} has no identifiers to look for",
                         where=f"line {entry.line}, {entry.key}.identifiers",
                         fix="list its identifiers, or name readable ones under read_identifiers")
    state.learn(identifiers=read, secrets=_secrets(entry))
    state.checked[entry.label] = list(all_sources.items())
    unreadable = dict(getattr(phone, "unreadable", {}) or {})
    state.unreadable[entry.label] = [
        (name, why + ("; the inventory's value is checked" if name in entry.identifiers.names() else
                      "; not checked"))
        for name, why in unreadable.items()]
    return DeviceSession(entry=dataclasses.replace(entry, identifiers=identifiers), phone=phone,
                         identifiers=identifiers, sources=all_sources, lab_phone=state.lab_phone(entry),
                         secrets=_secrets(entry), run=state)


def _secrets(entry: DeviceEntry) -> tuple[str, ...]:
    """The unlock secret, so that evidence text can be scrubbed of it; empty when there is none yet."""
    if not entry.unlock.needs_secret():
        return ()
    try:
        secret = entry.unlock.secret()
    except PhonehomeError:
        return ()  # unlock() reports the missing variable when it is needed
    return (secret,) if secret else ()


# --- per test ------------------------------------------------------------------------------------------------


@pytest.fixture
def phone(request: pytest.FixtureRequest, _phonehome_device: DeviceSession) -> Iterator[Phone]:
    """The phone under test (one test per selected device), reset to screen on and unlocked.

    On failure its screenshot, the logcat of the test and ``dumpsys window`` go to the
    ``pytest_phonehome_failure_evidence`` hook (the Allure reporter attaches them).
    """
    session = _phonehome_device
    started = time.time()
    try:
        woke = session.phone.screen_on()
        unlocked = session.phone.unlock()
    except PhonehomeError as exc:
        run_state(request.config).note_fault(session.label, exc)
        if not isinstance(exc, AdbServerGone):  # with no adb server there is no evidence to collect
            _report_evidence(request, session, started)
        raise
    except BaseException:
        _report_evidence(request, session, started)
        raise
    # the phone reacts to the reset with traffic of its own: let it pass before the test's capture starts
    settle_s = max(session.entry.settle("screen_on") if woke else 0.0, session.entry.settle("unlock") if unlocked
                   else 0.0)
    if settle_s > 0:
        time.sleep(settle_s)
    yield session.phone
    if item_failed(request.node):
        _report_evidence(request, session, started)


def _report_evidence(request: pytest.FixtureRequest, session: DeviceSession, started: float) -> None:
    """Collect what shows why a step failed; each piece independently, so one failure does not hide others."""
    settings = run_state(request.config).settings
    evidence: dict[str, Any] = {}
    shot = settings.capture_dir / "evidence" / f"{session.label}-{_file_stem(request.node)}.png"
    collectors: dict[str, Callable[[], object]] = {
        "screenshot": lambda: session.phone.screenshot(shot),
        "logcat": lambda: session.redact(session.phone.logcat_since(started), settings),
        "dumpsys_window": lambda: session.redact(session.phone.dumpsys_window(), settings),
    }
    with warnings.catch_warnings():
        # a phone that just went away leaves adb sockets behind: noise, not a second error after the first
        warnings.simplefilter("ignore", ResourceWarning)
        for key, collect in collectors.items():
            try:
                evidence[key] = collect()
            except Exception as exc:  # evidence is best effort: the test's own error is what matters
                evidence[f"{key}_error"] = session.redact(f"{type(exc).__name__}: {exc}", settings)
        gc.collect()
    try:
        request.config.hook.pytest_phonehome_failure_evidence(item=request.node, device=session.label, evidence=evidence)
    except Exception as exc:  # a reporter's bug must not hide the test's result
        log.warning("pytest_phonehome_failure_evidence for %s: %s", session.label, exc)


def _file_stem(item: pytest.Item) -> str:
    name = getattr(item, "originalname", None) or item.name
    return _UNSAFE_FILE_CHARS.sub("_", name).strip("_") or "test"


@dataclass(frozen=True)
class PhaseOutcome:
    """A closed and scanned phase, as the ``pytest_phonehome_phase_finished`` hook receives it."""

    name: str
    start: float
    end: float
    findings: list[dict[str, Any]]
    flows: list[dict[str, Any]]
    pcap: Path | None


class Traffic:
    """One test's capture of one phone: phases, then scan verdicts.

    ``with traffic.phase("unlock"): phone.unlock()`` records the action and the phone's settle time after it as
    the window ``unlock``. The assertions stop the capture, check it is complete and saw the phone in every
    phase (else :class:`~phonehome.errors.CaptureError`), scan it once, and fail on findings.
    """

    def __init__(self, *, item: pytest.Item, session: DeviceSession, capture: Capture, settings: Settings,
                 keylogs: KeylogSource | None = None, poller: SocketPoller | None = None,
                 boot_mark: object = None) -> None:
        #: the phone's boot when the capture started (a backend with ``boot_mark``): a reboot the test did not
        #: ask for is a device fault, found when the capture stops
        self._boot_mark = boot_mark
        self._poller = poller  # the phone's socket tables: names the app behind each flow (issue 12)
        self._item = item
        self._keylogs = keylogs  # the device's tls_keys source (issue 11)
        self._session = session
        self._capture = capture
        self._settings = settings
        self._hook = item.config.hook
        self._result: ScanResult | None = None
        self._slices: list[Path] = []
        self._quiet_phases: set[str] = set()

    @property
    def capture(self) -> Capture:
        return self._capture

    @property
    def device(self) -> str:
        """The label of the phone under test."""
        return self._session.label

    @property
    def identifiers(self) -> Identifiers:
        """The phone's identifiers as scanned for (inventory merged with those read from the phone): the
        reporter masks them in evidence it attaches."""
        return self._session.identifiers

    @property
    def policy_configured(self) -> bool:
        """True when the device's inventory entry sets denied or allowed hosts (else a policy test checks
        nothing and should say so by skipping)."""
        policy = self._session.entry.policy
        return bool(policy.denied_hosts or policy.allowed_hosts)

    @property
    def policy(self) -> Policy:
        """The phone's destination policy from the inventory (``denied_hosts``, ``identifier_hosts``...)."""
        return self._session.entry.policy

    @property
    def result(self) -> ScanResult | None:
        """The scan result, once an assertion ran."""
        return self._result

    @contextlib.contextmanager
    def phase(self, name: str, *, expect_traffic: bool = True) -> Iterator[None]:
        """Record the block, and the device's settle time for this phase after it, as the window ``name``.

        A phase must show traffic from the phone, else the capture proves nothing (CaptureError). Only a window
        where silence is the phone's normal behaviour (an idle window) passes ``expect_traffic=False``; the test
        must then record another phase that does show the phone, as proof that the capture sees it.
        """
        settle_s = self._settle_s(name)
        if not expect_traffic:
            self._quiet_phases.add(name)
        with self._capture.phase(name):
            yield
            if settle_s > 0:
                with self._step(f"settle {name}"):
                    time.sleep(settle_s)

    def _settle_s(self, name: str) -> float:
        """The inventory's ``settle_s`` for the event: phase ``power-on`` reads key ``power_on``."""
        return self._session.entry.settle(name.replace("-", "_"))

    def settle(self, event: str) -> None:
        """Wait the device's settle time after an event outside any phase (``screen_off`` before
        ``screen-on``), so its traffic does not spill into the next phase."""
        settle_s = self._settle_s(event)
        if settle_s > 0:
            with self._step(f"settle {event}"):
                time.sleep(settle_s)

    def _step(self, name: str) -> contextlib.AbstractContextManager[Any]:
        return self._hook.pytest_phonehome_step(name=name, device=self._session.label) or contextlib.nullcontext()

    def scan(self) -> ScanResult:
        """Stop the capture, check its health (fail closed), scan it once and report each phase."""
        if self._result is not None:
            return self._result
        from phonehome.capture import STOP_DELAY_S
        from phonehome.scan.scanner import Phase, scan_capture

        with self._step("scan"):
            extra_s = self._settle_s("stop_delay") - STOP_DELAY_S
            if extra_s > 0:
                time.sleep(extra_s)
            self._capture.stop()
            table = self._poller.stop() if self._poller is not None else None
            self._check_same_boot()
            phases = self._capture.phases
            if not phases:
                raise CaptureError(f"{self._session.label}: no phase was recorded; wrap the actions in "
                                   "'with traffic.phase(name):'")
            self._check_traffic([record.name for record in phases])
            keylogs = self._keylogs.fetch() if self._keylogs is not None else []
            result = scan_capture(self._capture.pcap, self._session.identifiers,
                                  phases=[Phase(record.name, record.start, record.end) for record in phases],
                                  keylogs=keylogs)
            if result.capture.decode_problem:  # fail closed: what phonehome cannot decode proves nothing
                raise CaptureError(f"{self._session.label}: {result.capture.decode_problem}")
            self._result = self._attribute(result, table)
        self._report_phases(self._result)
        self._check_tls_keys(self._result)
        return self._result

    def _check_same_boot(self) -> None:
        """A phone that rebooted, lost power or went away during the test is a device fault (DeviceError), even
        when the capture looks complete: its phases recorded another boot's traffic."""
        check = getattr(self._session.phone, "check_same_boot", None)
        if self._boot_mark is not None and check is not None:
            check(self._boot_mark)

    def _attribute(self, result: ScanResult, table: SocketTable | None) -> ScanResult:
        """Name the app behind each flow: from PCAPdroid's own per-packet trailer when its capture has one,
        else from the socket tables polled during the test."""
        from phonehome.scan.attribution import attribute

        if getattr(self._capture, "source", None) == "pcapdroid":
            from phonehome.scan.pcapdroid_trailer import SOURCE, trailer_table

            trailers = trailer_table(self._capture.pcap)
            if trailers is not None:
                return attribute(result, trailers, source=SOURCE)
        if table is None or self._poller is None:
            return result
        log.info("%s: socket tables: %s", self._session.label, self._poller.timing())
        return attribute(result, table, source=str(self._poller.record))

    def _check_traffic(self, phases: Sequence[str]) -> None:
        """Fail closed: every phase that expects traffic saw the phone, and at least one phase did."""
        for name in phases:
            if name not in self._quiet_phases:
                self._capture.assert_saw_traffic(name)
        if all(name in self._quiet_phases for name in phases) and \
                not any(self._capture.packets_in(name) for name in phases):
            raise CaptureError(f"{self._session.label}: no traffic from the phone in any phase "
                               f"({', '.join(phases)}); silence proves nothing unless another phase of the same "
                               "capture shows the phone")

    def _report_phases(self, result: ScanResult) -> None:
        for record in self._capture.phases:
            pcap = self._slice(record.name)
            outcome = PhaseOutcome(
                name=record.name, start=record.start, end=record.end,
                findings=[self._redact_json(finding.to_json()) for finding in result.in_phase(record.name)],
                flows=[flow.to_json() for flow in result.flows
                       if record.start <= flow.first_time <= record.end], pcap=pcap)
            self._hook.pytest_phonehome_phase_finished(item=self._item, device=self._session.label, phase=outcome)

    def _slice(self, phase: str) -> Path | None:
        if self._settings.keep_pcaps == "none":
            return None
        try:
            path = self._capture.slice(phase)
        except PhonehomeError as exc:
            log.warning("%s: no slice of phase %s: %s", self._session.label, phase, exc)
            return None
        self._slices.append(path)
        return path

    def _redact_json(self, finding: dict[str, Any]) -> dict[str, Any]:
        return {key: self._session.redact(value, self._settings) if isinstance(value, str) else value
                for key, value in finding.items()}

    def assert_no_cleartext_identifiers(self, phases: Sequence[str] | None = None) -> None:
        """Fail when any identifier of the phone left it unencrypted, listing each finding; only in ``phases``
        when given (the others only prove the capture works)."""
        result = self.scan()
        if phases is not None:
            self._check_recorded(phases)  # after the scan: a replayed file knows its phases only once stopped
        # traffic outside every phase (late echoes of the per-test reset) is not this test's to judge
        findings = [finding for finding in result.cleartext_findings if finding.phase is not None
                    and (phases is None or finding.phase in phases)]
        if findings:
            raise AssertionError(self._describe_findings(findings))

    def _check_recorded(self, phases: Sequence[str]) -> None:
        """A phase name that was never recorded (``screen_on`` for ``screen-on``) would judge an empty window and
        pass a leaking phone: refuse it, naming the phases that were recorded."""
        recorded = [record.name for record in self._capture.phases]
        unknown = [name for name in phases if name not in recorded]
        if unknown or not phases:
            problem = (f"phase(s) never recorded: {', '.join(repr(name) for name in unknown)}" if unknown
                       else "an empty list judges nothing")
            raise InputError(f"test {self._item.name}", f"assert_no_cleartext_identifiers(phases=...): {problem}",
                             fix=f"use the names given to traffic.phase(): {', '.join(recorded) or '(none recorded)'}")

    def assert_no_denied_hosts(self) -> None:
        """Fail when the phone talked to a host its inventory policy denies, encrypted or not."""
        result = self.scan()
        policy = self._session.entry.policy
        denied = [self._describe_flow(flow) for flow in result.flows
                  if self._phase_of(flow.first_time) is not None and policy.is_denied(flow.host, flow.dst)]
        if denied:
            lines = "\n".join(f"  - {line}" for line in dict.fromkeys(denied))
            raise AssertionError(f"{self._session.label} talked to {len(denied)} denied host(s):\n{lines}")

    # --- inside TLS (issue 11) ---

    def _check_tls_keys(self, result: ScanResult) -> None:
        """With ``tls_keys: {require: true}``, fail closed: a TLS flow in a phase that could not be decrypted
        hides what it carried, so the test cannot pass or fail on it."""
        if self._keylogs is None or not self._keylogs.require:
            return
        blind = [flow for flow in result.flows if flow.decryption in ("no-key", "failed")
                 and self._phase_of(flow.first_time) is not None]
        if blind:
            lines = "\n".join(f"  - {self._describe_flow(flow)}: {flow.decryption}" for flow in blind[:FRAMES_SHOWN])
            more = f"\n  ... and {len(blind) - FRAMES_SHOWN} more" if len(blind) > FRAMES_SHOWN else ""
            raise CaptureError(f"{self._session.label}: tls_keys require: {len(blind)} TLS flow(s) could not be "
                               f"decrypted, so the capture cannot show what they carried:\n{lines}{more}")

    def assert_identifiers_only_to_allowed_hosts(self) -> None:
        """Fail when the phone sent any identifier, in cleartext or inside TLS (decrypted with its key logs), to
        a host outside its inventory policy's ``identifier_hosts``."""
        result = self.scan()
        policy = self._session.entry.policy
        clients = {(flow.src, flow.sport) for flow in result.flows}  # findings the phone sent, not replies
        findings = [finding for finding in result.findings
                    if finding.phase is not None and (finding.src, finding.sport) in clients
                    and not policy.may_receive_identifiers(finding.host, finding.dst)]
        if findings:
            text = self._describe_findings(findings).replace(" in cleartext (", " to hosts outside identifier_hosts (",
                                                             1)
            raise AssertionError(text + f"\n  identifier_hosts: {', '.join(policy.identifier_hosts) or '(none)'}")

    def _phase_of(self, timestamp: float) -> str | None:
        return next((record.name for record in self._capture.phases if record.start <= timestamp <= record.end),
                    None)

    def _describe_findings(self, findings: Sequence[Finding]) -> str:
        """One line per leak: the same identifier, encoding, destination and phase sent again only adds frames."""
        groups: dict[tuple[object, ...], list[Finding]] = {}
        for finding in findings:
            key = (finding.identifier, finding.encoding, finding.host, finding.dst, finding.dport, finding.protocol,
                   finding.phase, finding.uid)
            groups.setdefault(key, []).append(finding)
        names = sorted({finding.identifier for finding in findings})
        lines = [f"{self._session.label} sent {len(names)} identifier(s) in cleartext ({', '.join(names)}):"]
        for group in groups.values():
            frames = tuple(sorted({frame for finding in group for frame in finding.frames}))
            lines.append("  - " + self._sender(group[0]) + self._describe_finding(
                dataclasses.replace(group[0], frames=frames)))
        attribution = self._result.attribution if self._result is not None else None
        if attribution is not None:
            from phonehome.scan.command import coverage_text

            judged = {finding.phase for finding in findings}
            lines += [f"  {line}" for line in coverage_text(attribution, judged).splitlines()]
            lines += [f"  apps: {note}" for note in attribution.notes]
        return "\n".join(lines)

    def _sender(self, finding: Finding) -> str:
        """``com.example.app sent `` (a shared UID with its packages), or nothing without a socket table."""
        attribution = self._result.attribution if self._result is not None else None
        if attribution is None:
            return ""
        app = attribution.app(finding.uid)
        return f"{app.describe() if app is not None else '(unattributed)'} sent "

    def _describe_finding(self, finding: Finding) -> str:
        """``imei 35*********81 as base64 to zzhc.example (203.0.113.7:80) over http, frames 4, 9, phase unlock``"""
        values = self._session.identifiers.get(finding.identifier)
        shown = f" {self._show(values[0])}" if len(values) == 1 else ""
        host = f"{finding.host} ({finding.dst}:{finding.dport})" if finding.host else f"{finding.dst}:{finding.dport}"
        frames = ", ".join(str(frame) for frame in finding.frames[:FRAMES_SHOWN])
        if len(finding.frames) > FRAMES_SHOWN:
            frames += f" and {len(finding.frames) - FRAMES_SHOWN} more"
        text = (f"{finding.identifier}{shown} as {finding.encoding} to {host} over {finding.protocol}, "
                f"frame(s) {frames}, phase {finding.phase or '(none)'}")
        if finding.excerpt:
            clipped = self._session.redact(finding.excerpt, self._settings)[:EXCERPT_MAX_CHARS]
            text += f": {clipped!r}"
        return text

    def _describe_flow(self, flow: Flow) -> str:
        where = f"{flow.host} ({flow.dst}:{flow.dport})" if flow.host else f"{flow.dst}:{flow.dport}"
        phase = self._phase_of(flow.first_time) or "(none)"
        return (f"{where} over {flow.protocol} ({'encrypted' if flow.encrypted else 'cleartext'}), "
                f"{flow.frames} frame(s) from frame {flow.first_frame}, phase {phase}")

    def _show(self, value: str) -> str:
        return value if self._settings.show_identifiers else mask(value)

    def finish(self, *, failed: bool) -> None:
        """Tear down the capture and apply --phonehome-keep-pcaps. Never raises."""
        self._capture.close()
        if self._poller is not None:
            self._poller.stop()
        keep = self._settings.keep_pcaps
        kept = keep == "all" or (keep == "failed" and failed)
        self._announce_files(kept=kept)
        if kept:
            return
        if self._keylogs is not None:
            self._keylogs.delete()  # a key log is a secret: it goes with the capture
        records = (self._poller.record,) if self._poller is not None else ()
        for path in (self._capture.pcap, *self._slices, _phases_file(self._capture.pcap), *records):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("%s: could not delete %s: %s", self._session.label, path, exc)


    def _announce_files(self, *, kept: bool) -> None:
        """Tell reporters (the evidence manifest) which files this capture left, before any is deleted."""
        candidates = [(self._capture.pcap, "capture"), (_phases_file(self._capture.pcap), "phases"),
                      *((path, "slice") for path in self._slices)]
        files = [(path, role) for path, role in candidates if path.is_file()]
        try:
            self._hook.pytest_phonehome_capture_finished(item=self._item, device=self._session.label,
                                                         capture=self._capture, files=files, kept=kept)
        except Exception as exc:  # teardown never hides a result; the manifest says what it could not record
            log.warning("%s: recording the capture's files: %s", self._session.label, exc)


def _phases_file(pcap: Path) -> Path:
    from phonehome.capture import phases_path

    return phases_path(pcap)


@pytest.fixture
def traffic(request: pytest.FixtureRequest, phone: Phone, _phonehome_device: DeviceSession) -> Iterator[Traffic]:
    """The phone's traffic during this test: ``traffic.phase(name)``, then
    ``traffic.assert_no_cleartext_identifiers()`` / ``traffic.assert_no_denied_hosts()``.

    A capture that never became ready, died, dropped packets or saw nothing from the phone in a phase is a
    :class:`~phonehome.errors.CaptureError` (an error of the test), never a pass.
    """
    from phonehome.capture import CaptureContext, capture_for

    session = _phonehome_device
    state = run_state(request.config)
    lab_phone = session.lab_phone
    context = CaptureContext(
        directory=state.settings.capture_dir,
        lab_interface=getattr(lab_phone, "interface", None),
        adb_server_port=state.adb_address(session.entry)[1] if session.entry.backend == "virtual" else None)
    capture = capture_for(session.entry, context, name=_file_stem(request.node))
    keylogs = None
    if session.entry.tls_keys.source or session.entry.tls_keys.require:
        from phonehome.capture.keylogs import KeylogSource

        keylogs = KeylogSource(session.entry.tls_keys, capture.pcap, serial=session.entry.serial,
                               server_port=context.adb_server_port, label=session.label,
                               auto_path=getattr(lab_phone, "tls_keylog", None))
    from phonehome.capture.sockets import poller_for

    poller = poller_for(session.entry, state.adb_address(session.entry), capture.pcap)
    boot_mark = getattr(phone, "boot_mark", None)
    traffic = Traffic(item=request.node, session=session, capture=capture, settings=state.settings,
                      keylogs=keylogs, poller=poller, boot_mark=boot_mark() if boot_mark is not None else None)
    with traffic._step("capture start"):
        capture.start()
        if poller is not None:
            poller.start()
    try:
        yield traffic
    finally:
        traffic.finish(failed=item_failed(request.node))
