"""Chunked pcap/pcapng reader: the first stage of the scanner's hot path.

Reads the file in large chunks and slices records out with ``struct.unpack_from``, because per-packet file reads
and per-packet object trees (dpkt, scapy, pyshark) cost 5-1000x more (see the notes in the design docs). Yields
``(time, link_type, data, orig_len)`` tuples; the frame number is the position in the stream, 1-based, exactly
as Wireshark numbers frames.

Damage is handled as the product requires: a file that is not a capture at all is an
:class:`~phonehome.errors.InputError`; a capture that is readable up to some point yields what it can and records
a warning (``CaptureReader.warnings``) saying what was lost, so the scan completes and says so.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from phonehome.errors import InputError

#: bytes read from the file at a time; large reads amortise Python's per-call cost
CHUNK_BYTES = 1 << 20
#: memory-mapped pages already parsed are released in steps of this size
RELEASE_BYTES = 1 << 20
#: a record claiming more than this is corrupt (no link layer has frames this large)
MAX_RECORD_BYTES = 64 << 20

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D

BLOCK_IDB = 1
BLOCK_OPB = 2  # obsolete Packet Block
BLOCK_SPB = 3
BLOCK_EPB = 6
BLOCK_DSB = 10  # Decryption Secrets Block (TLS key logs: see phonehome.scan.keylog)
#: blocks that are no packet but that Wireshark lists (and numbers) as frames: custom blocks (copiable or not) and
#: systemd journal entries. Each is yielded as a record of link type NOT_A_PACKET, so that frame numbers stay
#: Wireshark's; none counts as a packet.
NUMBERED_NON_PACKET_BLOCKS = frozenset((0x00000BAD, 0x40000BAD, 9))
#: the link type of such a record (its data is empty)
NOT_A_PACKET = -2

#: (time in seconds, link type, frame bytes as captured, length on the wire)
Record = tuple[float, int, bytes, int]

_FIX_CAPTURE = "pass a pcap or pcapng file as written by dumpcap, tshark or tcpdump"


@dataclass(frozen=True)
class Interface:
    """A pcapng interface (pcap files have exactly one)."""

    link_type: int
    snaplen: int
    resolution: float  # seconds per timestamp tick
    offset_s: int = 0  # if_tsoffset


def _tsresol(value: int) -> float:
    """Decode pcapng's if_tsresol: high bit set means a power of 2, else a power of 10."""
    if value & 0x80:
        return float(2.0 ** -(value & 0x7F))
    return float(10.0 ** -value)


class CaptureReader:
    """Iterate over the records of a pcap or pcapng file.

    After (or during) iteration: ``format`` ("pcap"/"pcapng"), ``interfaces``, ``packets`` read,
    ``file_bytes``, ``warnings`` (damage found: truncation, corrupt blocks, cut packets). ``progress``, if
    given, hears how far the parsing is (for a progress line).
    """

    def __init__(self, path: str | os.PathLike[str], *, chunk_bytes: int = CHUNK_BYTES,
                 progress: Callable[[int], None] | None = None) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        #: called with the file offset parsed so far, once per chunk (1 MiB) and at the end: free per packet
        self.progress = progress
        self.warnings: list[str] = []
        self.interfaces: list[Interface] = []
        self.packets = 0
        self.snaplen_cut = 0
        self.format = ""
        #: Decryption Secrets Blocks met so far: (secrets type, secrets), appended while iterating
        self.secrets: list[tuple[int, bytes]] = []
        try:
            self.file_bytes = self.path.stat().st_size
        except FileNotFoundError:
            raise InputError(self.path, "capture file not found", fix="pass the path of an existing capture") from None
        except OSError as exc:
            raise InputError(self.path, f"cannot read capture: {exc.strerror}", fix=_FIX_CAPTURE) from None
        if self.path.is_dir():
            raise InputError(self.path, "is a directory, not a capture file", fix=_FIX_CAPTURE)
        if self.file_bytes == 0:
            raise InputError(self.path, "empty file, not a capture", fix=_FIX_CAPTURE)
        head = self._read_head()
        magic_le = struct.unpack_from("<I", head)[0] if len(head) >= 4 else 0
        if magic_le == PCAPNG_SHB:
            self.format = "pcapng"
        elif magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) or struct.unpack_from(">I", head.ljust(4, b"\0"))[0] in (
                PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self.format = "pcap"
        else:
            raise InputError(self.path, f"not a pcap or pcapng file (starts with {head[:4].hex() or 'nothing'})",
                             fix=_FIX_CAPTURE)

    def _read_head(self) -> bytes:
        try:
            with self.path.open("rb") as handle:
                return handle.read(64)
        except OSError as exc:
            raise InputError(self.path, f"cannot read capture: {exc.strerror}", fix=_FIX_CAPTURE) from None

    @property
    def link_types(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(i.link_type for i in self.interfaces))

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def __iter__(self) -> Iterator[Record]:
        try:
            with self.path.open("rb") as handle:
                if self.format == "pcap":
                    yield from self._pcap(handle)
                else:
                    yield from self._pcapng(handle)
        except OSError as exc:
            raise InputError(self.path, f"cannot read capture: {exc.strerror}", fix=_FIX_CAPTURE) from None

    # --- pcap -------------------------------------------------------------------------------------------------

    def _pcap(self, handle: BinaryIO) -> Iterator[Record]:
        header = handle.read(24)
        if len(header) < 24:
            raise InputError(self.path, f"pcap header cut short ({len(header)} of 24 bytes)", fix=_FIX_CAPTURE)
        magic = struct.unpack_from("<I", header)[0]
        order = "<" if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">"
        magic = struct.unpack_from(order + "I", header)[0]
        scale = 1e-9 if magic == PCAP_MAGIC_NS else 1e-6
        _major, _minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(order + "HHiIII", header, 4)
        link = network & 0x03FFFFFF  # the upper bits say whether frames end in an FCS, and its length
        self.interfaces.append(Interface(link, snaplen, scale))
        unpack = struct.Struct(order + "IIII").unpack_from
        window = _Window(handle, self.chunk_bytes, start=24, progress=self.progress)
        buf, pos, consumed = window.buf, window.pos, window.consumed
        packets = 0
        cut = 0
        while True:
            chunk = window.more(pos)
            buf, pos, consumed, end = window.buf, window.pos, window.consumed, window.end
            while pos + 16 <= end:
                sec, frac, incl, orig = unpack(buf, pos)
                stop = pos + 16 + incl
                if stop > end:
                    if incl > MAX_RECORD_BYTES:  # checked only here: a corrupt length never fits in the buffer
                        self.warn(f"corrupt packet record at byte {consumed + pos} (claims {incl} bytes); "
                                  f"stopped reading after {packets} packets")
                        self.packets = packets
                        self.snaplen_cut = cut
                        window.close()
                        return
                    break
                packets += 1
                if orig > incl:
                    cut += 1
                yield sec + frac * scale, link, buf[pos + 16:stop], orig
                pos = stop
            if not chunk:
                break
        window.close()
        self.packets = packets
        self.snaplen_cut = cut
        if pos < end:
            self.warn(f"capture truncated: last {end - pos} bytes are an incomplete packet record "
                      f"(after packet {packets}); the file was probably copied while being written")

    # --- pcapng -----------------------------------------------------------------------------------------------

    def _pcapng(self, handle: BinaryIO) -> Iterator[Record]:
        window = _Window(handle, self.chunk_bytes, start=0, progress=self.progress)
        buf, pos, consumed, end = window.buf, window.pos, window.consumed, window.end
        packets = 0
        cut = 0
        order = "<"
        head = struct.Struct("<II")
        epb = struct.Struct("<IIIII")
        epb_block = struct.Struct("<IIIIIII")  # block type and length, then the EPB's fields (as epb)
        interfaces: list[Interface] = []
        #: per interface of the section: (seconds per tick, offset in seconds, link type), for the loop below
        clocks: list[tuple[float, int, int]] = []
        last_time = 0.0
        while True:
            chunk = window.more(pos)
            buf, pos, consumed, end = window.buf, window.pos, window.consumed, window.end
            while pos + 12 <= end:
                if pos + 28 <= end:  # the common case first: a well-formed Enhanced Packet Block, whole in buf
                    block_type, length, iface, hi, lo, incl, orig = epb_block.unpack_from(buf, pos)
                    stop = pos + length
                    if (block_type == BLOCK_EPB and iface < len(clocks) and 32 + incl <= length <= MAX_RECORD_BYTES
                            and not length % 4 and stop <= end):
                        resolution, offset_s, link = clocks[iface]
                        packets += 1
                        if orig > incl:
                            cut += 1
                        last_time = ((hi << 32) | lo) * resolution + offset_s
                        yield last_time, link, buf[pos + 28:pos + 28 + incl], orig
                        pos = stop
                        continue
                block_type, length = head.unpack_from(buf, pos)
                stop = pos + length
                if block_type == PCAPNG_SHB:
                    if pos + 12 > end:
                        break
                    bom = buf[pos + 8:pos + 12]
                    order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
                    if not order:
                        self.warn(f"corrupt section header at byte {consumed + pos}; stopped reading after "
                                  f"{packets} packets")
                        return self._done(packets, cut, window)
                    head = struct.Struct(order + "II")
                    epb = struct.Struct(order + "IIIII")
                    epb_block = struct.Struct(order + "IIIIIII")
                    length = head.unpack_from(buf, pos)[1]
                    stop = pos + length
                    interfaces = []
                    clocks = []
                if length < 12 or length % 4 or length > MAX_RECORD_BYTES:
                    self.warn(f"corrupt pcapng block at byte {consumed + pos} (length {length}); stopped reading "
                              f"after {packets} packets")
                    return self._done(packets, cut, window)
                if stop > end:
                    break
                if block_type in (BLOCK_EPB, BLOCK_OPB):
                    iface, hi, lo, incl, orig = epb.unpack_from(buf, pos + 8)
                    if block_type == BLOCK_OPB:
                        iface &= 0xFFFF
                    if iface >= len(interfaces) or 28 + incl + 4 > length:
                        self.warn(f"corrupt packet block at byte {consumed + pos} (interface {iface}, "
                                  f"{incl} bytes); skipped")
                        packets += 1
                        yield 0.0, -1, b"", 0
                    else:
                        ifc = interfaces[iface]
                        packets += 1
                        if orig > incl:
                            cut += 1
                        last_time = ((hi << 32) | lo) * ifc.resolution + ifc.offset_s
                        yield last_time, ifc.link_type, buf[pos + 28:pos + 28 + incl], orig
                elif block_type == BLOCK_SPB:
                    packets += 1
                    if not interfaces:
                        self.warn(f"packet block before any interface at byte {consumed + pos}; skipped")
                        yield 0.0, -1, b"", 0
                    else:
                        ifc = interfaces[0]
                        orig = struct.unpack_from(order + "I", buf, pos + 8)[0]
                        incl = min(orig, ifc.snaplen or orig, length - 16)
                        if orig > incl:
                            cut += 1
                        yield 0.0, ifc.link_type, buf[pos + 12:pos + 12 + incl], orig
                elif block_type == BLOCK_IDB:
                    interfaces.append(self._interface(buf, pos, length, order))
                    self.interfaces.append(interfaces[-1])
                    clocks.append((interfaces[-1].resolution, interfaces[-1].offset_s, interfaces[-1].link_type))
                elif block_type in NUMBERED_NON_PACKET_BLOCKS:  # at the time of the packet before it
                    yield last_time, NOT_A_PACKET, b"", 0
                elif block_type == BLOCK_DSB and length >= 20:
                    kind, size = struct.unpack_from(order + "II", buf, pos + 8)
                    self.secrets.append((kind, bytes(buf[pos + 16:pos + 16 + min(size, length - 20)])))
                pos = stop
            if not chunk:
                break
        if pos < end:
            self.warn(f"capture truncated: last {end - pos} bytes are an incomplete pcapng block "
                      f"(after packet {packets}); the file was probably copied while being written")
        return self._done(packets, cut, window)

    def _done(self, packets: int, cut: int, window: _Window) -> None:
        self.packets = packets
        self.snaplen_cut = cut
        window.close()

    def _interface(self, buf: bytes | mmap.mmap, pos: int, length: int, order: str) -> Interface:
        link, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
        resolution = 1e-6
        offset_s = 0
        opt = pos + 16
        stop = pos + length - 4
        while opt + 4 <= stop:
            code, size = struct.unpack_from(order + "HH", buf, opt)
            value = buf[opt + 4:opt + 4 + size]
            if code == 0:
                break
            if code == 9 and size >= 1:
                resolution = _tsresol(value[0])
            elif code == 14 and size == 8:
                offset_s = struct.unpack_from(order + "q", value)[0]
            opt += 4 + size + (-size % 4)
        return Interface(link, snaplen, resolution, offset_s)


class _Window:
    """The bytes the parsers look at: the whole file memory-mapped, or chunks read into a buffer.

    Memory-mapped, each packet is copied once (its slice) instead of three times (read, join, slice), and pages
    already parsed are handed back to the kernel so the resident size stays flat however large the file. Where
    mmap is impossible (a pipe, a special file) or small chunks are asked for (tests), it reads chunks.
    """

    def __init__(self, handle: BinaryIO, chunk_bytes: int, *, start: int,
                 progress: Callable[[int], None] | None = None) -> None:
        self.handle = handle
        self.chunk_bytes = chunk_bytes
        self.progress = progress
        self.mm: mmap.mmap | None = None
        if chunk_bytes == CHUNK_BYTES:
            try:
                self.mm = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                self.mm = None
        self.buf: bytes | mmap.mmap = self.mm if self.mm is not None else b""
        self.pos = start if self.mm is not None else 0  # where the parser is in buf
        self.consumed = 0 if self.mm is not None else start  # file offset of buf[0]
        self.end = self.pos  # parsable bytes end here
        self.released = 0

    def more(self, pos: int) -> bool:
        """Make more bytes parsable after the parser stopped at ``pos``; False at the end of the file."""
        if self.progress is not None:
            self.progress(self.consumed + pos)
        mm = self.mm
        if mm is not None:
            self.pos = pos
            if self.end >= len(mm):
                return False
            upto = pos - pos % mmap.PAGESIZE
            if upto - self.released >= RELEASE_BYTES:
                mm.madvise(mmap.MADV_DONTNEED, self.released, upto - self.released)
                self.released = upto
            self.end = min(self.end + self.chunk_bytes, len(mm))
            return True
        chunk = self.handle.read(self.chunk_bytes)
        buf = self.buf
        if chunk:
            self.buf = buf[pos:] + chunk if pos < len(buf) else chunk
            self.consumed += pos
            self.pos = 0
        else:
            self.pos = pos
        self.end = len(self.buf)
        return bool(chunk)

    def close(self) -> None:
        if self.mm is not None:
            self.buf = b""
            self.mm.close()
            self.mm = None


def read_capture(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Convenience: iterate over the records of ``path`` (warnings are lost; use :class:`CaptureReader`)."""
    return iter(CaptureReader(path))
