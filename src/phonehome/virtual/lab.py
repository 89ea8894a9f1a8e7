"""The virtual lab: virtual phones behind an adb server, each in its own network namespace, and a fake internet.

:class:`Lab` is the Python API that ``phonehome lab`` and the pytest plugin use. ``Lab.up`` validates everything
it can in the calling process (root, profiles, identifiers, addresses), then starts the lab daemon
(``python -m phonehome.virtual.lab``) in its own session. The daemon owns all parts — namespaces and veths
(:mod:`~phonehome.virtual.netlab`), the fake internet (:mod:`~phonehome.virtual.fakenet`), one firmware runner
per phone (:mod:`~phonehome.virtual.firmware`), the virtual phones and the adb server — so the lab outlives the
command that started it and one ``Lab.down`` (or the daemon's own SIGTERM handler) removes all of it. If any part
dies, the daemon tears the whole lab down: a phone whose firmware stopped sending must not look clean.

The daemon's configuration, which holds unlock secrets, travels over a pipe and is never written to disk. Its log
is ``/run/phonehome/<instance>.log``, with every identifier of its phones masked.

When a lab stops by itself, :meth:`Lab.failure` says why (the daemon's exit and the cause its log names) and
``Lab.down(instance, keep_log_to=DIR)`` keeps the log, masked, with the run's artefacts before removing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import json
import logging
import os
import pickle
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from phonehome.errors import InputError, LabError
from phonehome.identifiers import mask
from phonehome.redaction import Redactor
from phonehome.virtual import netlab
from phonehome.virtual.fakenet import FakenetConfig
from phonehome.virtual.firmware import FirmwareProfile, check_profile_for, load_profile

if TYPE_CHECKING:
    from phonehome.inventory import DeviceEntry
    from phonehome.virtual.phone import VirtualPhone, VirtualPhoneSpec

log = logging.getLogger(__name__)

#: from starting the daemon to its "ready" line: namespaces, certificate, runners and adb server
LAB_READY_TIMEOUT_S = 60.0
#: a child (fake internet, firmware runner) must say it is ready within this
CHILD_READY_TIMEOUT_S = 20.0
#: how long ``down`` waits for the daemon to tear its lab down before removing what is left itself
DOWN_TIMEOUT_S = 20.0
#: one part's stop (adb server, a phone, a child process) during teardown
STEP_TIMEOUT_S = 5.0
#: how often the daemon checks that its children still run
WATCHDOG_INTERVAL_S = 0.5
#: TCP ports the fake internet always serves, whatever the profiles say (a phone's HTTP and TLS defaults)
ALWAYS_TCP_PORTS = (80, 443)
DAEMON_MODULE = "phonehome.virtual.lab"
DEFAULT_INSTANCE = "default"
#: how long Lab.failure waits for a dead daemon's exit status
REAP_TIMEOUT_S = 1.0
#: the causes Lab.failure quotes from a log: its last error records and traceback lines
FAILURE_CAUSES = 3
#: a child's last output lines kept, to say in the log how it ended
CHILD_TAIL_LINES = 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>[A-Z]+) (?P<message>.*)$")


@dataclass(frozen=True)
class LabDevice:
    """What the lab needs per phone: the virtual phone's spec and the firmware profile its system apps follow.

    ``firmware`` None means a phone that sends nothing at all on its own.
    """

    spec: VirtualPhoneSpec
    firmware: Path | None = None

    @classmethod
    def from_entry(cls, entry: DeviceEntry) -> LabDevice:
        """A ``backend: virtual`` entry of ``devices.yaml`` (reads the unlock secret from its env variable)."""
        from phonehome.virtual.phone import VirtualPhoneSpec

        if entry.backend != "virtual":
            raise InputError(entry.source, f"{entry.label} is not a virtual phone (backend {entry.backend})",
                             where=f"{entry.key}.backend", fix="only backend: virtual devices run in the lab")
        profile = load_profile(entry.firmware) if entry.firmware is not None else None
        release, sdk = (profile.android, profile.sdk) if profile is not None and profile.android else ("9", 28)
        spec = VirtualPhoneSpec(serial=entry.serial, label=entry.label, model=entry.model,
                                identifiers=entry.identifiers, unlock_method=entry.unlock.method,
                                unlock_secret=entry.unlock.secret(), transport=entry.transport,
                                android_release=release, sdk=sdk)
        return cls(spec=spec, firmware=entry.firmware)


@dataclass(frozen=True)
class LabPhone:
    """One phone as the harness sees it: adb serial, namespace, and the interface to capture on."""

    serial: str
    label: str
    netns: str
    interface: str
    wifi_mac: str
    ip: str
    tls_keylog: str = ""  # the fake internet's TLS key log, for ``tls_keys: {source: file, path: auto}``

    def __repr__(self) -> str:
        return (f"LabPhone(label={self.label!r}, serial={mask(self.serial)!r}, interface={self.interface!r}, "
                f"wifi_mac={mask(self.wifi_mac)!r}, ip={self.ip!r})")


@dataclass(frozen=True)
class LabState:
    """A running lab: where its adb server listens, which process owns it, its phones."""

    instance: str
    adb_host: str
    adb_port: int
    pid: int
    phones: tuple[LabPhone, ...]
    log_path: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabState:
        return cls(instance=data["instance"], adb_host=data["adb_host"], adb_port=int(data["adb_port"]),
                   pid=int(data["pid"]), phones=tuple(LabPhone(**phone) for phone in data["phones"]),
                   log_path=str(data.get("log_path", "")))

    def phone(self, serial_or_label: str) -> LabPhone:
        for phone in self.phones:
            if serial_or_label in (phone.serial, phone.label):
                return phone
        raise LabError(f"lab {self.instance!r} has no phone {serial_or_label!r}")


@dataclass(frozen=True)
class _DaemonConfig:
    """Everything the daemon needs; pickled over its stdin, never stored."""

    instance: str
    devices: tuple[LabDevice, ...]
    adb_host: str
    adb_port: int
    #: (pid, start time) of the process whose exit stops the lab; None for a detached lab
    caller: tuple[int, int | None] | None = None


def log_path(instance: str) -> Path:
    return netlab.state_dir() / f"{instance}.log"


def tls_keylog_path(instance: str) -> Path:
    """The fake internet's TLS key log (``tls_keys: {source: file, path: auto}`` of a virtual phone)."""
    return storage_path(instance) / "fakenet-tls.keys.log"


def storage_path(instance: str) -> Path:
    """The phones' files (pushed files persist across virtual reboots) and the fake internet's configuration."""
    return netlab.state_dir() / instance


# --- the API -------------------------------------------------------------------------------------------------


class Lab:
    """Start, inspect and stop a virtual lab instance. Several instances may run side by side."""

    @staticmethod
    def up(specs: Sequence[VirtualPhoneSpec | LabDevice], firmware: Mapping[str, Path] | None = None, *,
           instance: str = DEFAULT_INSTANCE, adb_host: str = "127.0.0.1", adb_port: int = 0,
           detach: bool = False, ready_timeout_s: float = LAB_READY_TIMEOUT_S) -> LabState:
        """Start the lab and return its state once the adb server answers and every phone's firmware runs.

        ``firmware`` maps a serial or label to a profile for plain specs (a LabDevice carries its own).
        Unless ``detach`` (``phonehome lab up``), the lab stops by itself when the calling process exits, so a
        test run that crashes or is killed leaves nothing behind. Raises InputError for bad profiles or
        identifiers, LabError (saying how to fix it) for the rest.
        """
        netlab.check_instance(instance)
        netlab.require_root()
        devices = _devices(specs, firmware or {})
        if not devices:
            raise InputError(None, "no phones to start", fix="give Lab.up at least one VirtualPhoneSpec or LabDevice")
        _validate(instance, devices)
        netlab.clean_stale()
        running = Lab.status(instance)
        if running is not None:
            raise LabError(f"lab {instance!r} is already running (pid {running.pid}, adb port {running.adb_port}); "
                           f"stop it with 'phonehome lab down --instance {instance}' or pick another --instance")
        caller = None if detach else (os.getpid(), netlab.process_start_time(os.getpid()))
        config = _DaemonConfig(instance=instance, devices=devices, adb_host=adb_host, adb_port=adb_port,
                               caller=caller)
        _REDACTORS[instance] = lab_redactor(devices)
        return _start_daemon(config, ready_timeout_s)

    @staticmethod
    def status(instance: str = DEFAULT_INSTANCE) -> LabState | None:
        """The running lab's state, or None when it is not running (a dead owner's state does not count)."""
        netlab.check_instance(instance)
        state = netlab.StateFile.load(instance)
        if state is None or not state.owner_alive() or "lab" not in state.extra:
            return None
        return LabState.from_json(state.extra["lab"])

    @staticmethod
    def down(instance: str = DEFAULT_INSTANCE, *, keep_log_to: Path | None = None,
             redactor: Redactor | None = None) -> Path | None:
        """Stop the lab and remove everything it created. Never raises; logs what it could not remove.

        With ``keep_log_to`` (a run's artefacts directory), the lab's log is first copied there as
        ``lab-<instance>.log``, identifiers masked (see :meth:`save_log`); returns that path, or None.
        """
        try:
            return _down(instance, keep_log_to, redactor)
        except Exception as exc:  # teardown must never hide the caller's own result
            log.warning("phonehome lab %s: down failed: %s", instance, exc)
            return None

    @staticmethod
    def failure(instance: str = DEFAULT_INSTANCE, *, redactor: Redactor | None = None) -> str | None:
        """None while the lab runs; otherwise one line saying why it does not, identifiers masked.

        The line names how the lab daemon ended (when this process started it: ``killed by SIGKILL``, ``rc=0``)
        and the last causes its log names: error records (``firmware[nokia] exited (killed by SIGKILL)...``)
        and the last line of each traceback. For an error message when a lab phone stops answering, e.g.::

            cause = Lab.failure(state.instance)
            if cause is not None:
                raise DeviceError(label, f"did not boot within 120 s: {cause}")

        Masks every identifier of the phones this process started the lab with, and what ``redactor`` (the run's)
        masks. Call it before :meth:`down`, which removes the log (keep it with ``keep_log_to``).
        """
        netlab.check_instance(instance)
        running = netlab.StateFile.load(instance)
        if running is not None and running.owner_alive() and "lab" in running.extra \
                and "stopping" not in running.extra:
            if _stopped(running.owner_pid):  # alive but frozen: its adb server accepts and never answers
                return (f"lab {instance!r} is stalled: the lab daemon (pid {running.owner_pid}) is stopped "
                        f"(SIGSTOP, or a debugger); 'kill -CONT {running.owner_pid}' resumes it, 'phonehome lab "
                        f"down --instance {instance}' ends it")
            return None
        redact = _redactor(instance, redactor)
        parts: list[str] = []
        daemon = _STARTED.get(instance)
        if daemon is not None:
            rc = daemon.poll()
            if rc is None and (running is None or not running.owner_alive()):
                with contextlib.suppress(subprocess.TimeoutExpired):  # dead but not yet reapable
                    rc = daemon.wait(REAP_TIMEOUT_S)
            parts.append(f"the lab daemon (pid {daemon.pid}) "
                         + ("is stopping" if rc is None else _exit_text(rc)))
        elif running is not None and not running.owner_alive():  # started elsewhere: no exit status to read
            parts.append(f"the lab daemon (pid {running.owner_pid}) ended without tearing its lab down (killed?)")
        elif running is not None and "stopping" in running.extra:
            parts.append(f"the lab daemon (pid {running.owner_pid}) is stopping")
        path = log_path(instance)
        try:
            text = path.read_text(errors="replace")
        except OSError:
            parts.append(f"it left no log at {path}")
        else:
            causes = [redact(cause) for cause in log_causes(text)[-FAILURE_CAUSES:]]
            parts.append(f"its log ({path}) says: " + " | ".join(causes) if causes
                         else f"its log ({path}) names no error")
        return f"lab {instance!r} is not running: " + "; ".join(parts)

    @staticmethod
    def save_log(instance: str, dest_dir: Path, *, redactor: Redactor | None = None) -> Path | None:
        """Copy the lab's log to ``dest_dir/lab-<instance>.log`` with every identifier masked; None if no log.

        The daemon masks its phones' identifiers as it writes; the copy masks again, with the deep pass (encoded
        forms too), the identifiers of the phones this process started the lab with and what ``redactor`` masks:
        that covers what reached the log around the logger (output of a crashing interpreter). Never raises: a
        log that cannot be kept is a warning.
        """
        try:
            netlab.check_instance(instance)
            text = log_path(instance).read_text(errors="replace")
        except (OSError, LabError, InputError):
            return None
        dest = Path(dest_dir) / f"lab-{instance}.log"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(_redactor(instance, redactor).deep(text))
        except OSError as exc:
            log.warning("phonehome lab %s: cannot keep its log in %s: %s", instance, dest, exc)
            return None
        return dest


def log_causes(text: str) -> list[str]:
    """What a lab log names as causes, in order: each error record's first line, and the last line (the
    exception) of each traceback, whether logged or written raw by a dying interpreter."""
    blocks: list[tuple[str | None, list[str]]] = []
    for line in text.splitlines():
        record = _LOG_RECORD.match(line)
        if record:
            blocks.append((record["level"], [record["message"]]))
        elif blocks:
            blocks[-1][1].append(line)
        else:
            blocks.append((None, [line]))
    causes: list[str] = []
    for level, lines in blocks:
        if level in ("ERROR", "CRITICAL"):
            causes.append(lines[0])
        if any(line.startswith("Traceback (most recent call last):") for line in lines[1:]):
            exception = [line for line in lines[1:] if line.strip() and not line[0].isspace()
                         and not line.startswith(("Traceback (", "During handling", "The above exception"))]
            if exception:
                causes.append(exception[-1])
    return list(dict.fromkeys(causes))


def lab_redactor(devices: Sequence[LabDevice]) -> Redactor:
    """Masks every identifier of the lab's phones (serials, identifier values, in every spelling): its log must
    carry none."""
    redactor = Redactor()
    for device in devices:
        redactor = redactor.with_values([device.spec.serial]).with_identifiers(device.spec.identifiers)
    return redactor


def _redactor(instance: str, extra: Redactor | None) -> Redactor:
    own = _REDACTORS.get(instance, Redactor())
    return own.merged(extra) if extra is not None else own


def _stopped(pid: int) -> bool:
    """True when the process is stopped (``T``) or traced (``t``): it lives, but answers nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] in (["T"], ["t"])


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited (rc={returncode})"


#: the identifiers of the labs this process started, to mask in what Lab.failure and Lab.save_log read
_REDACTORS: dict[str, Redactor] = {}


def _devices(specs: Sequence[VirtualPhoneSpec | LabDevice], firmware: Mapping[str, Path]) -> tuple[LabDevice, ...]:
    devices: list[LabDevice] = []
    for item in specs:
        if isinstance(item, LabDevice):
            devices.append(item)
        else:
            path = firmware.get(item.serial, firmware.get(item.label))
            devices.append(LabDevice(spec=item, firmware=Path(path) if path is not None else None))
    return tuple(devices)


def _validate(instance: str, devices: Sequence[LabDevice]) -> tuple[netlab.NetPlan, list[FirmwareProfile | None]]:
    """Everything that can be checked before touching the kernel: unique serials, profiles, identifiers."""
    seen: set[str] = set()
    for device in devices:
        for key in (device.spec.serial, device.spec.label):
            if key in seen:
                raise InputError(None, f"two lab phones are called {key!r}", where=device.spec.label,
                                 fix="give each phone its own serial and label")
            seen.add(key)
    profiles: list[FirmwareProfile | None] = []
    for device in devices:
        profile = load_profile(device.firmware) if device.firmware is not None else None
        if profile is not None:
            check_profile_for(profile, device.spec.identifiers, device.spec.label)
        profiles.append(profile)
    plan = netlab.plan(instance, [(d.spec.serial, d.spec.label, _wifi_mac(d.spec)) for d in devices])
    return plan, profiles


def _wifi_mac(spec: VirtualPhoneSpec) -> str | None:
    values = spec.identifiers.get("wifi_mac")
    return values[0] if values else None


def _start_daemon(config: _DaemonConfig, ready_timeout_s: float) -> LabState:
    """Start the daemon detached (own session), hand it the config, wait for its one-line verdict."""
    log_file = log_path(config.instance)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", DAEMON_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(pickle.dumps(config))
        proc.stdin.close()
        line = _read_line(proc.stdout, ready_timeout_s)
    except BrokenPipeError:
        line = b""
    finally:
        proc.stdout.close()
    verdict: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        verdict = json.loads(line) if line else {}
    if "state" in verdict:
        earlier = _STARTED.pop(config.instance, None)
        if earlier is not None:  # a daemon of this instance that died (its leftovers were cleaned above)
            earlier.poll()
        _STARTED[config.instance] = proc
        return LabState.from_json(verdict["state"])
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(netlab.TERM_GRACE_S + DOWN_TIMEOUT_S)
    leftover = netlab.StateFile.load(config.instance)
    if leftover is not None and (leftover.owner_pid == proc.pid or not leftover.owner_alive()):
        netlab.teardown_state(leftover)  # only what our daemon built: never another run's lab
    problem = verdict.get("error") or (f"the lab daemon did not report ready within {ready_timeout_s} s"
                                       if proc.returncode is None else
                                       f"the lab daemon exited with rc={proc.returncode}")
    raise LabError(f"lab {config.instance!r} did not start: {problem} (log: {log_file})")


#: daemons this process started, kept so that ``down`` reaps them (no zombie, no "still running" warning)
_STARTED: dict[str, subprocess.Popen[bytes]] = {}


def _read_line(stream: IO[bytes], timeout_s: float) -> bytes:
    """One line from a pipe, or what arrived before the deadline or EOF."""
    deadline = time.monotonic() + timeout_s
    data = b""
    fd = stream.fileno()
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _down(instance: str, keep_log_to: Path | None, redactor: Redactor | None) -> Path | None:
    netlab.check_instance(instance)
    state = netlab.StateFile.load(instance)
    if state is not None and state.owner_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.owner_pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT_S
        while time.monotonic() < deadline and state.owner_alive():
            time.sleep(0.1)
        if state.owner_alive():
            log.warning("phonehome lab %s: daemon pid %s did not stop in %s s, killing it", instance,
                        state.owner_pid, DOWN_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.owner_pid, signal.SIGKILL)
            time.sleep(0.1)
    started = _STARTED.pop(instance, None)
    if started is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            started.wait(netlab.TERM_GRACE_S)
    problems = netlab.teardown(instance)  # whatever the daemon could not remove, or a dead daemon left behind
    shutil.rmtree(storage_path(instance), ignore_errors=True)
    kept = Lab.save_log(instance, keep_log_to, redactor=redactor) if keep_log_to is not None else None
    if not problems:  # a lab that went down cleanly leaves no trace; otherwise its log tells what went wrong
        with contextlib.suppress(FileNotFoundError):
            log_path(instance).unlink()
    return kept


# --- the daemon ----------------------------------------------------------------------------------------------


class _Child:
    """A child process of the daemon (fake internet, firmware runner) whose JSON-lines output goes to the log."""

    def __init__(self, name: str, command: list[str], state: netlab.StateFile, *, stdin: bool = False) -> None:
        self.name = name
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        state.add_process(self.proc.pid, name)
        self._lock = threading.Lock()
        self.tail: list[str] = []
        self._first: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, name=f"log-{name}", daemon=True).start()

    def _pump(self) -> None:
        """The first line is the child's verdict (``{"ready": true}``); every line goes to the log."""
        assert self.proc.stdout is not None
        first = True
        for line in self.proc.stdout:
            log.info("%s: %s", self.name, line.rstrip())
            if line.strip():
                self.tail = [*self.tail, line.rstrip()][-CHILD_TAIL_LINES:]
            if first:
                self._first.put(line)
                first = False
        if first:
            self._first.put("")

    def wait_ready(self) -> None:
        try:
            line = self._first.get(timeout=CHILD_READY_TIMEOUT_S)
        except queue.Empty:
            line = ""
        try:
            ready = json.loads(line).get("ready") is True
        except (ValueError, AttributeError):
            ready = False
        if not ready:
            raise LabError(f"{self.name} did not start: {line.strip()[-800:] or 'no output'} "
                           f"(rc={self.proc.poll()})")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ending(self) -> str:
        """How the child ended, and its last output line when that was not a report line (a traceback's end)."""
        rc = self.proc.poll()
        text = f"{self.name} " + ("is running" if rc is None else _exit_text(rc))
        last = self.tail[-1] if self.tail else ""
        return f"{text}; its last output: {last}" if last and not last.startswith("{") else text

    def stop(self) -> None:
        """A runner stops when its stdin closes (letting requests in flight finish); the rest get SIGTERM."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError), self._lock:
                self.proc.stdin.close()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(netlab.TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(netlab.TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _Daemon:
    """Builds the lab, serves until SIGTERM or until a part dies, then removes everything it built."""

    def __init__(self, config: _DaemonConfig) -> None:
        self.config = config
        self.stop_requested = threading.Event()
        self.children: list[_Child] = []
        self.phones: list[VirtualPhone] = []
        self.adb: Any = None
        self.state: netlab.StateFile | None = None

    def build(self) -> LabState:
        netlab.require_root()
        netplan, profiles = _validate(self.config.instance, self.config.devices)
        self.state = netlab.StateFile.claim(self.config.instance)
        storage = storage_path(self.config.instance)
        shutil.rmtree(storage, ignore_errors=True)
        storage.mkdir(parents=True, mode=0o700)
        netlab.create(netplan, self.state)
        self._start_fakenet(netplan, [p for p in profiles if p is not None], storage)
        runners = [self._start_runner(netplan, phone, device, profile)
                   for phone, device, profile in zip(netplan.phones, self.config.devices, profiles, strict=True)]
        for child in self.children:  # started side by side: each takes a Python start-up to get ready
            child.wait_ready()
        self._start_phones(netplan, runners, storage, profiles)
        lab_state = LabState(instance=self.config.instance, adb_host=self.config.adb_host,
                             adb_port=int(self.adb.port), pid=os.getpid(),
                             phones=tuple(LabPhone(serial=p.serial, label=p.label, netns=p.netns,
                                                   interface=p.interface, wifi_mac=p.wifi_mac, ip=p.ip,
                                                   tls_keylog=str(tls_keylog_path(self.config.instance)))
                                          for p in netplan.phones),
                             log_path=str(log_path(self.config.instance)))
        self.state.extra["lab"] = lab_state.to_json()
        self.state.save()
        return lab_state

    def _start_fakenet(self, netplan: netlab.NetPlan, profiles: Sequence[FirmwareProfile], storage: Path) -> None:
        hosts: dict[str, str] = {}
        for name in sorted({name for profile in profiles for name in profile.host_names()}):
            hosts[name] = netlab.host_ip(name, set(hosts.values()))
        ports = {port for profile in profiles for port in profile.ports()}
        config = FakenetConfig(hosts=hosts,
                               tcp_ports=tuple(sorted({*ALWAYS_TCP_PORTS, *(p for k, p in ports if k == "tcp")})),
                               udp_ports=tuple(sorted(p for k, p in ports if k == "udp")),
                               keylog=str(tls_keylog_path(self.config.instance)))
        config_path = storage / "fakenet.json"
        config_path.write_text(config.to_json())
        child = _Child("fakenet", [*netlab.netns_exec_prefix(netplan.fakenet_netns), sys.executable, "-m",
                                   "phonehome.virtual.fakenet", "--config", str(config_path)], self._state())
        self.children.append(child)

    def _start_runner(self, netplan: netlab.NetPlan, phone: netlab.PhoneNet, device: LabDevice,
                      profile: FirmwareProfile | None) -> _Child | None:
        if profile is None:
            return None
        child = _Child(f"firmware[{phone.label}]", [*netlab.netns_exec_prefix(phone.netns), sys.executable, "-m",
                                                     "phonehome.virtual.firmware"], self._state(), stdin=True)
        self.children.append(child)
        child.send(json.dumps({"profile": str(device.firmware), "resolver": netplan.gateway_ip, "booted": True,
                               "identifiers": device.spec.identifiers.to_mapping()}))
        return child

    def _start_phones(self, netplan: netlab.NetPlan, runners: Sequence[_Child | None], storage: Path,
                      profiles: Sequence[FirmwareProfile | None] = ()) -> None:
        from phonehome.virtual.adbserver import AdbServer
        from phonehome.virtual.phone import VirtualPhone

        profiles = profiles or [None] * len(runners)
        for phone, device, runner, profile in zip(netplan.phones, self.config.devices, runners, profiles,
                                                  strict=True):
            spec = device.spec
            if "wlan_ip" in {f.name for f in dataclasses.fields(spec)}:
                spec = dataclasses.replace(spec, wlan_ip=phone.ip)
            # the runner lives in the phone's namespace: its /proc/PID/net is the phone's socket tables
            self.phones.append(VirtualPhone(spec, storage_dir=storage / _safe(spec.label),
                                            on_event=runner.send if runner is not None else None,
                                            apps=dict(profile.apps) if profile is not None else None,
                                            net_proc=Path(f"/proc/{runner.proc.pid}/net") if runner else None))
        self.adb = AdbServer(self.phones, host=self.config.adb_host, port=self.config.adb_port)
        self.adb.start()

    def _state(self) -> netlab.StateFile:
        assert self.state is not None
        return self.state

    def serve(self) -> None:
        """Until asked to stop, check every WATCHDOG_INTERVAL_S that all children still run."""
        while not self.stop_requested.wait(WATCHDOG_INTERVAL_S):
            if self.config.caller is not None and not netlab.process_alive(*self.config.caller):
                log.info("phonehome lab %s: the process that started it (pid %s) exited; tearing down",
                         self.config.instance, self.config.caller[0])
                return
            dead = [child for child in self.children if not child.alive()]
            if dead:
                time.sleep(WATCHDOG_INTERVAL_S)  # let the log pump read the child's last words
                cause = ", ".join(child.ending() for child in dead)
                log.error("phonehome lab %s: %s; tearing the lab down so that no test passes on a phone whose "
                          "traffic is no longer real", self.config.instance, cause)
                self._stopping(cause)
                return
            if self.adb is not None and not self.adb.serving:
                log.error("phonehome lab %s: the adb server stopped serving; tearing the lab down",
                          self.config.instance)
                self._stopping("the adb server stopped serving")
                return

    def _stopping(self, cause: str) -> None:
        """Mark the state as stopping, so that Lab.failure answers while the teardown still runs."""
        if self.state is not None:
            self.state.extra["stopping"] = lab_redactor(self.config.devices)(cause)
            with contextlib.suppress(OSError):
                self.state.save()

    def teardown(self) -> None:
        """Remove everything, in reverse order. Never raises."""
        steps: list[tuple[str, Any]] = []
        if self.adb is not None:
            steps.append(("adb server", self.adb.stop))
        steps += [(f"phone {phone.spec.label}", phone.close) for phone in self.phones]
        steps += [(child.name, child.stop) for child in reversed(self.children)]
        for name, step in steps:
            _bounded(step, name, self.config.instance)
        if self.state is not None:  # None: the instance belongs to another owner, touch nothing of it
            netlab.teardown_state(self.state)
            shutil.rmtree(storage_path(self.config.instance), ignore_errors=True)


def _bounded(step: Any, name: str, instance: str) -> None:
    """Run one teardown step for at most STEP_TIMEOUT_S: a part that hangs on stop must not keep the lab (and
    its namespaces) alive; whatever it leaves is removed with the namespaces and by the process exiting."""
    def run() -> None:
        try:
            step()
        except Exception as exc:
            log.warning("phonehome lab %s: stopping %s failed: %s", instance, name, exc)

    thread = threading.Thread(target=run, name=f"stop-{name}", daemon=True)
    thread.start()
    thread.join(STEP_TIMEOUT_S)
    if thread.is_alive():
        log.warning("phonehome lab %s: stopping %s took over %s s; carrying on", instance, name, STEP_TIMEOUT_S)


def _safe(label: str) -> str:
    """A directory name for a phone: from its label (unique in a lab), never its serial."""
    name = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in label)
    return name if name.strip(".") else f"phone-{name}"


def _redirect_output(path: Path) -> None:
    """After the ready line, the daemon's own stdout/stderr go to its log (the starter stopped reading)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


class _MaskingFormatter(logging.Formatter):
    """Formats a record, then masks every identifier of the lab's phones: the log is something phonehome writes."""

    def __init__(self, fmt: str, redactor: Redactor) -> None:
        super().__init__(fmt)
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self._redactor(super().format(record))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    log.error("%s died: %s", name, args.exc_value,
              exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]


def daemon_main() -> int:
    """``python -m phonehome.virtual.lab``: the config arrives pickled on stdin (only ``Lab.up`` starts this)."""
    if sys.stdin.isatty():
        print("python -m phonehome.virtual.lab is the lab daemon that Lab.up starts; "
              "use 'phonehome lab up' instead", file=sys.stderr)
        return 2
    config: _DaemonConfig = pickle.loads(sys.stdin.buffer.read())
    path = log_path(config.instance)
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=path, filemode="w", level=logging.INFO, format=LOG_FORMAT)
    handler = logging.getLogger().handlers[0]
    redactor = lab_redactor(config.devices)
    handler.setFormatter(_MaskingFormatter(LOG_FORMAT, redactor))
    # an uncaught exception goes through the (masking) log, not raw to stderr
    threading.excepthook = _log_thread_exception
    sys.excepthook = lambda kind, exc, tb: log.critical("phonehome lab %s: crashed", config.instance,
                                                        exc_info=(kind, exc, tb))
    if isinstance(handler, logging.FileHandler) and handler.stream is not None:
        # 'kill -USR1 PID' writes every thread's stack to the log: how to see where a stuck lab hangs
        faulthandler.register(signal.SIGUSR1, file=handler.stream, all_threads=True)
    daemon = _Daemon(config)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: daemon.stop_requested.set())
    out = sys.stdout
    try:
        state = daemon.build()
    except (LabError, InputError, OSError, ImportError) as exc:
        log.error("phonehome lab %s: start failed: %s", config.instance, exc)
        out.write(json.dumps({"error": redactor(str(exc))}) + "\n")
        out.flush()
        daemon.teardown()
        return 1
    except BaseException:
        log.exception("phonehome lab %s: start failed", config.instance)
        daemon.teardown()
        raise
    log.info("phonehome lab %s: ready, adb on %s:%s", config.instance, state.adb_host, state.adb_port)
    try:
        out.write(json.dumps({"state": state.to_json()}) + "\n")
        out.flush()
    except BrokenPipeError:
        log.warning("phonehome lab %s: the starter went away before the ready line", config.instance)
    _redirect_output(path)
    try:
        daemon.serve()
    finally:
        log.info("phonehome lab %s: stopping", config.instance)
        daemon.teardown()
        log.info("phonehome lab %s: stopped", config.instance)
    return 0


if __name__ == "__main__":
    sys.exit(daemon_main())
