"""The phone's socket tables, polled over adb while a test records: what names the app behind each flow.

One batched ``adb shell`` per poll reads ``/proc/net/{tcp,tcp6,udp,udp6}``; the package list (``cmd package list
packages -U``, ``pm list packages -U`` on old releases) is read once per run and phone, and again once the phone
answers after polls failed (a power-on). Everything read is appended, as it was printed, to an apps table beside the
capture (the format of :mod:`phonehome.scan.attribution`, so ``phonehome scan --apps`` re-reads it) and fed to a
:class:`~phonehome.scan.attribution.SocketTable`. The poller talks the adb host protocol itself (two small
requests per poll, no process spawned), which keeps a poll near the phone's own cost.

A phone that refuses its tables (SELinux on some releases) is said once per phone and its flows stay
unattributed; a poll that fails is counted, never retried into a guess.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from phonehome.devices.adbprobe import read_exactly
from phonehome.errors import DeviceError, PhonehomeError
from phonehome.identifiers import mask
from phonehome.scan.attribution import TABLES, SocketTable, read_apps_text

if TYPE_CHECKING:
    from phonehome.inventory import DeviceEntry

log = logging.getLogger(__name__)

#: pause between the end of one poll and the start of the next: with a poll's own ~20-60 ms this reads the
#: tables every 100-250 ms, short enough to see most app connections, long enough to cost the phone little
POLL_PAUSE_S = 0.1
#: an adb request (connect, transport switch, shell) must answer within this
ADB_TIMEOUT_S = 5.0
#: the batched command of one poll: each table under its section line, errors in the output (they say refused)
POLL_COMMAND = "; ".join(f"echo @{name}; cat /proc/net/{name} 2>&1" for name in TABLES)
PACKAGES_COMMANDS = ("cmd package list packages -U 2>&1", "pm list packages -U 2>&1")
_REFUSED_SAID: set[str] = set()  # phones whose refusal was already said this session
#: each phone's package list, read once per run (it takes the phone up to a second) and again after a power-on
_PACKAGES: dict[str, str] = {}

ShellRunner = Callable[[str], str]


class AdbShell:
    """``adb shell CMD`` over the adb host protocol (``host:transport:SERIAL`` then ``shell:CMD``). Its errors
    name the phone by its label, and the serial in what the adb server says is masked (they go into reports)."""

    def __init__(self, serial: str, *, label: str | None = None, host: str = "127.0.0.1", port: int = 5037,
                 timeout_s: float = ADB_TIMEOUT_S) -> None:
        self.serial, self.host, self.port, self.timeout_s = serial, host, port, timeout_s
        self.label = label or mask(serial)

    def _error(self, problem: str) -> DeviceError:
        return DeviceError(self.label, problem.replace(self.serial, mask(self.serial)))

    def __call__(self, command: str) -> str:
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout_s) as conn:
                self._request(conn, f"host:transport:{self.serial}")
                self._request(conn, f"shell:{command}")
                chunks = []
                while data := conn.recv(65536):
                    chunks.append(data)
        except OSError as exc:
            raise self._error(f"adb shell via {self.host}:{self.port}: {exc}") from None
        return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")

    def _request(self, conn: socket.socket, request: str) -> None:
        data = request.encode()
        conn.sendall(b"%04x" % len(data) + data)
        status = read_exactly(conn, 4)
        if status == b"FAIL":
            length = int(read_exactly(conn, 4), 16)
            message = read_exactly(conn, length).decode("utf-8", "replace")
            raise self._error(f"adb {request.split(':')[0]}: {message}")
        if status != b"OKAY":
            raise self._error(f"adb answered {status!r} to {request.split(':')[0]}")


class SocketPoller:
    """Polls one phone's socket tables in a thread from :meth:`start` to :meth:`stop` (which polls once more,
    right after the last phase) and records them at ``record``."""

    def __init__(self, shell: ShellRunner, *, label: str, record: Path, pause_s: float = POLL_PAUSE_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.shell, self.label, self.record, self.pause_s, self.clock = shell, label, record, pause_s, clock
        self.table = SocketTable()
        self.durations: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._packages_read = False
        self._refused = False

    @property
    def failures(self) -> list[str]:
        """What each failed poll raised (adb gone, phone rebooting): reported with the attribution."""
        return self.table.failed_polls

    def start(self) -> None:
        self.record.parent.mkdir(parents=True, exist_ok=True)
        self.record.write_text(f"# phonehome apps table of {self.label}: see 'phonehome scan --help'\n")
        self._read_packages(cached=True)
        self.poll()
        self._thread = threading.Thread(target=self._run, name=f"phonehome-sockets-{self.label}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.pause_s):
            if self._refused:
                return  # the phone said no: polling on would only repeat it
            self.poll()

    def _read_packages(self, *, cached: bool = False) -> None:
        """The package list: this run's earlier read of it (``cached``), else read now and remembered."""
        out = _PACKAGES.get(self.label) if cached else None
        if out is None:
            out = self._ask_packages()
            if out is None:
                return
            _PACKAGES[self.label] = out
        self._load_packages(out)

    def _ask_packages(self) -> str | None:
        out = ""
        for command in PACKAGES_COMMANDS:
            try:
                out = self.shell(command)
            except PhonehomeError as exc:
                self.table.failed_polls.append(str(exc))
                return None
            if "package:" in out:
                break
        return out

    def _load_packages(self, out: str) -> None:
        text = f"@packages {self.clock():.6f}\n{out}"
        with self._lock:
            try:
                read_apps_text(self.table, text, source=f"{self.label}: package list")
            except PhonehomeError as exc:  # an unexpected answer: apps are named by UID only
                self.table.package_error = str(exc)[:200]
        self._append(text)
        self._packages_read = True

    def poll(self) -> None:
        """One batched read of the four tables; a failure (phone rebooting, adb gone) is counted."""
        started = self.clock()
        t0 = time.monotonic()
        try:
            out = self.shell(POLL_COMMAND)
        except PhonehomeError as exc:
            self.table.failed_polls.append(str(exc))
            self._packages_read = False  # read them again once the phone answers (after a power-on)
            return
        self.durations.append(time.monotonic() - t0)
        stamp = f"{(started + self.clock()) / 2:.6f}"
        text = "".join(line + (f" {stamp}\n" if line in {f"@{t}" for t in TABLES} else "\n")
                       for line in out.splitlines())
        if not self._packages_read:
            self._read_packages()
        with self._lock:
            try:
                read_apps_text(self.table, text, source=f"{self.label}: /proc/net")
            except PhonehomeError as exc:
                self.table.failed_polls.append(str(exc))
                return
        self._append(text)
        if len(self.table.refused) == len(TABLES) and not self._refused:
            self._refused = True
            if self.label not in _REFUSED_SAID:
                _REFUSED_SAID.add(self.label)
                log.warning("%s: the phone refuses its socket tables (%s); flows will be reported unattributed",
                            self.label, next(iter(self.table.refused.values())))

    def _append(self, text: str) -> None:
        with contextlib.suppress(OSError), self.record.open("a", encoding="utf-8") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")

    def stop(self) -> SocketTable:
        """Stop polling after one last poll (sockets of the last phase that are still open) and return the
        table. Never raises."""
        if self._stop.is_set():
            return self.table  # stopped already (the scan stops it, teardown again)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=ADB_TIMEOUT_S * 2)
            self._thread = None
        if not self._refused:
            with contextlib.suppress(Exception):
                self.poll()
        return self.table

    def timing(self) -> str:
        """``12 polls, median 41 ms, max 88 ms``: what one poll costs on this phone (benchmarks print it)."""
        if not self.durations:
            return "no poll succeeded"
        ms = sorted(d * 1000 for d in self.durations)
        return f"{len(ms)} polls, median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms"


#: backends whose phones answer adb (every phone phonehome drives today)
ADB_BACKENDS = frozenset(("uiautomator2", "virtual"))


def poller_for(entry: DeviceEntry, adb_address: tuple[str, int], pcap: Path) -> SocketPoller | None:
    """The poller of a device's socket tables for one capture, recording beside it (``X.pcapng`` ->
    ``X.apps.txt``); None for a backend without adb."""
    if entry.backend not in ADB_BACKENDS:
        return None
    host, port = adb_address
    return SocketPoller(AdbShell(entry.serial, label=entry.label, host=host, port=port), label=entry.label,
                        record=pcap.with_suffix(".apps.txt"))
