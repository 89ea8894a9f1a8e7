"""Network namespaces, veth pairs and the fake-internet namespace of the virtual lab.

Each virtual phone lives in its own network namespace. Its ``wlan0`` is one end of a veth pair and carries the
phone's Wi-Fi MAC, so a capture filter ``ether host <wifi_mac>`` works as on an access point; the other end stays in
the root namespace and is the capture point. The root-side ends and one veth into the fake-internet namespace are
joined by a bridge in the root namespace that is pure layer 2: no address on the bridge or on any root-side end and
no routing, so nothing a virtual phone sends can leave the machine or reach the host's own network.

Address plan (only ever configured inside our own namespaces)::

    10.200.0.1/16        the fake internet's LAN side: DNS resolver and default gateway of every phone
    10.200.0.(10+n)/16   phone n
    198.18.0.0/15        the fake internet's hosts (RFC 2544 benchmark range); the fake-internet namespace owns
                         every address through a local route, so even a hard-coded IP gets a real TCP handshake;
                         other destinations get "no route" from the fake internet, as off-line

Every created namespace, link and process is recorded in a state file (``/run/phonehome/<instance>.json``) before
it is created, so :func:`teardown` can remove what a crashed run left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phonehome.errors import InputError, LabError

log = logging.getLogger(__name__)

#: one ``ip`` invocation; netlink calls answer in milliseconds, this only guards against a wedged kernel
IP_TIMEOUT_S = 10.0
#: how long a process gets to exit after SIGTERM before it is killed
TERM_GRACE_S = 3.0
#: where state files live; overridable for tests that must not touch /run
STATE_DIR_ENV = "PHONEHOME_RUN_DIR"
DEFAULT_STATE_DIR = Path("/run/phonehome")

LAN = ipaddress.IPv4Network("10.200.0.0/16")
GATEWAY_IP = "10.200.0.1"
FIRST_PHONE_HOST = 10
MAX_PHONES = 240
INTERNET = ipaddress.IPv4Network("198.18.0.0/15")
#: the fake internet's interface inside its namespace
FAKENET_IFNAME = "eth0"
#: the phone-side end inside each phone's namespace, named as on a phone
PHONE_IFNAME = "wlan0"
#: Linux interface names are at most 15 bytes
MAX_IFNAME = 15

_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_PERMISSION_WORDS = ("Operation not permitted", "Permission denied")


def state_dir() -> Path:
    """The directory of state files: ``$PHONEHOME_RUN_DIR`` or ``/run/phonehome``."""
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def state_path(instance: str) -> Path:
    return state_dir() / f"{instance}.json"


def check_instance(instance: str) -> str:
    """Instance names end up in file and namespace names: keep them short and plain."""
    if not _INSTANCE.fullmatch(instance):
        raise InputError(None, f"bad lab instance name {instance!r}", where="--instance",
                         fix="use 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return instance


def instance_tag(instance: str) -> str:
    """Six hex digits derived from the instance name: the prefix ``ph<tag>`` keeps two labs' links apart."""
    return hashlib.sha1(instance.encode()).hexdigest()[:6]


def mac_for(serial: str) -> str:
    """A stable, locally administered unicast MAC for a phone whose identifiers name no ``wifi_mac``."""
    digest = bytearray(hashlib.sha1(serial.encode()).digest()[:6])
    digest[0] = (digest[0] | 0x02) & 0xFE
    return ":".join(f"{b:02x}" for b in digest)


def host_ip(name: str, taken: set[str]) -> str:
    """A stable fake-internet address for a host name; probes onwards on a clash so each name has its own."""
    size = INTERNET.num_addresses
    start = int.from_bytes(hashlib.sha1(name.lower().encode()).digest()[:4], "big") % size
    for step in range(size):
        offset = (start + step) % size
        address = str(INTERNET.network_address + offset)
        last = offset & 0xFF
        if last not in (0, 255) and address not in taken:
            return address
    raise LabError("the fake internet ran out of addresses")  # 130k names: not reachable in practice


# --- the plan: names and addresses, pure ----------------------------------------------------------------------


@dataclass(frozen=True)
class PhoneNet:
    """One phone's place in the lab network."""

    serial: str
    label: str
    netns: str
    interface: str  # root-side end: the capture point
    wifi_mac: str
    ip: str


@dataclass(frozen=True)
class NetPlan:
    """Every name and address of one lab instance, decided before anything is created."""

    instance: str
    bridge: str
    fakenet_netns: str
    fakenet_link: str  # root-side end of the fake internet's veth
    gateway_ip: str
    phones: tuple[PhoneNet, ...]

    def links(self) -> tuple[str, ...]:
        """Root-namespace links, in creation order."""
        return (self.bridge, self.fakenet_link, *(phone.interface for phone in self.phones))

    def namespaces(self) -> tuple[str, ...]:
        return (self.fakenet_netns, *(phone.netns for phone in self.phones))


def plan(instance: str, phones: Sequence[tuple[str, str, str | None]]) -> NetPlan:
    """Names and addresses for ``phones`` given as (serial, label, wifi_mac or None)."""
    check_instance(instance)
    if len(phones) > MAX_PHONES:
        raise LabError(f"a lab holds at most {MAX_PHONES} phones, got {len(phones)}")
    prefix = f"ph{instance_tag(instance)}"
    macs: set[str] = set()
    nets: list[PhoneNet] = []
    for index, (serial, label, wifi_mac) in enumerate(phones):
        mac = (wifi_mac or mac_for(serial)).lower().replace("-", ":")
        if not _MAC.fullmatch(mac):
            raise InputError(None, f"wifi_mac {mac!r} of {label} is not a MAC address",
                             where=f"{label}.identifiers.wifi_mac", fix="write six hex pairs, e.g. 02:00:00:00:00:01")
        if int(mac[:2], 16) & 1:
            raise InputError(None, f"wifi_mac {mac!r} of {label} is a multicast address",
                             where=f"{label}.identifiers.wifi_mac", fix="the first byte must be even")
        if mac in macs:
            raise InputError(None, f"two phones share wifi_mac {mac!r}", where=f"{label}.identifiers.wifi_mac",
                             fix="give each phone its own Wi-Fi MAC")
        macs.add(mac)
        nets.append(PhoneNet(serial=serial, label=label, netns=f"phonehome-{instance}-p{index}",
                             interface=f"{prefix}p{index}", wifi_mac=mac,
                             ip=str(LAN.network_address + FIRST_PHONE_HOST + index)))
    result = NetPlan(instance=instance, bridge=f"{prefix}br", fakenet_netns=f"phonehome-{instance}-net",
                     fakenet_link=f"{prefix}in", gateway_ip=GATEWAY_IP, phones=tuple(nets))
    assert all(len(name) <= MAX_IFNAME for name in result.links())
    return result


# --- the state file ------------------------------------------------------------------------------------------


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks, or None if it is gone or a zombie (exited, not yet reaped by
    its parent): a pid plus this names one living process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def process_alive(pid: int, start_time: int | None) -> bool:
    """True if the process recorded as (pid, start_time) still runs (not a reused pid)."""
    now = process_start_time(pid)
    return now is not None and (start_time is None or now == start_time)


@dataclass(frozen=True)
class RecordedProcess:
    pid: int
    start_time: int | None
    name: str


@dataclass
class StateFile:
    """What one lab instance owns, written to disk before each thing is created.

    Mutable on purpose: it is the running daemon's ledger. ``extra`` holds the lab's public state (adb port,
    phones) for :func:`phonehome.virtual.lab.Lab.status`.
    """

    instance: str
    owner_pid: int
    owner_start: int | None
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    processes: list[RecordedProcess] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return state_path(self.instance)

    def save(self) -> None:
        """Write atomically (rename), readable only by root: the file names processes to kill."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        data = asdict(self)
        tmp.write_text(json.dumps(data, indent=1))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def add_netns(self, name: str) -> None:
        self.netns.append(name)
        self.save()

    def add_link(self, name: str) -> None:
        self.links.append(name)
        self.save()

    def add_process(self, pid: int, name: str) -> None:
        self.processes.append(RecordedProcess(pid=pid, start_time=process_start_time(pid), name=name))
        self.save()

    def owner_alive(self) -> bool:
        return process_alive(self.owner_pid, self.owner_start)

    @classmethod
    def load(cls, instance: str) -> StateFile | None:
        """The recorded state, or None when there is none (or it is unreadable: then it is moved aside)."""
        path = state_path(instance)
        try:
            data = json.loads(path.read_text())
            data["processes"] = [RecordedProcess(**p) for p in data.get("processes", [])]
            return cls(**data)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise LabError(f"cannot read the lab state {path}: {root_message()}") from None
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("unreadable lab state %s (%s): moved aside", path, exc)
            with contextlib.suppress(OSError):
                path.rename(path.with_suffix(".broken"))
            return None

    @classmethod
    def claim(cls, instance: str) -> StateFile:
        """Become the owner of ``instance``; a dead owner's leftovers are cleaned first."""
        old = cls.load(instance)
        if old is not None:
            if old.owner_alive() and old.owner_pid != os.getpid():
                raise LabError(f"lab {instance!r} is already running (pid {old.owner_pid}); stop it with "
                               f"'phonehome lab down --instance {instance}' or pick another --instance")
            teardown_state(old)
        state = cls(instance=instance, owner_pid=os.getpid(), owner_start=process_start_time(os.getpid()))
        state.save()
        return state


# --- commands ------------------------------------------------------------------------------------------------


def _binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise LabError(f"the '{name}' command ({package}) is not installed; install it: apt-get install {package}")
    return found


def _ip_binary() -> str:
    return _binary("ip", "iproute2")


def require_root() -> None:
    """Fail before anything is created when the process cannot manage namespaces."""
    if os.geteuid() != 0:
        raise LabError(root_message())


def root_message() -> str:
    return ("the virtual lab needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces and "
            "veth pairs; run it with sudo, e.g. 'sudo .venv/bin/phonehome lab up' or 'sudo .venv/bin/pytest ...'")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one ``ip`` command; failures become LabError carrying the command and its stderr."""
    return _run([_ip_binary(), *args], check=check)


def _run(command: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"'{' '.join(command)}' did not finish in {IP_TIMEOUT_S} s") from exc
    if check and proc.returncode != 0:
        stderr = proc.stderr.strip()
        if any(word in stderr for word in _PERMISSION_WORDS):
            raise LabError(f"{root_message()} ('{' '.join(command)}': {stderr})")
        raise LabError(f"'{' '.join(command)}' failed (rc={proc.returncode}): {stderr}")
    return proc


def netns_exec_prefix(netns: str) -> list[str]:
    """The argument prefix that runs a command inside ``netns``."""
    return [_ip_binary(), "netns", "exec", netns]


# --- create --------------------------------------------------------------------------------------------------


def create(netplan: NetPlan, state: StateFile) -> None:
    """Build the namespaces, veths and bridge of ``netplan``, recording each in ``state`` before creating it.

    On failure, what was created stays recorded: the caller tears it down (``teardown_state``).
    """
    require_root()
    _create_bridge(netplan.bridge, state)
    _create_fakenet(netplan, state)
    for phone in netplan.phones:
        _create_phone(netplan, phone, state)


def _create_bridge(bridge: str, state: StateFile) -> None:
    state.add_link(bridge)
    # bridged lab frames skip the host's iptables (br_netfilter): a FORWARD DROP policy, as Docker sets, would
    # otherwise cut the phones off from the fake internet; the frames never reach the host's network anyway
    ip("link", "add", bridge, "type", "bridge", "nf_call_iptables", "0", "nf_call_ip6tables", "0",
       "nf_call_arptables", "0")
    _disable_ipv6_here(bridge)
    # no IPv6 link-local address either: the root namespace must have no address on the lab at all
    ip("link", "set", "dev", bridge, "addrgenmode", "none")
    ip("link", "set", "dev", bridge, "up")


def _add_netns(name: str, state: StateFile) -> None:
    state.add_netns(name)
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "dev", "lo", "up")
    # no IPv6 inside: the fake internet speaks IPv4, and an EUI-64 address or MLD report would put the MAC
    # into packets the phone's firmware never sent
    _run([*netns_exec_prefix(name), _binary("sysctl", "procps"), "-q", "-w",
          "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])


def _disable_ipv6_here(link: str) -> None:
    """No IPv6 on a root-namespace link: it must not even send router or multicast-listener messages."""
    Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").write_text("1\n")


def _add_veth(root_end: str, netns: str, inner_name: str, bridge: str, state: StateFile,
              mac: str | None = None) -> None:
    """A veth pair from the bridge into ``netns``; the inner end gets ``inner_name`` (and ``mac``) but no IPv6."""
    state.add_link(root_end)
    peer = ["peer", "name", inner_name]
    if mac is not None:
        peer += ["address", mac]
    ip("link", "add", root_end, "type", "veth", *peer, "netns", netns)
    ip("link", "set", "dev", root_end, "addrgenmode", "none")
    _disable_ipv6_here(root_end)
    ip("link", "set", "dev", root_end, "master", bridge)
    ip("link", "set", "dev", root_end, "up")
    # IPv6 off inside too: an EUI-64 link-local address would put the MAC into every IPv6 packet
    ip("-n", netns, "link", "set", "dev", inner_name, "addrgenmode", "none")
    ip("-n", netns, "link", "set", "dev", inner_name, "up")


def _create_fakenet(netplan: NetPlan, state: StateFile) -> None:
    ns = netplan.fakenet_netns
    _add_netns(ns, state)
    _add_veth(netplan.fakenet_link, ns, FAKENET_IFNAME, netplan.bridge, state)
    ip("-n", ns, "addr", "add", f"{netplan.gateway_ip}/{LAN.prefixlen}", "dev", FAKENET_IFNAME)
    # AnyIP: every fake-internet address is local here, so servers bound to 0.0.0.0 answer all of them
    ip("-n", ns, "route", "add", "local", str(INTERNET), "dev", "lo")


def _create_phone(netplan: NetPlan, phone: PhoneNet, state: StateFile) -> None:
    _add_netns(phone.netns, state)
    _add_veth(phone.interface, phone.netns, PHONE_IFNAME, netplan.bridge, state, mac=phone.wifi_mac)
    ip("-n", phone.netns, "addr", "add", f"{phone.ip}/{LAN.prefixlen}", "dev", PHONE_IFNAME)
    ip("-n", phone.netns, "route", "add", "default", "via", netplan.gateway_ip)


# --- teardown ------------------------------------------------------------------------------------------------


def netns_pids(netns: str) -> list[int]:
    """Processes running inside ``netns`` (``ip netns pids``); empty if the namespace is gone."""
    proc = ip("netns", "pids", netns, check=False)
    return [int(word) for word in proc.stdout.split() if word.isdigit()]


def _terminate(pids: Sequence[int]) -> list[int]:
    """SIGTERM, wait up to TERM_GRACE_S, then SIGKILL; returns the pids that would not die."""
    me = os.getpid()
    targets = {pid: process_start_time(pid) for pid in pids if pid != me}
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + TERM_GRACE_S
    while time.monotonic() < deadline and any(process_alive(p, s) for p, s in targets.items()):
        time.sleep(0.05)
    for pid, start in targets.items():
        if process_alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)
    return [pid for pid, start in targets.items() if process_alive(pid, start)]


def teardown_state(state: StateFile) -> list[str]:
    """Remove everything ``state`` records: processes, then namespaces (with whatever runs in them), then links.

    Never raises: returns (and logs) what could not be removed.
    """
    problems: list[str] = []
    try:
        recorded = [p.pid for p in state.processes if process_alive(p.pid, p.start_time)]
        inside = [pid for ns in state.netns for pid in netns_pids(ns)]
        for pid in _terminate([*recorded, *inside]):
            problems.append(f"process {pid} would not die")
        for ns in reversed(state.netns):
            if Path("/run/netns", ns).exists():
                proc = ip("netns", "delete", ns, check=False)
                if proc.returncode != 0:
                    problems.append(f"namespace {ns}: {proc.stderr.strip()}")
        for link in reversed(state.links):
            if Path("/sys/class/net", link).exists():
                proc = ip("link", "delete", link, check=False)
                if proc.returncode != 0 and Path("/sys/class/net", link).exists():
                    problems.append(f"link {link}: {proc.stderr.strip()}")
        if not problems:
            with contextlib.suppress(FileNotFoundError):
                state.path.unlink()
    except Exception as exc:  # teardown must never hide the caller's own result
        problems.append(f"teardown of lab {state.instance!r} failed: {exc}")
    for problem in problems:
        log.warning("phonehome lab %s: could not clean up: %s", state.instance, problem)
    return problems


def teardown(instance: str) -> list[str]:
    """Remove everything recorded for ``instance`` (no-op if nothing is recorded). Never raises."""
    try:
        state = StateFile.load(instance)
    except Exception as exc:
        log.warning("phonehome lab %s: cannot read state: %s", instance, exc)
        return [str(exc)]
    return [] if state is None else teardown_state(state)


def recorded_instances() -> Iterator[str]:
    """Instance names that have a state file."""
    directory = state_dir()
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            yield path.stem


def clean_stale() -> list[str]:
    """Tear down every recorded instance whose owner died (a crash, a SIGKILL, a reboot of the container)."""
    problems: list[str] = []
    for instance in recorded_instances():
        state = StateFile.load(instance)
        if state is not None and not state.owner_alive():
            log.info("phonehome lab %s: cleaning up after dead owner pid %s", instance, state.owner_pid)
            problems += teardown_state(state)
    return problems
