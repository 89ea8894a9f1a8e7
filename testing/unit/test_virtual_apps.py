"""The virtual phone shows who sends: its package list with UIDs, and /proc/net tables from real sockets.

The phone's /proc/net is served from a real network namespace's tables (in the lab, the firmware runner's); here
from this machine's own, with a socket opened under an app's UID exactly as the runner opens one.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from phonehome.capture.sockets import POLL_COMMAND
from phonehome.scan.attribution import parse_apps_table, parse_package_list
from phonehome.scan.scanner import Flow
from phonehome.virtual.appsockets import app_socket, package_uids
from phonehome.virtual.phone import VirtualPhone, VirtualPhoneSpec
from phonehome.virtual.shell import Shell

APPS = {"com.qualcomm.qti.autoregistration": 10087, "com.hmdglobal.app.fota": 1000}


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[VirtualPhone]:
    p = VirtualPhone(VirtualPhoneSpec(serial="VIRT0002", label="virtual-2", model="Nokia 7 Plus"),
                     storage_dir=tmp_path, apps=APPS, net_proc=Path("/proc/self/net"))
    yield p
    p.close()


def sh(phone: VirtualPhone, line: str) -> str:
    out: list[bytes] = []
    Shell(phone).run(line, out.append, out.append)
    return b"".join(out).decode()


def test_package_list_with_uids_as_aosp_prints_it(phone: VirtualPhone) -> None:
    text = sh(phone, "cmd package list packages -U")
    assert "package:com.qualcomm.qti.autoregistration uid:10087\n" in text
    owners = parse_package_list(text)
    assert sorted(owners[1000]) == ["android", "com.android.providers.settings", "com.android.settings",
                                    "com.hmdglobal.app.fota"]
    assert owners[1001] == ["com.android.phone"]
    assert "uid:" not in sh(phone, "pm list packages")  # without -U, as on a phone


def test_fresh_uids_never_collide() -> None:
    uids = package_uids({"com.a": 10100}, ("com.a", "com.b", "com.c"))
    assert uids["com.a"] == 10100 and len({uids["com.b"], uids["com.c"], 10100}) == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="opening a socket under another UID needs root (as the lab)")
def test_proc_net_is_the_namespaces_real_table_with_app_uids(phone: VirtualPhone) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = app_socket(socket.AF_INET, socket.SOCK_STREAM, 10087)
        with client:
            client.connect(listener.getsockname())
            text = sh(phone, POLL_COMMAND)  # the poller's own batched command
            sport, dport = client.getsockname()[1], listener.getsockname()[1]
    table = parse_apps_table(text)
    flow = Flow(transport="tcp", src="127.0.0.1", sport=sport, dst="127.0.0.1", dport=dport, host=None,
                protocol="unknown", encrypted=False, bytes=0, frames=1, first_frame=1, first_time=0.0, last_time=0.0)
    assert table.owner(flow) == (10087, "seen")
    assert not table.refused


def test_a_phone_without_firmware_has_empty_tables(tmp_path: Path) -> None:
    quiet = VirtualPhone(VirtualPhoneSpec(serial="VIRT0003", label="virtual-3", model="M"), storage_dir=tmp_path)
    try:
        text = sh(quiet, "cat /proc/net/tcp6")
        assert text.startswith("  sl  local_address") and text.count("\n") == 1
    finally:
        quiet.close()
