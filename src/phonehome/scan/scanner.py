"""``scan_capture``: find a device's identifiers sent in cleartext in a pcap/pcapng file.

The pipeline, per packet: chunked reader (:mod:`.pcapfile`) -> link/IP/TCP/UDP decoding and IPv4
defragmentation (:mod:`.packets`) -> per-direction TCP reassembly (:mod:`.reassembly`) -> protocol decoding
(:mod:`.protocols`) -> multi-pattern matching (:mod:`.matcher`) on the decoded bytes, plus nested decoders
(:mod:`.layers`) on application content. Flows found encrypted by content (TLS, DTLS, QUIC, SSH) cost one dict
lookup per packet after the handshake: that is what keeps the scan fast on real captures, which are mostly TLS.

Results are frozen values: :class:`ScanResult` with one :class:`Finding` per (flow, identifier, encoding) —
and per phase when phases are given, so a per-phase report sees each phase's leaks — every :class:`Flow`, and a
:class:`CaptureInfo` that says what could not be read. Its ``to_json()`` is the OUT.json of ``phonehome scan``.
"""

from __future__ import annotations

import bisect
import gc
import json
import math
import os
import struct
import time as _time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from phonehome.errors import InputError
from phonehome.identifiers import Identifiers, mask
from phonehome.redaction import leak_spans, merge_spans
from phonehome.scan import layers, tls, tunnels
from phonehome.scan.decoders import stream_decoder
from phonehome.scan.flowtable import FlowTable
from phonehome.scan.handshakes import (
    MAX_DTLS_HANDSHAKE_DATAGRAMS,
    PROTO_DTLS_HANDSHAKE,
    TlsHandshakeDecoder,
    dtls_cleartext,
)
from phonehome.scan.http2 import Http2Decoder
from phonehome.scan.keylog import KeyLog, load_keylogs
from phonehome.scan.matcher import Match, Matcher, build_matcher
from phonehome.scan.obfuscation import (
    MIN_XOR_NEEDLE_BYTES,
    XOR_MULTI_BYTE_PER_DIRECTION,
    XOR_MULTI_BYTE_UNIT_BYTES,
    XorFinder,
    xor_bytes,
    xor_finder,
)
from phonehome.scan.packets import (
    PROTO_TCP,
    PROTO_UDP,
    SUPPORTED_LINK_TYPES,
    Decoded,
    Defragmenter,
    address_text,
    decode_ip,
    ip_offset,
)
from phonehome.scan.pcapfile import NOT_A_PACKET, CaptureReader
from phonehome.scan.protocols import (
    DATAGRAM_HEADER_BYTES,
    DHCP_PORTS,
    DHCPV6_PORTS,
    ESP_RUN,
    IPSEC_NAT_T_PORT,
    MAX_CLIENT_HELLO_BYTES,
    MAX_QUIC_INITIALS,
    PROTO_DHCP,
    PROTO_DHCPV6,
    PROTO_DNS,
    PROTO_DTLS,
    PROTO_ESP,
    PROTO_HTTP,
    PROTO_HTTP2,
    PROTO_MQTT,
    PROTO_QUIC,
    PROTO_QUIC_HANDSHAKE,
    PROTO_SSH,
    PROTO_TLS,
    PROTO_TUNNEL,
    PROTO_UNKNOWN,
    PROTO_WEBSOCKET,
    QUIC_PORT,
    QUIC_SHORT_RUN,
    RawDecoder,
    StreamDecoder,
    Unit,
    WebSocketDecoder,
    classify_datagram,
    classify_stream,
    client_hello_from_crypto,
    dhcp_link_addresses_blanked,
    dhcpv6_link_addresses_blanked,
    esp_in_udp,
    parse_client_hello,
    parse_dns,
    quic_initial_crypto,
    quic_short_header,
)
from phonehome.scan.reassembly import MAX_CONFLICT_BYTES_PER_STREAM, RECENT_TRIM_BYTES, Budget, Stream
from phonehome.scan.tunnels import TUNNEL_UDP_PORTS, Undecoded, undecoded_problem

if TYPE_CHECKING:
    from phonehome.scan.attribution import Attribution

#: bytes of context on each side of a match in a finding's excerpt
EXCERPT_CONTEXT_BYTES = 32
#: nested decoders (base64 of gzip of JSON...) look at most this much of one unit (message or raw batch)
PEEL_INPUT_BYTES = 64 << 10
#: and at most this much per flow direction, so large downloads and bulk streams cannot make the scan crawl...
PEEL_BYTES_PER_DIRECTION = 1 << 20
#: bytes a direction sends after its TCP connection closed (a late retransmission; or new data on the 4-tuple
#: after an RST, with no SYN seen) scanned as they come, at most; beyond it they are counted and said
MAX_LATE_BYTES_PER_DIRECTION = 1 << 20
#: ...except that units this small (API calls, DNS, MQTT messages: where leaks are) are always peeled
PEEL_ALWAYS_BYTES = 16 << 10
#: nesting depth for the nested decoders (the contract asks for at least three)
PEEL_DEPTH = 3
#: decoded output the nested decoders may produce per unit
PEEL_OUTPUT_BYTES = 4 << 20
#: samples, their layers and matches remembered for bodies sent again (see Scanner._peeled)
PEEL_CACHE_BYTES = 2 << 20
#: bytes all protocol decoders may buffer together (partial HTTP bodies, WebSocket frames...): part of the scan's
#: memory budget (docs/architecture.md, "Memory")
MAX_DECODER_BYTES_TOTAL = 13 << 20
#: when over that, directions buffering at least this much are scanned as they are and emptied
SHED_DIRECTION_BYTES = 256 << 10
#: distinct content-decoding problems listed in the warnings
MAX_DECODE_WARNINGS = 20
#: allocations between two young-generation collections while scanning (Scanner.scan; Python's default is 700)
GC_YOUNG_THRESHOLD = 10_000
#: flows whose state the scan keeps at once: past it, the older half are let go (Scanner._evict); a flow holds
#: ~5 KiB while it is open (measured, with its decoders; what they buffer is counted apart) and ~100 bytes (on disk
#: past 4 MiB of them) once written to the flow table: part of the memory budget (docs/architecture.md, "Memory")
MAX_LIVE_FLOWS = 2048
#: a closed connection's last packets (ACKs, a retransmitted FIN) come within this long: let go of it after
LINGER_SECONDS = 2.0
#: a flow silent this long is let go before one still going
IDLE_SECONDS = 60.0
#: ports where UDP payloads are parsed as DNS (mDNS and LLMNR included)
DNS_PORTS = frozenset((53, 5353, 5355))
#: TCP port where streams that are not recognisable otherwise are parsed as DNS (length-prefixed messages)
DNS_TCP_PORT = 53

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04

#: an IPv4 header's total length (no options), then its TCP header's sequence number, data offset and flags
_ipv4_tcp_fields = struct.Struct("!2xH16x4xI4xBB").unpack_from
#: an IPv6 header's payload length (no extension headers), then the same of its TCP header
_ipv6_tcp_fields = struct.Struct("!4xH34x4xI4xBB").unpack_from

#: layer names that are also needle encodings: "X>plain" and a needle "X" are the same finding
LAYER_NAMES = frozenset(("url", "base64", "base64url", "base32", "hex", "utf16le", "utf16be", "html", "json", "qp"))
#: unescaping layers that leave most of the text as it was
TRANSPARENT_LAYERS = frozenset(("url", "html", "json", "qp"))

#: frame maps of finished directions: shared and never appended to, so a closed flow costs no list memory
_NO_INTS: list[int] = []
_NO_FLOATS: list[float] = []
#: a flow's QUIC Initial crypto until it has some: shared, never appended to (replaced by a list first)
_NO_CRYPTO: list[tuple[int, bytes]] = []

_FIX_PHASES = 'write a JSON list of {"name": ..., "start": <capture time>, "end": <capture time>}'


# --- result values ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """A named window of capture time (seconds since the epoch, as in the capture's timestamps)."""

    name: str
    start: float
    end: float

    def contains(self, t: float) -> bool:
        return self.start <= t <= self.end


@dataclass(frozen=True, slots=True)
class Finding:
    """One identifier, in one encoding, sent over one flow (in one phase): the frames that carried it."""

    identifier: str
    encoding: str
    transport: str
    src: str
    sport: int
    dst: str
    dport: int
    host: str | None
    protocol: str
    encrypted: bool
    frames: tuple[int, ...]
    time: float
    phase: str | None
    excerpt: str
    value: str = ""  # the matched bytes as text (hex when binary); masked in OUT.json unless asked for
    decrypted: bool = False  # found inside TLS with a key log (then ``encrypted`` too; encoding starts "tls>")
    app: str | None = None  # the sending app (package, or shared UID's name), from the phone's socket table
    uid: int | None = None  # ... and its UID; both None when unattributed (see scan/attribution.py)

    def to_json(self, *, show_identifiers: bool = False) -> dict[str, Any]:
        """``value`` is masked (as in the table) unless ``show_identifiers``: enough for a script to tell which
        of two IMEIs leaked, never the value itself."""
        return {
            "identifier": self.identifier, "encoding": self.encoding, "transport": self.transport,
            "src": self.src, "sport": self.sport, "dst": self.dst, "dport": self.dport, "host": self.host,
            "protocol": self.protocol, "encrypted": self.encrypted, "decrypted": self.decrypted,
            "frames": list(self.frames),
            "time": self.time, "phase": self.phase, "excerpt": self.excerpt,
            "value": self.value if show_identifiers else mask(self.value),
            "app": self.app, "uid": self.uid,
        }


@dataclass(frozen=True, slots=True)
class Flow:
    """A TCP connection or UDP conversation; ``src`` is the side that spoke first (the client)."""

    transport: str
    src: str
    sport: int
    dst: str
    dport: int
    host: str | None
    protocol: str
    encrypted: bool
    bytes: int  # bytes on the wire (frame lengths), both directions, as Wireshark's Conversations counts them
    frames: int
    first_frame: int
    first_time: float
    last_time: float
    decryption: str = ""  # TLS flows: "decrypted", "no-key" or "failed" (see phonehome.scan.tls)
    app: str | None = None  # the app that owned the socket, when the phone's socket table showed it
    uid: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "transport": self.transport, "src": self.src, "sport": self.sport, "dst": self.dst,
            "dport": self.dport, "host": self.host, "protocol": self.protocol, "encrypted": self.encrypted,
            "bytes": self.bytes, "frames": self.frames, "first_frame": self.first_frame,
            "first_time": self.first_time, "last_time": self.last_time, "decryption": self.decryption or None,
            "app": self.app, "uid": self.uid,
        }


@dataclass(frozen=True)
class CaptureInfo:
    """What was read, and what could not be (the scan reports it instead of passing silently)."""

    path: str
    format: str
    link_types: tuple[int, ...]
    file_bytes: int
    packets: int
    first_time: float | None
    last_time: float | None
    non_ip_packets: int
    undecodable_packets: int
    snaplen_cut_packets: int
    tcp_gaps: int
    tcp_gap_bytes: int
    retransmitted_bytes: int
    dropped_fragments: int
    scan_seconds: float
    #: bytes of retransmitted or overlapping TCP segments that differ from the copy already delivered for their
    #: range (or are older than what reassembly keeps to compare with): those segments were scanned as well
    #: (but in a direction of TLS being decrypted: another copy of ciphertext is not decrypted)
    conflicting_bytes: int = 0
    #: conflicting bytes past the bound per direction (reassembly.MAX_CONFLICT_BYTES_PER_STREAM): not scanned
    conflicting_unscanned_bytes: int = 0
    #: packets and bytes that could not be decoded, per reason (unknown link type, unknown ethertype,
    #: unsupported encapsulation, truncated, encrypted 802.11): ``{reason: {"packets": n, "bytes": n}}``
    undecoded: dict[str, dict[str, int]] = field(default_factory=dict)
    #: phases that hold undecodable packets and not one decoded one
    undecoded_phases: tuple[str, ...] = ()
    #: packets decoded from inside a tunnel or an 802.11/PPPoE/MPLS frame
    tunnelled_packets: int = 0

    @property
    def decode_problem(self) -> str | None:
        """Why this capture proves nothing (a large share, or a whole phase, could not be decoded), or None."""
        return undecoded_problem(self.undecoded, self.packets, phases_without_decoded=self.undecoded_phases)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "format": self.format, "link_types": list(self.link_types),
            "file_bytes": self.file_bytes, "packets": self.packets, "first_time": self.first_time,
            "last_time": self.last_time, "non_ip_packets": self.non_ip_packets,
            "undecodable_packets": self.undecodable_packets, "snaplen_cut_packets": self.snaplen_cut_packets,
            "tcp_gaps": self.tcp_gaps, "tcp_gap_bytes": self.tcp_gap_bytes,
            "retransmitted_bytes": self.retransmitted_bytes, "conflicting_bytes": self.conflicting_bytes,
            "conflicting_unscanned_bytes": self.conflicting_unscanned_bytes,
            "dropped_fragments": self.dropped_fragments,
            "undecoded": self.undecoded, "undecoded_phases": list(self.undecoded_phases),
            "tunnelled_packets": self.tunnelled_packets, "scan_seconds": round(self.scan_seconds, 3),
        }


@dataclass(frozen=True)
class ScanResult:
    """Everything one scan found; ``to_json()`` is the OUT.json of ``phonehome scan --json``."""

    capture: CaptureInfo
    findings: tuple[Finding, ...]
    flows: Sequence[Flow]  # a FlowTable from a scan: records off the heap, each Flow made when read
    warnings: tuple[str, ...] = ()
    phases: tuple[Phase, ...] = ()
    attribution: Attribution | None = None  # which app sent what: set by scan.attribution.attribute()

    @property
    def cleartext_findings(self) -> tuple[Finding, ...]:
        """The findings that are leaks: identifiers readable on the wire."""
        return tuple(f for f in self.findings if not f.encrypted)

    @property
    def decrypted_findings(self) -> tuple[Finding, ...]:
        """Identifiers found inside TLS with a key log: not cleartext leaks, but who received them."""
        return tuple(f for f in self.findings if f.decrypted)

    def tls_coverage(self) -> dict[str, Any]:
        """TLS flows, decrypted, without a key and failed, overall and per phase."""
        return tls.coverage(self.flows, self.phases)

    def in_phase(self, name: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.phase == name)

    def write_json(self, handle: IO[str], *, show_identifiers: bool = False) -> None:
        """Write :meth:`to_json` to ``handle`` one finding/flow at a time (a 2 GB capture has ~15,000 flows:
        building the whole document first would double the scan's peak memory)."""
        handle.write('{\n  "capture": ' + json.dumps(self._capture_json(), indent=2).replace("\n", "\n  "))
        for key, items in (("findings", (f.to_json(show_identifiers=show_identifiers) for f in self.findings)),
                           ("flows", (f.to_json() for f in self.flows))):
            handle.write(f',\n  "{key}": [')
            for index, item in enumerate(items):
                handle.write(("," if index else "") + "\n    " + json.dumps(item))
            handle.write("\n  ]")
        if self.attribution is not None:
            handle.write(',\n  "attribution": ' + json.dumps(self.attribution.to_json(), indent=2).replace("\n", "\n  "))
        handle.write("\n}\n")

    def to_json(self, *, show_identifiers: bool = False) -> dict[str, Any]:
        """The OUT.json document: ``{"capture": {...}, "findings": [...], "flows": [...]}``."""
        out = {"capture": self._capture_json(),
               "findings": [f.to_json(show_identifiers=show_identifiers) for f in self.findings],
               "flows": [f.to_json() for f in self.flows]}
        if self.attribution is not None:
            out["attribution"] = self.attribution.to_json()
        return out

    def _capture_json(self) -> dict[str, Any]:
        capture = self.capture.to_json()
        capture["warnings"] = list(self.warnings)
        capture["tls"] = self.tls_coverage()
        if self.phases:
            capture["phases"] = [{"name": p.name, "start": p.start, "end": p.end} for p in self.phases]
        return capture


# --- phases -------------------------------------------------------------------------------------------------


def load_phases(path: str | os.PathLike[str]) -> tuple[Phase, ...]:
    """Read a ``--phases`` JSON file: a list of ``{name, start, end}`` in capture time."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(source, "phases file not found", fix="pass the path of an existing PHASES.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(source, f"cannot read phases file: {exc}", fix=_FIX_PHASES) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"invalid JSON: {exc.msg}", where=f"line {exc.lineno}", fix=_FIX_PHASES) from None
    return parse_phases(data, source=source)


def parse_phases(data: object, *, source: str = "phases") -> tuple[Phase, ...]:
    """Validate already-loaded phases (``[{name, start, end}, ...]``)."""
    if not isinstance(data, list):
        raise InputError(source, "phases must be a JSON list", fix=_FIX_PHASES)
    phases = []
    for index, item in enumerate(data):
        where = f"[{index}]"
        if not isinstance(item, dict) or not {"name", "start", "end"} <= set(item):
            raise InputError(source, "each phase needs 'name', 'start' and 'end'", where=where, fix=_FIX_PHASES)
        name, start, end = item["name"], item["start"], item["end"]
        if not isinstance(name, str) or not name:
            raise InputError(source, "phase name must be a non-empty string", where=f"{where}.name",
                             fix=_FIX_PHASES)
        for key, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InputError(source, f"phase {key} must be a number (capture time in seconds)",
                                 where=f"{where}.{key}", fix=_FIX_PHASES)
        if end < start:
            raise InputError(source, f"phase '{name}' ends before it starts", where=where,
                             fix="swap start and end")
        phases.append(Phase(name, float(start), float(end)))
    return tuple(phases)


# --- mutable scan state ---------------------------------------------------------------------------------------


class _Direction:
    """One direction of a flow while scanning."""

    __slots__ = (
        "decoder",
        "done",
        "dport",
        "dst",
        "fin",
        "flow",
        "frames",
        "head",
        "head_start",
        "held",
        "late",
        "offsets",
        "opaque",
        "opaque_run",
        "peeled",
        "pos",
        "short_header",
        "sport",
        "src",
        "stream",
        "times",
    )

    flow: _Flow  # the flow it is a direction of: set by Scanner._new_flow, which makes both

    def __init__(self, src: bytes, sport: int, dst: bytes, dport: int, stream: Stream | None) -> None:
        self.src, self.sport, self.dst, self.dport = src, sport, dst, dport
        self.stream = stream
        self.decoder: StreamDecoder | None = None
        self.done = False  # encrypted: nothing more to scan
        self.opaque = False  # done, and its packets are only counted (the scan loop's fast path)
        self.head = b""
        self.head_start = 0  # the stream offset where head begins (past an HTTP CONNECT, the tunnel's start)
        self.offsets: list[int] = []
        self.frames: list[int] = []
        self.times: list[float] = []
        self.pos = 0
        self.peeled = 0
        self.fin = False
        self.held = 0  # bytes its decoder buffers (counted against MAX_DECODER_BYTES_TOTAL)
        self.short_header = b""  # UDP: the first bytes of the last datagram (QUIC's connection ID, ESP's SPI)
        self.opaque_run = 0  # UDP: datagrams in a row that look like QUIC's or ESP's (Scanner._opaque_datagram)
        self.late = 0  # TCP: bytes scanned after the connection closed (Scanner._late)


class _Flow:
    __slots__ = (
        "bytes",
        "client",
        "closed",
        "dns_name",
        "encrypted",
        "first_frame",
        "first_time",
        "frames",
        "http_host",
        "ident",
        "last_time",
        "protocol",
        "quic_crypto",
        "quic_frames",
        "quic_seen",
        "quic_time",
        "server",
        "sni",
        "transport",
    )

    def __init__(self, ident: int, transport: str, client: _Direction, server: _Direction, frame: int,
                 time: float) -> None:
        self.ident = ident
        self.transport = transport
        self.client = client  # client -> server
        self.server = server  # server -> client
        self.protocol = PROTO_UNKNOWN
        self.encrypted = False
        self.bytes = 0
        self.frames = 0
        self.first_frame = frame
        self.first_time = time
        self.last_time = time
        self.sni: str | None = None
        self.http_host: str | None = None
        self.dns_name: str | None = None
        self.closed = False
        # a QUIC flow's client Initials until its ClientHello is whole (see _quic_initial)
        self.quic_seen = 0
        self.quic_crypto = _NO_CRYPTO  # most flows never have any: two empty lists per flow add up
        self.quic_frames = _NO_INTS
        self.quic_time = 0.0


@dataclass
class _FindingState:
    identifier: str
    encoding: str
    flow: _Flow
    direction: _Direction
    protocol: str
    phase: str | None
    excerpt: str
    value: str
    frames: set[int] = field(default_factory=set)
    time: float = math.inf


# --- the scanner ------------------------------------------------------------------------------------------------


class Scanner:
    """One scan of one capture. Use :func:`scan_capture`."""

    def __init__(self, identifiers: Identifiers, *, phases: Sequence[Phase] = (),
                 matcher: Matcher | None = None, keylog: KeyLog | None = None, fast_path: bool = True) -> None:
        self.matcher = matcher if matcher is not None else build_matcher(identifiers)
        self.xor = xor_finder(self.matcher)
        self.tls = tls.TlsDecryption(keylog, overlap=self.matcher.overlap)
        self.phases = tuple(phases)
        self.budget = Budget()
        self.defrag = Defragmenter()
        self.flows: dict[tuple[int, bytes, bytes, int, int], tuple[_Flow, _Direction]] = {}
        #: flows whose state is kept, by number (the order they began in); the others are records in ``table``
        self.live: dict[int, _Flow] = {}
        self.table = FlowTable()
        self.flow_count = 0
        self.next_sweep = MAX_LIVE_FLOWS  # len(live) past which _evict runs
        self.evicted_active = 0  # flows let go before they were over (_evict), to bound memory
        self.findings: dict[tuple[int, str, str, str | None], _FindingState] = {}
        self.dns_names: dict[bytes, str] = {}
        #: the per-packet fast path's lookups (see Scanner.scan), by the raw bytes of (src, dst, sport, dport)
        #: as they sit in the packet: every TCP direction until its connection is closed (opaque ones for good, as
        #: the UDP flows known to be encrypted)
        self.tcp_directions: dict[bytes, _Direction] = {}
        self.opaque_udp: dict[bytes, _Flow] = {}
        #: False sends every packet through the general path but those of opaque flows (the tests compare both)
        self.fast_path = fast_path
        self.non_ip = 0
        self.undecoded = Undecoded()
        self.tunnelled = 0
        self.warnings: list[str] = []
        self.unsupported_links: dict[int, int] = {}
        self.decode_problems: dict[str, int] = {}
        self.decoder_held = 0
        self.shed = 0
        self.peel_cache: OrderedDict[bytes, _Peeled] = OrderedDict()
        self.peel_cache_bytes = 0
        self.frame_data, self.frame_ip = b"", 0  # the frame in the general path, and where its IP header starts
        self.late_unscanned = 0  # bytes sent after their TCP connection closed, past the bound (Scanner._late)

    # --- packets ----------------------------------------------------------------------------------------------

    def scan(self, path: str | os.PathLike[str], *, progress: Callable[[int], None] | None = None) -> ScanResult:
        """Scan the capture at ``path``; ``progress`` hears the file offset read so far, every few MiB."""
        # the scan makes and drops a few objects per packet, nearly none in cycles: a young-generation collection
        # every 700 allocations (the default) is ~4 % of a capture of short connections, every 10,000 is noise
        threshold = gc.get_threshold()
        gc.set_threshold(max(threshold[0], GC_YOUNG_THRESHOLD), *threshold[1:])
        try:
            return self._scan(path, progress)
        finally:
            gc.set_threshold(*threshold)

    def _scan(self, path: str | os.PathLike[str], progress: Callable[[int], None] | None) -> ScanResult:
        started = _time.monotonic()
        reader = CaptureReader(path, progress=progress)
        self.tls.capture_secrets = reader.secrets
        first_time: float | None = None
        last_time = 0.0
        frame = 0
        flows = self.flows
        defrag = self.defrag
        tcp_directions, opaque_udp = self.tcp_directions, self.opaque_udp
        for ts, link, data, orig in reader:
            frame += 1
            if first_time is None and link >= 0:
                first_time = ts
            last_time = ts
            off = 14 if link == 1 and data[12:14] == b"\x08\x00" else ip_offset(link, data)
            if off < 0:  # not plain IP: a tunnel, 802.11, PPPoE, MPLS... or nothing phonehome can read
                inner = self._from_link(link, data, orig, ts)
                if inner is None:
                    continue
                data, off = inner
            if len(data) < off + 20:
                self.undecoded.add(f"{tunnels.REASON_TRUNCATED}: IP header", orig, self._phase(ts))
                continue
            # the fast path, for IPv4 without options and not fragmented and IPv6 without extension headers: a
            # packet of a flow known to be encrypted costs a slice and a lookup; a TCP segment of a known
            # connection goes to _known_segment. A SYN (it may open a new connection on a known 4-tuple), and
            # whatever the fast path leaves, takes the general path below.
            first = data[off]
            if first == 0x45 and not data[off + 6] & 0x3F and not data[off + 7]:  # MF clear, offset 0
                proto, key, tcp = data[off + 9], data[off + 12:off + 24], off + 20
            elif first >> 4 == 6:
                proto, key, tcp = data[off + 6], data[off + 8:off + 44], off + 40
            else:
                proto = -1
            if proto == PROTO_TCP:
                direction = tcp_directions.get(key)
                if direction is not None and len(data) > tcp + 13 and not data[tcp + 13] & TCP_SYN:
                    if direction.opaque:
                        opaque = direction.flow
                        opaque.frames += 1
                        opaque.bytes += orig
                        opaque.last_time = ts
                        continue
                    if self._known_segment(direction, data, off, tcp, orig, ts, frame):
                        continue
            elif proto == PROTO_UDP and len(data) >= tcp + 8:  # a whole UDP header: the key holds both ports
                known = opaque_udp.get(key)
                if known is not None:
                    known.frames += 1
                    known.bytes += orig
                    known.last_time = ts
                    continue
            self.frame_data, self.frame_ip = data, off  # the link header, for DHCP (the general path only)
            decoded = decode_ip(data, off, defrag, ts, frame)
            if decoded is None:
                # an IP fragment waiting for the rest, or not TCP/UDP (ICMP...), or malformed, or a tunnel
                decoded = self._from_ip(data, off, orig, ts, frame)
                if decoded is None:
                    continue
            (proto, src, dst, sport, dport, payload, seq, flags), frag_frames = decoded
            if proto == PROTO_UDP and (dport in TUNNEL_UDP_PORTS or sport in TUNNEL_UDP_PORTS):
                decoded = self._from_udp(decoded, orig, ts, frame)
                if decoded is None:
                    continue
                (proto, src, dst, sport, dport, payload, seq, flags), frag_frames = decoded
            entry = flows.get((proto, src, dst, sport, dport))
            if entry is None:
                entry = self._new_flow(proto, src, dst, sport, dport, frame, ts, flags)
            flow, direction = entry
            if proto == PROTO_TCP and flags & 0x12 == TCP_SYN and _carried_data(flow):
                # a bare SYN on a flow that already carried data: the 4-tuple reused by a new connection
                flow, direction = self._new_flow(proto, src, dst, sport, dport, frame, ts, flags)
            flow.frames += 1
            flow.bytes += orig
            flow.last_time = ts
            if direction.done:
                if flow.protocol == PROTO_ESP:  # a VPN in UDP: whatever the phone sends may be inside, unread
                    self.undecoded.add(tunnels.REASON_IPSEC, orig, self._phase(ts))
                continue
            if proto == PROTO_TCP:
                self._tcp(flow, direction, payload, seq, flags, frame, ts)
            else:
                self._udp(flow, direction, payload, frag_frames or [frame], ts)
        self.defrag.finish()
        unsupported = sum(self.unsupported_links.values())
        if unsupported and unsupported == reader.packets:
            names = ", ".join(str(link) for link in sorted(self.unsupported_links))
            raise InputError(reader.path, f"no packet could be decoded: link type {names} is not supported",
                             fix="capture with a supported link type: "
                                 f"{', '.join(sorted(set(SUPPORTED_LINK_TYPES.values())))}")
        for flow in self.live.values():
            self._close(flow)
        for flow in list(self.live.values()):
            self._retire(flow)
        return self._result(reader, first_time, last_time if first_time is not None else None,
                            _time.monotonic() - started)

    # --- the fast path ----------------------------------------------------------------------------------------

    def _known_segment(self, d: _Direction, data: bytes, off: int, tcp: int, orig: int, ts: float,
                       frame: int) -> bool:
        """The fast path's part for a TCP segment (not a SYN) of a known connection that is not opaque, its IP
        header at ``off`` (IPv4 without options or IPv6 without extension headers) and its TCP header at ``tcp``;
        False when the general path must take it (it then does everything, as if this had not been called).

        The segment is counted; a pure ACK ends there; the next segment in order goes straight to its direction's
        decoder (:meth:`_in_order_segment`); one out of order, a retransmission, FIN and RST go to :meth:`_tcp`,
        exactly as from the general path. It falls back for a TCP header that does not fit, a direction stopped
        (TLS server side while the client's handshake is read) and with ``fast_path`` off.
        """
        if d.done or not self.fast_path:
            return False
        n = len(data)
        # the bounds packets.decode_ip and its _transport take
        if tcp - off == 20:
            total, seq, data_offset, flags = _ipv4_tcp_fields(data, off)
            end = off + total if total >= 20 and off + total <= n else n
        else:
            length, seq, data_offset, flags = _ipv6_tcp_fields(data, off)
            end = tcp + length if length and tcp + length <= n else n
        start = tcp + (data_offset >> 4) * 4
        if start < tcp + 20 or start > end:
            return False
        flow = d.flow
        flow.frames += 1
        flow.bytes += orig
        flow.last_time = ts
        if flags & (TCP_FIN | TCP_RST):
            self._tcp(flow, d, data[start:end], seq, flags, frame, ts)
        elif start < end:
            stream = d.stream
            if stream is not None and stream.next_seq == seq and not stream.pending:
                payload = data[start:end]
                stream.next_seq = (seq + end - start) & 0xFFFFFFFF
                stream.recent.append(payload)  # Stream.delivered, inline
                stream.recent_bytes += end - start
                budget = self.budget
                budget.recent += end - start
                if stream.recent_bytes > RECENT_TRIM_BYTES or budget.recent > budget.recent_cap:
                    stream.trim_recent()
                self._in_order_segment(flow, d, payload, frame, ts)
            else:
                self._tcp(flow, d, data[start:end], seq, flags, frame, ts)
        return True

    def _in_order_segment(self, flow: _Flow, d: _Direction, data: bytes, frame: int, ts: float) -> None:
        """The next bytes of a direction's stream, from the fast path: :meth:`_deliver`, or, when its decoder only
        buffers them (the middle of a large message), the part of it that then does anything."""
        decoder = d.decoder
        if decoder is None or decoder.switch_to is not None or decoder.addresses or decoder.warnings:
            self._deliver(flow, d, data, frame, ts, False)
            return
        held = decoder.buffer(data)
        if not held:
            self._deliver(flow, d, data, frame, ts, False)
            return
        d.offsets.append(d.pos)
        d.frames.append(frame)
        d.times.append(ts)
        d.pos += len(data)
        if self.decoder_held + held - d.held > MAX_DECODER_BYTES_TOTAL:
            self._fed(flow, d, decoder, [])
            return
        self.decoder_held += held - d.held
        d.held = held
        if decoder.host:
            flow.http_host = decoder.host

    def _forget_direction(self, d: _Direction) -> None:
        """Drop a closed direction from the fast path's lookup (unless a new connection took its 4-tuple)."""
        key = _raw_key(d)
        if self.tcp_directions.get(key) is d:
            del self.tcp_directions[key]

    # --- encapsulations (off the hot path: see .tunnels) ---------------------------------------------------------

    def _from_link(self, link: int, data: bytes, orig: int, ts: float) -> tuple[bytes, int] | None:
        """The IP packet of a frame that is not plain IP; None (counted) when there is none."""
        if link == NOT_A_PACKET:  # a pcapng block Wireshark numbers as a frame: counted in frame numbers only
            return None
        inner = tunnels.from_link(link, data)
        if isinstance(inner, str):
            if not inner:
                self.non_ip += 1
            elif inner.startswith(tunnels.REASON_LINK) and link not in SUPPORTED_LINK_TYPES:
                self.unsupported_links[link] = self.unsupported_links.get(link, 0) + 1
                self.undecoded.add(tunnels.REASON_LINK, orig, self._phase(ts))
            else:
                self.undecoded.add(inner, orig, self._phase(ts))
            return None
        self.tunnelled += 1
        return inner

    def _not_decoded(self, reason: str, orig: int, ts: float, *, control: bool = False) -> None:
        """A tunnel's inner packet that is not IP: counted under ``reason`` (undecodable), or as non-IP when
        there is none (ARP, LLDP inside the tunnel); ``control``: an IP packet of no TCP/UDP, uncounted without
        a reason (ICMP, a fragment waiting for the rest)."""
        if reason:
            self.undecoded.add(reason, orig, self._phase(ts))
        elif not control:
            self.non_ip += 1

    def _from_ip(self, data: bytes, off: int, orig: int, ts: float,
                 frame: int) -> tuple[Decoded, list[int] | None] | None:
        """The inner TCP/UDP packet of an IP tunnel (GRE, IP-in-IP, EtherIP, MPLS-in-IP); None otherwise."""
        inner = tunnels.from_ip(data, off)
        if isinstance(inner, str):
            self._not_decoded(inner, orig, ts)
            return None
        if inner[0] is data and inner[1] == off:  # not a tunnel: ICMP, a fragment waiting for the rest, ESP...
            self._not_decoded(tunnels.unscanned_protocol(data, off), orig, ts, control=True)
            return None
        self.tunnelled += 1
        found = decode_ip(inner[0], inner[1], self.defrag, ts, frame)
        if found is None:
            self._not_decoded(tunnels.unscanned_protocol(inner[0], inner[1]), orig, ts, control=True)
        return found

    def _from_udp(self, decoded: tuple[Decoded, list[int] | None], orig: int, ts: float,
                  frame: int) -> tuple[Decoded, list[int] | None] | None:
        """Unwrap VXLAN/Geneve datagrams (nested ones too); the datagram itself when it is no tunnel."""
        for _ in range(tunnels.MAX_DEPTH):
            _proto, _src, _dst, sport, dport, payload = decoded[0][:6]
            if decoded[0][0] != PROTO_UDP or not (dport in TUNNEL_UDP_PORTS or sport in TUNNEL_UDP_PORTS):
                return decoded
            inner = tunnels.from_udp(payload, sport, dport)
            if inner is None:
                return decoded
            if isinstance(inner, str):
                self._not_decoded(inner, orig, ts)
                return None
            self.tunnelled += 1
            found = decode_ip(inner[0], inner[1], self.defrag, ts, frame)
            if found is None:
                return self._from_ip(inner[0], inner[1], orig, ts, frame)
            decoded = found
        self.undecoded.add(f"{tunnels.REASON_ENCAPSULATION}: tunnels nested too deep", orig, self._phase(ts))
        return None

    def _new_flow(self, proto: int, src: bytes, dst: bytes, sport: int, dport: int, frame: int, ts: float,
                  flags: int) -> tuple[_Flow, _Direction]:
        tcp = proto == PROTO_TCP
        # a SYN+ACK seen first means we are looking at the server's side of a connection
        if tcp and flags & 0x12 == 0x12:
            src, dst, sport, dport = dst, src, dport, sport
        client = _Direction(src, sport, dst, dport, Stream(self.budget) if tcp else None)
        server = _Direction(dst, dport, src, sport, Stream(self.budget) if tcp else None)
        flow = _Flow(self.flow_count, "tcp" if tcp else "udp", client, server, frame, ts)
        self.flow_count += 1
        client.flow = server.flow = flow
        # a reused 4-tuple: the old flow is over, its entries give way
        if tcp:
            self.tcp_directions[_raw_key(client)] = client
            self.tcp_directions[_raw_key(server)] = server
        else:
            self.opaque_udp.pop(_raw_key(client), None)
            self.opaque_udp.pop(_raw_key(server), None)
        self.live[flow.ident] = flow
        self.flows[(proto, src, dst, sport, dport)] = (flow, client)
        self.flows[(proto, dst, src, dport, sport)] = (flow, server)
        if len(self.live) > self.next_sweep:
            self._evict(ts, flow)
        if tcp and flags & 0x12 == 0x12:
            return flow, server
        return flow, client

    def _evict(self, now: float, keep: _Flow) -> None:
        """More than :data:`MAX_LIVE_FLOWS` flows have state: let go of the older half, by what is over first.

        A flow let go is closed (what its directions hold is scanned, as at the end of the capture) and written to
        ``table``; a packet of its 4-tuple after that begins a new flow, as a flow timeout does in Zeek or Suricata.
        First go flows that are over (TCP connections closed, DNS lookups answered) :data:`LINGER_SECONDS` ago,
        then UDP flows idle for :data:`IDLE_SECONDS`, then flows over more recently, least recently active first;
        only then, and counted (a warning), flows still going: more than that many at once. A TCP connection
        that is not closed is one of those, however long idle: what its decoder holds (a WebSocket's state, HPACK,
        a TLS session being decrypted) would be lost to its next packets, begun as a new flow mid-stream. Never
        ``keep``, the flow just begun (a clock set back can make it look older than the rest).
        """
        def rank(flow: _Flow) -> int:
            idle = now - flow.last_time
            over = flow.closed or (flow.protocol == PROTO_DNS and flow.frames >= 2)
            if over and idle >= LINGER_SECONDS:
                return 0
            if idle >= IDLE_SECONDS and flow.transport == "udp":  # datagrams are scanned each on its own
                return 1
            return 2 if over else 3

        ranked = sorted((rank(flow), flow.last_time, flow.ident) for flow in self.live.values() if flow is not keep)
        for order, _, ident in ranked[:len(ranked) + 1 - MAX_LIVE_FLOWS // 2]:
            flow = self.live[ident]
            if order == 3:
                self.evicted_active += 1
            self._close(flow)
            self._retire(flow)
        self.next_sweep = len(self.live) + MAX_LIVE_FLOWS // 2

    def _retire(self, flow: _Flow) -> None:
        """Write a closed flow to ``table`` and drop its state and lookups (unless a new flow took them)."""
        del self.live[flow.ident]
        proto = PROTO_TCP if flow.transport == "tcp" else PROTO_UDP
        for d in (flow.client, flow.server):
            key = (proto, d.src, d.dst, d.sport, d.dport)
            entry = self.flows.get(key)
            if entry is not None and entry[0] is flow:
                del self.flows[key]
            raw = _raw_key(d)
            if self.tcp_directions.get(raw) is d:
                del self.tcp_directions[raw]
            if self.opaque_udp.get(raw) is flow:
                del self.opaque_udp[raw]
        client = flow.client
        self.table.add(flow.ident, transport=flow.transport, src=client.src, sport=client.sport, dst=client.dst,
                       dport=client.dport, named=_named(flow), protocol=flow.protocol, encrypted=flow.encrypted,
                       decryption=self.tls.outcome(flow.ident) if flow.protocol == PROTO_TLS else "",
                       size=flow.bytes, frames=flow.frames, first_frame=flow.first_frame,
                       first_time=flow.first_time, last_time=flow.last_time)
        self.tls.retire(flow.ident)
        # each direction points back at its flow: a cycle the garbage collector would have to find, thousands of
        # times in a capture of short connections (~6 % of its scan); undone, the flow goes when its last user does
        del flow.client.flow, flow.server.flow

    def _tcp(self, flow: _Flow, d: _Direction, payload: bytes, seq: int, flags: int, frame: int,
             ts: float) -> None:
        stream = d.stream
        if stream is None:
            if payload and flow.closed and not d.done:
                self._late(flow, d, payload, frame, ts)
            return
        if flags & TCP_SYN:
            stream.syn(seq)
            if not payload:
                return
            seq = (seq + 1) & 0xFFFFFFFF
        if payload:
            for data, pframe, ptime, hole in stream.add(seq, payload, frame, ts):
                self._deliver(flow, d, data, pframe, ptime, hole)
                if d.done:
                    break
            if stream.conflicts:
                self._conflicting(flow, d, stream)
        if flags & (TCP_FIN | TCP_RST):
            d.fin = True
            if flags & TCP_RST or (flow.client.fin and flow.server.fin):
                self._close(flow)

    def _late(self, flow: _Flow, d: _Direction, payload: bytes, frame: int, ts: float) -> None:
        """Bytes sent on a TCP connection after it closed (FIN both ways, or RST): a late retransmission, or new
        data on the 4-tuple with no SYN seen (an evasion: RST, then a SYN/ACK and a whole exchange). They left the
        phone, so each segment is scanned as a unit of its own, its findings citing its frame (a retransmission's
        merge with the first copy's); past :data:`MAX_LATE_BYTES_PER_DIRECTION` they are counted and said."""
        if d.late + len(payload) > MAX_LATE_BYTES_PER_DIRECTION:
            self.late_unscanned += len(payload)
            return
        d.late += len(payload)
        self._scan_units(flow, d, [Unit(payload, 0, len(payload), True, "", flow.protocol, peel=True)],
                         frames=[frame], time=ts)

    def _conflicting(self, flow: _Flow, d: _Direction, stream: Stream) -> None:
        """Segments whose bytes differ from the copy the stream delivered for their range (.reassembly): both
        copies left the phone, whichever one the receiver kept, so each such segment is scanned too, as a unit of
        its own in the direction's protocol, its findings citing its frame. Not in a direction that is ciphertext
        (done, or being decrypted: another copy of a record cannot be decrypted out of its sequence)."""
        conflicts, stream.conflicts = stream.conflicts, []
        decoder = d.decoder
        if d.done or isinstance(decoder, tls.TlsDecoder):
            return
        protocol = decoder.protocol if decoder is not None else flow.protocol
        for data, frame, ts in conflicts:
            self._scan_units(flow, d, [Unit(data, 0, len(data), True, "", protocol, peel=True)], frames=[frame],
                             time=ts)

    def _udp(self, flow: _Flow, d: _Direction, payload: bytes, frames: list[int], ts: float) -> None:
        if not payload:
            return
        if flow.encrypted:  # a QUIC flow still collecting its client's Initial packets, or a DTLS handshake
            if flow.protocol == PROTO_DTLS:
                self._dtls(flow, d, payload, frames, ts)
                return
            if d is flow.client and classify_datagram(payload) == PROTO_QUIC:
                self._quic_initial(flow, d, payload, frames, ts)
            return
        encrypted = classify_datagram(payload)
        if encrypted == PROTO_QUIC and d is flow.client:
            flow.encrypted = True
            flow.protocol = PROTO_QUIC
            self._quic_initial(flow, d, payload, frames, ts)
            return
        if encrypted == PROTO_DTLS:
            flow.encrypted = True
            flow.protocol = PROTO_DTLS
            self._dtls(flow, d, payload, frames, ts)
            return
        if encrypted:
            self._mark_encrypted(flow, encrypted)
            return
        if self._opaque_datagram(flow, d, payload):
            return
        n = len(payload)
        protocol = PROTO_UNKNOWN
        if d.sport in DHCP_PORTS and d.dport in DHCP_PORTS:
            blanked = dhcp_link_addresses_blanked(payload, self.frame_data[:self.frame_ip])
            if blanked is not None:
                flow.protocol = protocol = PROTO_DHCP
                payload = blanked
        elif d.sport in DHCPV6_PORTS and d.dport in DHCPV6_PORTS:
            blanked = dhcpv6_link_addresses_blanked(payload, self.frame_data[:self.frame_ip])
            if blanked is not None:
                flow.protocol = protocol = PROTO_DHCPV6
                payload = blanked
        if d.sport in DNS_PORTS or d.dport in DNS_PORTS:
            message = parse_dns(payload)
            if message is not None:
                flow.protocol = PROTO_DNS
                for name, addr in message.addresses:
                    self.dns_names[addr] = name
                if message.names and flow.dns_name is None:
                    flow.dns_name = message.names[0]
                units = [Unit(payload, 0, n, True, "", PROTO_DNS),
                         Unit("\n".join(message.names).encode("latin-1"), 0, n, False, "", PROTO_DNS, peel=True)]
                units += [Unit(text, 0, n, False, "", PROTO_DNS, peel=True) for text in message.texts]
                self._scan_units(flow, d, units, frames=frames, time=ts)
                return
        self._scan_units(flow, d, [Unit(payload, 0, n, True, "", protocol, peel=True)], frames=frames, time=ts)

    def _opaque_datagram(self, flow: _Flow, d: _Direction, payload: bytes) -> bool:
        """Count a datagram that looks like QUIC after its handshake (UDP 443) or ESP in UDP (4500), and call the
        flow encrypted once a direction has sent enough of them in a row (True: then this one is not scanned).
        Until then they are scanned as any datagram; one that does not look so starts the count again, one too
        short to judge (QUIC's ACKs, between a download's full packets) neither counts nor resets. ESP is a
        VPN's: its packets from then on are counted as undecoded (encrypted IPsec), as raw ESP's are, so a capture
        that is mostly VPN proves nothing."""
        previous, d.short_header = d.short_header, payload[:DATAGRAM_HEADER_BYTES]
        verdict: bool | None = False
        if QUIC_PORT in (d.sport, d.dport):
            verdict, protocol, needed = quic_short_header(payload, previous), PROTO_QUIC, QUIC_SHORT_RUN
        elif IPSEC_NAT_T_PORT in (d.sport, d.dport):
            verdict, protocol, needed = esp_in_udp(payload, previous), PROTO_ESP, ESP_RUN
        if verdict is None:  # the header, too short to judge (an ACK, a voice packet): scanned, the count kept
            return False
        if not verdict:
            d.opaque_run = 0
            return False
        d.opaque_run += 1
        if d.opaque_run < needed:
            return False
        self._mark_encrypted(flow, protocol)
        if protocol == PROTO_ESP:  # counted as undecoded, as raw ESP is: its packets take the general path
            for direction in (flow.client, flow.server):
                self.opaque_udp.pop(_raw_key(direction), None)
                direction.opaque = False
        return True

    def _quic_initial(self, flow: _Flow, d: _Direction, payload: bytes, frames: list[int], ts: float) -> None:
        """Decrypt a client Initial (its keys are public) and scan the ClientHello once it is whole."""
        flow.quic_seen += 1
        crypto = quic_initial_crypto(payload)
        if crypto:
            if not flow.quic_frames:
                flow.quic_time = ts
                flow.quic_crypto, flow.quic_frames = [], []
            flow.quic_crypto += crypto
            flow.quic_frames += frames
            found = client_hello_from_crypto(flow.quic_crypto)
            if found is not None:
                handshake, hello = found
                flow.sni = hello.sni or flow.sni
                self._scan_units(flow, d, [Unit(handshake, 0, len(handshake), False, "", PROTO_QUIC_HANDSHAKE)],
                                 frames=flow.quic_frames, time=flow.quic_time)
                self._mark_encrypted(flow, PROTO_QUIC)
                return
        if flow.quic_seen >= MAX_QUIC_INITIALS:
            self._mark_encrypted(flow, PROTO_QUIC)

    def _mark_encrypted(self, flow: _Flow, protocol: str) -> None:
        flow.encrypted = True
        flow.protocol = protocol
        flow.quic_crypto, flow.quic_frames = _NO_CRYPTO, _NO_INTS
        for d in (flow.client, flow.server):
            self.decoder_held -= d.held
            d.held = 0
            if flow.transport == "udp":
                self.opaque_udp[_raw_key(d)] = flow
            d.opaque = True
            d.done = True
            if d.stream is not None:
                d.stream.close()  # what it held counts against the shared budgets no more
            d.stream = None
            d.decoder = None
            d.head = b""
            d.offsets, d.frames, d.times = _NO_INTS, _NO_INTS, _NO_FLOATS

    # --- TCP streams ------------------------------------------------------------------------------------------

    def _deliver(self, flow: _Flow, d: _Direction, data: bytes, frame: int, ts: float, hole: bool) -> None:
        if hole and d.decoder is not None:
            self._scan_units(flow, d, d.decoder.hole())
        d.offsets.append(d.pos)
        d.frames.append(frame)
        d.times.append(ts)
        d.pos += len(data)
        decoder = d.decoder
        if decoder is None:
            d.head += data
            decoder = self._start_decoder(flow, d)
            if decoder is None:
                return
            if d.head_start:
                decoder.offset = d.head_start
            data, d.head = d.head, b""
        self._fed(flow, d, decoder, decoder.feed(data))

    def _fed(self, flow: _Flow, d: _Direction, decoder: StreamDecoder, units: list[Unit]) -> None:
        """What follows feeding bytes to ``d``'s decoder: its memory counted, a protocol switch, a host name, DNS
        answers and warnings taken, its ``units`` scanned, encryption noticed."""
        held = decoder.held
        self.decoder_held += held - d.held
        d.held = held
        if self.decoder_held > MAX_DECODER_BYTES_TOTAL:
            self._shed_decoder_memory()
        if decoder.switch_to == PROTO_WEBSOCKET:
            units += self._switch_to_websocket(flow, d, decoder)
        elif decoder.switch_to == PROTO_HTTP2:  # Upgrade: h2c
            if decoder.host:
                flow.http_host = decoder.host
            h2 = d.decoder = Http2Decoder(decoder.offset, decode_content=layers.decode_content)
            flow.protocol = PROTO_HTTP2
            units += h2.feed(decoder.buf) if decoder.buf else []
            decoder = h2
        if decoder.host:
            flow.http_host = decoder.host
        if decoder.addresses:
            for name, addr in decoder.addresses:
                self.dns_names[addr] = name
            decoder.addresses.clear()
        if decoder.warnings:
            self._decoder_warnings(decoder)
        if units:
            self._scan_units(flow, d, units)
            self._trim(d)
        if decoder.switch_to == PROTO_TLS:  # the client's TLS handshake is over: the rest is ciphertext
            self._mark_encrypted(flow, PROTO_TLS)
        elif decoder.switch_to == PROTO_TUNNEL and d.decoder is decoder:
            self._tunnel(flow, d, decoder)

    def _tunnel(self, flow: _Flow, d: _Direction, old: StreamDecoder) -> None:
        """Past an HTTP CONNECT (a proxy) the stream carries TLS: classified anew from where it starts, as a
        stream of its own (TLS handshake, key logs, encrypted), its offsets kept so findings cite their frames."""
        rest = old.buf
        d.head_start = old.offset
        d.decoder = None
        self._account(d)
        d.head = rest
        decoder = self._start_decoder(flow, d)
        if decoder is not None:
            decoder.offset = d.head_start
            d.head = b""
            self._fed(flow, d, decoder, decoder.feed(rest))

    def _shed_decoder_memory(self) -> None:
        """Too many half-received messages held at once (many flows, huge bodies): scan the large ones as they
        are, raw, and let them go. Counted and reported, never silently dropped."""
        for threshold in (SHED_DIRECTION_BYTES, 1):  # the large holders first; everyone if that was not enough
            for flow in self.live.values():
                for d in (flow.client, flow.server):
                    if d.decoder is not None and d.held >= threshold:
                        self._scan_units(flow, d, d.decoder.hole())
                        self._account(d)
                        self.shed += 1
                if self.decoder_held <= MAX_DECODER_BYTES_TOTAL // 2:
                    return

    def _account(self, d: _Direction) -> None:
        """Re-count what ``d``'s decoder holds (after it was emptied or dropped)."""
        held = d.decoder.held if d.decoder is not None else 0
        self.decoder_held += held - d.held
        d.held = held

    def _decoder_warnings(self, decoder: StreamDecoder) -> None:
        for warning in decoder.warnings:
            self.decode_problems[warning] = self.decode_problems.get(warning, 0) + 1
        decoder.warnings.clear()

    def _start_decoder(self, flow: _Flow, d: _Direction) -> StreamDecoder | None:
        """Classify the direction by its first bytes; None while undecided or once found encrypted."""
        head = d.head
        kind = classify_stream(head)
        if not kind:
            return None
        if kind == PROTO_TLS:
            return self._tls_start(flow, d)
        if kind == PROTO_SSH:
            line_end = head.find(b"\n")
            if line_end < 0 and len(head) < 256:
                return None
            banner = head[:line_end + 1 if line_end >= 0 else 256]
            self._scan_units(flow, d, [Unit(banner, 0, len(banner), True, "", PROTO_SSH)])
            self._mark_encrypted(flow, PROTO_SSH)
            return None
        if kind == PROTO_UNKNOWN and flow.protocol in (PROTO_HTTP, PROTO_MQTT, PROTO_WEBSOCKET, PROTO_HTTP2):
            kind = flow.protocol
        if kind == PROTO_UNKNOWN and DNS_TCP_PORT in (d.sport, d.dport):
            kind = PROTO_DNS
        decoder = stream_decoder(kind, overlap=self.matcher.overlap)
        upgraded = flow.protocol == PROTO_WEBSOCKET and kind == PROTO_HTTP  # the flow already is WebSocket
        if (flow.protocol == PROTO_UNKNOWN or kind != PROTO_UNKNOWN) and not upgraded:
            flow.protocol = kind
        d.decoder = decoder
        return decoder

    def _tls_start(self, flow: _Flow, d: _Direction) -> StreamDecoder | None:
        """A TLS direction: the client's handshake records are read until encryption starts (.handshakes); when a
        key log holds the session's secrets, both directions are decrypted instead (.tls)."""
        head = d.head
        if len(head) >= 6 and head[0] == 22 and head[5] == 1:  # a handshake record holding a ClientHello
            hello = parse_client_hello(head)
            if hello is None and len(head) < MAX_CLIENT_HELLO_BYTES:
                return None  # wait for the rest of the ClientHello (modern ones span two segments)
            if hello is not None:
                flow.sni = hello.sni or flow.sni
            flow.encrypted = True
            flow.protocol = PROTO_TLS
            decrypting = self._tls_decoder(flow, d)
            if decrypting is not None:
                return decrypting
            other = flow.server if d is flow.client else flow.client
            self._stop_direction(other)  # the server's certificates... are not the phone's
            # and its packets take the fast path at once: only the client's handshake is still read
            other.opaque = True
            decoder = d.decoder = TlsHandshakeDecoder()
            return decoder
        if len(head) < 6:
            return None
        decrypting = self._tls_decoder(flow, d)  # the server's side of a session being decrypted
        if decrypting is not None:
            return decrypting
        other = flow.server if d is flow.client else flow.client
        if isinstance(other.decoder, TlsHandshakeDecoder):  # the client's handshake is still being read
            self._stop_direction(d)
            return None
        self._mark_encrypted(flow, PROTO_TLS)
        return None

    def _tls_decoder(self, flow: _Flow, d: _Direction) -> StreamDecoder | None:
        """Issue 11: with key logs (given, or in the capture), a direction of a session they hold secrets for is
        decrypted; None leaves the flow on the opaque path (one dict lookup per packet)."""
        if not self.tls.active:
            return None
        decoder = self.tls.decoder(flow.ident, from_client=d is flow.client, head=d.head, port=flow.client.dport)
        if decoder is not None:
            flow.encrypted = True
            flow.protocol = PROTO_TLS
            d.decoder = decoder
        return decoder

    def _stop_direction(self, d: _Direction) -> None:
        """Scan no more of one direction (the server's side of a TLS handshake) while the other goes on."""
        self.decoder_held -= d.held
        d.held = 0
        d.done = True
        if d.stream is not None:
            d.stream.close()
        d.stream = None
        d.decoder = None
        d.head = b""
        d.offsets, d.frames, d.times = _NO_INTS, _NO_INTS, _NO_FLOATS

    def _dtls(self, flow: _Flow, d: _Direction, payload: bytes, frames: list[int], ts: float) -> None:
        """Scan a DTLS datagram's cleartext handshake (ClientHello, PSK identity, certificates) until each side
        starts encrypting."""
        flow.quic_seen += 1  # datagrams looked at for a QUIC or DTLS handshake
        spans, started, hello_record = dtls_cleartext(payload)
        if hello_record:
            hello = parse_client_hello(hello_record)
            if hello is not None:
                flow.sni = hello.sni or flow.sni
        if spans:
            self._scan_units(flow, d, [Unit(payload[a:b], a, b, True, "", PROTO_DTLS_HANDSHAKE) for a, b in spans],
                             frames=frames, time=ts)
        if started:
            d.done = True
        if (flow.client.done and flow.server.done) or flow.quic_seen >= MAX_DTLS_HANDSHAKE_DATAGRAMS:
            self._mark_encrypted(flow, PROTO_DTLS)

    def _switch_to_websocket(self, flow: _Flow, d: _Direction, old: StreamDecoder) -> list[Unit]:
        ws = WebSocketDecoder(old.offset)
        d.decoder = ws
        flow.protocol = PROTO_WEBSOCKET
        return ws.feed(old.buf) if old.buf else []

    def _trim(self, d: _Direction) -> None:
        """Forget frame-map entries for stream bytes no decoder will report on again."""
        if len(d.offsets) < 4096 or d.decoder is None:
            return
        keep_from = d.decoder.offset - self.matcher.overlap
        index = bisect.bisect_right(d.offsets, keep_from) - 1
        if index > 0:
            del d.offsets[:index], d.frames[:index], d.times[:index]

    def _close(self, flow: _Flow) -> None:
        if flow.closed:
            return
        flow.closed = True
        for d in (flow.client, flow.server):
            if flow.transport == "tcp" and not d.opaque:  # its late packets: the general path, alike
                self._forget_direction(d)
            stream = d.stream
            if stream is not None and not d.done:
                for data, frame, ts, hole in stream.flush():
                    self._deliver(flow, d, data, frame, ts, hole)
                    if d.done:
                        break
                if stream.conflicts:
                    self._conflicting(flow, d, stream)
            if stream is not None:
                stream.close()  # its share of the reassembly budgets, freed now (not when the flow is retired)
            if d.done:
                continue
            if d.decoder is None and d.head:
                # too short to classify: scan as it is
                d.decoder = RawDecoder(overlap=self.matcher.overlap)
                data, d.head = d.head, b""
                self._scan_units(flow, d, d.decoder.feed(data))
            if d.decoder is not None:
                self._scan_units(flow, d, d.decoder.finish())
                if d.decoder.host:  # a message completed only now (cut short by the end of the capture)
                    flow.http_host = d.decoder.host
                if d.decoder.buf:
                    self._scan_units(flow, d, d.decoder.hole())
                self._decoder_warnings(d.decoder)
            d.stream = None
            d.decoder = None
            self._account(d)
            d.offsets, d.frames, d.times = _NO_INTS, _NO_INTS, _NO_FLOATS

    # --- matching ---------------------------------------------------------------------------------------------

    def _scan_units(self, flow: _Flow, d: _Direction, units: Iterable[Unit], *,
                    frames: list[int] | None = None, time: float | None = None) -> None:
        find = self.matcher.find
        for unit in units:
            data = unit.data
            if not data:
                continue
            peel = unit.peel and (len(data) <= PEEL_ALWAYS_BYTES or d.peeled < PEEL_BYTES_PER_DIRECTION)
            # a unit peeled whole has its matches remembered with its layers: a repeat is one lookup
            known = self._peeled(data) if peel and len(data) <= PEEL_INPUT_BYTES else None
            if known is None:
                matches = find(data)
            elif known.matches is None:
                matches = known.matches = find(data)
            else:
                matches = known.matches
            if matches:
                self._record(flow, d, unit, data, matches, "", frames, time)
            if not peel:
                continue
            sample = data[:PEEL_INPUT_BYTES]
            d.peeled += len(sample)
            # an identifier already found in these bytes is not found again inside a layer of them: the hex
            # layer of an MD5 hex digest, or the base64 layer of a base64 needle's match, is the same leak
            found: dict[str, list[str]] = {}
            for m in matches:
                found.setdefault(m.needle.identifier, []).append("")
            if known is None:
                known = self._peeled(sample)
            for chain, decoded, inner in known.layers:
                if inner and not TRANSPARENT_LAYERS.isdisjoint(chain.split(">")):
                    # unescaping leaves most text as it was: what the raw bytes already showed is no new finding
                    inner = [m for m in inner if decoded[m.start:m.end] not in sample]
                inner = [m for m in inner if not _covered(found.get(m.needle.identifier), chain)]
                if inner:
                    self._record(flow, d, unit, decoded, inner, chain, frames, time)
                    for m in inner:
                        found.setdefault(m.needle.identifier, []).append(chain)
            multi_byte = len(sample) <= XOR_MULTI_BYTE_UNIT_BYTES and d.peeled <= XOR_MULTI_BYTE_PER_DIRECTION
            for key in known.xor_keys(self.xor, sample, multi_byte):  # XOR-obfuscated (.obfuscation)
                chain = f"xor(0x{key.hex()})"
                decoded = xor_bytes(sample, key)
                inner = [m for m in find(decoded) if not _covered(found.get(m.needle.identifier), chain)]
                if inner:
                    self._record(flow, d, unit, decoded, inner, chain, frames, time)

    def _peeled(self, sample: bytes) -> _Peeled:
        """:meth:`_layers` of ``sample`` with the matches in each, remembered for samples seen again.

        Apps send the same body again and again (heartbeats, config polls, retries, DNS names): its layers,
        their matches and its own XOR keys are a function of its bytes alone, so a repeat costs a dict lookup
        instead of a peel. What is remembered is bounded (:data:`PEEL_CACHE_BYTES`); which findings the matches
        make stays per unit.
        """
        cache = self.peel_cache
        known = cache.get(sample)
        if known is not None:
            cache.move_to_end(sample)
            return known
        find = self.matcher.find
        peeled = [(chain, decoded, find(decoded)) for chain, decoded in self._layers(sample)]
        size = len(sample)
        if peeled:  # else nothing to XOR, nothing to count: most heads and many small bodies
            peeled += self._xored(sample, peeled)
            for _, decoded, _ in peeled:
                size += len(decoded)
        known = _Peeled(peeled, size)
        if known.size <= PEEL_CACHE_BYTES // 4:
            cache[sample] = known
            self.peel_cache_bytes += known.size
            while self.peel_cache_bytes > PEEL_CACHE_BYTES:
                self.peel_cache_bytes -= cache.popitem(last=False)[1].size
        return known

    def _xored(self, sample: bytes, peeled: list[tuple[str, bytes, list[Match]]]) -> list[tuple[str, bytes, list[Match]]]:
        """XOR obfuscation under another layer (``base64>xor(0x5a)``: XOR, then base64, is firmware's favourite):
        the layers of ``sample`` that decode to XOR-ed needles, with their matches. One-byte keys in every layer;
        keys of 2-4 bytes in small layers only (:data:`XOR_MULTI_BYTE_UNIT_BYTES`), the bound the unit itself
        has, per layer (not per direction: the result is remembered by the sample's bytes). Under an unescaping
        layer (url, html...), XOR-ed bytes that are in the sample as they are make the sample's own ``xor(...)``
        finding, not a new one."""
        found = []
        for chain, decoded, _ in peeled:
            if len(decoded) < MIN_XOR_NEEDLE_BYTES:  # no XOR needle is shorter: the many tiny layers cost nothing
                continue
            for key in self.xor.keys(decoded, multi_byte=len(decoded) <= XOR_MULTI_BYTE_UNIT_BYTES):
                xored = xor_bytes(decoded, key)
                matches = self.matcher.find(xored)
                if matches and not TRANSPARENT_LAYERS.isdisjoint(chain.split(">")):
                    # the XOR-ed bytes as they are in the sample: its own xor(...) finding (whatever the key's
                    # rotation there), not a new one
                    matches = [m for m in matches if decoded[m.start:m.end] not in sample]
                if matches:
                    found.append((f"{chain}>xor(0x{key.hex()})", xored, matches))
        return found

    @staticmethod
    def _layers(sample: bytes) -> list[tuple[str, bytes]]:
        """Nested layers of ``sample``, each distinct decoded output once, by its shortest chain.

        ``url>base64>gzip`` and ``base64>gzip`` often decode to the same bytes (the URL-escaping touched
        something else): reporting both would be one leak twice.
        """
        layers_found = [(c, out) for c, out in layers.peel(sample, max_depth=PEEL_DEPTH, max_output=PEEL_OUTPUT_BYTES)
                        if out]
        if len(layers_found) < 2:  # nothing to order or to tell apart
            return layers_found
        layers_found.sort(key=lambda item: item[0].count(">"))
        unique: dict[bytes, str] = {}
        for chain, decoded in layers_found:
            unique.setdefault(decoded, chain)
        return [(chain, decoded) for decoded, chain in unique.items()]

    def _record(self, flow: _Flow, d: _Direction, unit: Unit, data: bytes, matches: list[Match], peel_chain: str,
                frames: list[int] | None, time: float | None) -> None:
        for match in matches:
            needle = match.needle
            encoding = compose_encoding(unit.chain, peel_chain, needle.encoding)
            if frames is not None:
                hit_frames = frames
                hit_time = time if time is not None else 0.0
            else:
                exact = unit.exact and not peel_chain
                lo = unit.start + match.start if exact else unit.start
                hi = unit.start + match.end if exact else unit.end
                if isinstance(unit, tls.DecryptedUnit) and unit.inner_exact and not peel_chain:
                    lo, hi = unit.span(match.start, match.end)  # the records that carried exactly these bytes
                hit_frames, hit_time = self._frames(d, lo, hi)
            phase = self._phase(hit_time)
            key = (flow.ident, needle.identifier, encoding, phase)
            state = self.findings.get(key)
            if state is None:
                state = self.findings[key] = _FindingState(
                    needle.identifier, encoding, flow, d, unit.protocol, phase,
                    excerpt(data, match, matches, self.matcher), _text(data[match.start:match.end]))
            state.frames.update(hit_frames)
            state.time = min(state.time, hit_time)

    def _frames(self, d: _Direction, lo: int, hi: int) -> tuple[list[int], float]:
        offsets = d.offsets
        if not offsets:
            return [], 0.0
        first = max(bisect.bisect_right(offsets, lo) - 1, 0)
        last = max(bisect.bisect_left(offsets, max(hi, lo + 1)) - 1, first)
        return d.frames[first:last + 1], d.times[first]

    def _phase(self, t: float) -> str | None:
        for phase in self.phases:
            if phase.contains(t):
                return phase.name
        return None

    # --- results ----------------------------------------------------------------------------------------------

    def _masked_host(self, host: str | None) -> str | None:
        """A host name with any identifier in it masked (``<imei>.tracker.example`` is itself a leak)."""
        if not host:
            return host
        raw = host.encode("latin-1", "replace")
        matches = self.matcher.find(raw)
        if not matches:
            return host
        out = bytearray(raw)
        for m in matches:
            out[m.start:m.end] = _masked(raw[m.start:m.end]).encode("latin-1", "replace")[:m.end - m.start].ljust(
                m.end - m.start, b"*")
        return out.decode("latin-1")

    def _undecoded_phases(self) -> tuple[str, ...]:
        """Phases holding undecodable packets and no decoded flow at all (no flow was active in the window)."""
        out = []
        for phase in self.phases:
            if self.undecoded.by_phase.get(phase.name) and not any(
                    flow.first_time <= phase.end and flow.last_time >= phase.start for flow in self.table):
                out.append(phase.name)
        return tuple(out)

    def _result(self, reader: CaptureReader, first_time: float | None, last_time: float | None,
                seconds: float) -> ScanResult:
        warnings = list(reader.warnings)
        for link, count in sorted(self.unsupported_links.items()):
            warnings.append(f"{count} packets have link type {link}, which phonehome cannot decode; they were not "
                            f"scanned (supported: {', '.join(sorted(set(SUPPORTED_LINK_TYPES.values())))})")
        warnings += [w for w in self.undecoded.warnings(reader.packets) if tunnels.REASON_LINK not in w]
        undecoded_phases = self._undecoded_phases()
        info_undecoded = self.undecoded.to_json()
        problem = undecoded_problem(info_undecoded, reader.packets, phases_without_decoded=undecoded_phases)
        if problem:
            warnings.append(problem)
        if reader.snaplen_cut:
            warnings.append(f"{reader.snaplen_cut} packets were cut short by the capture's snap length; bytes "
                            "beyond it were not scanned (capture with -s 0)")
        if self.budget.gaps:
            warnings.append(f"{self.budget.gaps} gaps in TCP streams ({self.budget.gap_bytes} bytes never "
                            "captured or given up on); identifiers across a gap cannot be found")
        if self.budget.conflicting_unscanned_bytes:
            warnings.append(f"{self.budget.conflicting_unscanned_bytes} bytes of TCP segments that conflict with "
                            "the copy already delivered (different bytes for the same sequence numbers) were not "
                            f"scanned: more than {MAX_CONFLICT_BYTES_PER_STREAM >> 20} MiB of them in one direction")
        if self.late_unscanned:
            warnings.append(f"{self.late_unscanned} bytes sent after their TCP connection closed were not scanned: "
                            f"more than {MAX_LATE_BYTES_PER_DIRECTION >> 20} MiB of them in one direction")
        if self.defrag.dropped_datagrams:
            warnings.append(f"{self.defrag.dropped_datagrams} fragmented IP datagrams could not be reassembled "
                            "(fragments missing); they were not scanned")
        if self.shed:
            warnings.append(f"{self.shed} partly received messages were scanned undecoded to keep memory bounded "
                            f"(more than {MAX_DECODER_BYTES_TOTAL >> 20} MiB of messages in flight at once)")
        for problem, count in list(self.decode_problems.items())[:MAX_DECODE_WARNINGS]:
            warnings.append(f"{problem}" + (f" ({count} times)" if count > 1 else ""))
        if reader.packets == 0:
            warnings.append("the capture holds no packets: nothing was scanned")
        if self.evicted_active:
            warnings.append(f"{self.evicted_active} flows were let go before they were over, to keep memory bounded "
                            f"(more than {MAX_LIVE_FLOWS} flows going at once): what they held was scanned, and a "
                            "packet of one after that began a new flow")
        # every host name masked once (a few dozen serve thousands of flows); flows are named when read, from these
        # and the DNS answers alone (not the scanner: the result outlives it)
        masked = {host: self._masked_host(host) for host in {*self.dns_names.values(), *self.table.named_hosts}}
        dns_names = self.dns_names

        def host_of(named: str | None, raw_dst: bytes) -> str | None:
            host = named or dns_names.get(raw_dst)
            return masked[host] if host is not None else None

        self.table.finish(host_of)
        findings = []
        for state in self.findings.values():
            flow, d = state.flow, state.direction
            decrypted = state.encoding.startswith(tls.TLS_CHAIN + ">")
            findings.append(Finding(
                identifier=state.identifier, encoding=state.encoding, transport=flow.transport,
                src=address_text(d.src), sport=d.sport, dst=address_text(d.dst), dport=d.dport,
                host=host_of(_named(flow), flow.client.dst), protocol=state.protocol, encrypted=decrypted,
                frames=tuple(sorted(state.frames)), time=state.time if math.isfinite(state.time) else 0.0,
                phase=state.phase, excerpt=state.excerpt, value=state.value, decrypted=decrypted))
        findings.sort(key=lambda f: (f.frames[:1], f.identifier, f.encoding))
        flows = self.table
        warnings += self.tls.warnings(flows)
        info = CaptureInfo(
            path=str(reader.path), format=reader.format, link_types=reader.link_types,
            file_bytes=reader.file_bytes, packets=reader.packets, first_time=first_time, last_time=last_time,
            non_ip_packets=self.non_ip, undecodable_packets=self.undecoded.packets,
            snaplen_cut_packets=reader.snaplen_cut, tcp_gaps=self.budget.gaps, tcp_gap_bytes=self.budget.gap_bytes,
            retransmitted_bytes=self.budget.retransmitted_bytes, conflicting_bytes=self.budget.conflicting_bytes,
            conflicting_unscanned_bytes=self.budget.conflicting_unscanned_bytes,
            dropped_fragments=self.defrag.dropped_datagrams, scan_seconds=seconds, undecoded=info_undecoded,
            undecoded_phases=undecoded_phases, tunnelled_packets=self.tunnelled)
        return ScanResult(info, tuple(findings), flows, tuple(warnings), self.phases)


def compose_encoding(unit_chain: str, peel_chain: str, needle_encoding: str) -> str:
    """The finding's encoding: content decodings, then nested layers, then the needle's own encoding.

    The same leak can be found two ways — base64 of the IMEI by a base64 needle in the raw bytes, and by the
    plain needle after the nested decoders undid the base64 — so names are canonical: a single layer is named
    alone (``base64``, ``url``, ``hex``), a layered chain ends in the innermost needle (``gzip>base64>plain``,
    ``gzip>md5``), and ``X>plain`` equals a needle of encoding ``X`` under the same outer layers.
    """
    parts = [p for p in unit_chain.split(">") if p] + [p for p in peel_chain.split(">") if p]
    parts.append(needle_encoding)
    if len(parts) > 1 and parts[-1] in LAYER_NAMES:
        parts.append("plain")  # a layer needle under outer layers: spell the chain out
    if len(parts) == 2 and parts[1] == "plain" and parts[0] in LAYER_NAMES:
        return parts[0]
    return ">".join(parts)


def _raw_key(d: _Direction) -> bytes:
    """``d``'s addresses and ports as they sit in its packets (IPv4 without options, IPv6 without extension
    headers): the key of the fast path's lookups."""
    return d.src + d.dst + struct.pack("!HH", d.sport, d.dport)


def _named(flow: _Flow) -> str | None:
    """The host a flow names itself (its SNI, else its HTTP Host); None leaves it to the DNS answers."""
    return flow.sni or flow.http_host


def _carried_data(flow: _Flow) -> bool:
    return flow.closed or flow.encrypted or flow.client.pos > 0 or flow.server.pos > 0


class _Peeled:
    """What :meth:`Scanner._peeled` remembers of a sample: its layers with their matches, their size and its own
    (the cache's bound); and, found when first asked, the sample's own matches when it is a whole unit, and its
    XOR keys (per ``multi_byte``)."""

    __slots__ = ("_keys", "layers", "matches", "size")

    def __init__(self, layers: list[tuple[str, bytes, list[Match]]], size: int) -> None:
        self.matches: list[Match] | None = None
        self.layers = layers
        self.size = size
        self._keys: dict[bool, list[bytes]] = {}

    def xor_keys(self, finder: XorFinder, sample: bytes, multi_byte: bool) -> list[bytes]:
        """``finder.keys(sample, multi_byte=multi_byte)``, found once."""
        keys = self._keys.get(multi_byte)
        if keys is None:
            keys = self._keys[multi_byte] = finder.keys(sample, multi_byte=multi_byte)
        return keys


def _covered(chains: list[str] | None, chain: str) -> bool:
    """True when an identifier found at one of ``chains`` (""=the bytes themselves) explains a find at ``chain``."""
    if not chains:
        return False
    return any(not c or chain.startswith(c + ">") for c in chains)


def _printable(data: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in data)


def _text(data: bytes) -> str:
    """Matched bytes as text: as they are when printable, else hex."""
    if all(32 <= b < 127 for b in data):
        return data.decode("ascii")
    return data.hex()


def _masked(data: bytes) -> str:
    return mask(_text(data))


def excerpt(data: bytes, match: Match, matches: Sequence[Match], matcher: Matcher | None = None) -> str:
    """Context around ``match`` with every identifier in it masked: the matched one, any neighbours and, given
    the ``matcher``, every encoded run (base64, hex, url, compressed...) that decodes to an identifier."""
    lo = max(match.start - EXCERPT_CONTEXT_BYTES, 0)
    hi = min(match.end + EXCERPT_CONTEXT_BYTES, len(data))
    spans = [(max(m.start, lo), min(m.end, hi)) for m in matches if m.start < hi and m.end > lo]
    if matcher is not None:
        spans.extend(leak_spans(data, matcher, lo, hi))
    spans = merge_spans(spans)
    out = []
    pos = lo
    for start, end in spans:
        if end <= pos:
            continue
        start = max(start, pos)
        out.append(_printable(data[pos:start]))
        out.append(_masked(data[start:end]))
        pos = end
    out.append(_printable(data[pos:hi]))
    return "".join(out)


def scan_capture(path: str | os.PathLike[str], identifiers: Identifiers, *, phases: Sequence[Phase] = (),
                 matcher: Matcher | None = None, keylogs: Sequence[str | os.PathLike[str]] = (),
                 keylog: KeyLog | None = None, progress: Callable[[int], None] | None = None) -> ScanResult:
    """Scan one capture for one device's identifiers.

    ``phases`` name windows of capture time: each finding gets the phase of its first frame, and a leak repeated
    in two phases is one finding per phase. ``matcher`` lets a caller scanning many windows with the same
    identifiers build it once. ``progress`` is called with the file offset read so far, once per 1 MiB read (for
    a progress line; nothing per packet). Bad input (not a capture, empty identifiers) raises
    :class:`InputError`; damage inside a readable capture is reported in ``ScanResult.warnings`` and the capture
    info.

    ``keylogs`` (NSS key-log files) or an already loaded ``keylog`` let the scan look inside TLS: what it finds
    there are findings with ``decrypted`` (and ``encrypted``) set, which never count as cleartext leaks. A
    capture's own Decryption Secrets Blocks are used as well.
    """
    if identifiers.is_empty():
        raise InputError(None, "no identifiers to look for", fix="give at least one identifier")
    if keylogs:
        keylog = load_keylogs(keylogs, into=keylog)
    return Scanner(identifiers, phases=phases, matcher=matcher, keylog=keylog).scan(path, progress=progress)
