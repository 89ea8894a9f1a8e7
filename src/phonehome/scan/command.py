"""``phonehome scan``: the leak scanner on the command line.

Its exit codes and OUT.json are a contract that the plugin, CI jobs and users' scripts rely on (issue 2): keep
them exactly as the help text below states.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phonehome.errors import InputError, PhonehomeError
from phonehome.identifiers import SCHEMA_KEYS, Identifiers, mask

if TYPE_CHECKING:
    from phonehome.scan.scanner import Phase, ScanResult

EXIT_CLEAN = 0
EXIT_LEAKS = 1
EXIT_BAD_INPUT = 2
#: frame numbers shown per finding in the table (OUT.json has all of them)
TABLE_FRAMES = 4

DESCRIPTION = f"""\
Find a phone's identifiers sent in cleartext in a capture (pcap or pcapng), in any common encoding (plain, URL,
base64, hex, hashes, BCD, UTF-16, binary integers/floats as protobuf/CBOR/MessagePack/BSON carry them, E5/E6/E7
coordinates, XOR with 1-4 byte keys, reversed, ROT-N, nested layers such as gzip>base64>plain), after TCP
reassembly and HTTP/1.1, HTTP/2 (h2c: HPACK, DATA per stream), WebSocket (fragments, permessage-deflate),
DNS, TLS-ClientHello and MQTT decoding (TLS after an HTTP CONNECT to a proxy too). Encrypted flows (TLS, DTLS,
QUIC, SSH, IPsec ESP; decided by content, not port) are not leaks, except the cleartext parts of their handshake: TLS
ClientHellos (SNI, ALPN, PSK identities), TLS 1.2 client certificates and PSK ClientKeyExchanges, DTLS
ClientHellos, QUIC Initials (public keys), SSH banners.

With --keylog (an NSS key log, SSLKEYLOGFILE format; repeatable), or Decryption Secrets Blocks in a pcapng
capture, TLS 1.2 and 1.3 flows are decrypted and their content scanned too. What is found inside TLS is listed
apart ("inside TLS": encrypted and decrypted, encoding starting with tls>) and does not change the exit status;
the summary says how many TLS flows were decrypted and how many had no key.

exit status:
  0  no cleartext finding
  1  at least one cleartext finding
  2  bad input or usage (one line on stderr naming the file and the problem)
  A partly readable capture still completes: a warning line on stderr says what could not be read, and the
  capture info counts undecodable packets and bytes per reason ("undecoded"). When a large share of the packets
  (20%), or every packet of a phase, could not be decoded, the table ends in a WARNING that the capture proves
  nothing (the pytest plugin raises CaptureError).

encapsulations decoded to the inner flow: VLAN, GRE (with transparent Ethernet bridging, ERSPAN I/II/III), VXLAN,
Geneve, IP-in-IP, EtherIP, MPLS (IP or Ethernet pseudowire with control word), PPPoE, 802.11 data frames of an
open network (radiotap, PPI or bare; LLC/SNAP); link types PPP, PPP in HDLC framing, Cisco HDLC and Linux NFLOG
(tcpdump -i nflog:N). Tunnel and link-layer headers are never scanned, nor DHCP's client hardware address and
the link-layer address in a DHCPv6 DUID (DUID-LLT, DUID-LL) where it is the frame's own source address (the
factory MAC behind a randomised one, or in a capture with no link layer, is a finding), nor a relay's client
link-layer address option.

TCP streams are reassembled in sequence order. An identical retransmission is compared, not scanned again
(retransmitted_bytes); a retransmitted or overlapping segment whose bytes differ from the copy delivered (or that
is older than the last 256 KiB kept to compare with) left the phone too: it is scanned as well, its findings
citing its frame (conflicting_bytes; past 1 MiB per direction only counted, conflicting_unscanned_bytes, with a
warning). Bytes sent after their connection closed (a late retransmission, or new data on the 4-tuple after an
RST with no SYN) are scanned too, segment by segment (past 1 MiB per direction a warning says how many were not).
Bytes never captured are counted as gaps (tcp_gaps, tcp_gap_bytes).

IDS.yaml keys (each a string or a list of strings, unless noted):
  {", ".join(k for k in SCHEMA_KEYS if k not in ("location", "cell", "wifi", "custom"))}
  location: {{lat, lon}} or a list of them (decimal degrees)
  cell:     {{mcc, mnc, lac (or tac), cid, bsid}} or a list: the serving cell (MCC/MNC quoted; a cid or a CDMA
            bsid required). Found beside its key (cid=, "SIM1CELLID":, lac=, BASEID=), as MCC-MNC-LAC-CID in
            decimal or hex, LAC and CID together, and a cell id of 7+ digits alone; never a short number alone.
  wifi:     {{bssid, ssid}} or a list: the network the phone is on (BSSID in every MAC spelling, SSID as text)
  custom:   {{name: value}} for anything else
  The same schema is a device's `identifiers:` block in devices.yaml.

OUT.json (--json):
  {{"capture": {{path, format, link_types, packets, first_time, last_time, warnings,
               undecoded: {{reason: {{packets, bytes}}}}, undecoded_phases, tunnelled_packets, tcp_gaps,
               tcp_gap_bytes, retransmitted_bytes, conflicting_bytes, conflicting_unscanned_bytes, ...}},
   "findings": [{{identifier, encoding, transport, src, sport, dst, dport, host, protocol, encrypted,
                 decrypted, frames (1-based, as Wireshark numbers them), time, phase, excerpt (identifier masked),
                 value (the matched text, masked as in the table), app, uid}}, ...],
   "flows": [{{transport, src, sport, dst, dport, host, protocol, encrypted, bytes, frames, ...,
              decryption (TLS flows: decrypted | no-key | failed), app, uid}}, ...],
   "attribution": {{source, snapshots, notes, apps: [{{uid, name, packages}}, ...],
                   coverage: [{{phase, flows, bytes, attributed_flows, attributed_bytes,
                               unattributed_unseen, unattributed_ambiguous, flows_share, bytes_share}}, ...]}}}}
  capture.tls: {{flows, decrypted, no_key, failed, phases: {{name: {{...}}}}}}
  One finding per (flow, identifier, encoding) -- and per phase when --phases is given. app and uid are null
  when no socket table named the sender (never guessed); "attribution" is there only with --apps or a
  PCAPdroid trailer (below).

PHASES.json (--phases): [{{"name": "boot", "start": <capture time>, "end": <capture time>}}, ...]
  Without --phases, CAPTURE.phases.json is used when it exists (phonehome's captures leave one).

APPS.txt (--apps): the phone's socket tables and package list, as its shell printed them, under section lines
  @packages [TIME]   output of `cmd package list packages -U` (`pm list packages -U` before Android 7)
  @tcp [TIME]        output of `cat /proc/net/tcp`; likewise @tcp6, @udp, @udp6 (one section per table per poll)
  TIME is seconds since the epoch on the capture's clock (omit it to match flows of any time); '#' lines before
  the first section are comments. Each flow is matched to a socket by its 4-tuple: a shared UID is named as
  the UID (android.uid.system) with every package sharing it. A table the phone refused (Permission denied)
  is said, and its flows stay unattributed. Without --apps, a PCAPdroid capture made with its
  "pcapdroid_trailer" setting names each packet's app itself, and that is used (attribution.source says which).
  Make an apps table with, e.g.:
    adb shell 'echo @packages; cmd package list packages -U; for t in tcp tcp6 udp udp6; do
               echo @$t $(date +%s); cat /proc/net/$t; done' > APPS.txt

environment:
  PHONEHOME_CACHE_DIR  where compiled matchers (and the identifiers of IDS.yaml files read before) are cached
                       (default $XDG_CACHE_HOME/phonehome or ~/.cache/phonehome): files 0600, encrypted with a
                       key derived from the identifiers
  PHONEHOME_MATCHER    "python" forces the pure-Python matcher (no hyperscan)
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "scan", help="find identifiers sent in cleartext in a capture", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", metavar="CAPTURE", help="pcap or pcapng file")
    parser.add_argument("--identifiers", "-i", required=True, metavar="IDS.yaml",
                        help="the device's identifiers (schema above)")
    parser.add_argument("--json", metavar="OUT.json",
                        help="also write the full result as JSON; '-' writes it to stdout (the table then goes "
                             "to stderr)")
    parser.add_argument("--phases", metavar="PHASES.json",
                        help="name windows of capture time (default: CAPTURE.phases.json when it exists, as "
                             "phonehome's own captures leave it)")
    parser.add_argument("--keylog", metavar="FILE", action="append", default=[],
                        help="TLS key log (NSS SSLKEYLOGFILE format) to decrypt TLS flows with; repeatable")
    parser.add_argument("--apps", metavar="APPS.txt",
                        help="name the app behind each flow from a saved socket and package table (format above)")
    parser.add_argument("--show-identifiers", action="store_true",
                        help="print matched values in full in the table and OUT.json (default: masked)")
    parser.add_argument("--evidence", action="store_true",
                        help="also print tshark's dissection of the frames each finding cites (needs tshark)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress line (shown on a terminal for captures over 100 MiB: bytes read, "
                             "percent, MB/s, time left)")


def run(args: argparse.Namespace) -> int:
    from phonehome.scan.prepared import cached_identifiers
    from phonehome.scan.scanner import load_phases  # keeps `phonehome --help` light

    identifiers = cached_identifiers(args.identifiers)
    phases_file = args.phases or _sidecar_phases(Path(args.capture))
    phases = load_phases(phases_file) if phases_file else ()
    to_stdout = args.json == "-"
    json_path = Path(args.json) if args.json and not to_stdout else None
    if json_path is not None and not json_path.parent.is_dir():
        raise InputError(json_path, "directory does not exist", fix="create it or write OUT.json elsewhere")
    table = None
    if args.apps:
        from phonehome.scan.attribution import load_apps_table

        table = load_apps_table(args.apps)  # read before the scan: a bad table fails fast
    result = _scan_with_progress(args, identifiers, phases)
    if table is None:  # a PCAPdroid capture may name each packet's app itself
        from phonehome.scan.pcapdroid_trailer import SOURCE, trailer_table

        table = trailer_table(args.capture)
        source = SOURCE
    else:
        source = args.apps
    if table is not None:
        from phonehome.scan.attribution import attribute

        result = attribute(result, table, source=source)
    if result.capture.packets == 0:
        raise InputError(args.capture, "the capture holds no packets, so it proves nothing",
                         fix="check that the capture ran while the phone was active")
    for warning in result.warnings:
        print(f"phonehome scan: warning: {args.capture}: {warning}", file=sys.stderr)
    if result.attribution is not None:
        for note in result.attribution.notes:
            print(f"phonehome scan: warning: {result.attribution.source}: {note}", file=sys.stderr)
    if phases_file and not args.phases:
        print(f"phonehome scan: phases from {phases_file}", file=sys.stderr)
    if to_stdout:
        result.write_json(sys.stdout, show_identifiers=args.show_identifiers)
        sys.stdout.write("\n")
    if json_path is not None:
        try:
            with json_path.open("w", encoding="utf-8") as handle:
                result.write_json(handle, show_identifiers=args.show_identifiers)
        except OSError as exc:
            raise InputError(json_path, f"cannot write: {exc.strerror}", fix="pass a writable path") from None
    print(render_table(result, show_identifiers=args.show_identifiers), file=sys.stderr if to_stdout else sys.stdout)
    if args.evidence and result.cleartext_findings:
        _print_evidence(args, result, None if args.show_identifiers else identifiers)
    return EXIT_LEAKS if result.cleartext_findings else EXIT_CLEAN


def _print_evidence(args: argparse.Namespace, result: ScanResult, identifiers: Identifiers | None) -> None:
    """Each cleartext finding's frames as Wireshark dissects them. Best effort, as in the Allure report: the
    findings stand (and set the exit code) whether or not tshark could dissect their frames; a failure is said
    in place of the dissection and on stderr."""
    from phonehome.scan.evidence import MAX_EVIDENCE_FRAMES, dissect_frames

    failed = False
    for finding in result.cleartext_findings:
        print(f"\n== {finding.identifier} ({finding.encoding}) -> {finding.host or finding.dst}")
        if failed:  # tshark failing twice on this capture will fail again: no minutes spent per finding
            print("(not dissected: tshark could not dissect this capture's frames above)")
            continue
        try:
            print(dissect_frames(args.capture, finding.frames, identifiers=identifiers))
        except PhonehomeError as exc:
            failed = True
            message = f"could not dissect frames {list(finding.frames[:MAX_EVIDENCE_FRAMES])} for evidence: {exc}"
            print(f"({message})")
            print(f"phonehome scan: warning: {message}", file=sys.stderr)


def _sidecar_phases(capture: Path) -> str | None:
    """``CAPTURE.phases.json`` beside the capture (phonehome's captures leave one), when it exists."""
    sidecar = capture.with_name(capture.name + ".phases.json")
    return str(sidecar) if sidecar.is_file() else None


def _scan_with_progress(args: argparse.Namespace, identifiers: Identifiers, phases: Sequence[Phase]) -> ScanResult:
    """Scan, with a progress line on stderr when a person is watching a long scan (see :mod:`.progress`)."""
    from phonehome.scan.progress import progress_line
    from phonehome.scan.scanner import scan_capture

    try:
        size = os.path.getsize(args.capture)
    except OSError:
        size = 0  # scan_capture says what is wrong with the path
    line = progress_line(sys.stderr, size, quiet=args.quiet)
    try:
        return scan_capture(args.capture, identifiers, phases=phases, keylogs=args.keylog, progress=line)
    finally:
        if line is not None:
            line.finish()


def _frames_text(frames: tuple[int, ...]) -> str:
    shown = ",".join(map(str, frames[:TABLE_FRAMES]))
    return shown + (f",+{len(frames) - TABLE_FRAMES}" if len(frames) > TABLE_FRAMES else "")


def render_table(result: Any, *, show_identifiers: bool = False) -> str:
    """The findings as an aligned text table (cleartext, then inside TLS), with a one-line summary under it."""
    info = result.capture
    findings = result.cleartext_findings
    inside = result.decrypted_findings
    encrypted = sum(1 for f in result.flows if f.encrypted)
    summary = (f"{info.packets} packets, {len(result.flows)} flows ({encrypted} encrypted) in {info.path}: "
               f"{len(findings)} cleartext finding{'s' if len(findings) != 1 else ''}")
    tls = result.tls_coverage()
    if inside or tls["decrypted"] or tls["failed"]:
        summary += (f"; {tls['flows']} TLS flows, {tls['decrypted']} decrypted, {tls['no_key']} without a key, "
                    f"{tls['failed']} failed: {len(inside)} finding{'s' if len(inside) != 1 else ''} inside TLS")
    undecoded = info.undecoded
    if undecoded:
        reasons = ", ".join(f"{reason} {item['packets']} ({item['bytes']} bytes)"
                            for reason, item in sorted(undecoded.items()))
        summary += f"\nnot decoded, so not scanned: {reasons}"
        if info.decode_problem:
            summary += "\nWARNING: this capture proves nothing: " + info.decode_problem
    attribution = getattr(result, "attribution", None)
    if attribution is not None:
        summary += "\n" + coverage_text(attribution)
    parts = []
    if findings:
        parts.append(_table(findings, show_identifiers=show_identifiers, attributed=attribution is not None))
    if inside:
        parts.append("inside TLS (decrypted with the key logs; not cleartext leaks):\n"
                     + _table(inside, show_identifiers=show_identifiers, attributed=attribution is not None))
    return "\n\n".join([*parts, summary])


def _table(findings: Any, *, show_identifiers: bool, attributed: bool) -> str:
    header: tuple[str, ...] = ("IDENTIFIER", "VALUE", "ENCODING", "PROTOCOL", "HOST", "DESTINATION", "FRAMES",
                               "PHASE")
    if attributed:
        header = ("APP", *header)
    rows = [header]
    for f in findings:
        value = f.value if show_identifiers else mask(f.value)
        dst = f"[{f.dst}]:{f.dport}" if ":" in f.dst else f"{f.dst}:{f.dport}"
        row: tuple[str, ...] = (f.identifier, value, f.encoding, f.protocol, f.host or "-", dst,
                                _frames_text(f.frames), f.phase or "-")
        if attributed:
            row = (f.app or "(unattributed)", *row)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def coverage_text(attribution: Any, phases: Any = None) -> str:
    """``attributed 12 of 14 flows (97% of bytes); unattributed: 2 never seen in a socket table``, per phase
    (only ``phases`` when given)."""
    lines = []
    for c in attribution.coverage:
        if phases is not None and c.phase not in phases:
            continue
        share = f" ({100 * c.attributed_bytes / c.bytes:.0f}% of bytes)" if c.bytes else ""
        why = [f"{c.unseen} never seen in a socket table" if c.unseen else "",
               f"{c.ambiguous} with two owners" if c.ambiguous else ""]
        reasons = "; ".join(w for w in why if w)
        lines.append(f"apps: {c.phase or '(no phase)'}: attributed {c.attributed_flows} of {c.flows} flows{share}"
                     + (f"; unattributed: {reasons}" if reasons else ""))
    return "\n".join(lines) or "apps: no flows to attribute"
