"""The flows of one scan, kept off the heap: a fixed-size record per flow, spilled to a temporary file.

A capture of many short connections (polls, DNS, a port scan) holds a flow per few kilobytes: a 2 GB one has
over a million. The scanner lets go of each flow's state once it is over (:class:`~phonehome.scan.scanner.Scanner`
evicts it) and writes what the results need of it here: about 100 bytes, its addresses as sent and its few
strings (protocol, host) interned. Past :data:`SPILL_BYTES` of records the table moves to an unlinked temporary
file, so the scan's memory does not grow with the number of flows, even when every address differs (a port
scan). :class:`FlowTable` is the ``flows`` sequence of a :class:`~phonehome.scan.scanner.ScanResult`: each item
is made when it is read.
"""

from __future__ import annotations

import os
import struct
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from phonehome.errors import PhonehomeError
from phonehome.scan.packets import address_text

if TYPE_CHECKING:
    from phonehome.scan.scanner import Flow

#: transport, src and dst addresses (16 bytes each, an IPv4 one in the first 4), address size, sport, dport, named
#: host, protocol, encrypted, decryption, bytes, frames, first frame, first time, last time (strings as indexes into
#: FlowTable's string table, 0 for None: few distinct ones, while addresses can all differ, as in a port scan)
_RECORD = struct.Struct("<I16s16sBHHIIBIQQQdd")
RECORD_BYTES = _RECORD.size
#: records kept in memory before the table moves to a temporary file (a few tens of thousands of flows)
SPILL_BYTES = 4 << 20
#: records read at once when iterating a spilled table
_READ_RECORDS = 4096


def _spill_error(exc: OSError) -> PhonehomeError:
    return PhonehomeError(f"cannot keep the scan's flow table in a temporary file in {tempfile.gettempdir()}: "
                          f"{exc.strerror or exc} (set TMPDIR to a writable directory with free space)")


def _no_host(named: str | None, dst: bytes) -> str | None:
    """Before :meth:`FlowTable.finish`: no host at all (a name not yet masked is never shown)."""
    return None


class FlowTable(Sequence["Flow"]):
    """Flow records by flow number (the order flows began in); written in any order, each exactly once.

    ``host`` is resolved when a flow is read, by the function :meth:`finish` gave: a flow is named by its SNI or
    HTTP Host, else by the DNS answers of the whole capture for its server's address, as the scanner always did.
    """

    def __init__(self) -> None:
        self._strings: list[Any] = [None]
        self._index: dict[Any, int] = {None: 0}
        self._memory = bytearray()
        self._fd: int | None = None  # the temporary file, once spilled (closed when the table goes)
        self._count = 0  # one past the highest flow number written
        self._host_of: Callable[[str | None, bytes], str | None] = _no_host
        self._named: set[str] = set()

    def _intern(self, value: Any) -> int:
        index = self._index.get(value)
        if index is None:
            index = self._index[value] = len(self._strings)
            self._strings.append(value)
        return index

    def add(self, ident: int, *, transport: str, src: bytes, sport: int, dst: bytes, dport: int, named: str | None,
            protocol: str, encrypted: bool, decryption: str, size: int, frames: int, first_frame: int,
            first_time: float, last_time: float) -> None:
        """Write flow number ``ident``'s record (``src``/``dst``: packed IPv4 or IPv6 addresses; ``named``: its SNI
        or HTTP Host; ``size``: bytes on the wire)."""
        intern = self._intern
        if named:
            self._named.add(named)
        record = _RECORD.pack(intern(transport), src, dst, len(src), sport, dport, intern(named), intern(protocol),
                              encrypted, intern(decryption), size, frames, first_frame, first_time, last_time)
        offset = ident * RECORD_BYTES
        self._count = max(self._count, ident + 1)
        if self._fd is not None:
            self._write(record, offset)
            return
        memory = self._memory
        if len(memory) < offset:
            memory.extend(bytes(offset - len(memory)))
        memory[offset:offset + RECORD_BYTES] = record
        if len(memory) > SPILL_BYTES:
            self._spill()

    def _spill(self) -> None:
        try:
            fd, path = tempfile.mkstemp(prefix="phonehome-flows-")
        except OSError as exc:
            raise _spill_error(exc) from None
        os.unlink(path)  # unlinked at once: nothing is left behind, whatever ends the scan
        weakref.finalize(self, os.close, fd)
        self._fd = fd
        self._write(bytes(self._memory), 0)
        self._memory = bytearray()

    def _write(self, data: bytes, offset: int) -> None:
        assert self._fd is not None
        try:
            while data:
                written = os.pwrite(self._fd, data, offset)
                data, offset = data[written:], offset + written
        except OSError as exc:
            raise _spill_error(exc) from None

    def finish(self, host_of: Callable[[str | None, bytes], str | None]) -> None:
        """Name flows' hosts from now on: ``host_of(named, dst)`` (``dst`` packed) when a flow is read."""
        self._host_of = host_of

    @property
    def named_hosts(self) -> frozenset[str]:
        """The SNIs and HTTP Hosts written."""
        return frozenset(self._named)

    @property
    def spilled(self) -> bool:
        """True when the records are in a temporary file."""
        return self._fd is not None

    def _read(self, first: int, count: int) -> bytes:
        start, size = first * RECORD_BYTES, count * RECORD_BYTES
        if self._fd is None:
            return bytes(self._memory[start:start + size])
        return os.pread(self._fd, size, start)

    def _flow(self, record: tuple[Any, ...]) -> Flow:
        from phonehome.scan.scanner import Flow

        s = self._strings
        (transport, src, dst, width, sport, dport, named, protocol, encrypted, decryption, size, frames,
         first_frame, first_time, last_time) = record
        src, dst = src[:width], dst[:width]
        return Flow(transport=s[transport], src=address_text(src), sport=sport, dst=address_text(dst), dport=dport,
                    host=self._host_of(s[named], dst), protocol=s[protocol], encrypted=bool(encrypted),
                    bytes=size, frames=frames, first_frame=first_frame, first_time=first_time,
                    last_time=last_time, decryption=s[decryption] or "")

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Flow: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Flow]: ...

    def __getitem__(self, index: int | slice) -> Flow | Sequence[Flow]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(self._count)))
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(f"flow {index} of {self._count}")
        return self._flow(_RECORD.unpack(self._read(index, 1)))

    def __iter__(self) -> Iterator[Flow]:
        for first in range(0, self._count, _READ_RECORDS):
            chunk = self._read(first, min(_READ_RECORDS, self._count - first))
            for record in _RECORD.iter_unpack(chunk):
                yield self._flow(record)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable until the scan ends, as a list

    def __repr__(self) -> str:
        return f"FlowTable({self._count} flows{', spilled' if self.spilled else ''})"
