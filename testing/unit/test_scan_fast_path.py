"""The scanner's per-packet fast path (in ``Scanner.scan``, ``Scanner._known_segment``) changes nothing but speed.

Each capture here sits on one of the fast path's boundaries (a gap, a segment out of order, a SYN in mid-flow,
VLAN, IPv6 extension headers, IPv4 options, a cut frame, decoder memory shed...); it is scanned with the fast
path on and off and the two results must be identical: findings with their frames, flows, capture info and
warnings. Each test also checks that the fast path did take packets of that capture, and what was found.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from phonehome.identifiers import Identifiers, parse_identifiers
from phonehome.scan import scanner
from phonehome.scan.protocols import MAX_QUIC_INITIALS
from phonehome.scan.scanner import Scanner, ScanResult
from phonehome.testing.captures import (
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    CaptureBuilder,
    Packet,
    http_request,
    http_response,
    internet_checksum,
    ip_packet,
    ipv4_fragments,
    ipv6_packet,
    quic_initial,
    tcp_segment,
    tls_application_data,
    tls_client_hello,
    tls_server_hello,
    udp_datagram,
)

IMEI = "356938035643809"
PHONE_IP = "10.0.0.2"
SERVER_IP = "93.184.216.34"
PHONE_IP6 = "2001:db8::2"
SERVER_IP6 = "2001:db8::80"
PROTO_IPIP = 4
LEAK = f"imei={IMEI}".encode()
#: a body of known length, long enough for many segments: the decoder only buffers in its middle
BODY = b"x" * 20_000 + LEAK + b"y" * 20_000


class _CountingScanner(Scanner):
    """A real scanner that counts the TCP segments its fast path handled (to show the fast path was exercised)."""

    fast_packets = 0

    def _known_segment(self, d: Any, data: bytes, off: int, tcp: int, orig: int, ts: float, frame: int) -> bool:
        handled = super()._known_segment(d, data, off, tcp, orig, ts, frame)
        self.fast_packets += handled
        return handled


def _ids() -> Identifiers:
    return parse_identifiers({"imei": IMEI}, source="test")


def _document(result: ScanResult) -> dict[str, Any]:
    doc = result.to_json(show_identifiers=True)
    doc["capture"].pop("scan_seconds")
    return doc


def _scan_both(tmp_path: Path, cap: CaptureBuilder) -> tuple[ScanResult, int]:
    """Scan with the fast path and without; assert the results are the same; return the fast one and how many
    packets the fast path took."""
    path = cap.write_pcap(tmp_path / "capture.pcap")
    fast = _CountingScanner(_ids())
    fast_result = fast.scan(path)
    general_result = Scanner(_ids(), fast_path=False).scan(path)
    assert json.dumps(_document(fast_result), sort_keys=True) == json.dumps(_document(general_result),
                                                                            sort_keys=True)
    return fast_result, fast.fast_packets


def _leak_frames(result: ScanResult) -> list[tuple[int, ...]]:
    return [f.frames for f in result.findings if f.identifier == "imei"]


def _download(cap: CaptureBuilder, *, client: str = PHONE_IP, server: str = SERVER_IP, segment_size: int = 1000,
              before_close: Callable[[list[Packet]], object] | None = None) -> list[Packet]:
    """A GET answered with :data:`BODY`; returns the response's segments (given to ``before_close`` first)."""
    conn = cap.tcp(client, server, 80)
    conn.send(http_request("GET", "/fw.bin", host="fw.example"))
    segments = conn.reply(http_response(BODY), segment_size=segment_size)
    if before_close is not None:
        before_close(segments)
    conn.close()
    return segments


def test_in_order_body_segments_find_the_leak_in_its_frames(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    leak_at = len(http_response(BODY)) - len(BODY) + BODY.index(LEAK)
    segments = _download(cap, segment_size=(leak_at + 10) // 3)  # the leak crosses from the 3rd segment to the 4th
    result, fast = _scan_both(tmp_path, cap)
    assert fast >= len(segments)
    assert _leak_frames(result) == [(cap.packets.index(segments[2]) + 1, cap.packets.index(segments[3]) + 1)]


def test_segment_after_a_gap(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    segments = _download(cap)
    cap.drop(segments[3:4])
    result, fast = _scan_both(tmp_path, cap)
    assert fast and result.capture.tcp_gaps == 1
    assert _leak_frames(result)


def test_segments_out_of_order_and_retransmitted(tmp_path: Path) -> None:
    cap = CaptureBuilder()

    def reorder(segments: list[Packet]) -> None:
        cap.shuffle(segments[10:30], seed=3)
        cap.retransmit(segments[15:18])

    _download(cap, before_close=reorder)
    result, fast = _scan_both(tmp_path, cap)
    assert fast and result.capture.retransmitted_bytes == 3_000
    assert _leak_frames(result)


def test_syn_in_mid_flow_starts_a_new_connection(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    first = cap.tcp(PHONE_IP, SERVER_IP, 80, sport=41000)
    first.send(http_request("GET", "/a", host="a.example"))
    first.reply(http_response(b"a" * 5000))
    second = cap.tcp(PHONE_IP, SERVER_IP, 80, sport=41000)  # the same 4-tuple, never closed: reused
    second.send(http_request("POST", "/b", host="b.example", body=BODY))
    second.close()
    result, fast = _scan_both(tmp_path, cap)
    assert fast and len(result.flows) == 2
    assert [f.host for f in result.findings] == ["b.example"]


def test_rst_in_mid_body(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("POST", "/up", host="up.example", body=BODY)[:30_000])
    cap.add_ip(ip_packet(PHONE_IP, SERVER_IP, PROTO_TCP, tcp_segment(PHONE_IP, SERVER_IP, conn.sport, 80, b"",
                                                                     seq=conn.client_seq, flags=TCP_RST)))
    result, fast = _scan_both(tmp_path, cap)
    assert fast and _leak_frames(result)


@pytest.mark.parametrize("flags", [TCP_FIN | TCP_ACK, TCP_RST])
def test_segments_after_the_connection_ended(tmp_path: Path, flags: int) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    segments = conn.send(http_request("POST", "/up", host="up.example", body=BODY), segment_size=1000)
    ending = tcp_segment(PHONE_IP, SERVER_IP, conn.sport, 80, b"", seq=conn.client_seq, flags=flags)
    cap.add_ip(ip_packet(PHONE_IP, SERVER_IP, PROTO_TCP, ending))
    conn.reply(http_response(b"ok"), segment_size=1)
    cap.add_ip(ip_packet(SERVER_IP, PHONE_IP, PROTO_TCP, tcp_segment(
        SERVER_IP, PHONE_IP, 80, conn.sport, b"", seq=conn.server_seq, flags=TCP_FIN | TCP_ACK)))
    cap.retransmit(segments[20:25])  # after the end: not counted as retransmitted
    result, fast = _scan_both(tmp_path, cap)
    assert fast and result.capture.retransmitted_bytes == 0
    assert _leak_frames(result)


@pytest.mark.parametrize("client, server", [(PHONE_IP, SERVER_IP), (PHONE_IP6, SERVER_IP6)])
def test_frames_padded_beyond_the_ip_packet(tmp_path: Path, client: str, server: str) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(client, server, 80)
    for packet in conn.send(http_request("POST", "/up", host="up.example", body=BODY[19_990:20_040]),
                            segment_size=5):
        cap.packets[cap.packets.index(packet)] = Packet(packet.data + bytes(60), packet.time)  # Ethernet padding
    conn.close()
    result, fast = _scan_both(tmp_path, cap)
    assert fast and _leak_frames(result)


def test_segment_in_ipv4_fragments(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    request = http_request("POST", "/up", host="up.example", body=BODY[19_000:21_000])
    conn.send(request[:1000])
    segment = tcp_segment(PHONE_IP, SERVER_IP, conn.sport, 80, request[1000:], seq=conn.client_seq,
                          ack=conn.server_seq)
    for fragment in ipv4_fragments(PHONE_IP, SERVER_IP, PROTO_TCP, segment, fragment_size=400):
        cap.add_ip(fragment)  # the first looks like a whole segment of the connection but for its MF flag
    conn.client_seq += len(request) - 1000
    conn.close()
    result, fast = _scan_both(tmp_path, cap)
    assert fast and _leak_frames(result)


def test_vlan_tagged_frames(tmp_path: Path) -> None:
    cap = CaptureBuilder(vlan=12)
    _download(cap)
    result, fast = _scan_both(tmp_path, cap)
    assert fast and _leak_frames(result)


def test_ipv6_and_ipv6_extension_headers(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    segments = _download(cap, client=PHONE_IP6, server=SERVER_IP6)
    for index in range(5, 40, 3):  # some segments behind a hop-by-hop options header: the general path
        cap.packets[cap.packets.index(segments[index])] = _with_hop_by_hop(segments[index])
    result, fast = _scan_both(tmp_path, cap)
    assert fast and _leak_frames(result)


def test_ipv4_options_and_cut_frames(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    segments = _download(cap)
    for index in range(4, 40, 5):
        slot = cap.packets.index(segments[index])
        cap.packets[slot] = _with_ipv4_option(segments[index])
    slot = cap.packets.index(segments[-1])
    cut = cap.packets[slot]
    cap.packets[slot] = Packet(cut.data[:-100], cut.time, len(cut.data))  # snap length: the last 100 bytes lost
    result, fast = _scan_both(tmp_path, cap)
    assert fast and result.capture.snaplen_cut_packets == 1
    assert _leak_frames(result)


def test_tls_flow_and_malformed_packets_of_it(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
    conn.send(tls_client_hello("api.example"))
    conn.reply(tls_server_hello())
    conn.send(tls_application_data(b"z" * 3000))
    bulk = conn.reply(tls_application_data(b"z" * 9000))
    for packet in bulk[:3]:  # cut inside the TCP header: still counted for the flow, as before
        cap.add_frame(packet.data[:14 + 20 + 15])
    for packet in bulk[:3]:  # cut before the TCP flags: the general path decides
        cap.add_frame(packet.data[:14 + 20 + 10])
    conn.close()
    tls_packets = len(cap.packets)
    _download(cap)
    result, fast = _scan_both(tmp_path, cap)
    tls_flow = next(f for f in result.flows if f.dport == 443)
    assert fast and tls_flow.encrypted and tls_flow.frames == tls_packets - 3
    assert _leak_frames(result)


def test_decoder_memory_shed_from_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scanner, "MAX_DECODER_BYTES_TOTAL", 30_000)
    monkeypatch.setattr(scanner, "SHED_DIRECTION_BYTES", 10_000)
    cap = CaptureBuilder()
    _download(cap)
    _download(cap)
    result, fast = _scan_both(tmp_path, cap)
    assert fast and any("to keep memory bounded" in w for w in result.warnings)
    assert _leak_frames(result)


# --- packets the builder does not make ---------------------------------------------------------------------


def _ipv4(src: str, dst: str, payload: bytes, *, options: bytes) -> bytes:
    ihl = (20 + len(options)) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), 1, 0, 64, PROTO_TCP, 0,
                         bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))) + options
    checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


def _with_ipv4_option(packet: Packet) -> Packet:
    """The same Ethernet frame with a 4-byte IPv4 option (NOPs, then end of list) added."""
    data = packet.data
    ip = data[14:]
    src = ".".join(map(str, ip[12:16]))
    dst = ".".join(map(str, ip[16:20]))
    return Packet(data[:14] + _ipv4(src, dst, ip[20:], options=b"\x01\x01\x01\x00"), packet.time)


def _with_hop_by_hop(packet: Packet) -> Packet:
    """The same Ethernet/IPv6 frame with an empty hop-by-hop options header before its TCP header."""
    data = packet.data
    ip = data[14:]
    hop_by_hop = bytes((PROTO_TCP, 0)) + b"\x01\x04\x00\x00\x00\x00"  # next header, length 0, PadN
    src, dst = ip[8:24], ip[24:40]
    inner = ipv6_packet("::1", "::1", 0, hop_by_hop + ip[40:])
    return Packet(data[:14] + inner[:8] + src + dst + inner[40:], packet.time)



def test_a_tunnelled_packet_is_not_taken_for_a_datagram_of_an_encrypted_udp_flow(tmp_path: Path) -> None:
    """The 4 bytes after an outer IPv4 header of an IP-in-IP packet are the inner header's first 4 (0x4500 and
    its length): a QUIC flow between the same hosts with those "ports" must not swallow it unscanned."""
    inner = ip_packet(PHONE_IP, SERVER_IP, PROTO_TCP,
                      tcp_segment(PHONE_IP, SERVER_IP, 40000, 80, http_request("GET", f"/?{LEAK.decode()}",
                                                                               host="api.example")))
    cap = CaptureBuilder()
    for _ in range(MAX_QUIC_INITIALS + 1):  # a QUIC flow (encrypted from then on) with those 4 bytes as ports
        cap.add_ip(ip_packet(PHONE_IP, SERVER_IP, PROTO_UDP,
                             udp_datagram(PHONE_IP, SERVER_IP, 0x4500, len(inner), quic_initial(b"\x00" * 1200))))
    cap.add_ip(ip_packet(PHONE_IP, SERVER_IP, PROTO_IPIP, inner))
    result, _ = _scan_both(tmp_path, cap)
    assert [f.identifier for f in result.findings] == ["imei"]


def test_a_conflicting_copy_of_bytes_the_fast_path_delivered(tmp_path: Path) -> None:
    """Segments taken in order by the fast path are kept to compare a later copy with: an identical resend is
    only counted, one with other bytes (the leak) is scanned as its own copy, citing its frame, as without the
    fast path."""
    cap = CaptureBuilder()
    harmless = BODY.replace(LEAK, b"z" * len(LEAK))
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("GET", "/fw.bin", host="fw.example"))
    start = conn.server_seq
    response = http_response(harmless)
    segments = conn.reply(response, segment_size=1000)
    at = response.index(b"z" * len(LEAK)) // 1000 * 1000  # the segment where the leak would have been
    cap.retransmit(segments[at // 1000 - 2:at // 1000 + 1])
    evil = http_response(BODY)[at:at + 1000]
    conflicting = cap.add_ip(ip_packet(SERVER_IP, PHONE_IP, PROTO_TCP, tcp_segment(
        SERVER_IP, PHONE_IP, 80, conn.sport, evil, seq=start + at, ack=conn.client_seq, flags=TCP_ACK)))
    conn.close()
    result, fast = _scan_both(tmp_path, cap)
    assert fast >= len(segments)
    assert _leak_frames(result) == [(cap.packets.index(conflicting) + 1,)]
    assert (result.capture.retransmitted_bytes, result.capture.conflicting_bytes) == (3000, 1000)
