"""PCAPdroid's own per-packet app metadata: the "PCAPdroid trailer" at the end of each frame.

With its ``pcapdroid_trailer`` setting on, PCAPdroid writes each packet as a bogus Ethernet frame (both MACs zero)
around the IP packet, then pads it to 4 bytes and appends 32 bytes (``pcapdroid_trailer_t`` in its
``jni/core/pcap_utils.h``): the magic ``0x01072021`` and the sending app's UID, both big-endian, the app's name in
20 NUL-padded bytes, and a CRC-32. Every packet then says which app it belongs to, so a PCAPdroid capture needs no
socket-table polling: :func:`trailer_table` turns the trailers into the same
:class:`~phonehome.scan.attribution.SocketTable` that :func:`~phonehome.scan.attribution.attribute` reads. The
scanner itself never reads the trailer: the IP header's length ends the packet before it.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from phonehome.scan.packets import LINKTYPE_ETHERNET, PROTO_TCP, Defragmenter, address_text, decode_frame
from phonehome.scan.pcapfile import CaptureReader

if TYPE_CHECKING:
    from phonehome.scan.attribution import SocketTable

MAGIC = 0x01072021
TRAILER_BYTES = 32
NAME_BYTES = 20
#: the source name attribution reports for a table read from trailers
SOURCE = "PCAPdroid trailer"
#: frames looked at before deciding a capture has no trailers (PCAPdroid writes one on every frame): a capture
#: from elsewhere costs a glance, not a second full read
PROBE_FRAMES = 64
_TRAILER = struct.Struct("!Ii20sI")


def parse_trailer(frame: bytes) -> tuple[int, str] | None:
    """(uid, app name) of a frame that ends in a PCAPdroid trailer, else None."""
    if len(frame) < 14 + 20 + TRAILER_BYTES:
        return None
    magic, uid, name, _fcs = _TRAILER.unpack_from(frame, len(frame) - TRAILER_BYTES)
    if magic != MAGIC:
        return None
    text = name.split(b"\0", 1)[0].decode("utf-8", "replace")
    # PCAPdroid cuts the name to fit the 20 bytes with its NUL: a name that fills them may be longer
    return uid, text + "…" if len(text) >= NAME_BYTES - 1 else text


def trailer_table(path: str | os.PathLike[str]) -> SocketTable | None:
    """Each connection's UID and app name from a capture's trailers; None when it has none (another exporter,
    or PCAPdroid with the trailer off)."""
    reader = CaptureReader(path)
    defrag = Defragmenter()
    spans: dict[tuple[str, str, int, str, int, int], list[float]] = {}
    names: dict[int, str] = {}
    for frame_number, (ts, link, data, _orig) in enumerate(reader, 1):
        trailer = parse_trailer(data) if link == LINKTYPE_ETHERNET else None
        if trailer is None:
            if not spans and frame_number >= PROBE_FRAMES:
                return None
            continue
        decoded = decode_frame(link, data, defrag, ts, frame_number)
        if decoded is None:
            continue
        (proto, src, dst, sport, dport, *_), _frames = decoded
        uid, name = trailer
        if name:
            names.setdefault(uid, name)
        key = ("tcp" if proto == PROTO_TCP else "udp", address_text(src), sport, address_text(dst), dport, uid)
        span = spans.get(key)
        if span is None:
            spans[key] = [ts, ts]
        else:
            span[0], span[1] = min(span[0], ts), max(span[1], ts)
    if not spans:
        return None
    from phonehome.scan.attribution import Socket, SocketTable  # only for a capture with trailers (~5 ms)

    table = SocketTable()
    table.snapshots = 1  # one complete record of the capture's connections, not a poll
    table.add_packages({uid: [name] for uid, name in names.items()})
    for (transport, local, lport, remote, rport, uid), (first, last) in spans.items():
        table.observe(Socket(transport, local, lport, remote, rport, 1, uid, 1), first, last)
    return table
