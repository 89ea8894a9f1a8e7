"""The whole virtual lab through its API and its command: daemon, virtual phones behind the adb server, firmware
driven by the phones' own lifecycle events, capture on the lab interface, and nothing left behind (needs root)."""

from __future__ import annotations

import base64
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import Dumpcap, instance_name, tshark_fields

from phonehome.errors import InputError, LabError
from phonehome.identifiers import Identifiers, mask, parse_identifiers
from phonehome.virtual import netlab
from phonehome.virtual.lab import Lab, LabDevice, LabState
from phonehome.virtual.phone import BootTimings, VirtualPhoneSpec

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the virtual lab needs root (run the project tests with sudo)"),
    pytest.mark.skipif(shutil.which("dumpcap") is None or shutil.which("tshark") is None,
                       reason="dumpcap/tshark not installed (ci/setup.sh installs them)"),
]

CHILD_TIMEOUT_S = 30.0
#: the daemon notices a dead child within its watchdog interval and then tears down
WATCHDOG_GRACE_S = 15.0
FIRMWARE = Path(__file__).parents[2] / "fixtures" / "firmware"
PIN = "4711"

NOKIA_IDS = parse_identifiers({
    "imei": ["352099001761481", "352099001761499"], "imsi": "242017100000001", "iccid": "8947080012345678901",
    "serial": "B2NGAA8801234567", "phone": "+4791234567", "android_id": "9774d56d682e549c",
    "wifi_mac": "02:1a:11:f0:00:01", "location": {"lat": 59.9127, "lon": 10.7461},
    "cell": [{"mcc": "242", "mnc": "01", "lac": 3011, "cid": 27115023}, {"bsid": 3721}],
}, source="test")
CLEAN_IDS = parse_identifiers({"imei": "356938035643809", "serial": "CLEAN0001", "wifi_mac": "02:1a:11:f0:00:04"},
                              source="test")


def spec(serial: str, label: str, ids: Identifiers, unlock_method: str = "none",
         unlock_secret: str | None = None) -> VirtualPhoneSpec:
    fast = BootTimings(adbd_linger_s=0.2, absent_s=0.2, offline_s=0.1, booting_s=0.3)
    return VirtualPhoneSpec(serial=serial, label=label, model="Nokia 7 Plus", identifiers=ids, timings=fast,
                            unlock_method=unlock_method, unlock_secret=unlock_secret)


def recorded_pids(instance: str) -> list[int]:
    state = netlab.StateFile.load(instance)
    assert state is not None
    return [state.owner_pid, *(p.pid for p in state.processes)]


def assert_nothing_left(state: LabState, pids: list[int]) -> None:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    for phone in state.phones:
        assert phone.netns not in namespaces
        assert f" {phone.interface}:" not in links and f" {phone.interface}@" not in links
    assert f"phonehome-{state.instance}-net" not in namespaces
    for pid in pids:
        assert netlab.process_start_time(pid) is None, f"pid {pid} still runs"
    assert not netlab.state_path(state.instance).exists()
    assert Lab.status(state.instance) is None


def adb_device(state: LabState, serial: str) -> object:
    import adbutils

    return adbutils.AdbClient(host=state.adb_host, port=state.adb_port).device(serial)


@pytest.fixture
def lab() -> Iterator[LabState]:
    """A lab with the 2019 Nokia (PIN-locked) and a clean phone."""
    instance = instance_name()
    devices = [LabDevice(spec("VNOKIA0001", "nokia", NOKIA_IDS, unlock_method="pin", unlock_secret=PIN),
                         FIRMWARE / "nokia7plus-2019.yaml"),
               LabDevice(spec("VCLEAN0001", "clean", CLEAN_IDS), FIRMWARE / "clean.yaml")]
    state = Lab.up(devices, instance=instance)
    try:
        yield state
    finally:
        Lab.down(instance)


@pytest.mark.timeout(120)
def test_the_phones_own_events_drive_real_traffic_and_down_leaves_nothing(lab: LabState, tmp_path: Path) -> None:
    assert Lab.status(lab.instance) == lab
    nokia = lab.phone("nokia")
    assert nokia.wifi_mac == "02:1a:11:f0:00:01"
    import adbutils

    client = adbutils.AdbClient(host=lab.adb_host, port=lab.adb_port)
    assert sorted(d.serial for d in client.device_list()) == ["VCLEAN0001", "VNOKIA0001"]
    device = client.device("VNOKIA0001")

    pcap = tmp_path / "nokia.pcapng"
    capture = Dumpcap(nokia.interface, pcap)
    device.shell("input keyevent KEYCODE_WAKEUP")  # screen_on
    device.shell("input keyevent KEYCODE_MENU")  # to the PIN pad
    device.shell(f"input text {PIN}")
    device.shell("input keyevent KEYCODE_ENTER")  # unlocked
    time.sleep(2.0)  # the profile waits 0.3 s after each event
    capture.stop()

    hosts = [line for line in tshark_fields(pcap, "http.request", "http.host") if line]
    assert hosts == ["zzhc.vnet-cn.example"] * 4, hosts  # screen-on and unlock, each as JSON and Base64 JSON
    bodies = "".join(tshark_fields(pcap, "http.request", "http.file_data"))
    for name in ("serial", "imsi", "iccid", "phone"):
        assert NOKIA_IDS.get(name)[0] in bodies, name
    assert "59.9127" in bodies
    queries = [q for q in tshark_fields(pcap, "dns.flags.response == 0", "dns.qry.name") if q]
    assert set(queries) == {"zzhc.vnet-cn.example"}
    sources = set(tshark_fields(pcap, "ip.src == 10.200.0.10", "eth.src")) - {""}
    assert sources == {nokia.wifi_mac}

    pids = recorded_pids(lab.instance)
    Lab.down(lab.instance)
    assert_nothing_left(lab, pids)


@pytest.mark.timeout(120)
def test_a_reboot_sends_the_boot_traffic_and_tls_shows_its_sni(tmp_path: Path) -> None:
    instance = instance_name()
    ids = parse_identifiers({"imei": "352099001761507", "serial": "FIXED0001", "android_id": "4e8a2c6b0d1f3a57",
                             "wifi_mac": "02:1a:11:f0:00:02"}, source="test")
    state = Lab.up([spec("VFIXED0001", "fixed", ids)], {"VFIXED0001": FIRMWARE / "nokia7plus-fixed.yaml"},
                   instance=instance)
    try:
        pcap = tmp_path / "fixed.pcapng"
        capture = Dumpcap(state.phones[0].interface, pcap)
        device = adb_device(state, "VFIXED0001")
        device.shell("reboot")  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        # adbutils leaves a socket unclosed when the device vanishes mid-call, as it does during a reboot
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            while time.monotonic() < deadline:
                try:
                    if device.shell("getprop sys.boot_completed").strip() == "1":  # type: ignore[attr-defined]
                        break
                except Exception:
                    pass
                time.sleep(0.3)
            gc.collect()
        time.sleep(2.5)  # boot_completed rules wait 1 s
        capture.stop()
        sni = {s for s in tshark_fields(pcap, "tls.handshake.type == 1", "tls.handshake.extensions_server_name") if s}
        assert "fota.hmd-update.example" in sni
        assert not [line for line in tshark_fields(pcap, "http.request", "http.host") if line]
        raw = pcap.read_bytes()
        for name in ("imei", "serial"):
            assert ids.get(name)[0].encode() not in raw, f"{name} in cleartext"
    finally:
        Lab.down(instance)


@pytest.mark.timeout(120)
def test_a_crashed_daemons_lab_is_cleaned_on_the_next_up() -> None:
    instance = instance_name()
    devices = [LabDevice(spec("VCLEAN0002", "clean", CLEAN_IDS), FIRMWARE / "clean.yaml")]
    first = Lab.up(devices, instance=instance)
    pids = recorded_pids(instance)
    os.kill(first.pid, signal.SIGKILL)  # no teardown runs: namespaces and children stay
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while netlab.process_start_time(first.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Lab.status(instance) is None
    assert f"the lab daemon (pid {first.pid}) was killed by SIGKILL" in (Lab.failure(instance) or "")
    elsewhere = subprocess.run([sys.executable, "-m", "phonehome", "lab", "status", "--instance", instance],
                               capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    assert f"the lab daemon (pid {first.pid}) ended without tearing its lab down" in elsewhere.stdout
    assert Path("/run/netns", first.phones[0].netns).exists()
    second = Lab.up(devices, instance=instance)
    try:
        assert second.pid != first.pid
        for pid in pids[1:]:
            assert netlab.process_start_time(pid) is None, "an old child survived"
    finally:
        Lab.down(instance)
    assert_nothing_left(second, [])


@pytest.mark.timeout(120)
def test_a_dead_firmware_runner_takes_the_whole_lab_down_and_the_lab_says_why(tmp_path: Path) -> None:
    instance = instance_name()
    state = Lab.up([LabDevice(spec("VCLEAN0003", "clean", CLEAN_IDS), FIRMWARE / "clean.yaml")], instance=instance)
    try:
        assert Lab.failure(instance) is None, "a running lab has no failure"
        recorded = netlab.StateFile.load(instance)
        assert recorded is not None
        runner = next(p for p in recorded.processes if p.name.startswith("firmware"))
        pids = recorded_pids(instance)
        os.kill(runner.pid, signal.SIGKILL)
        deadline = time.monotonic() + WATCHDOG_GRACE_S
        while Lab.failure(instance) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        stopping = Lab.failure(instance)  # asked while the lab may still be tearing down: it says why already
        assert stopping is not None and "firmware[clean] was killed by SIGKILL" in stopping, stopping
        while netlab.process_start_time(state.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert_nothing_left(state, pids)
        cause = Lab.failure(instance)
        assert cause is not None
        assert cause.startswith(f"lab {instance!r} is not running: the lab daemon (pid {state.pid}) exited (rc=0); "
                                f"its log ({state.log_path}) says: ")
        assert "firmware[clean] was killed by SIGKILL; tearing the lab down" in cause
        status = subprocess.run([sys.executable, "-m", "phonehome", "lab", "status", "--instance", instance],
                                capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
        assert status.returncode == 1 and "firmware[clean] was killed by SIGKILL" in status.stdout, status.stdout
        with open(state.log_path, "a") as raw:  # what a dying interpreter may write around the (masking) logger
            raw.write("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                      "RuntimeError: phone VCLEAN0003 at 02:1a:11:f0:00:04 (021A11F00004) gone; "
                      f"last request ?d={base64.b64encode(b'imei=356938035643809').decode()}\n")
        kept = Lab.down(instance, keep_log_to=tmp_path / "artefacts")
        assert kept is not None and kept == tmp_path / "artefacts" / f"lab-{instance}.log"
        text = kept.read_text()
        assert "firmware[clean] was killed by SIGKILL" in text and "RuntimeError: phone VC******03 at" in text
        for value in ("VCLEAN0003", "02:1a:11:f0:00:04", "021A11F00004", "356938035643809",
                      base64.b64encode(b"imei=356938035643809").decode()):
            assert value.lower() not in text.lower(), value
        assert not Path(state.log_path).exists(), "the log is kept with the artefacts, not in /run"
        assert "no log" in (Lab.failure(instance) or "")
    finally:
        Lab.down(instance)


def test_a_profile_the_phone_cannot_fill_is_bad_input_before_anything_starts() -> None:
    instance = instance_name()
    with pytest.raises(InputError, match=r"nokia7plus-2019.yaml.*\{imsi\}"):
        Lab.up([spec("VTHIN0001", "thin", CLEAN_IDS)], {"thin": FIRMWARE / "nokia7plus-2019.yaml"},
               instance=instance)
    assert not netlab.state_path(instance).exists()


def test_two_phones_with_one_mac_are_bad_input() -> None:
    with pytest.raises(InputError, match="share wifi_mac"):
        Lab.up([spec("VA", "a", CLEAN_IDS), spec("VB", "b", CLEAN_IDS)], instance=instance_name())


def test_a_lab_without_phones_is_bad_input() -> None:
    with pytest.raises(InputError, match="no phones"):
        Lab.up([], instance=instance_name())


def test_down_of_a_lab_that_is_not_running_is_quiet() -> None:
    Lab.down(instance_name())


def test_a_second_up_of_a_running_instance_is_refused(lab: LabState) -> None:
    with pytest.raises(LabError, match="already running"):
        Lab.up([spec("VOTHER0001", "other", parse_identifiers({"serial": "OTHER0001"}, source="t"))],
               instance=lab.instance)


def test_a_stalled_lab_says_so(lab: LabState) -> None:
    """A SIGSTOPped lab daemon lives (its adb server takes connections) but answers nothing: Lab.failure names
    the stall and how to end it, so a phone's "the adb server is hung" error gets its cause."""
    assert Lab.failure(lab.instance) is None
    os.kill(lab.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5  # the signal is delivered asynchronously
        while Path(f"/proc/{lab.pid}/stat").read_text().rpartition(")")[2].split()[0] != "T" \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        cause = Lab.failure(lab.instance)
    finally:
        os.kill(lab.pid, signal.SIGCONT)
    assert cause is not None and f"is stalled: the lab daemon (pid {lab.pid}) is stopped" in cause, cause
    assert f"'kill -CONT {lab.pid}'" in cause
    assert Lab.failure(lab.instance) is None


@pytest.mark.timeout(120)
def test_the_command_line(tmp_path: Path) -> None:
    instance = instance_name()
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(f"""\
version: 1
devices:
  - label: cli-clean
    model: Pixel 3
    serial: VCLI0001
    backend: virtual
    firmware: {FIRMWARE / 'clean.yaml'}
    unlock: {{method: swipe}}
    identifiers: {{serial: VCLI0001, wifi_mac: "02:1a:11:f0:00:09"}}
""")

    def phonehome(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "phonehome", "lab", *args, "--instance", instance],
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S + 30, check=False)

    try:
        up = phonehome("up", "--devices", str(inventory))
        assert up.returncode == 0, up.stderr
        assert "adb server: 127.0.0.1:" in up.stdout
        assert "02:1a:11:f0:00:09" not in up.stdout and "VCLI0001" not in up.stdout  # masked for people
        table = phonehome("status")
        assert table.returncode == 0 and "cli-clean" in table.stdout and mask("VCLI0001") in table.stdout
        assert "VCLI0001" not in table.stdout and "02:1a:11:f0:00:09" not in table.stdout
        masked = json.loads(phonehome("status", "--json").stdout)
        assert masked["phones"][0]["serial"] == mask("VCLI0001")
        assert masked["phones"][0]["wifi_mac"] == mask("02:1a:11:f0:00:09")
        status = phonehome("status", "--json", "--show-identifiers")
        assert status.returncode == 0
        data = json.loads(status.stdout)
        assert data["phones"][0]["serial"] == "VCLI0001"
        assert data["phones"][0]["wifi_mac"] == "02:1a:11:f0:00:09"
        assert "VCLI0001" not in repr(LabState.from_json(data)), "nor in a traceback's locals"
        down = phonehome("down")
        assert down.returncode == 0 and "is down" in down.stdout
        gone = phonehome("status")
        assert gone.returncode == 1 and "not running" in gone.stdout
        assert_nothing_left(LabState.from_json(data), [data["pid"]])
    finally:
        Lab.down(instance)
    bad = subprocess.run([sys.executable, "-m", "phonehome", "lab", "up", "--devices", str(tmp_path / "none.yaml")],
                         capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.timeout(90)
def test_a_lab_stops_by_itself_when_the_run_that_started_it_dies() -> None:
    instance = instance_name()
    script = ("import json, sys\n"
              "from pathlib import Path\n"
              "from phonehome.identifiers import parse_identifiers\n"
              "from phonehome.virtual.lab import Lab, LabDevice\n"
              "from phonehome.virtual.phone import VirtualPhoneSpec\n"
              "ids = parse_identifiers({'serial': 'ORPHAN01', 'wifi_mac': '02:1a:11:f0:00:31'}, source='t')\n"
              "spec = VirtualPhoneSpec(serial='VORPHAN01', label='orphan', model='M', identifiers=ids)\n"
              "state = Lab.up([LabDevice(spec, Path(sys.argv[2]))], instance=sys.argv[1])\n"
              "print(json.dumps(state.to_json()), flush=True)\n")
    run = subprocess.run([sys.executable, "-c", script, instance, str(FIRMWARE / "clean.yaml")],
                         capture_output=True, text=True, timeout=CHILD_TIMEOUT_S + 30, check=False)
    try:
        assert run.returncode == 0, run.stderr
        state = LabState.from_json(json.loads(run.stdout))
        deadline = time.monotonic() + WATCHDOG_GRACE_S
        while time.monotonic() < deadline and (Lab.status(instance) is not None
                                               or netlab.process_start_time(state.pid) is not None):
            time.sleep(0.2)
        assert_nothing_left(state, [state.pid])
    finally:
        Lab.down(instance)


@pytest.mark.timeout(60)
def test_without_root_lab_up_says_so_in_one_line() -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not installed")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        inventory = Path(tmp) / "devices.yaml"
        inventory.write_text("version: 1\ndevices:\n  - {label: a, model: M, serial: VA01, backend: virtual, "
                             f"firmware: {FIRMWARE / 'clean.yaml'}, identifiers: {{serial: VA01}}}}\n")
        os.chmod(inventory, 0o644)
        run = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                              "phonehome", "lab", "up", "--devices", str(inventory), "--instance", instance_name()],
                             capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False, cwd=tmp)
    assert run.returncode == 3, run
    assert run.stderr.count("\n") == 1 and "needs root" in run.stderr and "sudo" in run.stderr, run.stderr
