"""The cleartext part of encrypted protocols' handshakes, which is scanned although the flow is encrypted.

A flow classed as encrypted is not skipped whole: what its handshake sends before encryption starts is on the
wire as it is, and firmware puts identifiers there.

- **TLS** (stream): every handshake record the client sends before its ChangeCipherSpec or its first encrypted
  record: the ClientHello (SNI, ALPN, a TLS 1.3 PSK identity), and in TLS 1.2 the client Certificate (a device
  certificate whose subject is the IMEI or serial) and the ClientKeyExchange (a PSK identity).
  :class:`TlsHandshakeDecoder` emits them; once encryption starts it sets ``switch_to`` to ``tls`` and the
  scanner stops looking at the flow.
- **DTLS** (datagrams): the epoch-0 handshake fragments (ClientHello with SNI and PSK identity, Certificate,
  ClientKeyExchange) of either side, until each side's first ChangeCipherSpec or epoch > 0 record
  (:func:`dtls_cleartext`).
- SSH's banner and QUIC's Initial packets are handled in the scanner and :mod:`.protocols`.

Nothing after the handshake is scanned, as before: it is ciphertext.
"""

from __future__ import annotations

import struct

from phonehome.scan.protocols import (
    MAX_CLIENT_HELLO_BYTES,
    PROTO_TLS,
    PROTO_TLS_HANDSHAKE,
    ClientHello,
    StreamDecoder,
    Unit,
    parse_client_hello,
)

PROTO_DTLS_HANDSHAKE = "dtls-handshake"
#: cleartext handshake bytes scanned per direction at most (certificate chains are a few KB; more is not TLS)
MAX_HANDSHAKE_BYTES = 256 << 10
#: datagrams of a DTLS flow looked at for its handshake before the flow is treated as encrypted throughout
MAX_DTLS_HANDSHAKE_DATAGRAMS = 32

TLS_CHANGE_CIPHER_SPEC = 20
TLS_HANDSHAKE = 22


class TlsHandshakeDecoder(StreamDecoder):
    """The client's TLS handshake records, one :class:`Unit` each, until encryption starts."""

    protocol = PROTO_TLS_HANDSHAKE

    def __init__(self, offset: int = 0) -> None:
        super().__init__(offset)
        self.seen = 0

    def parse(self, final: bool) -> list[Unit]:
        units: list[Unit] = []
        buf = self.buf
        pos = 0
        while self.switch_to is None and len(buf) - pos >= 5:
            ctype, major = buf[pos], buf[pos + 1]
            length = struct.unpack_from("!H", buf, pos + 3)[0]
            if ctype != TLS_HANDSHAKE or major != 3 or self.seen + length > MAX_HANDSHAKE_BYTES:
                self.switch_to = PROTO_TLS  # ChangeCipherSpec, encrypted data, or not a handshake at all
                break
            if len(buf) - pos < 5 + length:
                self.need = 5 + length  # counted from the record start, where buf will begin
                break
            start = self.offset + pos + 5
            units.append(Unit(buf[pos + 5:pos + 5 + length], start, start + length, True, "", self.protocol))
            self.seen += length
            pos += 5 + length
        if self.switch_to is not None:
            pos = len(buf)  # nothing after encryption starts is looked at
        if pos:
            self.consume(pos)
        return units

    def hole(self) -> list[Unit]:
        """A gap in the handshake: what follows cannot be framed, and is most likely encrypted already."""
        units = self.finish()
        self.switch_to = PROTO_TLS
        self.consume(len(self.buf))
        return units


def dtls_cleartext(payload: bytes) -> tuple[list[tuple[int, int]], bool, bytes]:
    """The epoch-0 handshake fragments of one DTLS datagram.

    Returns (spans of handshake message bodies in ``payload``, whether encryption started in it (a
    ChangeCipherSpec or an epoch > 0 record), the ClientHello as a TLS record when the datagram holds a whole one
    (for its SNI)).
    """
    spans: list[tuple[int, int]] = []
    encrypted = False
    hello = b""
    pos = 0
    n = len(payload)
    while pos + 13 <= n:
        ctype = payload[pos]
        epoch = struct.unpack_from("!H", payload, pos + 3)[0]
        length = struct.unpack_from("!H", payload, pos + 11)[0]
        body = pos + 13
        end = min(body + length, n)
        if ctype == TLS_CHANGE_CIPHER_SPEC or epoch > 0 or ctype != TLS_HANDSHAKE:
            encrypted = encrypted or ctype == TLS_CHANGE_CIPHER_SPEC or epoch > 0 or ctype == 23
        else:
            frag = body
            while frag + 12 <= end:  # several handshake messages may share a record
                msg_type = payload[frag]
                msg_len = int.from_bytes(payload[frag + 1:frag + 4], "big")
                frag_offset = int.from_bytes(payload[frag + 6:frag + 9], "big")
                frag_len = int.from_bytes(payload[frag + 9:frag + 12], "big")
                stop = min(frag + 12 + frag_len, end)
                spans.append((frag + 12, stop))
                if msg_type == 1 and frag_offset == 0 and frag_len == msg_len and stop - frag - 12 == msg_len:
                    hello = _as_tls_client_hello(payload[frag + 12:stop])
                frag = stop
        pos = body + length
    return spans, encrypted, hello


def _as_tls_client_hello(body: bytes) -> bytes:
    """A DTLS ClientHello body rewritten as a TLS ClientHello record (without the cookie), for its SNI."""
    try:
        pos = 2 + 32
        pos += 1 + body[pos]  # session id
        cookie_at = pos
        pos += 1 + body[pos]  # cookie
    except IndexError:
        return b""
    tls_body = body[:cookie_at] + body[pos:]
    handshake = b"\x01" + len(tls_body).to_bytes(3, "big") + tls_body
    if len(handshake) > MAX_CLIENT_HELLO_BYTES:
        return b""
    return b"\x16\x03\x03" + struct.pack("!H", len(handshake)) + handshake


def dtls_client_hello(payload: bytes) -> ClientHello | None:
    """The SNI and ALPN of a DTLS ClientHello (None when the datagram holds no whole one)."""
    record = dtls_cleartext(payload)[2]
    return parse_client_hello(record) if record else None
