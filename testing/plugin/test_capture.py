"""Live capture with real dumpcap on a real veth pair: readiness, phases, stop timing, counts, fail-closed errors.

Each test makes its own veth pair (unique names, removed afterwards). One end plays the phone: it has the phone's
MAC and sends UDP to a neighbour with a static ARP entry, so no reply is needed; dumpcap records on the other end,
as on an access point's interface.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import phonehome.capture as capture_module
from phonehome.capture import (
    STOP_DELAY_S,
    AdbTcpdumpCapture,
    Capture,
    CaptureContext,
    DumpcapCapture,
    FileCapture,
    PcapdroidCapture,
    PhoneMatch,
    RemoteCommandCapture,
    RemoteShell,
    capture_for,
    dumpcap_recorder,
    load_phases,
    local_shell,
    measure_clock_offset,
    parse_dumpcap_stats,
    parse_tcpdump_stats,
    phases_path,
    read_packet_index,
)
from phonehome.errors import CaptureError, InputError
from phonehome.identifiers import mask
from phonehome.inventory import load_inventory
from phonehome.virtual.adbserver import AdbServer
from phonehome.virtual.phone import VirtualPhone, VirtualPhoneSpec

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creating veth pairs and capturing needs root"),
    pytest.mark.skipif(shutil.which("dumpcap") is None or shutil.which("ip") is None,
                       reason="needs dumpcap and iproute2 (ci/setup.sh installs them)"),
]

IP = shutil.which("ip") or "ip"
IP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Link:
    """A veth pair: ``phone`` sends, ``ap`` is where the capture listens."""

    phone: str
    ap: str
    phone_mac: str
    phone_ip: str
    peer_ip: str

    def send(self, count: int, payload: bytes = b"phonehome-test", port: int = 40000) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.phone.encode())
            for _ in range(count):
                sock.sendto(payload, (self.peer_ip, port))


def ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=IP_TIMEOUT_S)


@pytest.fixture
def link() -> Iterator[Link]:
    token = secrets.token_hex(3)
    phone, ap = f"phc{token}p", f"phc{token}a"
    octets = secrets.token_bytes(3)
    mac = "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
    net = f"100.{64 + octets[0] % 64}.{octets[1]}.{octets[2] & 0xFC}"
    base = net.rsplit(".", 1)
    phone_ip, peer_ip = f"{base[0]}.{int(base[1]) + 1}", f"{base[0]}.{int(base[1]) + 2}"
    ip("link", "add", phone, "address", mac, "type", "veth", "peer", "name", ap)
    try:
        for end in (phone, ap):  # no IPv6 autoconfiguration chatter: the tests count every packet
            Path(f"/proc/sys/net/ipv6/conf/{end}/disable_ipv6").write_text("1")
        ip("link", "set", ap, "up")
        ip("link", "set", phone, "up")
        ip("addr", "add", f"{phone_ip}/30", "dev", phone)
        ip("neigh", "replace", peer_ip, "lladdr", "02:00:00:00:00:fe", "dev", phone)
        yield Link(phone=phone, ap=ap, phone_mac=mac, phone_ip=phone_ip, peer_ip=peer_ip)
    finally:
        subprocess.run([IP, "link", "del", phone], capture_output=True, timeout=IP_TIMEOUT_S, check=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is not alive
        return handle.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.timeout(60)
def test_dumpcap_capture_records_phases_counts_and_private_files(link: Link, tmp_path: Path) -> None:
    capture = DumpcapCapture(link.ap, tmp_path / "caps" / "run.pcapng", bpf=f"ether host {link.phone_mac}",
                             label="lab1")
    assert isinstance(capture, Capture)
    capture.start()
    assert capture.pid is not None and os.getpgid(capture.pid) == capture.pid, "dumpcap needs its own group"
    with capture.phase("power_on"):
        link.send(30)
    with capture.phase("quiet"):
        time.sleep(0.3)
    with capture.phase("unlock"):
        link.send(12)
    stats = capture.stop()
    assert stats.received == 42 and stats.dropped == 0 and stats.returncode == 0
    assert [phase.name for phase in stats.phases] == ["power_on", "quiet", "unlock"]
    assert stats.phases == capture.phases
    assert all(p.start <= p.end for p in stats.phases)
    assert stats.phases[0].end <= stats.phases[1].start <= stats.phases[1].end <= stats.phases[2].start
    assert capture.assert_saw_traffic("power_on") == 30
    assert capture.assert_saw_traffic("unlock") == 12
    assert capture.packets_in("quiet") == 0
    with pytest.raises(CaptureError, match="no traffic from the phone during phase 'quiet'"):
        capture.assert_saw_traffic("quiet")
    with pytest.raises(CaptureError, match="no phase 'idle' was recorded"):
        capture.assert_saw_traffic("idle")
    # files hold identifiers: owner only, also the directory
    assert mode(capture.pcap) == 0o600 and mode(capture.pcap.parent) == 0o700
    sidecar = phases_path(capture.pcap)
    assert mode(sidecar) == 0o600
    assert load_phases(sidecar) == stats.phases
    assert json.loads(sidecar.read_text())[2]["name"] == "unlock"
    piece = capture.slice("unlock")
    assert piece == tmp_path / "caps" / "run.unlock.pcapng" and mode(piece) == 0o600
    assert piece.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"  # pcapng
    assert len(read_packet_index(piece)) == 12
    assert capture.stop() is stats  # idempotent
    assert capture.info()["interface"] == link.ap and capture.info()["stats"] == stats.to_json()


@pytest.mark.timeout(60)
def test_stop_waits_after_the_last_action_so_a_final_burst_is_kept(link: Link, tmp_path: Path) -> None:
    capture = DumpcapCapture(link.ap, tmp_path / "burst.pcapng", bpf="udp")
    capture.start()
    with capture.phase("burst"):
        link.send(2000)
    before = time.monotonic()
    stats = capture.stop()
    assert time.monotonic() - before >= STOP_DELAY_S * 0.9
    assert stats.received == 2000 and stats.dropped == 0
    assert capture.packets_in("burst") == 2000


@pytest.mark.timeout(60)
def test_a_filter_that_matches_nothing_fails_closed(link: Link, tmp_path: Path) -> None:
    capture = DumpcapCapture(link.ap, tmp_path / "none.pcapng", bpf="ether host 02:99:99:99:99:99")
    capture.start()
    with capture.phase("screen_on"):
        link.send(20)
    stats = capture.stop()
    assert stats.received == 0
    with pytest.raises(CaptureError, match=r"no traffic from the phone during phase 'screen_on'.*check the "
                                           r"capture filter"):
        capture.assert_saw_traffic("screen_on")


@pytest.mark.timeout(60)
def test_killing_dumpcap_mid_capture_is_an_error(link: Link, tmp_path: Path) -> None:
    capture = DumpcapCapture(link.ap, tmp_path / "killed.pcapng")
    capture.start()
    with capture.phase("power_on"):
        link.send(5)
    assert capture.pid is not None
    os.kill(capture.pid, signal.SIGKILL)
    time.sleep(0.2)
    with pytest.raises(CaptureError) as info, capture.phase("unlock"):
        link.send(5)
    error = info.value
    assert "dumpcap exited during the capture" in str(error)
    assert error.returncode == -signal.SIGKILL and error.command and error.command[0].endswith("dumpcap")
    with pytest.raises(CaptureError) as again:
        capture.stop()
    assert again.value is error
    capture.close()  # never raises


@pytest.mark.timeout(60)
def test_killing_dumpcap_after_the_last_phase_fails_the_stop(link: Link, tmp_path: Path) -> None:
    capture = DumpcapCapture(link.ap, tmp_path / "killed2.pcapng")
    capture.start()
    with capture.phase("idle"):
        link.send(5)
    assert capture.pid is not None
    os.kill(capture.pid, signal.SIGKILL)
    with pytest.raises(CaptureError, match="dumpcap exited before it was stopped"):
        capture.stop()
    with pytest.raises(CaptureError, match="dumpcap exited before it was stopped"):
        capture.stop()  # asked again, still the same fault: never stats as if all was well


@pytest.mark.timeout(60)
def test_a_bad_interface_reports_dumpcaps_stderr(tmp_path: Path) -> None:
    capture = DumpcapCapture("phnosuchif0", tmp_path / "bad.pcapng")
    with pytest.raises(CaptureError) as info:
        capture.start()
    error = info.value
    assert "dumpcap exited before capturing on phnosuchif0" in str(error)
    assert error.stderr and "phnosuchif0" in error.stderr and error.returncode not in (0, None)
    assert "stderr:" in str(error) and "command: " in str(error)
    assert 'dumpcap: There is no device named "phnosuchif0".' in str(error), "dumpcap's error line, whole"


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to become nobody")
def test_a_non_root_recorder_shows_dumpcaps_permission_line(tmp_path: Path) -> None:
    """dumpcap run by a user without capture rights: its first error line is in the message, not cut away."""
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c")
    shell = RemoteShell(stream=nobody, control=nobody, workdir="/tmp", name="as nobody")
    capture = RemoteCommandCapture(shell, dumpcap_recorder("lo", None), tmp_path / "n.pcapng",
                                   ready=re.compile(r"^File: ", re.MULTILINE), source="local")
    with pytest.raises(CaptureError, match="exited before capturing") as info:
        capture.start()
    text = str(info.value)
    assert 'dumpcap: You do not have permission to capture on device "lo".' in text
    assert re.search(r"\n  … \d+ lines …\n", text), "the middle is elided by whole lines"
    assert "and then restarting Wireshark." in text, "and its last lines kept"


@pytest.mark.timeout(60)
def test_close_stops_a_running_capture_and_never_raises(link: Link, tmp_path: Path) -> None:
    capture = DumpcapCapture(link.ap, tmp_path / "close.pcapng")
    capture.start()
    pid = capture.pid
    assert pid is not None and alive(pid)
    capture.close()
    capture.close()
    assert not alive(pid)
    assert mode(capture.pcap) == 0o600


@pytest.mark.timeout(30)
def test_phase_misuse(link: Link, tmp_path: Path) -> None:
    capture = DumpcapCapture(link.ap, tmp_path / "misuse.pcapng")
    with pytest.raises(CaptureError, match="not running"), capture.phase("early"):
        pass
    with pytest.raises(CaptureError, match=r"stop\(\) before start\(\)"):
        capture.stop()
    capture.start()
    try:
        with pytest.raises(CaptureError, match=r"start\(\) called twice"):
            capture.start()
        with capture.phase("one"):
            link.send(1)
            with pytest.raises(ValueError, match="do not nest"), capture.phase("two"):
                pass
        with pytest.raises(ValueError, match="already recorded"), capture.phase("one"):
            pass
        with pytest.raises(ValueError, match="phase name"), capture.phase("bad name"):
            pass
        with pytest.raises(CaptureError, match=r"call stop\(\) first"):
            capture.packets_in("one")
    finally:
        capture.close()


@pytest.mark.timeout(60)
def test_remote_recorder_mechanism_with_real_dumpcap(link: Link, tmp_path: Path) -> None:
    """The ssh / adb-tcpdump mechanism (pid and stderr kept remotely, pcap on stdout), run through ``sh -c``."""
    shell = local_shell(str(tmp_path / "remote"))
    capture = RemoteCommandCapture(shell, dumpcap_recorder(link.ap, "udp"), tmp_path / "remote.pcapng",
                                   ready=re.compile(r"^File: ", re.MULTILINE), source="local")
    capture.start()
    assert (tmp_path / "remote").is_dir()
    with capture.phase("screen_on"):
        link.send(25)
    stats = capture.stop()
    assert stats.received == 25 and stats.dropped == 0
    assert capture.assert_saw_traffic("screen_on") == 25
    assert mode(capture.pcap) == 0o600
    assert not Path(capture.remote_dir).exists(), "the remote work directory is removed"
    assert capture.clock_offset_s == 0.0  # the same clock: no correction within the round trip


@pytest.mark.timeout(60)
def test_remote_recorder_that_dies_is_an_error(link: Link, tmp_path: Path) -> None:
    shell = local_shell(str(tmp_path))
    capture = RemoteCommandCapture(shell, dumpcap_recorder(link.ap, None), tmp_path / "r.pcapng",
                                   ready=re.compile(r"^File: ", re.MULTILINE), source="local")
    capture.start()
    pid = int(Path(capture.remote_dir, "pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    with pytest.raises(CaptureError, match="the recorder exited"):
        capture.stop()
    bad = RemoteCommandCapture(shell, dumpcap_recorder("phnosuchif1", None), tmp_path / "b.pcapng",
                               ready=re.compile(r"^File: ", re.MULTILINE), source="local")
    with pytest.raises(CaptureError, match="exited before capturing") as info:
        bad.start()
    assert "phnosuchif1" in (info.value.stderr or "")
    assert not Path(bad.remote_dir).exists(), "a recorder that failed to start leaves nothing behind"


@pytest.mark.timeout(60)
def test_file_capture_replays_the_recorded_phases(link: Link, tmp_path: Path) -> None:
    live = DumpcapCapture(link.ap, tmp_path / "live.pcapng")  # unfiltered: the phone is known by its MAC
    live.start()
    with live.phase("power_on"):
        link.send(7)
    with live.phase("unlock"):
        link.send(3)
    live.stop()
    assert live.owns_pcap
    replay = FileCapture(live.pcap, phone=PhoneMatch.of(macs=[link.phone_mac.upper()]))
    assert not replay.owns_pcap, "a cleanup must never delete the user's capture"
    replay.start()
    with replay.phase("unlock"):
        pass
    stats = replay.stop()
    assert stats.dropped is None and stats.received is not None and stats.received >= 10
    assert [p.name for p in replay.phases] == ["unlock"]
    assert replay.assert_saw_traffic("unlock") == 3
    other = FileCapture(live.pcap, phone=PhoneMatch.of(macs=["02:00:00:00:00:01"]))
    other.start()
    other.stop()
    assert [p.name for p in other.phases] == ["power_on", "unlock"]
    with pytest.raises(CaptureError, match=r"no traffic from the phone during phase 'power_on'.*02:00:00:00:00:01"):
        other.assert_saw_traffic("power_on")
    missing = FileCapture(live.pcap)
    missing.start()
    with pytest.raises(CaptureError, match="has no phase 'idle'"), missing.phase("idle"):
        pass


@pytest.mark.parametrize(("text", "where", "problem"), [
    ("{", "line 1", "not JSON"),
    ('{"name": "x"}', None, "must be a JSON list"),
    ('[{"name": "x", "start": 1}]', "[0]", "exactly name, start and end"),
    ('[{"name": "a b", "start": 1, "end": 2}]', "[0].name", "bad phase name"),
    ('[{"name": "x", "start": "1", "end": 2}]', "[0].start", "must be a number"),
    ('[{"name": "x", "start": 3, "end": 2}]', "[0]", "end is before start"),
    ('[{"name": "x", "start": 1, "end": 2}, {"name": "x", "start": 2, "end": 3}]', None, "appears twice"),
])
def test_bad_phases_file(tmp_path: Path, text: str, where: str | None, problem: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_phases(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {where + ': ' if where else ''}") and problem in message, message
    assert info.value.fix


def test_file_capture_of_a_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="capture file not found"):
        FileCapture(tmp_path / "nope.pcapng").start()


def test_stats_parsers_read_what_the_recorders_print() -> None:
    dumpcap = ("Capturing on 'wlan0-ap'\nFile: /tmp/x.pcapng\nPackets captured: 12\n"
               "Packets received/dropped on interface 'wlan0-ap': 12/3 "
               "(pcap:3/dumpcap:0/flushed:0/ps_ifdrop:2) (80.0%)\n")
    assert parse_dumpcap_stats(dumpcap) == (12, 3, 2)
    assert parse_dumpcap_stats("Capturing on 'x'\n") == (None, None, None)
    tcpdump = ("tcpdump: listening on wlan0, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n"
               "120 packets captured\n121 packets received by filter\n1 packet dropped by kernel\n")
    assert parse_tcpdump_stats(tcpdump) == (121, 1)


@pytest.mark.timeout(60)
def test_capture_for_an_inventory_entry(link: Link, tmp_path: Path) -> None:
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(f"""\
version: 1
defaults:
  capture: {{source: interface, interface: auto, filter: "ether host {{wifi_mac}}"}}
devices:
  - label: lab1
    model: Bench phone
    serial: S1
    backend: uiautomator2
    identifiers: {{wifi_mac: "{link.phone_mac}"}}
  - label: lab2
    model: Bench phone
    serial: S2
    backend: uiautomator2
    capture: {{interface: {link.ap}, filter: null}}
    identifiers: {{wifi_mac: "{link.phone_mac}"}}
""")
    lab1, lab2 = load_inventory(inventory).devices
    with pytest.raises(InputError, match=r"line 5, devices\[0\]\.capture\.interface: capture\.interface is 'auto'"):
        capture_for(lab1, CaptureContext(directory=tmp_path), name="t")
    capture = capture_for(lab1, CaptureContext(directory=tmp_path, lab_interface=link.ap), name="t")
    assert isinstance(capture, DumpcapCapture)
    assert capture.bpf == f"ether host {link.phone_mac}" and capture.pcap == tmp_path / "lab1-t.pcapng"
    unfiltered = capture_for(lab2, CaptureContext(directory=tmp_path), name="t")
    assert isinstance(unfiltered, DumpcapCapture) and unfiltered.bpf is None
    for each in (capture, unfiltered):
        each.start()
    try:
        with capture.phase("unlock"), unfiltered.phase("unlock"):
            link.send(4)
        capture.stop()
        unfiltered.stop()
    finally:
        capture.close()
        unfiltered.close()
    assert capture.assert_saw_traffic("unlock") == 4
    assert unfiltered.assert_saw_traffic("unlock") == 4  # matched by the phone's MAC


@dataclass(frozen=True)
class AdbPhone:
    serial: str
    port: int


@pytest.fixture(scope="module")
def adb_phone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdbPhone]:
    """A virtual phone behind the lab's adb server, reached by Debian's real ``adb -P PORT`` (shared: stopping
    the server takes a few seconds)."""
    if shutil.which("adb") is None:
        pytest.skip("needs Debian's adb (ci/setup.sh installs it)")
    phone = VirtualPhone(VirtualPhoneSpec(serial="VCAPTURE0001", label="cap", model="Virtual"),
                         storage_dir=tmp_path_factory.mktemp("phone"))
    server = AdbServer([phone])
    server.start()
    try:
        yield AdbPhone(serial="VCAPTURE0001", port=server.port)
    finally:
        server.stop()
        phone.close()


@pytest.mark.timeout(60)
def test_pcapdroid_missing_on_the_phone_is_a_capture_error(adb_phone: AdbPhone, tmp_path: Path) -> None:
    capture = PcapdroidCapture(adb_phone.serial, tmp_path / "droid.pcap", server_port=adb_phone.port)
    assert capture.intent("start")[:4] == ["am", "start", "-e", "action"]
    assert "pcap_file" in capture.intent("start") and capture.intent("stop")[-2:] == [
        "-n", "com.emanuelef.remote_capture/.activities.CaptureCtrl"]
    with pytest.raises(CaptureError, match=r"PCAPdroid could not be started \(is PCAPdroid") as info:
        capture.start()
    assert "CaptureCtrl" in (info.value.stderr or "") and info.value.command
    assert f"-P {adb_phone.port} -s {adb_phone.serial} shell am start" in " ".join(info.value.command)


@pytest.mark.timeout(60)
def test_adb_tcpdump_on_a_phone_without_tcpdump_is_a_capture_error(adb_phone: AdbPhone, tmp_path: Path) -> None:
    capture = AdbTcpdumpCapture(adb_phone.serial, tmp_path / "phone.pcap", server_port=adb_phone.port,
                                bpf="not port 5555")
    assert capture.recorder == ("tcpdump", "-i", "wlan0", "-s", "0", "-U", "-w", "-", "not port 5555")
    with pytest.raises(CaptureError, match=r"the recorder exited before capturing \(adb-tcpdump needs a rooted"):
        capture.start()
    capture.close()


@pytest.mark.timeout(60)
def test_clock_offset_of_a_phone_whose_date_has_only_seconds(adb_phone: AdbPhone) -> None:
    """toybox-style ``date`` without %N: whole seconds, so a sub-tolerance skew is not "corrected" into error."""
    adb = shutil.which("adb") or "adb"
    control = (adb, "-P", str(adb_phone.port), "-s", adb_phone.serial, "shell")
    assert measure_clock_offset(control) == 0.0
    assert measure_clock_offset((adb, "-P", str(adb_phone.port), "-s", "VNOSUCHPHONE", "shell")) is None


@pytest.mark.timeout(60)
def test_identifiers_in_the_filter_are_masked_in_errors(tmp_path: Path) -> None:
    mac = "02:1a:11:f0:00:09"
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(f"""\
version: 1
devices:
  - label: lab1
    model: Bench phone
    serial: S1
    backend: uiautomator2
    capture: {{interface: phnosuchif2, filter: "ether host {{wifi_mac}}"}}
    identifiers: {{wifi_mac: "{mac.upper()}"}}
""")
    [entry] = load_inventory(inventory).devices
    capture = capture_for(entry, CaptureContext(directory=tmp_path), name="masked")
    with pytest.raises(CaptureError) as info:
        capture.start()
    message = str(info.value)
    assert "phnosuchif2" in message and f"ether host {mask(mac)}" in message, message
    assert mac not in message.lower()
    assert mac not in str(capture.info()).lower()
    shown = capture_for(entry, CaptureContext(directory=tmp_path, show_identifiers=True), name="shown")
    with pytest.raises(CaptureError, match=f"ether host {mac}"):
        shown.start()


@pytest.mark.timeout(60)
def test_a_stalled_recorder_that_drops_packets_is_an_error(link: Link, tmp_path: Path) -> None:
    """dumpcap paused while a burst overflows its 1 MiB kernel buffer: the drops it reports fail the capture."""
    capture = DumpcapCapture(link.ap, tmp_path / "drops.pcapng", bpf="udp", buffer_mib=1)
    capture.start()
    assert capture.pid is not None
    os.kill(capture.pid, signal.SIGSTOP)
    try:
        with capture.phase("burst"):
            link.send(6000, payload=b"x" * 1200)
    finally:
        os.kill(capture.pid, signal.SIGCONT)
    with pytest.raises(CaptureError, match=r"the recorder dropped \d+ of \d+ packets; the evidence is incomplete"):
        capture.stop()
    stats = capture.stats
    assert stats is not None and stats.dropped and stats.dropped > 0
    with pytest.raises(CaptureError, match="dropped"):
        capture.stop()


@pytest.mark.timeout(60)
def test_a_capture_that_outlives_its_cap_is_an_error(link: Link, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """dumpcap's own autostop (which keeps orphans from filling the disk) ends the capture early: an error."""
    monkeypatch.setattr(capture_module.dumpcap, "MAX_CAPTURE_S", 1)
    capture = DumpcapCapture(link.ap, tmp_path / "capped.pcapng")
    capture.start()
    assert "duration:1" in capture.command()
    deadline = time.monotonic() + 10
    while capture.pid is not None and alive(capture.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(CaptureError, match="dumpcap exited during the capture"), capture.phase("idle"):
        pass


def _packet_block_offsets(path: Path) -> list[int]:
    """Where each Enhanced Packet Block of a (little-endian) pcapng file starts."""
    data = path.read_bytes()
    offsets, offset = [], 0
    while offset + 8 <= len(data):
        block_type, length = struct.unpack_from("<II", data, offset)
        if block_type == 6:
            offsets.append(offset)
        offset += length
    return offsets


@pytest.mark.timeout(60)
def test_a_capture_file_cut_after_the_stop_is_an_error(link: Link, tmp_path: Path) -> None:
    """A file cut at a packet boundary after dumpcap stopped reads cleanly, but holds less than dumpcap wrote:
    the cut-off packets could be the leak, so it is an error, never a shorter "clean" capture."""
    capture = DumpcapCapture(link.ap, tmp_path / "cut.pcapng", bpf="udp")
    capture.start()
    with capture.phase("unlock"):
        link.send(20)
    assert capture.stop().received == 20
    os.truncate(capture.pcap, _packet_block_offsets(capture.pcap)[5])
    with pytest.raises(CaptureError, match=r"holds 5 packets but the recorder wrote 20; the file was truncated"):
        capture.assert_saw_traffic("unlock")


@pytest.mark.timeout(60)
def test_a_capture_directory_that_cannot_be_made_is_a_capture_error(tmp_path: Path) -> None:
    """A capture directory on a path through a file (or a read-only disk) is one CaptureError naming the file
    and the option to fix, not an OSError traceback from inside the fixture."""
    (tmp_path / "captures").write_text("not a directory\n", encoding="utf-8")
    capture = DumpcapCapture("lo", tmp_path / "captures" / "x.pcapng")
    with pytest.raises(CaptureError, match=r"cannot write the capture file .*captures/x\.pcapng: .*"
                                           r"--phonehome-capture-dir"):
        capture.start()
    capture.close()


@pytest.mark.timeout(60)
def test_a_phases_file_that_cannot_be_written_fails_every_stop(link: Link, tmp_path: Path) -> None:
    """The disk fills (here: the phases file's name is taken by a directory) after dumpcap wrote its file: the
    stop is a CaptureError, and a second stop() says it again instead of returning stats."""
    capture = DumpcapCapture(link.ap, tmp_path / "p.pcapng", bpf="udp")
    phases_path(capture.pcap).mkdir()
    capture.start()
    with capture.phase("unlock"):
        link.send(3)
    with pytest.raises(CaptureError, match=r"cannot write the phases file .*p\.pcapng\.phases\.json"):
        capture.stop()
    with pytest.raises(CaptureError, match="cannot write the phases file"):
        capture.stop()


#: a test run that starts a capture and then waits to be killed
_RUN_THAT_DIES = """
import sys, time
from pathlib import Path
from phonehome.capture import DumpcapCapture
capture = DumpcapCapture(sys.argv[1], Path(sys.argv[2]), bpf="udp")
capture.start()
print(capture.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(60)
def test_a_run_killed_outright_leaves_no_recorder_behind(link: Link, tmp_path: Path) -> None:
    """SIGKILL of the test run (no teardown runs): dumpcap, in a session of its own, still ends with it instead
    of writing the phone's traffic for up to MAX_CAPTURE_S."""
    run = subprocess.Popen([sys.executable, "-c", _RUN_THAT_DIES, link.ap, str(tmp_path / "orphan.pcapng")],
                           stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.stdout is not None
    with run.stdout:
        pid = int(run.stdout.readline())
        assert alive(pid)
        run.kill()
        run.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "dumpcap outlived the run that started it"


@pytest.mark.timeout(60)
def test_an_interface_that_goes_down_mid_phase_is_named_as_the_cause(link: Link, tmp_path: Path) -> None:
    """dumpcap keeps running on a downed interface and records nothing: the "no traffic" error says why."""
    capture = DumpcapCapture(link.ap, tmp_path / "down.pcapng", bpf="udp")
    capture.start()
    with capture.phase("screen-on"):
        ip("link", "set", link.ap, "down")
    capture.stop()
    with pytest.raises(CaptureError, match=rf"no traffic from the phone during phase 'screen-on' .*the interface "
                                           rf"{link.ap} was down during the capture"):
        capture.assert_saw_traffic("screen-on")


class _ClockSetBack:
    """The ``time`` module as a capture sees it after the host's clock was set back an hour (monotonic time,
    which stop delays use, does not jump)."""

    def __init__(self) -> None:
        self.monotonic, self.sleep = time.monotonic, time.sleep

    @staticmethod
    def time() -> float:
        return time.time() - 3600


@pytest.mark.timeout(60)
def test_a_clock_set_back_mid_phase_is_named_as_the_cause(link: Link, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The wall clock steps back during a phase (packets and the phase's end alike): the window is inside out and
    holds nothing. An error that says so, not a bare "no traffic" with a negative window."""
    capture = DumpcapCapture(link.ap, tmp_path / "clock.pcapng", bpf="udp")
    capture.start()
    with capture.phase("unlock"):
        link.send(5)
        monkeypatch.setattr(capture_module.base, "time", _ClockSetBack())
    monkeypatch.undo()
    capture.stop()
    with pytest.raises(CaptureError, match=r"no traffic from the phone during phase 'unlock' .*this host's clock went "
                                           r"back 3\d\d\d\.\d s during the phase"):
        capture.assert_saw_traffic("unlock")
