"""Encapsulations and the count of what could not be decoded.

Lab captures are not always plain Ethernet: the phone's traffic may sit inside a GRE or VXLAN tunnel (a mirror
port, a cloud lab), be captured over the air (802.11 with radiotap, PPI or bare headers), or ride on PPPoE or
MPLS. This module finds the innermost IP packet of such frames, so the flow a finding names is the inner flow
(the phone and its server), never the tunnel's endpoints. Tunnel headers and inner Ethernet/802.11 headers are
link-layer addresses: they are stepped over, never scanned.

It is off the scanner's hot path: the scanner calls it only for frames its plain link-layer decoding could not
place (``ip_offset`` < 0), for IP packets that are not TCP/UDP, and for UDP datagrams on a tunnel port.

What it cannot decode it counts, per reason, in packets and bytes (:class:`Undecoded`): the scan reports it, and
a capture mostly made of it proves nothing (fail closed; see :meth:`Undecoded.problem`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IEEE802_11 = 105
LINKTYPE_IEEE802_11_RADIOTAP = 127
LINKTYPE_PPI = 192
LINKTYPE_PPP = 9
LINKTYPE_PPP_HDLC = 50
LINKTYPE_C_HDLC = 104
LINKTYPE_PPP_WITH_DIR = 204
LINKTYPE_NFLOG = 239

#: link types decoded here (the plain ones are in :mod:`.packets`)
TUNNEL_LINK_TYPES: dict[int, str] = {
    LINKTYPE_IEEE802_11: "802.11", LINKTYPE_IEEE802_11_RADIOTAP: "802.11 with radiotap",
    LINKTYPE_PPI: "802.11 with PPI", LINKTYPE_PPP: "PPP", LINKTYPE_PPP_HDLC: "PPP in HDLC framing",
    LINKTYPE_C_HDLC: "Cisco HDLC", LINKTYPE_PPP_WITH_DIR: "PPP with direction", LINKTYPE_NFLOG: "Linux NFLOG",
}

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_TEB = 0x6558  # transparent Ethernet bridging
ETHERTYPE_MPLS = (0x8847, 0x8848)
ETHERTYPE_PPPOE_SESSION = 0x8864
ETHERTYPE_PPP = 0x880B
ETHERTYPE_ERSPAN_II = 0x88BE
ETHERTYPE_ERSPAN_III = 0x22EB
_VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
#: ethertypes that carry no IP and nothing phonehome scans (not a decoding failure): ARP, RARP, EAPOL,
#: LLDP, PPPoE discovery, 802.1X preauth, loopback test, MACsec key agreement, PTP, flow control, LACP, TDLS...
KNOWN_NON_IP = frozenset((0x0806, 0x8035, 0x888E, 0x88CC, 0x8863, 0x88C7, 0x9000, 0x88E5, 0x88F7, 0x8808,
                          0x8809, 0x890D, 0x88B5, 0x88B6, 0x8899, 0x22F3, 0x893A, 0x88E1))

IP_IPIP = 4
IP_IPV6 = 41
IP_GRE = 47
IP_ETHERIP = 97
IP_MPLS = 137
TUNNEL_IP_PROTOCOLS = frozenset((IP_IPIP, IP_IPV6, IP_GRE, IP_ETHERIP, IP_MPLS))
_IPV6_EXTENSIONS = frozenset((0, 43, 60))
_TRANSPORT_HEADER = {6: 20, 17: 8}  # TCP, UDP: the header a packet needs to be decoded

UDP_VXLAN = (4789, 8472)  # IANA, and Linux's pre-IANA default
UDP_GENEVE = 6081
#: UDP ports whose datagrams are tunnels (the scanner checks a datagram's ports against this set only)
TUNNEL_UDP_PORTS = frozenset((*UDP_VXLAN, UDP_GENEVE))

#: tunnels inside tunnels deeper than this are given up on (and counted)
MAX_DEPTH = 8

REASON_LINK = "unknown link type"
REASON_ETHERTYPE = "unknown ethertype"
REASON_ENCAPSULATION = "unsupported encapsulation"
REASON_TRUNCATED = "truncated"
REASON_PROTECTED = "encrypted 802.11 (WEP/WPA)"
REASON_IPSEC = "encrypted IPsec (ESP)"
REASON_PROTOCOL = "unsupported IP protocol"

#: when at least this share of a capture's packets could not be decoded, the capture proves nothing
UNDECODED_SHARE_LIMIT = 0.2

#: (buffer, offset of an IP header in it), or the reason it holds none: "" for frames that carry no IP and need
#: none (ARP, 802.11 management), else "reason: detail"
Inner = tuple[bytes, int] | str

_u16 = struct.Struct("!H").unpack_from
_u16le = struct.Struct("<H").unpack_from
_u32le = struct.Struct("<I").unpack_from


def _plausible_ip(data: bytes, off: int) -> bool:
    if len(data) < off + 20:
        return False
    version = data[off] >> 4
    return (version == 4 and data[off] & 0x0F >= 5) or (version == 6 and len(data) >= off + 40)


def from_ethertype(data: bytes, off: int, ethertype: int, depth: int = 0) -> Inner:
    """The IP packet carried by a payload of type ``ethertype`` starting at ``data[off:]``."""
    if depth > MAX_DEPTH:
        return f"{REASON_ENCAPSULATION}: tunnels nested deeper than {MAX_DEPTH}"
    n = len(data)
    while ethertype in _VLAN_TYPES:
        if n < off + 4:
            return f"{REASON_TRUNCATED}: VLAN tag"
        ethertype = _u16(data, off + 2)[0]
        off += 4
    if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
        return from_ip(data, off, depth)
    if ethertype == ETHERTYPE_TEB:
        return ethernet(data, off, depth + 1)
    if ethertype in ETHERTYPE_MPLS:
        return _mpls(data, off, depth + 1)
    if ethertype == ETHERTYPE_PPPOE_SESSION:
        if n < off + 8:
            return f"{REASON_TRUNCATED}: PPPoE header"
        return _ppp(data, off + 6, depth + 1)
    if ethertype == ETHERTYPE_PPP:
        return _ppp(data, off, depth + 1)
    if ethertype == ETHERTYPE_ERSPAN_II:
        return ethernet(data, off + 8, depth + 1)
    if ethertype == ETHERTYPE_ERSPAN_III:
        if n < off + 12:
            return f"{REASON_TRUNCATED}: ERSPAN header"
        return ethernet(data, off + 12 + (8 if data[off + 11] & 1 else 0), depth + 1)
    if ethertype <= 1500:  # an 802.3 length: LLC follows
        return _llc(data, off, depth)
    if ethertype in KNOWN_NON_IP:
        return ""
    return f"{REASON_ETHERTYPE}: 0x{ethertype:04x}"


def ethernet(data: bytes, off: int, depth: int = 0) -> Inner:
    """An Ethernet II / 802.3 frame at ``data[off:]`` (its MAC addresses are skipped, never scanned)."""
    if len(data) < off + 14:
        return f"{REASON_TRUNCATED}: Ethernet header"
    return from_ethertype(data, off + 14, _u16(data, off + 12)[0], depth)


#: SNAP organisation codes after which the protocol id is an ethertype: RFC 1042 and 802.1H bridge tunnelling;
#: under any other (Cisco's CDP/VTP/DTP/PVST+, Apple's...) it is that vendor's own protocol, never IP
_SNAP_ETHERTYPE_OUIS = (b"\0\0\0", b"\0\0\xf8")


def _llc(data: bytes, off: int, depth: int) -> Inner:
    """802.2 LLC: only SNAP carries an ethertype; anything else (STP, CDP, NetBIOS...) carries no IP."""
    if data[off:off + 3] == b"\xaa\xaa\x03" and len(data) >= off + 8 and data[off + 3:off + 6] in _SNAP_ETHERTYPE_OUIS:
        return from_ethertype(data, off + 8, _u16(data, off + 6)[0], depth)
    return ""


def _mpls(data: bytes, off: int, depth: int) -> Inner:
    n = len(data)
    while True:
        if n < off + 4:
            return f"{REASON_TRUNCATED}: MPLS label stack"
        bottom = data[off + 2] & 1
        off += 4
        if bottom:
            break
    if n <= off:
        return f"{REASON_TRUNCATED}: MPLS payload"
    if data[off] >> 4 in (4, 6) and _plausible_ip(data, off):
        return from_ip(data, off, depth)
    if data[off] >> 4 == 0:  # a pseudowire control word, then Ethernet
        return ethernet(data, off + 4, depth + 1)
    return f"{REASON_ENCAPSULATION}: MPLS payload that is neither IP nor an Ethernet pseudowire"


def _ppp(data: bytes, off: int, depth: int) -> Inner:
    if data[off:off + 2] == b"\xff\x03":  # HDLC address and control
        off += 2
    if len(data) < off + 2:
        return f"{REASON_TRUNCATED}: PPP header"
    if data[off] & 1:  # a compressed one-byte protocol field
        protocol, off = data[off], off + 1
    else:
        protocol, off = _u16(data, off)[0], off + 2
    if protocol in (0x21, 0x57):  # IPv4, IPv6
        return from_ip(data, off, depth)
    if protocol >= 0x8000:  # link/network control (LCP, IPCP, CHAP...): no IP
        return ""
    return f"{REASON_ENCAPSULATION}: PPP protocol 0x{protocol:04x}"


def _gre(data: bytes, off: int, depth: int) -> Inner:
    n = len(data)
    if n < off + 4:
        return f"{REASON_TRUNCATED}: GRE header"
    flags, protocol = struct.unpack_from("!HH", data, off)
    version = flags & 7
    if version == 0:
        if flags & 0x4000:
            return f"{REASON_ENCAPSULATION}: GRE with source routing"
        length = 4 + (4 if flags & 0x8000 else 0) + (4 if flags & 0x2000 else 0) + (4 if flags & 0x1000 else 0)
    elif version == 1:  # enhanced GRE (PPTP): key always, sequence and acknowledgement optional
        length = 8 + (4 if flags & 0x1000 else 0) + (4 if flags & 0x0080 else 0)
    else:
        return f"{REASON_ENCAPSULATION}: GRE version {version}"
    if n < off + length:
        return f"{REASON_TRUNCATED}: GRE header"
    if version == 1 and n == off + length:
        return ""  # a bare acknowledgement
    if protocol == ETHERTYPE_ERSPAN_II and not flags & 0x1000:  # ERSPAN type I: no sequence number, no header
        return ethernet(data, off + length, depth + 1)
    inner = from_ethertype(data, off + length, protocol, depth + 1)
    if inner == f"{REASON_ETHERTYPE}: 0x{protocol:04x}":  # GRE's own protocol unknown, not a frame inside it
        return f"{REASON_ENCAPSULATION}: GRE protocol 0x{protocol:04x}"
    return inner


def from_ip(data: bytes, off: int, depth: int = 0) -> Inner:
    """``data[off:]`` itself when it is an IP packet of anything but a tunnel protocol; else what it carries.

    UDP datagrams on a tunnel port are returned as they are: the scanner unwraps them after decoding UDP, which
    also reassembles fragmented tunnel datagrams.
    """
    n = len(data)
    if n < off + 20:
        return f"{REASON_TRUNCATED}: IP header"
    version = data[off] >> 4
    if version == 4:
        ihl = (data[off] & 0x0F) * 4
        proto = data[off + 9]
        if proto not in TUNNEL_IP_PROTOCOLS:
            if proto in _TRANSPORT_HEADER and not _u16(data, off + 6)[0] & 0x3FFF and \
                    n < off + ihl + _TRANSPORT_HEADER[proto]:
                return f"{REASON_TRUNCATED}: {'TCP' if proto == 6 else 'UDP'} header"
            return data, off
        if _u16(data, off + 6)[0] & 0x3FFF:
            return f"{REASON_ENCAPSULATION}: fragmented tunnel packet (protocol {proto})"
        total = _u16(data, off + 2)[0]
        if ihl < 20 or off + total > n:
            return f"{REASON_TRUNCATED}: tunnel packet"
        start, end = off + ihl, off + total
    elif version == 6:
        if n < off + 40:
            return f"{REASON_TRUNCATED}: IPv6 header"
        proto = data[off + 6]
        start = off + 40
        end = start + _u16(data, off + 4)[0]
        while proto in _IPV6_EXTENSIONS and start + 8 <= n:
            proto, start = data[start], start + (data[start + 1] + 1) * 8
        if proto not in TUNNEL_IP_PROTOCOLS:
            if proto in _TRANSPORT_HEADER and n < start + _TRANSPORT_HEADER[proto]:
                return f"{REASON_TRUNCATED}: {'TCP' if proto == 6 else 'UDP'} header"
            return data, off
        if end > n:
            return f"{REASON_TRUNCATED}: tunnel packet"
    else:
        return f"{REASON_TRUNCATED}: not an IP header (version {version})"
    if end < n:
        data = data[:end]  # an Ethernet trailer or FCS after the outer packet is not inner payload
    if depth >= MAX_DEPTH:
        return f"{REASON_ENCAPSULATION}: tunnels nested deeper than {MAX_DEPTH}"
    if proto in (IP_IPIP, IP_IPV6):
        return from_ip(data, start, depth + 1)
    if proto == IP_GRE:
        return _gre(data, start, depth)
    if proto == IP_ETHERIP:
        return ethernet(data, start + 2, depth + 1)
    return _mpls(data, start, depth + 1)


#: IP protocols that carry no application data (network control: ICMP, IGMP, ICMPv6, OSPF, PIM, VRRP, Mobile IPv6
#: binding updates...): not scanned and no failure; 59 is IPv6's "no next header", 44 a fragment waiting for the rest
_CONTROL_IP_PROTOCOLS = frozenset((1, 2, 8, 9, 44, 46, 58, 59, 88, 89, 103, 112, 135))
_IP_ESP = 50


def unscanned_protocol(data: bytes, off: int) -> str:
    """Why the IP packet at ``data[off:]``, which is neither TCP/UDP nor a tunnel, was not scanned: "" for network
    control (and fragments), else "reason: detail". An IPsec VPN's ESP packets (a phone's always-on VPN, Wi-Fi
    calling to the ePDG) are encrypted traffic nobody scanned, never a clean pass."""
    n = len(data)
    version = data[off] >> 4
    if version == 4:
        proto = data[off + 9]
        if _u16(data, off + 6)[0] & 0x1FFF:  # a later fragment: its first one was counted
            return ""
    else:
        proto, start = data[off + 6], off + 40
        while proto in _IPV6_EXTENSIONS and start + 8 <= n:
            proto, start = data[start], start + (data[start + 1] + 1) * 8
    if proto in _CONTROL_IP_PROTOCOLS or proto in _TRANSPORT_HEADER:
        return ""
    if proto == _IP_ESP:
        return f"{REASON_IPSEC}: a VPN or Wi-Fi calling tunnel"
    return f"{REASON_PROTOCOL}: {proto}"


def from_udp(payload: bytes, sport: int, dport: int) -> Inner | None:
    """The IP packet inside a VXLAN or Geneve datagram; None when the datagram is no tunnel after all."""
    port = dport if dport in TUNNEL_UDP_PORTS else sport
    if len(payload) < 8:
        return None
    if port in UDP_VXLAN:
        if not payload[0] & 0x08 or payload[1:4] != b"\0\0\0":  # the I flag; reserved bytes
            return None
        return ethernet(payload, 8, 1)
    version_options = payload[0]
    if version_options >> 6:
        return None
    return from_ethertype(payload, 8 + (version_options & 0x3F) * 4, _u16(payload, 2)[0], 1)


# --- 802.11 --------------------------------------------------------------------------------------------------


def _radiotap_fcs(data: bytes, length: int) -> bool:
    """True when the radiotap Flags field says the frame ends in a 4-byte FCS."""
    pos = 4
    present = _u32le(data, pos)[0] if len(data) >= 8 else 0
    first = present
    while present & 0x80000000 and pos + 8 <= length:
        pos += 4
        present = _u32le(data, pos)[0]
    field_pos = pos + 4
    if not first & 0x02:  # no Flags field
        return False
    if first & 0x01:  # TSFT: 8 bytes, aligned to 8
        field_pos = (field_pos + 7) // 8 * 8 + 8
    return field_pos < length and bool(data[field_pos] & 0x10)


def ieee802_11(data: bytes, off: int) -> Inner:
    """An 802.11 frame: data frames of an open network carry LLC/SNAP, then the ethertype."""
    n = len(data)
    if n < off + 2:
        return f"{REASON_TRUNCATED}: 802.11 header"
    fc, flags = data[off], data[off + 1]
    if (fc >> 2) & 3 != 2:  # management (beacons, probes) or control frames (ACK, RTS, CTS: 10-20 bytes)
        return ""
    if n < off + 24:
        return f"{REASON_TRUNCATED}: 802.11 header"
    subtype = fc >> 4
    if subtype & 4:  # null data: no body
        return ""
    if flags & 0x40:
        return f"{REASON_PROTECTED}: decrypt the capture first (Wireshark's IEEE 802.11 keys)"
    length = 30 if flags & 3 == 3 else 24
    if subtype & 8:  # QoS data
        if n < off + length + 2:
            return f"{REASON_TRUNCATED}: 802.11 QoS header"
        if data[off + length] & 0x80:
            return f"{REASON_ENCAPSULATION}: 802.11 A-MSDU aggregate"
        length += 2
        if flags & 0x80:  # +HTC
            length += 4
    body = off + length
    if n <= body:
        return ""
    if data[body:body + 3] == b"\xaa\xaa\x03" and n >= body + 8:
        return _llc(data, body, 1)
    return f"{REASON_ENCAPSULATION}: 802.11 data without LLC/SNAP"


def from_link(link: int, data: bytes) -> Inner:
    """The IP packet of a frame the plain link-layer decoding could not place (``ip_offset`` gave -1)."""
    if link == LINKTYPE_ETHERNET:
        return ethernet(data, 0)
    if link == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return f"{REASON_TRUNCATED}: Linux cooked header"
        return from_ethertype(data, 16, _u16(data, 14)[0])
    if link == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return f"{REASON_TRUNCATED}: Linux cooked v2 header"
        return from_ethertype(data, 20, _u16(data, 0)[0])
    if link in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return "" if len(data) >= 4 else f"{REASON_TRUNCATED}: loopback header"  # another address family
    if link == LINKTYPE_IEEE802_11:
        return ieee802_11(data, 0)
    if link == LINKTYPE_IEEE802_11_RADIOTAP:
        if len(data) < 8:
            return f"{REASON_TRUNCATED}: radiotap header"
        length = _u16le(data, 2)[0]
        if _radiotap_fcs(data, length):
            data = data[:-4]
        return ieee802_11(data, length)
    if link == LINKTYPE_PPI:
        if len(data) < 8:
            return f"{REASON_TRUNCATED}: PPI header"
        length = _u16le(data, 2)[0]
        dlt = _u32le(data, 4)[0]
        if dlt == LINKTYPE_IEEE802_11:
            return ieee802_11(data, length)
        if dlt == LINKTYPE_ETHERNET:
            return ethernet(data, length)
        return f"{REASON_ENCAPSULATION}: PPI carrying link type {dlt}"
    if link in (LINKTYPE_PPP, LINKTYPE_PPP_HDLC, LINKTYPE_C_HDLC, LINKTYPE_PPP_WITH_DIR):
        off = 1 if link == LINKTYPE_PPP_WITH_DIR else 0
        if len(data) < off + 4:
            return f"{REASON_TRUNCATED}: PPP header"
        if data[off] in (0x0F, 0x8F) and data[off + 1] == 0:  # Cisco HDLC: address, control, ethertype
            return from_ethertype(data, off + 4, _u16(data, off + 2)[0])
        return _ppp(data, off, 0)
    if link == LINKTYPE_NFLOG:
        return _nflog(data)
    return f"{REASON_LINK}: {link}"


def _nflog(data: bytes) -> Inner:
    """Linux NFLOG (``tcpdump -i nflog:N``, as Android's netd logs): a 4-byte header, then TLVs; the one of type 9
    holds the IP packet. TLV lengths and types are in the byte order of the host that wrote the file."""
    n = len(data)
    if n < 8:
        return f"{REASON_TRUNCATED}: NFLOG header"
    tlv = _u16le if 4 <= _u16le(data, 4)[0] <= n - 4 else _u16
    pos = 4
    while pos + 4 <= n:
        length, kind = tlv(data, pos)[0], tlv(data, pos + 2)[0]
        if length < 4 or pos + length > n:
            return f"{REASON_TRUNCATED}: NFLOG TLV"
        if kind == 9:  # NFULA_PAYLOAD
            return from_ip(data[pos + 4:pos + length], 0)
        pos += (length + 3) & ~3
    return ""  # a log record without the packet


# --- the count of what could not be decoded -------------------------------------------------------------------


@dataclass
class Undecoded:
    """Packets and bytes the scan could not decode, per reason (and per phase, for the fail-closed rule)."""

    reasons: dict[str, list[int]] = field(default_factory=dict)  # reason -> [packets, bytes]
    details: dict[str, int] = field(default_factory=dict)  # "reason: detail" -> packets
    by_phase: dict[str, int] = field(default_factory=dict)
    packets: int = 0
    bytes: int = 0

    def add(self, problem: str, size: int, phase: str | None) -> None:
        reason = problem.split(":", 1)[0]
        counts = self.reasons.get(reason)
        if counts is None:
            counts = self.reasons[reason] = [0, 0]
        counts[0] += 1
        counts[1] += size
        self.details[problem] = self.details.get(problem, 0) + 1
        self.packets += 1
        self.bytes += size
        if phase is not None:
            self.by_phase[phase] = self.by_phase.get(phase, 0) + 1

    def to_json(self) -> dict[str, dict[str, int]]:
        return {reason: {"packets": p, "bytes": b} for reason, (p, b) in sorted(self.reasons.items())}

    def warnings(self, total_packets: int, limit: int = 10) -> list[str]:
        """One line per distinct problem, the commonest first."""
        out = []
        for problem, count in sorted(self.details.items(), key=lambda item: -item[1])[:limit]:
            out.append(f"{count} of {total_packets} packets could not be decoded ({problem}); they were not scanned")
        if len(self.details) > limit:
            out.append(f"... and {len(self.details) - limit} more kinds of undecodable packets")
        return out


def undecoded_problem(undecoded: dict[str, dict[str, int]], packets: int, *,
                      phases_without_decoded: Sequence[str] = ()) -> str | None:
    """Why a capture proves nothing, or None: a large share of its packets, or every packet of a phase, could not
    be decoded. ``undecoded`` is :meth:`Undecoded.to_json`."""
    count = sum(item["packets"] for item in undecoded.values())
    if not count:
        return None
    reasons = ", ".join(f"{reason} ({item['packets']})" for reason, item in
                        sorted(undecoded.items(), key=lambda kv: -kv[1]["packets"]))
    if phases_without_decoded:
        return (f"no packet of phase {', '.join(repr(p) for p in phases_without_decoded)} could be decoded "
                f"({reasons}): the capture cannot show whether the phone leaked there")
    if count >= packets * UNDECODED_SHARE_LIMIT:
        return (f"{count} of {packets} packets ({100 * count / max(packets, 1):.0f}%) could not be decoded "
                f"({reasons}): a capture phonehome cannot read proves nothing")
    return None
