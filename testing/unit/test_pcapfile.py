"""The chunked capture reader: formats, link types, timestamps, damage reporting."""

from __future__ import annotations

import itertools
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from phonehome.errors import InputError
from phonehome.scan.packets import Defragmenter, address_text, decode_frame
from phonehome.scan.pcapfile import CaptureReader
from phonehome.testing.captures import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    CaptureBuilder,
    Packet,
    http_request,
    merge_pcapng,
    pcap_bytes,
)

LINKS = [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW, LINKTYPE_NULL]
TSHARK_TIMEOUT_S = 60


def _capture(link: int = LINKTYPE_ETHERNET, *, vlan: int | None = None) -> CaptureBuilder:
    cap = CaptureBuilder(link=link, vlan=vlan)
    conn = cap.tcp("10.0.0.2", "93.184.216.34", 80)
    conn.send(http_request("GET", "/x?imei=356938035643809", host="example.com"), segment_size=9)
    conn.close()
    cap.udp("fd00::2", "fd00::1", 5000, 6000, b"hello over ipv6")
    return cap


def _decoded(path: Path) -> list[tuple[int, str, str, int, int, bytes]]:
    defrag = Defragmenter()
    out = []
    for frame, (ts, link, data, _orig) in enumerate(CaptureReader(path), 1):
        result = decode_frame(link, data, defrag, ts, frame)
        if result is not None:
            proto, src, dst, sport, dport, payload, _seq, _flags = result[0]
            out.append((proto, address_text(src), address_text(dst), sport, dport, payload))
    return out


@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("fmt", ["pcap", "pcap-ns", "pcapng"])
def test_every_link_type_and_format_decodes(tmp_path: Path, link: int, fmt: str) -> None:
    cap = _capture(link)
    path = tmp_path / "c.cap"
    if fmt == "pcapng":
        cap.write_pcapng(path)
    else:
        cap.write_pcap(path, nanosecond=fmt == "pcap-ns")
    reader = CaptureReader(path)
    records = list(reader)
    assert reader.packets == len(cap.packets) == len(records)
    assert reader.warnings == []
    assert reader.link_types == (link,)
    assert [round(r[0], 6) for r in records] == [round(p.time, 6) for p in cap.packets]
    decoded = _decoded(path)
    assert len(decoded) == len(cap.packets)
    payload = b"".join(d[5] for d in decoded if d[0] == 6 and d[4] == 80)
    assert b"imei=356938035643809" in payload
    assert decoded[-1][1:5] == ("fd00::2", "fd00::1", 5000, 6000)


def test_vlan_tagged_ethernet(tmp_path: Path) -> None:
    path = _capture(vlan=42).write_pcap(tmp_path / "vlan.pcap")
    assert b"imei=" in b"".join(d[5] for d in _decoded(path))


def test_nanosecond_timestamps_keep_their_precision(tmp_path: Path) -> None:
    path = tmp_path / "ns.pcap"
    path.write_bytes(pcap_bytes([Packet(b"\x00" * 20, 1_700_000_000.123456789)], nanosecond=True))
    (record,) = list(CaptureReader(path))
    assert record[0] == pytest.approx(1_700_000_000.123456789, abs=1e-6)


def test_big_endian_pcap(tmp_path: Path) -> None:
    cap = _capture()
    path = tmp_path / "be.pcap"
    path.write_bytes(pcap_bytes(cap.packets, big_endian=True))
    assert len(list(CaptureReader(path))) == len(cap.packets)


def test_pcapng_with_several_interfaces_of_different_link_types(tmp_path: Path) -> None:
    a, b = _capture(LINKTYPE_ETHERNET), _capture(LINKTYPE_LINUX_SLL2)
    b.start_time += 0.0005
    path = merge_pcapng(tmp_path / "multi.pcapng", [a, b], nanosecond=[False, True])
    reader = CaptureReader(path)
    records = list(reader)
    assert reader.link_types == (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2)
    assert len(records) == len(a.packets) + len(b.packets)
    assert [r[0] for r in records] == sorted(r[0] for r in records)
    assert b"".join(d[5] for d in _decoded(path)).count(b"hello over ipv6") == 2


def test_small_chunks_give_the_same_records(tmp_path: Path) -> None:
    path = _capture().write_pcapng(tmp_path / "c.pcapng")
    assert list(CaptureReader(path, chunk_bytes=7)) == list(CaptureReader(path))
    path = _capture().write_pcap(tmp_path / "c.pcap")
    assert list(CaptureReader(path, chunk_bytes=5)) == list(CaptureReader(path))


def _block(order: str, block_type: int, body: bytes) -> bytes:
    return struct.pack(order + "II", block_type, 12 + len(body)) + body + struct.pack(order + "I", 12 + len(body))


def _epb(order: str, iface: int, ticks: int, data: bytes, *, captured: int | None = None) -> bytes:
    incl = len(data) if captured is None else captured
    body = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, incl, len(data))
    return _block(order, 6, body + data + bytes(-len(data) % 4))


def test_pcapng_packet_blocks_off_the_common_path(tmp_path: Path) -> None:
    """Enhanced Packet Blocks are read first by a shortcut; the blocks it must leave to the general checks (an
    unknown interface, a captured length beyond the block, a new section in the other byte order, a length that
    is no multiple of 4) read as ever."""
    shb_le = _block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    shb_be = _block(">", 0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
    tsresol_ns = struct.pack("<HHBxxx", 9, 1, 9)
    idbs = (_block("<", 1, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 0))
            + _block("<", 1, struct.pack("<HHI", LINKTYPE_RAW, 0, 0) + tsresol_ns + bytes(4)))
    path = tmp_path / "blocks.pcapng"
    path.write_bytes(shb_le + idbs + _epb("<", 0, 1_000_000, b"first") + _epb("<", 1, 2_500_000_000, b"second")
                     + _epb("<", 5, 3, b"no such interface") + _epb("<", 0, 4, b"claims more", captured=400)
                     + _epb("<", 0, 5_000_000, b"after them")
                     + shb_be + _block(">", 1, struct.pack(">HHI", LINKTYPE_RAW, 0, 0))
                     + _epb(">", 0, 6_000_000, b"big-endian", captured=3)
                     + struct.pack(">IIIIIII", 6, 34, 0, 0, 0, 2, 2) + bytes(6))  # a length no block can have
    reader = CaptureReader(path)
    records = list(reader)
    assert records == [(1.0, LINKTYPE_ETHERNET, b"first", 5), (2.5, LINKTYPE_RAW, b"second", 6),
                       (0.0, -1, b"", 0), (0.0, -1, b"", 0), (5.0, LINKTYPE_ETHERNET, b"after them", 10),
                       (6.0, LINKTYPE_RAW, b"big", 10)]
    assert [w.split(" at byte")[0] for w in reader.warnings] == ["corrupt packet block"] * 2 + [
        "corrupt pcapng block"]
    assert (reader.packets, reader.snaplen_cut) == (6, 1)
    assert list(CaptureReader(path, chunk_bytes=7)) == records


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"this is not a capture at all", "not a pcap or pcapng file"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "pcap header cut short"),
])
def test_not_a_capture_is_input_error(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as excinfo:
        list(CaptureReader(path))
    assert str(path) in str(excinfo.value)


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        CaptureReader(tmp_path / "nope.pcap")


@pytest.mark.parametrize("writer", ["pcap", "pcapng"])
def test_truncated_capture_reads_what_it_can_and_warns(tmp_path: Path, writer: str) -> None:
    cap = _capture()
    path = tmp_path / "t.cap"
    (cap.write_pcap if writer == "pcap" else cap.write_pcapng)(path)
    path.write_bytes(path.read_bytes()[:-30])
    reader = CaptureReader(path)
    records = list(reader)
    assert len(records) == len(cap.packets) - 1
    assert len(reader.warnings) == 1 and "truncated" in reader.warnings[0]


def test_corrupt_record_length_stops_with_warning(tmp_path: Path) -> None:
    cap = _capture()
    data = bytearray(cap.pcap())
    first_len = struct.unpack_from("<I", data, 24 + 8)[0]
    second = 24 + 16 + first_len
    struct.pack_into("<I", data, second + 8, 0x7FFFFFFF)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    reader = CaptureReader(path)
    assert len(list(reader)) == 1
    assert "corrupt packet record" in reader.warnings[0]


def test_snaplen_cut_packets_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_bytes([Packet(b"\x00" * 64, 1.0, orig_len=1500)], snaplen=64))
    reader = CaptureReader(path)
    list(reader)
    assert reader.snaplen_cut == 1


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("link", LINKS)
def test_tshark_reads_the_written_captures(tmp_path: Path, link: int) -> None:
    """The writer's files are real captures: tshark decodes the same HTTP request from each of them."""
    cap = _capture(link)
    for path in (cap.write_pcap(tmp_path / "c.pcap", nanosecond=True), cap.write_pcapng(tmp_path / "c.pcapng")):
        proc = subprocess.run([shutil.which("tshark") or "tshark", "-r", str(path), "-T", "fields",
                               "-e", "http.request.uri", "-e", "udp.dstport"],
                              capture_output=True, text=True, timeout=TSHARK_TIMEOUT_S, check=False)
        assert proc.returncode == 0, proc.stderr
        fields = proc.stdout.split()
        assert "/x?imei=356938035643809" in fields
        assert "6000" in fields


@pytest.mark.parametrize("writer", ["pcap", "pcapng"])
def test_memory_mapped_reading_across_windows_matches_chunked_reading(tmp_path: Path, writer: str) -> None:
    """Files over one window (4 MiB) with records straddling window edges read the same either way."""
    packets = [Packet(bytes([i % 251]) * (60_001 + i), 1_700_000_000.0 + i) for i in range(120)]
    path = tmp_path / f"big.{writer}"
    if writer == "pcap":
        path.write_bytes(pcap_bytes(packets))
    else:
        from phonehome.testing.captures import pcapng_bytes

        path.write_bytes(pcapng_bytes((0, p) for p in packets))
    mapped = list(CaptureReader(path))
    chunked = list(CaptureReader(path, chunk_bytes=1 << 20))
    assert len(mapped) == 120 and mapped == chunked
    assert [r[2] for r in mapped] == [p.data for p in packets]


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decrypts_the_written_quic_initials(tmp_path: Path) -> None:
    """The QUIC Initial builder really encrypts: tshark derives the keys and reads the SNI."""
    from phonehome.testing.captures import quic_client_initials

    cap = CaptureBuilder()
    for datagram in quic_client_initials("quic.example.org", padding=1500):
        cap.udp("10.0.0.2", "93.184.216.34", 50000, 443, datagram)
    path = cap.write_pcapng(tmp_path / "quic.pcapng")
    proc = subprocess.run([shutil.which("tshark") or "tshark", "-r", str(path), "-T", "fields",
                           "-e", "tls.handshake.extensions_server_name"],
                          capture_output=True, text=True, timeout=TSHARK_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "quic.example.org" in proc.stdout.split()


@pytest.mark.parametrize("network", [0x04000001, 0x24000001])
def test_pcap_link_type_field_with_fcs_bits(tmp_path: Path, network: int) -> None:
    """The pcap header's link type field carries the FCS flag (bit 26) and length (bits 28-31) above the link
    type (libpcap's LT_LINKTYPE masks with 0x03FFFFFF): such a capture was refused as link type 67108865 (a real
    capture, tcpdump's bootp_asan.pcap)."""
    from phonehome.identifiers import parse_identifiers
    from phonehome.scan.scanner import scan_capture

    cap = _capture()
    fcs_bytes = (network >> 28) * 2  # the FCS length is in 16-bit units; each frame then ends in it
    frames = [Packet(p.data + zlib.crc32(p.data).to_bytes(4, "little")[:fcs_bytes], p.time) for p in cap.packets]
    data = bytearray(pcap_bytes(frames))
    struct.pack_into("<I", data, 20, network)
    path = tmp_path / "fcs.pcap"
    path.write_bytes(bytes(data))
    reader = CaptureReader(path)
    assert len(list(reader)) == len(cap.packets) and reader.link_types == (LINKTYPE_ETHERNET,)
    result = scan_capture(path, parse_identifiers({"imei": "356938035643809"}, source="test"))
    assert [f.identifier for f in result.findings] == ["imei"]
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-r", str(path), "-Y", "http.request"], capture_output=True, text=True,
                             timeout=TSHARK_TIMEOUT_S, check=True).stdout
        assert out.count("GET") == 1


def test_custom_blocks_keep_wiresharks_frame_numbers(tmp_path: Path) -> None:
    """Wireshark lists pcapng custom blocks (and systemd journal entries) as frames: findings cite frames by
    Wireshark's numbers, so the reader yields them as non-packets (a real capture, gopacket's test202.pcapng, had
    its findings cite the frames before them, and --evidence dissected the wrong packets)."""
    from phonehome.identifiers import parse_identifiers
    from phonehome.scan.pcapfile import NOT_A_PACKET
    from phonehome.scan.scanner import scan_capture
    from phonehome.testing.captures import pcapng_bytes

    cap = _capture()
    data = pcapng_bytes([(0, p) for p in cap.packets])
    custom = struct.pack("<II", 0x00000BAD, 20) + struct.pack("<I", 32473) + b"note" + struct.pack("<I", 20)
    blocks, pos = [], 0
    while pos < len(data):
        length = struct.unpack_from("<I", data, pos + 4)[0]
        blocks.append(data[pos:pos + length])
        pos += length
    # SHB, IDB, a custom block, then the packets with a custom block after each third one
    out = [*blocks[:2], custom]
    for index, block in enumerate(blocks[2:], 1):
        out.append(block)
        if index % 3 == 0:
            out.append(custom)
    path = tmp_path / "custom.pcapng"
    path.write_bytes(b"".join(out))
    reader = CaptureReader(path)
    records = list(reader)
    assert reader.packets == len(cap.packets) and len(records) == len(out) - 2
    packet_numbers = [n for n, record in enumerate(records, 1) if record[1] != NOT_A_PACKET]
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(records[1:]))  # times never step back
    result = scan_capture(path, parse_identifiers({"imei": "356938035643809"}, source="test"))
    (finding,) = result.findings
    assert set(finding.frames) <= set(packet_numbers)
    assert result.capture.packets == len(cap.packets) and result.capture.undecoded == {}
    if shutil.which("tshark"):  # Wireshark's numbers of the packets are the reader's
        out_text = subprocess.run(["tshark", "-r", str(path), "-Y", "ip or ipv6", "-T", "fields", "-e",
                                   "frame.number"], capture_output=True, text=True, timeout=TSHARK_TIMEOUT_S,
                                  check=True).stdout.split()
        assert [int(n) for n in out_text] == packet_numbers
