"""dumpcap on an interface of this host: the recorder for virtual phones and wired/Wi-Fi benches."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from phonehome.capture.base import (
    _DUMPCAP_READY,
    _DUMPCAP_STATS,
    _TCPDUMP_DROPPED,
    _TCPDUMP_RECEIVED,
    CAPTURE_UMASK,
    KILL_TIMEOUT_S,
    MAX_CAPTURE_S,
    POLL_INTERVAL_S,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    CaptureStats,
    PhoneMatch,
    _PhasedCapture,
    _prepare_output,
    _restrict,
    _StderrWatcher,
    _which,
    recorder_preexec,
)
from phonehome.errors import CaptureError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

#: where Linux shows each interface's operstate
SYS_CLASS_NET = Path("/sys/class/net")



class DumpcapCapture(_PhasedCapture):
    """dumpcap on an interface of this host (an access point's interface, a virtual phone's veth), with a BPF.

    dumpcap runs in its own process group, counts as ready only after its ``File:`` line, and is stopped with
    SIGINT so it flushes and prints its received/dropped counts.
    """

    source = "interface"

    def __init__(self, interface: str, pcap: Path, *, bpf: str | None = None, phone: PhoneMatch | None = None,
                 label: str | None = None, buffer_mib: int | None = None, redact: Sequence[str] = ()) -> None:
        super().__init__(pcap, phone=phone, label=label, redact=redact)
        self.interface = interface
        self.bpf = bpf
        self.buffer_mib = buffer_mib
        self._proc: subprocess.Popen[bytes] | None = None
        self._watcher: _StderrWatcher | None = None
        self._command: tuple[str, ...] = ()
        self._started = 0.0
        #: the interface seen down or gone during the capture (why it recorded nothing), once seen
        self._link_problem: str | None = None

    def command(self) -> list[str]:
        dumpcap = _which("dumpcap", "install Debian's tshark; see the README's real-bench guide for permissions")
        command = [dumpcap, "-i", self.interface, "-q", "-a", f"duration:{MAX_CAPTURE_S}", "-w", str(self._pcap)]
        if self.buffer_mib:
            command += ["-B", str(self.buffer_mib)]
        if self.bpf:
            command += ["-f", self.bpf]
        return command

    def _start(self) -> None:
        _prepare_output(self._pcap)
        command = self.command()
        self._command = tuple(command)
        self._started = time.time()
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True, umask=CAPTURE_UMASK,
                                    preexec_fn=recorder_preexec())
        except OSError as exc:
            raise CaptureError(f"{self._what()}: cannot start dumpcap: {exc}", command=command) from None
        self._proc = proc
        self._watcher = _StderrWatcher(proc.stderr, _DUMPCAP_READY)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._watcher.ready.wait(POLL_INTERVAL_S):
            if proc.poll() is not None:
                self._watcher.join(KILL_TIMEOUT_S)
                raise CaptureError(f"{self._what()}: dumpcap exited before capturing on {self.interface}",
                                   command=command, returncode=proc.returncode, stderr=self._watcher.text())
            if time.monotonic() > deadline:
                self._kill_group()
                raise CaptureError(f"{self._what()}: dumpcap never became ready within {READY_TIMEOUT_S:g} s",
                                   command=command, returncode=proc.returncode, stderr=self._watcher.text())
        log.info("%s: capturing on %s into %s", self._what(), self.interface, self._pcap)

    def _check_alive(self) -> None:
        self._check_link()
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            assert self._watcher is not None
            self._watcher.join(KILL_TIMEOUT_S)
            self._state = "stopped"
            raise CaptureError(f"{self._what()}: dumpcap exited during the capture", command=self._command,
                               returncode=proc.returncode, stderr=self._watcher.text())

    def _check_link(self) -> None:
        """Note an interface that is down or gone at a phase's start or end: dumpcap keeps running on a downed
        interface and records nothing, so the "no traffic" error can name the cause."""
        if self._link_problem is not None:
            return
        try:
            state = (SYS_CLASS_NET / self.interface / "operstate").read_text(encoding="ascii").strip()
        except FileNotFoundError:
            self._link_problem = f"the interface {self.interface} was removed during the capture"
            return
        except OSError:  # no sysfs (not Linux): nothing to tell
            return
        if state not in ("up", "unknown"):  # lo and some tunnels say "unknown" while they work
            self._link_problem = (f"the interface {self.interface} was {state} during the capture (is the access "
                                  "point or the lab still up? 'ip link show' on the bench host)")

    def _silence_cause(self) -> str | None:
        self._check_link()
        return self._link_problem

    def _stop(self) -> CaptureStats:
        proc, watcher = self._proc, self._watcher
        assert proc is not None and watcher is not None
        if proc.poll() is not None:
            watcher.join(KILL_TIMEOUT_S)
            raise CaptureError(f"{self._what()}: dumpcap exited before it was stopped", command=self._command,
                               returncode=proc.returncode, stderr=watcher.text())
        _signal_group(proc, signal.SIGINT)
        try:
            returncode = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._kill_group()
            raise CaptureError(f"{self._what()}: dumpcap did not stop within {STOP_TIMEOUT_S:g} s of SIGINT; "
                               "killed, the capture file may be truncated", command=self._command,
                               stderr=watcher.text()) from None
        watcher.join(KILL_TIMEOUT_S)
        stderr = watcher.text()
        if returncode != 0:
            raise CaptureError(f"{self._what()}: dumpcap failed", command=self._command, returncode=returncode,
                               stderr=stderr)
        received, dropped, ifdrop = parse_dumpcap_stats(stderr)
        if received is None:
            raise CaptureError(f"{self._what()}: dumpcap printed no packet counts; cannot tell whether packets "
                               "were lost", command=self._command, returncode=returncode, stderr=stderr)
        self._written = received  # dumpcap counts a packet as received once it wrote it (dropped ones apart)
        return CaptureStats(source=self.source, pcap=self._pcap, received=received, dropped=dropped,
                            interface_dropped=ifdrop, command=self._masked_command(), returncode=returncode,
                            started=self._started, stopped=time.time(), phases=self.phases)

    def _abort(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            _signal_group(self._proc, signal.SIGINT)
            try:
                self._proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill_group()
        _restrict(self._pcap)

    def _kill_group(self) -> None:
        if self._proc is None:
            return
        _signal_group(self._proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=KILL_TIMEOUT_S)

    @property
    def pid(self) -> int | None:
        """dumpcap's process id (also its process group id)."""
        return self._proc.pid if self._proc else None

    def info(self) -> dict[str, object]:
        return {**super().info(), "interface": self.interface,
                "filter": self._mask(self.bpf) if self.bpf else None}


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the recorder's whole process group (a killed parent must not leave a writer behind)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def parse_dumpcap_stats(stderr: str) -> tuple[int | None, int | None, int | None]:
    """(received, dropped, interface_dropped) summed over interfaces from dumpcap's closing lines; Nones if absent."""
    matches = list(_DUMPCAP_STATS.finditer(stderr))
    if not matches:
        return None, None, None
    received = sum(int(m["received"]) for m in matches)
    dropped = sum(int(m["dropped"]) for m in matches)
    ifdrops = [int(m["ifdrop"]) for m in matches if m["ifdrop"] is not None]
    return received, dropped, sum(ifdrops) if ifdrops else None


def parse_tcpdump_stats(stderr: str) -> tuple[int | None, int | None]:
    """(received, dropped) from tcpdump's closing lines; Nones if absent."""
    received = _TCPDUMP_RECEIVED.search(stderr)
    dropped = _TCPDUMP_DROPPED.search(stderr)
    return (int(received[1]) if received else None, int(dropped[1]) if dropped else None)
