"""capture.sockets: the poller on this machine's own kernel tables (a real shell, real sockets, no phone).

Linux prints /proc/net here as on a phone, so the poller, the apps-table recording and the matching are the
real ones; only the package list is missing (no ``cmd package`` on a PC), which is what a phone that fails it does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from phonehome.capture.sockets import POLL_COMMAND, AdbShell, SocketPoller
from phonehome.errors import DeviceError
from phonehome.scan.attribution import load_apps_table
from phonehome.scan.scanner import Flow
from phonehome.virtual.adbserver import AdbServer

SHELL_TIMEOUT_S = 10


def host_shell(command: str) -> str:
    """``sh -c`` on this machine: the poller's shell runner for a Linux host."""
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=SHELL_TIMEOUT_S,
                          check=False).stdout


def _flow(client: socket.socket, server_port: int, start: float) -> Flow:
    host, port = client.getsockname()[:2]
    return Flow(transport="tcp", src=host, sport=port, dst="127.0.0.1", dport=server_port, host=None,
                protocol="unknown", encrypted=False, bytes=100, frames=3, first_frame=1, first_time=start,
                last_time=start + 0.1)


def test_poller_sees_a_live_connection_and_records_it(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    poller = SocketPoller(host_shell, label="host", record=tmp_path / "apps.txt", pause_s=0.05)
    start = time.time()
    with listener, socket.create_connection(("127.0.0.1", port)) as client:
        accepted, _ = listener.accept()
        with accepted:
            poller.start()
            time.sleep(0.3)
            table = poller.stop()
        flow = _flow(client, port, start)
    assert table.snapshots >= 2  # the first poll, the thread's, and the one after stop
    assert table.owner(flow) == (os.getuid(), "seen")
    assert table.package_error is not None  # no package manager on a PC: said, not guessed
    assert "polls, median" in poller.timing()
    saved = load_apps_table(tmp_path / "apps.txt")  # the recording is a valid apps table
    assert saved.owner(flow) == (os.getuid(), "seen") and saved.snapshots == table.snapshots


def test_refusing_phone_is_said_once_and_polling_stops(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def refusing(command: str) -> str:
        if command == POLL_COMMAND:
            return "".join(f"@{t}\n/system/bin/sh: cat: /proc/net/{t}: Permission denied\n"
                            for t in ("tcp", "tcp6", "udp", "udp6"))
        return "package:android uid:1000\n"

    for run in range(2):
        poller = SocketPoller(refusing, label="refusing-phone", record=tmp_path / f"apps{run}.txt", pause_s=0.01)
        poller.start()
        time.sleep(0.05)
        table = poller.stop()
        assert not table.usable and len(poller.durations) == 1  # one poll showed the refusal: no more
    said = [r for r in caplog.records if "refuses its socket tables" in r.getMessage()]
    assert len(said) == 1


def test_failed_polls_are_counted_and_packages_read_again(tmp_path: Path) -> None:
    calls: list[str] = []
    down = {"now": False}

    def flaky(command: str) -> str:
        calls.append(command)
        if down["now"]:
            raise DeviceError("phone", "adb: device offline")
        return "package:android uid:1000\n" if "package" in command else host_shell(command)

    poller = SocketPoller(flaky, label="rebooting", record=tmp_path / "apps.txt", pause_s=60)  # no thread polls
    poller.start()
    down["now"] = True
    poller.poll()
    down["now"] = False
    poller.poll()
    poller.stop()
    assert poller.failures == ["device phone: adb: device offline"]
    assert sum("package" in c for c in calls) == 2  # once at the start, once after the phone came back


def test_package_list_is_read_once_per_run(tmp_path: Path) -> None:
    asked: list[str] = []

    def phone(command: str) -> str:
        if "package" in command:
            asked.append(command)
            return "package:com.example.app uid:10123\n"
        return host_shell(command)

    for test in range(3):  # three tests of one phone
        poller = SocketPoller(phone, label="once-per-run", record=tmp_path / f"apps{test}.txt", pause_s=60)
        poller.start()
        table = poller.stop()
        assert table.owners == {10123: ["com.example.app"]}
    assert asked == ["cmd package list packages -U 2>&1"]


def test_an_adb_error_names_the_phone_by_label_and_masks_its_serial() -> None:
    """The adb server's own refusal ("device 'SERIAL' not found") goes into the attribution report: the phone is
    named by its label and the serial is masked there (the virtual adb server answers as adb's does)."""
    server = AdbServer([])
    server.start()
    try:
        shell = AdbShell("R58M12ABCDE", label="pixel-lab", port=server.port)
        with pytest.raises(DeviceError) as info:
            shell(POLL_COMMAND)
    finally:
        server.stop()
    assert str(info.value) == "device pixel-lab: adb host: device 'R5*******DE' not found"
