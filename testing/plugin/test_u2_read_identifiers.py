"""The uiautomator2 backend reads a phone's identifiers through adb, in the formats of the phone's release.

Four virtual phones, one per release style (Android 9, 11, 13, 14), on the virtual adb server: what each release
lets the shell read is read and checked, what it refuses (device identifiers from Android 10, the Wi-Fi MAC
from 11) is "not readable" and left to the inventory, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from phonehome.devices.u2 import U2Phone
from phonehome.identifiers import Cell, Identifiers, Location, Wifi
from phonehome.inventory import load_inventory
from phonehome.virtual.adbserver import AdbServer
from phonehome.virtual.phone import BootTimings, VirtualPhone, VirtualPhoneSpec

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_real_adb")]

FAST = BootTimings(adbd_linger_s=0.1, absent_s=0.1, offline_s=0.1, booting_s=0.1)
IDS = Identifiers(values=(("imei", "352099001761481"), ("imsi", "310260000000000"),
                          ("iccid", "8901260000000000001"), ("serial", "R58M12ABCDE"), ("phone", "+4930123456"),
                          ("android_id", "9774d56d682e549c"), ("wifi_mac", "ac:37:43:4d:5e:6f"),
                          ("bt_mac", "ac:37:43:4d:5e:70")),
                  locations=(Location(52.5163, 13.3777),),
                  cells=(Cell(mcc="262", mnc="01", lac=21013, cid=27115023),),
                  wifis=(Wifi(bssid="ac:37:43:00:11:22", ssid="Lab-Net 5G"),))
RELEASES = {"9": 28, "11": 30, "13": 33, "14": 34}
READ = ("serial", "android_id", "wifi_mac", "bt_mac", "imei", "imsi", "iccid", "phone", "location", "cell", "wifi")
ALWAYS = {"serial": "getprop ro.serialno", "android_id": "settings get secure android_id",
          "bt_mac": "settings get secure bluetooth_address", "location": "dumpsys location",
          "wifi": "dumpsys wifi"}


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[list[VirtualPhone]]:
    made = [VirtualPhone(VirtualPhoneSpec(serial=f"VREAD{sdk}", label=f"android{release}", model="Read Phone",
                                          identifiers=IDS, android_release=release, sdk=sdk, timings=FAST),
                         storage_dir=tmp_path / release)
            for release, sdk in RELEASES.items()]
    yield made
    for phone in made:
        phone.close()


def backend(tmp_path: Path, server: AdbServer, phone: VirtualPhone) -> U2Phone:
    inventory = tmp_path / f"{phone.spec.label}.yaml"
    inventory.write_text(f"""\
version: 1
devices:
  - label: {phone.spec.label}
    model: Read Phone
    serial: {phone.spec.serial}
    backend: uiautomator2
    read_identifiers: [{", ".join(READ)}]
""", encoding="utf-8")
    [entry] = load_inventory(inventory).devices
    return U2Phone(entry, adb_port=server.port)


def test_each_release_gives_what_its_shell_may_read(tmp_path: Path, server: AdbServer,
                                                    phones: list[VirtualPhone]) -> None:
    for phone in phones:
        reader = backend(tmp_path, server, phone)
        read, sources = reader.read_identifiers()
        expected = dict(ALWAYS)
        if phone.spec.sdk < 29:  # device identifiers are the shell's before Android 10
            expected.update({"imei": "service call iphonesubinfo 1", "imsi": "service call iphonesubinfo 7",
                             "iccid": "service call iphonesubinfo 11", "phone": "service call iphonesubinfo 13"})
        if phone.spec.sdk < 30:  # the Wi-Fi MAC until Android 11
            expected["wifi_mac"] = "/sys/class/net/wlan0/address"
        if phone.spec.sdk < 33:  # the serving cell until the virtual phone's style 13 redacts it
            expected["cell"] = "dumpsys telephony.registry"
        assert sources == expected, phone.spec.label
        assert read.wifis == IDS.wifis
        assert read.cells == (IDS.cells if "cell" in expected else ())
        assert read.get("serial") == ("R58M12ABCDE",)
        assert read.locations == (Location(52.5163, 13.3777),)
        if "imei" in expected:
            assert read.get("imei") == ("352099001761481",)
            assert read.get("phone") == ("+4930123456",)
        else:  # the phone's refusal is what the report says, not a bare "not readable"
            assert reader.unreadable["imei"] == (
                "service call iphonesubinfo 1 s16 com.android.shell raised SecurityException: getDeviceId: The user "
                "2000 does not meet the requirements to access device identifiers.")


def test_one_value_read_for_two_identifiers_is_neither(tmp_path: Path) -> None:
    """A transaction code that answered for another getter (a build that added methods to IPhoneSubInfo) gives
    one value for two identifiers: an IMEI read as the IMSI too is read as neither, and why is said."""
    imei = "352099001761481"
    phone = VirtualPhone(VirtualPhoneSpec(serial="VREAD28X", label="android9-shifted", model="Read Phone",
                                          identifiers=Identifiers(values=(("imei", imei), ("imsi", imei))),
                                          android_release="9", sdk=28, timings=FAST), storage_dir=tmp_path / "9")
    server = AdbServer([phone])
    server.start()
    try:
        reader = backend(tmp_path, server, phone)
        read, sources = reader.read_identifiers()
    finally:
        server.stop()
        phone.close()
    assert read.get("imei") == () and read.get("imsi") == ()
    assert "imei" not in sources and "imsi" not in sources
    assert reader.unreadable["imsi"] == ("service call iphonesubinfo 7 gave the value read as imei too (this "
                                         "build's IPhoneSubInfo transaction codes differ from Android's?): not read")
    assert imei not in " ".join(reader.unreadable.values())


def test_a_dumpsys_that_fails_is_said_so(tmp_path: Path, server: AdbServer, phones: list[VirtualPhone]) -> None:
    """A service whose dump fails (hung, crashed: the lab's phonehome.fault.dumpsys) is 'failed', not a phone
    with no location; the other identifiers are read as ever."""
    phone = phones[-1]
    phone.setprop("phonehome.fault.dumpsys", "location")
    reader = backend(tmp_path, server, phone)
    read, sources = reader.read_identifiers()
    assert reader.unreadable["location"] == "dumpsys location failed"
    assert read.locations == () and "location" not in sources
    assert read.wifis == IDS.wifis and sources["wifi"] == "dumpsys wifi"
