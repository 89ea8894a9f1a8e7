"""The pytest side of the evidence manifest: a plugin object that records a run and writes ``manifest.json``.

Registered by :mod:`phonehome.plugin` for every run (no ``--alluredir`` needed). It listens to phonehome's own
hooks (device info, phases, the capture's files before any is deleted) and to test outcomes; pytest-xdist
workers hand their part to the controller, which writes one manifest for the run into the capture folder (and a
copy into the Allure results folder, which the report generator attaches to the report). A run in which no test
used a phone writes none.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import platform
import re
import shutil
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import pytest

from phonehome.errors import PhonehomeError
from phonehome.identifiers import mask
from phonehome.manifest import model
from phonehome.provisions import provision_ids
from phonehome.report import verdicts
from phonehome.runstate import SETTINGS_KEY, STATE_KEY, _binary_version, tool_versions

log = logging.getLogger(__name__)

PLUGIN_NAME = "phonehome-manifest"
#: where xdist workers put their part for the controller (``config.workeroutput`` key)
WORKEROUTPUT_KEY = "phonehome_manifest"
_STATUS_RANK = {"failed": 0, "broken": 1, "skipped": 2, "passed": 3}


class ManifestRecorder:
    """Collects what the manifest needs while the run goes; writes it once, from the controller."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.phones: dict[str, dict[str, Any]] = {}
        self.captures: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []
        self.records: list[verdicts.TestRecord] = []
        self.problems: list[str] = []
        self._values: set[str] = set()  # identifier values, only ever used to mask text
        self._phases: dict[str, list[verdicts.PhaseLeaks]] = {}
        self._devices: dict[str, str] = {}
        self._outcomes: dict[str, tuple[str, str | None]] = {}

    # -- what is recorded

    @property
    def root(self) -> Path:
        """The capture folder: the manifest lives there and names its files relative to it."""
        settings = self.config.stash.get(SETTINGS_KEY, None)
        return Path(settings.capture_dir) if settings is not None else Path("results/captures")

    def _mask(self, text: str) -> str:
        """The run's redactor (every inventory phone's identifiers and secrets), then the values this recorder
        saw: the manifest is masked even when ``--phonehome-show-identifiers`` unmasks the report."""
        state = self.config.stash.get(STATE_KEY, None)
        if state is not None:
            redactor = state.redactor
            text = redactor.deep(text) if not redactor.show else dataclasses.replace(redactor, show=False)(text)
        for value in sorted(self._values, key=len, reverse=True):
            text = re.sub(re.escape(value), mask(value), text, flags=re.IGNORECASE)
        return text

    def _learn(self, device: str, identifiers: Any) -> None:
        """The identifiers checked on a phone: names with masked values (the source comes from device info)."""
        pairs = getattr(identifiers, "values", None)
        if not isinstance(pairs, tuple):
            return
        checked = self.phones.setdefault(device, {}).setdefault("identifiers", {})
        sources = self.phones[device].get("identifier_sources", {})
        for name, value in pairs:
            self._values.add(str(value))
            entry = checked.setdefault(str(name), {"values": [], "source": sources.get(str(name), "inventory")})
            shown = mask(str(value))
            if shown not in entry["values"]:
                entry["values"].append(shown)

    def pytest_phonehome_device_info(self, device: str, info: dict[str, Any]) -> None:
        phone = self.phones.setdefault(device, {})
        for key in ("model", "manufacturer", "android", "sdk", "fingerprint", "backend"):
            if info.get(key) not in (None, ""):
                phone[key] = str(info[key])
        unreadable = info.get("identifiers_unreadable")
        if isinstance(unreadable, Mapping) and unreadable:
            phone["identifiers_unreadable"] = {str(k): self._mask(str(v)) for k, v in unreadable.items()}
        if info.get("quarantined"):
            phone["quarantined"] = self._mask(str(info["quarantined"]))
        sources = info.get("identifier_sources")
        if isinstance(sources, Mapping):
            phone["identifier_sources"] = {str(k): str(v) for k, v in sources.items()}
            for name, entry in phone.get("identifiers", {}).items():
                entry["source"] = phone["identifier_sources"].get(name, entry["source"])

    def pytest_phonehome_phase_finished(self, item: pytest.Item, device: str, phase: Any) -> None:
        self._devices[item.nodeid] = device
        traffic = getattr(item, "funcargs", {}).get("traffic")
        self._learn(device, getattr(traffic, "identifiers", None))
        self._phases.setdefault(item.nodeid, []).append(verdicts.phase_leaks(
            str(phase.name), phase.findings or (), phase.flows or (), denied=verdicts.is_denied))

    def pytest_phonehome_capture_finished(self, item: pytest.Item, device: str, capture: Any,
                                          files: list[tuple[Any, str]], kept: bool) -> None:
        self._devices[item.nodeid] = device
        root = self.root
        entries = []
        for path, role in files:
            try:
                entry = model.file_entry(Path(path), root, role, kept=kept)
            except OSError as exc:
                self.problems.append(f"{item.nodeid}: could not hash {Path(path).name}: {exc}")
                continue
            entries.append(entry.to_json())
        self.files.extend(entries)
        phone = getattr(item, "funcargs", {}).get("phone")
        measure = getattr(phone, "clock_offset_s", None)
        try:
            phone_offset = measure() if callable(measure) else None
        except PhonehomeError:
            phone_offset = None
        self.captures.append({
            "test": item.nodeid, "device": device,
            "source": str(capture.info().get("source", "?")) if hasattr(capture, "info") else "?",
            "files": [entry["path"] for entry in entries], "kept": kept,
            "phases": [{"name": record.name, "start": model.utc(record.start), "end": model.utc(record.end)}
                       for record in getattr(capture, "phases", ())],
            "recorder_clock_offset_s": getattr(capture, "clock_offset_s", None),
            "phone_clock_offset_s": phone_offset,
        })

    def pytest_phonehome_failure_evidence(self, item: pytest.Item, device: str, evidence: dict[str, Any]) -> None:
        """Evidence files (a screenshot) are hashed too; text evidence lives in the report."""
        for key, value in evidence.items():
            if isinstance(value, Path) and value.is_file():
                try:
                    self.files.append(model.file_entry(value, self.root, f"evidence: {key}").to_json())
                except OSError as exc:
                    self.problems.append(f"{item.nodeid}: could not hash {value.name}: {exc}")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        status, reason = "passed", None
        if call.excinfo is not None:
            if call.excinfo.errisinstance(pytest.skip.Exception):
                status, reason = "skipped", str(call.excinfo.value)
            elif report.when == "call" and call.excinfo.errisinstance((AssertionError, pytest.fail.Exception)):
                status, reason = "failed", f"{call.excinfo.typename}: {call.excinfo.value}"
            else:
                status, reason = "broken", f"{call.excinfo.typename}: {call.excinfo.value}"
        before = self._outcomes.get(item.nodeid)
        if before is None or _STATUS_RANK[status] < _STATUS_RANK[before[0]]:
            self._outcomes[item.nodeid] = (status, reason)
        if report.when == "teardown":
            self._finish(item)

    def _finish(self, item: pytest.Item) -> None:
        status, reason = self._outcomes.pop(item.nodeid, ("passed", None))
        device = self._devices.pop(item.nodeid, None) or _device_of(item)
        if device is None:
            return  # a test that used no phone is no evidence
        entry = getattr(getattr(item, "callspec", None), "params", {}).get("_phonehome_entry")
        self._values.update(str(value) for _, value in getattr(getattr(entry, "identifiers", None), "values", ()))
        model_name = self.phones.get(device, {}).get("model")
        self.records.append(verdicts.TestRecord(
            full_name=item.nodeid, title=verdicts.readable_title(item.name, device, model_name), status=status,
            device=device, model=model_name, reason=verdicts.first_line(self._mask(reason or "")),
            phases=tuple(self._phases.pop(item.nodeid, ()))))

    # -- xdist

    def _part(self) -> dict[str, Any]:
        return {"phones": self.phones, "captures": self.captures, "files": self.files,
                "records": [r.to_json() for r in self.records], "problems": self.problems}

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        raw = getattr(node, "workeroutput", {}).get(WORKEROUTPUT_KEY)
        if not raw:
            return
        part = json.loads(raw)
        for device, phone in part["phones"].items():
            mine = self.phones.setdefault(device, {})
            identifiers = {**phone.get("identifiers", {}), **mine.get("identifiers", {})}
            mine.update({k: v for k, v in phone.items() if k != "identifiers"})
            if identifiers:
                mine["identifiers"] = identifiers
        self.captures.extend(part["captures"])
        self.files.extend(part["files"])
        self.records.extend(verdicts.TestRecord.from_json(r) for r in part["records"])
        self.problems.extend(part["problems"])

    # -- writing

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[WORKEROUTPUT_KEY] = json.dumps(self._part())
            return
        if not self.records and not self.captures:
            return
        try:
            path, signature = model.write(self.manifest(), self.root / model.MANIFEST_NAME)
        except (OSError, PhonehomeError) as exc:  # teardown never hides results; the run says it
            log.warning("phonehome: the evidence manifest was not written: %s", exc)
            self.config.issue_config_time_warning(
                pytest.PytestWarning(f"phonehome: the evidence manifest was not written: {exc}"), stacklevel=2)
            return
        self._copy_to_results(path, signature)

    def _copy_to_results(self, path: Path, signature: Path | None) -> None:
        results = self.config.getoption("allure_report_dir", default=None)
        if not results:
            return
        dest = Path(results) / model.RESULTS_COPY_NAME
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        if signature is not None:
            shutil.copyfile(signature, dest.with_name(dest.name + model.SIGNATURE_SUFFIX))

    def manifest(self) -> dict[str, Any]:
        """The manifest of this run, as written (masked values, hashes, times in UTC)."""
        settings = self.config.stash.get(SETTINGS_KEY, None)
        inventory: dict[str, Any] | None = None
        if settings is not None and Path(settings.inventory).is_file():
            digest, size = model.sha256_file(Path(settings.inventory))
            inventory = {"path": str(settings.inventory), "sha256": digest, "bytes": size}
        phone_verdicts = verdicts.phone_verdicts(self.records)
        return {
            "format": model.FORMAT, "created": model.utc(time.time()),
            "tools": tools(),
            "inventory": inventory,
            "phones": {device: _public_phone(phone) for device, phone in sorted(self.phones.items())},
            "captures": self.captures,
            "files": self.files,
            "findings": {v.device: {"identifiers": list(v.identifiers), "phases": list(v.phases),
                                    "hosts": list(v.hosts), "denied_hosts": list(v.denied_hosts)}
                         for v in phone_verdicts},
            "verdicts": [{"device": v.device, "model": v.model, "verdict": v.verdict, "summary": v.summary(),
                          "tests": [{"test": t.full_name, "title": t.title, "status": t.status, "reason": t.reason,
                                     "provisions": list(provision_ids()) if t.phases else []}
                                    for t in v.tests]}
                         for v in phone_verdicts],
            "verdict_meaning": dict(verdicts.VERDICT_MEANING),
            "pass_rate": {"passed": (rate := verdicts.pass_rate(self.records)).passed, "rated": rate.rated,
                          "tests": rate.total},
            "problems": self.problems,
        }


def _public_phone(phone: Mapping[str, Any]) -> dict[str, Any]:
    """A phone's entry without the internal source map (it is folded into each identifier)."""
    return {key: value for key, value in phone.items() if key != "identifier_sources"}


def _device_of(item: pytest.Item) -> str | None:
    entry = getattr(getattr(item, "callspec", None), "params", {}).get("_phonehome_entry")
    label = getattr(entry, "label", None)
    return str(label) if label is not None else None


def _distribution(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _allure_generator() -> str:
    """The pinned Allure 3 generator's version, when this checkout has it installed."""
    from phonehome.errors import InputError
    from phonehome.report.generate import find_allure

    try:
        package = find_allure().resolve().parent / "package.json"
        return str(json.loads(package.read_text(encoding="utf-8")).get("version", "unknown"))
    except (InputError, OSError, ValueError):
        return "not installed"


def tools() -> dict[str, str]:
    """phonehome and the versions of every tool that made or reads the evidence."""
    found: dict[str, str] = {"phonehome": _distribution("phonehome"), "python": platform.python_version(),
                             "pytest": pytest.__version__}
    # runstate.tool_versions(): dumpcap, adb, uiautomator2, adbutils, in this order
    lines = (*tool_versions(), _binary_version("tshark", ["--version"]))
    found.update(zip(("dumpcap", "adb", "uiautomator2", "adbutils", "tshark"), lines, strict=False))
    found["allure-pytest"] = _distribution("allure-pytest")
    found["allure"] = _allure_generator()
    return found


def register(config: pytest.Config) -> None:
    """Register the recorder (phonehome's plugin calls this from ``pytest_configure``). Idempotent."""
    if not config.pluginmanager.has_plugin(PLUGIN_NAME):
        config.pluginmanager.register(ManifestRecorder(config), PLUGIN_NAME)

