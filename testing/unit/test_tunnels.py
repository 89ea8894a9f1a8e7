"""Encapsulations (GRE, VXLAN, Geneve, IP-in-IP, 802.11, PPPoE, MPLS) and the count of undecodable packets.

Each capture is built with phonehome.testing.captures; tshark reads every one of them (one run over a pcapng
holding one interface per encapsulation), and the scanner must find the leak on the inner flow, never on the
tunnel's endpoints, and never report a link-layer address (inner Ethernet or 802.11 header) as a leak.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from phonehome.identifiers import Identifiers, parse_identifiers
from phonehome.scan.scanner import Phase, ScanResult, scan_capture
from phonehome.scan.tunnels import UNDECODED_SHARE_LIMIT, undecoded_problem
from phonehome.testing.captures import (
    ENCAPSULATIONS,
    LINKTYPE_ETHERNET,
    TUNNEL_DST,
    TUNNEL_SRC,
    CaptureBuilder,
    Packet,
    ethernet_frame,
    gre_packet,
    http_request,
    ipv4_packet,
    merge_pcapng,
    pcap_bytes,
    tcp_segment,
)

IMEI = "356938035643809"
#: the builders' client MAC: in every inner Ethernet header and in every 802.11 header
PHONE_MAC = "02:00:00:00:00:0a"
PHONE_IP = "10.0.0.2"
SERVER_IP = "93.184.216.34"
URI = f"/register?imei={IMEI}"
TSHARK_TIMEOUT_S = 60
KINDS = sorted(ENCAPSULATIONS)


def _ids() -> Identifiers:
    return parse_identifiers({"imei": IMEI, "wifi_mac": PHONE_MAC}, source="test")


def _leaky(kind: str, *, ipv6: bool = False, sport: int = 40000) -> CaptureBuilder:
    cap = CaptureBuilder(encapsulation=kind)
    client, server = ("fd00::2", "2001:db8::80") if ipv6 else (PHONE_IP, SERVER_IP)
    conn = cap.tcp(client, server, 80, sport=sport)
    conn.send(http_request("GET", URI, host="phone.example"), segment_size=20)
    conn.reply(b"HTTP/1.1 204 No Content\r\n\r\n")
    conn.close()
    return cap


def _scan(tmp_path: Path, cap: CaptureBuilder, name: str = "c.pcap") -> ScanResult:
    return scan_capture(cap.write_pcap(tmp_path / name), _ids())


@pytest.mark.parametrize("kind", KINDS)
def test_leak_inside_each_encapsulation_is_found_on_the_inner_flow(tmp_path: Path, kind: str) -> None:
    result = _scan(tmp_path, _leaky(kind))
    found = [(f.identifier, f.encoding, f.src, f.dst, f.dport, f.host, f.protocol) for f in result.findings]
    assert found == [("imei", "plain", PHONE_IP, SERVER_IP, 80, "phone.example", "http")], kind
    # the tunnel is no flow of its own, and the inner MAC addresses are no leak
    assert [(f.src, f.dst) for f in result.flows] == [(PHONE_IP, SERVER_IP)]
    assert result.capture.undecoded == {}
    assert result.capture.tunnelled_packets == result.flows[0].frames
    assert not result.warnings


@pytest.mark.parametrize("kind", ["gre", "vxlan", "wifi-radiotap", "pppoe", "mpls"])
def test_ipv6_inner_flows(tmp_path: Path, kind: str) -> None:
    result = _scan(tmp_path, _leaky(kind, ipv6=True))
    assert [(f.identifier, f.src, f.dst) for f in result.findings] == [("imei", "fd00::2", "2001:db8::80")]


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_every_encapsulated_capture(tmp_path: Path) -> None:
    """One pcapng, one interface per encapsulation: tshark finds the inner HTTP request on each of them."""
    # distinct ports: tshark joins TCP conversations across interfaces
    builders = [_leaky(kind, sport=40000 + i) for i, kind in enumerate(KINDS)]
    path = merge_pcapng(tmp_path / "all.pcapng", builders)
    # an MPLS payload starting with a 0 nibble is a control word or a MAC address: Wireshark guesses the
    # latter, so the pseudowire label is named as one with a control word, as a Wireshark user would
    proc = subprocess.run([shutil.which("tshark") or "tshark", "-r", str(path), "-Y", "http.request",
                           "-d", "mpls.label==1024,pwethcw",
                           "-T", "fields", "-e", "frame.interface_id", "-e", "http.request.uri"],
                          capture_output=True, text=True, timeout=TSHARK_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    seen = {KINDS[int(line.split("\t")[0])] for line in proc.stdout.splitlines() if line.endswith(URI)}
    assert seen == set(KINDS)
    result = scan_capture(path, _ids())
    assert len(result.findings) == len(KINDS)
    assert {(f.src, f.dst) for f in result.findings} == {(PHONE_IP, SERVER_IP)}


def test_vxlan_leak_is_not_attributed_to_the_tunnel_endpoints(tmp_path: Path) -> None:
    """The incident of issue 10: the phone's MAC in the inner Ethernet header was reported, and the leak was
    attributed to the VXLAN endpoints."""
    result = _scan(tmp_path, _leaky("vxlan"))
    assert {f.identifier for f in result.findings} == {"imei"}
    assert all(TUNNEL_SRC not in (f.src, f.dst) and TUNNEL_DST not in (f.src, f.dst) for f in result.flows)


def test_udp_on_a_tunnel_port_that_is_no_tunnel_is_scanned_as_udp(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    cap.udp(PHONE_IP, SERVER_IP, 40000, 4789, f"imei={IMEI}".encode())
    result = _scan(tmp_path, cap)
    assert [(f.identifier, f.dport) for f in result.findings] == [("imei", 4789)]


def test_wifi_management_frames_are_not_ip_and_not_undecodable(tmp_path: Path) -> None:
    cap = _leaky("wifi-radiotap")
    beacon = struct.pack("<BBHI", 0, 0, 8, 0) + b"\x80\x00" + b"\0\0" + b"\xff" * 6 + bytes(12) + b"\0\0" + bytes(20)
    cap.add_frame(beacon)
    result = _scan(tmp_path, cap)
    assert result.capture.non_ip_packets == 1 and result.capture.undecoded == {}
    assert len(result.findings) == 1


def test_protected_wifi_frames_are_counted_and_make_the_capture_prove_nothing(tmp_path: Path) -> None:
    """WPA-encrypted 802.11 data cannot be read: counted per reason, warned, and a decode problem."""
    cap = CaptureBuilder(encapsulation="wifi")
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("GET", URI, host="phone.example"))
    for packet in cap.packets:
        data = bytearray(packet.data)
        data[1] |= 0x40  # the Protected Frame flag
        cap.packets[cap.packets.index(packet)] = Packet(bytes(data), packet.time)
    result = _scan(tmp_path, cap)
    assert result.findings == ()
    assert result.capture.undecoded == {"encrypted 802.11 (WEP/WPA)": {
        "packets": len(cap.packets), "bytes": sum(len(p.data) for p in cap.packets)}}
    assert result.capture.undecodable_packets == len(cap.packets)
    problem = result.capture.decode_problem
    assert problem is not None and "could not be decoded" in problem and "encrypted 802.11" in problem
    assert problem in result.warnings


def test_unknown_ethertype_and_erspan_less_gre_protocols_are_counted(tmp_path: Path) -> None:
    cap = _leaky("gre")
    for _ in range(10):
        cap.add_frame(b"\xff" * 6 + bytes(6) + b"\x08\x06" + bytes(28))  # ARP: not IP, and no failure
    cap.add_frame(bytes(12) + b"\x88\xb4" + bytes(40))  # an ethertype nobody knows
    cap.add_frame(ethernet_frame(gre_packet(bytes(40), protocol=0x1234)))  # GRE carrying something unknown
    cap.add_frame(ethernet_frame(ipv4_packet(PHONE_IP, SERVER_IP, 6, tcp_segment(PHONE_IP, SERVER_IP, 1, 2))[:30]))
    result = _scan(tmp_path, cap)
    undecoded = result.capture.undecoded
    assert set(undecoded) == {"unknown ethertype", "unsupported encapsulation", "truncated"}
    assert undecoded["unknown ethertype"] == {"packets": 1, "bytes": 54}
    assert any("0x88b4" in w for w in result.warnings)
    assert any("GRE protocol 0x1234" in w for w in result.warnings)
    assert len(result.findings) == 1
    assert result.capture.decode_problem is None  # a few odd packets among many: warned, not fatal
    assert result.to_json()["capture"]["undecoded"] == undecoded


def test_arp_is_not_ip_and_not_a_decode_failure(tmp_path: Path) -> None:
    cap = _leaky("gre")
    for _ in range(20):
        cap.add_frame(b"\xff" * 6 + bytes(6) + b"\x08\x06" + bytes(28))
    result = _scan(tmp_path, cap)
    assert result.capture.non_ip_packets == 20 and result.capture.decode_problem is None


def test_a_phase_with_only_undecodable_packets_is_a_decode_problem(tmp_path: Path) -> None:
    cap = _leaky("gre")
    boot = Phase("boot", cap.start_time, cap.now)
    cap.start_time += 10  # the next frames come 10 s later
    later = cap.now
    for _ in range(3):
        cap.add_frame(bytes(12) + b"\x88\xb4" + bytes(40))
    path = cap.write_pcap(tmp_path / "p.pcap")
    phases = [boot, Phase("screen-on", later - 1, cap.now + 1)]
    result = scan_capture(path, _ids(), phases=phases)
    assert result.capture.undecoded_phases == ("screen-on",)
    assert "phase 'screen-on'" in (result.capture.decode_problem or "")


def test_undecoded_share_rule() -> None:
    one = {"truncated": {"packets": 1, "bytes": 60}}
    assert undecoded_problem({}, 10) is None
    assert undecoded_problem(one, 100) is None
    assert undecoded_problem(one, int(1 / UNDECODED_SHARE_LIMIT)) is not None


def test_only_undecodable_link_layer_is_reported_not_passed(tmp_path: Path) -> None:
    path = tmp_path / "weird.pcap"
    path.write_bytes(pcap_bytes([Packet(bytes(12) + b"\x88\xb4" + bytes(40), 1.0 + i) for i in range(3)],
                                link=LINKTYPE_ETHERNET))
    result = scan_capture(path, _ids())
    assert result.capture.undecodable_packets == 3
    assert "3 of 3 packets (100%) could not be decoded" in (result.capture.decode_problem or "")


def test_cli_counts_undecoded_in_the_table_json_and_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from phonehome.cli import main

    path = tmp_path / "weird.pcap"
    path.write_bytes(pcap_bytes([Packet(bytes(12) + b"\x88\xb4" + bytes(40), 1.0 + i) for i in range(3)],
                                link=LINKTYPE_ETHERNET))
    ids = tmp_path / "ids.yaml"
    ids.write_text(f"imei: '{IMEI}'\n")
    out_json = tmp_path / "out.json"
    code = main(["scan", str(path), "-i", str(ids), "--json", str(out_json)])
    out, err = capsys.readouterr()
    assert code == 0
    assert "not decoded, so not scanned: unknown ethertype 3 (162 bytes)" in out
    assert "WARNING: this capture proves nothing" in out
    assert "could not be decoded" in err and "0x88b4" in err
    capture = json.loads(out_json.read_text())["capture"]
    assert capture["undecoded"] == {"unknown ethertype": {"packets": 3, "bytes": 162}}
    assert capture["undecodable_packets"] == 3


@pytest.mark.parametrize("kind", ["gre-bridged", "wifi-radiotap", "pppoe"])
def test_the_capture_index_sees_the_phone_inside_the_encapsulation(tmp_path: Path, kind: str) -> None:
    """The plugin's "did the phone talk in this phase" check reads the inner addresses too."""
    from phonehome.capture import read_packet_index

    path = _leaky(kind).write_pcap(tmp_path / "c.pcap")
    assert all(PHONE_IP in packet.addresses for packet in read_packet_index(path))


@pytest.mark.parametrize("link", [113, 276])
def test_non_ip_frames_of_linux_cooked_captures_are_not_failures(tmp_path: Path, link: int) -> None:
    """tcpdump -i any: ARP and PPPoE discovery in SLL/SLL2 frames carry no IP; PPPoE sessions are decoded."""
    from phonehome.testing.captures import ipv4_packet, pppoe_frame, udp_datagram

    def sll(ethertype: int, payload: bytes) -> bytes:
        if link == 113:
            return struct.pack("!HHH8sH", 4, 1, 6, bytes(8), ethertype) + payload
        return struct.pack("!HHIHBB8s", ethertype, 0, 2, 1, 4, 6, bytes(8)) + payload

    session = pppoe_frame(ipv4_packet(PHONE_IP, SERVER_IP, 17, udp_datagram(PHONE_IP, SERVER_IP, 1, 2,
                                                                            f"imei={IMEI}".encode())))
    packets = [Packet(sll(0x0806, bytes(28)), 1.0), Packet(sll(0x8863, bytes(20)), 2.0),
               Packet(sll(0x8864, session[14:]), 3.0)]
    path = tmp_path / "sll.pcap"
    path.write_bytes(pcap_bytes(packets, link=link))
    result = scan_capture(path, _ids())
    assert result.capture.non_ip_packets == 2 and result.capture.undecoded == {} and not result.warnings
    assert [(f.identifier, f.src) for f in result.findings] == [("imei", PHONE_IP)]


def test_wifi_control_frames_are_not_ip_and_not_truncated(tmp_path: Path) -> None:
    """Monitor-mode captures are full of ACK, CTS and RTS frames (10-20 bytes, shorter than a data header): they
    carry no IP and are no decoding failure (a real capture, tcpdump's ieee802.11_exthdr.pcap, was called
    'proves nothing' for its ACKs)."""
    cap = _leaky("wifi-radiotap")
    radiotap = struct.pack("<BBHI", 0, 0, 8, 0)
    ack = b"\xd4\x00\x00\x00" + bytes.fromhex("02000000000a")  # ACK: frame control, duration, receiver
    cts = b"\xc4\x00\x00\x00" + bytes.fromhex("02000000aa01")
    rts = b"\xb4\x00\x00\x00" + bytes.fromhex("02000000aa01") + bytes.fromhex("02000000000a")
    for control in (ack, cts, rts) * 5:
        cap.add_frame(radiotap + control)
    result = _scan(tmp_path, cap)
    assert result.capture.non_ip_packets == 15 and result.capture.undecoded == {}
    assert result.capture.decode_problem is None and not result.warnings
    assert [f.identifier for f in result.findings] == ["imei"]


def test_vendor_snap_frames_are_not_ip_even_inside_erspan(tmp_path: Path) -> None:
    """CDP (802.3 + LLC/SNAP under Cisco's OUI, protocol 0x2000) is sent by every Cisco switch port: not IP, and
    no decoding failure, also when mirrored over ERSPAN (a real capture, Suricata's decode-erspan-typeII-01, was
    called 'proves nothing: GRE protocol 0x88be'). An unknown ethertype inside a tunnel is named as such."""
    cap = _leaky("erspan")
    cdp_body = b"\xaa\xaa\x03\x00\x00\x0c\x20\x00" + bytes(40)
    cdp = b"\x01\x00\x0c\xcc\xcc\xcc" + bytes.fromhex("02000000000b") + struct.pack("!H", len(cdp_body)) + cdp_body
    erspan = struct.pack("!HHI", 0x1000 | 1, 0x0800 | 5, 0)
    for _ in range(5):
        cap.add_frame(cdp)
        cap.add_frame(ethernet_frame(gre_packet(erspan + cdp, protocol=0x88BE, seq=1)))
    cap.add_frame(ethernet_frame(gre_packet(erspan + bytes(12) + b"\x88\xb4" + bytes(40), protocol=0x88BE, seq=1)))
    result = _scan(tmp_path, cap)
    assert result.capture.non_ip_packets == 10
    assert result.capture.undecoded == {"unknown ethertype": {"packets": 1, "bytes": 104}}
    assert any("unknown ethertype: 0x88b4" in w for w in result.warnings)
    assert [f.identifier for f in result.findings] == ["imei"]


def test_erspan_type_i_has_no_erspan_header(tmp_path: Path) -> None:
    """ERSPAN type I (GRE protocol 0x88be without a sequence number) carries the mirrored frame right after GRE;
    skipping an ERSPAN II header there misread every frame as non-IP, a silent pass (a real capture, Suricata's
    decode-erspan-typeI-02: 42 packets, 0 flows, nothing counted)."""
    from phonehome.testing.captures import CaptureBuilder

    cap = CaptureBuilder()
    inner = _leaky("gre-bridged")  # its frames: Ethernet / IPv4 / GRE (0x6558) / Ethernet / IPv4 / TCP
    for packet in inner.packets:
        bridged = packet.data[14 + 20 + 4:]
        cap.add_frame(ethernet_frame(gre_packet(bridged, protocol=0x88BE)))
    result = _scan(tmp_path, cap)
    assert [(f.identifier, f.src, f.dst) for f in result.findings] == [("imei", PHONE_IP, SERVER_IP)]
    assert result.capture.non_ip_packets == 0 and result.capture.undecoded == {}


def _nflog(ip: bytes, order: str) -> bytes:
    """An NFLOG record: header, packet header and prefix TLVs, then the packet (none for an empty ``ip``)."""
    def tlv(kind: int, value: bytes) -> bytes:
        return struct.pack(order + "HH", 4 + len(value), kind) + value + bytes(-len(value) % 4)
    family = 10 if ip[:1] == b"\x60" else 2
    head = bytes((family, 0)) + b"\0\0" + tlv(1, b"\x08\x00\x03\x00") + tlv(10, b"wlan0\0")
    return head + tlv(9, ip) if ip else head


#: link type -> wrapper from the phone's IP packet to the captured frame
POINT_TO_POINT: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "ppp": (9, lambda ip: b"\xff\x03" + struct.pack("!H", 0x21 if ip[0] >> 4 == 4 else 0x57) + ip),
    "ppp-compressed": (9, lambda ip: bytes((0x21 if ip[0] >> 4 == 4 else 0x57,)) + ip),
    "ppp-hdlc": (50, lambda ip: b"\xff\x03" + struct.pack("!H", 0x21 if ip[0] >> 4 == 4 else 0x57) + ip),
    "cisco-hdlc": (104, lambda ip: b"\x0f\x00" + struct.pack("!H", 0x0800 if ip[0] >> 4 == 4 else 0x86DD) + ip),
    "ppp-with-dir": (204, lambda ip: b"\x01\xff\x03" + struct.pack("!H", 0x21 if ip[0] >> 4 == 4 else 0x57) + ip),
    "nflog": (239, lambda ip: _nflog(ip, "<")),
    "nflog-big-endian": (239, lambda ip: _nflog(ip, ">")),
}


@pytest.mark.parametrize("kind", sorted(POINT_TO_POINT))
@pytest.mark.parametrize("ipv6", [False, True])
def test_ppp_hdlc_and_nflog_link_types(tmp_path: Path, kind: str, ipv6: bool) -> None:
    """Captures on a PPP or HDLC interface, and `tcpdump -i nflog:N` (Android's netd logs to NFLOG), were refused
    as unsupported link types (real captures: tcpdump's nflog.pcap, Suricata's frag-ppp-ipv6-tcp.pcap)."""
    link, wrap = POINT_TO_POINT[kind]
    plain = _leaky("gre", ipv6=ipv6)  # its frames: Ethernet / IP / GRE / the phone's IP packet
    cap = CaptureBuilder(link=link)
    for packet in plain.packets:
        cap.add_frame(wrap(packet.data[14 + 20 + 4:]))
    lcp = b"\xff\x03\xc0\x21\x09\x01\x00\x08" + bytes(4)  # an LCP echo request: no IP, no failure
    cap.add_frame(wrap(b"") if kind.startswith("nflog") else (b"\x01" + lcp if link == 204 else lcp))
    if kind == "nflog-big-endian":  # written on a big-endian host: the file and the TLVs in its byte order
        path = tmp_path / "c.pcap"
        path.write_bytes(pcap_bytes(cap.packets, link=link, big_endian=True))
        result = scan_capture(path, _ids())
    else:
        result = _scan(tmp_path, cap)
    client, server = ("fd00::2", "2001:db8::80") if ipv6 else (PHONE_IP, SERVER_IP)
    assert [(f.identifier, f.src, f.dst) for f in result.findings] == [("imei", client, server)]
    assert result.capture.undecoded == {} and not result.warnings and result.capture.non_ip_packets == 1


def test_ipsec_and_unknown_ip_protocols_are_counted_network_control_is_not(tmp_path: Path) -> None:
    """ESP (a phone's always-on VPN, Wi-Fi calling to the ePDG) is encrypted traffic nobody scanned, and SCTP a
    transport phonehome does not read: both counted and said (a capture of only ESP was '0 flows, 0 cleartext
    findings', exit 0, with no word). ICMP, IGMP, ICMPv6, OSPF carry no application data: not counted."""
    from phonehome.testing.captures import ipv6_packet

    cap = _leaky("gre")
    for i in range(3):
        cap.add_ip(ipv4_packet(PHONE_IP, "198.51.100.1", 50, struct.pack("!II", 0x1001, i) + bytes(64)))
    cap.add_ip(ipv6_packet("fd00::2", "2001:db8::1", 50, struct.pack("!II", 0x1002, 1) + bytes(64)))
    cap.add_ip(ipv4_packet(PHONE_IP, "198.51.100.2", 132, bytes(48)))  # SCTP
    for proto in (1, 2, 89):
        cap.add_ip(ipv4_packet(PHONE_IP, "198.51.100.3", proto, bytes(24)))
    cap.add_ip(ipv6_packet("fd00::2", "ff02::2", 58, b"\x85\x00" + bytes(14)))
    result = _scan(tmp_path, cap)
    undecoded = result.capture.undecoded
    assert set(undecoded) == {"encrypted IPsec (ESP)", "unsupported IP protocol"}
    assert undecoded["encrypted IPsec (ESP)"]["packets"] == 4 and undecoded["unsupported IP protocol"]["packets"] == 1
    assert any("unsupported IP protocol: 132" in w for w in result.warnings)
    assert [f.identifier for f in result.findings] == ["imei"]

    only_esp = CaptureBuilder()
    for i in range(5):
        only_esp.add_ip(ipv4_packet(PHONE_IP, "198.51.100.1", 50, struct.pack("!II", 0x1001, i) + bytes(64)))
    problem = _scan(tmp_path, only_esp, "esp.pcap").capture.decode_problem
    assert problem is not None and "encrypted IPsec (ESP)" in problem
