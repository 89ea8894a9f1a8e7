"""pytest glue for phonehome (registered through the ``pytest11`` entry point).

Imports nothing heavy: ``pytest --help`` and ``--collect-only`` work with no adb, tshark or phone. Options are
resolved once (command line > ``PHONEHOME_*`` environment > ini > default) into a frozen :class:`Settings` kept
in ``config.stash``; the inventory is loaded at configure time so that a bad ``devices.yaml`` is one usage line,
not a traceback per test. The virtual lab is started only by the process that owns the run (the xdist
controller, or the only process) and only when a selected device is virtual.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from phonehome.errors import CaptureError, DeviceError, InputError, PhonehomeError
from phonehome.markers import MARKERS, marker_signature
from phonehome.redaction import Redactor
from phonehome.runstate import (
    REPORTS_KEY,
    SETTINGS_KEY,
    STATE_KEY,
    RunState,
    Settings,
    run_state,
    tool_versions,
)

if TYPE_CHECKING:
    from phonehome.devices.base import Phone
    from phonehome.inventory import DeviceEntry

log = logging.getLogger(__name__)

KEEP_PCAPS_CHOICES = ("all", "failed", "none")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
#: xdist modes that keep every test of one phone on one worker (tests carry ``xdist_group(label)``)
SAFE_DIST_MODES = ("no", "loadgroup")
WORKERINPUT_LAB_KEY = "phonehome_lab"
WORKERINPUT_LOADGROUP_KEY = "phonehome_loadgroup"
WORKERINPUT_LAB_ERROR_KEY = "phonehome_lab_error"
WORKEROUTPUT_SUMMARY_KEY = "phonehome_summary"


# --- settings ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Option:
    """One option with its command line flag, ini key and environment variable."""

    flag: str
    kind: str  # path | list | choice | bool
    default: object
    help: str
    choices: tuple[str, ...] = ()
    #: the option's attribute on ``config.option`` (``--lab`` keeps its short name)
    name: str | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.name or self.flag.removeprefix("--").replace("-", "_")

    @property
    def ini(self) -> str:
        """Every ini key and environment variable is prefixed, even for ``--lab``."""
        dest = self.flag.removeprefix("--").replace("-", "_")
        return dest if dest.startswith("phonehome_") else f"phonehome_{dest}"

    @property
    def env(self) -> str:
        return self.ini.upper()


OPTIONS: tuple[_Option, ...] = (
    _Option("--phonehome-inventory", "path", "devices.yaml",
            "device inventory file (default: devices.yaml in the rootdir)", metavar="PATH"),
    _Option("--phonehome-device", "list", (),
            "run only on the device with this inventory label (repeatable; env: comma-separated)",
            metavar="LABEL"),
    _Option("--phonehome-model", "list", (),
            "run only on devices of this model (repeatable; env: comma-separated)", metavar="MODEL"),
    _Option("--phonehome-capture-dir", "path", "results/captures",
            "where capture files go (default: results/captures in the rootdir)", metavar="DIR"),
    _Option("--phonehome-keep-pcaps", "choice", "failed",
            "which captures to keep after a test: all, failed (default) or none", KEEP_PCAPS_CHOICES),
    _Option("--phonehome-show-identifiers", "bool", False,
            "show identifiers unmasked in messages and reports (they are masked by default)"),
)
LAB_OPTION = _Option("--lab", "bool", False, "run lab tests that need real phones (skipped otherwise)", name="lab")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("phonehome", "phonehome: catch phones phoning home")
    for option in (*OPTIONS, LAB_OPTION):
        help_text = f"{option.help} [env: {option.env}, ini: {option.ini}]"
        if option.kind == "bool":
            group.addoption(option.flag, action="store_true", default=None, dest=option.dest, help=help_text)
        elif option.kind == "list":
            group.addoption(option.flag, action="append", default=None, dest=option.dest, metavar=option.metavar,
                            help=help_text)
        else:
            metavar = "{" + ",".join(option.choices) + "}" if option.choices else option.metavar
            group.addoption(option.flag, default=None, dest=option.dest, metavar=metavar, help=help_text)
        ini_type = {"bool": "bool", "list": "linelist"}.get(option.kind, "string")
        parser.addini(option.ini, help=option.help, type=ini_type, default=None)  # type: ignore[arg-type]


def resolve_settings(config: pytest.Config, environ: os._Environ[str] | dict[str, str] | None = None) -> Settings:
    """Resolve every option once: command line > ``PHONEHOME_*`` > ini > default; raise pytest.UsageError on a
    bad value, naming where it came from and the valid values."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    given: set[str] = set()
    for option in (*OPTIONS, LAB_OPTION):
        value, origin, base = _lookup(config, option, env)
        if origin != "default":
            given.add(option.dest)
        values[option.dest] = _convert(option, value, origin, base)
    return Settings(
        inventory=values["phonehome_inventory"], devices=values["phonehome_device"],
        models=values["phonehome_model"], capture_dir=values["phonehome_capture_dir"],
        keep_pcaps=values["phonehome_keep_pcaps"], show_identifiers=values["phonehome_show_identifiers"],
        lab=values["lab"], inventory_given="phonehome_inventory" in given)


def _lookup(config: pytest.Config, option: _Option, env: os._Environ[str] | dict[str, str]
            ) -> tuple[object, str, Path]:
    """(raw value, where it came from, the directory relative paths are resolved against)."""
    invocation_dir = Path(config.invocation_params.dir)
    cli = config.getoption(option.dest, default=None)
    if cli is not None:
        return cli, option.flag, invocation_dir
    if option.env in env:
        return env[option.env], option.env, invocation_dir
    ini = config.getini(option.ini)
    if ini not in (None, [], ""):
        base = config.inipath.parent if config.inipath else config.rootpath
        return ini, f"ini {option.ini} in {config.inipath or config.rootpath}", base
    return option.default, "default", config.rootpath


def _convert(option: _Option, value: object, origin: str, base: Path) -> Any:
    if option.kind == "path":
        return base / Path(str(value)).expanduser()
    if option.kind == "list":
        return _as_list(value)
    if option.kind == "bool":
        return _as_bool(value, origin)
    text = str(value).strip().lower()
    if text not in option.choices:
        raise pytest.UsageError(f"{origin}: '{value}' is not a valid value for {option.flag}; "
                                f"choose one of: {', '.join(option.choices)}")
    return text


def _as_list(value: object) -> tuple[str, ...]:
    items: Sequence[object] = value if isinstance(value, list | tuple) else str(value).split(",")
    parts = [part.strip() for item in items for part in str(item).split(",")]
    return tuple(dict.fromkeys(part for part in parts if part))


def _as_bool(value: object, origin: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise pytest.UsageError(f"{origin}: '{value}' is not a boolean; use one of: "
                            f"{', '.join(TRUE_WORDS)} or {', '.join(w for w in FALSE_WORDS if w)}")


# --- hooks ---------------------------------------------------------------------------------------------------


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from phonehome import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_cmdline_main(config: pytest.Config) -> None:
    """With ``-n``, spread tests by phone: xdist's default ``load`` becomes ``loadgroup`` (each phone's tests
    carry ``xdist_group(label)``), which is ``load`` for every test without a phone."""
    if getattr(config.option, "dist", "no") == "load" and getattr(config.option, "tx", None):
        config.option.dist = "loadgroup"


def pytest_configure(config: pytest.Config) -> None:
    for name, function in MARKERS.items():
        config.addinivalue_line("markers", f"{marker_signature(name)}: {function.__doc__}")
    config.addinivalue_line("markers", "lab: needs real phones; skipped unless --lab")
    settings = resolve_settings(config)
    config.stash[SETTINGS_KEY] = settings
    state = RunState(config=config, settings=settings)
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(DefaultImplementations(config), "phonehome-defaults")
    from phonehome import fixtures

    config.pluginmanager.register(fixtures, "phonehome-fixtures")
    if config.option.help or config.option.version:
        return
    if config.getoption("allure_report_dir", default=None):
        from phonehome.report.allure_results import register

        register(config)  # the Allure reporter is a plugin object only when --alluredir asks for it
    from phonehome.manifest import recorder

    recorder.register(config)  # the evidence manifest of every run that uses a phone
    _load_inventory(state)
    _check_dist_mode(config, state)
    _warn_yaml_test_paths(config)
    config.add_cleanup(install_log_redaction(state))
    config.pluginmanager.register(OutputMasking(state), "phonehome-output-masking")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and workerinput.get(WORKERINPUT_LOADGROUP_KEY):
        # workers compute loadgroup from their own command line, where -n alone means "load"
        config.option.loadgroup = True
    if workerinput is not None and workerinput.get(WORKERINPUT_LAB_KEY):
        from phonehome.virtual.lab import LabState

        state.lab_state = LabState.from_json(workerinput[WORKERINPUT_LAB_KEY])
    if workerinput is not None and workerinput.get(WORKERINPUT_LAB_ERROR_KEY):
        state.lab_error = str(workerinput[WORKERINPUT_LAB_ERROR_KEY])


def _warn_yaml_test_paths(config: pytest.Config) -> None:
    """A devices.yaml among the test paths was meant as the inventory (``--phonehome-inventory PATH`` read as an
    option without a value, or a path after a space moving pytest's rootdir): say so before the wrong tests run."""
    for arg in config.args:
        path = Path(str(arg).split("::", 1)[0])
        if path.suffix in (".yaml", ".yml") and path.is_file():
            config.issue_config_time_warning(pytest.PytestConfigWarning(
                f"phonehome: {arg} was given as a test path (rootdir {config.rootpath}); an inventory is "
                f"passed as --phonehome-inventory={arg} (with '=') or PHONEHOME_INVENTORY={arg}"), stacklevel=2)


def _load_inventory(state: RunState) -> None:
    settings = state.settings
    if not settings.inventory.is_file():
        if settings.inventory_given:
            raise pytest.UsageError(f"{settings.inventory}: device inventory not found (pass an existing file to "
                                    "--phonehome-inventory / PHONEHOME_INVENTORY)")
        return
    from phonehome.inventory import load_inventory

    try:
        state.inventory = load_inventory(settings.inventory)
        state.selected = tuple(state.inventory.select(settings.devices, settings.models))
    except InputError as exc:
        raise pytest.UsageError(str(exc)) from None
    state.redactor = Redactor(show=settings.show_identifiers)
    state.learn_inventory()
    if (settings.devices or settings.models) and not state.selected:
        labels = ", ".join(entry.label for entry in state.inventory.devices)
        models = ", ".join(dict.fromkeys(entry.model for entry in state.inventory.devices))
        raise pytest.UsageError(f"{settings.inventory}: no device matches --phonehome-device "
                                f"{list(settings.devices)} / --phonehome-model {list(settings.models)}; "
                                f"labels: {labels}; models: {models}")


def _check_dist_mode(config: pytest.Config, state: RunState) -> None:
    dist = getattr(config.option, "dist", "no")
    if state.selected and getattr(config.option, "tx", None) and dist not in SAFE_DIST_MODES:
        raise pytest.UsageError(f"phonehome: --dist {dist} could give one phone to two workers; use "
                                "--dist loadgroup (the default with -n)")


def pytest_sessionstart(session: pytest.Session) -> None:
    """The xdist controller starts the lab before the workers exist, so that they can share it."""
    config = session.config
    state = config.stash.get(STATE_KEY, None)
    if state is not None and state.selected and not config.option.collectonly:
        _check_bench(state)
    if state is None or not _is_xdist_controller(config) or config.option.collectonly:
        return
    if state.virtual_devices():
        try:
            state.ensure_lab()
        except PhonehomeError as exc:  # every phone test reports it; the session itself goes on
            log.error("phonehome: %s", exc)


def _check_bench(state: RunState) -> None:
    """The fast part of ``phonehome check`` (no phone read, nothing recorded): a phone that fails it is
    quarantined now, so each of its tests errors at once with the check's message, and the other phones run."""
    from phonehome.check.checks import session_problems

    for label, message in session_problems(state.selected).items():
        state.quarantine_device(label, f"phonehome check: {message}")


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "tx", None)) and \
        getattr(config.option, "dist", "no") != "no"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Hand the controller's lab (adb server, interfaces) and its phone-by-phone scheduling to each worker."""
    node.workerinput[WORKERINPUT_LOADGROUP_KEY] = getattr(node.config.option, "dist", "no") == "loadgroup"
    state = node.config.stash.get(STATE_KEY, None)
    if state is not None and state.lab_state is not None:
        node.workerinput[WORKERINPUT_LAB_KEY] = state.lab_state.to_json()
    if state is not None and state.lab_error is not None:
        node.workerinput[WORKERINPUT_LAB_ERROR_KEY] = state.lab_error


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE_KEY, None)
    if state is not None:
        state.close_devices()
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller prints the summary of every phone
            mask = state.redactor.deep  # the worker knows the values it read from its phones; the controller not
            workeroutput[WORKEROUTPUT_SUMMARY_KEY] = json.dumps({
                "checked": state.checked,
                "unreadable": {label: [(name, mask(why)) for name, why in items]
                               for label, items in state.unreadable.items()},
                "quarantine": {label: mask(cause) for label, cause in state.quarantine.items()}})


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: what each worker checked and quarantined, for the terminal summary."""
    state = node.config.stash.get(STATE_KEY, None)
    raw = getattr(node, "workeroutput", {}).get(WORKEROUTPUT_SUMMARY_KEY)
    if state is None or not raw:
        return
    summary = json.loads(raw)
    for label, checked in summary.get("checked", {}).items():
        state.checked[label] = [tuple(pair) for pair in checked]
    for label, unreadable in summary.get("unreadable", {}).items():
        state.unreadable[label] = [tuple(pair) for pair in unreadable]
    for label, cause in summary.get("quarantine", {}).items():
        state.quarantine.setdefault(label, cause)


def device_of(nodeid: str, labels: Sequence[str]) -> str | None:
    """The device label a test id was parametrized with (``test_x[nokia]``, ``test_y[nokia-3]`` with another
    parameter, or xdist's ``...@nokia`` group suffix); the longest label wins when labels share a prefix."""
    at, bracket = nodeid.rfind("@"), nodeid.rfind("]")
    if at > bracket and nodeid[at + 1:] in labels:
        return nodeid[at + 1:]
    start = nodeid.find("[")
    if start < 0 or bracket < start:
        return None
    params = nodeid[start + 1:bracket]
    matches = [label for label in labels if params == label or params.startswith(f"{label}-")
               or params.endswith(f"-{label}") or f"-{label}-" in params]
    return max(matches, key=len) if matches else None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Schedule by phone: all tests of one device go to one worker, which owns that phone for the run.

    pytest-xdist's own ``loadgroup`` cannot be relied on here: it marks groups by rewriting ``item._nodeid``,
    which pytest 9.2 no longer reads, so tests of one ``xdist_group`` still spread over workers.
    """
    state = config.stash.get(STATE_KEY, None)
    if state is None or not state.selected or getattr(config.option, "dist", "no") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    labels = tuple(entry.label for entry in state.selected)

    class DeviceScheduling(LoadScopeScheduling):  # type: ignore[misc]
        """``loadscope`` where a test's scope is its device (tests without one are scheduled one by one)."""

        def _split_scope(self, nodeid: str) -> str:
            device = device_of(nodeid, labels)
            return f"phonehome-device:{device}" if device is not None else nodeid

        def remove_node(self, node: Any) -> str | None:
            """A worker died in a test: that test is reported as crashed and never run again. ``loadscope``
            requeues it with the rest of its device's tests, so a test that kills its worker (an OOM kill, a
            crash in a native library) ran on every replacement worker, typing an unlock credential each time
            on a fresh process that knew nothing of the earlier attempts, until xdist gave up on the run."""
            workload = self.assigned_work.get(node, {})
            crashed = next((nodeid for unit in workload.values() for nodeid, done in unit.items() if not done),
                           None)
            for unit in workload.values():
                if crashed in unit:
                    unit[crashed] = True
            later = super().remove_node(node)
            return crashed if crashed is not None else later  # type: ignore[no-any-return]

    return DeviceScheduling(config, log)


_FORMATTER = logging.Formatter()


def install_log_redaction(state: RunState) -> Callable[[], None]:
    """Mask identifiers and secrets in every log record made during the run (live logging, ``--log-file``,
    captured logs): a record's message is rendered and masked once, when it is made. Returns the undo."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is logging's own error to report, later
            return record
        masked = state.redactor.deep(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[0] is not None:  # rendered now, masked: handlers use exc_text
            record.exc_text = state.redactor.deep(_FORMATTER.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = state.redactor.deep(record.stack_info)
        return record

    logging.setLogRecordFactory(factory)
    return lambda: logging.setLogRecordFactory(previous)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.close_devices()
        state.stop_lab()


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(STATE_KEY, None)
    if state is None or state.inventory is None:
        return []
    settings = state.settings
    devices = ", ".join(f"{entry.label} ({entry.model}, {entry.backend}, capture {_capture_summary(entry)})"
                        for entry in state.selected) or "none"
    checks = [f"phonehome: {entry.label} checks {_checked_summary(entry)}" for entry in state.selected]
    lines = [
        f"phonehome: inventory {settings.inventory} ({len(state.inventory.devices)} devices)",
        f"phonehome: devices {devices}",
        *checks,
        f"phonehome: captures in {settings.capture_dir}, keep {settings.keep_pcaps}; identifiers "
        f"{'shown' if settings.show_identifiers else 'masked'}",
        f"phonehome: tools {', '.join(tool_versions())}",
    ]
    return [state.redactor.deep(line) for line in lines]  # a filter or host may name a MAC or a serial


def _checked_summary(entry: DeviceEntry) -> str:
    """``imei, serial (inventory); android_id, imsi (to read from the phone)``: what a pass will have covered."""
    listed = entry.identifiers.names()
    to_read = [name for name in entry.read_identifiers if name not in listed]
    parts = []
    if listed:
        parts.append(f"{', '.join(listed)} (inventory)")
    if to_read:
        parts.append(f"{', '.join(to_read)} (to read from the phone)")
    return "; ".join(parts) or "nothing (no identifiers listed or to read)"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Per phone: the identifiers checked and where each value came from, what could not be read, and the
    phones quarantined with their cause."""
    state = config.stash.get(STATE_KEY, None)
    if state is None or not (state.checked or state.quarantine or state.unreadable):
        return
    write = terminalreporter.write_line
    terminalreporter.section("phonehome: what was checked")
    for label, checked in state.checked.items():
        write(f"{label}: checked " + ", ".join(f"{name} ({source})" for name, source in checked))
        for name, why in state.unreadable.get(label, ()):
            write(f"{label}: could not read {name}: {state.redactor(why)}")
    for label, cause in state.quarantine.items():
        write(f"{label}: QUARANTINED for the rest of the run: {state.redactor(cause)}")


def _capture_summary(entry: DeviceEntry) -> str:
    """``interface auto ether host {wifi_mac}``: where and how the device's traffic is recorded."""
    spec = entry.capture
    where = spec.interface or spec.host or (str(spec.file) if spec.file else "")
    return " ".join(part for part in (spec.source, where, f"'{spec.filter}'" if spec.filter else "") if part)


# --- outcome bookkeeping (fixtures read it in teardown) --------------------------------------------------------

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's report (fixtures decide on evidence and pcaps from it); show bad input, wherever
    it surfaces, as its one line instead of a traceback; mask every identifier and secret in what pytest will
    print or hand to reporters (tracebacks with their locals and fixture arguments, captured output and logs)."""
    report = yield
    item.stash.setdefault(REPORTS_KEY, {})[report.when] = report
    state = item.config.stash.get(STATE_KEY, None)
    if call.excinfo is not None and call.excinfo.errisinstance(InputError) and report.failed:
        line = f"{call.excinfo.typename}: {call.excinfo.value}"
        report.longrepr = state.redactor.deep(line) if state is not None else line
    if (report.when == "call" and report.failed and call.excinfo is not None
            and call.excinfo.errisinstance(PhonehomeError) and not call.excinfo.errisinstance(AssertionError)):
        # a device or capture fault in the test body: the evidence is missing, not bad (Allure: broken)
        report.phonehome_fault = call.excinfo.typename
    if state is None:
        return report
    if report.when == "call" and call.excinfo is not None and call.excinfo.errisinstance(DeviceError):
        fault = call.excinfo.value
        assert isinstance(fault, DeviceError)
        state.note_fault(fault.device, fault)
    if report.failed and call.excinfo is not None and call.excinfo.errisinstance(CaptureError):
        cause = state.lab_failure()
        if cause is not None and hasattr(report.longrepr, "addsection"):  # the capture died with the lab
            report.longrepr.addsection("phonehome: the virtual lab stopped", cause)
    return report


class OutputMasking:
    """Masks identifiers and secrets in everything pytest reports: test and collection reports (tracebacks with
    their locals, captured output and logs, skip and xfail reasons) and the warnings summary. A plugin object,
    so that its report wrapper can be the innermost one: its masking comes before any reporter (allure-pytest
    attaches captured output from its own wrapper) sees the report."""

    def __init__(self, state: RunState) -> None:
        self._state = state

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        redact_report(report, self._state.redactor)
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Any:
        report = yield
        if report.failed:  # a collection error (an import failing on a value, say)
            redact_report(report, self._state.redactor)
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_warning_recorded(self, warning_message: Any, when: str, nodeid: str, location: Any) -> None:
        text = str(warning_message.message)
        masked = self._state.redactor.deep(text)
        if masked != text:
            try:
                warning_message.message = type(warning_message.message)(masked)
            except Exception:  # a warning class with another signature: a plain one with the masked text
                warning_message.message = UserWarning(masked)


def redact_report(report: pytest.TestReport, redactor: Redactor) -> None:
    """Mask identifiers and secrets in a report's text, in place. The long form keeps its structure (reporters
    read the crash message and entries from it): only its strings change, and only when something was found."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, line, reason)
        path, line, reason = longrepr
        report.longrepr = (path, line, redactor.deep(reason))
    elif isinstance(longrepr, str):
        report.longrepr = redactor.deep(longrepr)
    if isinstance(getattr(report, "wasxfail", None), str):
        report.wasxfail = redactor.deep(report.wasxfail)
    elif longrepr is not None:
        text = str(longrepr)
        if redactor.deep(text) != text:
            _redact_strings(longrepr, redactor, set())
            if redactor.deep(str(longrepr)) != str(longrepr):  # a form this walk does not know: text it is
                report.longrepr = redactor.deep(str(longrepr))
    report.sections = [(title, _masked_section(redactor, body)) for title, body in report.sections]


#: (redactor, body) -> masked body: a test's set-up, call and teardown reports repeat the captured sections
_SECTION_CACHE: dict[tuple[int, int], tuple[Redactor, str, str]] = {}
_SECTION_CACHE_SIZE = 64


def _masked_section(redactor: Redactor, body: str) -> str:
    key = (id(redactor), hash(body))
    cached = _SECTION_CACHE.get(key)
    if cached is not None and cached[0] is redactor and cached[1] == body:
        return cached[2]
    masked = redactor.deep(body)
    if len(_SECTION_CACHE) >= _SECTION_CACHE_SIZE:
        _SECTION_CACHE.pop(next(iter(_SECTION_CACHE)))
    _SECTION_CACHE[key] = (redactor, body, masked)
    return masked


def _redact_strings(node: Any, redactor: Redactor, seen: set[int]) -> Any:
    """Every string inside pytest's traceback representation (entries, locals, fixture arguments, the crash
    message), masked; lists and objects are changed in place."""
    if isinstance(node, str):
        return redactor.deep(node)
    if id(node) in seen or node is None or isinstance(node, int | float | bool):
        return node
    seen.add(id(node))
    if isinstance(node, list):
        node[:] = [_redact_strings(item, redactor, seen) for item in node]
        return node
    if isinstance(node, tuple):
        return tuple(_redact_strings(item, redactor, seen) for item in node)
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = _redact_strings(value, redactor, seen)
        return node
    if type(node).__module__.startswith("_pytest") and hasattr(node, "__dict__"):
        for key, value in list(vars(node).items()):
            object.__setattr__(node, key, _redact_strings(value, redactor, seen))
    return node


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    """Show a device or capture fault raised in a test body as an ERROR, like a fixture's, never as a verdict:
    only a finding (an AssertionError) makes a phone FAIL."""
    if report.when == "call" and report.failed and getattr(report, "phonehome_fault", None):
        return "error", "E", "ERROR"
    return None


# --- default hook implementations ----------------------------------------------------------------------------


class DefaultImplementations:
    """phonehome's own implementations of its hooks, registered ``trylast`` so a lab's override wins."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config

    @pytest.hookimpl(trylast=True)
    def pytest_phonehome_make_phone(self, entry: DeviceEntry, settings: Settings) -> Phone:
        if entry.backend not in ("uiautomator2", "virtual"):
            raise InputError(settings.inventory, f"device {entry.label}: no phone controller for backend "
                             f"'{entry.backend}'", fix="use backend uiautomator2 or virtual, or implement the "
                             "pytest_phonehome_make_phone hook")
        from phonehome.devices.u2 import U2Phone

        state = run_state(self._config)
        host, port = state.adb_address(entry)
        hook = self._config.hook
        label = entry.label

        def power_cycle(phone: Any) -> bool | None:
            return hook.pytest_phonehome_power_cycle(phone=phone)  # type: ignore[no-any-return]

        def step(name: str) -> AbstractContextManager[Any]:
            return hook.pytest_phonehome_step(name=name, device=label) or nullcontext()

        def diagnose() -> str | None:
            cause = state.lab_failure() if entry.backend == "virtual" else None
            return f"the virtual lab stopped: {cause}" if cause else None

        phone = U2Phone(entry, adb_host=host, adb_port=port, power_cycle=power_cycle, step=step,
                        diagnose=diagnose)
        phone.connect()
        return phone
