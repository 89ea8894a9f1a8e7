"""The real uiautomator2 drives a virtual phone through the virtual adb server, as it drives a USB phone."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import adbutils
import pytest
import uiautomator2 as u2
from PIL import Image

from phonehome.virtual.adbserver import AdbServer
from phonehome.virtual.phone import BootTimings, VirtualPhone, VirtualPhoneSpec
from phonehome.virtual.u2server import U2Server

PIN = "2580"
SERIAL = "VIRTU2001"
FAST = BootTimings(adbd_linger_s=0.3, absent_s=0.3, offline_s=0.2, booting_s=0.3)
REBOOT_WAIT_S = 15.0

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_real_adb")]


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[VirtualPhone]:
    spec = VirtualPhoneSpec(serial=SERIAL, label="u2", model="Nokia 7 Plus", manufacturer="HMD Global",
                            unlock_method="pin", unlock_secret=PIN, timings=FAST)
    p = VirtualPhone(spec, storage_dir=tmp_path)
    yield p
    p.close()


@pytest.fixture
def phones(phone: VirtualPhone) -> list[VirtualPhone]:
    """The one phone, for the shared ``server`` fixture (conftest.py)."""
    return [phone]


@pytest.fixture
def device(server: AdbServer) -> Iterator[u2.Device]:
    """uiautomator2 on the virtual server: hand it an AdbDevice bound to our client (no global state)."""
    d = u2.connect(adbutils.AdbClient(host="127.0.0.1", port=server.port).device(SERIAL))
    yield d
    d.stop_uiautomator(wait=False)


def test_connect_pushes_the_jar_and_starts_the_server_through_app_process(device: u2.Device,
                                                                         phone: VirtualPhone) -> None:
    assert phone.fs.stat("/data/local/tmp/u2.jar").size > 1_000_000  # the real jar, pushed by sync
    assert phone.port_handler(9008) is not None
    info = device.info
    assert info["productName"] == "nokia_7_plus"
    assert (info["displayWidth"], info["displayHeight"], info["sdkInt"]) == (1080, 2160, 28)
    assert info["screenOn"] is False
    assert device.device_info["model"] == "Nokia 7 Plus"
    assert device.window_size() == (1080, 2160)


def test_screen_on_off_and_pin_unlock(device: u2.Device, phone: VirtualPhone) -> None:
    device.screen_on()
    assert device.info["screenOn"] is True
    assert device.info["currentPackageName"] == "com.android.systemui"
    device.swipe(0.5, 0.9, 0.5, 0.2)  # brings up the bouncer
    assert device(resourceId="com.android.systemui:id/key5").exists
    assert device.shell("input text 1111 && input keyevent 66").exit_code == 0
    assert phone.wrong_unlock_attempts == 1 and phone.locked
    assert device.shell(f"input text {PIN} && input keyevent 66").exit_code == 0
    assert not phone.locked
    assert device.app_current()["package"] == "com.android.launcher3"
    assert device(text="Chrome").exists
    device.screen_off()
    assert device.info["screenOn"] is False and phone.locked


def test_pin_typed_on_the_keys_seen_in_the_hierarchy(device: u2.Device, phone: VirtualPhone) -> None:
    device.press("power")
    device.swipe(0.5, 0.9, 0.5, 0.2)
    for digit in PIN:
        device(resourceId=f"com.android.systemui:id/key{digit}").click()
    device(resourceId="com.android.systemui:id/key_enter").click()
    assert not phone.locked


def test_shell_exit_codes(device: u2.Device) -> None:
    assert device.shell("getprop ro.product.model") == ("Nokia 7 Plus\n", 0)
    assert device.shell(["ls", "/no such dir"]).exit_code == 1
    assert device.shell("nosuch").exit_code == 127


# adbutils 2.12 leaks the socket of a transport request that the server answers FAIL (device absent or offline,
# as during every reboot); the leak is the library's, so its ResourceWarning is not this test's failure.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_reboot_new_boot_id_and_boot_completed(device: u2.Device, phone: VirtualPhone) -> None:
    old_boot = device.shell("cat /proc/sys/kernel/random/boot_id").output.strip()
    with pytest.raises(u2.AdbShellError):  # like a real phone: the shell dies before its exit marker
        device.shell("reboot")
    deadline = time.monotonic() + REBOOT_WAIT_S
    while True:
        assert time.monotonic() < deadline, "no new boot"
        try:
            boot = device.shell("cat /proc/sys/kernel/random/boot_id").output.strip()
            if boot != old_boot and device.shell("getprop sys.boot_completed").output.strip() == "1":
                break
        except u2.AdbShellError:
            pass  # absent or offline while rebooting
        time.sleep(0.2)
    assert phone.port_handler(9008) is None  # the server died with the apps
    assert device.info["screenOn"] is False  # uiautomator2 restarts its server by itself
    assert phone.port_handler(9008) is not None


def test_screenshot_and_hierarchy(device: u2.Device) -> None:
    device.screen_on()
    image = device.screenshot()
    assert image.size == (1080, 2160)
    assert image.getpixel((5, 1000)) != (0, 0, 0)
    png = device.adb_device.shell(["screencap", "-p"], encoding=None)
    assert Image.open(io.BytesIO(png)).format == "PNG"
    xml = device.dump_hierarchy()
    assert xml.startswith("<?xml") and 'resource-id="com.android.systemui:id/keyguard_host_view"' in xml


def test_unknown_method_is_json_rpc_32601(phone: VirtualPhone) -> None:
    server = U2Server(phone)
    reply = server.call({"jsonrpc": "2.0", "id": 7, "method": "noSuchMethod", "params": []})
    assert reply == {"jsonrpc": "2.0", "id": 7,
                     "error": {"code": -32601, "message": "Method not found: noSuchMethod"}}
    reply = server.call({"jsonrpc": "2.0", "id": 8, "method": "objInfo", "params": [{"text": "Nope"}]})
    assert reply["error"]["code"] == -32002 and "UiObjectNotFoundException" in reply["error"]["message"]
    assert json.dumps(server.call({"jsonrpc": "2.0", "id": 9, "method": "deviceInfo"}))


def test_u2_error_from_server_surfaces_as_rpc_error(device: u2.Device) -> None:
    with pytest.raises(u2.RPCUnknownError, match="-32601"):
        device.jsonrpc.noSuchMethod()


def test_password_set_text_then_enter(tmp_path: Path) -> None:
    spec = VirtualPhoneSpec(serial="VIRTPW01", label="pw", model="Pixel 3", unlock_method="password",
                            unlock_secret="hunter22", timings=FAST)
    phone = VirtualPhone(spec, storage_dir=tmp_path)
    srv = AdbServer([phone])
    srv.start()
    try:
        d = u2.connect(adbutils.AdbClient(host="127.0.0.1", port=srv.port).device("VIRTPW01"))
        d.unlock()  # uiautomator2's own unlock: power + swipe up, which only brings up the bouncer here
        assert phone.screen_on and phone.locked
        field = d(resourceId="com.android.systemui:id/passwordEntry")
        field.set_text("wrong")
        d.press("enter")
        assert phone.locked and phone.wrong_unlock_attempts == 1
        field.set_text("hunter22")
        d.press("enter")
        assert not phone.locked
        d.stop_uiautomator(wait=False)
    finally:
        srv.stop()
        phone.close()


def test_closing_the_app_process_stream_stops_the_server(device: u2.Device, phone: VirtualPhone) -> None:
    assert phone.port_handler(9008) is not None
    device.stop_uiautomator(wait=True)  # closes the app_process stream, then waits for /ping to fail
    assert phone.port_handler(9008) is None
    assert device.info["sdkInt"] == 28  # the next call starts it again
    assert phone.port_handler(9008) is not None


def test_a_crashed_server_is_restarted_by_the_next_call(device: u2.Device, phone: VirtualPhone) -> None:
    """``setprop phonehome.fault.u2_crash 1`` kills the running uiautomator2 server once (a fault rehearsal):
    uiautomator2's next call restarts it, as it does on a real phone."""
    assert phone.port_handler(9008) is not None
    assert phone.setprop("phonehome.fault.u2_crash", "1")
    deadline = time.monotonic() + REBOOT_WAIT_S
    while phone.port_handler(9008) is not None:
        assert time.monotonic() < deadline, "the server did not crash"
        time.sleep(0.05)
    assert phone.getprop("phonehome.fault.u2_crash") == ""  # once
    assert device.info["sdkInt"] == 28
    assert phone.port_handler(9008) is not None
