"""Binary serialisations: protobuf, CBOR, MessagePack, BSON; scaled and rounded coordinates.

One capture holds one UDP datagram per case, each on its own port and behind 0-3 bytes of junk so that floats
and integers sit at every byte offset; tshark reads it, one scan finds every case with the encoding named.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from phonehome.identifiers import Identifiers, parse_identifiers
from phonehome.scan.scanner import ScanResult, scan_capture
from phonehome.scan.serialised import integer_encodings, varint, zigzag
from phonehome.testing.captures import (
    CaptureBuilder,
    Float32,
    bson,
    cbor,
    gzip_bytes,
    http_request,
    http_response,
    msgpack,
    protobuf_message,
)

IMEI = "356938035643809"
SERIAL = "R58M12ABCDE"
LAT, LON = 52.5163, 13.3777
PHONE_IP = "10.0.0.2"
SERVER_IP = "93.184.216.34"
TSHARK_TIMEOUT_S = 60
N = int(IMEI)

#: case name -> (payload, identifier, encoding expected)
CASES: dict[str, tuple[bytes, str, str]] = {
    "protobuf string": (protobuf_message([(1, "string", IMEI)]), "imei", "plain"),
    "protobuf varint": (protobuf_message([(1, "varint", N)]), "imei", "varint"),
    "protobuf sint64": (protobuf_message([(1, "sint", N)]), "imei", "zigzag"),
    "protobuf fixed64": (protobuf_message([(1, "fixed64", N)]), "imei", "int64le"),
    "protobuf nested": (protobuf_message([(1, "message", [(7, "string", "x"), (2, "message", [
        (3, "string", SERIAL), (4, "double", LAT), (5, "double", LON)])])]), "serial", "plain"),
    "protobuf nested double": (protobuf_message([(1, "message", [(2, "message", [
        (4, "double", LAT), (5, "double", LON)])])]), "location", "float64le"),
    "protobuf float": (protobuf_message([(1, "float", LAT), (2, "float", LON)]), "location", "float32le"),
    "protobuf e7": (protobuf_message([(1, "sfixed32", round(LAT * 1e7)), (2, "sfixed32", round(LON * 1e7))]),
                    "location", "e7-int32le"),
    "cbor uint64": (cbor({"imei": N}), "imei", "int64be"),
    "cbor string": (cbor({"serial": SERIAL}), "serial", "plain"),
    "cbor float32": (cbor({"lat": Float32(LAT), "lon": Float32(LON)}), "location", "float32be"),
    "cbor float64": (cbor([LAT, LON]), "location", "float64be"),
    "msgpack uint64": (msgpack({"imei": N}), "imei", "int64be"),
    "msgpack float32": (msgpack({"lat": Float32(LAT), "lon": Float32(LON)}), "location", "float32be"),
    "msgpack float64": (msgpack({"loc": [LAT, LON]}), "location", "float64be"),
    "bson int64": (bson({"imei": N}), "imei", "int64le"),
    "bson double": (bson({"loc": {"lat": LAT, "lon": LON}}), "location", "float64le"),
    "e6 int32be": (struct.pack(">ii", round(LAT * 1e6), round(LON * 1e6)), "location", "e6-int32be"),
    "e5 int32le": (struct.pack("<ii", round(LAT * 1e5), round(LON * 1e5)), "location", "e5-int32le"),
    "e5 text": (f"lat={round(LAT * 1e5)}&lng={round(LON * 1e5)}".encode(), "location", "e5"),
    "e7 text": (f"{round(LAT * 1e7)},{round(LON * 1e7)}".encode(), "location", "e7"),
    "rounded 3": (f"ll={LAT:.3f},{LON:.3f}".encode(), "location", "plain"),
    "rounded 4": (f"ll={LAT:.4f},{LON:.4f}".encode(), "location", "plain"),
}


def _ids(extra: Mapping[str, object] | None = None) -> Identifiers:
    data: dict[str, object] = {"imei": IMEI, "serial": SERIAL, "location": {"lat": LAT, "lon": LON}}
    return parse_identifiers({**data, **(extra or {})}, source="test")


def _capture() -> CaptureBuilder:
    cap = CaptureBuilder()
    for index, (payload, _identifier, _encoding) in enumerate(CASES.values()):
        junk = bytes(range(0xF0, 0xF0 + index % 4))  # every byte offset
        cap.udp(PHONE_IP, SERVER_IP, 40000, 20000 + index, junk + payload)
    return cap


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ScanResult]:
    path = _capture().write_pcap(tmp_path_factory.mktemp("ser") / "serialised.pcap")
    return path, scan_capture(path, _ids())


@pytest.mark.parametrize("case", list(CASES))
def test_each_serialisation_is_found_with_its_encoding(scanned: tuple[Path, ScanResult], case: str) -> None:
    _payload, identifier, encoding = CASES[case]
    port = 20000 + list(CASES).index(case)
    found = {(f.identifier, f.encoding) for f in scanned[1].findings if f.dport == port}
    assert (identifier, encoding) in found, found


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_the_serialised_capture(scanned: tuple[Path, ScanResult]) -> None:
    proc = subprocess.run([shutil.which("tshark") or "tshark", "-r", str(scanned[0]), "-T", "fields",
                           "-e", "udp.dstport", "-e", "data.len"],
                          capture_output=True, text=True, timeout=TSHARK_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    ports = {int(line.split("\t")[0]) for line in proc.stdout.splitlines()}
    assert ports == {20000 + i for i in range(len(CASES))}


def test_varint_and_zigzag() -> None:
    assert varint(300) == b"\xac\x02" and varint(0) == b"\x00"
    assert zigzag(-1) == 1 and zigzag(1) == 2
    assert integer_encodings(N)[0][0] == protobuf_message([(1, "varint", N)])[1:]


def test_no_finding_for_imei_digits_inside_an_unrelated_number(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    cap.udp(PHONE_IP, SERVER_IP, 40000, 9000, protobuf_message([(1, "varint", N * 10 + 7)]))
    cap.udp(PHONE_IP, SERVER_IP, 40000, 9001, f"n=9{IMEI}1".encode())
    cap.udp(PHONE_IP, SERVER_IP, 40000, 9002, struct.pack(">ii", round(LAT * 1e6), 0))  # a latitude alone
    result = scan_capture(cap.write_pcap(tmp_path / "c.pcap"), _ids())
    assert result.findings == ()


def test_layered_binary_location(tmp_path: Path) -> None:
    """Under gzip>base64 in a JSON response: E7 fields of a protobuf are a location; a JSON without one is not."""
    located = protobuf_message([(1, "sfixed32", round(LAT * 1e7)), (2, "sfixed32", round(LON * 1e7))])
    bodies = {8001: {"etag": base64.b64encode(b"\x08\x01" + b"\x00" * 12).decode()},
              8002: {"etag": base64.b64encode(b"\x08\x01" + located).decode()}}
    cap = CaptureBuilder()
    for port, document in bodies.items():
        conn = cap.tcp(PHONE_IP, SERVER_IP, port)
        conn.send(http_request("GET", "/v2/sync", host="api.example"))
        conn.reply(http_response(gzip_bytes(json.dumps(document).encode()), headers={"Content-Encoding": "gzip"}))
        conn.close()
    result = scan_capture(cap.write_pcap(tmp_path / "layered.pcap"), _ids())
    assert {(f.sport, f.encoding) for f in result.findings} == {  # from the server's port
        (8002, "gzip>base64>e7-int32le")}
