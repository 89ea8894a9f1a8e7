"""The uiautomator2 backend against an adb server that is not there: polling it must stay clean.

A real bench whose adb server is down (or not yet started) makes the harness poll for the phone until its
connect timeout; each failed poll must release its socket, else the run ends in a wall of ResourceWarnings
(errors under ``filterwarnings = error``) instead of the one DeviceError that says what is wrong.
"""

from __future__ import annotations

import gc
import socket
from pathlib import Path

import pytest

from phonehome.devices.adbprobe import AdbServerStatus, query_adb_server, transport_problem
from phonehome.devices.u2 import U2Phone
from phonehome.errors import AdbServerGone, DeviceError
from phonehome.inventory import DeviceEntry, load_inventory

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_real_adb")]

POLLS = 3


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def bench_entry(tmp_path: Path) -> DeviceEntry:
    """A real-bench phone (backend uiautomator2) whose adb server is wherever the test points it."""
    inventory = tmp_path / "devices.yaml"
    inventory.write_text("""\
version: 1
devices:
  - label: bench1
    model: Pixel 7
    serial: NOSUCHSERIAL01
    backend: uiautomator2
    identifiers: {imei: "352099001761481"}
""", encoding="utf-8")
    [entry] = load_inventory(inventory).devices
    return entry


def test_polling_an_unreachable_adb_server_leaks_no_socket(tmp_path: Path) -> None:
    entry = bench_entry(tmp_path)
    port = closed_port()
    phone = U2Phone(entry, adb_port=port)
    for _ in range(POLLS):
        with pytest.raises(AdbServerGone, match=f"no adb server at 127.0.0.1:{port}: connection refused"):
            phone._transport_state()
    with pytest.raises(AdbServerGone, match="no adb server"):
        phone.connect()  # at once: a missing server is not a state to wait out
    gc.collect()  # a leaked socket's ResourceWarning surfaces here, and fails the test under filterwarnings=error


def test_adb_problems_are_told_apart() -> None:
    """Each transport problem is its own message with its own fix, serials masked (the server's list too)."""
    status = AdbServerStatus("127.0.0.1:5037", None, (("2A031FDH2005LX", "unauthorized"), ("R58M1234567", "offline")))
    assert "accept the 'Allow USB debugging'" in (transport_problem(status, "2A031FDH2005LX", "px") or "")
    assert "reconnect the USB cable" in (transport_problem(status, "R58M1234567", "sam") or "")
    absent = transport_problem(status, "NOSUCH0001", "gone") or ""
    assert "is not on the adb server at 127.0.0.1:5037" in absent
    assert "2A**********LX (unauthorized)" in absent and "2A031FDH2005LX" not in absent
    assert transport_problem(AdbServerStatus("h:1", None, (("S1234567", "device"),)), "S1234567", "ok") is None
    down = AdbServerStatus("127.0.0.1:5037", "connection refused")
    assert down.state_of("anything") == "no-server"
    assert "no adb server at 127.0.0.1:5037: connection refused" in (transport_problem(down, "X1234567", "x") or "")


def test_a_dead_adb_server_is_never_replaced_behind_the_harness(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """adbutils runs ``adb start-server`` on every refused connection; the phone's client must not, or a server
    that died mid-run would be silently replaced by an empty one (and the fault never named)."""
    started = tmp_path / "start-server-ran"
    fake_adb = tmp_path / "adb"
    fake_adb.write_text(f"#!/bin/sh\ntouch {started}\nexit 1\n", encoding="utf-8")
    fake_adb.chmod(0o755)
    monkeypatch.setenv("ADBUTILS_ADB_PATH", str(fake_adb))
    entry = bench_entry(tmp_path)
    phone = U2Phone(entry, adb_port=closed_port())
    with pytest.raises(AdbServerGone, match="no adb server"):
        phone._shell(["getprop", "ro.serialno"])
    with pytest.raises(DeviceError):
        phone.screenshot(tmp_path / "shot.png")
    phone.close()
    gc.collect()
    assert not started.exists(), "adbutils started an adb server"


def test_a_hung_adb_server_is_told_from_a_missing_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that takes connections and never answers (hung, or SIGSTOPped) is named as hung, with the fix
    that helps (restart it), not "start one"."""
    monkeypatch.setattr("phonehome.devices.u2.query_adb_server",
                        lambda host, port: query_adb_server(host, port, timeout_s=0.2))
    with socket.socket() as listening:  # the kernel completes the handshake; nobody ever reads or answers
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        port = listening.getsockname()[1]
        phone = U2Phone(bench_entry(tmp_path), adb_port=port)
        with pytest.raises(AdbServerGone) as info:
            phone._transport_state()
    message = str(info.value)
    assert f"the adb server at 127.0.0.1:{port} is hung: it takes connections but gave no answer within 0.2 s" \
        in message, message
    assert "'adb kill-server', then 'adb start-server'" in message and "start one" not in message
    gc.collect()
