"""The virtual adb server against the real adbutils: host services, shell v1/v2, sync, forwards, reboots."""

from __future__ import annotations

import http.client
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import adbutils
import pytest

from phonehome.virtual.adbserver import AdbServer
from phonehome.virtual.phone import BootTimings, VirtualPhone, VirtualPhoneSpec
from phonehome.virtual.u2server import U2Server

FAST = BootTimings(adbd_linger_s=0.3, absent_s=0.3, offline_s=0.2, booting_s=0.3)
#: how long a test waits for a virtual reboot with FAST timings
REBOOT_WAIT_S = 10.0

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("no_real_adb")]


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[list[VirtualPhone]]:
    usb = VirtualPhone(VirtualPhoneSpec(serial="VIRTUSB1", label="usb", model="Nokia 7 Plus", timings=FAST),
                       storage_dir=tmp_path / "usb")
    tcp = VirtualPhone(VirtualPhoneSpec(serial="127.0.0.1:5555", label="tcp", model="Pixel 3", transport="tcp",
                                        timings=FAST), storage_dir=tmp_path / "tcp")
    yield [usb, tcp]
    usb.close()
    tcp.close()


@pytest.fixture
def client(server: AdbServer) -> adbutils.AdbClient:
    return adbutils.AdbClient(host="127.0.0.1", port=server.port)


def host_request(client: adbutils.AdbClient, request: str) -> None:
    """Send one request on a connection that is closed whatever happens (adbutils' open_transport leaks its
    socket when the server answers FAIL, which ``filterwarnings = error`` turns into a failure elsewhere)."""
    with client.make_connection() as conn:
        conn.send_command(request)
        conn.check_okay()


def test_version_and_devices(client: adbutils.AdbClient) -> None:
    assert client.server_version() == 41
    infos = {info.serial: info for info in client.list(extended=True)}
    assert set(infos) == {"VIRTUSB1", "127.0.0.1:5555"}
    assert infos["VIRTUSB1"].state == "device"
    assert infos["VIRTUSB1"].tags["model"] == "Nokia_7_Plus"
    assert "usb" in infos["VIRTUSB1"].tags and "usb" not in infos["127.0.0.1:5555"].tags
    assert [d.serial for d in client.device_list()] == ["VIRTUSB1", "127.0.0.1:5555"]


def test_host_serial_queries_work_with_colons_in_the_serial(client: adbutils.AdbClient) -> None:
    tcp = client.device("127.0.0.1:5555")
    assert tcp.get_state() == "device"
    assert tcp.get_serialno() == "127.0.0.1:5555"
    assert tcp.get_features() == "shell_v2,fixed_push_mkdir"
    with pytest.raises(adbutils.AdbError, match="device 'NOPE' not found"):
        host_request(client, "host-serial:NOPE:get-state")


def test_shell_exit_codes_v1_and_v2(client: adbutils.AdbClient) -> None:
    dev = client.device("VIRTUSB1")
    result = dev.shell2("getprop ro.product.model; false")
    assert (result.output, result.returncode) == ("Nokia 7 Plus\n", 1)
    result = dev.shell2(["echo", "a b", "&"])
    assert (result.output, result.returncode) == ("a b &\n", 0)
    v2 = dev.shell2("echo out; nosuch", v2=True)
    assert (v2.stdout, v2.returncode) == ("out\n", 127)
    assert "nosuch: inaccessible or not found" in v2.stderr
    assert dev.shell("echo hi") == "hi"


def test_sync_push_stat_list_pull_and_persistence_across_reboot(client: adbutils.AdbClient, tmp_path: Path,
                                                                phones: list[VirtualPhone]) -> None:
    dev = client.device("VIRTUSB1")
    payload = bytes(range(256)) * 1000  # several DATA chunks
    assert dev.sync.push(payload, "/data/local/tmp/dir/blob.bin", check=True) == len(payload)
    info = dev.sync.stat("/data/local/tmp/dir/blob.bin")
    assert info.size == len(payload)
    assert dev.sync.exists("/data/local/tmp/dir") and not dev.sync.exists("/data/local/tmp/none")
    assert "blob.bin" in [entry.path for entry in dev.sync.list("/data/local/tmp/dir")]
    dev.sync.pull("/data/local/tmp/dir/blob.bin", tmp_path / "pulled.bin")
    assert (tmp_path / "pulled.bin").read_bytes() == payload
    with pytest.raises(adbutils.AdbError):
        dev.sync.push(b"x", "/system/bin/evil")  # adbutils closes its sync connection itself
    with pytest.raises(adbutils.AdbError, match="No such file"):
        dev.sync.read_bytes("/data/local/tmp/none")

    phones[0].reboot()
    assert phones[0].wait_boot_completed(REBOOT_WAIT_S)
    assert client.device("VIRTUSB1").sync.read_bytes("/data/local/tmp/dir/blob.bin") == payload


def test_tcp_stream_and_forward_with_a_real_local_listener(client: adbutils.AdbClient,
                                                          phones: list[VirtualPhone]) -> None:
    dev = client.device("VIRTUSB1")
    with pytest.raises(adbutils.AdbError, match="closed"):
        dev.create_connection(adbutils.Network.TCP, 9008)
    server = U2Server(phones[0], 9008)
    assert server.start()
    local_port = dev.forward_port(9008)
    assert any(f.local == f"tcp:{local_port}" and f.remote == "tcp:9008" for f in dev.forward_list())
    conn = http.client.HTTPConnection("127.0.0.1", local_port, timeout=5)
    conn.request("GET", "/ping")
    assert conn.getresponse().read() == b"pong"
    conn.close()
    dev.forward_remove(f"tcp:{local_port}")
    assert dev.forward_list() == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", local_port)) != 0
    server.stop()


def test_exec_out_and_legacy_transport(client: adbutils.AdbClient) -> None:
    with client.make_connection() as conn:  # servers before version 41: host:transport, no transport id
        conn.send_command("host:transport:VIRTUSB1")
        conn.check_okay()
        conn.send_command("exec:getprop ro.product.model")
        conn.check_okay()
        assert conn.read_until_close() == "Nokia 7 Plus\n"


def test_forward_norebind_and_killforward_all(client: adbutils.AdbClient) -> None:
    dev = client.device("VIRTUSB1")
    port = adbutils._utils.get_free_port()
    dev.forward(f"tcp:{port}", "tcp:9008")
    with pytest.raises(adbutils.AdbError, match="cannot rebind"):
        host_request(client, f"host-serial:VIRTUSB1:forward:norebind:tcp:{port};tcp:9009")
    dev.forward(f"tcp:{port}", "tcp:9009")  # rebinding is allowed without norebind
    assert [(f.local, f.remote) for f in dev.forward_list()] == [(f"tcp:{port}", "tcp:9009")]
    dev.forward_remove_all()
    assert dev.forward_list() == []


def _track(client: adbutils.AdbClient, snapshots: list[dict[str, str]], stop: threading.Event) -> None:
    """Record every ``host:track-devices`` update as {serial: state} (adbutils' own track_devices() turns a
    state change into absent + new state, which would hide the difference between USB and TCP)."""
    with client.make_connection(timeout=0.5) as conn:
        conn.send_command("host:track-devices")
        conn.check_okay()
        while not stop.is_set():
            try:
                block = conn.read_string_block()
            except adbutils.AdbTimeout:
                continue
            except (adbutils.AdbError, OSError, ValueError):
                return
            snapshots.append(dict(line.split("\t", 1) for line in block.splitlines() if "\t" in line))


@pytest.mark.parametrize(("serial", "expected"), [
    ("VIRTUSB1", ["absent", "offline", "device"]),
    ("127.0.0.1:5555", ["offline", "device"]),
])
def test_reboot_as_track_devices_and_wait_for_see_it(client: adbutils.AdbClient, phones: list[VirtualPhone],
                                                    serial: str, expected: list[str]) -> None:
    snapshots: list[dict[str, str]] = []
    stop = threading.Event()
    tracker = threading.Thread(target=_track, args=(client, snapshots, stop), daemon=True)
    tracker.start()
    time.sleep(0.3)
    dev = client.device(serial)
    old_boot = dev.shell("cat /proc/sys/kernel/random/boot_id")
    dev.reboot()  # adbutils: shell("reboot"), which ends when adbd dies
    deadline = time.monotonic() + REBOOT_WAIT_S
    while time.monotonic() < deadline:
        state = next((i.state for i in client.list() if i.serial == serial), "absent")
        if state != "device":
            break
        time.sleep(0.05)
    with pytest.raises(adbutils.AdbError, match=r"not found|offline"):
        host_request(client, f"host:tport:serial:{serial}")
    client.wait_for(serial, state="device", timeout=REBOOT_WAIT_S)
    while dev.getprop("sys.boot_completed") != "1":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert dev.shell("cat /proc/sys/kernel/random/boot_id") != old_boot
    stop.set()
    tracker.join(5)
    mine = [snapshot.get(serial, "absent") for snapshot in snapshots]
    assert mine[0] == "device"  # the initial list
    # the boot as a sequence of changes (a TCP phone never leaves the list, it only goes offline)
    changes = [state for i, state in enumerate(mine[1:]) if state != mine[i]]
    assert changes == expected


def test_wait_for_disconnect_and_tport_errors(client: adbutils.AdbClient, phones: list[VirtualPhone]) -> None:
    with pytest.raises(adbutils.AdbError, match="more than one device"):
        host_request(client, "host:tport:any")
    phones[0].reboot()
    client.wait_for("VIRTUSB1", state="disconnect", timeout=REBOOT_WAIT_S)
    assert "VIRTUSB1" not in [i.serial for i in client.list()]
    with pytest.raises(adbutils.AdbError, match="not found"):
        host_request(client, "host:tport:serial:VIRTUSB1")
    assert phones[0].wait_boot_completed(REBOOT_WAIT_S)


def test_stop_closes_everything(phones: list[VirtualPhone]) -> None:
    before = {t.name for t in threading.enumerate()}
    srv = AdbServer(phones)
    srv.start()
    client = adbutils.AdbClient(host="127.0.0.1", port=srv.port)
    stream = client.device("VIRTUSB1").shell("logcat", stream=True)  # a long-running stream
    tracker = threading.Thread(target=_track, args=(client, [], threading.Event()), daemon=True)
    tracker.start()
    time.sleep(0.3)
    srv.stop()
    srv.stop()  # twice is fine
    tracker.join(5)
    assert not tracker.is_alive()
    assert stream.read_until_close() is not None
    stream.close()
    leftover = {t.name for t in threading.enumerate()} - before
    assert not [name for name in leftover if name.startswith("adb")]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", srv.port)) != 0


def test_unknown_serial_with_colons_is_named_in_the_error(client: adbutils.AdbClient) -> None:
    with pytest.raises(adbutils.AdbError, match=re.escape("device '10.0.0.9:5555' not found")):
        host_request(client, "host-serial:10.0.0.9:5555:get-state")


def test_debug_log_never_shows_a_typed_pin(client: adbutils.AdbClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="phonehome")
    dev = client.device("VIRTUSB1")
    assert dev.shell2("input keyevent 224; input text 836215; input keyevent 66", v2=True).returncode == 0
    assert dev.shell2("input text 836215").returncode == 0
    assert "adb request" in caplog.text  # the server did log the requests
    assert "836215" not in caplog.text


def test_refused_push_leaves_nothing_and_keeps_the_connection_usable(client: adbutils.AdbClient,
                                                                     phones: list[VirtualPhone]) -> None:
    dev = client.device("VIRTUSB1")
    dev.sync.push(b"old", "/data/local/tmp/kept.txt")
    with pytest.raises(adbutils.AdbError):
        dev.sync.push(b"x" * 200_000, "/data/local/tmp/kept.txt/below")  # a parent that is a file
    with pytest.raises(adbutils.AdbError):
        dev.sync.push(b"x" * 200_000, "/proc/evil")
    assert dev.sync.read_bytes("/data/local/tmp/kept.txt") == b"old"
    names = [entry.path for entry in dev.sync.list("/data/local/tmp")]
    assert not [n for n in names if ".push-" in n]


def test_wait_for_disconnect_of_a_tcp_phone_and_of_an_absent_one(client: adbutils.AdbClient,
                                                                 phones: list[VirtualPhone]) -> None:
    client.wait_for("NOTHERE", state="disconnect", timeout=2)  # never connected: already disconnected
    phones[1].reboot()
    client.wait_for("127.0.0.1:5555", state="disconnect", timeout=REBOOT_WAIT_S)  # offline, new transport
    assert phones[1].wait_boot_completed(REBOOT_WAIT_S)


def test_adbutils_dump_hierarchy_and_app_current(client: adbutils.AdbClient) -> None:
    dev = client.device("VIRTUSB1")
    dev.keyevent(224)
    xml = dev.dump_hierarchy()  # uiautomator dump to a file, then a sync pull
    assert xml.startswith("<?xml") and "com.android.launcher3" in xml
    assert dev.app_current().package == "com.android.launcher3"
    assert dev.is_screen_on() and dev.rotation() == 0
    assert dev.window_size() == (1080, 2160)


def test_a_transport_fault_makes_the_phone_unauthorized_or_offline(client: adbutils.AdbClient) -> None:
    """``setprop phonehome.fault.transport unauthorized|offline``: the phone lost mid-test, as the adb server
    shows it (listed in that state, services refused with adb's own words), for fault rehearsals."""
    for serial, fault in (("VIRTUSB1", "unauthorized"), ("127.0.0.1:5555", "offline")):
        assert client.device(serial).shell2(["setprop", "phonehome.fault.transport", fault]).returncode == 0
        deadline = time.monotonic() + REBOOT_WAIT_S
        while dict((info.serial, info.state) for info in client.list())[serial] != fault:
            assert time.monotonic() < deadline, f"{serial} never became {fault}"
            time.sleep(0.05)
        wording = r"device unauthorized\.\nThis adb server's \$ADB_VENDOR_KEYS is not set" if fault == "unauthorized" \
            else "device offline"
        with pytest.raises(adbutils.AdbError, match=wording):
            host_request(client, f"host:tport:serial:{serial}")
