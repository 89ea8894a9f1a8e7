"""Fuzzing the readers and decoders: damaged or hostile input is an InputError or a warning, never a traceback
or a hang."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phonehome.errors import InputError
from phonehome.identifiers import parse_identifiers
from phonehome.scan.matcher import build_matcher
from phonehome.scan.packets import Defragmenter, decode_frame
from phonehome.scan.pcapfile import CaptureReader
from phonehome.scan.protocols import (
    DnsTcpDecoder,
    HttpDecoder,
    MqttDecoder,
    RawDecoder,
    WebSocketDecoder,
    classify_datagram,
    classify_stream,
    parse_client_hello,
    parse_dns,
    quic_initial_crypto,
)
from phonehome.scan.scanner import ScanResult, scan_capture
from phonehome.testing.captures import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL2,
    CaptureBuilder,
    dns_query,
    gzip_bytes,
    http_request,
    mqtt_connect,
    tls_client_hello,
    websocket_frame,
)

IDS = parse_identifiers({"imei": "356938035643809", "serial": "R58M12ABCDE"}, source="fuzz")
MATCHER = build_matcher(IDS)
#: examples per fuzz test; raise it for a deeper run (PHONEHOME_FUZZ_EXAMPLES=5000)
FUZZ_EXAMPLES = int(os.environ.get("PHONEHOME_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _seed_capture(link: int) -> CaptureBuilder:
    cap = CaptureBuilder(link=link)
    conn = cap.tcp("10.0.0.2", "93.184.216.34", 80)
    conn.send(http_request("POST", "/x", host="f.example", body=gzip_bytes(b"imei=356938035643809"),
                           headers={"Content-Encoding": "gzip"}, chunked=True), segment_size=40)
    tls = cap.tcp("10.0.0.2", "93.184.216.34", 443)
    tls.send(tls_client_hello("a.example"))
    cap.udp("10.0.0.2", "10.0.0.1", 5353, 53, dns_query("R58M12ABCDE.example"))
    cap.udp_fragmented("10.0.0.2", "10.0.0.1", 4000, 4001, b"x" * 200, fragment_size=64)
    return cap


SEEDS = [_seed_capture(LINKTYPE_ETHERNET).pcap(), _seed_capture(LINKTYPE_LINUX_SLL2).pcap(nanosecond=True)]
_ng = tempfile.TemporaryDirectory()
SEEDS.append(_seed_capture(LINKTYPE_ETHERNET).write_pcapng(Path(_ng.name) / "s.pcapng").read_bytes())


def _scan_bytes(data: bytes) -> ScanResult | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.pcap"
        path.write_bytes(data)
        try:
            return scan_capture(path, IDS, matcher=MATCHER)
        except InputError as exc:
            assert str(path) in str(exc)
            return None


@pytest.mark.timeout(120 + FUZZ_EXAMPLES // 10)
@FUZZ
@given(data=st.binary(max_size=2000))
def test_garbage_files(data: bytes) -> None:
    _scan_bytes(data)


@pytest.mark.timeout(120 + FUZZ_EXAMPLES // 10)
@FUZZ
@given(seed=st.sampled_from(range(len(SEEDS))), cut=st.integers(0, 10_000))
def test_truncated_captures(seed: int, cut: int) -> None:
    data = SEEDS[seed]
    _scan_bytes(data[:cut % (len(data) + 1)])


@pytest.mark.timeout(120 + FUZZ_EXAMPLES // 10)
@FUZZ
@given(seed=st.sampled_from(range(len(SEEDS))),
       flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=12))
def test_corrupted_captures(seed: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(SEEDS[seed])
    for position, value in flips:
        data[position % len(data)] = value
    result = _scan_bytes(bytes(data))
    if result is not None:  # whatever was read is consistent: every cited frame is one the reader counted
        for finding in result.findings:
            assert finding.frames and all(1 <= frame <= result.capture.packets for frame in finding.frames)
        for flow in result.flows:
            assert 1 <= flow.first_frame <= result.capture.packets


@pytest.mark.timeout(120 + FUZZ_EXAMPLES // 10)
@FUZZ
@given(link=st.sampled_from([0, 1, 101, 113, 228, 229, 276, 147]), data=st.binary(max_size=200))
def test_link_and_ip_decoding(link: int, data: bytes) -> None:
    decode_frame(link, data, Defragmenter(), 0.0, 1)


@pytest.mark.timeout(120 + FUZZ_EXAMPLES // 10)
@FUZZ
@given(data=st.binary(max_size=600))
def test_protocol_parsers(data: bytes) -> None:
    parse_dns(data)
    parse_client_hello(data)
    assert isinstance(quic_initial_crypto(b"\xc3\x00\x00\x00\x01" + data), list)
    classify_stream(data)
    classify_datagram(data)


@pytest.mark.timeout(120 + FUZZ_EXAMPLES // 10)
@FUZZ
@given(prefix=st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                               b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", mqtt_connect("x")[:5],
                               websocket_frame(b"abc")[:3], tls_client_hello("z")[:20]]),
       data=st.binary(max_size=800), pieces=st.integers(1, 6))
def test_stream_decoders(prefix: bytes, data: bytes, pieces: int) -> None:
    stream = prefix + data
    step = max(len(stream) // pieces, 1)
    for decoder in (HttpDecoder(), WebSocketDecoder(), MqttDecoder(), DnsTcpDecoder(), RawDecoder(overlap=8)):
        for i in range(0, len(stream), step):
            for unit in decoder.feed(stream[i:i + step]):
                assert unit.start <= unit.end
        decoder.finish()
        decoder.hole()


def test_reader_gives_up_on_an_absurd_block_length(tmp_path: Path) -> None:
    path = tmp_path / "huge.pcapng"
    data = bytearray(SEEDS[2])
    data += (6).to_bytes(4, "little") + (0x7FFFFFF0).to_bytes(4, "little") + bytes(24)  # a block claiming 2 GiB
    path.write_bytes(bytes(data))
    reader = CaptureReader(path)
    list(reader)
    assert any("corrupt pcapng block" in w for w in reader.warnings)
