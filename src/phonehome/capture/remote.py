"""Captures recorded by a command on another machine: dumpcap over ssh, tcpdump on a rooted phone over adb."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phonehome.capture.base import (
    _DUMPCAP_READY,
    _NEVER,
    _TCPDUMP_READY,
    CAPTURE_FILE_MODE,
    CAPTURE_UMASK,
    CONTROL_TIMEOUT_S,
    KILL_TIMEOUT_S,
    MAX_CAPTURE_S,
    POLL_INTERVAL_S,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    CaptureStats,
    PhoneMatch,
    _PhasedCapture,
    _prepare_output,
    _run,
    _StderrWatcher,
    _which,
    recorder_preexec,
)
from phonehome.capture.dumpcap import _signal_group, parse_dumpcap_stats, parse_tcpdump_stats
from phonehome.errors import CaptureError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class RemoteShell:
    """How to run commands on the machine that records: ``stream`` runs the recorder with its stdout (the pcap)
    coming back here; ``control`` runs short commands (cat, kill). Each is an argv prefix to which one shell
    command string is appended, e.g. ``ssh HOST`` or ``adb -s SERIAL exec-out``; ``sh -c`` is this host."""

    stream: tuple[str, ...]
    control: tuple[str, ...]
    workdir: str = "/tmp"
    name: str = "remote"


def ssh_shell(host: str, *, options: Sequence[str] = ()) -> RemoteShell:
    """A remote host reached by ssh with key authentication (BatchMode: never prompt in a test run)."""
    ssh = _which("ssh", "install Debian's openssh-client")
    prefix = (ssh, "-o", "BatchMode=yes", *options, host)
    return RemoteShell(stream=prefix, control=prefix, workdir="/tmp", name=f"ssh {host}")


def adb_prefix(serial: str, *, server_port: int | None = None) -> tuple[str, ...]:
    """``adb [-P PORT] -s SERIAL``: the virtual lab's adb server listens on its own port."""
    adb = _which("adb", "install Debian's adb")
    return (adb, *(("-P", str(server_port)) if server_port else ()), "-s", serial)


def adb_shell(serial: str, *, server_port: int | None = None) -> RemoteShell:
    """A phone reached by adb. ``exec-out`` keeps the pcap stream binary-clean (no pty, no CRLF mangling)."""
    prefix = adb_prefix(serial, server_port=server_port)
    return RemoteShell(stream=(*prefix, "exec-out"), control=(*prefix, "shell"), workdir="/data/local/tmp",
                       name=f"adb {serial}")


def local_shell(workdir: str = "/tmp") -> RemoteShell:
    """This host as the "remote" machine: the same mechanism without a network hop."""
    sh = _which("sh", "a POSIX shell is required")
    return RemoteShell(stream=(sh, "-c"), control=(sh, "-c"), workdir=workdir, name="local")


class RemoteCommandCapture(_PhasedCapture):
    """A recorder that runs elsewhere and writes the pcap to its stdout, which lands in our file.

    The remote shell records its pid and its stderr in a private directory there, so we can tell when it is
    ready (its readiness line), stop it with SIGINT (it flushes and prints its counts) and read those counts —
    also through ``adb exec-out``, which carries no stderr.
    """

    def __init__(self, shell: RemoteShell, recorder: Sequence[str], pcap: Path, *, ready: re.Pattern[str],
                 source: str, phone: PhoneMatch | None = None, label: str | None = None,
                 hint: str = "", redact: Sequence[str] = ()) -> None:
        super().__init__(pcap, phone=phone, label=label, redact=redact)
        self.shell = shell
        #: what to check when the recorder does not start (said in the error)
        self.hint = hint
        self.recorder = tuple(recorder)
        self.source = source
        self._ready = ready
        self._dir = f"{shell.workdir.rstrip('/')}/phonehome-{secrets.token_hex(6)}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._local_stderr: _StderrWatcher | None = None
        self._out: object = None
        self._command: tuple[str, ...] = ()
        self._started = 0.0

    def script(self) -> str:
        """The shell command run remotely: note the pid, then become the recorder with stderr in a file."""
        d = shlex.quote(self._dir)
        recorder = " ".join(shlex.quote(arg) for arg in self.recorder)
        return f"umask 077 && mkdir -p {d} && echo $$ > {d}/pid && exec {recorder} 2> {d}/err"

    def _control(self, command: str, *, what: str) -> str:
        return _run([*self.shell.control, command], timeout_s=CONTROL_TIMEOUT_S, what=f"{self._what()}: {what}")

    def _remote_stderr(self) -> str:
        try:
            return self._control(f"cat {shlex.quote(self._dir)}/err 2>/dev/null || true", what="reading stderr")
        except CaptureError as exc:
            return f"(could not read the recorder's stderr: {exc})"

    def _start(self) -> None:
        _prepare_output(self._pcap)
        self._command = (*self.shell.stream, self.script())
        self._started = time.time()
        fd = os.open(self._pcap, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, CAPTURE_FILE_MODE)
        out = os.fdopen(fd, "wb")
        try:
            proc = subprocess.Popen(self._command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE,
                                    start_new_session=True, umask=CAPTURE_UMASK,
                                    preexec_fn=recorder_preexec())
        except OSError as exc:
            out.close()
            raise CaptureError(f"{self._what()}: cannot start: {exc}", command=self._command) from None
        self._proc, self._out = proc, out
        self._local_stderr = _StderrWatcher(proc.stderr, _NEVER)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            stderr = self._remote_stderr()
            if self._ready.search(stderr):
                break
            if proc.poll() is not None:
                stderr = self._remote_stderr()  # read again: it may have exited right after the look above
                self._local_stderr.join(KILL_TIMEOUT_S)
                local = self._local_stderr.text()
                out.close()
                self._cleanup_remote()
                raise CaptureError(f"{self._what()}: the recorder exited before capturing"
                                   + (f" ({self.hint})" if self.hint else ""),
                                   command=self._command, returncode=proc.returncode, stderr=_joined(stderr, local))
            if time.monotonic() > deadline:
                self._abort()
                raise CaptureError(f"{self._what()}: the recorder never became ready within "
                                   f"{READY_TIMEOUT_S:g} s" + (f" ({self.hint})" if self.hint else ""),
                                   command=self._command, stderr=stderr)
            time.sleep(POLL_INTERVAL_S)
        self._sync_clock(self.shell.control)
        log.info("%s: recording via %s into %s", self._what(), self.shell.name, self._pcap)

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            self._state = "stopped"
            self._close_out()
            raise CaptureError(f"{self._what()}: the recorder exited during the capture", command=self._command,
                               returncode=proc.returncode, stderr=_joined(self._remote_stderr(), self._local_text()))

    def _local_text(self) -> str:
        """What ssh/adb itself printed (connection refused, device offline...)."""
        watcher = self._local_stderr
        if watcher is None:
            return ""
        watcher.join(KILL_TIMEOUT_S)
        return watcher.text()

    def _close_out(self) -> None:
        out = self._out
        if out is not None:
            out.close()  # type: ignore[attr-defined]
            self._out = None

    def _stop(self) -> CaptureStats:
        proc = self._proc
        assert proc is not None
        if proc.poll() is not None:
            self._close_out()
            raise CaptureError(f"{self._what()}: the recorder exited before it was stopped",
                               command=self._command, returncode=proc.returncode,
                               stderr=_joined(self._remote_stderr(), self._local_text()))
        d = shlex.quote(self._dir)
        self._control(f"kill -INT $(cat {d}/pid)", what="stopping the recorder")  # as Ctrl-C: flush, print counts
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._abort()
            raise CaptureError(f"{self._what()}: the recorder did not stop within {STOP_TIMEOUT_S:g} s",
                               command=self._command, stderr=self._remote_stderr()) from None
        self._close_out()
        stderr = self._remote_stderr()
        self._cleanup_remote()
        received, dropped, ifdrop = parse_dumpcap_stats(stderr)
        if received is None:
            received, dropped = parse_tcpdump_stats(stderr)
        if received is None or dropped is None:
            raise CaptureError(f"{self._what()}: the recorder printed no packet counts; cannot tell whether "
                               "packets were lost", command=self._command, returncode=proc.returncode,
                               stderr=stderr)
        return CaptureStats(source=self.source, pcap=self._pcap, received=received, dropped=dropped,
                            interface_dropped=ifdrop, command=self._masked_command(), returncode=proc.returncode,
                            started=self._started, stopped=time.time(), phases=self.phases)

    def _cleanup_remote(self) -> None:
        try:
            self._control(f"rm -rf {shlex.quote(self._dir)}", what="removing its work directory")
        except CaptureError as exc:
            log.warning("%s", exc)

    def _abort(self) -> None:
        d = shlex.quote(self._dir)
        with contextlib.suppress(CaptureError):
            self._control(f"kill -KILL $(cat {d}/pid) 2>/dev/null; rm -rf {d}", what="killing the recorder")
        if self._proc is not None and self._proc.poll() is None:
            _signal_group(self._proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=KILL_TIMEOUT_S)
        self._close_out()

    @property
    def remote_dir(self) -> str:
        return self._dir

    def info(self) -> dict[str, object]:
        return {**super().info(), "via": self.shell.name, "recorder": [self._mask(arg) for arg in self.recorder]}


def dumpcap_recorder(interface: str, bpf: str | None, *, dumpcap: str = "dumpcap") -> list[str]:
    """dumpcap writing pcapng to stdout (remote side, so the binary is looked up there)."""
    return [dumpcap, "-i", interface, "-q", "-a", f"duration:{MAX_CAPTURE_S}", "-w", "-",
            *(["-f", bpf] if bpf else [])]


def tcpdump_recorder(interface: str, bpf: str | None, *, tcpdump: str = "tcpdump") -> list[str]:
    """tcpdump writing pcap to stdout unbuffered per packet (``-U``), full packets."""
    return [tcpdump, "-i", interface, "-s", "0", "-U", "-w", "-", *([bpf] if bpf else [])]


class SshDumpcapCapture(RemoteCommandCapture):
    """dumpcap on a remote host (the access point, a capture box) over ssh; the pcap streams back here."""

    def __init__(self, host: str, interface: str, pcap: Path, *, bpf: str | None = None,
                 phone: PhoneMatch | None = None, label: str | None = None,
                 shell: RemoteShell | None = None, redact: Sequence[str] = ()) -> None:
        super().__init__(shell or ssh_shell(host), dumpcap_recorder(interface, bpf), pcap, ready=_DUMPCAP_READY,
                         source="ssh", phone=phone, label=label,
                         hint=f"check key login to {host}, dumpcap on its PATH and its permission to capture on "
                              f"{interface}", redact=redact)
        self.host = host


class AdbTcpdumpCapture(RemoteCommandCapture):
    """tcpdump on a rooted phone (adbd running as root: ``adb root``), streamed by ``adb exec-out``."""

    def __init__(self, serial: str, pcap: Path, *, interface: str = "wlan0", bpf: str | None = None,
                 server_port: int | None = None, phone: PhoneMatch | None = None, label: str | None = None,
                 recorder: Sequence[str] | None = None, shell: RemoteShell | None = None,
                 redact: Sequence[str] = ()) -> None:
        super().__init__(shell or adb_shell(serial, server_port=server_port),
                         recorder or tcpdump_recorder(interface, bpf), pcap, ready=_TCPDUMP_READY,
                         source="adb-tcpdump", phone=phone, label=label or serial,
                         hint="adb-tcpdump needs a rooted phone with adbd as root ('adb root') and tcpdump on "
                              "its PATH; without root use capture source pcapdroid", redact=redact)
        self.serial = serial


def _joined(*texts: str) -> str:
    """Texts from two streams as lines: the remote stderr may end mid-line, and its last word must not run into
    the first of the next."""
    return "\n".join(text.rstrip("\n") for text in texts if text.strip())
