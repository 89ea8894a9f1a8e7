"""Debian's ``adb`` command line against the virtual adb server: devices, shell exit codes, push/pull, reboot."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phonehome.virtual.adbserver import AdbServer
from phonehome.virtual.phone import BootTimings, VirtualPhone, VirtualPhoneSpec

FAST = BootTimings(adbd_linger_s=0.3, absent_s=0.5, offline_s=0.2, booting_s=0.3)
ADB_TIMEOUT_S = 20.0
REBOOT_WAIT_S = 15.0

pytestmark = pytest.mark.timeout(90)

ADB = shutil.which("adb")


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[list[VirtualPhone]]:
    first = VirtualPhone(VirtualPhoneSpec(serial="VIRTCLI1", label="cli1", model="Nokia 7 Plus", timings=FAST),
                         storage_dir=tmp_path / "p1")
    second = VirtualPhone(VirtualPhoneSpec(serial="VIRTCLI2", label="cli2", model="Pixel 3", timings=FAST),
                          storage_dir=tmp_path / "p2")
    yield [first, second]
    first.close()
    second.close()


@pytest.fixture
def adb(server: AdbServer, tmp_path: Path) -> Iterator[AdbRunner]:
    if ADB is None:
        pytest.fail("adb is not installed: run ci/setup.sh (Debian package 'adb')")
    yield AdbRunner(ADB, server.port, tmp_path / "home")


class AdbRunner:
    """Runs ``adb -L tcp:127.0.0.1:PORT ...``: the CLI talks to our server and never starts a daemon of its own
    (it would only try when nothing listens, and the fixture's server always does)."""

    def __init__(self, binary: str, port: int, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self._base = [binary, "-L", f"tcp:127.0.0.1:{port}"]
        self._env = {**os.environ, "ANDROID_ADB_SERVER_PORT": str(port), "HOME": str(home)}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._base, *args], capture_output=True, text=True, env=self._env,
                              timeout=ADB_TIMEOUT_S, check=False)


def test_devices_long(adb: AdbRunner) -> None:
    result = adb("devices", "-l")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "List of devices attached"
    first = next(line for line in lines if line.startswith("VIRTCLI1"))
    assert first.split()[1] == "device" and "model:Nokia_7_Plus" in first and "transport_id:" in first


def test_shell_exit_codes_and_streams(adb: AdbRunner) -> None:
    ok = adb("-s", "VIRTCLI1", "shell", "getprop", "ro.product.model")
    assert (ok.returncode, ok.stdout) == (0, "Nokia 7 Plus\n")
    assert adb("-s", "VIRTCLI2", "shell", "echo hi; exit 3").returncode == 3
    missing = adb("-s", "VIRTCLI1", "shell", "nosuch")
    assert missing.returncode == 127
    assert "nosuch: inaccessible or not found" in missing.stderr
    ambiguous = adb("shell", "true")
    assert ambiguous.returncode != 0 and "more than one device" in ambiguous.stderr


def test_push_pull(adb: AdbRunner, tmp_path: Path, phones: list[VirtualPhone]) -> None:
    local = tmp_path / "blob.bin"
    payload = os.urandom(300_000)
    local.write_bytes(payload)
    pushed = adb("-s", "VIRTCLI1", "push", str(local), "/data/local/tmp/sub/blob.bin")
    assert pushed.returncode == 0, pushed.stderr
    md5 = adb("-s", "VIRTCLI1", "shell", "md5sum", "/data/local/tmp/sub/blob.bin")
    assert md5.stdout.split()[0] == hashlib.md5(payload).hexdigest()
    back = tmp_path / "back.bin"
    pulled = adb("-s", "VIRTCLI1", "pull", "/data/local/tmp/sub/blob.bin", str(back))
    assert pulled.returncode == 0, pulled.stderr
    assert back.read_bytes() == payload
    denied = adb("-s", "VIRTCLI1", "push", str(local), "/system/blob.bin")
    assert denied.returncode == 1 and "Read-only file system" in denied.stdout + denied.stderr
    assert adb("-s", "VIRTCLI1", "pull", "/data/local/tmp/none", str(back)).returncode == 1
    assert not phones[1].fs.stat("/data/local/tmp/sub/blob.bin").exists


def test_reboot_and_wait_for_device(adb: AdbRunner) -> None:
    old_boot = adb("-s", "VIRTCLI1", "shell", "cat", "/proc/sys/kernel/random/boot_id").stdout
    assert adb("-s", "VIRTCLI1", "reboot").returncode == 0
    deadline = time.monotonic() + REBOOT_WAIT_S
    while "VIRTCLI1" in adb("devices").stdout:  # a USB phone vanishes from the list
        assert time.monotonic() < deadline, "the phone never left adb devices"
        time.sleep(0.1)
    waited = adb("-s", "VIRTCLI1", "wait-for-device")
    assert waited.returncode == 0, waited.stderr
    while adb("-s", "VIRTCLI1", "shell", "getprop", "sys.boot_completed").stdout.strip() != "1":
        assert time.monotonic() < deadline, "boot never completed"
        time.sleep(0.1)
    assert adb("-s", "VIRTCLI1", "shell", "cat", "/proc/sys/kernel/random/boot_id").stdout != old_boot
