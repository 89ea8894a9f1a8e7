"""HTTP/2 in cleartext (h2c): prior knowledge and ``Upgrade: h2c``.

An identifier in an HTTP/2 request is not on the wire as it is: header fields are HPACK-compressed (Huffman
coded, or only a reference into the connection's dynamic table when repeated), and bodies are cut into DATA
frames that interleave with other streams'. :class:`Http2Decoder` keeps one HPACK decoder per direction (the
table is per direction), emits each header block decoded as ``name: value`` lines, and each stream's body
joined from its DATA frames once the stream ends (Content-Encoding decoded as in HTTP/1.1).

The one module that imports ``hpack`` (the python-hyper HPACK implementation), at the first HTTP/2 stream: a scan
without HTTP/2 does not pay its import.
"""

from __future__ import annotations

import struct

from phonehome.scan.protocols import (
    MAX_MESSAGE_BYTES,
    PROTO_HTTP2,
    ContentDecoder,
    StreamDecoder,
    Unit,
    content_chain,
)

#: the client connection preface (RFC 9113 3.4)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: the largest frame payload the protocol allows (SETTINGS_MAX_FRAME_SIZE upper bound)
MAX_FRAME_BYTES = (1 << 24) - 1

FRAME_DATA = 0
FRAME_HEADERS = 1
FRAME_PUSH_PROMISE = 5
FRAME_CONTINUATION = 9
FLAG_END_STREAM = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20


class _Stream:
    __slots__ = ("body", "encoding", "end", "size", "start")

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.size = 0
        self.start = -1
        self.end = -1
        self.encoding = ""


class Http2Decoder(StreamDecoder):
    """One direction of an HTTP/2 connection: header blocks decoded, bodies joined per stream."""

    protocol = PROTO_HTTP2

    def __init__(self, offset: int = 0, *, decode_content: ContentDecoder | None = None) -> None:
        super().__init__(offset)
        self.decode_content = decode_content
        from hpack import Decoder as HpackDecoder  # imported by the first HTTP/2 stream: ~8 ms of start-up
        from hpack.exceptions import HPACKError

        self.hpack = HpackDecoder()
        self.hpack_errors = (HPACKError, ValueError, IndexError)
        self.hpack.max_allowed_table_size = 1 << 16  # a peer's SETTINGS may raise it; bounded anyway
        self.hpack_broken = False  # after a block it could not decode the table is out of step: stop trying
        self.streams: dict[int, _Stream] = {}
        self.block = b""  # a header block continued in CONTINUATION frames
        self.block_stream = 0
        self.block_start = 0
        self.block_end_stream = False
        self.preface_checked = False
        self.raw_mode = False
        self.body_bytes = 0

    @property
    def held(self) -> int:
        return super().held + self.body_bytes + len(self.block)

    def parse(self, final: bool) -> list[Unit]:
        units: list[Unit] = []
        if not self.preface_checked:
            if len(self.buf) < len(PREFACE) and PREFACE.startswith(self.buf) and not final:
                self.need = len(PREFACE)
                return units
            self.preface_checked = True
            if self.buf.startswith(PREFACE):
                self.consume(len(PREFACE))
            elif self.buf.startswith(b"HTTP/1.") or self.buf[:8].split(b" ", 1)[0].isalpha():
                self.raw_mode = True  # the upgrade was declined: HTTP/1.1 goes on (scanned as raw bytes)
        while not self.raw_mode and len(self.buf) >= 9:
            buf = self.buf
            length = int.from_bytes(buf[:3], "big")
            kind, flags = buf[3], buf[4]
            stream_id = struct.unpack_from("!I", buf, 5)[0] & 0x7FFFFFFF
            if length > MAX_MESSAGE_BYTES or kind > 0x20:
                self.raw_mode = True  # not HTTP/2 after all (a declined upgrade), or hostile: scan raw
                break
            if len(buf) < 9 + length:
                self.need = 9 + length
                break
            start = self.offset + 9
            payload = buf[9:9 + length]
            self.consume(9 + length)
            if kind in (FRAME_DATA, FRAME_HEADERS, FRAME_PUSH_PROMISE):
                pad = payload[0] if flags & FLAG_PADDED and payload else 0
                skip = 1 if flags & FLAG_PADDED else 0
                if kind == FRAME_HEADERS and flags & FLAG_PRIORITY:
                    skip += 5
                elif kind == FRAME_PUSH_PROMISE:
                    skip += 4
                start += skip
                payload = payload[skip:len(payload) - pad]
            if kind == FRAME_DATA:
                units += self._data(stream_id, payload, start, bool(flags & FLAG_END_STREAM))
            elif kind in (FRAME_HEADERS, FRAME_PUSH_PROMISE, FRAME_CONTINUATION):
                if kind != FRAME_CONTINUATION:
                    self.block, self.block_stream, self.block_start = b"", stream_id, start
                    self.block_end_stream = kind == FRAME_HEADERS and bool(flags & FLAG_END_STREAM)
                self.block += payload
                if flags & FLAG_END_HEADERS:
                    units += self._headers(start + len(payload))
        if self.raw_mode:
            units += self._flush_all()
            if self.buf:
                units.append(Unit(self.buf, self.offset, self.offset + len(self.buf), True, "", self.protocol, True))
                self.consume(len(self.buf))
            return units
        if final:
            units += self._flush_all()
            if self.buf:  # a frame cut short
                units.append(Unit(self.buf, self.offset, self.offset + len(self.buf), True, "", self.protocol))
                self.consume(len(self.buf))
        return units

    def _headers(self, end: int) -> list[Unit]:
        block, self.block = self.block, b""
        units: list[Unit] = []
        text = b""
        if not self.hpack_broken:
            try:
                fields = self.hpack.decode(block, raw=True)
            except self.hpack_errors:
                self.hpack_broken = True
                self.warnings.append("an HTTP/2 header block could not be decoded (HPACK); the rest of the "
                                     "connection's header blocks were scanned as sent")
            else:
                text = b"\n".join(bytes(name) + b": " + bytes(value) for name, value in fields)
                stream = self.streams.setdefault(self.block_stream, _Stream())
                for name, value in fields:
                    if name == b":authority" and not self.host:
                        self.host = bytes(value).decode("latin-1").rsplit(":", 1)[0]
                    elif name == b"content-encoding":
                        stream.encoding = bytes(value).decode("latin-1").strip().lower()
        units.append(Unit(text or block, self.block_start, end, False, "", self.protocol, peel=True))
        if self.block_end_stream:
            units += self._flush(self.block_stream)
        return units

    def _data(self, stream_id: int, payload: bytes, start: int, end_stream: bool) -> list[Unit]:
        stream = self.streams.setdefault(stream_id, _Stream())
        if payload:
            if stream.start < 0:
                stream.start = start
            stream.end = start + len(payload)
            stream.body.append(payload)
            stream.size += len(payload)
            self.body_bytes += len(payload)
        if end_stream or stream.size > MAX_MESSAGE_BYTES:
            return self._flush(stream_id)
        return []

    def _flush(self, stream_id: int) -> list[Unit]:
        stream = self.streams.pop(stream_id, None)
        if stream is None or not stream.body:
            return []
        body = b"".join(stream.body)
        self.body_bytes -= stream.size
        chain = ""
        if stream.encoding and stream.encoding != "identity" and self.decode_content is not None:
            decoded, problem = self.decode_content(body, stream.encoding)
            if problem:
                self.warnings.append(problem)
            if decoded != body:
                body, chain = decoded, content_chain(stream.encoding)
        return [Unit(body, stream.start, stream.end, False, chain, self.protocol, peel=True)]

    def _flush_all(self) -> list[Unit]:
        units: list[Unit] = []
        for stream_id in list(self.streams):
            units += self._flush(stream_id)
        return units
