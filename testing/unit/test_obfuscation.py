"""Trivial obfuscation: XOR with every one-byte key, repeating keys of 2-4 bytes, reversed strings, ROT-N.

The key is named in the encoding. One capture per class, read by tshark."""

from __future__ import annotations

import base64
import gzip
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from phonehome.identifiers import Identifiers, parse_identifiers
from phonehome.scan.forms import rot
from phonehome.scan.matcher import build_matcher
from phonehome.scan.obfuscation import XorFinder, differential, xor_bytes
from phonehome.scan.scanner import ScanResult, scan_capture
from phonehome.testing.captures import CaptureBuilder, http_request

IMEI = "356938035643809"
SERIAL = "R58M12ABCDE"
ANDROID_ID = "9774d56d682e549c"
PHONE_IP = "10.0.0.2"
SERVER_IP = "93.184.216.34"
TSHARK_TIMEOUT_S = 60
BODY = f'{{"imei":"{IMEI}","v":2}}'.encode()


def _ids() -> Identifiers:
    return parse_identifiers({"imei": IMEI, "serial": SERIAL, "android_id": ANDROID_ID}, source="test")


def _by_port(result: ScanResult) -> dict[int, set[tuple[str, str]]]:
    out: dict[int, set[tuple[str, str]]] = {}
    for f in result.findings:
        out.setdefault(f.dport, set()).add((f.identifier, f.encoding))
    return out


@pytest.fixture(scope="module")
def every_one_byte_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ScanResult]:
    cap = CaptureBuilder()
    for key in range(1, 256):
        cap.udp(PHONE_IP, SERVER_IP, 40000, 20000 + key, xor_bytes(BODY, bytes((key,))))
    path = cap.write_pcap(tmp_path_factory.mktemp("xor") / "xor1.pcap")
    return path, scan_capture(path, _ids())


def test_xor_with_every_one_byte_key_is_found_and_names_the_key(
        every_one_byte_key: tuple[Path, ScanResult]) -> None:
    found = _by_port(every_one_byte_key[1])
    missing = [key for key in range(1, 256) if ("imei", f"xor(0x{key:02x})>plain") not in found.get(20000 + key, ())]
    assert missing == []


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_the_xor_capture(every_one_byte_key: tuple[Path, ScanResult]) -> None:
    proc = subprocess.run([shutil.which("tshark") or "tshark", "-r", str(every_one_byte_key[0]), "-T", "fields",
                           "-e", "udp.dstport"], capture_output=True, text=True, timeout=TSHARK_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.split()) == 255


@pytest.mark.parametrize("key", [b"\x5a\xa5", b"\x01\x02\x03", b"\xde\xad\xbe\xef", b"\x00\x7f"])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_repeating_xor_keys(tmp_path: Path, key: bytes, offset: int) -> None:
    """The key is reported aligned to the start of the payload, whatever offset the identifier sits at."""
    cap = CaptureBuilder()
    cap.udp(PHONE_IP, SERVER_IP, 40000, 7000, xor_bytes(b"#" * offset + BODY, key))
    result = scan_capture(cap.write_pcap(tmp_path / "c.pcap"), _ids())
    assert {(f.identifier, f.encoding) for f in result.findings} == {("imei", f"xor(0x{key.hex()})>plain")}


@pytest.mark.parametrize(("key", "wrap", "chain"), [
    (b"\x5a", base64.b64encode, "base64"),
    (b"\x1f\x2e", base64.urlsafe_b64encode, "base64"),
    (b"\x13\x37\x42", lambda data: data.hex().encode(), "hex"),
    (b"\x77", lambda data: base64.b64encode(gzip.compress(data)), "base64>gzip"),
])
def test_xor_under_another_layer(tmp_path: Path, key: bytes, wrap: Callable[[bytes], bytes], chain: str) -> None:
    """XOR, then base64 (or hex, or gzip then base64): the key is found in the decoded layer, the chain says all."""
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("POST", "/c", host="c.example", body=b"d=" + wrap(xor_bytes(BODY, key)) + b"&v=1"))
    result = scan_capture(cap.write_pcap(tmp_path / "c.pcap"), _ids())
    assert {(f.identifier, f.encoding) for f in result.findings} == {("imei", f"{chain}>xor(0x{key.hex()})>plain")}


@pytest.mark.parametrize("key", [b"\x40", b"\x5a\x41\x58", b"\x13\x57\x24\x68"])
def test_xor_under_an_unescaping_layer_is_the_same_finding(tmp_path: Path, key: bytes) -> None:
    """A %-escape before XOR-ed bytes: the url layer holds the same XOR-ed bytes (shifted by two, so a key of 3
    or 4 bytes is rotated there), which is no second leak."""
    cap = CaptureBuilder()
    cap.udp(PHONE_IP, SERVER_IP, 40000, 7000, b"v=%41" + xor_bytes(f"imei={IMEI}".encode(), key))
    result = scan_capture(cap.write_pcap(tmp_path / "c.pcap"), _ids())
    assert [(f.identifier, f.encoding.startswith("xor(")) for f in result.findings] == [("imei", True)]


def test_reversed_and_rot_n(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    cap.udp(PHONE_IP, SERVER_IP, 40000, 7001, f"sn={SERIAL[::-1]}".encode())
    cap.udp(PHONE_IP, SERVER_IP, 40000, 7002, f"id={ANDROID_ID[::-1]}".encode())
    cap.udp(PHONE_IP, SERVER_IP, 40000, 7003, f"sn={rot(SERIAL, 7)}".encode())
    cap.udp(PHONE_IP, SERVER_IP, 40000, 7004, f"imei={IMEI[::-1]}".encode())
    found = _by_port(scan_capture(cap.write_pcap(tmp_path / "c.pcap"), _ids()))
    assert found == {7001: {("serial", "reversed")}, 7002: {("android_id", "reversed")},
                     7003: {("serial", "rot7")}, 7004: {("imei", "reversed")}}


def test_plain_text_and_random_bytes_are_no_xor_finding(tmp_path: Path) -> None:
    rng = random.Random(5)
    cap = CaptureBuilder()
    cap.udp(PHONE_IP, SERVER_IP, 40000, 7000, BODY)
    cap.udp(PHONE_IP, SERVER_IP, 40000, 7001, bytes(rng.getrandbits(8) for _ in range(8000)))
    cap.udp(PHONE_IP, SERVER_IP, 40000, 7002, b"\x00" * 4000 + b"0" * 100 + b"\xff" * 100)
    result = scan_capture(cap.write_pcap(tmp_path / "c.pcap"), _ids())
    assert {(f.dport, f.identifier, f.encoding) for f in result.findings} == {(7000, "imei", "plain")}


def test_differential_cancels_the_key() -> None:
    key = b"\x11\x22\x33"
    for period in (1, 3):
        plain_diff = differential(BODY, period)
        assert (differential(xor_bytes(BODY, key * 2), period) == plain_diff) is (period == 3)
    finder = XorFinder(build_matcher(_ids()).needles)
    assert finder.keys(xor_bytes(b"xx" + BODY, key)) == [key]
