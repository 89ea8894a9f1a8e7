"""The bench checks of ``phonehome check``: everything that would otherwise surface one test at a time, after
timeouts, found in seconds and said in one line per problem with its fix.

Per phone: the adb server answers, the serial is on it and usable (else the serials it does see, masked), the
model it reports against the inventory (a warning), the identifiers it reports against the inventory's (a
different IMEI is a swapped phone), the unlock secret's variable and the phone's lock against the inventory's
method, the capture interface, dumpcap's permission to capture on it, and the capture filter's placeholders. Across
phones: two captures that would record the same traffic. With ``--traffic``, a screen wake under each phone's
capture (:mod:`phonehome.check.traffic`; a virtual phone's on the running lab). Identifier values appear masked
only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phonehome.errors import InputError, PhonehomeError
from phonehome.identifiers import Identifiers, mask

if TYPE_CHECKING:
    from phonehome.devices.adbprobe import AdbServerStatus
    from phonehome.inventory import DeviceEntry
    from phonehome.virtual.lab import LabState

ERROR = "error"
WARNING = "warning"
#: a check that passed and says what it saw (``--traffic``: the packets of a screen wake); not a problem
OK = "ok"
#: dumpcap records this long to prove it may capture on an interface
DUMPCAP_PROBE_S = 2
#: dumpcap's start, the probe and its exit
DUMPCAP_TIMEOUT_S = 20.0
#: identifiers whose value read from the phone must be one the inventory lists (else: another phone)
HARDWARE_IDENTIFIERS = ("imei", "serial", "wifi_mac", "bt_mac")
NET_CLASS = Path("/sys/class/net")


@dataclass(frozen=True)
class Problem:
    """One finding of the checks: the phone it concerns (None for the bench), how bad, and the line to print."""

    device: str | None
    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.device or 'bench'}: {self.severity}: {self.message}"


#: builds the controller that reads a phone (U2Phone by default; tests and farms may pass their own)
PhoneFactory = Callable[["DeviceEntry", str, int], Any]


def _u2_phone(entry: DeviceEntry, host: str, port: int) -> Any:
    from phonehome.devices.u2 import U2Phone

    return U2Phone(entry, adb_host=host, adb_port=port)


def adb_address() -> tuple[str, int]:
    """The adb server of real phones, as the harness finds it (``ANDROID_ADB_SERVER_HOST``/``_PORT``)."""
    host = os.environ.get("ANDROID_ADB_SERVER_HOST", "127.0.0.1")
    port = os.environ.get("ANDROID_ADB_SERVER_PORT", "5037")
    try:
        return host, int(port)
    except ValueError:
        raise InputError("ANDROID_ADB_SERVER_PORT", f"'{port}' is not a port number",
                         fix="set it to the adb server's TCP port, e.g. 5037") from None


# --- per phone ---------------------------------------------------------------------------------------------------


def check_transport(entry: DeviceEntry, status: AdbServerStatus) -> list[Problem]:
    from phonehome.devices.adbprobe import transport_problem

    problem = transport_problem(status, entry.serial, entry.label)
    return [Problem(entry.label, ERROR, problem)] if problem else []


def _shown(values: Sequence[str]) -> str:
    return ", ".join(mask(value) for value in values)


def compare_identifiers(entry: DeviceEntry, read: Identifiers) -> list[Problem]:
    """A hardware identifier the phone reports that the inventory does not list: another phone on that serial."""
    problems = []
    for name in HARDWARE_IDENTIFIERS:
        listed = [value.lower() for value in entry.identifiers.get(name)]
        found = [value for value in read.get(name) if value]
        if listed and found and not any(value.lower() in listed for value in found):
            problems.append(Problem(entry.label, ERROR, (
                f"the phone reports {name} {_shown(found)}, the inventory lists {_shown(entry.identifiers.get(name))}: "
                f"a swapped phone? check which phone is on serial {mask(entry.serial)}, or correct "
                f"{entry.key}.identifiers.{name} in {entry.path.name} (line {entry.line})")))
    return problems


def check_phone(entry: DeviceEntry, phone: Any) -> tuple[list[Problem], Identifiers | None]:
    """What the phone itself says: its model, its identifiers, its lock. The phone is only read, never driven.
    Returns the problems and the identifiers it reported (None when it could not be read)."""
    problems: list[Problem] = []
    read: Identifiers | None = None
    try:
        model = str(phone.info().get("model", ""))
        if model.startswith("unavailable ("):  # getprop failed (info() goes on): not a swapped phone
            problems.append(Problem(entry.label, WARNING, f"could not read the phone's model, {model}"))
        elif model and model.strip().lower() != entry.model.strip().lower():
            problems.append(Problem(entry.label, WARNING, (
                f"the inventory says model '{entry.model}', the phone says '{model}': a swapped phone, or correct "
                f"{entry.key}.model in {entry.path.name} (line {entry.line})")))
        read, _sources = phone.read_identifiers()
        problems.extend(compare_identifiers(entry, read))
        phone.check_lock_kind()
    except PhonehomeError as exc:
        problems.append(Problem(entry.label, ERROR, str(exc).removeprefix(f"device {entry.label}: ")))
    finally:
        phone.close()
    return problems, read


def check_secret(entry: DeviceEntry) -> list[Problem]:
    """A PIN or password phone needs its variable set (a virtual phone gets a random one when the lab starts)."""
    variable = entry.unlock.secret_env
    if entry.backend == "virtual" or not entry.unlock.needs_secret() or not variable or os.environ.get(variable):
        return []
    return [Problem(entry.label, ERROR, f"unlock: {entry.unlock.method} needs {variable}, which is not set: export "
                                        f"{variable}=... (the phone's {entry.unlock.method}) before the run")]


def check_filter(entry: DeviceEntry, identifiers: Identifiers) -> tuple[list[Problem], str | None]:
    """The capture filter with its placeholders filled (from the inventory and what the phone reported)."""
    try:
        return [], entry.capture.bpf(identifiers)
    except InputError as exc:
        return [Problem(entry.label, ERROR, f"capture filter: {exc}")], None


def interfaces() -> list[str]:
    return sorted(path.name for path in NET_CLASS.iterdir()) if NET_CLASS.is_dir() else []


def check_interface(entry: DeviceEntry, *, run_dumpcap: bool = True) -> list[Problem]:
    """The capture interface exists on this host, and dumpcap may record on it (it runs DUMPCAP_PROBE_S)."""
    spec = entry.capture
    if spec.source != "interface" or spec.interface in (None, "auto"):
        return []  # a remote recorder, a file, or the virtual lab's own interface
    interface = spec.interface
    if not (NET_CLASS / interface).exists():
        return [Problem(entry.label, ERROR, (
            f"capture interface '{interface}' does not exist on this host (it has: {', '.join(interfaces())}); "
            f"correct {entry.key}.capture.interface in {entry.path.name}, or bring the access point up"))]
    if not run_dumpcap:
        return []
    dumpcap = shutil.which("dumpcap")
    if dumpcap is None:
        return [Problem(entry.label, ERROR, "dumpcap is not installed: apt-get install wireshark-common (or bash "
                                            "ci/setup.sh)")]
    with tempfile.TemporaryDirectory(prefix="phonehome-check-") as tmp:
        command = [dumpcap, "-q", "-i", interface, "-a", f"duration:{DUMPCAP_PROBE_S}", "-w",
                   str(Path(tmp) / "probe.pcapng")]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=DUMPCAP_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [Problem(entry.label, ERROR, f"dumpcap on {interface} did not run: {exc}")]
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return [Problem(entry.label, ERROR, (
            f"dumpcap may not capture on {interface}: {tail[0]} (run as root, or add this user to the "
            "wireshark group: dpkg-reconfigure wireshark-common)"))]
    return []


# --- across phones -----------------------------------------------------------------------------------------------


def shared_captures(filters: Sequence[tuple[DeviceEntry, str | None]]) -> list[tuple[DeviceEntry, DeviceEntry, str]]:
    """Pairs of phones captured on one interface with the same filter (or one without any): each capture
    records the other phone too. Returns (first, second, why)."""
    pairs = []
    for i, (first, first_bpf) in enumerate(filters):
        for second, second_bpf in filters[i + 1:]:
            a, b = first.capture, second.capture
            if a.source != b.source or a.source not in ("interface", "ssh") or a.interface in (None, "auto"):
                continue
            if (a.interface, a.host) != (b.interface, b.host):
                continue
            if first_bpf is None or second_bpf is None or first_bpf == second_bpf:
                why = "the same filter" if first_bpf == second_bpf and first_bpf else "no filter on one of them"
                pairs.append((first, second, why))
    return pairs


def shared_capture_message(first: DeviceEntry, second: DeviceEntry, why: str) -> str:
    return (f"{first.label} and {second.label} capture on {first.capture.interface} with {why}: each capture "
            "would record the other phone's traffic; give each a filter on its own MAC "
            "(filter: \"ether host {wifi_mac}\") or its own interface")


def check_shared_captures(filters: Sequence[tuple[DeviceEntry, str | None]]) -> list[Problem]:
    return [Problem(None, ERROR, shared_capture_message(*pair)) for pair in shared_captures(filters)]


# --- the start of a session ---------------------------------------------------------------------------------------

#: transport states no reconnect fixes: the session errors these phones at once (``offline`` gets the harness's
#: recovery attempt instead; with no server at all the harness says so at once itself, after checking that no
#: other run holds the phone)
HOPELESS_STATES = ("absent", "unauthorized")


def session_problems(entries: Sequence[DeviceEntry]) -> dict[str, str]:
    """The fast part of the checks, for the plugin at session start: label -> the first problem's message, for
    the phones that cannot work this run (no phone is read, nothing is recorded; the lab's phones are left to it)."""
    from phonehome.devices.adbprobe import query_adb_server

    found: dict[str, str] = {}
    filters: list[tuple[DeviceEntry, str | None]] = []
    status: AdbServerStatus | None = None
    for entry in entries:
        if entry.backend == "virtual":
            continue
        problems = check_secret(entry) + check_interface(entry, run_dumpcap=False)
        status = status or query_adb_server(*adb_address())
        if status.state_of(entry.serial) in HOPELESS_STATES:
            problems = check_transport(entry, status) + problems
        if problems:
            found[entry.label] = problems[0].message
        with contextlib.suppress(InputError):  # a filter needing identifiers read from the phone: checked later
            filters.append((entry, entry.capture.bpf(entry.identifiers)))
    for first, second, why in shared_captures(filters):
        message = shared_capture_message(first, second, why)
        found.setdefault(first.label, message)
        found.setdefault(second.label, message)
    return found


# --- all of it ---------------------------------------------------------------------------------------------------


def check_entries(entries: Sequence[DeviceEntry], *, run_dumpcap: bool = True,
                  make_phone: PhoneFactory = _u2_phone, traffic: bool = False,
                  lab_instance: str | None = None) -> list[Problem]:
    """Every check, for every phone (virtual ones only as far as the inventory goes: the lab serves them).

    ``traffic``: also wake each phone's screen under its capture and count its packets (a virtual phone's on the
    running lab ``lab_instance``, default the default lab); the OK lines come back with severity ``OK``.
    """
    from phonehome.devices.adbprobe import query_adb_server

    problems: list[Problem] = []
    statuses: dict[tuple[str, int], AdbServerStatus] = {}
    filters: list[tuple[DeviceEntry, str | None]] = []
    lab: LabAccess | None = None
    for entry in entries:
        problems.extend(check_secret(entry))
        identifiers = entry.identifiers
        usable = True
        if entry.backend != "virtual":
            address = adb_address()
            status = statuses.get(address) or statuses.setdefault(address, query_adb_server(*address))
            transport = check_transport(entry, status)
            problems.extend(transport)
            usable = not transport
            if not transport:
                phone_problems, read = check_phone(entry, make_phone(entry, *address))
                problems.extend(phone_problems)
                if read is not None:
                    identifiers = identifiers.merged(read)
        filter_problems, bpf = check_filter(entry, identifiers)
        problems.extend(filter_problems)
        interface_problems = check_interface(entry, run_dumpcap=run_dumpcap)
        problems.extend(interface_problems)
        filters.append((entry, bpf))
        if traffic and usable and not filter_problems and not interface_problems:
            if entry.backend == "virtual":
                lab = lab or LabAccess.find(lab_instance)
            problems.append(check_traffic(entry, identifiers, make_phone, lab))
    problems.extend(check_shared_captures(filters))
    return problems


# --- a screen wake under the capture (--traffic) ------------------------------------------------------------------


@dataclass(frozen=True)
class LabAccess:
    """The running virtual lab that serves the inventory's virtual phones (None state: it is not running)."""

    instance: str
    state: LabState | None

    @classmethod
    def find(cls, instance: str | None) -> LabAccess:
        from phonehome.virtual.lab import DEFAULT_INSTANCE, Lab

        name = instance or DEFAULT_INSTANCE
        return cls(name, Lab.status(name))


def check_traffic(entry: DeviceEntry, identifiers: Identifiers, make_phone: PhoneFactory,
                  lab: LabAccess | None) -> Problem:
    """One phone's screen wake under its capture: an OK line with the packet count, or the problem and its fix."""
    from phonehome.check.traffic import wake_problem

    if entry.capture.source == "file":
        return Problem(entry.label, OK, "traffic not checked: the capture re-analyses a recorded file")
    lab_phone = None
    if entry.backend == "virtual":
        assert lab is not None
        start = (f"phonehome lab up --devices {entry.path.name} --instance {lab.instance}, then check again "
                 f"with --lab-instance {lab.instance}")
        if lab.state is None:
            return Problem(entry.label, ERROR, f"traffic: virtual phone, and no lab {lab.instance!r} is running to "
                                               f"serve it: {start}")
        lab_phone = next((phone for phone in lab.state.phones if phone.serial == entry.serial), None)
        if lab_phone is None:
            return Problem(entry.label, ERROR, f"traffic: the running lab {lab.instance!r} has no phone with serial "
                                               f"{mask(entry.serial)}: start it from this inventory ({start})")
        address = (lab.state.adb_host, lab.state.adb_port)
    else:
        address = adb_address()
    ok, message = wake_problem(entry, make_phone(entry, *address), identifiers, lab_phone=lab_phone,
                               adb_server_port=address[1] if entry.backend == "virtual" else None)
    return Problem(entry.label, OK if ok else ERROR, message)
