"""scan.attribution: /proc/net and package-list parsing on real phones' output, and flows matched to apps.

The samples in ``data/attribution/`` are real Android output from public sources; each file's ``# SOURCE:``
lines say where it came from.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phonehome.errors import InputError
from phonehome.identifiers import parse_identifiers
from phonehome.scan.attribution import (
    App,
    Socket,
    SocketTable,
    app_for,
    attribute,
    load_apps_table,
    parse_apps_table,
    parse_package_list,
    parse_proc_net,
    proc_net_address,
    render_proc_net,
)
from phonehome.scan.scanner import Phase, ScanResult, scan_capture
from phonehome.testing.captures import LINKTYPE_RAW, CaptureBuilder, http_request

DATA = Path(__file__).parent / "data" / "attribution"
IMEI = "356938035643809"
PHONE_IP = "192.168.0.100"
SERVER_IP = "116.136.135.138"


def _sample(name: str) -> str:
    """A sample without its SOURCE comment lines."""
    return "".join(line for line in (DATA / name).read_text().splitlines(keepends=True) if not line.startswith("#"))


# --- real formats ----------------------------------------------------------------------------------------------


def test_tcp_of_a_real_phone() -> None:
    sockets = parse_proc_net(_sample("xcrash65_tcp.txt"), "tcp")
    assert len(sockets) == 9
    assert sockets[0] == Socket("tcp", "0.0.0.0", 2017, "0.0.0.0", 0, 0x0A, 1000, 22868379)
    assert sockets[7] == Socket("tcp", "127.0.0.1", 0xB200, "127.0.0.1", 50001, 1, 10019, 23315778)
    assert {s.uid for s in sockets} == {1000, 10019, 10023, 10040, 10059, 10082}


def test_tcp6_ipv4_mapped_time_wait_is_unowned() -> None:
    (sock,) = parse_proc_net(_sample("xcrash65_tcp6.txt"), "tcp6")
    assert (sock.local, sock.lport, sock.remote, sock.rport) == (PHONE_IP, 0xCEC2, SERVER_IP, 443)
    assert sock.state == 6 and sock.uid == 0
    assert not sock.owned  # a TIME_WAIT row's "uid 0" is nobody's: it must not name root as the sender


def test_udp_of_a_real_phone() -> None:
    sockets = parse_proc_net(_sample("xcrash65_udp.txt"), "udp")
    assert len(sockets) == 8
    dhcp = next(s for s in sockets if s.lport == 68)
    assert (dhcp.local, dhcp.remote, dhcp.rport, dhcp.uid) == (PHONE_IP, "192.168.0.1", 67, 1000)


def test_ipv6_words_are_little_endian() -> None:
    # 2001:db8::1 as the kernel prints it on arm64/x86 (each 32-bit word byte-swapped)
    assert proc_net_address("B80D0120000000000000000001000000:01BB") == ("2001:db8::1", 443)
    assert proc_net_address("00000000000000000000000001000000:1F90") == ("::1", 8080)
    assert proc_net_address("0100007F:1F90") == ("127.0.0.1", 8080)


@given(st.ip_addresses(), st.integers(0, 65535), st.booleans(), st.sampled_from(["tcp", "tcp6", "udp", "udp6"]))
def test_render_parse_round_trip(address: object, port: int, udp: bool, table: str) -> None:
    text = str(address)
    if ":" in text and not table.endswith("6"):
        table += "6"
    sock = Socket(table.rstrip("6"), text, port, "10.1.2.3", 443, 1, 10123, 77)
    (back,) = parse_proc_net(render_proc_net([sock], table), table)
    mapped = getattr(address, "ipv4_mapped", None)
    assert back == (sock if mapped is None else Socket(sock.transport, str(mapped), port, "10.1.2.3", 443, 1,
                                                       10123, 77))


def test_bad_row_names_its_line() -> None:
    rows = _sample("xcrash65_tcp.txt").splitlines()
    rows[2] = rows[2].replace("00000000:07E2", "zz:07E2")  # line 3 of the dump
    with pytest.raises(InputError, match=r"line 3: tcp: not a /proc/net address: 'zz:07E2'"):
        parse_proc_net("\n".join(rows), "tcp", source="dump")


def test_package_list_of_a_real_phone() -> None:
    owners = parse_package_list(_sample("oneplus_cph2653_packages.txt"))
    assert owners[1000] == ["android"]
    assert owners[1001] == ["com.android.phone"]
    assert app_for(10570, owners) == App(10570, "io.github.jark006.freezeit", ("io.github.jark006.freezeit",))
    assert app_for(1001, owners).describe() == "com.android.phone"


def test_package_list_variants() -> None:
    text = ("package:/system/priv-app/Settings/Settings.apk=com.android.settings uid:1000\n"
            "package:android versionCode:34  installer=null uid:1000\n"
            "package:com.android.conscrypt\n"  # an APEX: no UID
            "package:com.example.app uid:10123,1010123\n")
    owners = parse_package_list(text)
    assert owners[1000] == ["com.android.settings", "android"]
    assert owners[1010123] == ["com.example.app"]
    system = app_for(1000, owners)
    assert system.shared and system.name == "android.uid.system"
    assert system.describe() == "android.uid.system (uid 1000: android, com.android.settings)"
    assert app_for(1010124, {10124: ["com.other"]}).name == "com.other (user 10)"
    assert app_for(10999, owners).name == "uid 10999"
    assert app_for(99012, owners).name == "isolated process"


def test_package_list_refused_is_said() -> None:
    with pytest.raises(InputError, match="not a package line"):
        parse_package_list(_sample("adb_client99_pm_refused.txt"))
    table = parse_apps_table("@packages\n" + _sample("adb_client99_pm_refused.txt") + "@tcp\n"
                             + _sample("xcrash65_tcp.txt"))
    assert table.package_error == "Exception occurred while executing 'list':"
    assert table.snapshots == 1


# --- the apps table ---------------------------------------------------------------------------------------------


def _apps_text(time: float | None = None) -> str:
    stamp = f" {time}" if time is not None else ""
    return (f"# made with adb\n@packages\npackage:com.qualcomm.qti.autoregistration uid:1000\n"
            f"package:android uid:1000\npackage:com.example.sdkapp uid:10123\n"
            f"@tcp{stamp}\n{_sample('xcrash65_tcp.txt')}"
            f"@tcp6{stamp}\n{render_proc_net([Socket('tcp', PHONE_IP, 40000, SERVER_IP, 80, 1, 1000, 5)], 'tcp6')}"
            f"@udp{stamp}\n{_sample('xcrash65_udp.txt')}"
            f"@udp6{stamp}\ncat: /proc/net/udp6: Permission denied\n")


def test_apps_table_sections() -> None:
    table = parse_apps_table(_apps_text(1000.0))
    assert table.snapshots == 1
    assert table.refused == {"udp6": "cat: /proc/net/udp6: Permission denied"}
    assert table.owners[1000] == ["com.qualcomm.qti.autoregistration", "android"]


@pytest.mark.parametrize(("text", "problem"), [
    ("@tcpx\n", "unknown section @tcpx"),
    ("package:x uid:1\n", "text before the first section"),
    ("@tcp soon\n", "section time 'soon' is not a number"),
    ("# only a comment\n", "no @tcp"),
])
def test_apps_table_errors_name_line_and_fix(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "apps.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as info:
        load_apps_table(path)
    assert str(path) in str(info.value)


# --- attribution ------------------------------------------------------------------------------------------------


def _capture(tmp_path: Path) -> ScanResult:
    """The incident: the phone posts its IMEI from port 40000 to port 80; another flow nobody saw; a DNS query."""
    cap = CaptureBuilder(start_time=1000.0, step=0.01)
    leak = cap.tcp(PHONE_IP, SERVER_IP, 80, sport=40000)
    leak.send(http_request("POST", "/register", host="zzhc.vnet.cn", body=f"imei={IMEI}".encode()))
    leak.close()
    quiet = cap.tcp(PHONE_IP, SERVER_IP, 443, sport=40001)
    quiet.send(b"x" * 100)
    quiet.close()
    cap.udp(PHONE_IP, "192.168.0.1", 0xB836, 53, b"\x12\x34" + b"\0" * 10)
    path = cap.write_pcap(tmp_path / "incident.pcap")
    return scan_capture(path, parse_identifiers({"imei": IMEI}, source="test"),
                        phases=[Phase("power-on", 999.0, 1001.0)])


def test_findings_and_flows_name_the_app(tmp_path: Path) -> None:
    result = attribute(_capture(tmp_path), parse_apps_table(_apps_text(1000.1)), source="apps.txt")
    (finding,) = result.cleartext_findings
    assert (finding.app, finding.uid) == ("android.uid.system", 1000)
    leak, quiet, dns = result.flows
    assert (leak.app, quiet.app, quiet.uid) == ("android.uid.system", None, None)
    # the unconnected UDP socket bound to *:47158 (uid 10059, no package listed) sent the datagram
    assert (dns.app, dns.uid) == ("uid 10059", 10059)
    assert result.attribution is not None
    system = result.attribution.app(1000)
    assert system is not None and system.packages == ("android", "com.qualcomm.qti.autoregistration")
    (coverage,) = result.attribution.coverage
    assert (coverage.phase, coverage.flows, coverage.attributed_flows, coverage.unseen) == ("power-on", 3, 2, 1)
    assert coverage.bytes == sum(f.bytes for f in result.flows)
    assert coverage.attributed_bytes == leak.bytes + dns.bytes
    assert any("udp6" in note for note in result.attribution.notes)
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["findings"][0]["app"] == "android.uid.system" and doc["findings"][0]["uid"] == 1000
    assert doc["attribution"]["coverage"][0]["unattributed_unseen"] == 1


def test_reused_tuple_is_attributed_by_time_or_not_at_all(tmp_path: Path) -> None:
    result = _capture(tmp_path)
    mine = Socket("tcp", PHONE_IP, 40000, SERVER_IP, 80, 1, 10123, 9)
    other = Socket("tcp", PHONE_IP, 40000, SERVER_IP, 80, 1, 10200, 10)
    table = SocketTable()
    table.add_snapshot([other], 900.0)  # an earlier connection with the same 4-tuple
    table.add_snapshot([mine], 1000.05)
    assert attribute(result, table, source="t").flows[0].uid == 10123
    both = SocketTable()
    both.add_snapshot([mine, other], 1000.05)  # two owners at once: never guess
    attributed = attribute(result, both, source="t")
    assert attributed.flows[0].uid is None
    assert attributed.attribution is not None and attributed.attribution.coverage[0].ambiguous == 1


def test_refused_tables_leave_everything_unattributed(tmp_path: Path) -> None:
    table = parse_apps_table("".join(f"@{name} 1000\n/system/bin/sh: cat: /proc/net/{name}: Permission denied\n"
                                     for name in ("tcp", "tcp6", "udp", "udp6")))
    table.failed_polls.append("device VIRT0001: adb: device offline")
    result = attribute(_capture(tmp_path), table, source="t")
    assert all(flow.app is None and flow.uid is None for flow in result.flows)
    assert result.attribution is not None
    assert "no socket table was read" in result.attribution.notes[-1]
    assert "1 poll(s) of the socket tables failed (first: device VIRT0001: adb: device offline)" in \
        result.attribution.notes[-2]
    assert result.attribution.coverage[0].attributed_flows == 0


# --- phonehome scan --apps ----------------------------------------------------------------------------------------


def test_scan_apps_names_the_sender(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from phonehome.cli import main

    _capture(tmp_path)
    (tmp_path / "ids.yaml").write_text(f'imei: "{IMEI}"\n')
    (tmp_path / "apps.txt").write_text(_apps_text(1000.1))
    out_json = tmp_path / "out.json"
    code = main(["scan", str(tmp_path / "incident.pcap"), "-i", str(tmp_path / "ids.yaml"), "--apps",
                 str(tmp_path / "apps.txt"), "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert code == 1
    header, row = out.splitlines()[:2]
    assert header.split()[:2] == ["APP", "IDENTIFIER"] and row.split()[:2] == ["android.uid.system", "imei"]
    assert "apps: (no phase): attributed 2 of 3 flows" in out
    assert "unattributed: 1 never seen in a socket table" in out
    assert "refused /proc/net/udp6" in err
    doc = json.loads(out_json.read_text())
    assert doc["findings"][0]["app"] == "android.uid.system"
    assert doc["attribution"]["apps"][0] == {"uid": 1000, "name": "android.uid.system",
                                             "packages": ["android", "com.qualcomm.qti.autoregistration"]}


def test_scan_apps_bad_table_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from phonehome.cli import main

    _capture(tmp_path)
    (tmp_path / "ids.yaml").write_text(f'imei: "{IMEI}"\n')
    (tmp_path / "apps.txt").write_text("@tcp\n  0: nonsense\n")
    code = main(["scan", str(tmp_path / "incident.pcap"), "-i", str(tmp_path / "ids.yaml"), "--apps",
                 str(tmp_path / "apps.txt")])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "apps.txt: line 2: tcp:" in err


# --- PCAPdroid's trailer --------------------------------------------------------------------------------------------


def _pcapdroid_frame(ip: bytes, uid: int, app: str) -> bytes:
    """A frame as PCAPdroid writes it with its trailer on (jni/core/pcap_utils.c pcap_dump_rec): a zero-MAC
    Ethernet header, the IP packet, padding to 4 bytes, magic and UID big-endian, the app name, a CRC-32."""
    frame = bytes(12) + (b"\x08\x00" if ip[0] >> 4 == 4 else b"\x86\xdd") + ip
    frame += bytes(-len(frame) % 4)
    frame += struct.pack("!Ii20s", 0x01072021, uid, app.encode()[:19])  # the name cut to 19 bytes and a NUL
    return frame + struct.pack("<I", zlib.crc32(frame))


def test_pcapdroid_trailer_names_each_packets_app(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from phonehome.cli import main
    from phonehome.scan.pcapdroid_trailer import trailer_table

    raw = CaptureBuilder(link=LINKTYPE_RAW, start_time=1000.0)
    leak = raw.tcp("10.215.173.1", SERVER_IP, 80, sport=41000)
    leak.send(http_request("POST", "/register", host="zzhc.vnet.cn", body=f"imei={IMEI}".encode()))
    leak.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    raw.udp("10.215.173.1", "10.215.173.2", 40001, 53, b"\x12\x34" + bytes(10))
    uids = {41000: (10154, "com.example.flashlight"), 40001: (1000, "android")}
    cap = CaptureBuilder(start_time=1000.0)
    for packet in raw.packets:
        sport, dport = struct.unpack_from("!HH", packet.data, 20)
        uid, app = uids.get(sport) or uids[dport]
        cap.add_frame(_pcapdroid_frame(packet.data, uid, app))
    path = cap.write_pcap(tmp_path / "pcapdroid.pcap")
    table = trailer_table(path)
    # a name that fills the field may have been cut: it is marked, never passed off as the package name
    assert table is not None and table.owners == {10154: ["com.example.flashli…"], 1000: ["android"]}
    (tmp_path / "ids.yaml").write_text(f'imei: "{IMEI}"\n')
    out_json = tmp_path / "out.json"
    assert main(["scan", str(path), "-i", str(tmp_path / "ids.yaml"), "--json", str(out_json)]) == 1
    doc = json.loads(out_json.read_text())
    assert doc["attribution"]["source"] == "PCAPdroid trailer"
    assert [(f["app"], f["uid"]) for f in doc["findings"]] == [("com.example.flashli…", 10154)]
    assert [flow["app"] for flow in doc["flows"]] == ["com.example.flashli…", "android"]
    assert "com.example.flashli…" in capsys.readouterr().out
    plain = CaptureBuilder()
    plain.udp(PHONE_IP, SERVER_IP, 1, 2, b"x")
    assert trailer_table(plain.write_pcap(tmp_path / "plain.pcap")) is None


def test_port_reused_within_the_capture_gives_each_finding_its_own_app(tmp_path: Path) -> None:
    cap = CaptureBuilder(start_time=1000.0, step=0.01)
    first = cap.tcp(PHONE_IP, SERVER_IP, 80, sport=40000)
    first.send(http_request("GET", "/ping", host="a.example"))
    first.close()
    cap.start_time += 10.0  # the second connection starts ten seconds later, from the same port
    second = cap.tcp(PHONE_IP, SERVER_IP, 80, sport=40000)
    second.send(http_request("POST", "/register", host="zzhc.vnet.cn", body=f"imei={IMEI}".encode()))
    second.close()
    result = scan_capture(cap.write_pcap(tmp_path / "reuse.pcap"), parse_identifiers({"imei": IMEI}, source="t"))
    assert len(result.flows) == 2
    table = SocketTable()
    table.add_snapshot([Socket("tcp", PHONE_IP, 40000, SERVER_IP, 80, 1, 10200, 3)], 1000.05)
    table.add_snapshot([Socket("tcp", PHONE_IP, 40000, SERVER_IP, 80, 1, 10087, 4)], 1010.2)
    attributed = attribute(result, table, source="t")
    assert [flow.uid for flow in attributed.flows] == [10200, 10087]
    (finding,) = attributed.cleartext_findings
    assert finding.uid == 10087
