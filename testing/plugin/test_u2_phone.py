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

from phonehome.devices.u2 import U2Phone
from phonehome.inventory import load_inventory

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_real_adb")]

POLLS = 3


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_polling_an_unreachable_adb_server_leaks_no_socket(tmp_path: Path) -> None:
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
    phone = U2Phone(entry, adb_port=closed_port())
    for _ in range(POLLS):
        assert phone._transport_state() == "absent"
    gc.collect()  # a leaked socket's ResourceWarning surfaces here, and fails the test under filterwarnings=error
