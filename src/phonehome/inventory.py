"""``devices.yaml``: the device inventory — load, validate (file, line, field), apply defaults.

A lab describes each phone once: how to reach it (serial), how to drive it (backend, unlock method with the
secret named by an environment variable), what it must never send (identifiers), how its traffic is captured,
how long to let it settle after each lifecycle event, and where it may talk to. Everything is validated on load
so a typo fails the run at once with the file, the line, the field and the fix — not halfway through a nightly.

Format: ``docs/devices.md``; JSON Schema for editors: ``phonehome/data/devices.schema.json``.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import os
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from phonehome.errors import InputError
from phonehome.identifiers import (
    CELL_KEY,
    CUSTOM_KEY,
    IDENTIFIER_KEYS,
    LOCATION_KEY,
    WIFI_KEY,
    Identifiers,
    field_lines,
    identifiers_loader,
    line_of,
    mask,
    parse_identifiers,
    yaml_kind,
)

FORMAT_VERSION = 1
BACKENDS = ("virtual", "uiautomator2")
TRANSPORTS = ("usb", "tcp")
UNLOCK_METHODS = ("none", "swipe", "pin", "password")
CAPTURE_SOURCES = ("interface", "adb-tcpdump", "pcapdroid", "ssh", "file")
SETTLE_KEYS = ("power_on", "screen_off", "screen_on", "unlock", "idle", "stop_delay")
#: identifiers the harness can read from a phone itself (the rest only come from the inventory)
READABLE_IDENTIFIERS = (*IDENTIFIER_KEYS, LOCATION_KEY, CELL_KEY, WIFI_KEY)

#: built-in defaults under the file's own ``defaults:`` block
DEFAULT_SETTLE_S: Mapping[str, float] = MappingProxyType(
    {"power_on": 8.0, "screen_off": 1.0, "screen_on": 3.0, "unlock": 3.0, "idle": 10.0, "stop_delay": 0.5})
DEFAULT_BOOT_TIMEOUT_S = 120.0
#: dumpcap loses the kernel's last ring block when stopped sooner than ~250 ms after the last packet
MIN_STOP_DELAY_S = 0.5
DEFAULT_TCPDUMP_INTERFACE = "wlan0"
FIRMWARE_DIR = Path("fixtures") / "firmware"

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PIN = re.compile(r"[0-9]{4,16}")

TOP_KEYS = ("version", "defaults", "devices")
DEVICE_KEYS = ("label", "model", "serial", "backend", "firmware", "transport", "unlock", "identifiers",
               "read_identifiers", "capture", "settle_s", "boot_timeout_s", "policy", "tls_keys")
#: keys a ``defaults:`` block may set (per-device facts such as label, serial, identifiers may not)
DEFAULTABLE_KEYS = ("model", "backend", "transport", "unlock", "read_identifiers", "capture", "settle_s",
                    "boot_timeout_s", "policy", "tls_keys")
UNLOCK_KEYS = ("method", "secret_env")
CAPTURE_KEYS = ("source", "interface", "filter", "host", "command", "file", "phases", "buffer_mib", "extras")
POLICY_KEYS = ("denied_hosts", "allowed_hosts", "identifier_hosts")
TLS_KEYS_KEYS = ("source", "path", "require")
#: where a device's TLS key log comes from (phonehome.capture.keylogs)
KEYLOG_SOURCES = ("file", "adb-pull", "pcapdroid")
#: ``tls_keys: {source: file, path: auto}``: a virtual phone's fake internet's own TLS key log
AUTO_KEYLOG = "auto"


# --- values --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnlockSpec:
    """How to unlock the phone. The secret itself is never in the file: ``secret_env`` names the environment
    variable that holds it, read only when the phone is unlocked (and never printed)."""

    method: str
    secret_env: str | None = None
    device: str = field(default="", compare=False)

    def needs_secret(self) -> bool:
        return self.method in ("pin", "password")

    def secret(self) -> str | None:
        """The PIN or password from the environment; InputError naming the variable (never a value) if unset."""
        if not self.needs_secret():
            return None
        assert self.secret_env is not None
        value = os.environ.get(self.secret_env)
        who = f"device {self.device}" if self.device else None
        if not value:
            raise InputError(who, f"environment variable {self.secret_env} is not set (the unlock {self.method})",
                             fix=f"export {self.secret_env}=... before running; never write it in devices.yaml")
        if self.method == "pin" and not _PIN.fullmatch(value):
            raise InputError(who, f"environment variable {self.secret_env} does not hold a PIN",
                             fix=f"set {self.secret_env} to the 4-16 digit PIN")
        return value


@dataclass(frozen=True)
class Policy:
    """Where the phone may talk to. Patterns are fnmatch globs on host names or IP addresses, case-insensitive.
    ``denied_hosts`` always deny; a non-empty ``allowed_hosts`` turns the policy into an allow-list."""

    denied_hosts: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    #: the hosts allowed to receive identifiers at all, cleartext or inside TLS (empty: no such rule)
    identifier_hosts: tuple[str, ...] = ()

    def may_receive_identifiers(self, host: str | None, ip: str) -> bool:
        """True when ``identifier_hosts`` is unset or (host, ip) matches one of its patterns."""
        if not self.identifier_hosts:
            return True
        names = [name.lower().rstrip(".") for name in (host, ip) if name]
        return any(fnmatch.fnmatchcase(name, pattern.lower()) for name in names for pattern in self.identifier_hosts)

    def is_denied(self, host: str | None, ip: str) -> bool:
        """True when traffic to (host, ip) breaks the policy, encrypted or not."""
        names = [name.lower().rstrip(".") for name in (host, ip) if name]
        if any(fnmatch.fnmatchcase(name, pattern.lower()) for name in names for pattern in self.denied_hosts):
            return True
        if self.allowed_hosts:
            return not any(fnmatch.fnmatchcase(name, pattern.lower())
                           for name in names for pattern in self.allowed_hosts)
        return False

    def to_json(self) -> dict[str, object]:
        return {"denied_hosts": list(self.denied_hosts), "allowed_hosts": list(self.allowed_hosts),
                "identifier_hosts": list(self.identifier_hosts)}


@dataclass(frozen=True)
class TlsKeysSpec:
    """Where the TLS key log of a device's traffic comes from (see :mod:`phonehome.capture.keylogs`).

    - ``file``: a key log on this host at ``path`` (e.g. a lab TLS server's, or one copied by hand); ``auto``
      for a virtual phone: the key log its fake internet's TLS servers write;
    - ``adb-pull``: a key log on a rooted phone at ``path``, written by a key logger the lab runs there
      (eCapture, friTap), pulled after each test;
    - ``pcapdroid``: the key log PCAPdroid exported on the phone at ``path``, pulled after each test.

    ``require``: a TLS flow without keys makes the test an error (CaptureError) instead of a warning.
    """

    source: str | None = None
    path: str | None = None
    require: bool = False

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "path": self.path, "require": self.require}


@dataclass(frozen=True)
class CaptureSpec:
    """How a device's traffic is recorded (see :mod:`phonehome.capture`).

    - ``interface``: dumpcap on ``interface`` of this host (``auto``: the virtual phone's lab interface);
    - ``ssh``: dumpcap on ``interface`` of ``host``, streamed back over ssh;
    - ``adb-tcpdump``: tcpdump on the rooted phone's ``interface`` (default wlan0), or ``command``;
    - ``pcapdroid``: PCAPdroid on the phone, ``extras`` passed to its intent API;
    - ``file``: re-analysis of ``file`` with its phases from ``phases`` (default ``<file>.phases.json``).

    ``filter`` is a BPF template whose ``{identifier}`` placeholders are filled from the device's identifiers.
    """

    source: str
    interface: str | None = None
    filter: str | None = None
    host: str | None = None
    command: tuple[str, ...] | None = None
    file: Path | None = None
    phases: Path | None = None
    buffer_mib: int | None = None
    extras: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: where the filter is set (file; line and field), for errors raised when it is filled in
    origin_file: str = field(default="", compare=False)
    origin_where: str = field(default="", compare=False)

    def placeholders(self) -> tuple[str, ...]:
        """The identifier names the filter template uses."""
        return _placeholders(self.filter) if self.filter else ()

    def bpf(self, identifiers: Identifiers) -> str | None:
        """The filter with placeholders filled in. A placeholder with several values (two MACs) becomes an
        ``or`` of the template per value. InputError when the device has no value for a placeholder."""
        if not self.filter:
            return None
        result = self.filter
        for name in self.placeholders():
            values = identifiers.get(name)
            if not values:
                raise InputError(self.origin_file or None, f"filter uses {{{name}}} but the device has no {name}",
                                 where=self.origin_where or None,
                                 fix=f"add {name} to the device's identifiers (or to read_identifiers), "
                                     "or change the filter")
            if len(values) == 1:
                result = result.replace(f"{{{name}}}", values[0])
            else:
                result = " or ".join(f"({result.replace(f'{{{name}}}', value)})" for value in values)
        return result

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "interface": self.interface, "filter": self.filter, "host": self.host,
                "command": list(self.command) if self.command else None,
                "file": str(self.file) if self.file else None}


@dataclass(frozen=True)
class DeviceEntry:
    """One phone of the inventory, defaults applied and validated."""

    label: str
    serial: str

    def __repr__(self) -> str:
        """Masked: pytest prints a failing fixture's arguments, and the serial and identifiers are sensitive."""
        return (f"DeviceEntry(label={self.label!r}, model={self.model!r}, serial={mask(self.serial)!r}, "
                f"backend={self.backend!r}, identifiers={self.identifiers!r})")
    model: str
    backend: str
    firmware: Path | None
    transport: str
    unlock: UnlockSpec
    identifiers: Identifiers
    read_identifiers: tuple[str, ...]
    capture: CaptureSpec
    settle_s: Mapping[str, float]
    boot_timeout_s: float
    policy: Policy
    line: int
    path: Path = field(default=Path("devices.yaml"), compare=False)
    index: int = field(default=0, compare=False)
    tls_keys: TlsKeysSpec = TlsKeysSpec()

    @property
    def key(self) -> str:
        """The entry's field path in the file, for messages: ``devices[2]``."""
        return f"devices[{self.index}]"

    @property
    def source(self) -> str:
        """The inventory file, for :class:`InputError`."""
        return str(self.path)

    def settle(self, phase: str) -> float:
        """Seconds to wait after a lifecycle event (0 for an event with no settle time)."""
        return float(self.settle_s.get(phase, 0.0))

    def serial_is_identifier(self) -> bool:
        """A USB serial is normally the phone's hardware serial (``ro.serialno``): an identifier to mask."""
        if self.serial in self.identifiers.get("serial"):
            return True
        return self.backend == "uiautomator2" and ":" not in self.serial

    def shown_serial(self, show_identifiers: bool = False) -> str:
        """The adb serial for messages and reports: masked when it is the hardware serial."""
        return self.serial if show_identifiers or not self.serial_is_identifier() else mask(self.serial)

    def info(self, show_identifiers: bool = False) -> dict[str, object]:
        """Serializable, identifiers masked unless asked: for the report header and the Allure environment."""
        return {"label": self.label, "model": self.model, "serial": self.shown_serial(show_identifiers),
                "backend": self.backend,
                "firmware": str(self.firmware) if self.firmware else None, "transport": self.transport,
                "unlock": self.unlock.method, "identifiers": list(self.identifiers.names()),
                "read_identifiers": list(self.read_identifiers), "capture": self.capture.to_json(),
                "policy": self.policy.to_json(), "tls_keys": self.tls_keys.to_json()}


@dataclass(frozen=True)
class Inventory:
    """All devices of one ``devices.yaml``."""

    path: Path
    devices: tuple[DeviceEntry, ...]

    def labels(self) -> tuple[str, ...]:
        return tuple(entry.label for entry in self.devices)

    def get(self, label: str) -> DeviceEntry:
        for entry in self.devices:
            if entry.label == label:
                return entry
        raise InputError(self.path, f"no device labelled {label!r}",
                         fix=f"use one of: {', '.join(self.labels())}")

    def select(self, labels: Sequence[str] = (), models: Sequence[str] = ()) -> tuple[DeviceEntry, ...]:
        """The devices with one of ``labels`` (globs allowed) and one of ``models`` (case-insensitive globs);
        an empty selector selects everything. Selecting a label that matches nothing is an error (a typo would
        otherwise silently test nothing)."""
        chosen = list(self.devices)
        if labels:
            for label in labels:
                if not any(fnmatch.fnmatchcase(entry.label, label) for entry in self.devices):
                    raise InputError(self.path, f"no device labelled {label!r}",
                                     fix=f"use one of: {', '.join(self.labels())}")
            chosen = [entry for entry in chosen if any(fnmatch.fnmatchcase(entry.label, lb) for lb in labels)]
        if models:
            wanted = [model.lower() for model in models]
            for model in wanted:
                if not any(fnmatch.fnmatchcase(entry.model.lower(), model) for entry in self.devices):
                    known = sorted({entry.model for entry in self.devices})
                    raise InputError(self.path, f"no device of model {model!r}", fix=f"use one of: {', '.join(known)}")
            chosen = [entry for entry in chosen
                      if any(fnmatch.fnmatchcase(entry.model.lower(), model) for model in wanted)]
        return tuple(chosen)


# --- loading -------------------------------------------------------------------------------------------------


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate ``devices.yaml``. Every problem is one :class:`InputError` naming the file, the line,
    the field path (``devices[2].unlock.method``) and the fix; unknown keys are errors (typos must not pass)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(source, "inventory file not found",
                         fix="pass --phonehome-inventory PATH or create devices.yaml (see docs/devices.md)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(source, f"cannot read inventory: {exc}", fix="pass a readable UTF-8 YAML file") from None
    try:
        lines = field_lines(text, source=source)
        data = yaml.load(text, Loader=identifiers_loader())  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise InputError(source, f"YAML syntax error: {exc.problem or exc.context}",
                         where=f"line {mark.line + 1}" if mark is not None else None,
                         fix="fix the YAML syntax") from None
    except yaml.YAMLError as exc:
        raise InputError(source, f"YAML error: {exc}", fix="fix the YAML syntax") from None
    return _Loader(path, lines).inventory(data)


def _placeholders(template: str) -> tuple[str, ...]:
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    return tuple(dict.fromkeys(names))


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``; nested mappings merge, anything else (lists too) is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Loader:
    """Validation of one file, with the line map to point errors at the right place."""

    def __init__(self, path: Path, lines: Mapping[str, int]) -> None:
        self.path = path
        self.source = str(path)
        self.lines = lines

    # -- errors --

    def error(self, field_path: str, problem: str, fix: str) -> InputError:
        line = line_of(self.lines, field_path)
        where = ", ".join(part for part in (f"line {line}" if line else None, field_path or None) if part)
        return InputError(self.source, problem, where=where or None, fix=fix)

    def origin(self, device: str, key: str) -> str:
        """Where a merged field came from: the device's own key, else the defaults block."""
        own = f"{device}.{key}"
        if self._has(own):
            return own
        default = f"defaults.{key}"
        if self._has(default):
            return default
        return own

    def _has(self, path: str) -> bool:
        return path in self.lines

    def unknown_keys(self, data: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
        for key in data:
            if key not in allowed:
                child = f"{path}.{key}" if path else str(key)
                hint = _closest(str(key), allowed)
                if key in ("secret", "pin", "password", "passcode"):
                    fix = "never write the secret in the file: name an environment variable in secret_env"
                elif hint:
                    fix = f"did you mean {hint!r}? (allowed: {', '.join(allowed)})"
                else:
                    fix = f"allowed keys: {', '.join(allowed)}"
                raise self.error(child, f"unknown key {key!r}", fix)

    def mapping(self, value: object, path: str, what: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(path, f"{what} must be a mapping, not {yaml_kind(value)}", "write 'key: value' lines")
        return value

    def text(self, value: object, path: str, what: str, *, fix: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            raise self.error(path, f"{what} must be a non-empty string, got {yaml_kind(value)}", fix)
        return str(value).strip()

    def number(self, value: object, path: str, what: str, *, minimum: float, fix: str) -> float:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
            raise self.error(path, f"{what} must be a number >= {minimum:g}, got {value!r}", fix)
        return float(value)

    def choice(self, value: object, path: str, what: str, choices: Sequence[str]) -> str:
        if value not in choices:
            raise self.error(path, f"{what} {value!r} is not one of {', '.join(choices)}",
                             f"use one of: {', '.join(choices)}")
        return str(value)

    # -- the file --

    def inventory(self, data: object) -> Inventory:
        if data is None:
            raise self.error("", "inventory is empty", "start with 'version: 1' and a 'devices:' list")
        top = self.mapping(data, "", "the inventory")
        self.unknown_keys(top, TOP_KEYS, "")
        if "version" not in top:
            raise self.error("", "missing 'version'", f"add 'version: {FORMAT_VERSION}' at the top")
        if str(top["version"]) != str(FORMAT_VERSION):
            raise self.error("version", f"unsupported version {top['version']!r}",
                             f"this phonehome reads version {FORMAT_VERSION}")
        defaults = self.mapping(top.get("defaults") or {}, "defaults", "defaults")
        for key in defaults:
            if key not in DEFAULTABLE_KEYS and key in DEVICE_KEYS:
                raise self.error(f"defaults.{key}", f"{key!r} cannot have a default (it is per device)",
                                 f"set {key} on each device")
        self.unknown_keys(defaults, DEFAULTABLE_KEYS, "defaults")
        raw_devices = top.get("devices")
        if not isinstance(raw_devices, list) or not raw_devices:
            raise self.error("devices", "'devices' must be a non-empty list",
                             "list at least one device with label, model, serial and backend")
        builtin = {"settle_s": dict(DEFAULT_SETTLE_S), "boot_timeout_s": DEFAULT_BOOT_TIMEOUT_S,
                   "capture": {"source": "interface", "interface": "auto"}, "unlock": {"method": "none"},
                   "transport": "usb"}
        base = deep_merge(builtin, defaults)
        devices = tuple(self.device(index, raw, base) for index, raw in enumerate(raw_devices))
        self.unique(devices, "label")
        self.unique(devices, "serial")
        return Inventory(path=self.path, devices=devices)

    def unique(self, devices: Sequence[DeviceEntry], key: str) -> None:
        seen: dict[str, DeviceEntry] = {}
        for entry in devices:
            value = getattr(entry, key)
            if value in seen:
                shown = entry.shown_serial() if key == "serial" else value
                raise self.error(f"{entry.key}.{key}",
                                 f"{key} {shown!r} is also used by {seen[value].key} (line {seen[value].line})",
                                 f"give every device its own {key}")
            seen[value] = entry

    def device(self, index: int, raw: object, base: Mapping[str, Any]) -> DeviceEntry:
        path = f"devices[{index}]"
        own = self.mapping(raw, path, "a device")
        self.unknown_keys(own, DEVICE_KEYS, path)
        for key in ("label", "model", "serial", "backend"):
            if key not in own and key not in base:
                raise self.error(path, f"device is missing {key!r}", f"add '{key}:' to the device")
        merged = deep_merge(base, own)
        label = self.text(merged["label"], f"{path}.label", "label", fix="name the device, e.g. pixel7-lab2")
        if not _LABEL.fullmatch(label):
            raise self.error(f"{path}.label", f"label {label!r} has characters pytest ids cannot carry",
                             "use letters, digits, '_', '-' and '.'")
        serial = self.text(merged["serial"], f"{path}.serial", "serial",
                           fix="copy it from 'adb devices' (or host:port for adb over TCP)")
        if any(ch.isspace() for ch in serial):
            raise self.error(f"{path}.serial", "serial contains spaces", "copy it from 'adb devices'")
        model = self.text(merged["model"], self.origin(path, "model"), "model", fix="e.g. model: Nokia 7 Plus")
        backend = self.choice(merged["backend"], self.origin(path, "backend"), "backend", BACKENDS)
        firmware = self.firmware(merged.get("firmware"), backend, path)
        transport = self.choice(merged["transport"], self.origin(path, "transport"), "transport", TRANSPORTS)
        unlock = self.unlock(merged["unlock"], self.origin(path, "unlock"), label)
        read_ids = self.read_identifiers(merged.get("read_identifiers", []), self.origin(path, "read_identifiers"))
        identifiers = self.identifiers(own.get("identifiers"), f"{path}.identifiers")
        capture = self.capture(merged["capture"], path, identifiers, read_ids)
        settle = self.settle(merged["settle_s"], path)
        boot_timeout = self.number(merged["boot_timeout_s"], self.origin(path, "boot_timeout_s"), "boot_timeout_s",
                                   minimum=1, fix="give seconds, e.g. boot_timeout_s: 120")
        policy = self.policy(merged.get("policy") or {}, path)
        tls_keys = self.tls_keys(merged.get("tls_keys") or {}, path)
        return DeviceEntry(label=label, serial=serial, model=model, backend=backend, firmware=firmware,
                           transport=transport, unlock=unlock, identifiers=identifiers,
                           read_identifiers=read_ids, capture=capture, settle_s=MappingProxyType(settle),
                           boot_timeout_s=boot_timeout, policy=policy, line=line_of(self.lines, path) or 0,
                           path=self.path, index=index, tls_keys=tls_keys)

    def firmware(self, value: object, backend: str, device: str) -> Path | None:
        path = f"{device}.firmware"
        if backend != "virtual":
            if value is not None:
                raise self.error(path, f"firmware is only for virtual phones (backend is {backend})",
                                 "remove firmware, or set backend: virtual")
            return None
        if value is None:
            raise self.error(device, "a virtual phone needs a firmware profile",
                             f"add 'firmware: NAME' for {FIRMWARE_DIR}/NAME.yaml")
        name = self.text(value, path, "firmware", fix=f"name a profile in {FIRMWARE_DIR}/ or give a path")
        base = self.path.parent
        if "/" in name or name.endswith((".yaml", ".yml")):
            candidate = Path(name) if Path(name).is_absolute() else base / name
        else:
            candidate = base / FIRMWARE_DIR / f"{name}.yaml"
        if not candidate.is_file():
            folder = base / FIRMWARE_DIR
            known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
            raise self.error(path, f"firmware profile {name!r} not found at {candidate}",
                             f"use one of: {', '.join(known)}" if known else f"create {candidate}")
        return candidate.resolve()

    def unlock(self, value: object, path: str, label: str) -> UnlockSpec:
        if isinstance(value, str):  # shorthand: unlock: swipe
            value = {"method": value}
        data = self.mapping(value, path, "unlock")
        self.unknown_keys(data, UNLOCK_KEYS, path)
        method = self.choice(data.get("method"), f"{path}.method", "unlock method", UNLOCK_METHODS)
        secret_env = data.get("secret_env")
        if method in ("pin", "password"):
            if secret_env is None:
                raise self.error(path, f"unlock method {method} needs secret_env",
                                 f"name the environment variable that holds the {method}, e.g. "
                                 f"secret_env: PHONEHOME_PIN_{label.upper().replace('-', '_').replace('.', '_')}")
            if not isinstance(secret_env, str) or not _ENV_NAME.fullmatch(secret_env):
                raise self.error(f"{path}.secret_env", "secret_env must be an environment variable name",
                                 "use letters, digits and '_' (e.g. PHONEHOME_PIN_LAB1); never the secret itself")
        elif secret_env is not None:
            raise self.error(f"{path}.secret_env", f"unlock method {method} uses no secret",
                             "remove secret_env, or set method: pin / password")
        return UnlockSpec(method=method, secret_env=secret_env, device=label)

    def read_identifiers(self, value: object, path: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.error(path, f"read_identifiers must be a list, not {yaml_kind(value)}",
                             f"list names from: {', '.join(READABLE_IDENTIFIERS)}")
        for index, name in enumerate(value):
            if name not in READABLE_IDENTIFIERS:
                raise self.error(f"{path}[{index}]", f"{name!r} cannot be read from a phone",
                                 f"use names from: {', '.join(READABLE_IDENTIFIERS)}")
        return tuple(dict.fromkeys(value))

    def identifiers(self, value: object, path: str) -> Identifiers:
        if value is None:
            return Identifiers(values=())
        prefix = path + "."
        relative = {key[len(prefix):]: line for key, line in self.lines.items() if key.startswith(prefix)}
        if path in self.lines:
            relative[""] = self.lines[path]
        return parse_identifiers(value, source=self.source, where=path, lines=relative)

    def capture(self, value: object, device: str, identifiers: Identifiers,
                read_ids: Sequence[str]) -> CaptureSpec:
        path = self.origin(device, "capture")
        data = self.mapping(value, path, "capture")
        self.unknown_keys(data, CAPTURE_KEYS, path)

        def at(key: str) -> str:
            return self.origin(device, f"capture.{key}")

        source = self.choice(data.get("source"), at("source"), "capture source", CAPTURE_SOURCES)
        interface = data.get("interface")
        if interface is not None:
            interface = self.text(interface, at("interface"), "interface", fix="e.g. interface: wlan0-ap, or auto")
        bpf = data.get("filter")
        if bpf is not None:
            bpf = self.text(bpf, at("filter"), "filter", fix='e.g. filter: "ether host {wifi_mac}"')
            self.check_filter(bpf, at("filter"), identifiers, read_ids)
        host = data.get("host")
        command = data.get("command")
        file = phases = None
        buffer_mib = None
        extras: dict[str, str] = {}
        if source == "interface" and interface is None:
            interface = "auto"
        if source == "ssh":
            if host is None:
                raise self.error(path, "capture source ssh needs host", "add host: user@ap.lab (key login)")
            host = self.text(host, at("host"), "host", fix="e.g. host: root@ap.lab")
            if interface in (None, "auto"):
                raise self.error(at("interface"), "capture source ssh needs the remote interface",
                                 "set interface: to the access point's interface on that host, e.g. wlan0")
        elif host is not None:
            host = None  # inherited from defaults but meaningless for this source
        if source == "adb-tcpdump" and interface in (None, "auto"):
            interface = DEFAULT_TCPDUMP_INTERFACE
        if command is not None:
            if (not isinstance(command, list) or not command
                    or not all(isinstance(arg, str) and arg for arg in command)):
                raise self.error(at("command"), "command must be a non-empty list of strings",
                                 'e.g. command: [tcpdump, -i, wlan0, -U, -w, "-"]')
            if source != "adb-tcpdump":
                raise self.error(at("command"), f"command is only used by source adb-tcpdump, not {source}",
                                 "remove command")
        if source == "file":
            raw = data.get("file")
            if raw is None:
                raise self.error(path, "capture source file needs file", "add file: path/to/capture.pcapng")
            file = self.existing(raw, at("file"), "capture file")
            if data.get("phases") is not None:
                phases = self.existing(data["phases"], at("phases"), "phases file")
        if data.get("buffer_mib") is not None:
            buffer_mib = int(self.number(data["buffer_mib"], at("buffer_mib"), "buffer_mib", minimum=1,
                                         fix="give MiB, e.g. buffer_mib: 64"))
        if data.get("extras") is not None:
            raw_extras = self.mapping(data["extras"], at("extras"), "extras")
            # intent extras travel as strings (`am start -e`); PCAPdroid parses ints and bools from them
            extras = {str(key): str(val).lower() if isinstance(val, bool) else str(val)
                      for key, val in raw_extras.items()}
        line = line_of(self.lines, at("filter"))
        origin_where = ", ".join(part for part in (f"line {line}" if line else None, at("filter")) if part)
        return CaptureSpec(source=source, interface=interface, filter=bpf, host=host,
                           command=tuple(command) if command else None, file=file, phases=phases,
                           buffer_mib=buffer_mib, extras=MappingProxyType(extras),
                           origin_file=self.source, origin_where=origin_where)

    def check_filter(self, bpf: str, path: str, identifiers: Identifiers, read_ids: Sequence[str]) -> None:
        try:
            names = _placeholders(bpf)
        except ValueError as exc:
            raise self.error(path, f"filter is not a valid template: {exc}",
                             "write placeholders as {wifi_mac}; a literal brace as {{ or }}") from None
        for name in names:
            if name in identifiers.names():
                continue
            if name in read_ids:
                continue  # read from the phone before capture starts
            if name in IDENTIFIER_KEYS or name == LOCATION_KEY:
                raise self.error(path, f"filter uses {{{name}}} but this device has no {name}",
                                 f"add {name} to the device's identifiers or read_identifiers")
            raise self.error(path, f"filter uses unknown placeholder {{{name}}}",
                             f"use identifier names ({', '.join(IDENTIFIER_KEYS)}) or a {CUSTOM_KEY} name")

    def existing(self, value: object, path: str, what: str) -> Path:
        text = self.text(value, path, what, fix=f"give the path of the {what}")
        candidate = Path(text) if Path(text).is_absolute() else self.path.parent / text
        if not candidate.is_file():
            raise self.error(path, f"{what} {candidate} not found", f"give the path of an existing {what}")
        return candidate.resolve()

    def settle(self, value: object, device: str) -> dict[str, float]:
        path = self.origin(device, "settle_s")
        data = self.mapping(value, path, "settle_s")
        self.unknown_keys(data, SETTLE_KEYS, path)
        settle = {}
        for key, raw in data.items():
            settle[key] = self.number(raw, self.origin(device, f"settle_s.{key}"), f"settle_s.{key}", minimum=0,
                                      fix="give seconds, e.g. 3")
        if settle["stop_delay"] < MIN_STOP_DELAY_S:
            raise self.error(self.origin(device, "settle_s.stop_delay"),
                             f"stop_delay {settle['stop_delay']:g} s is too short: dumpcap loses the last packets",
                             f"use at least {MIN_STOP_DELAY_S:g}")
        return settle

    def policy(self, value: object, device: str) -> Policy:
        path = self.origin(device, "policy")
        data = self.mapping(value, path, "policy")
        self.unknown_keys(data, POLICY_KEYS, path)
        lists: dict[str, tuple[str, ...]] = {}
        for key in POLICY_KEYS:
            raw = data.get(key) or []
            where = self.origin(device, f"policy.{key}")
            if not isinstance(raw, list):
                raise self.error(where, f"{key} must be a list of host patterns",
                                 f'e.g. {key}: ["*.tracker.example", "203.0.113.*"]')
            for index, item in enumerate(raw):
                if not isinstance(item, str) or not item.strip():
                    raise self.error(f"{where}[{index}]", "a host pattern must be a non-empty string",
                                     'e.g. "*.tracker.example"')
            lists[key] = tuple(item.strip() for item in raw)
        return Policy(denied_hosts=lists["denied_hosts"], allowed_hosts=lists["allowed_hosts"],
                      identifier_hosts=lists["identifier_hosts"])

    def tls_keys(self, value: object, device: str) -> TlsKeysSpec:
        path = self.origin(device, "tls_keys")
        data = self.mapping(value, path, "tls_keys")
        self.unknown_keys(data, TLS_KEYS_KEYS, path)

        def at(key: str) -> str:
            return self.origin(device, f"tls_keys.{key}")

        source = data.get("source")
        if source is not None:
            source = self.choice(source, at("source"), "tls_keys source", KEYLOG_SOURCES)
        require = data.get("require", False)
        if not isinstance(require, bool):
            raise self.error(at("require"), f"require must be true or false, got {yaml_kind(require)}",
                             "write require: true (a TLS flow without keys is an error) or require: false")
        where: str | None = None
        if data.get("path") is not None:
            if source is None:
                raise self.error(at("path"), "tls_keys path needs a source",
                                 f"add source: one of {', '.join(KEYLOG_SOURCES)}")
            where = self.text(data["path"], at("path"), "tls_keys path", fix="give the key log's path")
            if where == AUTO_KEYLOG:
                if source != "file":
                    raise self.error(at("path"), f"path: {AUTO_KEYLOG} is only for source file (virtual phones)",
                                     "give the key log's path on the phone")
            elif source == "file" and not Path(where).is_absolute():
                where = str((self.path.parent / where).resolve())
            elif source != "file" and not where.startswith("/"):
                raise self.error(at("path"), f"a {source} key log path is a path on the phone and must be absolute",
                                 "e.g. path: /data/local/tmp/keys.log")
        elif source is not None:
            example = "keys/pixel7.log" if source == "file" else "/data/local/tmp/keys.log"
            raise self.error(path, f"tls_keys source {source} needs path", f"add path: {example}")
        return TlsKeysSpec(source=source, path=where, require=require)


def _closest(key: str, allowed: Sequence[str]) -> str | None:
    matches = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return matches[0] if matches else None
