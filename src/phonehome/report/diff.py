"""What changed since the previous run: each device's destinations and findings, compared with last night's.

A firmware update that starts talking to a new host must be visible in the morning even when nothing leaked. The
Allure reporter writes what each device talked to (``phonehome-observed-*.json``, one per pytest process, in the
raw results folder); at report time :func:`add_changes` merges those files from every shard, compares them with the
baseline kept next to the Allure history file, adds one "what changed" result per device (with "new destinations"
and "new findings" attachments) to the report, and :func:`save_baseline` records this run for the next one.

Only destinations (host or address, port, transport) and finding kinds (identifier name, encoding, destination,
protocol) are stored: never an identifier's value.
"""

from __future__ import annotations

import hashlib
import html
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phonehome.errors import InputError

#: the files the reporter writes into the raw results folder, one per pytest process
OBSERVED_PREFIX = "phonehome-observed-"
OBSERVED_FORMAT = "phonehome-observed/1"
BASELINE_FORMAT = "phonehome-baseline/1"
#: the Allure feature under which the "what changed" results appear
CHANGES_FEATURE = "what changed"
#: the full name of each "what changed" result starts with this (then the device label in brackets)
CHANGES_FULL_NAME_PREFIX = "phonehome.what_changed["
#: the "what changed" results are information, not tests: Allure 3 counts "unknown" in no pass rate
CHANGES_STATUS = "unknown"


@dataclass(frozen=True, order=True)
class Destination:
    """Where a flow went: the name the phone looked up (or the address when there was none), port, transport."""

    address: str
    port: int | None
    transport: str

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.address}{port}/{self.transport}"


@dataclass(frozen=True, order=True)
class FindingKind:
    """One kind of leak: which identifier, how it was encoded, where it went and in which protocol."""

    identifier: str
    encoding: str
    destination: Destination
    protocol: str
    app: str = ""  # the sending app when the phone's socket table named it ("" unknown): a new sender is a change

    def same_leak(self, other: FindingKind) -> bool:
        """The same leak by the same app; an unknown app on either side matches any (attribution may miss a
        short-lived socket one night and see it the next: that is not a change)."""
        return (self.identifier, self.encoding, self.destination, self.protocol) == \
            (other.identifier, other.encoding, other.destination, other.protocol) and \
            (self.app == other.app or not self.app or not other.app)


@dataclass(frozen=True)
class DeviceSnapshot:
    """Everything one device talked to in one run."""

    destinations: frozenset[Destination] = frozenset()
    findings: frozenset[FindingKind] = frozenset()

    def union(self, other: DeviceSnapshot) -> DeviceSnapshot:
        return DeviceSnapshot(self.destinations | other.destinations, self.findings | other.findings)


@dataclass(frozen=True)
class DeviceChanges:
    """What is new on one device compared with the baseline; ``first_run`` when the device has no baseline."""

    device: str
    new_destinations: tuple[Destination, ...]
    new_findings: tuple[FindingKind, ...]
    gone_destinations: tuple[Destination, ...]
    first_run: bool

    @property
    def anything_new(self) -> bool:
        return bool(self.new_destinations or self.new_findings)


@dataclass(frozen=True)
class Baseline:
    """The previous run's snapshot, per device, and when it was taken (seconds since the epoch)."""

    taken_at: float | None
    devices: Mapping[str, DeviceSnapshot] = field(default_factory=dict)


def _port(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def destination_of(record: Mapping[str, Any]) -> Destination:
    """The destination of a flow or finding dict as in ``phonehome scan --json`` (host preferred over address)."""
    address = record.get("host") or record.get("dst") or "?"
    return Destination(str(address), _port(record.get("dport")), str(record.get("transport") or "?"))


def finding_kind_of(finding: Mapping[str, Any]) -> FindingKind:
    return FindingKind(str(finding.get("identifier", "?")), str(finding.get("encoding", "?")),
                       destination_of(finding), str(finding.get("protocol") or "unknown"), str(finding.get("app") or ""))


class Observations:
    """Accumulates what each device talked to during one pytest process (the reporter feeds it per phase)."""

    def __init__(self) -> None:
        self._devices: dict[str, DeviceSnapshot] = {}

    def add(self, device: str, flows: Iterable[Mapping[str, Any]], findings: Iterable[Mapping[str, Any]]) -> None:
        seen = DeviceSnapshot(frozenset(destination_of(flow) for flow in flows),
                              frozenset(finding_kind_of(finding) for finding in findings
                                        if not finding.get("encrypted", False)))
        self._devices[device] = self._devices.get(device, DeviceSnapshot()).union(seen)

    @property
    def devices(self) -> Mapping[str, DeviceSnapshot]:
        return dict(self._devices)

    def write(self, results_dir: Path) -> Path | None:
        """Write this process's observations into the raw results folder; None when nothing was observed."""
        if not self._devices:
            return None
        path = results_dir / f"{OBSERVED_PREFIX}{uuid.uuid4()}.json"
        payload = {"format": OBSERVED_FORMAT, "devices": _snapshots_to_json(self._devices)}
        path.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
        return path


# --- (de)serialisation ------------------------------------------------------------------------------------------


def _destination_to_json(dest: Destination) -> dict[str, Any]:
    return {"address": dest.address, "port": dest.port, "transport": dest.transport}


def _destination_from_json(raw: Mapping[str, Any]) -> Destination:
    return Destination(str(raw["address"]), _port(raw.get("port")), str(raw.get("transport", "?")))


def _snapshots_to_json(devices: Mapping[str, DeviceSnapshot]) -> dict[str, Any]:
    return {
        device: {
            "destinations": [_destination_to_json(d) for d in sorted(snap.destinations)],
            "findings": [{"identifier": f.identifier, "encoding": f.encoding, "protocol": f.protocol,
                          "destination": _destination_to_json(f.destination), **({"app": f.app} if f.app else {})}
                         for f in sorted(snap.findings)],
        }
        for device, snap in sorted(devices.items())
    }


def _snapshots_from_json(raw: Mapping[str, Any], source: Path, fix: str) -> dict[str, DeviceSnapshot]:
    devices: dict[str, DeviceSnapshot] = {}
    for device, entry in raw.items():
        try:
            dests = frozenset(_destination_from_json(d) for d in entry.get("destinations", []))
            finds = frozenset(FindingKind(str(f["identifier"]), str(f["encoding"]),
                                          _destination_from_json(f["destination"]), str(f["protocol"]),
                                          str(f.get("app") or "")) for f in entry.get("findings", []))
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(source, f"malformed entry for device {device!r}: {exc!r}",
                             where=f"devices.{device}", fix=fix) from None
        devices[str(device)] = DeviceSnapshot(dests, finds)
    return devices


_BASELINE_FIX = "delete the file to start a new baseline"
_OBSERVED_FIX = "remove the file: phonehome's Allure reporter writes these, one per pytest process"


def read_document(path: Path, expected_format: str, fix: str) -> dict[str, Any]:
    """A JSON file phonehome wrote for a run (``{"format": ..., ...}``); InputError naming the file and the fix
    when it cannot be read or is another kind of file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read: {exc}", fix=fix) from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise InputError(path, f"not a {expected_format} file", where="format", fix=fix)
    return data


def _read_json(path: Path, expected_format: str, fix: str) -> Mapping[str, Any]:
    data = read_document(path, expected_format, fix)
    devices = data.get("devices")
    if not isinstance(devices, dict):
        raise InputError(path, "no devices mapping", where="devices", fix=fix)
    return data


def load_observed(results_dirs: Sequence[Path]) -> dict[str, DeviceSnapshot]:
    """Merge the observations of every pytest process of every shard."""
    merged: dict[str, DeviceSnapshot] = {}
    for results_dir in results_dirs:
        for path in sorted(results_dir.glob(f"{OBSERVED_PREFIX}*.json")):
            data = _read_json(path, OBSERVED_FORMAT, _OBSERVED_FIX)
            for device, snap in _snapshots_from_json(data["devices"], path, _OBSERVED_FIX).items():
                merged[device] = merged.get(device, DeviceSnapshot()).union(snap)
    return merged


def baseline_path_for(history: Path) -> Path:
    """The baseline lives next to the Allure history file, so CI saves and restores both together."""
    return history.with_name(history.name + ".phonehome-baseline.json")


def load_baseline(path: Path) -> Baseline:
    """The previous run's baseline; an empty one (every device on its first run) when there is none yet."""
    if not path.exists():
        return Baseline(taken_at=None, devices={})
    data = _read_json(path, BASELINE_FORMAT, _BASELINE_FIX)
    taken_at = data.get("taken_at")
    return Baseline(taken_at=float(taken_at) if isinstance(taken_at, int | float) else None,
                    devices=_snapshots_from_json(data["devices"], path, _BASELINE_FIX))


def save_baseline(path: Path, previous: Baseline, current: Mapping[str, DeviceSnapshot],
                  *, now: float | None = None) -> None:
    """Record this run; devices that did not run this time (a shard that failed) keep their old entries."""
    devices = dict(previous.devices)
    devices.update(current)
    payload = {"format": BASELINE_FORMAT, "taken_at": time.time() if now is None else now,
               "devices": _snapshots_to_json(devices)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def compare(previous: Baseline, current: Mapping[str, DeviceSnapshot]) -> list[DeviceChanges]:
    """Per device of this run: destinations and finding kinds that the baseline does not have."""
    changes = []
    for device, snap in sorted(current.items()):
        before = previous.devices.get(device)
        old = before or DeviceSnapshot()
        changes.append(DeviceChanges(
            device=device,
            new_destinations=tuple(sorted(snap.destinations - old.destinations)),
            new_findings=tuple(sorted(f for f in snap.findings if not any(f.same_leak(o) for o in old.findings))),
            gone_destinations=tuple(sorted(old.destinations - snap.destinations)),
            first_run=before is None,
        ))
    return changes


# --- the "what changed" results ---------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><style>table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:2px 6px;font-family:monospace}</style></head><body>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>")


def destinations_html(destinations: Sequence[Destination]) -> str:
    return _table(("destination", "port", "transport"),
                  ((d.address, "" if d.port is None else d.port, d.transport) for d in destinations))


def findings_html(findings: Sequence[FindingKind]) -> str:
    return _table(("app", "identifier", "encoding", "destination", "protocol"),
                  ((f.app or "(unattributed)", f.identifier, f.encoding, str(f.destination), f.protocol)
                   for f in findings))


def _title(change: DeviceChanges, since: str) -> str:
    if change.first_run:
        return (f"What changed on {change.device}: first run, {len(change.new_destinations)} destinations and "
                f"{len(change.new_findings)} findings recorded as the baseline")
    return (f"What changed on {change.device} since {since}: {len(change.new_destinations)} new destinations, "
            f"{len(change.new_findings)} new findings")


def _severity(change: DeviceChanges) -> str:
    if change.first_run:  # everything is "new" on the first night: the tests themselves carry the verdicts
        return "normal"
    if change.new_findings:
        return "critical"
    return "normal" if change.new_destinations else "trivial"


def write_change_results(changes: Sequence[DeviceChanges], previous: Baseline, out_dir: Path,
                         *, now: float | None = None) -> list[Path]:
    """Write one Allure result per device (plus its attachments) into ``out_dir``, an extra results folder.

    The result is information, not a test (status "unknown", so no pass rate counts it): a new destination is
    not a failure by itself, but its title carries the counts and its severity rises with what is new, so the
    morning reader sees it next to the device's tests.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp_ms = int((time.time() if now is None else now) * 1000)
    since = (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(previous.taken_at))
             if previous.taken_at is not None else "the previous run")
    written = []
    for change in changes:
        attachments = []
        for name, body in (("new destinations", destinations_html(change.new_destinations)),
                           ("new findings", findings_html(change.new_findings))):
            source = f"{uuid.uuid4()}-attachment.html"
            (out_dir / source).write_text(body, encoding="utf-8")
            attachments.append({"name": name, "source": source, "type": "text/html"})
        if change.gone_destinations:
            source = f"{uuid.uuid4()}-attachment.html"
            (out_dir / source).write_text(destinations_html(change.gone_destinations), encoding="utf-8")
            attachments.append({"name": "destinations no longer seen", "source": source, "type": "text/html"})
        full_name = f"{CHANGES_FULL_NAME_PREFIX}{change.device}]"
        ident = hashlib.md5(full_name.encode(), usedforsecurity=False).hexdigest()
        result = {
            "uuid": str(uuid.uuid4()), "historyId": ident, "testCaseId": ident, "fullName": full_name,
            "name": _title(change, since), "status": CHANGES_STATUS, "stage": "finished",
            "statusDetails": {"message": "information, not a test: not counted in the pass rate"},
            "start": stamp_ms, "stop": stamp_ms,
            "description": ("Destinations and cleartext findings of this device compared with the previous run "
                            f"({since}). New destinations are not failures by themselves: check them."),
            "labels": [{"name": "feature", "value": CHANGES_FEATURE},
                       {"name": "story", "value": "new destinations and findings since the previous run"},
                       {"name": "parentSuite", "value": "phonehome"},
                       {"name": "suite", "value": CHANGES_FEATURE},
                       {"name": "severity", "value": _severity(change)}],
            "parameters": [{"name": "device", "value": change.device}],
            "attachments": attachments, "steps": [],
        }
        path = out_dir / f"{result['uuid']}-result.json"
        path.write_text(json.dumps(result, indent=1), encoding="utf-8")
        written.append(path)
    return written


def add_changes(results_dirs: Sequence[Path], history: Path, out_dir: Path) -> tuple[Baseline,
                                                                                    dict[str, DeviceSnapshot]]:
    """Compare this run (all shards) with the baseline next to ``history`` and write the results into ``out_dir``.

    Returns the previous baseline and this run's snapshot for :func:`save_baseline` once the report exists.
    """
    previous = load_baseline(baseline_path_for(history))
    current = load_observed(results_dirs)
    write_change_results(compare(previous, current), previous, out_dir)
    return previous, current
