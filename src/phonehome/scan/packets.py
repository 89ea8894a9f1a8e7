"""Link layer, IPv4/IPv6, TCP and UDP decoding, and IPv4 defragmentation.

One function per packet, returning a plain tuple, because this runs for every packet of multi-gigabyte captures:
no per-packet objects beyond the tuple and the payload slice. Addresses stay packed ``bytes`` until a flow is
reported (:func:`address_text`).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD = 12
LINKTYPE_RAW_BSD_ALT = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINK_TYPES: dict[int, str] = {
    LINKTYPE_NULL: "null/loopback", LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW_BSD: "raw IP",
    LINKTYPE_RAW_BSD_ALT: "raw IP", LINKTYPE_RAW: "raw IP", LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)", LINKTYPE_IPV4: "raw IPv4", LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
    # decoded by .tunnels (ip_offset gives -1 for them)
    105: "802.11", 127: "802.11 with radiotap", 192: "802.11 with PPI", 9: "PPP", 50: "PPP in HDLC framing",
    104: "Cisco HDLC", 204: "PPP with direction", 239: "Linux NFLOG",
}

PROTO_TCP = 6
PROTO_UDP = 17

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
_IPV6_EXTENSIONS = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44

#: a datagram whose fragments are still incomplete after this many seconds is dropped (Linux uses 30 s)
FRAGMENT_TIMEOUT_S = 30.0
#: total bytes of fragments held at once; beyond this the oldest datagrams are dropped and counted
MAX_FRAGMENT_BYTES = 8 << 20

#: (ip protocol, src address, dst address, sport, dport, payload, tcp seq, tcp flags); seq/flags 0 for UDP
Decoded = tuple[int, bytes, bytes, int, int, bytes, int, int]

_u16 = struct.Struct("!H").unpack_from
_tcp_head = struct.Struct("!HHIIBB").unpack_from
_ports = struct.Struct("!HH").unpack_from


def address_text(packed: bytes) -> str:
    """Printable IPv4/IPv6 address."""
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def ip_offset(link: int, data: bytes) -> int:
    """Offset of the IP header in a frame of link type ``link``; -1 when the frame carries no IP."""
    if link == LINKTYPE_ETHERNET:
        off = 12
        ethertype = _u16(data, off)[0] if len(data) >= 14 else 0
        while ethertype in _VLAN_TYPES and len(data) >= off + 6:
            off += 4
            ethertype = _u16(data, off)[0]
        return off + 2 if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) else -1
    if link in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW_BSD, LINKTYPE_RAW_BSD_ALT):
        return 0
    if link == LINKTYPE_LINUX_SLL2:
        return 20 if len(data) >= 20 and _u16(data, 0)[0] in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) else -1
    if link == LINKTYPE_LINUX_SLL:
        return 16 if len(data) >= 16 and _u16(data, 14)[0] in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) else -1
    if link in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return 4 if len(data) >= 5 and data[4] >> 4 in (4, 6) else -1
    return -1


@dataclass
class Defragmenter:
    """Reassembles fragmented IPv4 (and IPv6 fragment-header) datagrams, with bounded memory.

    ``dropped_datagrams`` counts datagrams given up on (timed out or evicted for memory): the scanner reports it.
    """

    held_bytes: int = 0
    dropped_datagrams: int = 0
    completed: int = 0
    _pending: dict[bytes, _Datagram] = field(default_factory=dict)

    def add(self, key: bytes, offset: int, more: bool, data: bytes, time: float,
            frame: int) -> tuple[bytes, list[int]] | None:
        """Add one fragment; returns (reassembled payload, frames that carried it) once complete."""
        entry = self._pending.get(key)
        if entry is None:
            self._expire(time)
            entry = self._pending[key] = _Datagram(time)
        if offset + len(data) > 65535:
            return None
        entry.parts[offset] = data
        entry.frames.append(frame)
        self.held_bytes += len(data)
        if not more:
            entry.total = offset + len(data)
        if self.held_bytes > MAX_FRAGMENT_BYTES:
            self._evict(key)
        if entry.total < 0:
            return None
        payload = entry.assemble()
        if payload is None:
            return None
        del self._pending[key]
        self.held_bytes -= entry.size
        self.completed += 1
        return payload, entry.frames

    def _expire(self, now: float) -> None:
        stale = [k for k, d in self._pending.items() if now - d.first_time > FRAGMENT_TIMEOUT_S]
        for k in stale:
            self._drop(k)

    def _evict(self, keep: bytes) -> None:
        for k in list(self._pending):
            if self.held_bytes <= MAX_FRAGMENT_BYTES // 2:
                break
            if k != keep:
                self._drop(k)

    def _drop(self, key: bytes) -> None:
        entry = self._pending.pop(key)
        self.held_bytes -= entry.size
        self.dropped_datagrams += 1

    def finish(self) -> None:
        """End of capture: whatever is still incomplete is lost."""
        self.dropped_datagrams += len(self._pending)
        self._pending.clear()
        self.held_bytes = 0


@dataclass
class _Datagram:
    first_time: float
    total: int = -1
    parts: dict[int, bytes] = field(default_factory=dict)
    frames: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts.values())

    def assemble(self) -> bytes | None:
        out = bytearray()
        for offset in sorted(self.parts):
            part = self.parts[offset]
            if offset > len(out):
                return None  # a hole
            out[offset:offset + len(part)] = part
        return bytes(out[:self.total]) if len(out) >= self.total else None


def decode_ip(data: bytes, off: int, defrag: Defragmenter, time: float, frame: int
              ) -> tuple[Decoded, list[int] | None] | None:
    """Decode IPv4/IPv6 + TCP/UDP at ``data[off:]``.

    Returns (decoded, frames) where ``frames`` is None for an unfragmented packet and the list of frames for a
    datagram reassembled from fragments; None for anything that is not complete, well-formed TCP/UDP.
    """
    n = len(data)
    if n < off + 20:
        return None
    version = data[off] >> 4
    frames: list[int] | None = None
    if version == 4:
        ihl = (data[off] & 0x0F) * 4
        total = _u16(data, off + 2)[0]
        end = off + total if ihl <= total and off + total <= n else n
        if ihl < 20:
            return None
        proto = data[off + 9]
        src = data[off + 12:off + 16]
        dst = data[off + 16:off + 20]
        frag = _u16(data, off + 6)[0]
        start = off + ihl
        if frag & 0x3FFF:  # MF set or offset != 0
            key = src + dst + data[off + 4:off + 6] + bytes((proto,))
            done = defrag.add(key, (frag & 0x1FFF) * 8, bool(frag & 0x2000), data[start:end], time, frame)
            if done is None:
                return None
            body, frames = done
            return _with_frames(_transport(proto, src, dst, body, 0, len(body)), frames)
        return _with_frames(_transport(proto, src, dst, data, start, end), None)
    if version == 6:
        if n < off + 40:
            return None
        plen = _u16(data, off + 4)[0]
        proto = data[off + 6]
        src = data[off + 8:off + 24]
        dst = data[off + 24:off + 40]
        start = off + 40
        end = start + plen if plen and start + plen <= n else n
        while proto in _IPV6_EXTENSIONS and start + 8 <= end:
            proto, start = data[start], start + (data[start + 1] + 1) * 8
        if proto == _IPV6_FRAGMENT and start + 8 <= end:
            inner = data[start]
            offset_flags = _u16(data, start + 2)[0]
            key = src + dst + data[start + 4:start + 8] + bytes((inner,))
            done = defrag.add(key, offset_flags & 0xFFF8, bool(offset_flags & 1), data[start + 8:end], time,
                              frame)
            if done is None:
                return None
            body, frames = done
            return _with_frames(_transport(inner, src, dst, body, 0, len(body)), frames)
        return _with_frames(_transport(proto, src, dst, data, start, end), None)
    return None


def _with_frames(decoded: Decoded | None, frames: list[int] | None) -> tuple[Decoded, list[int] | None] | None:
    return None if decoded is None else (decoded, frames)


def _transport(proto: int, src: bytes, dst: bytes, data: bytes, start: int, end: int) -> Decoded | None:
    if proto == PROTO_TCP:
        if end - start < 20:
            return None
        sport, dport, seq, _ack, offs, flags = _tcp_head(data, start)
        hlen = (offs >> 4) * 4
        if hlen < 20 or start + hlen > end:
            return None
        return proto, src, dst, sport, dport, data[start + hlen:end], seq, flags
    if proto == PROTO_UDP:
        if end - start < 8:
            return None
        sport, dport = _ports(data, start)
        length = _u16(data, start + 4)[0]
        stop = start + length if length >= 8 and start + length <= end else end
        return proto, src, dst, sport, dport, data[start + 8:stop], 0, 0
    return None


def decode_frame(link: int, data: bytes, defrag: Defragmenter, time: float = 0.0, frame: int = 0
                 ) -> tuple[Decoded, list[int] | None] | None:
    """Link layer + :func:`decode_ip`; None for non-IP frames and unsupported link types."""
    off = ip_offset(link, data)
    if off < 0:
        return None
    return decode_ip(data, off, defrag, time, frame)
