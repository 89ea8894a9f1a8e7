"""Which app sent each flow: the phone's own socket tables, matched to a scan's flows by 4-tuple.

Pure and offline: parsers for ``/proc/net/{tcp,tcp6,udp,udp6}`` and ``cmd package list packages -U`` as real
Android releases print them, a table of sockets seen over time, and :func:`attribute`, which fills ``app`` and
``uid`` on a :class:`~phonehome.scan.scanner.ScanResult`'s flows and findings and counts, per phase, the flows and
bytes it could attribute. Nothing is guessed: a flow whose socket was never seen (it opened and closed between two
polls), or whose 4-tuple was owned by two UIDs at once, stays unattributed and is counted as such.

The apps table (``phonehome scan --apps FILE``, and what the live poller writes beside a capture) is plain text,
the commands' own output under section lines, so an auditor can make one with adb and no phonehome::

    # comment
    @packages [TIME]          output of `cmd package list packages -U` (or `pm list packages -U`)
    @tcp [TIME]               output of `cat /proc/net/tcp`; likewise @tcp6, @udp, @udp6
    ...

``TIME`` is when the section was read, in seconds since the epoch on the capture's clock; sections without one
match flows of any time. Sections repeat: each poll of the four tables is one more snapshot, and a package list
read again after a power-on replaces the UIDs it lists. A table section whose body is an error (``cat: ...:
Permission denied``) records that the phone refused it.
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phonehome.errors import InputError

if TYPE_CHECKING:
    from phonehome.scan.scanner import Flow, ScanResult

#: the four socket tables, in the order the poller reads them
TABLES = ("tcp", "tcp6", "udp", "udp6")
#: section names of the apps table
SECTIONS = (*TABLES, "packages")
#: a socket seen this long before or after a flow still explains it (the poll interval plus clock jitter)
MATCH_SLACK_S = 2.0
#: /proc/net state codes (include/net/tcp_states.h); UDP uses 01 for connected and 07 for unconnected sockets
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
STATE_LISTEN = 10
#: well-known Android UIDs (system/core android_filesystem_config.h) and the sharedUserId their packages declare
AID_NAMES = {0: "root", 1000: "android.uid.system", 1001: "android.uid.phone", 1002: "android.uid.bluetooth",
             1007: "android.uid.log", 1013: "media", 1021: "gps", 1027: "android.uid.nfc", 1051: "dns_tether",
             1052: "dns", 1068: "android.uid.se", 1073: "android.uid.networkstack", 2000: "android.uid.shell",
             9999: "nobody"}
#: Android's per-user UID range (UserHandle.PER_USER_RANGE): uid = user * 100000 + app id
PER_USER_RANGE = 100000
FIRST_ISOLATED_UID = 90000
LAST_ISOLATED_UID = 99999

_SECTION = re.compile(r"^@(\w+)(?:[ \t]+(\S+))?[ \t]*$")
_HEX_ADDR = re.compile(r"^([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})$")
_PACKAGE_LINE = re.compile(r"^package:(?:(?P<path>\S*)=)?(?P<name>[A-Za-z0-9_.]+)(?P<rest>.*)$")
_UID_FIELD = re.compile(r"(?:^|\s)uid:(\d+(?:,\d+)*)")
#: what a shell prints instead of a table it may not read
_REFUSAL = re.compile(r"permission denied|no such file|not found|inaccessible|operation not permitted", re.I)


# --- /proc/net -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Socket:
    """One row of a /proc/net table; addresses as the scanner prints them (IPv4-mapped IPv6 as IPv4)."""

    transport: str  # "tcp" or "udp"
    local: str
    lport: int
    remote: str
    rport: int
    state: int
    uid: int
    inode: int

    @property
    def owned(self) -> bool:
        """False for rows no socket owns (TIME_WAIT and request sockets print uid 0 and inode 0)."""
        return self.inode != 0


def proc_net_address(text: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ``("127.0.0.1", 8080)``; the kernel prints each 32-bit word of the address in host
    (little-endian on every Android ABI) order, the port in big-endian hex. IPv4-mapped IPv6 comes back as IPv4,
    as the capture shows the packets of a dual-stack socket."""
    match = _HEX_ADDR.match(text)
    if match is None:
        raise ValueError(f"not a /proc/net address: {text!r}")
    words, port = match.group(1), int(match.group(2), 16)
    raw = b"".join(bytes.fromhex(words[i:i + 8])[::-1] for i in range(0, len(words), 8))
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw)), port
    address = ipaddress.IPv6Address(raw)
    mapped = address.ipv4_mapped
    return (str(mapped) if mapped is not None else str(address)), port


def parse_proc_net(text: str, table: str, *, source: str = "/proc/net", first_line: int = 1) -> list[Socket]:
    """The sockets of one ``/proc/net/<table>`` dump. The header line and blank lines are skipped; a row that
    does not parse raises :class:`InputError` naming its line."""
    if table not in TABLES:
        raise ValueError(f"unknown socket table {table!r}")
    transport = table.rstrip("6")
    sockets = []
    for number, line in enumerate(text.splitlines(), first_line):
        fields = line.split()
        if not fields or fields[0] == "sl":
            continue
        try:
            if len(fields) < 10 or not fields[0].endswith(":"):
                raise ValueError("expected 'sl: local remote st queues timer retrnsmt uid timeout inode ...'")
            local, lport = proc_net_address(fields[1])
            remote, rport = proc_net_address(fields[2])
            sockets.append(Socket(transport, local, lport, remote, rport, int(fields[3], 16), int(fields[7]),
                                  int(fields[9])))
        except ValueError as exc:
            raise InputError(source, f"{table}: {exc}", where=f"line {number}",
                             fix="give the output of 'cat /proc/net/" + table + "' as the phone printed it") from None
    return sockets


#: the header lines the kernel prints (net/ipv4/tcp_ipv4.c, net/ipv6/tcp_ipv6.c, net/ipv4/udp.c, net/ipv6/udp.c)
PROC_NET_HEADERS = {
    "tcp": "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
    "tcp6": "  sl  local_address                         remote_address                        st tx_queue rx_queue "
            "tr tm->when retrnsmt   uid  timeout inode",
    "udp": "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref "
           "pointer drops",
    "udp6": "  sl  local_address                         remote_address                        st tx_queue rx_queue "
            "tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
}


def proc_net_hex(address: str, port: int, *, six: bool) -> str:
    """The inverse of :func:`proc_net_address`: an IPv4 address in a ``*6`` table is written IPv4-mapped."""
    ip = ipaddress.ip_address(address)
    if six and isinstance(ip, ipaddress.IPv4Address):
        ip = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)
    raw = ip.packed
    return "".join(raw[i:i + 4][::-1].hex().upper() for i in range(0, len(raw), 4)) + f":{port:04X}"


def render_proc_net(sockets: Iterable[Socket], table: str) -> str:
    """``sockets`` as the kernel prints ``/proc/net/<table>`` on a little-endian phone (the virtual phone's
    shell serves its namespace's sockets this way)."""
    six = table.endswith("6")
    lines = [PROC_NET_HEADERS[table]]
    for index, sock in enumerate(sockets):
        local = proc_net_hex(sock.local, sock.lport, six=six)
        remote = proc_net_hex(sock.remote, sock.rport, six=six)
        row = (f"{index:4d}: {local} {remote} {sock.state:02X} 00000000:00000000 00:00000000 00000000 "
               f"{sock.uid:5d} {0:8d} {sock.inode} ")
        row += "2 0000000000000000 0" if sock.transport == "udp" else "1 0000000000000000 20 4 30 10 -1"
        lines.append(row)
    return "\n".join(lines) + "\n"


# --- package list --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    """Who owns a UID: one package, or every package sharing it under the UID's name."""

    uid: int
    name: str
    packages: tuple[str, ...]

    @property
    def shared(self) -> bool:
        return len(self.packages) > 1

    def describe(self) -> str:
        """``com.example.app`` or ``android.uid.system (uid 1000: android, com.android.settings)``."""
        if not self.shared and self.packages and self.name == self.packages[0]:
            return self.name
        listed = f": {', '.join(self.packages)}" if self.packages else ""
        return f"{self.name} (uid {self.uid}{listed})"

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "name": self.name, "packages": list(self.packages)}


def parse_package_list(text: str, *, source: str = "package list", first_line: int = 1) -> dict[int, list[str]]:
    """UID -> packages from ``cmd package list packages -U`` / ``pm list packages -U``.

    Lines are ``package:NAME uid:N`` (AOSP PackageManagerShellCommand.runListPackages), possibly with ``-f``'s
    ``PATH=`` before the name, `` versionCode:N`` and ``  installer=X`` before the UID, and several UIDs
    (``uid:10123,1010123``) when listed for several users. APEX packages have no UID and are skipped. A release
    that does not know ``-U`` answers ``Error: Unknown option: -U``: that is an :class:`InputError`.
    """
    owners: dict[int, list[str]] = {}
    for number, line in enumerate(text.splitlines(), first_line):
        line = line.strip()
        if not line:
            continue
        match = _PACKAGE_LINE.match(line)
        if match is None:
            raise InputError(source, f"not a package line: {line[:120]!r}", where=f"line {number}",
                             fix="give the output of 'cmd package list packages -U' (or 'pm list packages -U' "
                                 "on releases before Android 7)")
        uids = _UID_FIELD.search(match.group("rest"))
        if uids is None:
            continue  # an APEX, or a list made without -U: nothing to map
        for uid in uids.group(1).split(","):
            packages = owners.setdefault(int(uid), [])
            if match.group("name") not in packages:
                packages.append(match.group("name"))
    return owners


def app_for(uid: int, owners: Mapping[int, Sequence[str]]) -> App:
    """The owner of ``uid``: its package, or for a shared UID its name with every package sharing it. A UID of
    another user (10 -> 1010123) is named after its app id; UIDs no package owns keep their AID name or 'uid N'."""
    packages = tuple(sorted(owners.get(uid, ())))
    app_id = uid % PER_USER_RANGE
    user = uid // PER_USER_RANGE
    if not packages and user:
        packages = tuple(sorted(owners.get(app_id, ())))
    suffix = f" (user {user})" if user else ""
    if len(packages) == 1:
        return App(uid, packages[0] + suffix, packages)
    if FIRST_ISOLATED_UID <= app_id <= LAST_ISOLATED_UID:
        return App(uid, "isolated process" + suffix, packages)
    name = AID_NAMES.get(app_id) or (f"shared uid {app_id}" if packages else f"uid {app_id}")
    return App(uid, name + suffix, packages)


# --- the apps table ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """A socket's owner as seen by the polls between ``first`` and ``last`` (None: time unknown)."""

    uid: int
    first: float | None
    last: float | None

    def near(self, start: float, end: float, slack: float) -> bool:
        if self.first is None or self.last is None:
            return True
        return self.first - slack <= end and start <= self.last + slack


@dataclass
class SocketTable:
    """Sockets seen over time, per 4-tuple (TCP, connected UDP) and per local port (unconnected UDP), and the
    package list: what :func:`attribute` needs. Built by the poller as it polls, or read from an apps table."""

    owners: dict[int, list[str]] = field(default_factory=dict)
    snapshots: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # table -> what the phone said instead
    package_error: str | None = None
    failed_polls: list[str] = field(default_factory=list)  # what the phone or adb said when a poll failed
    times: list[float] = field(default_factory=list)
    _flows: dict[tuple[str, str, int, str, int], list[Observation]] = field(default_factory=dict)
    _ports: dict[tuple[str, int], list[tuple[str, Observation]]] = field(default_factory=dict)

    def add_packages(self, owners: Mapping[int, Sequence[str]]) -> None:
        """A package list read (again): its UIDs replace what an earlier list said about them."""
        for uid, packages in owners.items():
            self.owners[uid] = list(packages)

    def add_snapshot(self, sockets: Iterable[Socket], time: float | None) -> None:
        """One poll of the tables: every owned, non-listening socket extends (or starts) its observation."""
        self.snapshots += 1
        if time is not None:
            bisect.insort(self.times, time)
        for sock in sockets:
            if not sock.owned or sock.state == STATE_LISTEN:
                continue
            if sock.rport == 0:  # an unconnected UDP socket: only its local port is known
                self._extend(self._ports.setdefault((sock.transport, sock.lport), []), sock, time, sock.local)
            else:
                key = (sock.transport, sock.local, sock.lport, sock.remote, sock.rport)
                self._extend(self._flows.setdefault(key, []), sock, time, None)

    @staticmethod
    def _extend(seen: list[Any], sock: Socket, time: float | None, local: str | None) -> None:
        for index in range(len(seen) - 1, -1, -1):
            item = seen[index]
            obs: Observation = item[1] if local is not None else item
            if obs.uid == sock.uid and (local is None or item[0] == local):
                first = obs.first if obs.first is not None else time
                last = time if time is not None and (obs.last is None or time > obs.last) else obs.last
                new = Observation(sock.uid, first, last)
                seen[index] = (item[0], new) if local is not None else new
                return
        obs = Observation(sock.uid, time, time)
        seen.append((local, obs) if local is not None else obs)

    def observe(self, sock: Socket, first: float, last: float) -> None:
        """A connection known to belong to ``sock.uid`` from ``first`` to ``last`` (e.g. from PCAPdroid's
        per-packet trailer), without a poll of the tables."""
        key = (sock.transport, sock.local, sock.lport, sock.remote, sock.rport)
        self._flows.setdefault(key, []).append(Observation(sock.uid, first, last))

    def refuse(self, table: str, message: str) -> None:
        self.refused.setdefault(table, message.strip().splitlines()[0][:200] if message.strip() else "no output")

    @property
    def usable(self) -> bool:
        """At least one table was read at least once."""
        return self.snapshots > 0 and len(self.refused) < len(TABLES)

    def owner(self, flow: Flow) -> tuple[int | None, str]:
        """The UID that owned ``flow``'s socket while it ran, and why not when None (``unseen``, ``ambiguous``)."""
        transport = flow.transport.lower()
        start, end = flow.first_time, flow.last_time
        for local, lport, remote, rport in ((flow.src, flow.sport, flow.dst, flow.dport),
                                            (flow.dst, flow.dport, flow.src, flow.sport)):
            seen = self._flows.get((transport, local, lport, remote, rport))
            if seen:
                return _one_uid(seen, start, end)
        if transport == "udp":
            for local, lport in ((flow.src, flow.sport), (flow.dst, flow.dport)):
                bound = [obs for addr, obs in self._ports.get((transport, lport), ())
                         if addr == local or ipaddress.ip_address(addr).is_unspecified]
                if bound:
                    return _one_uid(bound, start, end)
        return None, "unseen"


def _one_uid(seen: Sequence[Observation], start: float, end: float) -> tuple[int | None, str]:
    uids = {obs.uid for obs in seen}
    if len(uids) > 1:  # the 4-tuple was reused: only the owner at the flow's time counts
        uids = {obs.uid for obs in seen if obs.near(start, end, MATCH_SLACK_S)}
    if len(uids) == 1:
        return next(iter(uids)), "seen"
    return None, "ambiguous" if uids else "unseen"


def parse_apps_table(text: str, *, source: str = "apps table") -> SocketTable:
    """Read an apps table (the format in this module's docstring); bad input names its line."""
    table = SocketTable()
    if not read_apps_text(table, text, source=source):
        raise InputError(source, "no @tcp, @tcp6, @udp, @udp6 or @packages section",
                         fix="see 'phonehome scan --help' for the apps table format")
    return table


def read_apps_text(table: SocketTable, text: str, *, source: str = "apps table") -> int:
    """Add the sections of ``text`` to ``table`` (the poller feeds each poll this way); returns how many
    sections it read. Table sections of one time form one snapshot."""
    sections = _sections(text, source)
    pending: list[Socket] = []
    pending_time: object = _NOTHING
    for name, time, body, line in sections:
        if name in TABLES:
            if pending_time is not _NOTHING and time != pending_time:
                table.add_snapshot(pending, pending_time)  # type: ignore[arg-type]
                pending = []
            pending_time = time
            if _refused(body):
                table.refuse(name, body)
                continue
            pending.extend(parse_proc_net(body, name, source=source, first_line=line + 1))
        else:
            if _refused(body) or body.lstrip().lower().startswith(("error", "exception")):
                table.package_error = body.strip().splitlines()[0][:200] if body.strip() else "no output"
                continue
            table.add_packages(parse_package_list(body, source=source, first_line=line + 1))
    if pending_time is not _NOTHING:
        table.add_snapshot(pending, pending_time)  # type: ignore[arg-type]
    return len(sections)


_NOTHING = object()


def _refused(body: str) -> bool:
    lines = [line for line in body.splitlines() if line.strip()]
    return not lines or (len(lines) <= 2 and bool(_REFUSAL.search(lines[0])) and not lines[0].lstrip().startswith(
        ("sl", "package:")))


def _sections(text: str, source: str) -> list[tuple[str, float | None, str, int]]:
    out: list[tuple[str, float | None, str, int]] = []
    current: tuple[str, float | None, int] | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#") and current is None:
            continue
        match = _SECTION.match(line)
        if match is None:
            if current is None and line.strip():
                raise InputError(source, "text before the first section", where=f"line {number}",
                                 fix="start each table with a line such as '@tcp6 1733222400.25'")
            body.append(line)
            continue
        if match.group(1) not in SECTIONS:
            raise InputError(source, f"unknown section @{match.group(1)}", where=f"line {number}",
                             fix=f"use one of {', '.join('@' + s for s in SECTIONS)}")
        time: float | None = None
        if match.group(2) is not None:
            try:
                time = float(match.group(2))
            except ValueError:
                raise InputError(source, f"section time {match.group(2)!r} is not a number", where=f"line {number}",
                                 fix="give seconds since the epoch, e.g. 1733222400.25") from None
        if current is not None:
            out.append((current[0], current[1], "\n".join(body), current[2]))
        current, body = (match.group(1), time, number), []
    if current is not None:
        out.append((current[0], current[1], "\n".join(body), current[2]))
    return out


def load_apps_table(path: str | os.PathLike[str]) -> SocketTable:
    """``phonehome scan --apps FILE``."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror}", fix="pass a saved apps table") from None
    return parse_apps_table(text, source=str(path))


# --- attribution ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseCoverage:
    """How much of one phase's traffic was attributed; unattributed flows are counted by reason."""

    phase: str | None
    flows: int = 0
    bytes: int = 0
    attributed_flows: int = 0
    attributed_bytes: int = 0
    unseen: int = 0  # the socket opened and closed between two polls (or the phone hid it)
    ambiguous: int = 0  # two UIDs owned the 4-tuple at the flow's time

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "flows": self.flows, "bytes": self.bytes,
                "attributed_flows": self.attributed_flows, "attributed_bytes": self.attributed_bytes,
                "unattributed_unseen": self.unseen, "unattributed_ambiguous": self.ambiguous,
                "flows_share": round(self.attributed_flows / self.flows, 4) if self.flows else None,
                "bytes_share": round(self.attributed_bytes / self.bytes, 4) if self.bytes else None}


@dataclass(frozen=True)
class Attribution:
    """What :func:`attribute` found: the apps it named, coverage per phase, and what limited it."""

    source: str
    apps: tuple[App, ...]
    coverage: tuple[PhaseCoverage, ...]
    snapshots: int
    notes: tuple[str, ...] = ()

    def app(self, uid: int | None) -> App | None:
        return next((app for app in self.apps if app.uid == uid), None)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "snapshots": self.snapshots, "notes": list(self.notes),
                "apps": [app.to_json() for app in self.apps], "coverage": [c.to_json() for c in self.coverage]}


def unavailable(source: str, reason: str) -> Attribution:
    """No table at all (the phone refused it, or there was no poller): every flow stays unattributed."""
    return Attribution(source=source, apps=(), coverage=(), snapshots=0, notes=(reason,))


def attribute(result: ScanResult, table: SocketTable, *, source: str) -> ScanResult:
    """``result`` with ``app``/``uid`` on every flow and finding whose socket the table saw, and its
    :class:`Attribution` (coverage per phase, notes on what the phone refused) in ``result.attribution``."""
    notes = [f"the phone refused /proc/net/{name} ({message}); its flows are unattributed"
             for name, message in sorted(table.refused.items())]
    if table.failed_polls:
        notes.append(f"{len(table.failed_polls)} poll(s) of the socket tables failed (first: "
                     f"{table.failed_polls[0][:200]}); sockets open only then are unattributed")
    if table.package_error:
        notes.append(f"the package list failed ({table.package_error}); apps are named by UID only")
    if not table.usable:
        notes.append("no socket table was read: every flow is unattributed")
    apps: dict[int, App] = {}
    # flows by 5-tuple (a port reused within the capture gives two flows: a finding takes the one of its time)
    owner_of: dict[tuple[str, str, int, str, int], list[tuple[float, int | None]]] = {}
    flows = []
    counts: dict[str | None, dict[str, int]] = {}
    for flow in result.flows:
        uid, why = table.owner(flow) if table.usable else (None, "unseen")
        owner_of.setdefault((flow.transport, flow.src, flow.sport, flow.dst, flow.dport), []).append(
            (flow.first_time, uid))
        name = None
        if uid is not None:
            app = apps.get(uid) or apps.setdefault(uid, app_for(uid, table.owners))
            name = app.name
        flows.append(dataclasses.replace(flow, app=name, uid=uid))
        phase = _phase_of(result, flow.first_time)
        count = counts.setdefault(phase, {"flows": 0, "bytes": 0, "af": 0, "ab": 0, "unseen": 0, "ambiguous": 0})
        count["flows"] += 1
        count["bytes"] += flow.bytes
        if uid is not None:
            count["af"] += 1
            count["ab"] += flow.bytes
        else:
            count[why] += 1
    findings = []
    for finding in result.findings:
        # a finding's src is the side that sent the identifier: the server, when it came in a response
        candidates = owner_of.get((finding.transport, finding.src, finding.sport, finding.dst, finding.dport)) or \
            owner_of.get((finding.transport, finding.dst, finding.dport, finding.src, finding.sport), [])
        started = [uid for first, uid in sorted(candidates, key=lambda item: item[0]) if first <= finding.time]
        uid = started[-1] if started else (candidates[0][1] if candidates else None)
        findings.append(dataclasses.replace(finding, app=apps[uid].name if uid is not None else None, uid=uid))
    order = [p.name for p in result.phases] + [None]
    coverage = tuple(PhaseCoverage(phase, c["flows"], c["bytes"], c["af"], c["ab"], c["unseen"], c["ambiguous"])
                     for phase, c in sorted(counts.items(), key=lambda item: order.index(item[0])
                                            if item[0] in order else len(order)))
    info = Attribution(source=source, apps=tuple(sorted(apps.values(), key=lambda app: app.uid)),
                       coverage=coverage, snapshots=table.snapshots, notes=tuple(notes))
    return dataclasses.replace(result, flows=tuple(flows), findings=tuple(findings), attribution=info)


def _phase_of(result: ScanResult, t: float) -> str | None:
    return next((phase.name for phase in result.phases if phase.contains(t)), None)
