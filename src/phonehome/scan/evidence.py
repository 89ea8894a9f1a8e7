"""Readable evidence for a finding: Wireshark's dissection of the frames it cites.

This is the one module that imports pyshark, and it does so in a child process (``python -m
phonehome.scan.evidence PCAP FRAME...``): pyshark breaks in worker threads, inside running event loops and under
``-W error`` (see the design notes), and a child process with a timeout also bounds tshark's memory and time.
pyshark is far too slow for the scan itself (~1 MB/s); here it dissects a handful of frames.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phonehome.errors import CaptureError, InputError
from phonehome.identifiers import Identifiers
from phonehome.redaction import Redactor

#: tshark loads every dissector (~0.5 s) and then reads the file up to the last cited frame
EVIDENCE_TIMEOUT_S = 120
#: dissecting only reads the capture, so a failed child is run once more: a one-off failure (pyshark's
#: clean-up of tshark has known races) should not cost the evidence
DISSECT_ATTEMPTS = 2
#: a finding can cite thousands of frames (a large gzip body); the first ones tell the story
MAX_EVIDENCE_FRAMES = 40
#: fields shown when a frame has them, in this order: what a reviewer looks at first
_FIELDS = (
    ("http", "request_method"), ("http", "request_full_uri"), ("http", "host"), ("http", "response_code"),
    ("http", "content_type"), ("http", "content_encoding"), ("http", "cookie"), ("http", "user_agent"),
    ("dns", "qry_name"), ("dns", "a"), ("dns", "aaaa"),
    ("tls", "handshake_extensions_server_name"), ("tls", "handshake_extensions_alpn_str"),
    ("mqtt", "msgtype"), ("mqtt", "clientid"), ("mqtt", "topic"),
    ("websocket", "opcode"), ("websocket", "payload_length"),
)


def tshark_path() -> str:
    """The tshark binary pyshark will drive; a :class:`CaptureError` when it is not installed."""
    found = shutil.which("tshark")
    if found is None:
        raise CaptureError("tshark is not installed, so frames cannot be dissected for evidence "
                           "(install the Debian package 'tshark')")
    return found


def dissect_frames(pcap: str | Path, frames: Sequence[int], *, identifiers: Identifiers | None = None,
                   timeout_s: float = EVIDENCE_TIMEOUT_S) -> str:
    """A readable per-frame summary (layers, addresses, key protocol fields) of ``frames`` in ``pcap``.

    Values of ``identifiers`` are masked in the summary (Wireshark shows them in full). Runs pyshark in a child
    process with a timeout. Raises :class:`CaptureError` when tshark is missing, fails or times out,
    :class:`InputError` for bad arguments.
    """
    path = Path(pcap)
    if not path.is_file():
        raise InputError(path, "capture file not found", fix="pass the capture the finding came from")
    wanted = sorted({int(f) for f in frames if int(f) > 0})[:MAX_EVIDENCE_FRAMES]
    if not wanted:
        raise InputError(path, "no frame numbers given", fix="pass the 1-based frame numbers of a finding")
    tshark_path()
    command = [sys.executable, "-m", "phonehome.scan.evidence", str(path), *map(str, wanted)]
    for _ in range(DISSECT_ATTEMPTS):
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise CaptureError(f"dissecting frames took longer than {timeout_s:g} s", command=command) from None
        if proc.returncode == 0:
            return mask_values(proc.stdout, identifiers) if identifiers is not None else proc.stdout
    stderr = mask_values(proc.stderr, identifiers) if identifiers is not None else proc.stderr
    raise CaptureError(f"dissecting frames with pyshark failed {DISSECT_ATTEMPTS} times", command=command,
                       returncode=proc.returncode, stderr=stderr)


def mask_values(text: str, identifiers: Identifiers) -> str:
    """``text`` with every identifier masked: each value in every spelling, and (the scanner's own forms)
    every encoded form or encoded run that holds one: a dissected URI, cookie or DNS name quotes them so."""
    return Redactor().with_identifiers(identifiers).deep(text)


def _display_filter(frames: Sequence[int]) -> str:
    return " || ".join(f"frame.number == {n}" for n in frames)


def _describe(packet: Any) -> str:
    """One frame as a few readable lines."""
    layers = [layer.layer_name for layer in packet.layers]
    lines = [f"frame {packet.number}  {packet.sniff_time.isoformat()}  {packet.length} bytes  "
             f"{':'.join(layers)}"]
    ip = getattr(packet, "ip", None) or getattr(packet, "ipv6", None)
    transport = getattr(packet, "tcp", None) or getattr(packet, "udp", None)
    if ip is not None and transport is not None:
        lines.append(f"  {ip.src}:{transport.srcport} -> {ip.dst}:{transport.dstport} ({packet.transport_layer})")
    for layer_name, field in _FIELDS:
        layer = getattr(packet, layer_name, None) if layer_name in layers else None
        value = layer.get_field_value(field) if layer is not None else None
        if value:
            lines.append(f"  {layer_name}.{field}: {value}")
    return "\n".join(lines)


def _main(argv: Sequence[str]) -> int:
    """Child-process entry: dissect the frames (``all``: every frame, for the benchmark) and print the summary."""
    import pyshark  # the only pyshark import in phonehome, in a child process on purpose

    pcap = argv[0]
    frames = [] if argv[1:] == ["all"] else [int(a) for a in argv[1:]]
    display_filter = _display_filter(frames) if frames else None
    capture = pyshark.FileCapture(pcap, display_filter=display_filter, keep_packets=False)
    try:
        blocks = [_describe(packet) for packet in capture]
    finally:
        capture.close()
    print("\n".join(blocks) if blocks else f"(tshark shows none of frames {frames})")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
