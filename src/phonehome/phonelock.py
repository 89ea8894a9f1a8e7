"""One run per phone: an exclusive lock per phone on this host, held for the run.

Two runs on one phone break each other, and worse, the second run's verdicts are built on the first run's traffic.
:func:`acquire` takes an ``flock`` on a file named for the phone (the adb server's host:port and the serial, hashed:
no serial in a file name) and writes the holder's pid, start time and command line into it; a second run that asks
for the same phone gets a :class:`~phonehome.errors.DeviceError` at once, naming the holder. The kernel drops the
lock when its process ends, however it ends, so the lock of a dead run is simply taken over (and its holder
information rewritten).

The locks live in ``/run/phonehome/locks`` (``$PHONEHOME_RUN_DIR/locks``, as the lab's state); where that cannot be
written (a user without root), in
``$XDG_RUNTIME_DIR/phonehome/locks`` or a per-user directory under the temp dir, which then guards only that user's
runs. The file is never deleted: unlinking a lock file lets two runs hold "the same" lock on different files.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from phonehome.errors import DeviceError
from phonehome.identifiers import mask

log = logging.getLogger(__name__)

#: phonehome's run-time directory (the virtual lab's state is there too), and the variable that moves it
DEFAULT_RUN_DIR = Path("/run/phonehome")
RUN_DIR_ENV = "PHONEHOME_RUN_DIR"
#: hex digits of the key's SHA-256 in a lock file's name
KEY_HEX_CHARS = 32
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", ""})


@dataclass(frozen=True)
class Holder:
    """Who holds a phone's lock, as its lock file says. ``command`` has the phone's serial masked."""

    pid: int
    started: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid}, started {self.started} ({self.command})"


class PhoneLock:
    """A held lock on one phone. :meth:`release` (or leaving the ``with`` block) gives it up; never raises."""

    def __init__(self, fd: int, path: Path, label: str, holder: Holder) -> None:
        self._fd: int | None = fd
        self.path = path
        self.label = label
        self.holder = holder

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Clear the holder information and drop the lock. Idempotent; a failure is logged, never raised."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError as exc:
            log.warning("phone lock of %s: cannot clear %s: %s", self.label, self.path, exc)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> PhoneLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"PhoneLock({self.label!r}, {'held' if self.held else 'released'}, path={str(self.path)!r})"


def acquire(adb_address: str, serial: str, *, label: str, lock_dir: Path | None = None) -> PhoneLock:
    """Lock the phone ``serial`` behind the adb server at ``adb_address`` (``host:port``) for this process.

    ``label`` names the phone in messages (the inventory label: never the clear serial). Raises DeviceError at
    once, naming the holder's pid and start time, when another process holds the lock; takes over the lock of a
    process that has died. ``lock_dir`` None is :func:`default_lock_dir`, or a per-user fallback when that
    cannot be written.
    """
    try:
        path = _lock_dir(lock_dir) / f"{lock_key(adb_address, serial)}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DeviceError(label, f"cannot open its lock file: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        who = holder.describe() if holder else "a process that is still starting (no holder written yet)"
        raise DeviceError(label, f"is in use by another phonehome run on this host: {who}; wait for that run to "
                                 f"end or stop it (lock {path})") from None
    except OSError as exc:
        os.close(fd)
        raise DeviceError(label, f"cannot lock {path}: {exc.strerror or exc}") from None
    previous = _read_holder(fd)
    if previous is not None and previous.pid != os.getpid():
        log.info("phone lock of %s: taking over from %s, which no longer holds it", label, previous.describe())
    holder = Holder(pid=os.getpid(), started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    command=_command_line(serial))
    try:
        _write_holder(fd, holder)
    except OSError as exc:
        os.close(fd)
        raise DeviceError(label, f"cannot write its lock file {path}: {exc.strerror or exc}") from None
    return PhoneLock(fd, path, label, holder)


def lock_key(adb_address: str, serial: str) -> str:
    """The lock file's name: a hash of the adb server's address (localhost spelt one way) and the serial."""
    host, sep, port = adb_address.strip().rpartition(":")
    if not sep:  # no port given: adb's default
        host, port = port, "5037"
    host = host.lower()
    if host in _LOCAL_HOSTS:
        host = "127.0.0.1"
    return hashlib.sha256(f"{host}:{port}\0{serial}".encode()).hexdigest()[:KEY_HEX_CHARS]


def read_holder(adb_address: str, serial: str, *, lock_dir: Path | None = None) -> Holder | None:
    """Who holds the phone's lock now, or None when nobody does (for reports and ``phonehome`` status output)."""
    try:
        path = _lock_dir(lock_dir) / f"{lock_key(adb_address, serial)}.lock"
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        return None  # nobody holds it: whatever the file says is stale
    finally:
        os.close(fd)


def default_lock_dir() -> Path:
    """The shared lock directory of this host: ``$PHONEHOME_RUN_DIR/locks`` or ``/run/phonehome/locks``."""
    return Path(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR) / "locks"


def _lock_dir(requested: Path | None) -> Path:
    candidates = [requested] if requested is not None else [default_lock_dir(), *_fallback_dirs()]
    failure: OSError | None = None
    for directory in candidates:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            failure = exc
            continue
        if os.access(directory, os.W_OK | os.X_OK):
            return directory
    where = ", ".join(str(directory) for directory in candidates)
    raise PermissionError(f"no writable directory for phone locks among {where}" + (f": {failure}" if failure else ""))


def _fallback_dirs() -> list[Path]:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    dirs = [Path(runtime) / "phonehome" / "locks"] if runtime else []
    return [*dirs, Path(tempfile.gettempdir()) / f"phonehome-locks-{os.getuid()}"]


def _command_line(serial: str) -> str:
    """This process's command line, with the serial masked (a run may name its phone on the command line)."""
    text = shlex.join(getattr(sys, "orig_argv", sys.argv))
    return text.replace(serial, mask(serial)) if serial else text


def _write_holder(fd: int, holder: Holder) -> None:
    data = json.dumps({"pid": holder.pid, "started": holder.started, "command": holder.command}).encode() + b"\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _read_holder(fd: int) -> Holder | None:
    try:
        data = os.pread(fd, 65536, 0)
        fields = json.loads(data)
        return Holder(pid=int(fields["pid"]), started=str(fields["started"]), command=str(fields["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
