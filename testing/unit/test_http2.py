"""HTTP/2 in cleartext: prior knowledge and Upgrade: h2c; HPACK with Huffman coding and dynamic-table references;
DATA frames of interleaved streams joined per stream. The header blocks are made by the ``hpack`` library's
encoder (Huffman on, repeated fields as dynamic-table references); tshark reads every capture."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hpack import Encoder

from phonehome.identifiers import parse_identifiers
from phonehome.scan.http2 import Http2Decoder
from phonehome.scan.scanner import ScanResult, scan_capture
from phonehome.testing.captures import (
    H2_PREFACE,
    CaptureBuilder,
    gzip_bytes,
    h2_data,
    h2_headers,
    h2_settings,
    http_request,
)

IMEI = "356938035643809"
SERIAL = "R58M12ABCDE"
ANDROID_ID = "9774d56d682e549c"
PHONE_IP = "10.0.0.2"
SERVER_IP = "93.184.216.34"
TSHARK_TIMEOUT_S = 60


def _request(encoder: Encoder, path: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    return bytes(encoder.encode([(":method", "POST"), (":scheme", "http"), (":authority", "api.vendor.example"),
                                 (":path", path), *(extra or [])]))


def _client_frames(*, preface: bool = True) -> bytes:
    enc = Encoder()
    # stream 1: the serial in a header, Huffman-coded (hpack's default)
    first = _request(enc, "/v1/hello", [("x-device-serial", SERIAL), ("content-encoding", "gzip")])
    # stream 3: the same header again is only a dynamic-table index now; the IMEI rides in the path
    second = _request(enc, f"/v1/register?imei={IMEI}", [("x-device-serial", SERIAL)])
    assert SERIAL.encode() not in first and len(second) < len(first)  # Huffman-coded, then indexed
    body1 = gzip_bytes(f'{{"android_id":"{ANDROID_ID}"}}'.encode())
    body3 = f'{{"note":"{"x" * 40}","imei":"{IMEI}"}}'.encode()
    frames = (h2_settings() + h2_headers(1, first, split=7) + h2_headers(3, second))
    # the two streams' DATA frames interleave, small enough that the identifiers straddle frames
    d1, d3 = h2_data(1, body1, frame_size=9), h2_data(3, body3, frame_size=11, padding=3)
    cut = len(d1) // 36 * 18  # a frame boundary (frames of 9 + 9 bytes)
    return (H2_PREFACE if preface else b"") + frames + d1[:cut] + d3 + d1[cut:]


def _findings(result: ScanResult) -> set[tuple[str, str, str]]:
    return {(f.identifier, f.encoding, f.protocol) for f in result.findings}


EXPECTED = {("serial", "plain", "http2"), ("imei", "plain", "http2"), ("android_id", "gzip>plain", "http2")}


def _scan(tmp_path: Path, cap: CaptureBuilder) -> tuple[Path, ScanResult]:
    path = cap.write_pcap(tmp_path / "h2.pcap")
    ids = parse_identifiers({"imei": IMEI, "serial": SERIAL, "android_id": ANDROID_ID}, source="test")
    return path, scan_capture(path, ids)


def _prior_knowledge() -> CaptureBuilder:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 8080)
    conn.send(_client_frames(), segment_size=100)
    conn.reply(h2_settings() + h2_settings(ack=True))
    conn.close()
    return cap


def _upgrade() -> CaptureBuilder:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("GET", "/", host="api.vendor.example", headers={
        "Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQAAP__"}))
    conn.reply(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + h2_settings())
    conn.send(_client_frames(), segment_size=64)
    conn.close()
    return cap


@pytest.mark.parametrize("build", [_prior_knowledge, _upgrade], ids=["prior-knowledge", "upgrade-h2c"])
def test_http2_headers_and_bodies_are_decoded(tmp_path: Path, build: object) -> None:
    _path, result = _scan(tmp_path, build())  # type: ignore[operator]
    assert _findings(result) == EXPECTED
    (flow,) = result.flows
    assert flow.protocol == "http2" and flow.host == "api.vendor.example" and not flow.encrypted


def test_raw_frames_would_not_show_the_leaks() -> None:
    """The premise: without HTTP/2 decoding none of the identifiers is on the wire as it is."""
    raw = _client_frames()
    assert SERIAL.encode() not in raw and ANDROID_ID.encode() not in raw and IMEI.encode() not in raw


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("build", [_prior_knowledge, _upgrade], ids=["prior-knowledge", "upgrade-h2c"])
def test_tshark_reads_the_http2_captures(tmp_path: Path, build: object) -> None:
    path, _result = _scan(tmp_path, build())  # type: ignore[operator]
    proc = subprocess.run([shutil.which("tshark") or "tshark", "-r", str(path), "-d", "tcp.port==8080,http2",
                           "-T", "fields", "-e", "http2.header.value"],
                          capture_output=True, text=True, timeout=TSHARK_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    assert SERIAL in proc.stdout and f"/v1/register?imei={IMEI}" in proc.stdout


def test_a_declined_upgrade_is_still_scanned(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("GET", "/", host="api.vendor.example", headers={"Upgrade": "h2c", "Connection": "Upgrade"}))
    conn.reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    conn.send(http_request("GET", f"/next?imei={IMEI}", host="api.vendor.example"))
    conn.close()
    _path, result = _scan(tmp_path, cap)
    assert {(f.identifier, f.encoding) for f in result.findings} == {("imei", "plain")}


def test_a_segment_buffered_mid_frame_counts_the_bodies_held_too() -> None:
    """The scanner's fast path hands a mid-frame segment to ``buffer()``: what it reports held must be the whole
    decoder's (bodies waiting for END_STREAM included), or the scanner's memory cap would not see them."""
    decoder = Http2Decoder(decode_content=None)
    body = h2_data(1, b"z" * (5 * 16384), frame_size=16384)[:-1]  # every DATA frame but the last byte of the last
    frames = H2_PREFACE + h2_settings() + h2_headers(1, _request(Encoder(), "/upload")) + body
    decoder.feed(frames[:-200])
    assert decoder.body_bytes > 60000
    held = decoder.buffer(frames[-200:-100])
    assert held == decoder.held and held > 60000
