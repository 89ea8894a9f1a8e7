"""Build real capture files for tests: a small pcap/pcapng writer plus packet and payload builders.

Tests (phonehome's and users') need captures where a leak sits exactly where they want it: split across TCP
segments, out of order, retransmitted, in an IPv4 fragment, behind a Linux cooked header, in a gzip body. Writing
them here, byte for byte, keeps the tests independent of live traffic; tshark reads the same files, which is how
the tests prove the files are valid.

Typical use::

    cap = CaptureBuilder(link=LINKTYPE_ETHERNET)
    conn = cap.tcp("10.0.0.2", "93.184.216.34", 80)
    conn.send(http_request("GET", "/?imei=356938035643809", host="example.com"), segment_size=7)
    conn.reply(http_response(b"ok"))
    conn.close()
    cap.write_pcap(tmp_path / "leak.pcap")
"""

from __future__ import annotations

import base64
import ipaddress
import os
import random
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IEEE802_11 = 105
LINKTYPE_IEEE802_11_RADIOTAP = 127
LINKTYPE_PPI = 192

PROTO_TCP = 6
PROTO_UDP = 17

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

#: first packet time of a built capture (capture time, seconds since the epoch)
DEFAULT_START_TIME_S = 1_700_000_000.0
#: time between consecutive packets of a built capture
DEFAULT_STEP_S = 0.001
DEFAULT_SNAPLEN = 262_144

_CLIENT_MAC = bytes.fromhex("02000000000a")
_SERVER_MAC = bytes.fromhex("02000000000b")
_AP_MAC = bytes.fromhex("02000000aa01")
#: outer addresses of the tunnels built here (TEST-NET-1: never a phone's or a server's)
TUNNEL_SRC = "192.0.2.1"
TUNNEL_DST = "192.0.2.2"


@dataclass(frozen=True)
class Packet:
    """One captured frame: link-layer bytes as written, capture time, and the length on the wire."""

    data: bytes
    time: float
    orig_len: int | None = None  # None: the frame was captured whole

    @property
    def wire_len(self) -> int:
        return self.orig_len if self.orig_len is not None else len(self.data)


# --------------------------------------------------------------------------------------------------------------
# checksums, IP, TCP, UDP


def internet_checksum(data: bytes) -> int:
    """RFC 1071 checksum, so tshark with checksum validation on still accepts the packets."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def _pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    s, d = _addr(src), _addr(dst)
    if len(s) == 4:
        return s + d + struct.pack("!BBH", 0, proto, length)
    return s + d + struct.pack("!IxxxB", length, proto)


def tcp_segment(src: str, dst: str, sport: int, dport: int, payload: bytes = b"", *, seq: int = 0, ack: int = 0,
                flags: int = TCP_ACK | TCP_PSH, window: int = 65535) -> bytes:
    """A TCP header + payload with a correct checksum (``src``/``dst`` only feed the pseudo-header)."""
    header = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, window,
                         0, 0)
    checksum = internet_checksum(_pseudo_header(src, dst, PROTO_TCP, len(header) + len(payload)) + header
                                 + payload)
    return header[:16] + struct.pack("!H", checksum) + header[18:] + payload


def udp_datagram(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP header + payload with a correct checksum."""
    length = 8 + len(payload)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    checksum = internet_checksum(_pseudo_header(src, dst, PROTO_UDP, length) + header + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, checksum) + payload


def ipv4_packet(src: str, dst: str, proto: int, payload: bytes, *, ident: int = 1, ttl: int = 64,
                more_fragments: bool = False, fragment_offset: int = 0, dont_fragment: bool = False) -> bytes:
    """An IPv4 header (no options) + payload; ``fragment_offset`` is in bytes and must be a multiple of 8."""
    if fragment_offset % 8:
        raise ValueError("IPv4 fragment offsets are multiples of 8 bytes")
    flags = (0x4000 if dont_fragment else 0) | (0x2000 if more_fragments else 0)
    frag = flags | (fragment_offset // 8)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, frag, ttl, proto, 0,
                         _addr(src), _addr(dst))
    checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


def ipv4_fragments(src: str, dst: str, proto: int, payload: bytes, *, fragment_size: int = 64,
                   ident: int = 0x1234) -> list[bytes]:
    """Split one IP payload (a whole TCP/UDP segment) into IPv4 fragments of ``fragment_size`` bytes."""
    if fragment_size % 8 or fragment_size <= 0:
        raise ValueError("fragment_size must be a positive multiple of 8")
    parts = []
    for offset in range(0, len(payload), fragment_size):
        chunk = payload[offset:offset + fragment_size]
        more = offset + fragment_size < len(payload)
        parts.append(ipv4_packet(src, dst, proto, chunk, ident=ident, more_fragments=more,
                                 fragment_offset=offset))
    return parts


def ipv6_packet(src: str, dst: str, next_header: int, payload: bytes, *, hop_limit: int = 64) -> bytes:
    """An IPv6 header (no extension headers) + payload."""
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hop_limit, _addr(src),
                       _addr(dst)) + payload


def ip_packet(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    """IPv4 or IPv6, whichever the addresses are."""
    if ipaddress.ip_address(src).version == 4:
        return ipv4_packet(src, dst, proto, payload)
    return ipv6_packet(src, dst, proto, payload)


# --------------------------------------------------------------------------------------------------------------
# link layers


def _ethertype(ip: bytes) -> int:
    return 0x86DD if ip[0] >> 4 == 6 else 0x0800


def ethernet_frame(ip: bytes, *, src_mac: bytes = _CLIENT_MAC, dst_mac: bytes = _SERVER_MAC,
                   vlan: int | None = None) -> bytes:
    """Ethernet II, optionally with one 802.1Q tag."""
    tag = struct.pack("!HH", 0x8100, vlan & 0x0FFF) if vlan is not None else b""
    return dst_mac + src_mac + tag + struct.pack("!H", _ethertype(ip)) + ip


def sll_frame(ip: bytes, *, packet_type: int = 4, src_mac: bytes = _CLIENT_MAC) -> bytes:
    """Linux cooked capture v1 (what ``tcpdump -i any`` writes)."""
    return struct.pack("!HHH8sH", packet_type, 1, 6, src_mac + b"\x00\x00", _ethertype(ip)) + ip


def sll2_frame(ip: bytes, *, interface_index: int = 2, packet_type: int = 4, src_mac: bytes = _CLIENT_MAC) -> bytes:
    """Linux cooked capture v2 (what ``tshark -i any`` / dumpcap write)."""
    return struct.pack("!HHIHBB8s", _ethertype(ip), 0, interface_index, 1, packet_type, 6,
                       src_mac + b"\x00\x00") + ip


def null_frame(ip: bytes) -> bytes:
    """BSD loopback: a 4-byte address family in host (here: little-endian) order."""
    family = 30 if ip[0] >> 4 == 6 else 2
    return struct.pack("<I", family) + ip


def frame(ip: bytes, link: int, *, vlan: int | None = None) -> bytes:
    """Wrap an IP packet in the link layer ``link`` (a LINKTYPE_* value)."""
    if link == LINKTYPE_ETHERNET:
        return ethernet_frame(ip, vlan=vlan)
    if link == LINKTYPE_LINUX_SLL:
        return sll_frame(ip)
    if link == LINKTYPE_LINUX_SLL2:
        return sll2_frame(ip)
    if link == LINKTYPE_NULL:
        return null_frame(ip)
    if link in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return ip
    raise ValueError(f"unsupported link type {link}")


# --------------------------------------------------------------------------------------------------------------
# encapsulations: the phone's IP packet inside a tunnel, an 802.11 frame, PPPoE or MPLS


def gre_packet(inner: bytes, *, protocol: int | None = None, key: int | None = None, seq: int | None = None,
               outer_src: str = TUNNEL_SRC, outer_dst: str = TUNNEL_DST) -> bytes:
    """An outer IPv4 packet carrying ``inner`` in GRE (version 0); ``protocol`` defaults to the inner IP's
    ethertype (0x6558 for transparent Ethernet bridging, 0x88BE for ERSPAN type II)."""
    flags = (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    header = struct.pack("!HH", flags, protocol if protocol is not None else _ethertype(inner))
    if key is not None:
        header += struct.pack("!I", key)
    if seq is not None:
        header += struct.pack("!I", seq)
    return ipv4_packet(outer_src, outer_dst, 47, header + inner)


def vxlan_datagram(inner_frame: bytes, *, vni: int = 42, sport: int = 49152, outer_src: str = TUNNEL_SRC,
                   outer_dst: str = TUNNEL_DST, port: int = 4789) -> bytes:
    """An outer IPv4/UDP packet carrying an Ethernet frame in VXLAN (RFC 7348)."""
    payload = struct.pack("!II", 0x08000000, vni << 8) + inner_frame
    return ipv4_packet(outer_src, outer_dst, PROTO_UDP, udp_datagram(outer_src, outer_dst, sport, port, payload))


def geneve_datagram(inner_frame: bytes, *, vni: int = 42, sport: int = 49152, outer_src: str = TUNNEL_SRC,
                    outer_dst: str = TUNNEL_DST) -> bytes:
    """An outer IPv4/UDP packet carrying an Ethernet frame in Geneve (RFC 8926), with one 4-byte option."""
    option = struct.pack("!HBB", 0x0104, 0x01, 0) + b""  # class, type, length 0: a 4-byte option header
    payload = struct.pack("!BBHI", len(option) // 4, 0, 0x6558, vni << 8) + option + inner_frame
    return ipv4_packet(outer_src, outer_dst, PROTO_UDP, udp_datagram(outer_src, outer_dst, sport, 6081, payload))


def pppoe_frame(ip: bytes, *, session: int = 0x1234) -> bytes:
    """Ethernet + PPPoE session header + PPP protocol + the IP packet (what a DSL uplink carries)."""
    ppp = struct.pack("!H", 0x0057 if ip[0] >> 4 == 6 else 0x0021) + ip
    return _SERVER_MAC + _CLIENT_MAC + struct.pack("!HBBHH", 0x8864, 0x11, 0, session, len(ppp)) + ppp


def mpls_frame(ip: bytes, *, labels: Sequence[int] = (16, 1024), pseudowire: bool = False) -> bytes:
    """Ethernet + an MPLS label stack + the IP packet; ``pseudowire`` carries it as an Ethernet pseudowire with a
    control word instead (RFC 4448)."""
    stack = b"".join(struct.pack("!I", (label << 12) | (1 << 8 if i == len(labels) - 1 else 0) | 64)
                     for i, label in enumerate(labels))
    body = (b"\0\0\0\0" + ethernet_frame(ip)) if pseudowire else ip
    return _SERVER_MAC + _CLIENT_MAC + struct.pack("!H", 0x8847) + stack + body


def ieee802_11_frame(ip: bytes, *, bssid: bytes = _AP_MAC,
                     station: bytes = _CLIENT_MAC, to_ap: bool = True, qos: bool = True) -> bytes:
    """An 802.11 data frame of an open network: header, LLC/SNAP, the IP packet (no FCS)."""
    subtype = 8 if qos else 0
    fc = bytes((0x08 | (subtype << 4), 0x01 if to_ap else 0x02))
    addresses = bssid + station + _SERVER_MAC if to_ap else station + bssid + _SERVER_MAC
    header = fc + b"\0\0" + addresses + b"\x10\x00" + (b"\x00\x00" if qos else b"")
    return header + b"\xaa\xaa\x03\x00\x00\x00" + struct.pack("!H", _ethertype(ip)) + ip


def radiotap_frame(ip: bytes, *, fcs: bool = False) -> bytes:
    """Radiotap (TSFT, flags, rate, channel, signal) + :func:`ieee802_11_frame`: a monitor-mode capture;
    ``fcs`` appends the frame check sequence and says so in the radiotap flags, as many drivers do."""
    wlan = ieee802_11_frame(ip)
    fields = struct.pack("<QBBHHb", 123456789, 0x10 if fcs else 0x00, 0x0C, 2437, 0x00A0, -42) + b"\0"
    trailer = struct.pack("<I", zlib.crc32(wlan)) if fcs else b""
    return struct.pack("<BBHI", 0, 0, 8 + len(fields), 0x0000002F) + fields + wlan + trailer


def ppi_frame(ip: bytes) -> bytes:
    """PPI (no fields) + :func:`ieee802_11_frame`."""
    return struct.pack("<BBHI", 0, 0, 8, LINKTYPE_IEEE802_11) + ieee802_11_frame(ip)


def _bridged(ip: bytes) -> bytes:
    return ethernet_frame(ip, src_mac=_CLIENT_MAC, dst_mac=_SERVER_MAC)


#: name -> (link type, wrapper from the phone's IP packet to the captured frame); :class:`CaptureBuilder` takes
#: a name as ``encapsulation``
ENCAPSULATIONS: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "gre": (LINKTYPE_ETHERNET, lambda ip: ethernet_frame(gre_packet(ip))),
    "gre-key-seq": (LINKTYPE_ETHERNET, lambda ip: ethernet_frame(gre_packet(ip, key=7, seq=1))),
    "gre-bridged": (LINKTYPE_ETHERNET, lambda ip: ethernet_frame(gre_packet(_bridged(ip), protocol=0x6558))),
    "erspan": (LINKTYPE_ETHERNET, lambda ip: ethernet_frame(gre_packet(
        struct.pack("!HHI", 0x1000 | 1, 0x0800 | 5, 0) + _bridged(ip), protocol=0x88BE, seq=1))),
    "ipip": (LINKTYPE_ETHERNET, lambda ip: ethernet_frame(
        ipv4_packet(TUNNEL_SRC, TUNNEL_DST, 4 if ip[0] >> 4 == 4 else 41, ip))),
    "vxlan": (LINKTYPE_ETHERNET, lambda ip: ethernet_frame(vxlan_datagram(_bridged(ip)))),
    "geneve": (LINKTYPE_ETHERNET, lambda ip: ethernet_frame(geneve_datagram(_bridged(ip)))),
    "pppoe": (LINKTYPE_ETHERNET, pppoe_frame),
    "mpls": (LINKTYPE_ETHERNET, mpls_frame),
    "mpls-pseudowire": (LINKTYPE_ETHERNET, lambda ip: mpls_frame(ip, pseudowire=True)),
    "wifi-radiotap": (LINKTYPE_IEEE802_11_RADIOTAP, radiotap_frame),
    "wifi-radiotap-fcs": (LINKTYPE_IEEE802_11_RADIOTAP, lambda ip: radiotap_frame(ip, fcs=True)),
    "wifi-ppi": (LINKTYPE_PPI, ppi_frame),
    "wifi": (LINKTYPE_IEEE802_11, ieee802_11_frame),
}


# --------------------------------------------------------------------------------------------------------------
# file writers


def pcap_bytes(packets: Iterable[Packet], *, link: int = LINKTYPE_ETHERNET, nanosecond: bool = False,
               snaplen: int = DEFAULT_SNAPLEN, big_endian: bool = False) -> bytes:
    """A classic pcap file (µs or ns timestamps, either byte order)."""
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    scale = 1_000_000_000 if nanosecond else 1_000_000
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, link)]
    for pkt in packets:
        ticks = round(pkt.time * scale)
        sec, frac = divmod(ticks, scale)
        out.append(struct.pack(order + "IIII", sec, frac, len(pkt.data), pkt.wire_len))
        out.append(pkt.data)
    return b"".join(out)


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _pcapng_block(block_type: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def _pcapng_option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def pcapng_bytes(packets: Iterable[tuple[int, Packet]], *, links: Sequence[int] = (LINKTYPE_ETHERNET,),
                 nanosecond: Sequence[bool] | None = None, snaplen: int = DEFAULT_SNAPLEN) -> bytes:
    """A pcapng file with one Interface Description Block per entry of ``links``.

    ``packets`` are ``(interface index, packet)`` pairs, written as Enhanced Packet Blocks; ``nanosecond[i]``
    gives interface ``i`` an ``if_tsresol`` of 9 (default: microseconds).
    """
    shb = _pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
                        + _pcapng_option(4, b"phonehome.testing.captures") + _pcapng_option(0, b""))
    out = [shb]
    scales = []
    for index, link in enumerate(links):
        ns = bool(nanosecond[index]) if nanosecond else False
        options = _pcapng_option(2, f"if{index}".encode())
        if ns:
            options += _pcapng_option(9, b"\x09")
        out.append(_pcapng_block(1, struct.pack("<HHI", link, 0, snaplen) + options + _pcapng_option(0, b"")))
        scales.append(1_000_000_000 if ns else 1_000_000)
    for iface, pkt in packets:
        ticks = round(pkt.time * scales[iface])
        body = struct.pack("<IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(pkt.data), pkt.wire_len)
        out.append(_pcapng_block(6, body + _pad4(pkt.data)))
    return b"".join(out)


# --------------------------------------------------------------------------------------------------------------
# the builder


@dataclass
class TcpConnection:
    """One TCP connection inside a :class:`CaptureBuilder`; tracks sequence numbers in both directions.

    ``send``/``reply`` return the packets they added so a test can reorder, duplicate or drop them with
    :meth:`CaptureBuilder.reorder` style list surgery before writing.
    """

    builder: CaptureBuilder
    client: str
    server: str
    sport: int
    dport: int
    client_seq: int
    server_seq: int
    closed: bool = False

    def _segment(self, from_client: bool, payload: bytes, seq: int, flags: int) -> Packet:
        if from_client:
            src, dst, sp, dp, ack = self.client, self.server, self.sport, self.dport, self.server_seq
        else:
            src, dst, sp, dp, ack = self.server, self.client, self.dport, self.sport, self.client_seq
        seg = tcp_segment(src, dst, sp, dp, payload, seq=seq, ack=ack if flags & TCP_ACK else 0, flags=flags)
        return self.builder.add_ip(ip_packet(src, dst, PROTO_TCP, seg))

    def handshake(self) -> list[Packet]:
        syn = self._segment(True, b"", self.client_seq, TCP_SYN)
        self.client_seq += 1
        synack = self._segment(False, b"", self.server_seq, TCP_SYN | TCP_ACK)
        self.server_seq += 1
        ack = self._segment(True, b"", self.client_seq, TCP_ACK)
        return [syn, synack, ack]

    def _send(self, from_client: bool, data: bytes, segment_size: int | None) -> list[Packet]:
        size = segment_size or 1448
        packets = []
        for offset in range(0, len(data), size):
            chunk = data[offset:offset + size]
            seq = self.client_seq if from_client else self.server_seq
            packets.append(self._segment(from_client, chunk, seq, TCP_ACK | TCP_PSH))
            if from_client:
                self.client_seq += len(chunk)
            else:
                self.server_seq += len(chunk)
        return packets

    def send(self, data: bytes, *, segment_size: int | None = None) -> list[Packet]:
        """Client -> server, in segments of ``segment_size`` bytes (default: a full-size segment)."""
        return self._send(True, data, segment_size)

    def reply(self, data: bytes, *, segment_size: int | None = None) -> list[Packet]:
        """Server -> client."""
        return self._send(False, data, segment_size)

    def close(self) -> list[Packet]:
        fin1 = self._segment(True, b"", self.client_seq, TCP_FIN | TCP_ACK)
        self.client_seq += 1
        fin2 = self._segment(False, b"", self.server_seq, TCP_FIN | TCP_ACK)
        self.server_seq += 1
        self.closed = True
        return [fin1, fin2, self._segment(True, b"", self.client_seq, TCP_ACK)]


@dataclass
class CaptureBuilder:
    """Accumulates packets with increasing timestamps and writes them as pcap or pcapng.

    Packets are kept in a plain list (``packets``) that tests may rearrange (out-of-order delivery,
    retransmissions) before writing.
    """

    link: int = LINKTYPE_ETHERNET
    start_time: float = DEFAULT_START_TIME_S
    step: float = DEFAULT_STEP_S
    vlan: int | None = None
    #: a name from :data:`ENCAPSULATIONS`: every IP packet is wrapped so (and ``link`` set to match)
    encapsulation: str | None = None
    packets: list[Packet] = field(default_factory=list)
    _next_port: int = 40000
    _rng: random.Random = field(default_factory=lambda: random.Random(1))

    def __post_init__(self) -> None:
        if self.encapsulation is not None:
            self.link = ENCAPSULATIONS[self.encapsulation][0]

    @property
    def now(self) -> float:
        return self.start_time + self.step * len(self.packets)

    def add_frame(self, data: bytes, *, orig_len: int | None = None) -> Packet:
        pkt = Packet(data, self.now, orig_len)
        self.packets.append(pkt)
        return pkt

    def add_ip(self, ip: bytes) -> Packet:
        """Append an IP packet wrapped in this capture's link layer (and encapsulation)."""
        if self.encapsulation is not None:
            return self.add_frame(ENCAPSULATIONS[self.encapsulation][1](ip))
        return self.add_frame(frame(ip, self.link, vlan=self.vlan))

    def tcp(self, client: str, server: str, dport: int, *, sport: int | None = None, handshake: bool = True,
            client_isn: int | None = None, server_isn: int | None = None) -> TcpConnection:
        """Open a TCP connection (with a three-way handshake unless ``handshake=False``)."""
        if sport is None:
            sport = self._next_port
            self._next_port += 1
        conn = TcpConnection(self, client, server, sport, dport,
                             client_isn if client_isn is not None else self._rng.getrandbits(32),
                             server_isn if server_isn is not None else self._rng.getrandbits(32))
        if handshake:
            conn.handshake()
        return conn

    def udp(self, src: str, dst: str, sport: int, dport: int, payload: bytes) -> Packet:
        return self.add_ip(ip_packet(src, dst, PROTO_UDP, udp_datagram(src, dst, sport, dport, payload)))

    def udp_fragmented(self, src: str, dst: str, sport: int, dport: int, payload: bytes, *,
                       fragment_size: int = 64) -> list[Packet]:
        """A UDP datagram sent as IPv4 fragments."""
        datagram = udp_datagram(src, dst, sport, dport, payload)
        return [self.add_ip(part) for part in ipv4_fragments(src, dst, PROTO_UDP, datagram,
                                                             fragment_size=fragment_size)]

    def shuffle(self, packets: Sequence[Packet], *, seed: int = 0) -> None:
        """Deliver ``packets`` (already added) in a random order, in the slots they occupied."""
        slots = sorted(self.packets.index(p) for p in packets)
        order = list(packets)
        random.Random(seed).shuffle(order)
        for slot, packet in zip(slots, order, strict=True):
            self.packets[slot] = packet
        self.retime()

    def retransmit(self, packets: Sequence[Packet]) -> None:
        """Send ``packets`` again at the end (a retransmission: same sequence numbers, same bytes)."""
        self.packets.extend(packets)
        self.retime()

    def drop(self, packets: Sequence[Packet]) -> None:
        """Remove ``packets`` (lost before the capture point: a sequence gap)."""
        for packet in packets:
            self.packets.remove(packet)

    def retime(self) -> None:
        """Give the packets increasing timestamps again in list order (after a test rearranged them)."""
        self.packets = [Packet(p.data, self.start_time + self.step * i, p.orig_len)
                        for i, p in enumerate(self.packets)]

    def pcap(self, *, nanosecond: bool = False, snaplen: int = DEFAULT_SNAPLEN) -> bytes:
        return pcap_bytes(self.packets, link=self.link, nanosecond=nanosecond, snaplen=snaplen)

    def write_pcap(self, path: str | os.PathLike[str], *, nanosecond: bool = False) -> Path:
        target = Path(path)
        target.write_bytes(self.pcap(nanosecond=nanosecond))
        return target

    def write_pcapng(self, path: str | os.PathLike[str], *, nanosecond: bool = False) -> Path:
        target = Path(path)
        target.write_bytes(pcapng_bytes(((0, p) for p in self.packets), links=(self.link,),
                                        nanosecond=(nanosecond,)))
        return target


def merge_pcapng(path: str | os.PathLike[str], builders: Sequence[CaptureBuilder], *,
                 nanosecond: Sequence[bool] | None = None) -> Path:
    """One pcapng with an interface per builder, packets interleaved by time (as dumpcap writes several -i)."""
    tagged = sorted(((i, p) for i, b in enumerate(builders) for p in b.packets), key=lambda item: item[1].time)
    target = Path(path)
    target.write_bytes(pcapng_bytes(tagged, links=[b.link for b in builders], nanosecond=nanosecond))
    return target


# --------------------------------------------------------------------------------------------------------------
# application payloads


def _dns_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def dns_query(name: str, *, qid: int = 0x1234, qtype: int = 1) -> bytes:
    """A DNS query for ``name`` (type A by default)."""
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _dns_name(name) + struct.pack("!HH", qtype, 1)


def dns_response(name: str, addresses: Sequence[str], *, qid: int = 0x1234, cname: str | None = None,
                 ttl: int = 60) -> bytes:
    """A DNS response answering ``name`` with A/AAAA records (optionally through one CNAME)."""
    first = ipaddress.ip_address(addresses[0]) if addresses else None
    qtype = 28 if first is not None and first.version == 6 else 1
    answers = []
    owner = b"\xc0\x0c"
    if cname:
        target = _dns_name(cname)
        answers.append(owner + struct.pack("!HHIH", 5, 1, ttl, len(target)) + target)
        owner = b"\xc0" + bytes([12 + len(_dns_name(name)) + 4 + 12])
    for text in addresses:
        addr = ipaddress.ip_address(text)
        rtype = 28 if addr.version == 6 else 1
        answers.append(owner + struct.pack("!HHIH", rtype, 1, ttl, len(addr.packed)) + addr.packed)
    return (struct.pack("!HHHHHH", qid, 0x8180, 1, len(answers), 0, 0) + _dns_name(name)
            + struct.pack("!HH", qtype, 1) + b"".join(answers))


def http_request(method: str, target: str, *, host: str, headers: Mapping[str, str] | None = None,
                 body: bytes = b"", chunked: bool = False, chunk_size: int = 16) -> bytes:
    """An HTTP/1.1 request; ``chunked`` sends ``body`` with Transfer-Encoding: chunked."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = chunk_body(body, chunk_size)
    else:
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def http_response(body: bytes = b"", *, status: int = 200, headers: Mapping[str, str] | None = None,
                  chunked: bool = False, chunk_size: int = 16) -> bytes:
    """An HTTP/1.1 response."""
    lines = [f"HTTP/1.1 {status} OK"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = chunk_body(body, chunk_size)
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def chunk_body(body: bytes, chunk_size: int = 16) -> bytes:
    """Transfer-Encoding: chunked framing of ``body``."""
    out = b"".join(f"{len(body[i:i + chunk_size]):x}\r\n".encode() + body[i:i + chunk_size] + b"\r\n"
                   for i in range(0, len(body), chunk_size))
    return out + b"0\r\n\r\n"


def gzip_bytes(data: bytes) -> bytes:
    """gzip with a fixed mtime, so builds are reproducible."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def deflate_bytes(data: bytes) -> bytes:
    """HTTP ``deflate`` (zlib-wrapped)."""
    return zlib.compress(data)


def tls_client_hello(sni: str | None, *, alpn: Sequence[str] = ("h2", "http/1.1"), padding: int = 0,
                     version: int = 0x0303) -> bytes:
    """A TLS 1.2/1.3-style ClientHello record with SNI and ALPN extensions.

    ``padding`` adds a padding extension so the record can be made larger than one segment (modern ClientHellos
    with post-quantum key shares are ~1,850 bytes).
    """
    extensions = b""
    if sni is not None:
        host = sni.encode()
        entry = b"\x00" + struct.pack("!H", len(host)) + host
        extensions += struct.pack("!HH", 0, len(entry) + 2) + struct.pack("!H", len(entry)) + entry
    if alpn:
        protos = b"".join(bytes([len(p)]) + p.encode() for p in alpn)
        extensions += struct.pack("!HHH", 16, len(protos) + 2, len(protos)) + protos
    extensions += struct.pack("!HHB", 43, 3, 2) + struct.pack("!H", 0x0304)  # supported_versions: TLS 1.3
    if padding:
        extensions += struct.pack("!HH", 21, padding) + b"\x00" * padding
    rnd = bytes(range(32))
    body = (struct.pack("!H", version) + rnd + b"\x20" + bytes(32) + struct.pack("!H", 4) + b"\x13\x01\x13\x02"
            + b"\x01\x00" + struct.pack("!H", len(extensions)) + extensions)
    handshake = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def tls_server_hello() -> bytes:
    """A minimal ServerHello record (enough for content-based TLS detection)."""
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x13\x01" + b"\x00" + b"\x00\x00"
    handshake = b"\x02" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x03" + struct.pack("!H", len(handshake)) + handshake


def tls_application_data(payload: bytes) -> bytes:
    """A TLS application_data record carrying ``payload`` (as-is: stands in for ciphertext)."""
    return b"\x17\x03\x03" + struct.pack("!H", len(payload)) + payload


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = bytes((n,)) if n < 0x80 else bytes((0x80 | ((n.bit_length() + 7) // 8),)) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes((tag,)) + length + body


def _der_oid(dotted: str) -> bytes:
    first, second, *rest = (int(p) for p in dotted.split("."))
    out = bytearray((40 * first + second,))
    for value in rest:
        chunk = [value & 0x7F]
        value >>= 7
        while value:
            chunk.append(0x80 | (value & 0x7F))
            value >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


def x509_certificate(common_name: str, *, serial_number: int = 0x1234, issuer: str = "Device CA") -> bytes:
    """A DER X.509 v3 certificate whose subject CN is ``common_name`` (structure only: the key and signature are
    placeholders; tshark dissects it, nothing verifies it). Device certificates often name the IMEI or serial."""
    def name(cn: str) -> bytes:
        return _der(0x30, _der(0x31, _der(0x30, _der_oid("2.5.4.3") + _der(0x0C, cn.encode()))))

    algorithm = _der(0x30, _der_oid("1.2.840.10045.4.3.2"))  # ecdsa-with-SHA256
    key = _der(0x30, _der(0x30, _der_oid("1.2.840.10045.2.1") + _der_oid("1.2.840.10045.3.1.7"))
               + _der(0x03, b"\x00\x04" + bytes(range(64))))
    validity = _der(0x30, _der(0x17, b"240101000000Z") + _der(0x17, b"340101000000Z"))
    tbs = _der(0x30, _der(0xA0, _der(0x02, b"\x02")) + _der(0x02, serial_number.to_bytes(4, "big")) + algorithm
               + name(issuer) + validity + name(common_name) + key)
    signature = _der(0x03, b"\x00" + _der(0x30, _der(0x02, b"\x01" * 32) + _der(0x02, b"\x02" * 32)))
    return _der(0x30, tbs + algorithm + signature)


def tls_handshake_record(msg_type: int, body: bytes, *, version: int = 0x0303) -> bytes:
    """One TLS handshake message in one record."""
    handshake = bytes((msg_type,)) + len(body).to_bytes(3, "big") + body
    return bytes((22,)) + struct.pack("!HH", version, len(handshake)) + handshake


def tls_certificate(certificates: Sequence[bytes]) -> bytes:
    """A TLS 1.2 Certificate message (cleartext: a client certificate is sent so, after the ServerHelloDone)."""
    chain = b"".join(len(c).to_bytes(3, "big") + c for c in certificates)
    return tls_handshake_record(11, len(chain).to_bytes(3, "big") + chain)


def tls_client_key_exchange_psk(identity: bytes) -> bytes:
    """A TLS 1.2 PSK ClientKeyExchange: the PSK identity, in cleartext (RFC 4279)."""
    return tls_handshake_record(16, struct.pack("!H", len(identity)) + identity)


def tls_change_cipher_spec() -> bytes:
    return b"\x14\x03\x03\x00\x01\x01"


def dtls_client_hello(sni: str | None, *, psk_identity: bytes | None = None, message_seq: int = 0) -> bytes:
    """A DTLS 1.2 ClientHello record (epoch 0) with SNI and, optionally, a pre_shared_key extension carrying
    ``psk_identity`` (as DTLS 1.3 and CoAP/LwM2M devices send it)."""
    extensions = b""
    if sni is not None:
        host = sni.encode()
        entry = b"\x00" + struct.pack("!H", len(host)) + host
        extensions += struct.pack("!HHH", 0, len(entry) + 2, len(entry)) + entry
    if psk_identity is not None:
        identities = struct.pack("!H", len(psk_identity)) + psk_identity + b"\x00\x00\x00\x00"
        binders = b"\x20" + bytes(32)
        ext = struct.pack("!H", len(identities)) + identities + struct.pack("!H", len(binders)) + binders
        extensions += struct.pack("!HH", 41, len(ext)) + ext
    body = (b"\xfe\xfd" + bytes(range(32)) + b"\x00" + b"\x00" + struct.pack("!H", 2) + b"\xc0\xa8"
            + b"\x01\x00" + struct.pack("!H", len(extensions)) + extensions)
    handshake = (b"\x01" + len(body).to_bytes(3, "big") + struct.pack("!H", message_seq) + b"\x00\x00\x00"
                 + len(body).to_bytes(3, "big") + body)
    return b"\x16\xfe\xfd" + b"\x00\x00" + b"\x00\x00\x00\x00\x00\x00" + struct.pack("!H", len(handshake)) + handshake


def dtls_record(payload: bytes, *, content_type: int = 23, epoch: int = 0) -> bytes:
    """A DTLS 1.2 record."""
    return (bytes([content_type]) + b"\xfe\xfd" + struct.pack("!H", epoch) + b"\x00\x00\x00\x00\x00\x01"
            + struct.pack("!H", len(payload)) + payload)


def quic_initial(payload: bytes, *, version: int = 1) -> bytes:
    """A QUIC long-header Initial packet prefix followed by ``payload`` (stands in for protected bytes)."""
    dcid = bytes(range(8))
    return (bytes([0xC3]) + struct.pack("!I", version) + bytes([len(dcid)]) + dcid + b"\x00" + b"\x00"
            + struct.pack("!H", 0x4000 | (len(payload) & 0x3FFF)) + payload)


def ssh_banner() -> bytes:
    return b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"


# --- binary serialisations (what SDKs send): minimal encoders, enough to place a value exactly ------------------


@dataclass(frozen=True)
class Float32:
    """A float to encode as IEEE-754 single precision (CBOR, MessagePack, protobuf ``float``)."""

    value: float


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


#: a protobuf field: (number, wire kind, value); kinds: "varint", "sint" (zigzag), "fixed64", "sfixed32",
#: "double", "float", "string", "bytes", "message" (a nested list of fields)
ProtobufField = tuple[int, str, object]


def protobuf_message(fields: Sequence[ProtobufField]) -> bytes:
    """A protobuf message, fields in the given order."""
    out = bytearray()
    for number, kind, value in fields:
        if kind in ("varint", "sint"):
            n = int(value)  # type: ignore[call-overload]
            out += _varint(number << 3) + _varint((n << 1) ^ (n >> 63) if kind == "sint" else n)
        elif kind == "fixed64":
            out += _varint(number << 3 | 1) + struct.pack("<Q", value)
        elif kind == "double":
            out += _varint(number << 3 | 1) + struct.pack("<d", value)
        elif kind == "sfixed32":
            out += _varint(number << 3 | 5) + struct.pack("<i", value)
        elif kind == "float":
            out += _varint(number << 3 | 5) + struct.pack("<f", value)
        else:
            if kind == "message":
                body = protobuf_message(value)  # type: ignore[arg-type]
            elif isinstance(value, str):
                body = value.encode()
            else:
                body = bytes(value)  # type: ignore[call-overload]
            out += _varint(number << 3 | 2) + _varint(len(body)) + body
    return bytes(out)


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    for extra, fmt in ((24, "!B"), (25, "!H"), (26, "!I"), (27, "!Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes((major << 5 | extra,)) + struct.pack(fmt, n)
    raise ValueError("integer too large for CBOR")


def cbor(value: object) -> bytes:
    """CBOR (RFC 8949) of dicts, lists, str, bytes, int, float (double) and :class:`Float32`."""
    if isinstance(value, bool):
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        return _cbor_head(0, value) if value >= 0 else _cbor_head(1, -1 - value)
    if isinstance(value, Float32):
        return b"\xfa" + struct.pack(">f", value.value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        return _cbor_head(3, len(raw)) + raw
    if isinstance(value, bytes):
        return _cbor_head(2, len(value)) + value
    if isinstance(value, list):
        return _cbor_head(4, len(value)) + b"".join(cbor(v) for v in value)
    if isinstance(value, dict):
        return _cbor_head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())
    raise TypeError(f"cannot encode {type(value).__name__} as CBOR")


def msgpack(value: object) -> bytes:
    """MessagePack of dicts, lists, str, bytes, int, float (float64) and :class:`Float32`."""
    if isinstance(value, bool):
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, int):
        if 0 <= value < 128:
            return bytes((value,))
        return b"\xcf" + struct.pack(">Q", value) if value >= 0 else b"\xd3" + struct.pack(">q", value)
    if isinstance(value, Float32):
        return b"\xca" + struct.pack(">f", value.value)
    if isinstance(value, float):
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        return (bytes((0xA0 | len(raw),)) if len(raw) < 32 else b"\xd9" + bytes((len(raw),))) + raw
    if isinstance(value, bytes):
        return b"\xc4" + bytes((len(value),)) + value
    if isinstance(value, list):
        return bytes((0x90 | len(value),)) + b"".join(msgpack(v) for v in value)
    if isinstance(value, dict):
        return bytes((0x80 | len(value),)) + b"".join(msgpack(k) + msgpack(v) for k, v in value.items())
    raise TypeError(f"cannot encode {type(value).__name__} as MessagePack")


def bson(document: Mapping[str, object]) -> bytes:
    """BSON of a document of str, int (int64), float (double) and nested documents."""
    body = bytearray()
    for key, value in document.items():
        name = key.encode() + b"\x00"
        if isinstance(value, float):
            body += b"\x01" + name + struct.pack("<d", value)
        elif isinstance(value, str):
            raw = value.encode() + b"\x00"
            body += b"\x02" + name + struct.pack("<i", len(raw)) + raw
        elif isinstance(value, Mapping):
            body += b"\x03" + name + bson(value)
        elif isinstance(value, int):
            body += b"\x12" + name + struct.pack("<q", value)
        else:
            raise TypeError(f"cannot encode {type(value).__name__} as BSON")
    return struct.pack("<i", len(body) + 5) + bytes(body) + b"\x00"


def _mqtt_remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def mqtt_connect(client_id: str, *, username: str | None = None, password: str | None = None) -> bytes:
    """An MQTT 3.1.1 CONNECT packet."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _mqtt_str(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + _mqtt_str(client_id.encode())
    if username is not None:
        body += _mqtt_str(username.encode())
    if password is not None:
        body += _mqtt_str(password.encode())
    return b"\x10" + _mqtt_remaining_length(len(body)) + body


def mqtt_publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 1) -> bytes:
    """An MQTT PUBLISH packet."""
    body = _mqtt_str(topic.encode()) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _mqtt_remaining_length(len(body)) + body


def websocket_upgrade(path: str, *, host: str) -> bytes:
    key = base64.b64encode(bytes(16)).decode()
    return http_request("GET", path, host=host, headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                                         "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"})


def websocket_accept() -> bytes:
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


def websocket_frame(payload: bytes, *, mask_key: bytes | None = b"\x37\xfa\x21\x3d", opcode: int = 1,
                    fin: bool = True, rsv1: bool = False) -> bytes:
    """A WebSocket frame; client frames are masked (``mask_key``), server frames are not (``mask_key=None``);
    ``rsv1`` marks the first frame of a permessage-deflate message."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    mask_bit = 0x80 if mask_key is not None else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask_key is None:
        return head + payload
    masked = bytes(b ^ mask_key[i % 4] for i, b in enumerate(payload))
    return head + mask_key + masked


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One HTTP/2 frame (RFC 9113 4.1)."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + struct.pack("!I", stream_id) + payload


def h2_settings(*, ack: bool = False) -> bytes:
    return h2_frame(4, 1 if ack else 0, 0, b"" if ack else struct.pack("!HI", 3, 100))


def h2_headers(stream_id: int, block: bytes, *, end_stream: bool = False, split: int = 0) -> bytes:
    """A HEADERS frame carrying an HPACK ``block``; ``split`` > 0 continues it in CONTINUATION frames of that
    many bytes."""
    if not split or split >= len(block):
        return h2_frame(1, 0x4 | (0x1 if end_stream else 0), stream_id, block)
    parts = [block[i:i + split] for i in range(0, len(block), split)]
    out = h2_frame(1, 0x1 if end_stream else 0, stream_id, parts[0])
    for i, part in enumerate(parts[1:], 1):
        out += h2_frame(9, 0x4 if i == len(parts) - 1 else 0, stream_id, part)
    return out


def h2_data(stream_id: int, data: bytes, *, end_stream: bool = True, frame_size: int = 16384,
            padding: int = 0) -> bytes:
    """DATA frames of ``frame_size`` bytes each (optionally padded), END_STREAM on the last."""
    out = b""
    chunks = [data[i:i + frame_size] for i in range(0, len(data), frame_size)] or [b""]
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        flags = (0x1 if last and end_stream else 0) | (0x8 if padding else 0)
        payload = (bytes((padding,)) + chunk + bytes(padding)) if padding else chunk
        out += h2_frame(0, flags, stream_id, payload)
    return out


def websocket_deflate(messages: Sequence[bytes], *, context_takeover: bool = True) -> list[bytes]:
    """Payloads of permessage-deflate messages (RFC 7692): raw deflate, sync-flushed, the trailing
    ``00 00 ff ff`` removed; with context takeover (the default) one compressor serves every message."""
    out = []
    compressor = zlib.compressobj(wbits=-15)
    for message in messages:
        if not context_takeover:
            compressor = zlib.compressobj(wbits=-15)
        data = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        out.append(data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data)
    return out


def quic_client_initials(sni: str | None, *, alpn: Sequence[str] = ("h3",), dcid: bytes = bytes(range(8)),
                         crypto_bytes_per_packet: int = 1000, padding: int = 0) -> list[bytes]:
    """A QUIC v1 client's Initial packets carrying a ClientHello, really encrypted (RFC 9001 Initial keys), so
    tshark and phonehome both decrypt them. Each is one datagram padded to 1,200 bytes; a ClientHello larger
    than ``crypto_bytes_per_packet`` (``padding`` makes it so, like Chrome's) is spread over several packets.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from phonehome.scan.protocols import quic_initial_keys

    handshake = tls_client_hello(sni, alpn=alpn, padding=padding)[5:]
    key, iv, hp = quic_initial_keys(dcid)
    datagrams = []
    for number, offset in enumerate(range(0, len(handshake), crypto_bytes_per_packet)):
        chunk = handshake[offset:offset + crypto_bytes_per_packet]
        frame = b"\x06" + _quic_varint(offset) + _quic_varint(len(chunk)) + chunk
        head_len = 1 + 4 + 1 + len(dcid) + 1 + 1 + 2 + 4
        payload = frame + b"\x00" * max(0, 1200 - head_len - 16 - len(frame))
        pn = number.to_bytes(4, "big")
        header = (bytes([0xC3]) + struct.pack("!I", 1) + bytes([len(dcid)]) + dcid + b"\x00" + b"\x00"
                  + struct.pack("!H", 0x4000 | (len(pn) + len(payload) + 16)))
        nonce = (int.from_bytes(iv, "big") ^ number).to_bytes(12, "big")
        sealed = AESGCM(key).encrypt(nonce, payload, header + pn)
        encryptor = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
        mask = encryptor.update(sealed[:16]) + encryptor.finalize()
        first = bytes([header[0] ^ (mask[0] & 0x0F)])
        protected_pn = bytes(b ^ m for b, m in zip(pn, mask[1:5], strict=True))
        datagrams.append(first + header[1:] + protected_pn + sealed)
    return datagrams


def _quic_varint(value: int) -> bytes:
    if value < 0x40:
        return bytes([value])
    if value < 0x4000:
        return struct.pack("!H", 0x4000 | value)
    return struct.pack("!I", 0x80000000 | value)
