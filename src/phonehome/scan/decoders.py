"""Which stream decoder reads a stream once its protocol is known: one choice for cleartext streams
(:mod:`phonehome.scan.scanner`) and for what TLS decryption yields (:mod:`phonehome.scan.tls`)."""

from __future__ import annotations

from phonehome.scan import layers
from phonehome.scan.http2 import Http2Decoder
from phonehome.scan.protocols import (
    PROTO_DNS,
    PROTO_HTTP,
    PROTO_HTTP2,
    PROTO_MQTT,
    PROTO_WEBSOCKET,
    DnsTcpDecoder,
    HttpDecoder,
    MqttDecoder,
    RawDecoder,
    StreamDecoder,
    WebSocketDecoder,
)


def stream_decoder(kind: str, offset: int = 0, *, overlap: int) -> StreamDecoder:
    """The decoder for a stream classified as ``kind`` (HTTP/1.x, HTTP/2, MQTT, WebSocket, DNS over TCP); any
    other stream is scanned as raw bytes, ``overlap`` bytes kept across chunks so no match is cut."""
    if kind == PROTO_HTTP:
        return HttpDecoder(offset, decode_content=layers.decode_content, overlap=overlap)
    if kind == PROTO_HTTP2:
        return Http2Decoder(offset, decode_content=layers.decode_content)
    if kind == PROTO_MQTT:
        return MqttDecoder(offset)
    if kind == PROTO_WEBSOCKET:
        return WebSocketDecoder(offset)
    if kind == PROTO_DNS:
        return DnsTcpDecoder(offset)
    return RawDecoder(offset, overlap=overlap)
