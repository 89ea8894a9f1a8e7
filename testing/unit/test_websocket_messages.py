"""WebSocket messages: fragmented into continuation frames (each with its own mask) and permessage-deflate with
and without context takeover. tshark reads the capture."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from phonehome.identifiers import parse_identifiers
from phonehome.scan.scanner import ScanResult, scan_capture
from phonehome.testing.captures import (
    CaptureBuilder,
    websocket_accept,
    websocket_deflate,
    websocket_frame,
    websocket_upgrade,
)

IMEI = "356938035643809"
SERIAL = "R58M12ABCDE"
PHONE_IP = "10.0.0.2"
SERVER_IP = "93.184.216.34"
TSHARK_TIMEOUT_S = 60
KEYS = [b"\x01\x02\x03\x04", b"\xa0\xb1\xc2\xd3", b"\x55\x66\x77\x88"]


def _fragmented(message: bytes, parts: int, *, rsv1: bool = False) -> bytes:
    size = -(-len(message) // parts)
    chunks = [message[i:i + size] for i in range(0, len(message), size)]
    return b"".join(websocket_frame(chunk, mask_key=KEYS[i % len(KEYS)], opcode=1 if i == 0 else 0,
                                    fin=i == len(chunks) - 1, rsv1=rsv1 and i == 0)
                    for i, chunk in enumerate(chunks))


def _capture(dport: int, client_frames: bytes) -> CaptureBuilder:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, dport)
    conn.send(websocket_upgrade("/ws", host="push.example").replace(
        b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"))
    conn.reply(websocket_accept().replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"))
    conn.send(client_frames, segment_size=7)
    conn.close()
    return cap


def _scan(tmp_path: Path, cap: CaptureBuilder) -> tuple[Path, ScanResult]:
    path = cap.write_pcap(tmp_path / "ws.pcap")
    return path, scan_capture(path, parse_identifiers({"imei": IMEI, "serial": SERIAL}, source="test"))


def test_identifier_split_across_continuation_frames_with_their_own_masks(tmp_path: Path) -> None:
    message = f'{{"type":"hello","imei":"{IMEI}","pad":"{"x" * 30}"}}'.encode()
    _path, result = _scan(tmp_path, _capture(8080, _fragmented(message, 3)))
    assert [(f.identifier, f.encoding, f.protocol) for f in result.findings] == [("imei", "plain", "websocket")]


@pytest.mark.parametrize("takeover", [True, False])
def test_permessage_deflate_with_and_without_context_takeover(tmp_path: Path, takeover: bool) -> None:
    """With context takeover the second message back-references the first: it only inflates in order."""
    first = f'{{"serial":"{SERIAL}","hello":"world"}}'.encode()
    second = f'{{"serial":"{SERIAL}","imei":"{IMEI}"}}'.encode()
    one, two = websocket_deflate([first, second], context_takeover=takeover)
    frames = websocket_frame(one, rsv1=True) + _fragmented(two, 2, rsv1=True)
    _path, result = _scan(tmp_path, _capture(8080, frames))
    found = {(f.identifier, f.encoding) for f in result.findings}
    assert found == {("serial", "deflate>plain"), ("imei", "deflate>plain")}


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_the_websocket_messages(tmp_path: Path) -> None:
    message = f'{{"imei":"{IMEI}"}}'.encode() * 3
    path, _result = _scan(tmp_path, _capture(80, _fragmented(message, 3)))
    proc = subprocess.run([shutil.which("tshark") or "tshark", "-r", str(path), "-T", "fields",
                           "-e", "websocket.opcode", "-e", "websocket.fin"],
                          capture_output=True, text=True, timeout=TSHARK_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    opcodes = [line.split("\t")[0] for line in proc.stdout.splitlines() if line.strip()]
    assert opcodes.count("0") == 2 and opcodes.count("1") == 1, proc.stdout
