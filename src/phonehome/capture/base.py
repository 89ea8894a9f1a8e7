"""What every capture source shares: phase windows and their records, stats, the Capture protocol, the
phased base class that slices and checks a recording, and the recorder-process helpers."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from phonehome.errors import CaptureError, InputError
from phonehome.identifiers import mask
from phonehome.scan.tunnels import from_ip, from_link

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

#: dumpcap is ready in ~25 ms; a remote or phone-side capture needs a round trip or two more
READY_TIMEOUT_S = 10.0
#: a stop signalled sooner than ~250 ms after the last packet loses the kernel's last ring block
STOP_DELAY_S = 0.5
#: how long a recorder may take to flush and exit after SIGINT before its process group is killed
STOP_TIMEOUT_S = 10.0
#: after SIGKILL, how long to wait for the group to be reaped
KILL_TIMEOUT_S = 5.0
#: dumpcap stops itself after this long: a recorder orphaned by a killed test run must not fill the disk
#: (a capture that hits it exits early, which is an error, never a silent pass)
MAX_CAPTURE_S = 2 * 3600
#: one control command on a phone or remote host (cat, kill, am start)
CONTROL_TIMEOUT_S = 20.0
#: pulling a capture file from a phone
PULL_TIMEOUT_S = 300.0
#: writing a phase slice with editcap
SLICE_TIMEOUT_S = 120.0
#: polling interval while waiting for a remote readiness line or a file to settle
POLL_INTERVAL_S = 0.1
#: a remote recorder's clock measured only to the second is corrected only when it is off by this much or more
CLOCK_SKEW_TOLERANCE_S = 2.0
#: PCAPdroid: the dump file counts as complete once its size stayed the same this long
PCAPDROID_SETTLE_S = 1.0
#: only capture files are written by this module; nobody but the owner may read them (identifiers inside)
CAPTURE_UMASK = 0o077
CAPTURE_FILE_MODE = 0o600

PCAPDROID_PACKAGE = "com.emanuelef.remote_capture"
PCAPDROID_ACTIVITY = f"{PCAPDROID_PACKAGE}/.activities.CaptureCtrl"
PCAPDROID_DIR = "/sdcard/Download/PCAPdroid"
PCAPDROID_HINT = "is PCAPdroid 1.6 or later installed on the phone? see the README's bench guide"
LINKTYPE_ETHERNET = 1

#: dumpcap/tshark print this once the capture file is open and packets are being written
_DUMPCAP_READY = re.compile(r"^File: ", re.MULTILINE)
#: tcpdump prints this once the interface is open
_TCPDUMP_READY = re.compile(r"^listening on ", re.MULTILINE)
_DUMPCAP_STATS = re.compile(
    r"Packets received/dropped on interface '(?P<iface>[^']*)': (?P<received>\d+)/(?P<dropped>\d+)"
    r"(?: \(pcap:\d+/dumpcap:\d+/flushed:\d+/ps_ifdrop:(?P<ifdrop>\d+)\))?")
_TCPDUMP_RECEIVED = re.compile(r"^(\d+) packets? received by filter", re.MULTILINE)
_TCPDUMP_DROPPED = re.compile(r"^(\d+) packets? dropped by kernel", re.MULTILINE)
_PHASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NEVER = re.compile(r"(?!)")


# --- values --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseRecord:
    """A named window of the capture (power-on, screen-on, unlock, idle...), in capture time (epoch seconds)."""

    name: str
    start: float
    end: float

    def contains(self, timestamp: float) -> bool:
        return self.start <= timestamp <= self.end

    def to_json(self) -> dict[str, object]:
        """The ``{name, start, end}`` objects that ``phonehome scan --phases`` reads."""
        return {"name": self.name, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class CaptureStats:
    """What a finished capture recorded. ``dropped`` is None when the source cannot report drops (PCAPdroid in
    VPN mode, a file); ``interface_dropped`` counts packets the interface itself dropped (reported, not fatal)."""

    source: str
    pcap: Path
    received: int | None
    dropped: int | None
    command: tuple[str, ...] = ()
    returncode: int | None = None
    started: float | None = None
    stopped: float | None = None
    interface_dropped: int | None = None
    phases: tuple[PhaseRecord, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source, "pcap": str(self.pcap), "received": self.received, "dropped": self.dropped,
            "interface_dropped": self.interface_dropped, "command": list(self.command),
            "returncode": self.returncode, "started": self.started, "stopped": self.stopped,
            "phases": [phase.to_json() for phase in self.phases],
        }


@dataclass(frozen=True)
class PhoneMatch:
    """Which packets in a capture are the phone's: any packet with one of these MACs or IPs as source or
    destination. An empty match means "every packet" — right when the capture was already filtered to the
    phone (a BPF on an access point, tcpdump on the phone itself)."""

    macs: frozenset[str] = frozenset()
    ips: frozenset[str] = frozenset()

    @classmethod
    def of(cls, macs: Sequence[str] = (), ips: Sequence[str] = ()) -> PhoneMatch:
        return cls(macs=frozenset(mac.lower().replace("-", ":") for mac in macs),
                   ips=frozenset(ip.lower() for ip in ips))

    def is_everything(self) -> bool:
        return not self.macs and not self.ips

    def matches(self, addresses: frozenset[str]) -> bool:
        return self.is_everything() or bool(addresses & (self.macs | self.ips))

    def describe(self) -> str:
        if self.is_everything():
            return "any packet"
        return "packets to/from " + ", ".join(sorted(self.macs | self.ips))


@dataclass(frozen=True)
class _Packet:
    time: float
    addresses: frozenset[str]


# --- the protocol --------------------------------------------------------------------------------------------


@runtime_checkable
class Capture(Protocol):
    """One device's capture: started before the first phase, stopped after the last, then checked.

    Use it as ``start()``, any number of ``with capture.phase(name): ...``, ``stop()``, then
    ``assert_saw_traffic(name)`` per phase, ``slice(name)`` for attachments. ``close()`` never raises.
    """

    @property
    def pcap(self) -> Path: ...

    @property
    def phases(self) -> tuple[PhaseRecord, ...]: ...

    @property
    def stats(self) -> CaptureStats | None: ...

    @property
    def owns_pcap(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> CaptureStats: ...

    def phase(self, name: str) -> contextlib.AbstractContextManager[None]: ...

    def assert_saw_traffic(self, phase: str) -> int: ...

    def packets_in(self, phase: str) -> int: ...

    def slice(self, phase: str, dest: Path | None = None) -> Path: ...

    def write_phases(self, dest: Path | None = None) -> Path: ...

    def close(self) -> None: ...

    def info(self) -> dict[str, object]: ...


# --- shared behaviour ----------------------------------------------------------------------------------------


def _which(name: str, fix: str) -> str:
    """Find a binary or fail closed with what to install."""
    path = shutil.which(name)
    if path is None:
        raise CaptureError(f"'{name}' not found on PATH ({fix})")
    return path


def phases_path(pcap: Path) -> Path:
    """The sidecar JSON next to a capture that holds its phase windows (what ``FileCapture`` reads back)."""
    return pcap.with_name(pcap.name + ".phases.json")


#: prctl(2): the signal a process gets when the thread that started it ends
_PR_SET_PDEATHSIG = 1


def recorder_preexec() -> Callable[[], None] | None:
    """For ``Popen(preexec_fn=...)``: the recorder gets SIGTERM (dumpcap still closes its file) when the test run
    that started it dies. Recorders run in their own session so that a Ctrl-C reaches them only through the
    harness; without this, a run killed outright left dumpcap writing identifiers for up to MAX_CAPTURE_S.
    Linux only (None elsewhere); the function only calls prctl, safe between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the run died before the request took effect
            os._exit(1)

    return die_with_parent


def _prepare_output(pcap: Path) -> Path:
    """Create the capture's directory (private) and remove a stale file so nothing old is mistaken as new."""
    pcap = Path(pcap)
    try:
        pcap.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            pcap.unlink()
    except OSError as exc:  # a path through a file, a read-only or full disk: the capture cannot be written
        raise CaptureError(f"cannot write the capture file {pcap}: {exc.strerror or exc} "
                           "(check --phonehome-capture-dir: a writable directory with free space)") from None
    return pcap


def _restrict(path: Path) -> None:
    """Files 0600: captures hold identifiers in cleartext by design."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, CAPTURE_FILE_MODE)


class _PhasedCapture:
    """Phase windows, the stop delay, and reading back a finished capture (traffic per phase, slices).

    Subclasses implement ``_start``/``_stop``/``_check_alive`` and set ``source``.
    """

    source = "?"

    def __init__(self, pcap: Path, *, phone: PhoneMatch | None = None, label: str | None = None,
                 redact: Sequence[str] = ()) -> None:
        self._pcap = Path(pcap)
        self._phone = phone or PhoneMatch()
        self._label = label
        #: identifier values (a MAC in the filter...) masked in every error message and in info()
        self._redact = tuple(sorted({value for value in redact if value}, key=len, reverse=True))
        self._phases: list[PhaseRecord] = []
        self._state = "new"  # new -> running -> stopped
        self._last_action = 0.0
        self._stats: CaptureStats | None = None
        self._index: list[_Packet] | None = None
        #: how many packets the recorder says it wrote into the file (None when it cannot say): a file that
        #: holds fewer was truncated or replaced after the capture, and what is missing could be the leak
        self._written: int | None = None
        self._open_phase: str | None = None
        #: the first fault (recorder died, dropped packets...): every later stop() raises it again
        self._failure: CaptureError | None = None
        #: recorder clock minus this host's clock: packets carry the recorder's time, phases must too
        self._clock_offset_s = 0.0

    # -- public API --

    @property
    def pcap(self) -> Path:
        return self._pcap

    @property
    def phases(self) -> tuple[PhaseRecord, ...]:
        return tuple(self._phases)

    @property
    def stats(self) -> CaptureStats | None:
        return self._stats

    @property
    def owns_pcap(self) -> bool:
        """True when this capture wrote ``pcap`` (and its phases file), so a cleanup may delete them; False for
        a user's file under re-analysis, which must never be deleted."""
        return True

    def start(self) -> None:
        """Start recording and return only once the recorder really captures."""
        if self._state != "new":
            raise CaptureError(f"{self._what()}: start() called twice")
        with self._masked_errors():
            self._start()
        self._state = "running"
        self._last_action = time.monotonic()

    def stop(self) -> CaptureStats:
        """Stop recording at least STOP_DELAY_S after the last action; check the recorder's own counts.

        Calling it again returns the same stats — or raises the same fault: incomplete evidence stays an error.
        """
        if self._failure is not None:
            raise self._failure
        if self._state == "stopped" and self._stats is not None:
            return self._stats
        if self._state != "running":
            raise CaptureError(f"{self._what()}: stop() before start()")
        wait = self._last_action + STOP_DELAY_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._state = "stopped"
        try:
            with self._remember_failure():
                stats = self._stop()
        except BaseException:
            self._abort_quietly()  # a failed stop must not leave a recorder running
            raise
        _restrict(self._pcap)
        self._stats = stats
        with self._remember_failure():  # a stop() asked again must not return stats as if all was well
            self.write_phases()
        if stats.dropped:
            self._failure = CaptureError(
                f"{self._what()}: the recorder dropped {stats.dropped} of {stats.received} packets; the evidence "
                "is incomplete (reduce traffic, raise the capture buffer, or capture closer to the phone)",
                command=stats.command, returncode=stats.returncode)
            raise self._failure
        if stats.interface_dropped:
            log.warning("%s: the interface dropped %d packets during the capture", self._what(),
                        stats.interface_dropped)
        return stats

    def note_action(self) -> None:
        """Tell the capture the phone was just acted on, so stop() waits STOP_DELAY_S after it."""
        self._last_action = time.monotonic()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the block as the phase window ``name``; fails closed if the recorder died meanwhile."""
        if not _PHASE_NAME.fullmatch(name):
            raise ValueError(f"phase name {name!r} must be letters, digits, '_', '-', '.'")
        if any(record.name == name for record in self._phases) or self._open_phase == name:
            raise ValueError(f"phase {name!r} was already recorded in this capture")
        if self._open_phase is not None:
            raise ValueError(f"phase {name!r} opened inside phase {self._open_phase!r}; phases do not nest")
        if self._state != "running":
            raise CaptureError(f"{self._what()}: phase {name!r} entered while the capture is not running")
        with self._remember_failure():
            self._check_alive()
        self._open_phase = name
        start = self._capture_time()
        try:
            yield
        finally:
            end = self._capture_time()
            self._open_phase = None
            self._phases.append(PhaseRecord(name=name, start=start, end=end))
            self._last_action = time.monotonic()
        with self._remember_failure():
            self._check_alive()

    def packets_in(self, phase: str) -> int:
        """How many packets of the phone the stopped capture holds in the phase window."""
        record = self._phase(phase)
        return sum(1 for packet in self._packets()
                   if record.contains(packet.time) and self._phone.matches(packet.addresses))

    def assert_saw_traffic(self, phase: str) -> int:
        """Fail closed when the phone sent or received nothing in the phase: a silent phone, a wrong filter or a
        dead capture would otherwise pass as "no leak"."""
        count = self.packets_in(phase)
        if count == 0:
            record = self._phase(phase)
            cause = self._silence_cause()
            if record.end < record.start:  # packets carry the same wall clock: a window turned inside out
                cause = (f"this host's clock went back {record.start - record.end:.1f} s during the phase (an NTP "
                         "step, or someone set the time), so its window holds no packet; run the test again")
            raise CaptureError(self._mask(
                f"{self._what()}: no traffic from the phone during phase {phase!r} "
                f"({record.end - record.start:.1f} s window, {len(self._packets())} packets in the capture, "
                f"looked for {self._phone.describe()}); "
                + (cause or "check the capture filter and that the phone is on the captured network")))
        return count

    def _silence_cause(self) -> str | None:
        """What the recorder knows of why it saw nothing (its interface went down...), or None."""
        return None

    def slice(self, phase: str, dest: Path | None = None) -> Path:
        """Write the packets of one phase window as pcapng (for report attachments)."""
        record = self._phase(phase)
        self._require_stopped("slice")
        dest = Path(dest) if dest is not None else self._pcap.with_name(f"{self._stem()}.{phase}.pcapng")
        editcap = _which("editcap", "install Debian's wireshark-common / tshark")
        # microseconds, rounded outwards: a packet stamped exactly at a boundary belongs to the window
        after = f"{math.floor(record.start * 1e6) / 1e6:.6f}"
        before = f"{(math.ceil(record.end * 1e6) + 1) / 1e6:.6f}"
        command = [editcap, "-F", "pcapng", "-A", after, "-B", before, str(self._pcap), str(dest)]
        with self._masked_errors():
            _run(command, timeout_s=SLICE_TIMEOUT_S, what=f"slicing phase {phase!r}")
        _restrict(dest)
        return dest

    def write_phases(self, dest: Path | None = None) -> Path:
        """Write the phase windows as JSON (``phonehome scan --phases`` and ``FileCapture`` read it)."""
        dest = Path(dest) if dest is not None else phases_path(self._pcap)
        text = json.dumps([record.to_json() for record in self._phases], indent=1)
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, CAPTURE_FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text + "\n")
        except OSError as exc:  # a full or read-only disk: the capture's phases are part of its evidence
            raise CaptureError(self._mask(f"{self._what()}: cannot write the phases file {dest}: "
                                          f"{exc.strerror or exc}")) from None
        return dest

    def close(self) -> None:
        """Tear down whatever still runs. Never raises: teardown must not hide a test's result."""
        if self._state != "running":
            return
        self._state = "stopped"
        self._abort_quietly()

    def _abort_quietly(self) -> None:
        try:
            self._abort()
        except Exception as exc:  # teardown logs and carries on
            log.warning("%s: could not tear the capture down: %s", self._what(), exc)

    def info(self) -> dict[str, object]:
        """Serializable description for the report header and Allure environment."""
        return {"source": self.source, "pcap": str(self._pcap), "device": self._label,
                "phone_match": self._mask(self._phone.describe()), "state": self._state,
                "stats": self._stats.to_json() if self._stats else None}

    def __enter__(self) -> _PhasedCapture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _masked_command(self) -> tuple[str, ...]:
        return tuple(self._mask(arg) for arg in getattr(self, "_command", ()))

    def _mask(self, text: str) -> str:
        """The text with every identifier value this capture knows masked."""
        for value in self._redact:
            for spelling in dict.fromkeys((value, value.lower(), value.upper())):
                text = text.replace(spelling, mask(value))
        return text

    @contextlib.contextmanager
    def _masked_errors(self) -> Iterator[None]:
        """Re-raise a CaptureError with identifiers masked in its problem, command and stderr."""
        try:
            yield
        except CaptureError as exc:
            if not self._redact:
                raise
            raise CaptureError(self._mask(exc.problem), command=[self._mask(arg) for arg in exc.command or ()],
                               returncode=exc.returncode,
                               stderr=self._mask(exc.stderr) if exc.stderr else exc.stderr) from None

    @contextlib.contextmanager
    def _remember_failure(self) -> Iterator[None]:
        """Masked errors, and the first one kept so that a later stop() cannot return as if all was well."""
        try:
            with self._masked_errors():
                yield
        except CaptureError as exc:
            if self._failure is None:
                self._failure = exc
            raise

    def _capture_time(self) -> float:
        """Now, on the clock that stamps the packets."""
        return time.time() + self._clock_offset_s

    @property
    def clock_offset_s(self) -> float:
        """How far the recorder's clock is ahead of this host's (0 for a recorder on this host)."""
        return self._clock_offset_s

    # -- for subclasses --

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> CaptureStats:
        raise NotImplementedError

    def _abort(self) -> None:
        """Stop without checks (teardown)."""

    def _check_alive(self) -> None:
        """Raise CaptureError when the recorder is no longer running."""

    # -- helpers --

    def _what(self) -> str:
        return f"{self.source} capture" + (f" of {self._label}" if self._label else "")

    def _stem(self) -> str:
        name = self._pcap.name
        for suffix in (".pcapng", ".pcap"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return name

    def _phase(self, name: str) -> PhaseRecord:
        for record in self._phases:
            if record.name == name:
                return record
        known = ", ".join(record.name for record in self._phases) or "none"
        raise CaptureError(f"{self._what()}: no phase {name!r} was recorded (recorded: {known})")

    def _sync_clock(self, control: Sequence[str]) -> None:
        """Phase windows must be on the recorder's clock; a phone's clock can be off by seconds."""
        offset = measure_clock_offset(control)
        if offset is None:
            log.warning("%s: cannot read the recorder's clock; assuming it matches this host's", self._what())
            return
        self._clock_offset_s = offset
        if abs(offset) >= 1.0:
            log.info("%s: the recorder's clock is %+.3f s off this host's; phases are shifted to match",
                     self._what(), offset)

    def _require_stopped(self, action: str) -> None:
        if self._state != "stopped":
            raise CaptureError(f"{self._what()}: {action} needs a stopped capture; call stop() first")

    def _packets(self) -> list[_Packet]:
        self._require_stopped("reading packets")
        if self._index is None:
            index = read_packet_index(self._pcap)
            if self._written is not None and len(index) != self._written:
                raise CaptureError(self._mask(
                    f"{self._what()}: the capture file {self._pcap} holds {len(index)} packets but the recorder "
                    f"wrote {self._written}; the file was truncated or replaced after the capture, so the "
                    "evidence is incomplete"))
            self._index = index
        return self._index


def _run(command: Sequence[str], *, timeout_s: float, what: str) -> str:
    """Run a short helper command; any failure is a CaptureError with its command, rc and stderr."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s, check=False,
                              umask=CAPTURE_UMASK)
    except subprocess.TimeoutExpired as exc:
        raise CaptureError(f"{what}: timed out after {timeout_s:g} s", command=command,
                           stderr=_text(exc.stderr)) from None
    except OSError as exc:
        raise CaptureError(f"{what}: cannot run: {exc}", command=command) from None
    if done.returncode != 0:
        raise CaptureError(f"{what} failed", command=command, returncode=done.returncode, stderr=done.stderr)
    return done.stdout


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def read_packet_index(pcap: Path) -> list[_Packet]:
    """Times and addresses (MACs, IPs) of every packet in a capture file, read with the scanner's pcap reader.

    Small on purpose: the scanner reads payloads; this only needs to know who talked when. A damaged file is a
    CaptureError: evidence that cannot be read completely is missing evidence.
    """
    from phonehome.scan.packets import address_text, ip_offset
    from phonehome.scan.pcapfile import NOT_A_PACKET, CaptureReader

    if not Path(pcap).is_file():
        raise CaptureError(f"capture file {pcap} does not exist: the recorder wrote nothing")
    try:
        reader = CaptureReader(pcap)
        packets = [_Packet(time=stamp, addresses=_addresses(link, data, address_text, ip_offset))
                   for stamp, link, data, _ in reader if link != NOT_A_PACKET]
    except InputError as exc:
        raise CaptureError(f"cannot read the capture: {exc}") from None
    if reader.warnings:
        raise CaptureError(f"the capture {pcap} is damaged: {'; '.join(reader.warnings[:3])}")
    return packets


def _addresses(link: int, data: bytes, address_text: Callable[[bytes], str],
               ip_offset: Callable[[int, bytes], int]) -> frozenset[str]:
    """Ethernet MACs and IPv4/IPv6 addresses of one frame, as lowercase text."""
    found: set[str] = set()
    if link == LINKTYPE_ETHERNET and len(data) >= 12:
        found.add(":".join(f"{b:02x}" for b in data[0:6]))
        found.add(":".join(f"{b:02x}" for b in data[6:12]))
    off = ip_offset(link, data)
    # the phone's packets inside a tunnel or an 802.11 frame: the inner addresses are the phone's
    inner = from_link(link, data) if off < 0 else from_ip(data, off) if len(data) >= off + 20 else ""
    if not isinstance(inner, str):
        data, off = inner
    if off >= 0 and len(data) > off:
        version = data[off] >> 4
        if version == 4 and len(data) >= off + 20:
            found.update((address_text(data[off + 12:off + 16]), address_text(data[off + 16:off + 20])))
        elif version == 6 and len(data) >= off + 40:
            found.update((address_text(data[off + 8:off + 24]).lower(), address_text(data[off + 24:off + 40]).lower()))
    return frozenset(found)


def load_phases(path: Path) -> tuple[PhaseRecord, ...]:
    """Read a phases JSON (a list of ``{name, start, end}``); bad input is an InputError naming the field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "phases file not found",
                         fix="write the phases next to the capture as <capture>.phases.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read phases file: {exc}", fix="pass a readable JSON file") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not JSON: {exc.msg}", where=f"line {exc.lineno}",
                         fix='write a JSON list of {"name": ..., "start": ..., "end": ...}') from None
    if not isinstance(data, list):
        raise InputError(path, "phases must be a JSON list", fix='write [{"name": "unlock", "start": ..., "end": ...}]')
    records = []
    for index, item in enumerate(data):
        where = f"[{index}]"
        if not isinstance(item, dict) or set(item) != {"name", "start", "end"}:
            raise InputError(path, "a phase needs exactly name, start and end", where=where,
                             fix='write {"name": "unlock", "start": 1700000000.0, "end": 1700000003.5}')
        name, start, end = item["name"], item["start"], item["end"]
        if not isinstance(name, str) or not _PHASE_NAME.fullmatch(name):
            raise InputError(path, f"bad phase name {name!r}", where=f"{where}.name",
                             fix="use letters, digits, '_', '-', '.'")
        for key, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(path, f"{key} must be a number (epoch seconds)", where=f"{where}.{key}",
                                 fix="write capture time as seconds since 1970, e.g. 1700000000.25")
        if end < start:
            raise InputError(path, "end is before start", where=where, fix="swap start and end")
        records.append(PhaseRecord(name=name, start=float(start), end=float(end)))
    names = [record.name for record in records]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(path, f"phase {duplicates[0]!r} appears twice", fix="give each phase a unique name")
    return tuple(records)


class _StderrWatcher:
    """Collects a recorder's stderr in a thread and signals when a readiness pattern appeared."""

    def __init__(self, stream: object, ready: re.Pattern[str]) -> None:
        self._lines: list[str] = []
        self._ready = ready
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: object) -> None:
        try:
            for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
                line = raw.decode(errors="replace")
                self._lines.append(line)
                if self._ready.search(line):
                    self.ready.set()
        finally:
            stream.close()  # type: ignore[attr-defined]

    def text(self) -> str:
        return "".join(self._lines)

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)


def measure_clock_offset(control: Sequence[str]) -> float | None:
    """The remote clock minus ours, in seconds, through a control shell; None when it cannot be read.

    ``date +%s.%N`` where the remote ``date`` supports it (GNU, recent toybox), trusted beyond the round trip;
    else whole seconds, trusted only for a skew above CLOCK_SKEW_TOLERANCE_S. Below those, 0: correcting by a
    noisy estimate would shift phase boundaries by more than the clocks really differ.
    """
    for command, precise in (("date +%s.%N", True), ("date +%s", False)):
        before = time.time()
        try:
            text = _run([*control, command], timeout_s=CONTROL_TIMEOUT_S, what="reading the clock").strip()
        except CaptureError:
            return None
        after = time.time()
        if not re.fullmatch(r"\d+(\.\d+)?" if precise else r"\d+", text):
            continue
        offset = float(text) - (before + after) / 2
        # within the round trip (or a whole second) the clocks are indistinguishable: correcting would add noise
        tolerance = (after - before) if precise else CLOCK_SKEW_TOLERANCE_S
        return offset if abs(offset) > tolerance else 0.0
    return None
