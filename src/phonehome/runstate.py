"""The state of one phonehome run, shared by the plugin, the fixtures and the reporters.

The plugin creates it at configure time and keeps it in ``config.stash``; fixtures and reporters read it from
there. It imports neither side, so neither must import the other.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import secrets
import shutil
import subprocess
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from phonehome.errors import CredentialError, DeviceError, InputError, PhonehomeError
from phonehome.identifiers import Identifiers
from phonehome.redaction import Redactor

if TYPE_CHECKING:
    from phonehome.inventory import DeviceEntry, Inventory
    from phonehome.virtual.lab import LabState

log = logging.getLogger(__name__)

ADB_SERVER_HOST_ENV = "ANDROID_ADB_SERVER_HOST"
ADB_SERVER_PORT_ENV = "ANDROID_ADB_SERVER_PORT"
LAB_INSTANCE_PREFIX = "pytest-"
#: a ``--version`` call for the report header
TOOL_VERSION_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Settings:
    """The effective phonehome options of this run."""

    inventory: Path
    devices: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    capture_dir: Path = Path("results/captures")
    keep_pcaps: str = "failed"
    show_identifiers: bool = False
    lab: bool = False
    #: True when the inventory was named (option, env or ini): then a missing file is an error
    inventory_given: bool = False


SETTINGS_KEY = pytest.StashKey[Settings]()


# --- run state -----------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What the plugin knows about this run beyond the options: the inventory, the selected devices and the
    virtual lab (started lazily, or handed over by the xdist controller)."""

    config: pytest.Config
    settings: Settings
    inventory: Inventory | None = None
    selected: tuple[DeviceEntry, ...] = ()
    lab_state: LabState | None = None
    lab_instance: Any = None
    lab_owner: bool = False
    lab_error: str | None = None
    #: label -> ``phonehome.fixtures.DeviceSession``: one connection per device for the whole session
    devices: dict[str, Any] = field(default_factory=dict)
    #: label -> ``phonehome.phonelock.PhoneLock``: this run's hold on each phone it connected
    locks: dict[str, Any] = field(default_factory=dict)
    #: label -> the fault that ended a phone's use for this run (shown in the summary and the report)
    quarantine: dict[str, str] = field(default_factory=dict)
    #: label -> a fault not yet followed by the phone's one recovery attempt
    pending_recovery: dict[str, str] = field(default_factory=dict)
    #: labels whose one recovery attempt was spent
    recovered: set[str] = field(default_factory=set)
    #: label -> the phone's first fault in this run (the cause a quarantine names)
    first_fault: dict[str, str] = field(default_factory=dict)
    #: label -> [(identifier, where its value came from)], and the identifiers that could not be read and why
    checked: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    unreadable: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    #: masks every identifier of every inventory phone (and every unlock secret) in what the run writes
    redactor: Redactor = field(default_factory=Redactor)

    def quarantine_device(self, label: str, cause: str) -> None:
        """End a phone's use for this run: every later test that needs it errors at once with the phone's first
        fault (``cause`` is added when the recovery attempt failed otherwise)."""
        if label in self.quarantine:
            return
        first = self.first_fault.setdefault(label, cause)
        if cause == first:
            text = first
        elif cause.startswith(first):
            text = cause
        else:
            text = f"{first} (then, after one recovery attempt: {cause})"
        self.quarantine[label] = text
        log.error("%s: quarantined for the rest of the run: %s", label, self.redactor(text))
        try:  # the report shows it beside the phone's model and build
            self.config.hook.pytest_phonehome_device_info(device=label, info={"quarantined": self.redactor(text)})
        except Exception as exc:  # a reporter's bug must not hide the fault itself
            log.warning("pytest_phonehome_device_info for %s: %s", label, exc)

    def note_fault(self, label: str, exc: BaseException) -> None:
        """A device fault during a test: the phone gets one recovery attempt before its next test, or, when it
        already had one (or a retry would repeat the fault), is quarantined."""
        if label in self.quarantine:
            return
        reason = fault_reason(exc)
        self.first_fault.setdefault(label, reason)
        if label in self.recovered or not recoverable(exc):
            self.quarantine_device(label, reason)
        else:
            self.pending_recovery[label] = reason

    def learn(self, *, identifiers: Identifiers | None = None, values: Sequence[str] = (),
              secrets: Sequence[str] = ()) -> None:
        """Teach the run's redactor more values (identifiers read from a phone, serials, secrets)."""
        redactor = self.redactor.with_values(values).with_secrets(secrets)
        if identifiers is not None:
            redactor = redactor.with_identifiers(identifiers)
        self.redactor = redactor

    def learn_inventory(self) -> None:
        """Every phone of the inventory, selected or not: one phone's messages may name another."""
        if self.inventory is None:
            return
        for entry in self.inventory.devices:
            self.learn(identifiers=entry.identifiers, values=(entry.serial,), secrets=_secret_of(entry))

    def close_devices(self) -> None:
        """Close every phone connection and give up its lock. Never raises (neither ``Phone.close`` nor
        ``PhoneLock.release`` does)."""
        for session in self.devices.values():
            session.phone.close()
        self.devices.clear()
        for lock in self.locks.values():
            lock.release()
        self.locks.clear()

    def lab_failure(self) -> str | None:
        """Why the virtual lab stopped (from its log, masked), or None while it runs or when there is none."""
        if self.lab_state is None:
            return None
        from phonehome.virtual.lab import Lab

        try:
            cause = Lab.failure(self.lab_state.instance, redactor=self.redactor)
        except Exception as exc:  # a diagnosis must never replace the fault it explains
            log.debug("phonehome: reading the lab's state: %s", exc)
            return None
        if cause is None:
            return None
        # the log under /run goes with the lab; the run keeps a masked copy with its captures
        kept = self.settings.capture_dir / f"lab-{self.lab_state.instance}.log"
        return f"{cause} (the run keeps its log as {kept})" if self.lab_owner else cause

    def virtual_devices(self) -> tuple[DeviceEntry, ...]:
        return tuple(entry for entry in self.selected if entry.backend == "virtual")

    def require_inventory(self) -> Inventory:
        if self.inventory is None:
            raise InputError(self.settings.inventory, "device inventory not found",
                             fix="create devices.yaml or pass --phonehome-inventory PATH")
        return self.inventory

    def ensure_lab(self) -> LabState | None:
        """The virtual lab for the selected virtual devices; started here unless a controller already did."""
        if self.lab_state is not None or not self.virtual_devices():
            return self.lab_state
        if self.lab_error is not None:
            raise PhonehomeError(self.lab_error)
        if hasattr(self.config, "workerinput"):
            # one lab per run: a worker uses the controller's, it never starts its own
            raise PhonehomeError("virtual lab not available: the xdist controller did not start it")
        self.start_lab()
        return self.lab_state

    def start_lab(self) -> None:
        """One lab instance per run (named after this process), so parallel runs and nested pytester runs never
        share or stop each other's lab."""
        from phonehome.virtual.lab import Lab, LabDevice

        try:
            provide_virtual_secrets(self.virtual_devices())
            self.learn_inventory()  # the virtual phones' generated secrets
            devices = [LabDevice.from_entry(entry) for entry in self.virtual_devices()]
            with warnings.catch_warnings():
                # the lab daemon outlives Lab.up by design; its Popen handle is dropped while it runs
                warnings.simplefilter("ignore", ResourceWarning)
                self.lab_state = Lab.up(devices, instance=f"{LAB_INSTANCE_PREFIX}{os.getpid()}-{secrets.token_hex(3)}")
        except PhonehomeError as exc:
            self.lab_error = f"virtual lab did not start: {exc}"
            raise
        self.lab_owner = True

    def stop_lab(self) -> None:
        """Stop the lab this process started. Logs and carries on: teardown must not hide results."""
        if not self.lab_owner or self.lab_state is None:
            return
        from phonehome.virtual.lab import Lab

        try:  # the lab's log (why it stopped, if it did) stays with the run's artefacts, masked
            kept = Lab.down(self.lab_state.instance, keep_log_to=self.settings.capture_dir, redactor=self.redactor)
            if kept is not None:
                log.info("phonehome: the virtual lab's log is kept in %s", kept)
        except Exception as exc:  # teardown never hides a result
            log.warning("phonehome: stopping the virtual lab: %s", exc)
        self.lab_owner = False
        self.lab_state = None

    def adb_address(self, entry: DeviceEntry) -> tuple[str, int]:
        """The adb server that serves this device: the lab's for virtual devices, else the usual one."""
        if entry.backend == "virtual":
            state = self.ensure_lab()
            assert state is not None
            return state.adb_host, int(state.adb_port)
        host = os.environ.get(ADB_SERVER_HOST_ENV, "127.0.0.1")
        port = os.environ.get(ADB_SERVER_PORT_ENV, "5037")
        try:
            return host, int(port)
        except ValueError:
            raise InputError(ADB_SERVER_PORT_ENV, f"'{port}' is not a port number",
                             fix="set it to the adb server's TCP port, e.g. 5037") from None

    def lab_phone(self, entry: DeviceEntry) -> Any:
        """The virtual lab's record of one phone (interface, MAC, IP), or None for a real phone."""
        if entry.backend != "virtual":
            return None
        state = self.ensure_lab()
        assert state is not None
        return state.phone(entry.label)


STATE_KEY = pytest.StashKey[RunState]()
#: digits of the PIN a virtual phone gets when its variable is unset
VIRTUAL_PIN_DIGITS = 6


def provide_virtual_secrets(entries: Sequence[DeviceEntry]) -> None:
    """A virtual phone's lock credential is whatever its ``secret_env`` holds when the lab starts; when unset,
    give it a random one for this run (the phone and the harness read the same variable, and nobody needs to
    know it). Real phones never get one: their unset variable is an InputError naming it."""
    for entry in entries:
        env = entry.unlock.secret_env
        if entry.backend != "virtual" or not entry.unlock.needs_secret() or not env or os.environ.get(env):
            continue
        if entry.unlock.method == "pin":
            os.environ[env] = "".join(secrets.choice("0123456789") for _ in range(VIRTUAL_PIN_DIGITS))
        else:
            os.environ[env] = secrets.token_urlsafe(12)


def recoverable(exc: BaseException) -> bool:
    """Whether one reconnect may help: not for bad input, a refused credential or a lock the inventory does not
    describe (typing again would spend another of a real phone's few attempts)."""
    return isinstance(exc, PhonehomeError) and not isinstance(exc, InputError | CredentialError)


def fault_reason(exc: BaseException) -> str:
    """The fault in one line, without the ``device LABEL:`` prefix a quarantine message adds again."""
    if isinstance(exc, DeviceError):
        return exc.problem
    return str(exc) or type(exc).__name__


def _secret_of(entry: DeviceEntry) -> tuple[str, ...]:
    """The entry's unlock secret when its variable is set (never raises: a missing one is reported at unlock)."""
    if not entry.unlock.needs_secret() or not entry.unlock.secret_env:
        return ()
    value = os.environ.get(entry.unlock.secret_env, "")
    return (value,) if value else ()


def run_state(config: pytest.Config) -> RunState:
    """The plugin's state for this run (fixtures use it)."""
    return config.stash[STATE_KEY]



@functools.cache
def tool_versions() -> tuple[str, ...]:
    """dumpcap, adb and uiautomator2 versions, for the header and device info (the effective lab setup)."""
    versions = [_binary_version("dumpcap", ["--version"]), _binary_version("adb", ["version"])]
    for package in ("uiautomator2", "adbutils"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return tuple(versions)


def _binary_version(name: str, args: list[str]) -> str:
    path = shutil.which(name)
    if path is None:
        return f"{name} not found"
    try:
        result = subprocess.run([path, *args], capture_output=True, text=True, timeout=TOOL_VERSION_TIMEOUT_S,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{name} unusable ({exc})"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else f"{name} (no version output)"



REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()



def item_failed(item: pytest.Item) -> bool:
    """True when the set-up or the test body of ``item`` failed or errored (so far)."""
    reports = item.stash.get(REPORTS_KEY, {})
    return any(report.failed for report in reports.values())


