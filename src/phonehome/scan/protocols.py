"""Application protocol decoders and encrypted-by-content detection.

An identifier sent in a gzip'd chunked HTTP body, a masked WebSocket frame or a DNS name is not on the wire as
its plain bytes, so each reassembled stream is decoded before matching. Decoders are incremental (fed stream bytes
as they become contiguous) and emit :class:`Unit` values: bytes to match plus where in the stream they came from.

How decoding shows in a finding's ``encoding`` chain: *protocol framing* (TCP reassembly, HTTP de-chunking,
WebSocket unmasking, DNS label decoding, MQTT framing) does not appear — it is how the protocol carries bytes, not
an encoding of the identifier. *Content encodings* do: a ``Content-Encoding: gzip`` body gives ``gzip>...``, and
URL-decoding gives ``url`` (``url>base64`` when the URL-decoded text held base64 of it).

Encrypted or not is decided by content, never by port: TLS and DTLS record headers, QUIC long headers with a
known version, the SSH banner.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

PROTO_HTTP = "http"
PROTO_HTTP2 = "http2"
PROTO_WEBSOCKET = "websocket"
PROTO_DNS = "dns"
PROTO_TLS_HANDSHAKE = "tls-handshake"
PROTO_TLS = "tls"
PROTO_DTLS = "dtls"
PROTO_QUIC = "quic"
PROTO_SSH = "ssh"
PROTO_MQTT = "mqtt"
PROTO_DHCP = "dhcp"
PROTO_DHCPV6 = "dhcpv6"
PROTO_ESP = "esp"  # IPsec ESP in UDP (NAT traversal): a VPN, Wi-Fi calling to the ePDG
PROTO_UNKNOWN = "unknown"
#: a decoder's switch_to when its stream goes on as another protocol from here (TLS through an HTTP CONNECT proxy)
PROTO_TUNNEL = "tunnel"

ENCRYPTED_PROTOCOLS = frozenset((PROTO_TLS, PROTO_DTLS, PROTO_QUIC, PROTO_SSH))

#: bytes of an unknown stream matched per call (large calls amortise the matcher's per-call cost)
RAW_BATCH_BYTES = 1 << 20
#: an HTTP head longer than this is not HTTP (or is an attack): the rest of the stream is scanned raw
MAX_HTTP_HEAD_BYTES = 64 << 10
#: an HTTP body, WebSocket frame or MQTT packet larger than this is scanned raw instead of decoded
MAX_MESSAGE_BYTES = 8 << 20
#: a body of this many bytes or more, with a Content-Length and no Content-Encoding (a download, an upload), is
#: scanned in pieces of this size as it arrives (HttpDecoder), not held whole until complete
STREAM_BODY_BYTES = 256 << 10
#: a ClientHello larger than this is not one
MAX_CLIENT_HELLO_BYTES = 64 << 10
#: bytes needed to tell protocols apart at the start of a stream
CLASSIFY_BYTES = 8
#: a TLS record header (type, version, length) plus the handshake type of a first handshake record
TLS_HEAD_BYTES = 6
#: the largest TLS record the protocol allows (RFC 8446 5.2: 2^14 plus 2048 of expansion)
MAX_TLS_RECORD_BYTES = (1 << 14) + 2048
TLS_HANDSHAKE = 22
#: content type (change_cipher_spec, alert, handshake, application_data), major version 3, minor 0-4
_TLS_RECORD_START = (range(20, 24), (3,), range(0, 5))
#: handshake message types (RFC 5246 7.4, RFC 8446 4): a capture may start mid-handshake (a Certificate...)
_TLS_HANDSHAKE_TYPES = frozenset((0, 1, 2, 3, 4, 5, 6, 8, 11, 12, 13, 14, 15, 16, 20, 21, 22, 23, 24, 25, 254))

_HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ",
                 b"TRACE ")
_H2_PREFACE_START = b"PRI * HT"  # CLASSIFY_BYTES of the HTTP/2 connection preface
_QUIC_VERSIONS = frozenset((0x00000001, 0x6B3343CF, 0x51303530, 0x51303436, 0x51303433))


@dataclass(frozen=True)
class Unit:
    """Bytes to match, decoded from the stream span ``[start, end)``.

    ``exact``: ``data[i]`` is stream byte ``start + i`` (a match maps to the frames carrying exactly its bytes);
    otherwise a match is attributed to every frame of the span. ``chain`` lists the content decodings applied,
    outermost first, joined by ``>`` ("" when matched as on the wire). ``peel``: also run the nested decoders.
    """

    data: bytes
    start: int
    end: int
    exact: bool
    chain: str
    protocol: str
    peel: bool = False


# --- classification -------------------------------------------------------------------------------------------


def classify_stream(head: bytes) -> str:
    """The protocol of a TCP byte stream from its first bytes ("" when more bytes are needed to tell)."""
    tls = _tls_verdict(head)
    if tls is not None:
        return tls
    if head.startswith(b"SSH-"):
        return PROTO_SSH
    if head.startswith(b"HTTP/1.") or head.startswith(_HTTP_METHODS):
        return PROTO_HTTP
    if head.startswith(_H2_PREFACE_START):  # HTTP/2 with prior knowledge (.http2)
        return PROTO_HTTP2
    if _looks_like_mqtt_connect(head):
        return PROTO_MQTT
    if len(head) < CLASSIFY_BYTES and (b"SSH-".startswith(head) or b"HTTP/1.".startswith(head)
                                       or _H2_PREFACE_START.startswith(head)
                                       or any(m.startswith(head) for m in _HTTP_METHODS)
                                       or (head[:1] == b"\x10")):
        return ""
    return PROTO_UNKNOWN


def _tls_verdict(head: bytes) -> str | None:
    """PROTO_TLS when ``head`` starts with a plausible TLS record, "" while too short to tell, None when it is
    not TLS. A stream called TLS is never scanned, so three lucky bytes (content type, 0x03, minor version) are
    not enough: the record length must be legal and a handshake record must hold a known handshake type."""
    for byte, allowed in zip(head[:3], _TLS_RECORD_START, strict=False):  # head may be shorter
        if byte not in allowed:
            return None
    if len(head) < TLS_HEAD_BYTES:
        return ""
    length = int.from_bytes(head[3:5], "big")
    if not 0 < length <= MAX_TLS_RECORD_BYTES:
        return None
    if head[0] == TLS_HANDSHAKE and head[5] not in _TLS_HANDSHAKE_TYPES:
        return None
    return PROTO_TLS


def _looks_like_mqtt_connect(head: bytes) -> bool:
    if not head or head[0] != 0x10:
        return False
    i = 1
    while i < len(head) and i < 5 and head[i] & 0x80:
        i += 1
    i += 1
    return head[i:i + 6] == b"\x00\x04MQTT" or head[i:i + 8] == b"\x00\x06MQIsdp"


def classify_datagram(payload: bytes) -> str:
    """An encrypted UDP protocol recognised from one datagram ("" when not DTLS or QUIC)."""
    if len(payload) >= 13 and 20 <= payload[0] <= 25 and payload[1] == 0xFE and payload[2] in (0xFF, 0xFD, 0xFC):
        return PROTO_DTLS
    if len(payload) >= 7 and payload[0] & 0xC0 == 0xC0:
        version = struct.unpack_from("!I", payload, 1)[0]
        if version in _QUIC_VERSIONS or version & 0xFFFFFF00 == 0xFF000000:
            return PROTO_QUIC
    return ""


#: QUIC short-header packets (RFC 9000 17.3: header form 0, fixed bit 1, the destination connection ID, then the
#: protected packet number and payload) carry no version: a flow seen only after its handshake (a capture
#: started late, a migrated or lost Initial) is known by :data:`QUIC_SHORT_RUN` datagrams in a row, in one
#: direction, to or from UDP 443, with one connection ID prefix and nothing but random-looking bytes. Until then
#: its datagrams are scanned, and one that does not look so (cleartext) starts the count again.
QUIC_PORT = 443
QUIC_SHORT_RUN = 4
QUIC_SHORT_HEADER_BYTES = 5  # the first byte and the first 4 bytes of the connection ID
#: the first bytes of a direction's last datagram kept to compare the next one's with (QUIC's connection ID,
#: ESP's SPI and sequence number)
DATAGRAM_HEADER_BYTES = 8
#: bytes are judged 256 at a time (fewer cannot tell base64 XOR-ed with a 4-byte key from random bytes): QUIC's
#: full-size packets (~1,200 bytes) have them, its ACK-only ones need not be judged
ENCRYPTED_SAMPLE_BYTES = 256
MIN_QUIC_SHORT_BYTES = QUIC_SHORT_HEADER_BYTES + ENCRYPTED_SAMPLE_BYTES
_COMPRESSED_MAGICS = re.compile(rb"\x1f\x8b|x[\x01\x5e\x9c\xda]|BZh[1-9]|\xfd7zXZ|\x28\xb5\x2f\xfd")


def quic_short_header(payload: bytes, previous: bytes) -> bool | None:
    """True when ``payload`` looks like a QUIC short-header packet of the same connection as ``previous`` (the
    first bytes of the direction's last datagram): fixed bit set, long-header bit clear, the same connection ID
    prefix, and every byte after it random-looking (:func:`looks_encrypted`). None when it has that header but is
    too short to judge (an ACK): neither for nor against."""
    if len(payload) < QUIC_SHORT_HEADER_BYTES or payload[0] & 0xC0 != 0x40 or len(previous) < QUIC_SHORT_HEADER_BYTES:
        return False
    if previous[0] & 0xC0 != 0x40 or payload[1:QUIC_SHORT_HEADER_BYTES] != previous[1:QUIC_SHORT_HEADER_BYTES]:
        return False  # (header protection masks the first byte's low 5 bits: they differ from packet to packet)
    if len(payload) < MIN_QUIC_SHORT_BYTES:
        return None
    return looks_encrypted(payload, QUIC_SHORT_HEADER_BYTES)


#: the UDP port of IPsec NAT traversal (RFC 3948): ESP packets, and IKE ones after a 4-byte zero marker
IPSEC_NAT_T_PORT = 4500
#: ESP datagrams in a row, in one direction, before a flow on the port is called ESP
ESP_RUN = 2


def esp_in_udp(payload: bytes, previous: bytes) -> bool | None:
    """True when a datagram to or from UDP 4500 looks like the next ESP packet after ``previous`` (the first
    bytes of the direction's last datagram): the same non-zero SPI (zero marks IKE), a higher sequence number,
    then random-looking bytes (:func:`looks_encrypted`). None when it has that header but is too short to judge
    (Wi-Fi calling's voice packets): neither for nor against."""
    if len(payload) < DATAGRAM_HEADER_BYTES or len(previous) < DATAGRAM_HEADER_BYTES:
        return False
    if payload[:4] == b"\0\0\0\0" or payload[:4] != previous[:4] or payload[4:8] <= previous[4:8]:
        return False
    if len(payload) < DATAGRAM_HEADER_BYTES + ENCRYPTED_SAMPLE_BYTES:
        return None
    return looks_encrypted(payload, DATAGRAM_HEADER_BYTES)


def looks_encrypted(payload: bytes, start: int) -> bool:
    """Every byte of ``payload`` from ``start`` on looks random: judged in windows of
    :data:`ENCRYPTED_SAMPLE_BYTES` (the last one ending with the payload), each of which, as a whole and taking
    every 2nd, 3rd and 4th byte from each offset (text XOR-ed with a repeating key of up to 4 bytes is varied as a
    whole but not there), has at least 80 % of the distinct byte values random bytes of that length are expected
    to have; and no compressed stream's magic anywhere in it, its first bytes included. Cleartext, even binary,
    does not look so; what does (compressed data with no magic) is not readable anyway."""
    size = ENCRYPTED_SAMPLE_BYTES
    if len(payload) - start < size or _COMPRESSED_MAGICS.search(payload) is not None:
        return False
    starts = list(range(start, len(payload) - size + 1, size))
    if starts[-1] != len(payload) - size:
        starts.append(len(payload) - size)
    return all(_random_window(payload[at:at + size]) for at in starts)


def _random_window(window: bytes) -> bool:
    for period in (1, 2, 3, 4):
        for offset in range(period):
            part = window[offset::period]
            if len(set(part)) < 0.8 * 256 * (1 - (255 / 256) ** len(part)):
                return False
    return True


# --- TLS ClientHello ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientHello:
    """The cleartext part of a TLS handshake that can leak: the server name and the ALPN protocols."""

    sni: str | None
    alpn: tuple[str, ...]
    length: int  # bytes of the stream the ClientHello records occupy


def parse_client_hello(data: bytes) -> ClientHello | None:
    """Parse a ClientHello from the start of a TLS stream (possibly spread over several records).

    Returns None when ``data`` does not hold the whole ClientHello yet or is not one.
    """
    body = bytearray()
    pos = 0
    need = -1
    while need < 0 or len(body) < need:
        if pos + 5 > len(data) or data[pos] != 22:
            return None
        rlen = struct.unpack_from("!H", data, pos + 3)[0]
        if pos + 5 + rlen > len(data):
            return None
        body += data[pos + 5:pos + 5 + rlen]
        pos += 5 + rlen
        if need < 0 and len(body) >= 4:
            if body[0] != 1:
                return None
            need = 4 + int.from_bytes(body[1:4], "big")
            if need > MAX_CLIENT_HELLO_BYTES:
                return None
        if rlen == 0:
            return None
    sni, alpn = _hello_extensions(bytes(body[4:need]))
    return ClientHello(sni, alpn, pos)


def _hello_extensions(hello: bytes) -> tuple[str | None, tuple[str, ...]]:
    sni: str | None = None
    alpn: list[str] = []
    try:
        pos = 2 + 32
        pos += 1 + hello[pos]
        pos += 2 + struct.unpack_from("!H", hello, pos)[0]
        pos += 1 + hello[pos]
        end = pos + 2 + struct.unpack_from("!H", hello, pos)[0]
        pos += 2
        while pos + 4 <= min(end, len(hello)):
            etype, elen = struct.unpack_from("!HH", hello, pos)
            ext = hello[pos + 4:pos + 4 + elen]
            if etype == 0 and len(ext) >= 5:
                nlen = struct.unpack_from("!H", ext, 3)[0]
                sni = ext[5:5 + nlen].decode("ascii", "replace")
            elif etype == 16 and len(ext) >= 2:
                i = 2
                while i < len(ext):
                    n = ext[i]
                    alpn.append(ext[i + 1:i + 1 + n].decode("ascii", "replace"))
                    i += 1 + n
            pos += 4 + elen
    except (IndexError, struct.error):
        pass
    return sni, tuple(alpn)


# --- DNS ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DnsMessage:
    """Names in a DNS message (decoded, dotted) and the addresses its answers give them."""

    names: tuple[str, ...]
    addresses: tuple[tuple[str, bytes], ...]  # (name asked for, packed address)
    texts: tuple[bytes, ...]  # TXT record strings


#: UDP ports of DHCP (BOOTP server and client)
DHCP_PORTS = frozenset((67, 68))
_DHCP_MAGIC = b"\x63\x82\x53\x63"
_DHCP_CLIENT_ID = 61


def dhcp_link_addresses_blanked(payload: bytes, link_header: bytes) -> bytes | None:
    """A DHCP/BOOTP message with the link-layer address it carries blanked where it is the frame's own: the client
    hardware address (chaddr) and a client identifier of hardware type 1 (Ethernet/Wi-Fi MAC), each only when
    those 6 bytes are in ``link_header`` (the frame's bytes before the IP header: Ethernet, Linux cooked, 802.11).
    That address is sent to the local network by every device that joins it, in the frame's header too: never a
    leak. A MAC that is not the frame's (the factory MAC behind a randomised one), or any MAC in a capture with no
    link layer, stays, as do the other options (host name, vendor class...): all scanned. None when ``payload``
    is no DHCP message."""
    if len(payload) < 240 or payload[0] not in (1, 2) or payload[236:240] != _DHCP_MAGIC:
        return None
    out = bytearray(payload)
    if len(link_header) >= 6 and payload[28:34] in link_header:
        out[28:44] = bytes(16)  # chaddr
    pos = 240
    while pos < len(out) and out[pos] != 255:
        if out[pos] == 0:  # pad
            pos += 1
            continue
        if pos + 2 > len(out):
            break
        size = out[pos + 1]
        if pos + 2 + size > len(out):
            break  # an option cut short: nothing more to read
        if (out[pos] == _DHCP_CLIENT_ID and size == 7 and out[pos + 2] == 1 and len(link_header) >= 6
                and out[pos + 3:pos + 9] in link_header):
            out[pos + 3:pos + 9] = bytes(6)
        pos += 2 + size
    return bytes(out)


#: UDP ports of DHCPv6 (client, and server or relay agent)
DHCPV6_PORTS = frozenset((546, 547))
_DHCPV6_RELAY_FORW, _DHCPV6_RELAY_REPL = 12, 13
_DHCPV6_CLIENTID, _DHCPV6_SERVERID, _DHCPV6_RELAY_MSG = 1, 2, 9
_DHCPV6_CLIENT_LINKLAYER_ADDR = 79  # RFC 6939: link-layer type, then the client's link-layer address
_DUID_LLT, _DUID_LL = 1, 3  # DUID types that carry a link-layer address (after type, hardware type[, time])
#: relay messages nest: a relay agent wraps what it relays (RFC 8415's HOP_COUNT_LIMIT is 8 hops)
_DHCPV6_MAX_NESTING = 32


def dhcpv6_link_addresses_blanked(payload: bytes, link_header: bytes) -> bytes | None:
    """A DHCPv6 message with the link-layer addresses it carries as such blanked: the one in a DUID of type
    DUID-LLT or DUID-LL (client and server identifier options) where it is the frame's own (in ``link_header``,
    as DHCP's chaddr: :func:`dhcp_link_addresses_blanked`; a DUID-LLT made once from the factory MAC and sent
    behind a randomised one is what randomisation hides, and is scanned), and in what a relay agent sends (its
    client link-layer address option, the relayed messages: the network's, not the phone's). Its other options
    (FQDN with the host name, vendor options...) stay and are scanned. None when ``payload`` is no DHCPv6 message
    (its options must fill it exactly)."""
    out = bytearray(payload)
    return bytes(out) if _blank_dhcpv6(out, 0, len(out), 0, link_header) else None


def _blank_dhcpv6(out: bytearray, start: int, end: int, depth: int, link_header: bytes) -> bool:
    """Blank the link-layer addresses of the DHCPv6 message in ``out[start:end]``; False when it is none."""
    if end - start < 4 or depth > _DHCPV6_MAX_NESTING:
        return False
    kind = out[start]
    relay = kind in (_DHCPV6_RELAY_FORW, _DHCPV6_RELAY_REPL)
    if not 1 <= kind <= 36 or (relay and end - start < 34):
        return False
    pos = start + (34 if relay else 4)  # relays: hop count, link address, peer address
    while pos < end:
        if pos + 4 > end:
            return False
        code = int.from_bytes(out[pos:pos + 2], "big")
        size = int.from_bytes(out[pos + 2:pos + 4], "big")
        value = pos + 4
        if value + size > end:
            return False
        if code in (_DHCPV6_CLIENTID, _DHCPV6_SERVERID) and size >= 4:
            duid = int.from_bytes(out[value:value + 2], "big")
            address = value + (8 if duid == _DUID_LLT else 4 if duid == _DUID_LL else size)
            own = depth > 0 or (value + size - address >= 6 and bytes(out[address:value + size]) in link_header)
            if address < value + size and own:
                out[address:value + size] = bytes(value + size - address)
        elif code == _DHCPV6_CLIENT_LINKLAYER_ADDR and size > 2:
            out[value + 2:value + size] = bytes(size - 2)
        elif code == _DHCPV6_RELAY_MSG and relay and not _blank_dhcpv6(out, value, value + size, depth + 1,
                                                                        link_header):
            return False
        pos = value + size
    return True


def parse_dns(payload: bytes) -> DnsMessage | None:
    """Parse a DNS message (UDP payload); None when it is not one."""
    if len(payload) < 12:
        return None
    qd, an, ns, ar = struct.unpack_from("!HHHH", payload, 4)
    if qd > 64 or an + ns + ar > 512:
        return None
    names: list[str] = []
    addresses: list[tuple[str, bytes]] = []
    texts: list[bytes] = []
    cname_of: dict[str, str] = {}
    pos = 12
    try:
        for _ in range(qd):
            name, pos = _dns_name(payload, pos)
            names.append(name)
            pos += 4
        for _ in range(an + ns + ar):
            name, pos = _dns_name(payload, pos)
            rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", payload, pos)
            pos += 10
            rdata = payload[pos:pos + rdlen]
            if len(rdata) != rdlen:
                return None
            names.append(name)
            if rtype in (1, 28) and rdlen in (4, 16):
                addresses.append((name, rdata))
            elif rtype in (5, 12, 2):
                target, _ = _dns_name(payload, pos)
                names.append(target)
                if rtype == 5:
                    cname_of[target] = name
            elif rtype == 16:
                i = 0
                while i < len(rdata):
                    texts.append(rdata[i + 1:i + 1 + rdata[i]])
                    i += 1 + rdata[i]
            pos += rdlen
    except (IndexError, struct.error, ValueError):
        if not names:
            return None
    # an address answered for a CNAME target belongs to the name the client asked for
    resolved = []
    for name, addr in addresses:
        seen = 0
        while name in cname_of and seen < 8:
            name = cname_of[name]
            seen += 1
        resolved.append((name, addr))
    return DnsMessage(tuple(names), tuple(resolved), tuple(texts))


def _dns_name(data: bytes, pos: int) -> tuple[str, int]:
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            jumps += 1
            if jumps > 32:
                raise ValueError("DNS compression loop")
            continue
        if length & 0xC0:
            raise ValueError("bad DNS label")
        if length == 0:
            return ".".join(labels), (end if end >= 0 else pos + 1)
        label = data[pos + 1:pos + 1 + length]
        if len(label) != length:
            raise ValueError("DNS label cut short")
        labels.append(label.decode("latin-1"))
        pos += 1 + length


# --- stream decoders ------------------------------------------------------------------------------------------


class StreamDecoder:
    """Base of the incremental decoders: buffers stream bytes, emits :class:`Unit` values.

    ``offset`` is the stream offset of ``buf[0]``; subclasses consume from the front of ``buf``.
    """

    protocol = PROTO_UNKNOWN

    def __init__(self, offset: int = 0) -> None:
        self.buf = b""
        self.offset = offset
        self.host: str | None = None
        self.switch_to: str | None = None  # set when the protocol changes (HTTP upgrade to WebSocket)
        self.warnings: list[str] = []  # content that could not be decoded (scanned as sent instead)
        self.addresses: list[tuple[str, bytes]] = []  # DNS answers seen (the scanner drains them for host names)
        #: parse again only once buf would hold this many bytes (set by parse while it waits for a known size)
        self.need = 0
        self._parts: list[bytes] = []
        self._pending = 0

    def feed(self, data: bytes) -> list[Unit]:
        # pieces are joined only when a parse can make progress: joining per segment would copy a large body
        # once per segment (quadratic)
        self._parts.append(data)
        self._pending += len(data)
        if len(self.buf) + self._pending < self.need:
            return []
        self._join()
        return self.parse(final=False)

    def buffer(self, data: bytes) -> int:
        """Hold ``data`` when a parse could not make progress yet (``need`` not reached) and return :attr:`held`;
        0, holding nothing, when the caller must :meth:`feed` it instead.

        This is :meth:`feed` when it would return no units, without the parse attempt: the scanner's fast path
        for a segment in the middle of a large message (an HTTP body of known length, a raw batch).
        """
        if len(self.buf) + self._pending + len(data) >= self.need or not data:
            return 0
        self._parts.append(data)
        self._pending += len(data)
        return self.held  # the property: a subclass holding more (HTTP/2 bodies, decrypted TLS) counts it all

    def finish(self) -> list[Unit]:
        self._join()
        return self.parse(final=True)

    @property
    def held(self) -> int:
        """Bytes buffered, waiting for the rest of a message (the scanner bounds the total)."""
        return len(self.buf) + self._pending

    def _join(self) -> None:
        if self._parts:
            self.buf = b"".join((self.buf, *self._parts))
            self._parts = []
            self._pending = 0
        self.need = 0

    def parse(self, final: bool) -> list[Unit]:
        raise NotImplementedError

    def consume(self, n: int) -> None:
        self.buf = self.buf[n:]
        self.offset += n

    def hole(self) -> list[Unit]:
        """A gap in the stream: whatever is buffered can no longer be completed; scan it as it is."""
        units = self.finish()
        if self.buf:
            units.append(Unit(self.buf, self.offset, self.offset + len(self.buf), True, "", self.protocol))
            self.consume(len(self.buf))
        return units


class RawDecoder(StreamDecoder):
    """Unknown payload: matched as raw bytes in large batches, carrying ``overlap`` bytes between batches so an
    identifier split across a batch boundary is still found."""

    def __init__(self, offset: int = 0, *, overlap: int = 0, protocol: str = PROTO_UNKNOWN,
                 batch_bytes: int = RAW_BATCH_BYTES) -> None:
        super().__init__(offset)
        self.overlap = overlap
        self.protocol = protocol
        self.batch_bytes = batch_bytes
        self.carry = b""
        self.need = batch_bytes

    def parse(self, final: bool) -> list[Unit]:
        if not self.buf or (len(self.buf) < self.batch_bytes and not final):
            self.need = self.batch_bytes
            return []
        data = self.carry + self.buf
        start = self.offset - len(self.carry)
        unit = Unit(data, start, start + len(data), True, "", self.protocol, peel=True)
        keep = min(self.overlap, len(data))
        self.carry = data[len(data) - keep:] if keep else b""
        self.consume(len(self.buf))
        self.need = self.batch_bytes
        return [unit]

    def hole(self) -> list[Unit]:
        units = self.finish()
        self.carry = b""
        return units


#: a header line (name, value) of a head decoded as latin-1 (one character per byte), every line at once: a line
#: that is no header (a folded continuation, garbage) matches nothing and is skipped
_HEADER_LINES = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.MULTILINE)

#: ``layers.decode_content``: (body, Content-Encoding) -> (decoded body, problem or None)
ContentDecoder = Callable[[bytes, str], tuple[bytes, "str | None"]]


class HttpHead:
    """A parsed HTTP/1.x start line and headers (names lower-cased, in order; :meth:`header` gives a name's first
    value, from an index made once: the decoder asks for five names per message)."""

    __slots__ = ("_first", "headers", "is_request", "start_line", "status")

    def __init__(self, start_line: bytes, headers: tuple[tuple[str, str], ...], is_request: bool,
                 status: int) -> None:
        self.start_line = start_line
        self.headers = headers
        self.is_request = is_request
        self.status = status
        self._first = dict(reversed(headers))  # reversed: a repeated name keeps its first value

    def header(self, name: str) -> str | None:
        return self._first.get(name)


def parse_http_head(raw: bytes) -> HttpHead | None:
    """Parse the head of one HTTP/1.x message (without the blank line); None when it is not HTTP/1.x."""
    line_end = raw.find(b"\n")
    first = (raw if line_end < 0 else raw[:line_end]).rstrip(b"\r")
    is_request = not first.startswith(b"HTTP/1.")
    status = 0
    if is_request:
        parts = first.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return None
    else:
        try:
            status = int(first[9:12])
        except ValueError:
            return None
    if line_end < 0:
        return HttpHead(first, (), is_request, status)
    headers = tuple((name.lower(), value) for name, value in _HEADER_LINES.findall(raw.decode("latin-1"), line_end + 1))
    return HttpHead(first, headers, is_request, status)


class HttpDecoder(StreamDecoder):
    """HTTP/1.x messages (pipelined too): head, de-chunked and content-decoded body, URL-decoded forms."""

    protocol = PROTO_HTTP

    def __init__(self, offset: int = 0, *, decode_content: ContentDecoder | None = None, overlap: int = 0) -> None:
        super().__init__(offset)
        self.decode_content = decode_content
        self.overlap = overlap
        #: bytes left of a body scanned in pieces as it arrives (see STREAM_BODY_BYTES), and the last ``overlap``
        #: bytes of the piece before, scanned again with the next so no match is cut
        self.streaming = 0
        self.carry = b""
        self.first_piece = False
        self.raw_mode = False
        self.messages = 0  # complete messages parsed
        #: the first message opened a tunnel: a CONNECT request, or (the other direction) a 2xx response first of
        #: all, as a proxy answers CONNECT; only then may TLS follow the HTTP in the stream
        self.tunnel = False

    def parse(self, final: bool) -> list[Unit]:
        units: list[Unit] = []
        while self.buf and not self.raw_mode and self.switch_to is None:
            if self.streaming:
                if not self._piece(units, final):
                    break
            elif not self._message(units, final):
                break
        if self.raw_mode:
            if self.buf and (final or len(self.buf) >= RAW_BATCH_BYTES):
                units.append(Unit(self.buf, self.offset, self.offset + len(self.buf), True, "", self.protocol, True))
                self.consume(len(self.buf))
            self.need = RAW_BATCH_BYTES
        return units

    def _give_up(self) -> None:
        self.raw_mode = True

    def _message(self, units: list[Unit], final: bool) -> bool:
        """Parse one message from the front of buf; False when more bytes are needed."""
        buf = self.buf
        if self.tunnel and buf[:1] == b"\x16":  # after a CONNECT (a proxy), the tunnelled TLS starts here
            verdict = _tls_verdict(buf[:TLS_HEAD_BYTES])
            if verdict == "" and not final:
                self.need = TLS_HEAD_BYTES
                return False
            if verdict == PROTO_TLS:
                self.switch_to = PROTO_TUNNEL
                return False
        head_end = buf.find(b"\r\n\r\n", 0, MAX_HTTP_HEAD_BYTES)
        sep = 4
        if head_end < 0:
            head_end = buf.find(b"\n\n", 0, MAX_HTTP_HEAD_BYTES)
            sep = 2
        if head_end < 0:
            if len(buf) >= MAX_HTTP_HEAD_BYTES or final:
                self._give_up()
            self.need = len(buf) + 1
            return False
        head = parse_http_head(buf[:head_end])
        if head is None:
            self._give_up()
            return False
        body_start = head_end + sep
        body, body_end, chunked = self._body(head, body_start, final)
        if body is None:  # body_end: how many bytes buf must hold before the message can be complete
            if self._streamed(head, body_end - body_start) and not final:
                self._emit_head(units, buf[:body_start])
                self.streaming, self.carry, self.first_piece = body_end - body_start, b"", True
                self._after_head(head)
                self.consume(body_start)
                return True  # its body, piece by piece (_piece)
            if final or body_end - body_start > MAX_MESSAGE_BYTES or len(buf) - body_start >= MAX_MESSAGE_BYTES:
                self._give_up()  # too large to hold (or malformed): scan the rest of the stream as raw bytes
            self.need = body_end
            return False
        self._emit_head(units, buf[:body_start])
        if body:
            self._emit_body(units, head, body, body_start, body_end, chunked)
        self._after_head(head)
        self.consume(body_end)
        return True

    def hole(self) -> list[Unit]:
        units = super().hole()
        self.streaming, self.carry = 0, b""  # the body's length no longer tells where the next message starts
        return units

    @staticmethod
    def _streamed(head: HttpHead, length: int) -> bool:
        """Whether a message's body is scanned in pieces as it arrives: long, of a known length, and as sent (no
        Content-Encoding to undo, not chunked), so a piece is the same bytes the whole would be."""
        declared = (head.header("content-length") or "").strip()
        if length < STREAM_BODY_BYTES or not (declared.isascii() and declared.isdigit()) or int(declared) != length:
            return False  # no length, or one that does not parse (then held, up to MAX_MESSAGE_BYTES, as ever)
        if "chunked" in (head.header("transfer-encoding") or "").lower():
            return False
        return (head.header("content-encoding") or "identity").strip().lower() == "identity"

    def _piece(self, units: list[Unit], final: bool) -> bool:
        """The next piece of a body being scanned as it arrives (STREAM_BODY_BYTES at a time, or its end); False
        when more bytes are needed. Only the body's first piece is peeled, as a whole body's first bytes are."""
        take = min(len(self.buf), self.streaming, STREAM_BODY_BYTES)
        if take < min(STREAM_BODY_BYTES, self.streaming) and not final:
            self.need = min(STREAM_BODY_BYTES, self.streaming)
            return False
        piece = self.carry + self.buf[:take]
        start = self.offset - len(self.carry)
        units.append(Unit(piece, start, start + len(piece), True, "", PROTO_HTTP, peel=self.first_piece))
        self.first_piece = False
        keep = min(self.overlap, len(piece))
        self.carry = piece[len(piece) - keep:] if keep else b""
        self.streaming -= take
        self.consume(take)
        if not self.streaming:
            self.carry = b""
        self.need = 0
        return True

    def _after_head(self, head: HttpHead) -> None:
        """What a message's head tells about the stream: a tunnel opened, the host, an upgrade."""
        if not self.messages:
            self.tunnel = (head.start_line.startswith(b"CONNECT ") if head.is_request
                           else 200 <= head.status < 300)
        self.messages += 1
        host = head.header("host")
        if host:
            self.host = host.rsplit(":", 1)[0] if "]" not in host and host.count(":") == 1 else host
        upgrade = (head.header("upgrade") or "").lower()
        if upgrade == "websocket" and (head.is_request or head.status == 101):
            self.switch_to = PROTO_WEBSOCKET
        elif upgrade == "h2c" and (head.is_request or head.status == 101):
            self.switch_to = PROTO_HTTP2  # the client's next bytes are the preface; the server's, frames

    def _body(self, head: HttpHead, start: int, final: bool) -> tuple[bytes | None, int, bool]:
        """(body, end offset in buf, was chunked); body None while incomplete (end = bytes available)."""
        buf = self.buf
        if head.is_request is False and (head.status in (204, 304) or 100 <= head.status < 200):
            return b"", start, False
        encoding = (head.header("transfer-encoding") or "").lower()
        if "chunked" in encoding:
            return self._dechunk(start, final)
        length_text = head.header("content-length")
        if length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                length = -1
            if length < 0:
                return None, start + MAX_MESSAGE_BYTES + 1, False
            if start + length > len(buf):
                if final:  # cut short: scan what there is
                    return buf[start:], len(buf), False
                return None, start + length, False
            return buf[start:start + length], start + length, False
        if head.is_request:
            return b"", start, False
        if 200 <= head.status < 300 and not self.messages:  # the 2xx to a CONNECT (a proxy's first answer) has
            # no body: the tunnel (TLS, HTTP) follows at once
            after = buf[start:start + TLS_HEAD_BYTES]
            if len(after) < TLS_HEAD_BYTES and not final:
                return None, start + TLS_HEAD_BYTES, False
            if _tls_verdict(after) == PROTO_TLS or after.startswith(b"HTTP/1"):
                return b"", start, False
        if final:  # response delimited by connection close
            return buf[start:], len(buf), False
        return None, start + MAX_MESSAGE_BYTES, False

    def _dechunk(self, start: int, final: bool) -> tuple[bytes | None, int, bool]:
        buf = self.buf
        parts: list[bytes] = []
        pos = start
        while True:
            line_end = buf.find(b"\n", pos, pos + 1024)
            if line_end < 0:
                if final:
                    return b"".join(parts) + buf[pos:], len(buf), True
                return None, len(buf) + 1, True
            size_text = buf[pos:line_end].split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                return b"".join(parts) + buf[pos:], len(buf), True  # not chunked after all: keep the bytes
            data_start = line_end + 1
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", line_end - 1)
                end = trailer_end + 4 if trailer_end >= 0 else len(buf)
                if trailer_end < 0 and not final:
                    return None, len(buf) + 1, True
                return b"".join(parts), end, True
            if data_start + size > len(buf):
                if final:
                    return b"".join(parts) + buf[data_start:], len(buf), True
                return None, data_start + size + 2, True
            parts.append(buf[data_start:data_start + size])
            pos = data_start + size
            if buf[pos:pos + 2] == b"\r\n":
                pos += 2
            elif buf[pos:pos + 1] == b"\n":
                pos += 1

    def _emit_head(self, units: list[Unit], raw: bytes) -> None:
        # URL-decoding of the request line, cookies and forms is left to the nested decoders (layers.peel),
        # which name it "url" in the chain
        units.append(Unit(raw, self.offset, self.offset + len(raw), True, "", PROTO_HTTP, peel=True))

    def _emit_body(self, units: list[Unit], head: HttpHead, body: bytes, body_start: int, body_end: int,
                   chunked: bool) -> None:
        start, end = self.offset + body_start, self.offset + body_end
        chain = ""
        content_encoding = (head.header("content-encoding") or "").strip().lower()
        if content_encoding and content_encoding != "identity" and self.decode_content is not None:
            decoded, problem = self.decode_content(body, content_encoding)
            if problem:
                self.warnings.append(problem)
            if decoded != body:
                body, chain = decoded, content_chain(content_encoding)
        exact = not chunked and not chain
        units.append(Unit(body, start, end, exact, chain, PROTO_HTTP, peel=True))


_CODING_NAMES = {"x-gzip": "gzip", "br": "brotli", "x-bzip2": "bzip2"}


def content_chain(content_encoding: str) -> str:
    """``Content-Encoding: gzip, br`` (gzip applied first) as a chain, outermost first: ``brotli>gzip``."""
    codings = [c.strip() for c in content_encoding.lower().split(",") if c.strip() not in ("", "identity")]
    return ">".join(_CODING_NAMES.get(c, c) for c in reversed(codings))


class WebSocketDecoder(StreamDecoder):
    """WebSocket frames after an HTTP upgrade: client frames unmasked (each frame with its own key), fragmented
    messages joined from their continuation frames, permessage-deflate inflated.

    permessage-deflate compresses whole messages (RSV1 on the first frame) and by default keeps its LZ77 window
    from one message to the next (context takeover): one inflater per direction, fed every compressed message
    in order, reads both that and ``no_context_takeover``.
    """

    protocol = PROTO_WEBSOCKET
    raw_mode = False  # after a frame too large to hold: the rest of the stream is scanned as raw bytes

    def __init__(self, offset: int = 0) -> None:
        super().__init__(offset)
        self._message: list[bytes] = []  # unmasked payloads of a fragmented message's frames so far
        self._message_start = 0
        self._message_size = 0
        self._compressed = False
        self._inflater: zlib._Decompress | None = None

    def parse(self, final: bool) -> list[Unit]:
        units: list[Unit] = []
        if self.raw_mode:
            return _raw_batches(self, units, final)
        while len(self.buf) >= 2:
            buf = self.buf
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n = struct.unpack_from("!H", buf, 2)[0]
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n = struct.unpack_from("!Q", buf, 2)[0]
                pos = 10
            masked = bool(b1 & 0x80)
            key = b""
            if masked:
                key = buf[pos:pos + 4]
                pos += 4
            if n > MAX_MESSAGE_BYTES or self._message_size + n > MAX_MESSAGE_BYTES:
                units += self._flush_message()
                self.raw_mode = True
                return _raw_batches(self, units, final)
            if pos + n > len(buf):
                if final:
                    n = len(buf) - pos
                else:
                    self.need = pos + n
                    break
            payload = buf[pos:pos + n]
            exact = True
            if masked and len(key) == 4:
                payload = unmask(payload, key)
                exact = False
            start = self.offset + pos
            opcode, fin = b0 & 0x0F, bool(b0 & 0x80)
            self.consume(pos + n)
            if opcode >= 8 or (fin and opcode and not self._message):  # control frame, or a whole message
                units.append(self._unit(payload, start, start + n, exact, compressed=bool(b0 & 0x40) and opcode < 8))
                continue
            if opcode:  # the first frame of a fragmented message (one left unfinished is scanned as it was)
                units += self._flush_message()
                self._message_start = start
                self._compressed = bool(b0 & 0x40)
            self._message.append(payload)
            self._message_size += n
            if fin:
                units += self._flush_message(end=start + n)
        if final:
            units += self._flush_message()
        return units

    def _flush_message(self, end: int | None = None) -> list[Unit]:
        if not self._message:
            return []
        payload = b"".join(self._message)
        start = self._message_start
        self._message, self._message_size = [], 0
        return [self._unit(payload, start, end if end is not None else self.offset, False, compressed=self._compressed)]

    def _unit(self, payload: bytes, start: int, end: int, exact: bool, *, compressed: bool) -> Unit:
        chain = ""
        if compressed:  # RSV1: permessage-deflate
            if self._inflater is None:
                self._inflater = zlib.decompressobj(-15)
            try:
                payload = self._inflater.decompress(payload + b"\x00\x00\xff\xff", MAX_MESSAGE_BYTES)
                chain, exact = "deflate", False
            except zlib.error:
                self._inflater = None  # a message it cannot read: the next one starts afresh
                self.warnings.append("a permessage-deflate WebSocket message could not be inflated; "
                                     "scanned as sent")
        return Unit(payload, start, end, exact, chain, self.protocol, peel=True)


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR a WebSocket payload with its 4-byte masking key (whole-integer XOR: fast for large frames)."""
    n = len(payload)
    if not n:
        return payload
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")


class MqttDecoder(StreamDecoder):
    """MQTT 3.1/3.1.1/5 packets; CONNECT fields and PUBLISH topics/payloads are cleartext."""

    protocol = PROTO_MQTT
    raw_mode = False  # after a malformed or oversized packet: the rest of the stream is scanned as raw bytes

    def parse(self, final: bool) -> list[Unit]:
        units: list[Unit] = []
        if self.raw_mode:
            return _raw_batches(self, units, final)
        while len(self.buf) >= 2:
            buf = self.buf
            length = 0
            shift = 0
            pos = 1
            while pos < len(buf) and pos <= 4:
                byte = buf[pos]
                length |= (byte & 0x7F) << shift
                shift += 7
                pos += 1
                if not byte & 0x80:
                    break
            else:
                if pos > 4:
                    self.raw_mode = True
                    return _raw_batches(self, units, final)
                break
            if length > MAX_MESSAGE_BYTES:
                self.raw_mode = True
                return _raw_batches(self, units, final)
            if pos + length > len(buf):
                if final:
                    return _raw_batches(self, units, final)
                self.need = pos + length
                break
            packet = buf[:pos + length]
            units.append(Unit(packet, self.offset, self.offset + len(packet), True, "", self.protocol,
                              peel=buf[0] >> 4 == 3))
            self.consume(len(packet))
        return units



class DnsTcpDecoder(StreamDecoder):
    """DNS over TCP (large answers, zone data, some resolvers): 2-byte length-prefixed DNS messages."""

    protocol = PROTO_DNS

    def parse(self, final: bool) -> list[Unit]:
        units: list[Unit] = []
        while len(self.buf) >= 2:
            size = struct.unpack_from("!H", self.buf)[0]
            if len(self.buf) < 2 + size and not final:
                self.need = 2 + size
                break
            message = self.buf[2:2 + size]
            start = self.offset + 2
            units.append(Unit(message, start, start + len(message), True, "", PROTO_DNS))
            parsed = parse_dns(message)
            if parsed is not None:
                names = "\n".join(parsed.names).encode("latin-1")
                units.append(Unit(names, start, start + len(message), False, "", PROTO_DNS, peel=True))
                units += [Unit(t, start, start + len(message), False, "", PROTO_DNS, peel=True) for t in parsed.texts]
                self.addresses += parsed.addresses
            self.consume(min(2 + size, len(self.buf)))
        return units


def _raw_batches(decoder: StreamDecoder, units: list[Unit], final: bool) -> list[Unit]:
    """Emit a decoder's buffer as raw bytes once a batch is full (or at the end); wait for a batch otherwise."""
    if decoder.buf and (final or len(decoder.buf) >= RAW_BATCH_BYTES):
        units.append(Unit(decoder.buf, decoder.offset, decoder.offset + len(decoder.buf), True, "",
                          decoder.protocol, True))
        decoder.consume(len(decoder.buf))
    decoder.need = RAW_BATCH_BYTES
    return units


# --- QUIC Initial packets -------------------------------------------------------------------------------------
# A QUIC client's Initial packets are encrypted with keys derived from the packet's own destination connection
# ID (RFC 9001 section 5.2): anyone on the path can read them, so the ClientHello inside (SNI, ALPN) is as
# cleartext as TLS's. Decrypting it is how a QUIC flow gets its host name and its handshake gets scanned.

QUIC_V1 = 0x00000001
QUIC_V1_INITIAL_SALT = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
PROTO_QUIC_HANDSHAKE = "quic-handshake"
#: client Initial packets looked at per flow for the ClientHello (Chrome's spans two)
MAX_QUIC_INITIALS = 4


def _hkdf_expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    import hashlib
    import hmac

    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def quic_initial_keys(dcid: bytes) -> tuple[bytes, bytes, bytes]:
    """(key, iv, header-protection key) of a QUIC v1 client's Initial packets."""
    import hashlib
    import hmac

    initial_secret = hmac.new(QUIC_V1_INITIAL_SALT, dcid, hashlib.sha256).digest()
    client = _hkdf_expand_label(initial_secret, b"client in", 32)
    return (_hkdf_expand_label(client, b"quic key", 16), _hkdf_expand_label(client, b"quic iv", 12),
            _hkdf_expand_label(client, b"quic hp", 16))


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    size = 1 << (first >> 6)
    if pos + size > len(data):
        raise IndexError("varint cut short")
    value = first & 0x3F
    for i in range(1, size):
        value = (value << 8) | data[pos + i]
    return value, pos + size


def quic_initial_crypto(datagram: bytes) -> list[tuple[int, bytes]]:
    """The CRYPTO frames ``(offset, data)`` of the QUIC v1 client Initial packets in one datagram.

    Returns [] for anything else (other versions, server packets that fail to decrypt, garbage): never raises.
    """
    frames: list[tuple[int, bytes]] = []
    pos = 0
    try:
        while pos + 7 < len(datagram) and datagram[pos] & 0xC0 == 0xC0:
            end, found = _one_initial(datagram, pos)
            frames += found
            if end <= pos:
                break
            pos = end
    except (IndexError, ValueError, struct.error):
        pass
    return frames


def _one_initial(data: bytes, start: int) -> tuple[int, list[tuple[int, bytes]]]:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    first = data[start]
    version = struct.unpack_from("!I", data, start + 1)[0]
    pos = start + 5
    dcid = data[pos + 1:pos + 1 + data[pos]]
    pos += 1 + data[pos]
    pos += 1 + data[pos]  # source connection ID
    if version != QUIC_V1 or (first >> 4) & 0x03 != 0:  # not a v1 Initial
        return start, []
    token_length, pos = _varint(data, pos)
    pos += token_length
    length, pn_offset = _varint(data, pos)
    end = pn_offset + length
    if end > len(data) or length < 20:
        return start, []
    key, iv, hp = quic_initial_keys(dcid)
    encryptor = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = encryptor.update(data[pn_offset + 4:pn_offset + 20]) + encryptor.finalize()
    first_clear = first ^ (mask[0] & 0x0F)
    pn_length = (first_clear & 0x03) + 1
    pn_bytes = bytes(b ^ m for b, m in zip(data[pn_offset:pn_offset + pn_length], mask[1:], strict=False))
    header = bytes([first_clear]) + data[start + 1:pn_offset] + pn_bytes
    nonce = (int.from_bytes(iv, "big") ^ int.from_bytes(pn_bytes, "big")).to_bytes(12, "big")
    try:
        plain = AESGCM(key).decrypt(nonce, data[pn_offset + pn_length:end], header)
    except InvalidTag:
        return end, []
    return end, _crypto_frames(plain)


def _crypto_frames(plain: bytes) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(plain):
        kind = plain[pos]
        if kind in (0x00, 0x01):  # PADDING, PING
            pos += 1
        elif kind in (0x02, 0x03):  # ACK: largest, delay, range count, first range, ranges (+ ECN counts)
            pos += 1
            _largest, pos = _varint(plain, pos)
            _delay, pos = _varint(plain, pos)
            count, pos = _varint(plain, pos)
            _first, pos = _varint(plain, pos)
            for _ in range(count * 2 + (3 if kind == 0x03 else 0)):
                _value, pos = _varint(plain, pos)
        elif kind == 0x06:  # CRYPTO
            offset, pos = _varint(plain, pos + 1)
            size, pos = _varint(plain, pos)
            frames.append((offset, plain[pos:pos + size]))
            pos += size
        else:  # CONNECTION_CLOSE or something an Initial should not carry: stop
            break
    return frames


def client_hello_from_crypto(frames: list[tuple[int, bytes]]) -> tuple[bytes, ClientHello] | None:
    """Reassemble CRYPTO frames (any order) and parse the ClientHello once its bytes from offset 0 are whole."""
    stream = bytearray()
    for offset, data in sorted(frames):
        if offset > len(stream):
            break
        stream[offset:offset + len(data)] = data
    if len(stream) < 4 or stream[0] != 1:
        return None
    need = 4 + int.from_bytes(stream[1:4], "big")
    if len(stream) < need:
        return None
    handshake = bytes(stream[:need])
    sni, alpn = _hello_extensions(handshake[4:])
    return handshake, ClientHello(sni, alpn, need)
