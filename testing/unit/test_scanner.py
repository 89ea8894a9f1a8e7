"""scan_capture end to end, on captures built with phonehome.testing.captures.

One test per bullet of issue 2's "What it must catch" (forms, encodings, transport, protocols, encrypted vs
cleartext, no false positives), plus the result's contract (frames, hosts, phases, JSON, masking, warnings).
"""

from __future__ import annotations

import base64
import bz2
import hashlib
import json
import random
import struct
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import brotli
import pytest

from phonehome.errors import InputError
from phonehome.identifiers import Identifiers, mask, parse_identifiers
from phonehome.scan import obfuscation
from phonehome.scan import scanner as scanner_module
from phonehome.scan.forms import tbcd
from phonehome.scan.protocols import STREAM_BODY_BYTES
from phonehome.scan.scanner import (
    Finding,
    Phase,
    ScanResult,
    compose_encoding,
    load_phases,
    parse_phases,
    scan_capture,
)
from phonehome.testing.captures import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    CaptureBuilder,
    Packet,
    deflate_bytes,
    dns_query,
    dns_response,
    dtls_record,
    ethernet_frame,
    gzip_bytes,
    http_request,
    http_response,
    ip_packet,
    merge_pcapng,
    mqtt_connect,
    mqtt_publish,
    quic_initial,
    ssh_banner,
    tls_application_data,
    tls_client_hello,
    tls_server_hello,
    udp_datagram,
    websocket_accept,
    websocket_frame,
    websocket_upgrade,
)

IMEI = "356938035643809"
IMSI = "310260000000001"
ICCID = "8901260000000000001"
SERIAL = "R58M12ABCDE"
ANDROID_ID = "9774d56d682e549c"
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
MAC = "ac:37:43:4d:5e:6f"
PHONE = "+49 30 1234567"
LAT, LON = 52.5163, 13.3777

IDS: dict[str, object] = {
    "imei": IMEI, "imsi": IMSI, "iccid": ICCID, "serial": SERIAL, "android_id": ANDROID_ID, "gaid": GAID,
    "wifi_mac": MAC, "phone": PHONE, "location": {"lat": LAT, "lon": LON}, "custom": {"account": "alice@example.org"},
}
PHONE_IP = "10.0.0.2"
SERVER_IP = "93.184.216.34"


def _ids(data: Mapping[str, object] = IDS) -> Identifiers:
    return parse_identifiers(dict(data), source="test")


def _scan(tmp_path: Path, cap: CaptureBuilder, ids: Mapping[str, object] = IDS, **kwargs: object) -> ScanResult:
    path = cap.write_pcap(tmp_path / "capture.pcap")
    return scan_capture(path, _ids(ids), **kwargs)  # type: ignore[arg-type]


def _raw_tcp(payload: bytes, *, segment_size: int | None = None, dport: int = 5000) -> CaptureBuilder:
    """A capture where the phone sends ``payload`` over a plain TCP connection (unknown protocol)."""
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, dport)
    conn.send(payload, segment_size=segment_size)
    conn.close()
    return cap


def _post(body: bytes, headers: Mapping[str, str] | None = None, **kwargs: object) -> CaptureBuilder:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("POST", "/collect", host="collect.example", body=body, headers=headers,
                           **kwargs))  # type: ignore[arg-type]
    conn.reply(http_response(b"ok"))
    conn.close()
    return cap


def _found(result: ScanResult, identifier: str) -> list[Finding]:
    return [f for f in result.findings if f.identifier == identifier]


def _encodings(result: ScanResult, identifier: str) -> set[str]:
    return {f.encoding for f in _found(result, identifier)}


def _assert_found(result: ScanResult, identifier: str, encoding: str | None = None) -> Finding:
    hits = [f for f in _found(result, identifier) if encoding is None or f.encoding == encoding]
    assert hits, f"{identifier} ({encoding}) not found; found: {[(f.identifier, f.encoding) for f in result.findings]}"
    return hits[0]


# --- forms of each identifier ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "identifier"), [
    (SERIAL.lower(), "serial"), (SERIAL, "serial"), ("r58m12AbCdE", "serial"), (ANDROID_ID.upper(), "android_id"),
])
def test_case_insensitive_where_letters_occur(tmp_path: Path, text: str, identifier: str) -> None:
    result = _scan(tmp_path, _raw_tcp(b"id=" + text.encode() + b";"))
    assert {f.identifier for f in result.findings} == {identifier}


@pytest.mark.parametrize("text", [IMEI, "35-693803-564380-9", "35 693803 564380 9", "35693803564380" + "42"])
def test_imei_with_and_without_separators_and_as_imeisv(tmp_path: Path, text: str) -> None:
    result = _scan(tmp_path, _raw_tcp(b"dev:" + text.encode() + b"\n"))
    _assert_found(result, "imei")


@pytest.mark.parametrize("text", ["+49301234567", "030 1234567", "0049301234567", "+49 30 1234567",
                                  "+49-30-1234567", "030-1234567"])
def test_phone_numbers_in_every_notation(tmp_path: Path, text: str) -> None:
    result = _scan(tmp_path, _raw_tcp(b"msisdn=" + text.encode() + b"&"))
    _assert_found(result, "phone")


def test_short_phone_forms_only_at_digit_boundaries(tmp_path: Path) -> None:
    result = _scan(tmp_path, _raw_tcp(b"n=99301234567123;"))
    assert not _found(result, "phone")


@pytest.mark.parametrize("text", ["ac:37:43:4d:5e:6f", "AC-37-43-4D-5E-6F", "ac37434d5e6f", "AC37434D5E6F"])
def test_macs_with_any_separator_and_case(tmp_path: Path, text: str) -> None:
    result = _scan(tmp_path, _raw_tcp(b"bssid=" + text.encode() + b"&"))
    _assert_found(result, "wifi_mac")


@pytest.mark.parametrize("text", [GAID, GAID.replace("-", ""), GAID.upper()])
def test_gaid_with_or_without_dashes(tmp_path: Path, text: str) -> None:
    result = _scan(tmp_path, _raw_tcp(b"adid=" + text.encode() + b"&"))
    _assert_found(result, "gaid")


@pytest.mark.parametrize("text", [
    b"lat=52.516&lon=13.378",                # 3 decimals, within ~100 m
    b"lon=13.37771,lat=52.51634",           # reversed order
    b'{"lat":52516300,"lng":13377700}',     # E6
    b"p=525163000,133777000",                # E7
    b"$GPGGA,123519,5230.978,N,01322.662,E,1,08,0.9,545.4,M,46.9,M,,*47",  # NMEA degrees + decimal minutes
])
def test_location_forms(tmp_path: Path, text: bytes) -> None:
    result = _scan(tmp_path, _raw_tcp(text + b"\n"))
    _assert_found(result, "location")


# --- encodings ------------------------------------------------------------------------------------------------


def test_url_encoding(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("GET", "/u?acct=alice%40example.org&m=ac%3A37%3A43%3A4d%3A5e%3A6f", host="u.example"))
    conn.close()
    result = _scan(tmp_path, cap)
    assert _encodings(result, "account") == {"url"}
    assert _encodings(result, "wifi_mac") == {"url"}


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy"])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_base64_and_base64url_at_every_alignment(tmp_path: Path, prefix: bytes, urlsafe: bool) -> None:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    blob = encode(prefix + b"imei:" + IMEI.encode() + b";more")
    result = _scan(tmp_path, _raw_tcp(b"payload=" + blob + b"\n"))
    finding = _assert_found(result, "imei")
    assert "base64" in finding.encoding


@pytest.mark.parametrize("upper", [False, True])
def test_hex_either_case(tmp_path: Path, upper: bool) -> None:
    text = SERIAL.encode().hex()
    result = _scan(tmp_path, _raw_tcp(b"h=" + (text.upper() if upper else text).encode()))
    _assert_found(result, "serial", "hex")


def test_cleartext_starting_like_a_tls_record_is_scanned(tmp_path: Path) -> None:
    result = _scan(tmp_path, _raw_tcp(b"\x16\x03\x01 imei=" + IMEI.encode(), dport=443))
    _assert_found(result, "imei", "plain")


@pytest.mark.parametrize("codec, name", [("utf-16-le", "utf16le"), ("utf-16-be", "utf16be")])
def test_utf16(tmp_path: Path, codec: str, name: str) -> None:
    result = _scan(tmp_path, _raw_tcp(b"\x00\x01" + f"imei={IMEI}".encode(codec)))
    _assert_found(result, "imei", name)


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha224", "sha256", "sha384", "sha512"])
@pytest.mark.parametrize("form", ["hex", "base64", "raw"])
def test_digests_as_hex_base64_and_raw(tmp_path: Path, algorithm: str, form: str) -> None:
    digest = hashlib.new(algorithm, IMEI.encode()).digest()
    encoded = {"hex": digest.hex().encode(), "base64": base64.b64encode(digest), "raw": digest}[form]
    result = _scan(tmp_path, _raw_tcp(b"\x02h:" + encoded + b"\x03"))
    finding = _assert_found(result, "imei")
    assert algorithm in finding.encoding


@pytest.mark.parametrize("name, value", [("imei", IMEI), ("imsi", IMSI), ("iccid", ICCID)])
def test_bcd(tmp_path: Path, name: str, value: str) -> None:
    result = _scan(tmp_path, _raw_tcp(b"\x17\x00" + tbcd(value) + b"\x00\x17"))
    assert any("bcd" in f.encoding for f in _found(result, name))


def test_phone_number_bcd(tmp_path: Path) -> None:
    result = _scan(tmp_path, _raw_tcp(b"\x91" + tbcd("49301234567") + b"\x00"))
    assert any("bcd" in f.encoding for f in _found(result, "phone"))


@pytest.mark.parametrize("fmt, name", [(">Q", "int64be"), ("<Q", "int64le")])
def test_numeric_identifiers_as_64_bit_integers(tmp_path: Path, fmt: str, name: str) -> None:
    result = _scan(tmp_path, _raw_tcp(b"\x7f\x01" + struct.pack(fmt, int(IMEI)) + b"\x7f"))
    _assert_found(result, "imei", name)


@pytest.mark.parametrize("fmt", [">d", "<d", ">f", "<f"])
def test_coordinates_as_ieee754(tmp_path: Path, fmt: str) -> None:
    result = _scan(tmp_path, _raw_tcp(b"\x10pos" + struct.pack(fmt, LAT) + struct.pack(fmt, LON) + b"\x11"))
    _assert_found(result, "location")


def test_nested_layers_three_deep(tmp_path: Path) -> None:
    """base64 of gzip of JSON, sent in an HTTP body."""
    inner = json.dumps({"device": {"serial": SERIAL}}).encode()
    result = _scan(tmp_path, _post(b"blob=" + base64.b64encode(gzip_bytes(inner))))
    _assert_found(result, "serial", "base64>gzip>plain")


def test_hex_of_md5(tmp_path: Path) -> None:
    digest = hashlib.md5(IMEI.encode()).hexdigest().encode()
    result = _scan(tmp_path, _post(b"k=" + digest.hex().encode()))
    finding = _assert_found(result, "imei")
    assert finding.encoding.startswith("hex>") and "md5" in finding.encoding


def test_compose_encoding_names_are_canonical() -> None:
    assert compose_encoding("", "", "plain") == "plain"
    assert compose_encoding("", "base64", "plain") == "base64"
    assert compose_encoding("", "", "base64") == "base64"
    assert compose_encoding("gzip", "base64", "plain") == "gzip>base64>plain"
    assert compose_encoding("gzip", "", "base64") == "gzip>base64>plain"
    assert compose_encoding("", "url", "plain") == "url"
    assert compose_encoding("gzip", "", "md5") == "gzip>md5"


# --- transport ------------------------------------------------------------------------------------------------


def test_identifier_split_across_segments(tmp_path: Path) -> None:
    result = _scan(tmp_path, _raw_tcp(b"imei=" + IMEI.encode() + b";", segment_size=3))
    finding = _assert_found(result, "imei", "plain")
    assert len(finding.frames) >= 5  # every segment carrying a piece of it


def test_out_of_order_segments(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 5000)
    segments = conn.send(b"xxxx imei=" + IMEI.encode() + b"; yyyy", segment_size=4)
    cap.shuffle(segments, seed=2)
    assert cap.packets[3:] != segments
    result = _scan(tmp_path, cap)
    _assert_found(result, "imei", "plain")


def test_retransmission_is_still_one_finding(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 5000)
    segments = conn.send(b"imei=" + IMEI.encode() + b";", segment_size=8)
    cap.retransmit(segments)  # everything sent twice
    result = _scan(tmp_path, cap)
    assert len([f for f in _found(result, "imei") if f.encoding == "plain"]) == 1
    assert result.capture.retransmitted_bytes == len(b"imei=" + IMEI.encode() + b";")


def test_overlapping_segments(tmp_path: Path) -> None:
    from phonehome.testing.captures import PROTO_TCP, TCP_ACK, ip_packet, tcp_segment

    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 5000)
    data = b"imei=" + IMEI.encode() + b";tail"
    start = conn.client_seq
    for offset, end in ((0, 10), (6, 16), (12, len(data))):  # each overlaps the one before
        seg = tcp_segment(PHONE_IP, SERVER_IP, conn.sport, 5000, data[offset:end], seq=start + offset,
                          ack=conn.server_seq, flags=TCP_ACK)
        cap.add_ip(ip_packet(PHONE_IP, SERVER_IP, PROTO_TCP, seg))
    result = _scan(tmp_path, cap)
    assert len(_found(result, "imei")) == 1


def test_ipv4_fragments(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    cap.udp_fragmented(PHONE_IP, SERVER_IP, 4000, 9000, b"A" * 50 + f"imei={IMEI}".encode() + b"B" * 100,
                       fragment_size=16)
    result = _scan(tmp_path, cap)
    finding = _assert_found(result, "imei", "plain")
    assert len(finding.frames) > 1


def test_ipv6(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp("fd00::2", "2001:db8::1", 80)
    conn.send(http_request("GET", f"/?imei={IMEI}", host="v6.example"))
    cap.udp("fd00::2", "2001:db8::1", 4000, 9000, SERIAL.encode())
    result = _scan(tmp_path, cap)
    assert _assert_found(result, "imei").dst == "2001:db8::1"
    assert _assert_found(result, "serial").transport == "udp"


def test_udp(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    cap.udp(PHONE_IP, SERVER_IP, 4000, 9000, b"\x01\x02" + f"{{'gaid':'{GAID}'}}".encode())
    finding = _assert_found(_scan(tmp_path, cap), "gaid")
    assert (finding.transport, finding.sport, finding.dport, finding.protocol) == ("udp", 4000, 9000, "unknown")


@pytest.mark.parametrize("link, vlan", [(LINKTYPE_ETHERNET, None), (LINKTYPE_ETHERNET, 7), (LINKTYPE_LINUX_SLL, None),
                                        (LINKTYPE_LINUX_SLL2, None), (LINKTYPE_RAW, None), (LINKTYPE_NULL, None)])
def test_link_types(tmp_path: Path, link: int, vlan: int | None) -> None:
    cap = CaptureBuilder(link=link, vlan=vlan)
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("GET", f"/?imei={IMEI}", host="l.example"), segment_size=10)
    _assert_found(_scan(tmp_path, cap), "imei", "plain")


@pytest.mark.parametrize("fmt", ["pcap-us", "pcap-ns", "pcapng-multi"])
def test_pcap_us_ns_and_pcapng_with_several_interfaces(tmp_path: Path, fmt: str) -> None:
    a = _raw_tcp(f"imei={IMEI}".encode(), segment_size=5)
    b = CaptureBuilder(link=LINKTYPE_LINUX_SLL2, start_time=a.start_time + 0.0005)
    b.udp("10.9.0.2", SERVER_IP, 4000, 9000, SERIAL.encode())
    path = tmp_path / "c"
    if fmt == "pcapng-multi":
        merge_pcapng(path, [a, b], nanosecond=[False, True])
    else:
        b_eth = CaptureBuilder(start_time=b.start_time)
        b_eth.udp("10.9.0.2", SERVER_IP, 4000, 9000, SERIAL.encode())
        a.packets += b_eth.packets
        a.write_pcap(path, nanosecond=fmt == "pcap-ns")
    result = scan_capture(path, _ids())
    imei = _assert_found(result, "imei")
    _assert_found(result, "serial")
    # frames 1-3 are the handshake, frame 4 carries "imei=", frame 5 the identifier's first digits
    assert imei.time == pytest.approx(a.start_time + a.step * 4, abs=1e-6)
    # in the pcapng the other interface's packet (t0 + 0.5 ms) is frame 2, as Wireshark numbers it
    assert imei.frames[0] == (6 if fmt == "pcapng-multi" else 5)


# --- protocols ------------------------------------------------------------------------------------------------


def test_http_url_headers_and_cookies(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("GET", f"/a?imei={IMEI}", host="h.example",
                           headers={"X-Device-Serial": SERIAL, "Cookie": f"aid={ANDROID_ID}; x=1"}))
    result = _scan(tmp_path, cap)
    for name in ("imei", "serial", "android_id"):
        finding = _assert_found(result, name, "plain")
        assert finding.protocol == "http" and finding.host == "h.example"


def test_http_form_body(tmp_path: Path) -> None:
    result = _scan(tmp_path, _post(b"acct=alice%40example.org&imsi=" + IMSI.encode(),
                                   headers={"Content-Type": "application/x-www-form-urlencoded"}))
    _assert_found(result, "account", "url")
    _assert_found(result, "imsi", "plain")


def test_http_chunked_body(tmp_path: Path) -> None:
    result = _scan(tmp_path, _post(f'{{"gaid":"{GAID}"}}'.encode(), chunked=True, chunk_size=5))
    finding = _assert_found(result, "gaid", "plain")
    assert finding.protocol == "http"


@pytest.mark.parametrize("coding, compress", [("gzip", gzip_bytes), ("deflate", deflate_bytes),
                                              ("br", brotli.compress)])
def test_http_compressed_bodies(tmp_path: Path, coding: str, compress: Callable[[bytes], bytes]) -> None:
    body = compress(json.dumps({"imei": IMEI, "pad": "x" * 200}).encode())
    result = _scan(tmp_path, _post(body, headers={"Content-Encoding": coding}, chunked=True, chunk_size=11))
    finding = _assert_found(result, "imei")
    assert finding.encoding == {"gzip": "gzip", "deflate": "deflate", "br": "brotli"}[coding] + ">plain"


def test_http_pipelined_requests(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("GET", "/1", host="p.example") + http_request("POST", "/2", host="p.example",
                                                                         body=b"x=1")
              + http_request("GET", f"/3?serial={SERIAL}", host="p.example"), segment_size=50)
    finding = _assert_found(_scan(tmp_path, cap), "serial", "plain")
    assert finding.protocol == "http"


def test_websocket_client_frames_unmasked(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(websocket_upgrade("/push", host="ws.example"))
    conn.reply(websocket_accept())
    conn.send(websocket_frame(json.dumps({"imei": IMEI}).encode(), mask_key=b"\x12\x34\x56\x78"), segment_size=9)
    conn.reply(websocket_frame(b"ack", mask_key=None))
    finding = _assert_found(_scan(tmp_path, cap), "imei", "plain")
    assert finding.protocol == "websocket" and finding.host == "ws.example"


def test_dns_names_matched_decoded(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    cap.udp(PHONE_IP, "10.0.0.1", 5353, 53, dns_query(f"{SERIAL.lower()}.telemetry.example"))
    cap.udp(PHONE_IP, "10.0.0.1", 5354, 53, dns_query("ac-37-43-4d-5e-6f.mac.example"))
    result = _scan(tmp_path, cap)
    assert _assert_found(result, "serial").protocol == "dns"
    _assert_found(result, "wifi_mac")


def test_tls_client_hello_sni_is_cleartext_in_an_encrypted_flow(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
    conn.send(tls_client_hello(f"{IMEI}.push.example", padding=1500), segment_size=1000)  # spans two segments
    conn.reply(tls_server_hello())
    conn.send(tls_application_data(f"serial={SERIAL}".encode()))
    result = _scan(tmp_path, cap)
    finding = _assert_found(result, "imei", "plain")
    assert finding.protocol == "tls-handshake" and finding.encrypted is False
    assert not _found(result, "serial")
    (flow,) = result.flows
    assert flow.encrypted and flow.protocol == "tls"


def test_tls_alpn_is_scanned(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
    conn.send(tls_client_hello("a.example", alpn=(f"dev-{ANDROID_ID}",)))
    _assert_found(_scan(tmp_path, cap), "android_id")


def test_mqtt_connect_and_publish(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 1883)
    conn.send(mqtt_connect(f"dev-{IMEI}", username=SERIAL))
    conn.send(mqtt_publish("telemetry/loc", gzip_bytes(f"{LAT},{LON}".encode())), segment_size=7)
    result = _scan(tmp_path, cap)
    assert _assert_found(result, "imei").protocol == "mqtt"
    _assert_found(result, "serial")
    assert _assert_found(result, "location").encoding == "gzip>plain"


def test_unknown_tcp_and_udp_payloads_raw(tmp_path: Path) -> None:
    cap = _raw_tcp(b"\x00\x00\x00\x20" + IMSI.encode() + b"\x00" * 8, dport=31337)
    cap.udp(PHONE_IP, SERVER_IP, 4000, 31338, b"\xff\xfe" + GAID.encode())
    result = _scan(tmp_path, cap)
    assert _assert_found(result, "imsi").protocol == "unknown"
    assert _assert_found(result, "gaid").protocol == "unknown"


# --- encrypted vs cleartext, by content ---------------------------------------------------------------------------


def test_plain_http_on_443_is_cleartext(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 443)
    conn.send(http_request("GET", f"/?imei={IMEI}", host="h.example"))
    finding = _assert_found(_scan(tmp_path, cap), "imei")
    assert finding.protocol == "http" and not finding.encrypted


def test_tls_on_an_odd_port_is_encrypted(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 31337)
    conn.send(tls_client_hello(None))
    conn.reply(tls_server_hello())
    conn.send(tls_application_data(IMEI.encode()))
    result = _scan(tmp_path, cap)
    assert not result.findings and result.flows[0].encrypted


@pytest.mark.parametrize("kind", ["dtls", "quic", "ssh"])
def test_dtls_quic_ssh_payloads_are_not_leaks(tmp_path: Path, kind: str) -> None:
    cap = CaptureBuilder()
    secret = f"imei={IMEI}".encode()
    if kind == "ssh":
        conn = cap.tcp(PHONE_IP, SERVER_IP, 2222)
        conn.send(ssh_banner() + secret)
        conn.reply(ssh_banner())
        conn.send(secret)
    else:
        first = dtls_record(secret) if kind == "dtls" else quic_initial(secret)
        cap.udp(PHONE_IP, SERVER_IP, 4000, 4433, first)
        cap.udp(PHONE_IP, SERVER_IP, 4000, 4433, b"\x41" + secret)  # a later short-header packet
        cap.udp(SERVER_IP, PHONE_IP, 4433, 4000, secret)
    result = _scan(tmp_path, cap)
    assert result.cleartext_findings == ()
    assert result.flows[0].encrypted and result.flows[0].protocol == kind


# --- no false positives ---------------------------------------------------------------------------------------


def test_no_false_positives(tmp_path: Path) -> None:
    rng = random.Random(11)
    digits = " ".join(str(rng.randrange(10 ** 14, 10 ** 15)) for _ in range(2000)).encode()
    other = (b"imei=356938035643817&serial=R58M12ABCDF&mac=ac:37:43:4d:5e:70&gaid=38400000-8cf0-11bd-b23e-"
             b"10b96e40000e&imsi=310260000000002")
    tac = b"tac=35693803&model=SM-G991B"
    city = b"lat=52.5&lon=13.4&lat2=52.52&lon2=13.38"
    result = _scan(tmp_path, _post(digits + b"&" + other + b"&" + tac + b"&" + city))
    assert result.findings == (), [(f.identifier, f.encoding, f.excerpt) for f in result.findings]


def test_another_devices_values_are_not_leaks(tmp_path: Path) -> None:
    other = dict(IDS, imei="490154203237518", serial="ZX1G22ABCDE")
    result = _scan(tmp_path, _raw_tcp(f"imei={IMEI}&serial={SERIAL}".encode()), ids=other)
    assert not _found(result, "imei") and not _found(result, "serial")


# --- the result -----------------------------------------------------------------------------------------------


def test_frames_are_one_based_and_hosts_come_from_dns(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    cap.udp(PHONE_IP, "10.0.0.1", 5353, 53, dns_query("api.tracker.example"))
    cap.udp("10.0.0.1", PHONE_IP, 53, 5353, dns_response("api.tracker.example", [SERVER_IP], cname="edge.example"))
    cap.udp(PHONE_IP, SERVER_IP, 4000, 9000, IMEI.encode())
    finding = _assert_found(_scan(tmp_path, cap), "imei")
    assert finding.frames == (3,)
    assert finding.host == "api.tracker.example"


def test_one_finding_per_flow_identifier_encoding_with_all_frames(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    for _ in range(3):
        conn.send(http_request("GET", f"/?imei={IMEI}", host="r.example"))
    result = _scan(tmp_path, cap)
    (finding,) = _found(result, "imei")
    assert finding.frames == (4, 5, 6)


def test_phases_split_findings(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("GET", f"/?imei={IMEI}", host="r.example"))  # frame 4
    conn.send(http_request("GET", f"/?imei={IMEI}", host="r.example"))  # frame 5
    t4, t5 = cap.packets[3].time, cap.packets[4].time
    phases = (Phase("boot", t4 - 0.0001, t4 + 0.0001), Phase("unlock", t5 - 0.0001, t5 + 0.0001))
    result = _scan(tmp_path, cap, phases=phases)
    assert sorted((f.phase, f.frames) for f in _found(result, "imei")) == [("boot", (4,)), ("unlock", (5,))]
    assert result.to_json()["capture"]["phases"][0]["name"] == "boot"


def test_json_shape_and_masking(tmp_path: Path) -> None:
    result = _scan(tmp_path, _raw_tcp(f"serial={SERIAL} imei={IMEI}".encode()))
    data = json.loads(json.dumps(result.to_json()))
    assert set(data) == {"capture", "findings", "flows"}
    keys = {"identifier", "encoding", "transport", "src", "sport", "dst", "dport", "host", "protocol", "encrypted",
            "frames", "time", "phase", "excerpt"}
    for finding in data["findings"]:
        assert keys <= set(finding)
        assert SERIAL not in finding["excerpt"] and IMEI not in finding["excerpt"]
    assert {f["value"] for f in data["findings"]} == {mask(SERIAL), mask(IMEI)}  # masked, as in the table
    assert result.to_json(show_identifiers=True)["findings"][0]["value"] in (SERIAL, IMEI)
    (flow,) = data["flows"]
    assert {"transport", "src", "sport", "dst", "dport", "host", "protocol", "encrypted", "bytes", "frames"} <= set(flow)
    assert SERIAL not in json.dumps(data) and IMEI not in json.dumps(data)


def test_streamed_json_equals_to_json(tmp_path: Path) -> None:
    cap = _raw_tcp(f"serial={SERIAL} imei={IMEI}".encode())
    cap.udp(PHONE_IP, SERVER_IP, 4000, 9000, b"nothing")
    result = _scan(tmp_path, cap, phases=(Phase("all", 0, 2e9),))
    out = tmp_path / "out.json"
    with out.open("w") as handle:
        result.write_json(handle)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result.to_json()))


def test_identifier_in_a_host_name_is_masked(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("GET", "/", host=f"{IMEI}.t.example"))
    result = _scan(tmp_path, cap)
    assert IMEI not in json.dumps(result.to_json())


def test_truncated_capture_completes_with_a_warning(tmp_path: Path) -> None:
    path = _raw_tcp(f"imei={IMEI}".encode()).write_pcap(tmp_path / "t.pcap")
    path.write_bytes(path.read_bytes()[:-10])
    result = scan_capture(path, _ids())
    assert any("truncated" in w for w in result.warnings)
    _assert_found(result, "imei")


def test_sequence_gap_is_reported(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 5000)
    segments = conn.send(b"a" * 100 + f"imei={IMEI}".encode(), segment_size=50)
    cap.drop(segments[:1])
    result = _scan(tmp_path, cap)
    assert result.capture.tcp_gaps == 1 and any("gaps in TCP" in w for w in result.warnings)
    _assert_found(result, "imei")


@pytest.mark.timeout(60)
def test_many_open_flows_keep_memory_bounded(tmp_path: Path) -> None:
    """2,000 connections each waiting on a missing first segment: held bytes stay under the budget."""
    cap = CaptureBuilder()
    for i in range(2000):
        conn = cap.tcp(PHONE_IP, SERVER_IP, 6000 + i % 50, sport=10000 + i)
        segments = conn.send(b"z" * 3000, segment_size=1000)
        cap.packets.remove(segments[0])
    result = _scan(tmp_path, cap)
    assert len(result.flows) == 2000
    assert result.capture.tcp_gaps == 2000


def _polls(count: int) -> CaptureBuilder:
    """A phone polling: per poll a DNS lookup (its own source port) and a short connection sending the IMEI."""
    cap = CaptureBuilder()
    for i in range(count):
        name = f"poll{i}.example"
        cap.udp(PHONE_IP, "10.0.0.1", 30000 + i, 53, dns_query(name, qid=i))
        cap.udp("10.0.0.1", PHONE_IP, 53, 30000 + i, dns_response(name, [f"93.184.{i}.1"], qid=i))
        conn = cap.tcp(PHONE_IP, f"93.184.{i}.1", 80, sport=20000 + i)
        conn.send(http_request("GET", f"/poll?imei={IMEI}&n={i}", host=name))
        conn.reply(http_response(b"{}"))
        conn.close()
    return cap


def test_flows_over_are_let_go_past_the_live_bound_and_the_results_are_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_LIVE_FLOWS flows, those that are over (closed, answered) are written to the flow table and their
    state dropped: findings, flows (hosts from DNS included) and warnings are those of an unbounded scan."""
    cap = _polls(60)
    unbounded = _scan(tmp_path, cap)
    monkeypatch.setattr(scanner_module, "MAX_LIVE_FLOWS", 8)
    bounded = _scan(tmp_path, cap)
    assert len(bounded.flows) == 120 and bounded.flows[119].host == "poll59.example"
    assert list(bounded.flows) == list(unbounded.flows)
    assert bounded.findings == unbounded.findings and len({f.frames for f in bounded.findings}) == 60
    assert bounded.warnings == unbounded.warnings == ()


def test_flows_still_going_are_let_go_only_past_the_bound_and_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More flows going at once than the bound: the least recently active are closed early, said in a warning;
    what they send after that is a new flow, still scanned."""
    monkeypatch.setattr(scanner_module, "MAX_LIVE_FLOWS", 8)
    cap = CaptureBuilder()
    conns = [cap.tcp(PHONE_IP, SERVER_IP, 5000, sport=21000 + i) for i in range(20)]
    for conn in conns:
        conn.send(b"hello ")
    for conn in conns:
        conn.send(f"imei={IMEI}".encode())
    result = _scan(tmp_path, cap)
    assert len(_found(result, "imei")) == 20
    assert any("flows were let go before they were over" in w for w in result.warnings)
    assert len(result.flows) > 20


def test_an_idle_open_connection_outlives_the_sweeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A WebSocket quiet for two minutes while many lookups come and go: the sweeps let the lookups go, not the
    connection, whose decoder state (masked frames) the next message needs: one flow, the IMEI found in it."""
    monkeypatch.setattr(scanner_module, "MAX_LIVE_FLOWS", 8)
    cap = CaptureBuilder()
    ws = cap.tcp(PHONE_IP, SERVER_IP, 80, sport=33333)
    ws.send(websocket_upgrade("/push", host="ws.example"))
    ws.reply(websocket_accept())
    ws.send(websocket_frame(b'{"hello":1}'))
    cap.start_time += 120
    for i in range(20):
        cap.udp(PHONE_IP, "10.0.0.1", 10000 + i, 53, dns_query(f"h{i}.example", qid=i))
        cap.udp("10.0.0.1", PHONE_IP, 53, 10000 + i, dns_response(f"h{i}.example", ["1.2.3.4"], qid=i))
    ws.send(websocket_frame(json.dumps({"imei": IMEI}).encode() + b" " * 6000))
    result = _scan(tmp_path, cap)
    assert [(f.protocol, f.frames) for f in result.flows if f.sport == 33333] == [("websocket", 11)]
    assert [(f.encoding, f.protocol) for f in _found(result, "imei")] == [("plain", "websocket")]
    assert result.warnings == ()


def test_the_flow_just_begun_is_never_let_go_even_when_the_clock_went_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection an hour before the last (a clock set back each time): the newest flow looks the oldest,
    yet the packet that began it, and those after it, stay in it."""
    monkeypatch.setattr(scanner_module, "MAX_LIVE_FLOWS", 4)
    cap = CaptureBuilder()
    for i in range(12):
        first = len(cap.packets)
        conn = cap.tcp(PHONE_IP, SERVER_IP, 5000, sport=22000 + i)
        conn.send(f"imei={IMEI}".encode())
        cap.packets[first:] = [Packet(p.data, 1e9 - 3600.0 * i + 0.001 * k, p.orig_len)
                               for k, p in enumerate(cap.packets[first:])]
    result = _scan(tmp_path, cap)
    assert len(result.flows) == 12 and [flow.frames for flow in result.flows] == [4] * 12
    assert len(_found(result, "imei")) == 12


def test_a_leak_across_two_pieces_of_a_long_download_is_found(tmp_path: Path) -> None:
    """A long body as sent is scanned in pieces as it arrives (protocols.STREAM_BODY_BYTES): an IMEI across the
    boundary of two is found, citing the segments that carried it."""
    body = bytearray(b"\x00" * (STREAM_BODY_BYTES * 2 + 5000))
    at = STREAM_BODY_BYTES - 7
    body[at:at + 15] = IMEI.encode()
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(http_request("POST", "/upload", host="up.example", body=bytes(body),
                           headers={"Content-Type": "application/octet-stream"}))
    conn.close()
    result = _scan(tmp_path, cap)
    finding = _assert_found(result, "imei", "plain")
    assert finding.protocol == "http" and finding.host == "up.example" and len(finding.frames) == 1


def test_empty_identifiers_are_rejected(tmp_path: Path) -> None:
    path = _raw_tcp(b"x").write_pcap(tmp_path / "c.pcap")
    with pytest.raises(InputError):
        scan_capture(path, Identifiers(values=()))


def test_load_phases(tmp_path: Path) -> None:
    path = tmp_path / "phases.json"
    path.write_text('[{"name": "boot", "start": 1.0, "end": 2.5}]')
    assert load_phases(path) == (Phase("boot", 1.0, 2.5),)


@pytest.mark.parametrize("data, problem", [
    ({"name": "x"}, "must be a JSON list"),
    ([{"name": "x", "start": 1}], "needs 'name', 'start' and 'end'"),
    ([{"name": "", "start": 1, "end": 2}], "non-empty string"),
    ([{"name": "x", "start": "a", "end": 2}], "must be a number"),
    ([{"name": "x", "start": 3, "end": 2}], "ends before it starts"),
])
def test_bad_phases(data: object, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        parse_phases(data, source="p.json")


def test_bad_phases_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('[\n{"name": "x",,}\n]')
    with pytest.raises(InputError, match="line 2"):
        load_phases(path)


def test_zlib_in_raw_udp_is_peeled(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    cap.udp(PHONE_IP, SERVER_IP, 4000, 9000, b"\x00\x01" + zlib.compress(f"wifi={MAC}".encode()))
    _assert_found(_scan(tmp_path, cap), "wifi_mac")


def test_unknown_link_type_only_is_input_error(tmp_path: Path) -> None:
    from phonehome.testing.captures import Packet, pcap_bytes

    path = tmp_path / "user0.pcap"
    path.write_bytes(pcap_bytes([Packet(b"\x00" * 60, 1.0), Packet(b"\x00" * 60, 2.0)], link=147))  # USER0
    with pytest.raises(InputError, match="link type 147 is not supported"):
        scan_capture(path, _ids())


def test_unknown_link_type_beside_known_ones_is_a_warning(tmp_path: Path) -> None:
    from phonehome.testing.captures import Packet, pcapng_bytes

    known = _raw_tcp(f"imei={IMEI}".encode())
    path = tmp_path / "mixed.pcapng"
    packets = [(0, p) for p in known.packets] + [(1, Packet(b"\x00" * 60, known.now))]
    path.write_bytes(pcapng_bytes(packets, links=(LINKTYPE_ETHERNET, 147)))
    result = scan_capture(path, _ids())
    _assert_found(result, "imei")
    assert any("link type 147" in w for w in result.warnings)
    assert result.capture.undecoded == {"unknown link type": {"packets": 1, "bytes": 60}}


def test_snaplen_cut_packets_are_a_warning(tmp_path: Path) -> None:
    from phonehome.testing.captures import Packet

    cap = _raw_tcp(f"imei={IMEI}".encode())
    last = cap.packets[-1]
    cap.packets[-1] = Packet(last.data[:40], last.time, orig_len=len(last.data))
    result = _scan(tmp_path, cap)
    assert any("snap length" in w for w in result.warnings)


def test_quic_initial_client_hello_is_decrypted_and_scanned(tmp_path: Path) -> None:
    """QUIC Initial keys are public: the SNI inside is cleartext, and names the flow's host."""
    from phonehome.testing.captures import quic_client_initials

    cap = CaptureBuilder()
    for datagram in quic_client_initials(f"{IMEI}.quic.example", padding=1500):  # two Initial packets
        cap.udp(PHONE_IP, SERVER_IP, 50000, 443, datagram)
    cap.udp(SERVER_IP, PHONE_IP, 443, 50000, quic_initial(b"\x00" * 100))
    cap.udp(PHONE_IP, SERVER_IP, 50000, 443, b"\x41" + f"imei={IMEI}".encode())  # 1-RTT: encrypted
    result = _scan(tmp_path, cap)
    (finding,) = _found(result, "imei")
    assert finding.protocol == "quic-handshake" and finding.frames == (1, 2) and not finding.encrypted
    (flow,) = result.flows
    assert flow.encrypted and flow.protocol == "quic" and flow.host is not None and flow.host.endswith("quic.example")
    assert flow.frames == 4


def test_quic_flow_host_comes_from_its_sni(tmp_path: Path) -> None:
    from phonehome.testing.captures import quic_client_initials

    cap = CaptureBuilder()
    for datagram in quic_client_initials("www.example.net"):
        cap.udp(PHONE_IP, SERVER_IP, 50001, 443, datagram)
    cap.udp(PHONE_IP, SERVER_IP, 50001, 443, b"\x41" + SERIAL.encode())
    result = _scan(tmp_path, cap)
    assert result.findings == ()
    assert result.flows[0].host == "www.example.net"


def _short_header(rng: random.Random, cid: bytes, body: bytes) -> bytes:
    """A QUIC short-header packet: its first byte's low bits vary (header protection), then the connection ID."""
    return bytes((0x40 | rng.randrange(32),)) + cid + body


def test_quic_seen_only_after_its_handshake_is_encrypted(tmp_path: Path) -> None:
    """A QUIC flow whose Initial packets the capture missed: random-looking short-header datagrams to UDP 443
    with one connection ID, four in a row, make it encrypted; the rest of it is not scanned (nor a binary
    coordinate's false positive waiting to happen)."""
    rng = random.Random(3)
    cap = CaptureBuilder()
    for _ in range(6):
        cap.udp(PHONE_IP, SERVER_IP, 50002, 443, _short_header(rng, b"\x5a\x11\x22\x33\x44\x55\x66\x77",
                                                                 rng.randbytes(1200)))
        cap.udp(SERVER_IP, PHONE_IP, 443, 50002, _short_header(rng, b"", rng.randbytes(1200)))  # 0-length CID
    result = _scan(tmp_path, cap)
    (flow,) = result.flows
    assert flow.encrypted and flow.protocol == "quic" and flow.frames == 12 and result.findings == ()


def test_quic_acks_between_full_packets_neither_count_nor_reset(tmp_path: Path) -> None:
    """A QUIC client's small ACK-only packets, too short to judge, come between its full ones: the full ones still
    make a run, and the flow is QUIC from the fourth of them."""
    rng = random.Random(6)
    cid = b"\x5a\x11\x22\x33\x44\x55\x66\x77"
    cap = CaptureBuilder()
    for _ in range(5):
        cap.udp(PHONE_IP, SERVER_IP, 50005, 443, _short_header(rng, cid, rng.randbytes(1200)))
        cap.udp(PHONE_IP, SERVER_IP, 50005, 443, _short_header(rng, cid, rng.randbytes(30)))
    result = _scan(tmp_path, cap)
    (flow,) = result.flows
    assert flow.encrypted and flow.protocol == "quic" and flow.frames == 10


def _telemetry(shape: str, i: int, rng: random.Random) -> bytes:
    """A cleartext datagram, the IMEI in it, with the first 5 bytes of a QUIC short header and a connection ID
    that stays the same, over a body that does not look encrypted: binary fields, a zlib or bzip2 stream (whose
    magic may be the very first bytes), or base64 XOR-ed with a 4-byte key (varied as a whole but not byte by
    byte of the key); or random bytes with the IMEI after the first 256 of them."""
    fields = struct.pack(">IQ", i, rng.randrange(2 ** 64)) + f"imei={IMEI}".encode() + bytes(300)
    if shape == "binary":
        return b"\x5a\x01\x02\x03\x04" + fields
    if shape == "zlib":
        return zlib.compress(fields + rng.randbytes(600))  # 'x\x9c' then its first 3 bytes: the same each time
    if shape == "bzip2":
        return bz2.compress(fields + rng.randbytes(600))  # 'BZh91'
    if shape == "xor":
        text = f"imei={IMEI}&t=".encode() + base64.b64encode(rng.randbytes(240)) + b"&v=2"
        return b"\x5a\x01\x02\x03\x04" + obfuscation.xor_bytes(text, b"\x9c\x31\xe7\x4d")
    if shape == "tail":
        return b"\x5a\x01\x02\x03\x04" + rng.randbytes(300) + f"imei={IMEI}".encode() + rng.randbytes(40)
    raise AssertionError(shape)


@pytest.mark.parametrize("shape", ["binary", "zlib", "bzip2", "xor", "tail"])
def test_cleartext_udp_that_resembles_a_quic_short_header_is_scanned(tmp_path: Path, shape: str) -> None:
    """On UDP 443, cleartext that starts like a QUIC short header, datagram after datagram, is scanned whole.
    The limit: an identifier among random bytes looks random too ("tail"), so such a flow is found in its first
    datagrams and then called QUIC."""
    rng = random.Random(4)
    cap = CaptureBuilder()
    for i in range(6):
        cap.udp(PHONE_IP, SERVER_IP, 50003, 443, _telemetry(shape, i, rng))
    result = _scan(tmp_path, cap)
    (finding,) = _found(result, "imei")
    if shape == "tail":
        assert result.flows[0].encrypted and finding.frames == (1, 2, 3, 4)
    else:
        assert not result.flows[0].encrypted and finding.frames == (1, 2, 3, 4, 5, 6)


def test_a_cleartext_datagram_among_quic_like_ones_is_scanned(tmp_path: Path) -> None:
    """Random-looking datagrams with one connection ID are scanned until four come in a row: a cleartext one
    among them starts the count again, and its leak is found."""
    rng = random.Random(5)
    cid = b"\x5a\x11\x22\x33\x44\x55\x66\x77"
    cap = CaptureBuilder()
    for i in range(9):
        body = f"imei={IMEI} ".encode() * 30 if i == 3 else rng.randbytes(1200)
        cap.udp(PHONE_IP, SERVER_IP, 50004, 443, _short_header(rng, cid, body))
    result = _scan(tmp_path, cap)
    (finding,) = _found(result, "imei")
    assert finding.frames == (4,) and result.flows[0].encrypted  # datagrams 5-8 in a row: QUIC from the 8th


def test_ports_reused_after_an_encrypted_connection_start_a_new_flow(tmp_path: Path) -> None:
    """A finished TLS connection's 4-tuple reused for plain HTTP must not hide the HTTP leak."""
    cap = CaptureBuilder()
    tls = cap.tcp(PHONE_IP, SERVER_IP, 8080, sport=41000)
    tls.send(tls_client_hello("a.example"))
    tls.reply(tls_server_hello())
    tls.send(tls_application_data(b"x" * 100))
    tls.close()
    plain = cap.tcp(PHONE_IP, SERVER_IP, 8080, sport=41000)
    plain.send(http_request("GET", f"/?imei={IMEI}", host="reuse.example"))
    result = _scan(tmp_path, cap)
    assert len(result.flows) == 2
    assert [f.encrypted for f in result.flows] == [True, False]
    _assert_found(result, "imei", "plain")


@pytest.mark.timeout(120)
def test_many_half_received_messages_keep_decoder_memory_bounded(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """40 connections each in the middle of a 1 MB body: over the (lowered) budget they are scanned early."""
    from phonehome.scan import scanner as scanner_module

    monkeypatch.setattr(scanner_module, "MAX_DECODER_BYTES_TOTAL", 8 << 20)
    cap = CaptureBuilder()
    conns = [cap.tcp(PHONE_IP, SERVER_IP, 80, sport=20000 + i) for i in range(40)]
    for conn in conns:
        conn.send(b"POST /u HTTP/1.1\r\nHost: big.example\r\nContent-Length: 2000000\r\n\r\n" + f"imei={IMEI}&".encode()
                  + b"x" * 1_000_000)
    result = _scan(tmp_path, cap)
    assert any("scanned undecoded to keep memory bounded" in w for w in result.warnings)
    assert len({(f.sport) for f in _found(result, "imei")}) == 40


def test_dns_over_tcp(tmp_path: Path) -> None:
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, "10.0.0.1", 53)
    query = dns_query(f"{SERIAL}.t.example")
    answer = dns_response("cdn.example", [SERVER_IP])
    conn.send(len(query).to_bytes(2, "big") + query, segment_size=7)
    conn.reply(len(answer).to_bytes(2, "big") + answer)
    cap.udp(PHONE_IP, SERVER_IP, 4000, 9000, IMEI.encode())
    result = _scan(tmp_path, cap)
    assert _assert_found(result, "serial").protocol == "dns"
    assert _assert_found(result, "imei").host == "cdn.example"


def _heartbeats(tmp_path: Path, body: bytes) -> ScanResult:
    """``body`` posted on three connections, twice on the last (port 40003)."""
    cap = CaptureBuilder()
    for sport in (40001, 40002, 40003):
        conn = cap.tcp(PHONE_IP, SERVER_IP, 80, sport=sport)
        for _ in range(2 if sport == 40003 else 1):
            conn.send(http_request("POST", "/beat", host="beat.example", body=body))
        conn.close()
    return _scan(tmp_path, cap)


def test_a_body_sent_again_is_a_finding_again_on_every_flow(tmp_path: Path) -> None:
    """Nested layers of a body seen before are remembered (heartbeats repeat): the findings they make are still
    per flow, and on a flow that repeats a body, cite the frames of every copy."""
    body = b'{"blob":"' + base64.b64encode(gzip_bytes(json.dumps({"imei": IMEI}).encode())) + b'"}'
    result = _heartbeats(tmp_path, body)
    nested = [f for f in result.findings if f.identifier == "imei" and f.encoding == "base64>gzip>plain"]
    assert sorted(f.sport for f in nested) == [40001, 40002, 40003]
    twice = next(f for f in nested if f.sport == 40003)
    once = next(f for f in nested if f.sport == 40001)
    assert len(twice.frames) == 2 * len(once.frames)


@pytest.mark.parametrize("key", [b"\x5a", b"\x5a\x13"])
def test_a_body_sent_again_shows_its_raw_and_xor_findings_again_on_every_flow(tmp_path: Path, key: bytes) -> None:
    """A body seen before is one lookup (its own matches and XOR keys are remembered with its layers): what it
    shows as sent, and under a XOR key of one byte or more, is still a finding on every flow that sends it, with
    the frames of every copy."""
    body = b"imei=" + IMEI.encode() + b"&blob=" + obfuscation.xor_bytes(b"serial=" + SERIAL.encode(), key)
    result = _heartbeats(tmp_path, body)
    for identifier, encoding in (("imei", "plain"), ("serial", f"xor(0x{key.hex()})>plain")):
        hits = [f for f in result.findings if f.identifier == identifier]
        assert {f.encoding for f in hits} == {encoding}
        assert sorted(f.sport for f in hits) == [40001, 40002, 40003]
        twice = next(f for f in hits if f.sport == 40003)
        once = next(f for f in hits if f.sport == 40001)
        assert len(twice.frames) == 2 * len(once.frames)


@pytest.mark.parametrize("close", [False, True])
def test_a_request_cut_short_by_the_capture_end_names_its_host(tmp_path: Path, close: bool) -> None:
    """An upload still running when the capture stopped (or reset mid-body): its head is scanned at the end, and
    the finding names the Host it was sent to (it said '-', as for a real capture, Suricata's http-chunked)."""
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    conn.send(f"POST /up?imei={IMEI} HTTP/1.1\r\nHost: up.example\r\nContent-Length: 5000\r\n\r\n".encode()
              + b"x" * 100)
    if close:
        conn.close()
    result = _scan(tmp_path, cap)
    assert [(f.identifier, f.host) for f in result.findings] == [("imei", "up.example")]
    assert [flow.host for flow in result.flows] == ["up.example"]


def _dhcp_discover(mac: bytes, options: bytes) -> bytes:
    """A DHCPDISCOVER as a phone sends it on joining a network: its MAC in chaddr, then the options."""
    fixed = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, 0x3903F326, 0, 0x8000, bytes(4), bytes(4), bytes(4),
                        bytes(4))
    return fixed + mac + bytes(10) + bytes(64) + bytes(128) + b"\x63\x82\x53\x63" + b"\x35\x01\x01" + options + b"\xff"


def _dhcp_frame(source_mac: bytes, message: bytes) -> bytes:
    """A DHCP client's broadcast as its Ethernet frame, from ``source_mac``."""
    ip = ip_packet("0.0.0.0", "255.255.255.255", 17, udp_datagram("0.0.0.0", "255.255.255.255", 68, 67, message))
    return ethernet_frame(ip, src_mac=source_mac, dst_mac=b"\xff" * 6)


def test_dhcp_carries_the_mac_as_its_link_layer_address_not_as_a_leak(tmp_path: Path) -> None:
    """Every phone joining a network sends its MAC in DHCP's chaddr and client identifier (a real capture, gopacket's
    test010.pcapng, gave four wifi_mac findings): where it is the frame's own source address, that is the link
    layer's, never a leak. The MAC elsewhere in DHCP, and a DHCP host name carrying the Android ID (Android before
    8), are."""
    mac = bytes.fromhex(MAC.replace(":", ""))
    client_id = b"\x3d\x07\x01" + mac
    plain = CaptureBuilder()
    plain.add_frame(_dhcp_frame(mac, _dhcp_discover(mac, client_id + b"\x37\x03\x01\x03\x06")))
    result = _scan(tmp_path, plain)
    assert result.findings == () and [flow.protocol for flow in result.flows] == ["dhcp"]

    leaky = CaptureBuilder()
    hostname = f"android-{ANDROID_ID}".encode()
    vendor = b"\x2b\x08\x01\x06" + mac  # the MAC again, in a vendor option: no link-layer field
    leaky.add_frame(_dhcp_frame(mac, _dhcp_discover(mac, client_id + bytes((12, len(hostname))) + hostname + vendor)))
    found = {(f.identifier, f.protocol) for f in _scan(tmp_path, leaky).findings}
    assert found == {("android_id", "dhcp"), ("wifi_mac", "dhcp")}


def test_dhcp_with_the_factory_mac_behind_a_randomised_one_is_a_leak(tmp_path: Path) -> None:
    """A DHCP client that puts the factory MAC in chaddr (or its client identifier) while the frames come from a
    randomised MAC sends what randomisation hides: found. So is any DHCP MAC in a capture with no link layer."""
    mac = bytes.fromhex(MAC.replace(":", ""))
    for client_id in (b"", b"\x3d\x07\x01" + mac):
        cap = CaptureBuilder()
        cap.add_frame(_dhcp_frame(b"\x02\x00\x00\x00\x00\x0a", _dhcp_discover(mac, client_id)))
        found = {(f.identifier, f.protocol, f.encoding) for f in _scan(tmp_path, cap).findings}
        assert found == {("wifi_mac", "dhcp", "raw"), ("wifi_mac", "dhcp", "int64be")}  # chaddr after zero giaddr
    raw = CaptureBuilder(link=LINKTYPE_RAW)
    raw.udp("0.0.0.0", "255.255.255.255", 68, 67, _dhcp_discover(mac, b""))
    assert {f.identifier for f in _scan(tmp_path, raw).findings} == {"wifi_mac"}


@pytest.mark.parametrize("cut", range(1, 12))
def test_a_dhcp_message_cut_inside_an_option_does_not_stop_the_scan(tmp_path: Path, cut: int) -> None:
    """Hostile or truncated input: options whose length runs past the end of the datagram end the options."""
    mac = bytes.fromhex(MAC.replace(":", ""))
    options = b"\x3d\x07\x01" + mac + b"\x0c\x05" + b"imei=" + IMEI.encode()
    cap = CaptureBuilder()
    cap.add_frame(_dhcp_frame(mac, _dhcp_discover(mac, b"")[:-1] + options[:cut]))
    result = _scan(tmp_path, cap)
    assert [flow.protocol for flow in result.flows] == ["dhcp"] and result.findings == ()


def test_esp_in_udp_is_encrypted_ipsec_and_cleartext_on_its_port_is_scanned(tmp_path: Path) -> None:
    """IPsec through NAT (UDP 4500: a VPN, Wi-Fi calling to the ePDG) is encrypted, said as such (protocol esp),
    and counted as undecoded as raw ESP is (a capture that is mostly VPN proves nothing); an IKE message on the
    same port (after its 4-byte zero marker) and cleartext that merely uses the port are scanned."""
    rng = random.Random(4500)
    cap = CaptureBuilder()
    for seq in range(1, 6):
        cap.udp(PHONE_IP, "198.51.100.9", 4500, 4500, struct.pack("!II", 0xC0FFEE01, seq) + rng.randbytes(600))
    cap.udp(PHONE_IP, "198.51.100.10", 4500, 4500, bytes(4) + b"IKE " + f"id={IMEI}".encode() + bytes(300))
    cap.udp(PHONE_IP, "198.51.100.11", 40000, 4500, json.dumps({"imei": IMEI, "pad": "x" * 400}).encode())
    for _ in range(3):  # zlib telemetry on the port: its first 8 bytes are the same each time, its body random
        cap.udp(PHONE_IP, "198.51.100.12", 40001, 4500,
                zlib.compress(f"imei={IMEI}".encode() + rng.randbytes(600)))
    for seq in (7, 7):  # one SPI, but the sequence number does not go up: no ESP
        cap.udp(PHONE_IP, "198.51.100.13", 40002, 4500,
                struct.pack("!II", 0xC0FFEE02, seq) + rng.randbytes(300) + f"imei={IMEI}".encode())
    result = _scan(tmp_path, cap, {"imei": IMEI})
    by_dst = {flow.dst: (flow.protocol, flow.encrypted) for flow in result.flows}
    assert by_dst["198.51.100.9"] == ("esp", True)
    assert not any(by_dst[f"198.51.100.{host}"][1] for host in (10, 11, 12, 13))
    assert sorted({f.dst for f in result.findings}) == [f"198.51.100.{host}" for host in (10, 11, 12, 13)]
    (zlib_finding,) = (f for f in result.findings if f.dst == "198.51.100.12")
    assert zlib_finding.frames == (8, 9, 10)
    assert result.capture.undecoded["encrypted IPsec (ESP)"]["packets"] == 2  # the 4th and 5th: after the run

    vpn = CaptureBuilder()  # a phone with an always-on VPN through NAT: everything it sends is inside, unread
    for seq in range(1, 21):
        vpn.udp(PHONE_IP, "198.51.100.9", 4500, 4500, struct.pack("!II", 0xC0FFEE01, seq) + rng.randbytes(600))
    problem = _scan(tmp_path, vpn, {"imei": IMEI}).capture.decode_problem
    assert problem is not None and "encrypted IPsec (ESP)" in problem


def test_a_conflicting_copy_of_a_segment_is_scanned_too(tmp_path: Path) -> None:
    """Suricata-verify's tcp-overlap "GOOD vs EVIL": a segment resent with other bytes for the same sequence
    numbers. Reassembly keeps the first copy, but every copy left the phone: the one carrying the IMEI is scanned
    as well, in the flow's protocol, and its finding cites its own frame. An identical resend is not scanned
    again (one finding, only the first copy's frame)."""
    from phonehome.testing.captures import PROTO_TCP, TCP_ACK, ip_packet, tcp_segment

    good = b"q=harmless-value-0123456;"
    evil = f"q={IMEI}-leaked;".encode()
    assert len(good) == len(evil)
    request = http_request("POST", "/log", host="log.example", body=good)
    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80)
    start = conn.client_seq
    _head, body = conn.send(request, segment_size=len(request) - len(good))
    cap.retransmit([body])  # the same bytes again
    seg = tcp_segment(PHONE_IP, SERVER_IP, conn.sport, 80, evil, seq=start + len(request) - len(good),
                      ack=conn.server_seq, flags=TCP_ACK)
    conflicting = cap.add_ip(ip_packet(PHONE_IP, SERVER_IP, PROTO_TCP, seg))
    conn.close()
    result = _scan(tmp_path, cap)
    finding = _assert_found(result, "imei", "plain")
    assert (finding.frames, finding.protocol, finding.host) == ((cap.packets.index(conflicting) + 1,), "http",
                                                                 "log.example")
    assert len(result.findings) == 1
    assert (result.capture.conflicting_bytes, result.capture.retransmitted_bytes) == (len(evil), len(good))
    assert result.to_json()["capture"]["conflicting_bytes"] == len(evil)

    cap.packets.remove(conflicting)  # the identical resend alone: nothing to find, nothing in conflict
    result = _scan(tmp_path, cap)
    assert result.findings == () and result.capture.conflicting_bytes == 0


def test_data_after_a_connection_closed_is_scanned(tmp_path: Path) -> None:
    """Suricata-verify's bug-3286: an RST closes the connection, then a SYN/ACK and a whole HTTP exchange reuse
    its 4-tuple with no SYN: the leak in it left the phone, and is found in its own frames. A late retransmission
    after the FINs is the same finding again, with its frame added, not a second one."""
    from phonehome.testing.captures import PROTO_TCP, TCP_ACK, TCP_RST, TCP_SYN, tcp_segment

    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80, sport=41000)
    conn.send(http_request("GET", "/first", host="a.example"))
    cap.add_ip(ip_packet(PHONE_IP, SERVER_IP, PROTO_TCP, tcp_segment(PHONE_IP, SERVER_IP, 41000, 80, b"",
                                                                        seq=conn.client_seq, flags=TCP_RST)))
    cap.add_ip(ip_packet(SERVER_IP, PHONE_IP, PROTO_TCP, tcp_segment(SERVER_IP, PHONE_IP, 80, 41000, b"",
                                                                        seq=7000, ack=9001, flags=TCP_SYN | TCP_ACK)))
    leak = http_request("GET", f"/second?imei={IMEI}", host="a.example")
    late = cap.add_ip(ip_packet(PHONE_IP, SERVER_IP, PROTO_TCP, tcp_segment(PHONE_IP, SERVER_IP, 41000, 80, leak,
                                                                               seq=9001, ack=7001, flags=TCP_ACK)))
    result = _scan(tmp_path, cap)
    (finding,) = _found(result, "imei")
    assert finding.frames == (cap.packets.index(late) + 1,)

    cap = CaptureBuilder()
    conn = cap.tcp(PHONE_IP, SERVER_IP, 80, sport=41001)
    sent = conn.send(http_request("GET", f"/?imei={IMEI}", host="a.example"))
    conn.close()
    cap.retransmit(sent)  # after both FINs
    (finding,) = _found(_scan(tmp_path, cap), "imei")
    assert finding.frames == (cap.packets.index(sent[0]) + 1, len(cap.packets))


def _dhcpv6_option(code: int, value: bytes) -> bytes:
    return struct.pack("!HH", code, len(value)) + value


def test_dhcpv6_carries_the_mac_in_its_duid_as_its_link_layer_address_not_as_a_leak(tmp_path: Path) -> None:
    """A DHCPv6 client identifies itself by a DUID, whose types DUID-LLT (1) and DUID-LL (3) hold its link-layer
    address; a relay agent adds it again (client link-layer address option, RFC 6939). As DHCP's chaddr, that is
    the link layer's address, never a leak. The MAC elsewhere (a vendor option) and a host name carrying the
    Android ID in the FQDN option (39) are."""
    mac = bytes.fromhex(MAC.replace(":", ""))
    duid_llt = struct.pack("!HHI", 1, 1, 0x2C1F6E40) + mac
    duid_ll = struct.pack("!HH", 3, 1) + mac
    elapsed = _dhcpv6_option(8, b"\x00\x00")
    solicit = b"\x01\x5a\x1b\x2c" + _dhcpv6_option(1, duid_llt) + elapsed + _dhcpv6_option(6, b"\x00\x17")
    relayed = (b"\x0c\x00" + bytes(16) + bytes.fromhex("fe80000000000000ae3743fffe4d5e6f")
               + _dhcpv6_option(9, b"\x0b\x00\x00\x07" + _dhcpv6_option(1, duid_ll))  # an Information-request
               + _dhcpv6_option(79, b"\x00\x01" + mac))
    def from_mac(source: bytes, src: str, dst: str, sport: int, message: bytes) -> bytes:
        udp = udp_datagram(src, dst, sport, 547, message)
        return ethernet_frame(ip_packet(src, dst, 17, udp), src_mac=source)

    plain = CaptureBuilder()
    plain.add_frame(from_mac(mac, "fe80::ae37:43ff:fe4d:5e6f", "ff02::1:2", 546, solicit))
    plain.udp("fe80::1", "2001:db8::547", 547, 547, relayed)  # from the relay agent: the network's, not the phone's
    result = _scan(tmp_path, plain)
    assert result.findings == () and [flow.protocol for flow in result.flows] == ["dhcpv6", "dhcpv6"]

    hostname = f"android-{ANDROID_ID}".encode()
    fqdn = _dhcpv6_option(39, b"\x01" + bytes((len(hostname),)) + hostname + b"\x04home\x00")
    vendor = _dhcpv6_option(17, b"\x00\x00\x0a\xab" + mac)  # the MAC again, in a vendor option: no link-layer field
    leaky = CaptureBuilder()
    leaky.add_frame(from_mac(mac, "fe80::ae37:43ff:fe4d:5e6f", "ff02::1:2", 546, solicit + fqdn + vendor))
    found = {(f.identifier, f.protocol) for f in _scan(tmp_path, leaky).findings}
    assert found == {("android_id", "dhcpv6"), ("wifi_mac", "dhcpv6")}

    randomised = CaptureBuilder()  # a DUID-LLT made from the factory MAC, sent behind a randomised one: found
    randomised.add_frame(from_mac(b"\x02\x00\x00\x00\x00\x0a", "fe80::ff:fe00:a", "ff02::1:2", 546, solicit))
    assert {(f.identifier, f.protocol) for f in _scan(tmp_path, randomised).findings} == {("wifi_mac", "dhcpv6")}

    cut = CaptureBuilder()  # an option longer than the datagram: no DHCPv6 message, scanned as it is
    cut.udp("fe80::ae37:43ff:fe4d:5e6f", "ff02::1:2", 546, 547, solicit[:-6] + b"\x00\x01\x00\x40" + mac)
    assert {(f.identifier, f.protocol) for f in _scan(tmp_path, cut).findings} == {("wifi_mac", "unknown")}
