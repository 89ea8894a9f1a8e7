"""One run per phone: a second process is refused at once, naming the holder; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import phonehome.phonelock as phonelock
from phonehome.errors import DeviceError
from phonehome.identifiers import mask
from phonehome.phonelock import acquire, lock_key, read_holder

SERIAL = "R58M123ABCD"
ADB = "127.0.0.1:5037"
HOLDER_TIMEOUT_S = 30.0

# a second process: takes the lock, says so, and holds it until its stdin closes
_HOLD = """
import sys
from pathlib import Path
from phonehome.phonelock import acquire
lock = acquire(sys.argv[1], sys.argv[2], label="pixel-7", lock_dir=Path(sys.argv[3]))
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of SERIAL (the serial on its command line, as a user might type it)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, ADB, SERIAL, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(HOLDER_TIMEOUT_S)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def test_a_second_run_is_refused_at_once_naming_the_holder(holder: subprocess.Popen[str], tmp_path: Path) -> None:
    with pytest.raises(DeviceError) as info:
        acquire(ADB, SERIAL, label="pixel-7", lock_dir=tmp_path)
    text = str(info.value)
    assert text.startswith("device pixel-7: is in use by another phonehome run on this host: ")
    assert f"pid {holder.pid}, started 20" in text and "+00:00" in text
    assert SERIAL not in text and mask(SERIAL) in text, "the holder's command line, serial masked"
    (lock_file,) = tmp_path.iterdir()
    assert SERIAL not in lock_file.name and SERIAL not in lock_file.read_text()
    assert json.loads(lock_file.read_text())["pid"] == holder.pid
    held = read_holder(ADB, SERIAL, lock_dir=tmp_path)
    assert held is not None and held.pid == holder.pid


def test_the_lock_is_per_server_and_serial(holder: subprocess.Popen[str], tmp_path: Path) -> None:
    with acquire(ADB, "OTHERSERIAL1", label="other", lock_dir=tmp_path) as other:
        assert other.held
    with acquire("127.0.0.1:5038", SERIAL, label="same serial, another adb server", lock_dir=tmp_path):
        pass
    with pytest.raises(DeviceError, match="pixel-7 spelt another way"):
        acquire("localhost:5037", SERIAL, label="pixel-7 spelt another way", lock_dir=tmp_path)
    assert lock_key("localhost:5037", SERIAL) == lock_key("127.0.0.1:5037", SERIAL) == lock_key("localhost", SERIAL)


def test_a_dead_holders_lock_is_taken_over_and_rewritten(holder: subprocess.Popen[str], tmp_path: Path) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(HOLDER_TIMEOUT_S)
    (lock_file,) = tmp_path.iterdir()
    assert json.loads(lock_file.read_text())["pid"] == holder.pid, "the dead holder's information is still there"
    lock = acquire(ADB, SERIAL, label="pixel-7", lock_dir=tmp_path)
    try:
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        assert lock.holder.pid == os.getpid()
    finally:
        lock.release()


def test_release_lets_the_next_run_in_and_never_raises(tmp_path: Path) -> None:
    lock = acquire(ADB, SERIAL, label="pixel-7", lock_dir=tmp_path)
    with pytest.raises(DeviceError, match="in use"):
        acquire(ADB, SERIAL, label="pixel-7", lock_dir=tmp_path)  # the same process, a second fixture: refused too
    lock.release()
    lock.release()
    assert not lock.held and lock.path.read_text() == ""
    assert read_holder(ADB, SERIAL, lock_dir=tmp_path) is None
    proc = subprocess.run([sys.executable, "-c", _HOLD, ADB, SERIAL, str(tmp_path)], input="", text=True,
                          capture_output=True, timeout=HOLDER_TIMEOUT_S, check=False)
    assert proc.returncode == 0 and proc.stdout == "held\n", proc.stderr


def test_an_unwritable_default_dir_falls_back_to_the_users_runtime_dir(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv(phonelock.RUN_DIR_ENV, str(blocker))  # locks would go in not-a-dir/locks: impossible
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))
    with acquire(ADB, SERIAL, label="pixel-7") as lock:
        assert lock.path.parent == tmp_path / "runtime" / "phonehome" / "locks"


def test_the_default_dir_is_under_phonehomes_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(phonelock.RUN_DIR_ENV, str(tmp_path))
    with acquire(ADB, SERIAL, label="pixel-7") as lock:
        assert lock.path.parent == tmp_path / "locks"
        assert "pixel-7" in repr(lock) and SERIAL not in repr(lock)
