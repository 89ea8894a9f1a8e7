"""TLS decryption with key logs (issue 11), on captures of real OpenSSL conversations.

Each conversation runs OpenSSL on both ends (phonehome.testing.tls) with a key log; the capture carries its
records split into small TCP segments. Two oracles check the decryption: what the peers themselves read, and
what tshark decrypts from the same capture and key log.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from phonehome.errors import InputError
from phonehome.identifiers import Identifiers, parse_identifiers
from phonehome.scan import scanner as scanner_module
from phonehome.scan.keylog import KeyLog, load_keylogs
from phonehome.scan.scanner import Phase, Scanner, ScanResult, scan_capture
from phonehome.scan.tls import HRR_RANDOM
from phonehome.testing.captures import (
    H2_PREFACE,
    CaptureBuilder,
    Packet,
    TcpConnection,
    gzip_bytes,
    h2_data,
    h2_headers,
    h2_settings,
    http_request,
    http_response,
)
from phonehome.testing.tls import Conversation, add_tls_conversation, tls_conversation

IMEI = "356938035643809"
SERIAL = "R58M12ABCDE"
PHONE_IP = "10.0.0.2"
SERVER_IP = "203.0.113.7"
#: small segments: every record spans several of them
SEGMENT_BYTES = 90

#: (TLS version, cipher, encrypt-then-MAC, exchanges before which both sides send KeyUpdate, HelloRetryRequest)
CASES = [
    ("1.3", "TLS_AES_128_GCM_SHA256", True, (), False),
    ("1.3", "TLS_AES_256_GCM_SHA384", True, (1,), False),
    ("1.3", "TLS_CHACHA20_POLY1305_SHA256", True, (1, 2), False),
    ("1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", True, (), False),
    ("1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", True, (), False),
    ("1.2", "ECDHE-ECDSA-CHACHA20-POLY1305", True, (), False),
    ("1.2", "ECDHE-ECDSA-AES128-SHA", True, (), False),
    ("1.2", "ECDHE-ECDSA-AES128-SHA", False, (), False),
    ("1.2", "ECDHE-ECDSA-AES256-SHA384", False, (), False),
    ("1.3", "TLS_AES_128_GCM_SHA256", True, (), True),
]


def _ids() -> Identifiers:
    return parse_identifiers({"imei": IMEI, "serial": SERIAL}, source="test")


def _exchanges(index: int) -> list[tuple[bytes, bytes]]:
    report = json.dumps({"imei": IMEI, "case": index}).encode()
    return [
        (http_request("POST", f"/report/{index}", host="reg.example.net", body=report),
         http_response(b'{"ok": true}')),
        (http_request("GET", f"/config?sn={SERIAL}", host="reg.example.net"),
         http_response(gzip_bytes(b"x" * 3000 + SERIAL.encode()), headers={"Content-Encoding": "gzip"})),
        (http_request("POST", "/bye", host="reg.example.net", body=b"b" * 20000), http_response(b"bye")),
    ]


class Lab:
    """One capture holding every case's conversation on its own TCP connection, and the key log."""

    def __init__(self, root: Path) -> None:
        self.keylog = root / "keys.log"
        self.capture = root / "tls.pcap"
        self.conversations: list[Conversation] = []
        cap = CaptureBuilder()
        for index, (version, cipher, etm, updates, hrr) in enumerate(CASES):
            conv = tls_conversation(self.keylog, version=version, cipher=cipher, exchanges=_exchanges(index),
                                    encrypt_then_mac=etm, rsa=False, key_update_before=updates,
                                    server_name="reg.example.net", hello_retry=hrr)
            self.conversations.append(conv)
            conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
            add_tls_conversation(conn, conv.flights, segment_size=SEGMENT_BYTES)
            conn.close()
        cap.write_pcap(self.capture)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab(tmp_path_factory.mktemp("tls"))


def _decrypt(capture: Path, keylog: KeyLog | None) -> tuple[ScanResult, dict[int, tuple[bytes, bytes]]]:
    scanner = Scanner(_ids(), keylog=keylog)
    scanner.tls.keep_plaintext = True
    result = scanner.scan(capture)
    return result, scanner.tls.plaintexts()


def _tshark_follow(capture: Path, keylog: Path, streams: int) -> dict[int, tuple[bytes, bytes]]:
    """tshark's decrypted TLS streams (follow,tls,raw) by TCP stream index: (client->server, server->client).

    tshark prints several follow taps in its own order, and calls "node 0" whichever side it met first: the
    blocks are matched by their filter's stream index and the node's address."""
    args = [shutil.which("tshark") or "tshark", "-r", str(capture), "-o", f"tls.keylog_file:{keylog}", "-q"]
    for index in range(streams):
        args += ["-z", f"follow,tls,raw,{index}"]
    proc = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
    out = {}
    for block in proc.stdout.split("Follow: tls,raw")[1:]:
        stream = int(re.search(r"Filter: tcp.stream eq (\d+)", block).group(1))  # type: ignore[union-attr]
        node0_is_client = f"Node 0: {PHONE_IP}:" in block
        untabbed, tabbed = b"", b""
        for line in block.splitlines():
            if re.fullmatch(r"\t?[0-9a-f]+", line):
                if line.startswith("\t"):
                    tabbed += bytes.fromhex(line[1:])
                else:
                    untabbed += bytes.fromhex(line)
        out[stream] = (untabbed, tabbed) if node0_is_client else (tabbed, untabbed)
    return out


def test_every_suite_decrypts_to_what_the_peers_read(lab: Lab) -> None:
    """Records split across segments, KeyUpdate, each cipher: the plaintext is exactly what the peers received."""
    result, plain = _decrypt(lab.capture, load_keylogs([lab.keylog]))
    assert [f.decryption for f in result.flows] == ["decrypted"] * len(CASES)
    assert result.warnings == ()
    for index, conv in enumerate(lab.conversations):
        client = b"".join(request for request, _ in conv.received)
        server = b"".join(response for _, response in conv.received)
        assert plain[index] == (client, server), f"case {CASES[index]} ({conv.cipher}, {conv.version})"
        hello_retry = next(data for from_client, data in conv.flights if not from_client)[11:43] == HRR_RANDOM
        assert hello_retry is CASES[index][4]  # the HelloRetryRequest case really starts with one


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_decrypted_bytes_equal_tsharks(lab: Lab) -> None:
    """The same capture and key log through tshark: the same decrypted bytes, stream by stream."""
    _, plain = _decrypt(lab.capture, load_keylogs([lab.keylog]))
    followed = _tshark_follow(lab.capture, lab.keylog, len(CASES))
    assert len(followed) == len(CASES)
    for index, (client, server) in sorted(followed.items()):
        assert client, f"tshark decrypted nothing for case {CASES[index]}"
        assert plain[index] == (client, server), f"case {CASES[index]}"


def _send_flights(conn: TcpConnection, conv: Conversation) -> list[Packet]:
    """Send a TLS conversation's flights on ``conn`` in small segments; the packets of the client's last flight
    (the record of its last request)."""
    packets: list[Packet] = []
    for from_client, data in conv.flights:
        sent = (conn.send if from_client else conn.reply)(data, segment_size=SEGMENT_BYTES)
        if from_client:
            packets = sent
    return packets


def test_findings_inside_tls_are_their_own_kind(lab: Lab) -> None:
    result = scan_capture(lab.capture, _ids(), keylogs=[lab.keylog])
    assert result.cleartext_findings == ()  # the cleartext verdict is unchanged
    inside = result.decrypted_findings
    assert {f.identifier for f in inside} == {"imei", "serial"}
    for finding in inside:
        assert finding.encrypted and finding.decrypted
        assert finding.encoding.startswith("tls>")
        assert finding.protocol == "http"
        assert finding.host == "reg.example.net"
        assert IMEI not in finding.excerpt and SERIAL not in finding.excerpt
        assert finding.to_json()["decrypted"] is True
    encodings = {f.encoding for f in inside}
    assert "tls>plain" in encodings and "tls>gzip>plain" in encodings
    # one imei finding per connection, citing the frames that carried its record
    assert len([f for f in inside if f.identifier == "imei" and f.encoding == "tls>plain"]) == len(CASES)


def test_cited_frames_carry_the_record(tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    body = json.dumps({"padding": "p" * 2000, "imei": IMEI}).encode()
    request = http_request("POST", "/report", host="reg.example.net", body=body)
    conv = tls_conversation(keylog, version="1.3", rsa=False, exchanges=[(request, http_response(b"ok"))])
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
    packets = _send_flights(conn, conv)
    conn.close()
    path = cap.write_pcap(tmp_path / "c.pcap")
    result = scan_capture(path, _ids(), keylogs=[keylog])
    (finding,) = result.decrypted_findings
    numbers = [cap.packets.index(p) + 1 for p in packets]
    assert set(finding.frames) <= set(numbers)
    # the segments that carried the identifier's 15 bytes of ciphertext, not every segment of the request
    assert 1 <= len(finding.frames) <= 2 < len(numbers)


def test_out_of_order_segments(tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    conv = tls_conversation(keylog, version="1.2", cipher="ECDHE-ECDSA-AES128-GCM-SHA256", rsa=False,
                            exchanges=_exchanges(0)[:1])
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
    last: list[Packet] = []
    for from_client, data in conv.flights:
        sent = (conn.send if from_client else conn.reply)(data, segment_size=40)
        if from_client:
            last = sent
    conn.close()
    cap.shuffle(last, seed=3)
    cap.retransmit(last[:2])
    result, plain = _decrypt(cap.write_pcap(tmp_path / "c.pcap"), load_keylogs([keylog]))
    assert plain[0] == conv.received[0]
    assert [f.identifier for f in result.decrypted_findings] == ["imei"]


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap not installed")
def test_decryption_secrets_block_in_the_capture(lab: Lab, tmp_path: Path) -> None:
    """editcap --inject-secrets puts the key log inside the pcapng: no --keylog needed."""
    out = tmp_path / "with-secrets.pcapng"
    subprocess.run([shutil.which("editcap") or "editcap", "--inject-secrets", f"tls,{lab.keylog}",
                    str(lab.capture), str(out)], check=True, capture_output=True, timeout=60)
    result = scan_capture(out, _ids())
    assert [f.decryption for f in result.flows] == ["decrypted"] * len(CASES)
    assert len([f for f in result.decrypted_findings if f.identifier == "imei"]) == len(CASES)


def test_without_keys_nothing_changes(lab: Lab) -> None:
    result = scan_capture(lab.capture, _ids())
    assert result.findings == () and result.warnings == ()
    assert all(f.encrypted and f.protocol == "tls" and f.decryption == "no-key" for f in result.flows)
    assert result.tls_coverage() == {"flows": len(CASES), "decrypted": 0, "no_key": len(CASES), "failed": 0}


@pytest.mark.parametrize("live_flows", [None, 2])
def test_missing_and_bad_keys_are_counted_not_fatal(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    live_flows: int | None) -> None:
    """Also with flows let go during the scan (live_flows: their sessions go, their outcome and warnings stay)."""
    if live_flows is not None:
        monkeypatch.setattr(scanner_module, "MAX_LIVE_FLOWS", live_flows)
    lines = [line for line in lab.keylog.read_text().splitlines() if line and not line.startswith("#")]
    randoms = list(dict.fromkeys(line.split()[1] for line in lines))
    assert len(randoms) == len(CASES)
    kept = [line for line in lines if line.split()[1] != randoms[0]]  # case 0: no key at all
    # case 3 (TLS 1.2): a wrong master secret; case 1 (TLS 1.3): a wrong client application secret
    kept = [(f"{p[0]} {p[1]} {'00' * 48}" if p[1] == randoms[3] or (p[1] == randoms[1] and p[0] ==
             "CLIENT_TRAFFIC_SECRET_0") else line) for line in kept for p in [line.split()]]
    kept.append("CLIENT_RANDOM not-hex")
    bad = tmp_path / "bad.log"
    bad.write_text("\n".join(kept) + "\n")
    result = scan_capture(lab.capture, _ids(), keylogs=[bad])
    outcome = [f.decryption for f in result.flows]
    assert outcome[0] == "no-key" and outcome[1] == "failed" and outcome[3] == "failed"
    assert outcome.count("decrypted") == len(CASES) - 3
    text = "\n".join(result.warnings)
    assert f"{bad} line {len(kept)}: not a key-log line" in text
    assert f"1 of {len(CASES)} TLS flows had no key" in text
    assert "2 TLS flows could not be decrypted to the end" in text and "failed authentication" in text
    assert "00" * 48 not in text and randoms[1] not in text  # secrets are never printed
    assert result.tls_coverage()["failed"] == 2


def test_corrupt_record_is_counted(tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    conv = tls_conversation(keylog, version="1.3", rsa=False, exchanges=_exchanges(0)[:1])
    flights = list(conv.flights)
    client_last = max(i for i, (c, _) in enumerate(flights) if c)
    data = bytearray(flights[client_last][1])
    data[-3] ^= 0xFF
    flights[client_last] = (True, bytes(data))
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
    add_tls_conversation(conn, flights)
    conn.close()
    result = scan_capture(cap.write_pcap(tmp_path / "c.pcap"), _ids(), keylogs=[keylog])
    assert [f.decryption for f in result.flows] == ["failed"]
    assert any("could not be decrypted" in w for w in result.warnings)


def test_a_gap_stops_decryption_and_says_so(tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    conv = tls_conversation(keylog, version="1.2", cipher="ECDHE-ECDSA-AES128-GCM-SHA256", rsa=False,
                            exchanges=_exchanges(0)[:2])
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
    sent = add_tls_conversation(conn, conv.flights, segment_size=SEGMENT_BYTES)
    conn.close()
    cap.drop([p for p in sent if p in cap.packets][-6:-5])
    result = scan_capture(cap.write_pcap(tmp_path / "c.pcap"), _ids(), keylogs=[keylog])
    assert [f.decryption for f in result.flows] == ["failed"]
    assert any("gap in the TCP stream" in w for w in result.warnings)


def test_tls_coverage_per_phase(lab: Lab) -> None:
    result = scan_capture(lab.capture, _ids(), keylogs=[lab.keylog])
    first = result.flows[0].first_time
    split = result.flows[4].first_time
    phases = (Phase("boot", first - 1, split - 1e-6), Phase("idle", split, first + 3600))
    result = scan_capture(lab.capture, _ids(), keylogs=[lab.keylog], phases=phases)
    coverage = result.tls_coverage()
    rest = len(CASES) - 4
    assert coverage["phases"] == {"boot": {"flows": 4, "decrypted": 4, "no_key": 0, "failed": 0},
                                  "idle": {"flows": rest, "decrypted": rest, "no_key": 0, "failed": 0}}
    assert result.to_json()["capture"]["tls"] == coverage


def test_keylog_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="key log not found"):
        load_keylogs([tmp_path / "missing.log"])
    junk = tmp_path / "junk.log"
    junk.write_text("hello world\n")
    with pytest.raises(InputError, match="holds no TLS secret line"):
        load_keylogs([junk])
    empty = tmp_path / "empty.log"
    empty.write_text("# nothing yet\n")
    assert len(load_keylogs([empty])) == 0


def test_cli_keylog_lists_findings_inside_tls_apart(lab: Lab, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from phonehome.cli import main

    ids = tmp_path / "ids.yaml"
    ids.write_text(f'imei: "{IMEI}"\n')
    out = tmp_path / "out.json"
    env_keylog = os.fspath(lab.keylog)
    code = main(["scan", str(lab.capture), "-i", str(ids), "--keylog", env_keylog, "--keylog", env_keylog,
                 "--json", str(out)])
    assert code == 0  # decrypted findings are not cleartext leaks: the exit code keeps its meaning
    printed = capsys.readouterr().out
    assert "inside TLS" in printed and "tls>plain" in printed and IMEI not in printed
    assert f"{len(CASES)} TLS flows, {len(CASES)} decrypted" in printed
    doc = json.loads(out.read_text())
    assert all(f["decrypted"] and f["encrypted"] for f in doc["findings"])
    assert doc["capture"]["tls"]["decrypted"] == len(CASES)


def _damaged(flights: list[tuple[bool, bytes]], rng: random.Random) -> list[tuple[bool, bytes]]:
    """One random kind of damage to one flight: a flipped byte, a cut, junk, a bad record length, a lost flight."""
    out = list(flights)
    index = rng.randrange(len(out))
    client, data = out[index]
    kind = rng.randrange(5)
    at = rng.randrange(len(data))
    if kind == 0:
        data = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]
    elif kind == 1:
        data = data[:at]
    elif kind == 2:
        data = data[:at] + rng.randbytes(rng.randrange(1, 64)) + data[at:]
    elif kind == 3 and len(data) > 5:
        data = data[:3] + rng.randbytes(2) + data[5:]
    else:
        del out[index]
        return out
    out[index] = (client, data)
    return out


def test_damaged_tls_never_crashes_and_is_counted(lab: Lab, tmp_path: Path) -> None:
    """Hostile or damaged records (bit flips, cuts, junk, bad lengths, lost flights) on every suite: the scan
    completes, and a flow that could not be decrypted to the end says so."""
    keylog = load_keylogs([lab.keylog])
    rng = random.Random(11)
    path = tmp_path / "damaged.pcap"
    for round_ in range(8):
        cap = CaptureBuilder()
        for conv in lab.conversations:
            conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
            add_tls_conversation(conn, _damaged(conv.flights, rng), segment_size=SEGMENT_BYTES * 4)
            conn.close()
        cap.write_pcap(path)
        result = scan_capture(path, _ids(), keylog=keylog)
        states = [f.decryption for f in result.flows]
        assert len(states) == len(CASES) and set(states) <= {"decrypted", "failed", "no-key"}, round_
        failed = states.count("failed")
        if failed:
            assert any(f"{failed} TLS flows could not be decrypted" in w for w in result.warnings), result.warnings
        assert result.cleartext_findings == ()


def test_http2_inside_tls_is_decoded(tmp_path: Path) -> None:
    """ALPN h2: the decrypted stream goes through the HTTP/2 decoder (HPACK with Huffman coding, DATA per stream),
    the server's side too (it sends no preface). Findings are per flow: one identifier per side here."""
    from hpack import Encoder

    keylog = tmp_path / "keys.log"
    request = (H2_PREFACE + h2_settings()
               + h2_headers(1, Encoder().encode([(":method", "POST"), (":scheme", "https"),
                                                 (":authority", "reg.example.net"), (":path", f"/r?imei={IMEI}")]))
               + h2_data(1, json.dumps({"imei": IMEI}).encode()))
    response = h2_settings() + h2_headers(1, Encoder().encode([(":status", "200"), ("x-serial", SERIAL)]),
                                          end_stream=True)
    conv = tls_conversation(keylog, version="1.3", rsa=False, alpn=("h2",), exchanges=[(request, response)],
                            server_name="reg.example.net")
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
    add_tls_conversation(conn, conv.flights, segment_size=SEGMENT_BYTES)
    conn.close()
    result = scan_capture(cap.write_pcap(tmp_path / "h2.pcap"), _ids(), keylogs=[keylog])
    found = {(f.identifier, f.encoding, f.protocol, f.src) for f in result.decrypted_findings}
    assert found == {("imei", "tls>plain", "http2", PHONE_IP),  # a Huffman-coded :path and a DATA frame
                     ("serial", "tls>plain", "http2", SERVER_IP)}  # the server's header block
    assert result.cleartext_findings == ()


def test_the_cleartext_handshake_stays_a_cleartext_finding(tmp_path: Path) -> None:
    """With keys, the client's cleartext handshake records are still scanned as sent: an identifier in the SNI is
    a cleartext leak (it fails the cleartext tests), while the same identifier in the request is inside TLS."""
    keylog = tmp_path / "keys.log"
    conv = tls_conversation(keylog, version="1.2", cipher="ECDHE-ECDSA-AES128-GCM-SHA256", rsa=False,
                            exchanges=_exchanges(0)[:1], server_name=f"{IMEI}.reg.example.net")
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
    add_tls_conversation(conn, conv.flights, segment_size=SEGMENT_BYTES)
    conn.close()
    result = scan_capture(cap.write_pcap(tmp_path / "sni.pcap"), _ids(), keylogs=[keylog])
    (leak,) = result.cleartext_findings
    assert (leak.identifier, leak.encoding, leak.protocol, leak.decrypted) == ("imei", "plain", "tls-handshake", False)
    assert [(f.identifier, f.encoding) for f in result.decrypted_findings] == [("imei", "tls>plain")]


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_tls_through_an_http_connect_proxy(tmp_path: Path, version: str) -> None:
    """A phone behind an HTTP proxy (a lab's Wi-Fi proxy, mitmproxy) sends `CONNECT host:443` and then TLS on
    the same connection. That TLS was scanned as HTTP: the flow said cleartext http, TLS coverage did not count
    it and key logs did not decrypt it (a real capture, PCAPdroid's http_proxy.pcap). Now: the CONNECT head is
    scanned as HTTP (a leak there is a cleartext finding), the rest is TLS, decrypted with the key log, and the
    frames cited are those that carried the record."""
    keylog = tmp_path / "keys.log"
    body = json.dumps({"padding": "p" * 500, "imei": IMEI}).encode()
    request = http_request("POST", "/report", host="reg.example.net", body=body)
    cipher = "" if version == "1.3" else "ECDHE-ECDSA-AES128-GCM-SHA256"
    conv = tls_conversation(keylog, version=version, cipher=cipher, rsa=False,
                            exchanges=[(request, http_response(b"ok"))], server_name="reg.example.net")
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 8080)
    conn.send(f"CONNECT reg.example.net:443 HTTP/1.1\r\nHost: reg.example.net:443\r\nX-Serial: {SERIAL}\r\n\r\n"
              .encode())
    conn.reply(b"HTTP/1.1 200 Connection established\r\n\r\n")
    packets = _send_flights(conn, conv)
    conn.close()
    path = cap.write_pcap(tmp_path / "c.pcap")

    opaque = scan_capture(path, _ids())
    assert [(f.identifier, f.protocol, f.encrypted) for f in opaque.findings] == [("serial", "http", False)]
    (flow,) = opaque.flows
    assert (flow.protocol, flow.encrypted, flow.decryption, flow.host) == ("tls", True, "no-key", "reg.example.net")
    assert opaque.tls_coverage() == {"flows": 1, "decrypted": 0, "no_key": 1, "failed": 0}

    result = scan_capture(path, _ids(), keylogs=[keylog])
    assert [f.identifier for f in result.cleartext_findings] == ["serial"]
    (finding,) = result.decrypted_findings
    assert (finding.identifier, finding.encoding.startswith("tls>")) == ("imei", True)
    numbers = [cap.packets.index(p) + 1 for p in packets]
    assert set(finding.frames) <= set(numbers)
    assert result.flows[0].decryption == "decrypted"


def test_tls_looking_bytes_after_plain_http_are_not_a_tunnel(tmp_path: Path) -> None:
    """Only a CONNECT (and, the other way, a proxy's first answer) opens a tunnel: on a keep-alive connection, a
    later 2xx with no length whose body starts like a TLS record is a body delimited by the close, scanned."""
    record = b"\x16\x03\x03\x00\x40\x02" + bytes(3) + f"imei={IMEI}".encode() + bytes(40)
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("GET", "/a", host="api.example"))
    conn.reply(http_response(b"first"))
    conn.send(http_request("GET", "/b", host="api.example"))
    conn.reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + record)
    conn.close()
    result = scan_capture(cap.write_pcap(tmp_path / "c.pcap"), _ids())
    assert [(f.identifier, f.protocol) for f in result.findings] == [("imei", "http")]
    assert not result.flows[0].encrypted
