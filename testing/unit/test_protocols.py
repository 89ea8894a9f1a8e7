"""Protocol decoders and encrypted-by-content detection."""

from __future__ import annotations

import itertools
import zlib

import pytest

from phonehome.scan import layers
from phonehome.scan.protocols import (
    PROTO_DTLS,
    PROTO_HTTP,
    PROTO_MQTT,
    PROTO_QUIC,
    PROTO_SSH,
    PROTO_TLS,
    PROTO_UNKNOWN,
    PROTO_WEBSOCKET,
    STREAM_BODY_BYTES,
    HttpDecoder,
    MqttDecoder,
    RawDecoder,
    Unit,
    WebSocketDecoder,
    classify_datagram,
    classify_stream,
    content_chain,
    parse_client_hello,
    parse_dns,
    parse_http_head,
    unmask,
)
from phonehome.testing.captures import (
    dns_query,
    dns_response,
    dtls_record,
    gzip_bytes,
    http_request,
    http_response,
    mqtt_connect,
    mqtt_publish,
    quic_initial,
    ssh_banner,
    tls_application_data,
    tls_client_hello,
    websocket_frame,
)


def _gzip_only(data: bytes, encoding: str) -> tuple[bytes, str | None]:
    """A real content decoder for gzip only (the scanner passes layers.decode_content)."""
    if encoding == "gzip":
        return zlib.decompress(data, 31), None
    return data, f"unknown Content-Encoding {encoding!r}"


def _feed_bytewise(decoder: HttpDecoder | WebSocketDecoder | MqttDecoder | RawDecoder, data: bytes) -> list[Unit]:
    units: list[Unit] = []
    for i in range(len(data)):
        units += decoder.feed(data[i:i + 1])
    return units + decoder.finish()


@pytest.mark.parametrize("head, kind", [
    (tls_client_hello("a.example")[:8], PROTO_TLS),
    (tls_application_data(b"x" * 10)[:8], PROTO_TLS),
    (ssh_banner(), PROTO_SSH),
    (b"GET / HTTP/1.1\r\n", PROTO_HTTP),
    (b"HTTP/1.1 200 OK\r\n", PROTO_HTTP),
    (mqtt_connect("dev")[:12], PROTO_MQTT),
    (b"\x00\x01binary-stuff", PROTO_UNKNOWN),
    (b"GE", ""),
])
def test_classify_stream_by_content(head: bytes, kind: str) -> None:
    assert classify_stream(head) == kind


@pytest.mark.parametrize("head", [
    b"\x16\x03\x01 imei=490154203237518",  # a handshake record must hold a handshake message
    b"\x17\x03\x03\xff\xff" + b"x" * 20,  # longer than any TLS record may be
    b"\x15\x03\x01\x00\x00" + b"x" * 20,  # an empty record
])
def test_plaintext_starting_like_a_tls_record_is_not_tls(head: bytes) -> None:
    """A stream classified TLS is never scanned: three lucky bytes must not hide a cleartext stream."""
    assert classify_stream(head) == PROTO_UNKNOWN


def test_a_tls_record_header_split_across_segments_waits_for_more() -> None:
    hello = tls_client_hello("a.example")
    assert [classify_stream(hello[:n]) for n in range(1, 6)] == [""] * 5
    assert classify_stream(hello[:6]) == PROTO_TLS


def test_plain_http_on_443_is_http_and_tls_on_8080_is_tls() -> None:
    """Ports play no part: classification sees only bytes."""
    assert classify_stream(b"POST /x HTTP/1.1\r\n") == PROTO_HTTP
    assert classify_stream(tls_client_hello(None)[:8]) == PROTO_TLS


@pytest.mark.parametrize("payload, kind", [
    (dtls_record(b"\x00" * 20), PROTO_DTLS),
    (quic_initial(b"\x00" * 40), PROTO_QUIC),
    (quic_initial(b"\x00" * 40, version=0x6B3343CF), PROTO_QUIC),
    (dns_query("example.com"), ""),
    (b"\xc0\x12\x34\x56\x78rest", ""),  # long-header bits but an unknown version
])
def test_classify_datagram(payload: bytes, kind: str) -> None:
    assert classify_datagram(payload) == kind


def test_client_hello_sni_and_alpn() -> None:
    hello = tls_client_hello("tracker.example.net", alpn=("h2", "http/1.1"))
    parsed = parse_client_hello(hello + b"trailing")
    assert parsed is not None
    assert parsed.sni == "tracker.example.net"
    assert parsed.alpn == ("h2", "http/1.1")
    assert parsed.length == len(hello)


def test_client_hello_needs_all_its_bytes() -> None:
    hello = tls_client_hello("x.example", padding=1500)
    assert parse_client_hello(hello[:1400]) is None
    assert parse_client_hello(hello) is not None


def test_client_hello_spread_over_two_records() -> None:
    hello = tls_client_hello("split.example")
    handshake = hello[5:]
    two = (b"\x16\x03\x01" + len(handshake[:50]).to_bytes(2, "big") + handshake[:50]
           + b"\x16\x03\x01" + len(handshake[50:]).to_bytes(2, "big") + handshake[50:])
    parsed = parse_client_hello(two)
    assert parsed is not None and parsed.sni == "split.example" and parsed.length == len(two)


def test_dns_names_and_answers_with_cname() -> None:
    message = parse_dns(dns_response("api.example.com", ["93.184.216.34"], cname="edge.cdn.example"))
    assert message is not None
    assert "api.example.com" in message.names and "edge.cdn.example" in message.names
    assert message.addresses == (("api.example.com", bytes([93, 184, 216, 34])),)


def test_dns_query_names_are_decoded() -> None:
    message = parse_dns(dns_query("356938035643809.leak.example.org"))
    assert message is not None and message.names == ("356938035643809.leak.example.org",)


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 5, b"\xff" * 40, dns_query("a.b")[:-6] + b"\xc0\x0c"])
def test_dns_garbage_does_not_raise(garbage: bytes) -> None:
    parse_dns(garbage)


def test_http_head_header_lines() -> None:
    """Header lines as RFC 9112 reads them, whatever mixes of CRLF and bare LF end them: names lower-cased,
    blanks around a value dropped, bytes kept as latin-1, a repeated name's first value is the one asked for, and a
    line that is no header (a folded continuation, no colon, a space before the name) is skipped."""
    raw = (b"POST /up HTTP/1.1\r\nHost: a.example:8080 \r\nX-Token:\tt1\n  folded onto x-token\r\n"
           b"x-token: t2\r\nno colon here\r\n Leading: space\nContent-Length:  5\t\r\nX-Name: caf\xe9\r")
    head = parse_http_head(raw)
    assert head is not None and head.is_request and head.start_line == b"POST /up HTTP/1.1"
    assert head.headers == (("host", "a.example:8080"), ("x-token", "t1"), ("x-token", "t2"),
                            ("content-length", "5"), ("x-name", "caf\xe9"))
    assert head.header("x-token") == "t1"
    assert head.header("leading") is None
    response = parse_http_head(b"HTTP/1.1 204 No Content")
    assert response is not None and response.status == 204 and response.headers == ()
    assert parse_http_head(b"GET / HTTP/2\r\nHost: a") is None


def test_http_pipelined_requests_each_give_head_units() -> None:
    stream = b"".join(http_request("GET", f"/item?id={i}", host="h.example") for i in range(3))
    units = _feed_bytewise(HttpDecoder(), stream)
    heads = [u for u in units if u.exact and u.data.startswith(b"GET")]
    assert [u.data.split(b" ")[1] for u in heads] == [b"/item?id=0", b"/item?id=1", b"/item?id=2"]
    # exact units map back to the stream offsets they came from
    for unit in heads:
        assert stream[unit.start:unit.end] == unit.data


def test_http_chunked_gzip_body_is_decoded() -> None:
    body = gzip_bytes(b'{"imei": "356938035643809"}')
    stream = http_response(body, headers={"Content-Encoding": "gzip"}, chunked=True, chunk_size=7)
    units = _feed_bytewise(HttpDecoder(decode_content=_gzip_only), stream)
    bodies = [u for u in units if u.chain == "gzip"]
    assert bodies and bodies[0].data == b'{"imei": "356938035643809"}' and not bodies[0].exact


def test_http_unknown_content_encoding_is_scanned_as_sent_with_a_warning() -> None:
    stream = http_response(b"imei=356938035643809", headers={"Content-Encoding": "snappy"})
    decoder = HttpDecoder(decode_content=_gzip_only)
    units = decoder.feed(stream)
    assert any(u.data == b"imei=356938035643809" and u.chain == "" for u in units)
    assert decoder.warnings and "snappy" in decoder.warnings[0]


@pytest.mark.parametrize("header, chain", [("gzip", "gzip"), ("x-gzip", "gzip"), ("gzip, br", "brotli>gzip"),
                                           ("identity, deflate", "deflate")])
def test_content_chain_is_outermost_first(header: str, chain: str) -> None:
    assert content_chain(header) == chain


def test_http_host_is_recorded_and_websocket_upgrade_switches() -> None:
    decoder = HttpDecoder()
    decoder.feed(http_request("GET", "/ws", host="push.example:8080", headers={"Upgrade": "websocket"}))
    assert decoder.host == "push.example"
    assert decoder.switch_to == PROTO_WEBSOCKET


def test_http_response_until_close() -> None:
    decoder = HttpDecoder()
    assert [u for u in decoder.feed(b"HTTP/1.0 200 OK\r\n\r\nbody-without-length") if u.data.startswith(b"body")] == []
    assert any(u.data == b"body-without-length" for u in decoder.finish())


def test_not_http_after_all_falls_back_to_raw() -> None:
    decoder = HttpDecoder()
    units = decoder.feed(b"GET nonsense\r\n\r\nrest") + decoder.finish()
    assert any(b"rest" in u.data for u in units)


def test_websocket_client_frames_are_unmasked() -> None:
    frames = websocket_frame(b'{"serial": "R58M12ABCDE"}') + websocket_frame(b"x" * 300, mask_key=b"abcd")
    units = _feed_bytewise(WebSocketDecoder(), frames)
    assert units[0].data == b'{"serial": "R58M12ABCDE"}'
    assert units[1].data == b"x" * 300


def test_websocket_server_frames_are_exact() -> None:
    frame = websocket_frame(b"hello", mask_key=None)
    (unit,) = WebSocketDecoder(offset=100).feed(frame)
    assert unit.exact and unit.data == b"hello" and unit.start == 102


def test_websocket_permessage_deflate() -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = compressor.compress(b"android_id=9774d56d682e549c") + compressor.flush(zlib.Z_SYNC_FLUSH)
    frame = websocket_frame(payload[:-4])
    frame = bytes([frame[0] | 0x40]) + frame[1:]
    (unit,) = WebSocketDecoder().feed(frame)
    assert unit.chain == "deflate" and unit.data == b"android_id=9774d56d682e549c"


def test_unmask_round_trip() -> None:
    data = bytes(range(256)) * 3
    assert unmask(unmask(data, b"\x01\x02\x03\x04"), b"\x01\x02\x03\x04") == data
    assert unmask(b"", b"abcd") == b""


def test_mqtt_packets_are_split() -> None:
    stream = mqtt_connect("device-356938035643809", username="u") + mqtt_publish("t/loc", b"52.5163,13.3777")
    units = _feed_bytewise(MqttDecoder(), stream)
    assert [u.data for u in units] == [mqtt_connect("device-356938035643809", username="u"),
                                       mqtt_publish("t/loc", b"52.5163,13.3777")]
    assert units[1].peel and not units[0].peel


def test_raw_decoder_batches_with_overlap() -> None:
    decoder = RawDecoder(overlap=10, batch_bytes=100)
    units = []
    for _ in range(5):
        units += decoder.feed(b"a" * 60)
    units += decoder.finish()
    assert sum(len(u.data) for u in units) == 300 + 10 * (len(units) - 1)
    for a, b in itertools.pairwise(units):
        assert b.start == a.end - 10




def test_large_bodies_are_not_joined_per_segment() -> None:
    """A 4 MB body fed in 1,448-byte segments is joined once per piece scanned (STREAM_BODY_BYTES), not once per
    segment (quadratic); a gzip-encoded one, held whole to be decoded, is joined a few times."""
    body = b"x" * (4 << 20)
    for headers, whole in (({}, False), ({"Content-Encoding": "gzip"}, True)):
        stream = http_response(gzip_bytes(body) if whole else body, headers=headers)
        decoder = HttpDecoder(decode_content=layers.decode_content)
        units: list[Unit] = []
        joins = 0
        for i in range(0, len(stream), 1448):
            before = decoder.buf
            units += decoder.feed(stream[i:i + 1448])
            joins += decoder.buf is not before
        units += decoder.finish()
        bodies = [u.data for u in units[1:]]
        assert (bodies == [body] if whole else b"".join(bodies) == body and len(bodies) == len(body) // STREAM_BODY_BYTES)
        assert joins < (10 if whole else 2 * len(body) // STREAM_BODY_BYTES + 10)


def test_a_long_body_as_sent_is_scanned_in_pieces_as_it_arrives() -> None:
    """Content-Length, no Content-Encoding, STREAM_BODY_BYTES or more: pieces as they arrive, each carrying the last
    ``overlap`` bytes of the one before (a match across two is whole in one), exact offsets, only the first
    peeled; the next message after it parsed as ever, its Host named."""
    body = bytes(range(256)) * ((STREAM_BODY_BYTES * 2 + 1000) // 256)
    first = http_response(body)
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nHost: next.example\r\n\r\nok"
    decoder = HttpDecoder(overlap=40)
    units: list[Unit] = []
    for i in range(0, len(first + second), 1448):
        units += decoder.feed((first + second)[i:i + 1448])
    units += decoder.finish()
    head_bytes = len(first) - len(body)
    pieces = units[1:-2]
    assert [u.peel for u in pieces] == [True] + [False] * (len(pieces) - 1)
    assert pieces[0].start == head_bytes and pieces[0].data == body[:STREAM_BODY_BYTES]
    for before, piece in itertools.pairwise(pieces):
        assert piece.data[:40] == before.data[-40:] and piece.start == before.end - 40 and piece.exact
        assert first[piece.start:piece.end] == piece.data
    assert pieces[-1].end == len(first) and units[-1].data == b"ok" and decoder.host == "next.example"


def test_oversized_body_is_scanned_in_pieces() -> None:
    """A Content-Length past anything held (a lie, or a huge upload): its bytes, every one, as body pieces."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n"
    decoder = HttpDecoder()
    units = decoder.feed(head + b"y" * 100)
    units += decoder.feed(b"y" * (2 << 20))
    units += decoder.finish()
    assert sum(len(u.data) for u in units) == len(head) + 100 + (2 << 20) and not decoder.raw_mode
    assert [len(u.data) for u in units[1:]] == [STREAM_BODY_BYTES] * 8 + [100]


def test_websocket_oversized_frame_falls_back_to_raw() -> None:
    frame_head = bytes([0x82, 127]) + (1 << 40).to_bytes(8, "big")
    decoder = WebSocketDecoder()
    units = decoder.feed(frame_head + b"z" * 1000) + decoder.finish()
    assert decoder.raw_mode and sum(len(u.data) for u in units) == len(frame_head) + 1000


def test_quic_initials_decrypt_to_the_client_hello_in_any_order() -> None:
    from phonehome.scan.protocols import client_hello_from_crypto, quic_initial_crypto
    from phonehome.testing.captures import quic_client_initials

    datagrams = quic_client_initials("q.example", padding=2500, crypto_bytes_per_packet=700)
    assert len(datagrams) == 4
    frames = [f for d in reversed(datagrams) for f in quic_initial_crypto(d)]
    found = client_hello_from_crypto(frames)
    assert found is not None and found[1].sni == "q.example" and found[1].alpn == ("h3",)
    assert client_hello_from_crypto(frames[1:]) is None  # offset 0 missing: not whole yet


@pytest.mark.parametrize("garbage", [b"", b"\xc0" + b"\x00" * 30, quic_initial(b"\x00" * 64),
                                     b"\xc3\x00\x00\x00\x01\x08" + bytes(8) + b"\x00\x00\x44\xd0" + bytes(40)])
def test_quic_garbage_gives_no_crypto_frames(garbage: bytes) -> None:
    from phonehome.scan.protocols import quic_initial_crypto

    assert quic_initial_crypto(garbage) == []
