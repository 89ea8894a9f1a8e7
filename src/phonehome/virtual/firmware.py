"""Firmware profiles and the runner that sends their traffic from inside a virtual phone's network namespace.

A profile (``fixtures/firmware/*.yaml``, format in ``docs/firmware-profiles.md``) says what a phone's system apps
send on each lifecycle event: protocol, host, port, and payload templates whose placeholders (``{imei}``,
``{imei|md5}``, ``{location.lat}``) are filled from the phone's identifiers. The runner
(``python -m phonehome.virtual.firmware``, started by the lab with ``ip netns exec``) resolves every name through
the fake internet's DNS with real queries and connects for real, so a capture on the phone's lab interface shows
DNS, TCP handshakes, HTTP and TLS exactly as a phone's traffic would.

Runner protocol: the first stdin line is a JSON object ``{"profile": PATH, "identifiers": MAPPING, "resolver":
IP, "booted": BOOL}`` (``booted``: the phone is already up, start the periodic timers now); every further line is
an event name (``boot_completed``, ``screen_on``, ``screen_off``, ``unlocked``,
``shutdown``). Each request it sends is reported as one JSON line on stdout (host names masked where they carry
a placeholder). EOF on stdin stops it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import json
import random
import re
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from phonehome.errors import InputError
from phonehome.identifiers import IDENTIFIER_KEYS, Identifiers, field_lines, mask, parse_identifiers
from phonehome.virtual.appsockets import app_socket, hold
from phonehome.virtual.netlab import INTERNET

PROFILE_VERSION = 1
#: Android releases a profile may name (``android: "13"``) and their SDK levels: the virtual phone answers in the
#: style of that release (:mod:`phonehome.virtual.dumps`)
ANDROID_SDK: dict[str, int] = {"8.0": 26, "8.1": 27, "9": 28, "10": 29, "11": 30, "12": 31, "12L": 32, "13": 33,
                               "14": 34, "15": 35, "16": 36}
#: events a phone reports (``VirtualPhone`` on_event), plus ``periodic`` for timers that run while booted
EVENTS: tuple[str, ...] = ("boot_completed", "screen_on", "screen_off", "unlocked", "shutdown")
PERIODIC = "periodic"
TCP_PROTOCOLS: tuple[str, ...] = ("http", "https", "tls", "mqtt", "tcp")
PROTOCOLS: tuple[str, ...] = (*TCP_PROTOCOLS, "dns", "udp")
DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443, "tls": 443, "mqtt": 1883, "dns": 53}
ENCODINGS: Mapping[str, Callable[[str], str]] = {
    "md5": lambda v: hashlib.md5(v.encode()).hexdigest(),
    "sha1": lambda v: hashlib.sha1(v.encode()).hexdigest(),
    "sha256": lambda v: hashlib.sha256(v.encode()).hexdigest(),
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
    "base64url": lambda v: base64.urlsafe_b64encode(v.encode()).decode().rstrip("="),
    "hex": lambda v: v.encode().hex(),
    "upper": str.upper,
    "lower": str.lower,
    "url": lambda v: urllib.parse.quote(v, safe=""),
    "digits": lambda v: "".join(ch for ch in v if ch.isdigit()),
    "nocolon": lambda v: v.replace(":", "").replace("-", ""),
}
#: placeholders that are not identifiers
LOCATION_FIELDS = ("location.lat", "location.lon")
#: fields of the ``cell`` and ``wifi`` identifiers (``{cell.cid}``, ``{wifi.ssid}``)
CELL_PLACEHOLDERS = ("cell.mcc", "cell.mnc", "cell.lac", "cell.cid", "cell.bsid")
WIFI_PLACEHOLDERS = ("wifi.bssid", "wifi.ssid")
FIELD_PLACEHOLDERS = (*LOCATION_FIELDS, *CELL_PLACEHOLDERS, *WIFI_PLACEHOLDERS)
#: what ``body_encoding`` may do to a whole request body (firmware that wants its body to look encrypted)
BODY_ENCODINGS: Mapping[str, Callable[[bytes], bytes]] = {"base64": base64.b64encode}
CLOCK_FIELDS = ("timestamp", "timestamp_ms")
MAX_DELAY_S = 3600.0
#: hard-coded addresses must be ones the lab's fake internet owns
FAKE_INTERNET = INTERNET
MIN_PERIOD_S = 1.0

#: one DNS query; the fake resolver answers in microseconds
DNS_TIMEOUT_S = 2.0
DNS_RETRIES = 2
#: connect + exchange of one request
REQUEST_TIMEOUT_S = 5.0
MAX_RESPONSE_BYTES = 1 << 20

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"(?P<name>[A-Za-z][A-Za-z0-9_-]*(?:\.(?:lat|lon|mcc|mnc|lac|cid|bsid|bssid|ssid))?)(?:\[(?P<index>\d+)\])?")
_METHOD = re.compile(r"[A-Z]{3,10}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


# --- templates -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placeholder:
    """``{name[index]|enc|enc}``: the index-th value of an identifier, encoded left to right."""

    name: str
    index: int
    encodings: tuple[str, ...]

    def render(self, ids: Identifiers, now: float) -> str:
        value = _value(self.name, self.index, ids, now)
        for encoding in self.encodings:
            value = ENCODINGS[encoding](value)
        return value


def _value(name: str, index: int, ids: Identifiers, now: float) -> str:
    if name == "timestamp":
        return str(int(now))
    if name == "timestamp_ms":
        return str(int(now * 1000))
    if name in LOCATION_FIELDS:
        location = ids.locations[index]
        return repr(location.lat if name.endswith("lat") else location.lon)
    if name in CELL_PLACEHOLDERS or name in WIFI_PLACEHOLDERS:
        entry = _field_entry(name, index, ids)
        value = getattr(entry, name.split(".", 1)[1]) if entry is not None else None
        if value is None:  # check_profile_for refuses such a phone at load time
            raise LookupError(f"no {name}[{index}]")
        return str(value)
    return ids.get(name)[index]


def _field_entry(name: str, index: int, ids: Identifiers) -> object | None:
    """The index-th cell or wifi entry for a ``cell.*``/``wifi.*`` placeholder, None when there is none or the
    field is unset."""
    entries: tuple[object, ...] = ids.cells if name.startswith("cell.") else ids.wifis
    if index >= len(entries) or getattr(entries[index], name.split(".", 1)[1]) is None:
        return None
    return entries[index]


@dataclass(frozen=True)
class Template:
    """A string with placeholders, parsed once at load time so rendering never fails on syntax."""

    parts: tuple[str | Placeholder, ...]

    @classmethod
    def parse(cls, text: str, *, source: str, where: str) -> Template:
        parts: list[str | Placeholder] = []
        literal: list[str] = []
        position = 0
        while position < len(text):
            char = text[position]
            if char in "{}" and text[position: position + 2] == char * 2:  # {{ and }} are literal braces
                literal.append(char)
                position += 2
            elif char == "{":
                end = text.find("}", position)
                if end < 0:
                    raise _brace_error(text, source, where)
                parts.append("".join(literal))
                literal = []
                parts.append(_parse_placeholder(text[position + 1: end], source=source, where=where))
                position = end + 1
            elif char == "}":
                raise _brace_error(text, source, where)
            else:
                literal.append(char)
                position += 1
        parts.append("".join(literal))
        return cls(tuple(part for part in parts if part != ""))

    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(part for part in self.parts if isinstance(part, Placeholder))

    def render(self, ids: Identifiers, now: float) -> str:
        return "".join(part if isinstance(part, str) else part.render(ids, now) for part in self.parts)

    def literal_suffix(self) -> str:
        """The text after the last placeholder (for a templated host name: its fixed zone)."""
        suffix: list[str] = []
        for part in reversed(self.parts):
            if isinstance(part, Placeholder):
                break
            suffix.insert(0, part)
        return "".join(suffix)


def _brace_error(text: str, source: str, where: str) -> InputError:
    return InputError(source, f"unbalanced brace in {text!r}", where=where,
                      fix="write placeholders as {name} or {name|encoding}; a literal brace is {{ or }}")


def _parse_placeholder(inner: str, *, source: str, where: str) -> Placeholder:
    head, *encodings = [piece.strip() for piece in inner.split("|")]
    match = _NAME.fullmatch(head)
    if match is None:
        raise InputError(source, f"bad placeholder {{{inner}}}", where=where,
                         fix=f"use an identifier name ({', '.join(IDENTIFIER_KEYS)}, location.lat, location.lon, "
                             "cell.cid..., wifi.ssid..., timestamp or a custom name), optionally with [index] and "
                             "|encodings")
    name = match.group("name")
    if "." in name and name not in FIELD_PLACEHOLDERS:
        raise InputError(source, f"bad placeholder {{{inner}}}", where=where,
                         fix=f"only location, cell and wifi have fields: {', '.join(FIELD_PLACEHOLDERS)}")
    for encoding in encodings:
        if encoding not in ENCODINGS:
            raise InputError(source, f"unknown encoding '{encoding}' in {{{inner}}}", where=where,
                             fix=f"use one of {', '.join(ENCODINGS)}")
    return Placeholder(name=name, index=int(match.group("index") or 0), encodings=tuple(encodings))


# --- the profile ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One thing the firmware sends. Which fields matter depends on ``protocol`` (see the docs)."""

    protocol: str
    host: Template
    port: int
    delay_s: float = 0.0
    method: str = "GET"
    path: Template = Template(("/",))
    query: tuple[tuple[str, Template], ...] = ()
    headers: tuple[tuple[str, Template], ...] = ()
    body: Template | None = None
    json_body: Any = None  # the YAML structure with Template leaves
    body_encoding: str | None = None  # applied to the whole rendered body (a key of BODY_ENCODINGS)
    client_id: Template | None = None
    username: Template | None = None
    password: Template | None = None
    topic: Template | None = None
    where: str = ""
    app: str | None = None  # the package whose UID owns the request's sockets (None: root, a native daemon)

    def templates(self) -> Iterable[Template]:
        yield self.host
        yield self.path
        yield from (template for _, template in (*self.query, *self.headers))
        for template in (self.body, self.client_id, self.username, self.password, self.topic):
            if template is not None:
                yield template
        yield from _json_templates(self.json_body)

    def zone(self) -> str:
        """The host name the fake DNS must answer: the host itself, or ``*.zone`` for a templated host."""
        if not self.host.placeholders():
            return self.host.render(Identifiers(values=()), 0.0).lower()
        return "*" + self.host.literal_suffix().lower()


@dataclass(frozen=True)
class Rule:
    """Requests sent, in order, when ``event`` happens (or every ``every_s`` while the phone is up)."""

    event: str
    requests: tuple[Request, ...]
    every_s: float | None = None
    delay_s: float = 0.0
    jitter_s: float = 0.0


@dataclass(frozen=True)
class FirmwareProfile:
    name: str
    description: str
    rules: tuple[Rule, ...]
    source: str
    #: the Android release the firmware is built on ("" when the profile does not say: the phone speaks 9)
    android: str = ""

    @property
    def sdk(self) -> int:
        """The SDK level of ``android``, 0 when not named."""
        return ANDROID_SDK.get(self.android, 0)
    apps: tuple[tuple[str, int], ...] = ()  # (package, UID) of the apps that send, as `pm list packages -U` says

    def uid_of(self, app: str | None) -> int | None:
        return dict(self.apps).get(app) if app is not None else None

    def requests(self) -> Iterable[Request]:
        for rule in self.rules:
            yield from rule.requests

    def host_names(self) -> tuple[str, ...]:
        """Every name the fake DNS must answer (exact names and ``*.zone`` wildcards)."""
        return tuple(dict.fromkeys(request.zone() for request in self.requests()
                                   if not _is_ip(request.zone())))

    def ports(self) -> tuple[tuple[str, int], ...]:
        """(``tcp``|``udp``, port) the fake internet must listen on."""
        found: dict[tuple[str, int], None] = {}
        for request in self.requests():
            if request.protocol in TCP_PROTOCOLS:
                found[("tcp", request.port)] = None
            elif request.protocol == "udp":
                found[("udp", request.port)] = None
        return tuple(found)

    def placeholders(self) -> tuple[tuple[str, Placeholder], ...]:
        """(field path, placeholder) for every placeholder, to check a phone has what the profile needs."""
        return tuple((request.where, placeholder) for request in self.requests()
                     for template in request.templates() for placeholder in template.placeholders())


def _json_templates(value: Any) -> Iterable[Template]:
    if isinstance(value, Template):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _json_templates(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_templates(item)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class _Fields:
    """Reads one YAML mapping, turning every problem into an InputError naming file, line and field."""

    def __init__(self, source: str, lines: Mapping[str, int]) -> None:
        self.source = source
        self.lines = lines

    def error(self, path: str, problem: str, fix: str) -> InputError:
        line = None
        probe = path
        while probe and line is None:
            line = self.lines.get(probe)
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        where = ", ".join(part for part in (f"line {line}" if line else None, path or None) if part) or None
        return InputError(self.source, problem, where=where, fix=fix)

    def mapping(self, data: Any, path: str, allowed: Sequence[str]) -> Mapping[str, Any]:
        if not isinstance(data, Mapping):
            raise self.error(path, f"expected a mapping, got {type(data).__name__}", "write 'key: value' lines")
        for key in data:
            if key is True and "event" in allowed:
                raise self.error(f"{path}.on", "'on' is not a field (YAML reads a bare on: as true)",
                                 "write event: <name>")
            if key not in allowed:
                raise self.error(f"{path}.{key}" if path else str(key), f"unknown field '{key}'",
                                 f"use one of: {', '.join(allowed)}")
        return data

    def string(self, data: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
        value = data.get(key, default)
        if not isinstance(value, str) or (not value and default is None):
            raise self.error(f"{path}.{key}", f"'{key}' must be a non-empty string", f"set {key}: <text>")
        return value

    def number(self, data: Mapping[str, Any], key: str, path: str, default: float, low: float,
               high: float) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise self.error(f"{path}.{key}", f"'{key}' must be a number from {low} to {high}, got {value!r}",
                             f"set {key}: <seconds>")
        return float(value)

    def template(self, value: Any, path: str) -> Template:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(path, f"expected text, got {type(value).__name__}", "write a string (quote it)")
        return Template.parse(str(value), source=self.source, where=self._where(path))

    def _where(self, path: str) -> str:
        line = self.lines.get(path)
        return f"line {line}, {path}" if line else path

    def template_map(self, data: Mapping[str, Any], key: str, path: str) -> tuple[tuple[str, Template], ...]:
        value = data.get(key) or {}
        if not isinstance(value, Mapping):
            raise self.error(f"{path}.{key}", f"'{key}' must be a mapping", f"write {key}: {{name: value}}")
        return tuple((str(name), self.template(item, f"{path}.{key}.{name}")) for name, item in value.items())

    def json_template(self, value: Any, path: str) -> Any:
        if isinstance(value, Mapping):
            return {str(k): self.json_template(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.json_template(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str):
            return self.template(value, path)
        return value


REQUEST_FIELDS = ("protocol", "host", "port", "delay_s", "method", "path", "query", "headers", "body", "json",
                  "body_encoding",
                  "client_id", "username", "password", "topic", "payload", "app")
RULE_FIELDS = ("event", "every_s", "delay_s", "jitter_s", "requests")
PROFILE_FIELDS = ("profile", "name", "description", "android", "apps", "rules")
#: Android UIDs: system (1000-9999) and application (10000-19999) ranges of user 0
MAX_APP_UID = 19999


def load_profile(path: str | Path) -> FirmwareProfile:
    """Read and validate a firmware profile; every problem is an InputError naming the file, line and field."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(source, "firmware profile not found",
                         fix="check the path; shipped profiles are in fixtures/firmware/") from None
    except OSError as exc:
        raise InputError(source, f"cannot read firmware profile: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
        lines = field_lines(text, source=source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise InputError(source, f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where,
                         fix="fix the YAML syntax") from None
    return parse_profile(data, source=source, lines=lines)


def parse_profile(data: Any, *, source: str, lines: Mapping[str, int] | None = None) -> FirmwareProfile:
    fields = _Fields(source, lines or {})
    top = fields.mapping(data, "", PROFILE_FIELDS)
    if top.get("profile") != PROFILE_VERSION:
        raise fields.error("profile", f"unsupported or missing format version {top.get('profile')!r}",
                           f"start the file with 'profile: {PROFILE_VERSION}'")
    rules_data = top.get("rules")
    if not isinstance(rules_data, list):
        raise fields.error("rules", "'rules' must be a list (it may be empty for a silent phone)",
                           "write rules: [] or a list of '- event: NAME' entries")
    rules = tuple(_parse_rule(item, f"rules[{index}]", fields) for index, item in enumerate(rules_data))
    android = top.get("android", "")
    if isinstance(android, int | float) and not isinstance(android, bool):
        android = str(android)  # `android: 13` is as meant as `android: "13"`
    if android != "" and android not in ANDROID_SDK:
        raise fields.error("android", f"unknown Android release {android!r}",
                           f"use one of: {', '.join(ANDROID_SDK)} (quoted, e.g. android: \"8.1\")")
    apps = _parse_apps(top.get("apps", {}), fields)
    for rule in rules:
        for request in rule.requests:
            if request.app is not None and request.app not in dict(apps):
                raise fields.error(f"{request.where}.app", f"app {request.app!r} is not listed under 'apps'",
                                   f"add '{request.app}: <uid>' to the profile's apps")
    return FirmwareProfile(name=fields.string(top, "name", ""),
                           description=str(top.get("description", "")), rules=rules, source=source,
                           android=str(android), apps=apps)


def _parse_apps(data: Any, fields: _Fields) -> tuple[tuple[str, int], ...]:
    """``apps: {package: uid}``: who sends (issue 12); several packages may share a UID (android.uid.system)."""
    if not isinstance(data, dict):
        raise fields.error("apps", "'apps' must map package names to UIDs", "write apps: {com.example.app: 10123}")
    apps = []
    for package, uid in data.items():
        if not isinstance(package, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", package):
            raise fields.error(f"apps.{package}", f"{package!r} is not a package name", "write e.g. com.example.app")
        if isinstance(uid, bool) or not isinstance(uid, int) or not 1000 <= uid <= MAX_APP_UID:
            raise fields.error(f"apps.{package}", f"UID {uid!r} is not an Android app or system UID",
                               f"use 1000-9999 for a system UID (1000 = android.uid.system), 10000-{MAX_APP_UID} "
                               "for an app")
        apps.append((package, uid))
    return tuple(apps)


def _parse_rule(data: Any, path: str, fields: _Fields) -> Rule:
    rule = fields.mapping(data, path, RULE_FIELDS)
    on = rule.get("event")
    if on not in (*EVENTS, PERIODIC):
        raise fields.error(f"{path}.event", f"unknown event {on!r}", f"use one of: {', '.join((*EVENTS, PERIODIC))}")
    every = None
    if on == PERIODIC:
        if "every_s" not in rule:
            raise fields.error(f"{path}.every_s", "a periodic rule needs 'every_s'", "set every_s: <seconds>")
        every = fields.number(rule, "every_s", path, 0, MIN_PERIOD_S, MAX_DELAY_S)
    elif "every_s" in rule:
        raise fields.error(f"{path}.every_s", "'every_s' only applies to 'event: periodic'", "remove it")
    requests = rule.get("requests")
    if not isinstance(requests, list) or not requests:
        raise fields.error(f"{path}.requests", "a rule needs a non-empty 'requests' list",
                           "add '- protocol: http' entries")
    return Rule(event=str(on), every_s=every, delay_s=fields.number(rule, "delay_s", path, 0, 0, MAX_DELAY_S),
                jitter_s=fields.number(rule, "jitter_s", path, 0, 0, MAX_DELAY_S),
                requests=tuple(_parse_request(item, f"{path}.requests[{i}]", fields)
                               for i, item in enumerate(requests)))


def _parse_request(data: Any, path: str, fields: _Fields) -> Request:
    request = fields.mapping(data, path, REQUEST_FIELDS)
    protocol = request.get("protocol")
    if protocol not in PROTOCOLS:
        raise fields.error(f"{path}.protocol", f"unknown protocol {protocol!r}", f"use one of: {', '.join(PROTOCOLS)}")
    host = fields.template(fields.string(request, "host", path), f"{path}.host")
    _check_host(host, f"{path}.host", fields)
    port_default = DEFAULT_PORTS.get(protocol)
    if "port" not in request and port_default is None:
        raise fields.error(f"{path}.port", f"a {protocol} request needs a port", "set port: <1-65535>")
    port = request.get("port", port_default)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise fields.error(f"{path}.port", f"port must be 1-65535, got {port!r}", "set port: <1-65535>")
    if protocol == "dns" and port != DEFAULT_PORTS["dns"]:
        raise fields.error(f"{path}.port", "dns requests go to the lab resolver on port 53", "remove port")
    allowed = _FIELDS_BY_PROTOCOL[protocol]
    for key in request:
        if key not in allowed:
            raise fields.error(f"{path}.{key}", f"'{key}' does not apply to {protocol} requests",
                               f"{protocol} requests take: {', '.join(allowed)}")
    method = str(request.get("method", "POST" if ("body" in request or "json" in request) else "GET"))
    if not _METHOD.fullmatch(method):
        raise fields.error(f"{path}.method", f"bad HTTP method {method!r}", "use GET, POST, PUT, ...")
    if "body" in request and "json" in request:
        raise fields.error(f"{path}.json", "give either 'body' or 'json', not both", "remove one of them")
    body_key = "payload" if "payload" in request else "body"
    body_encoding = request.get("body_encoding")
    if body_encoding is not None and body_encoding not in BODY_ENCODINGS:
        raise fields.error(f"{path}.body_encoding", f"unknown body encoding {body_encoding!r}",
                           f"use one of: {', '.join(BODY_ENCODINGS)}")
    if body_encoding is not None and "body" not in request and "json" not in request:
        raise fields.error(f"{path}.body_encoding", "body_encoding needs a body or json", "add one, or remove it")
    path_template = fields.template(request.get("path", "/"), f"{path}.path")
    first = path_template.parts[0] if path_template.parts else ""
    if protocol in ("http", "https") and not (isinstance(first, Placeholder) or first.startswith("/")):
        raise fields.error(f"{path}.path", "an HTTP path starts with '/'", "write path: /something")

    def optional(key: str) -> Template | None:
        return fields.template(request[key], f"{path}.{key}") if key in request else None

    return Request(
        protocol=str(protocol), host=host, port=port,
        delay_s=fields.number(request, "delay_s", path, 0, 0, MAX_DELAY_S),
        method=method, path=path_template,
        query=fields.template_map(request, "query", path), headers=fields.template_map(request, "headers", path),
        body=optional(body_key),
        json_body=fields.json_template(request["json"], f"{path}.json") if "json" in request else None,
        body_encoding=str(body_encoding) if body_encoding is not None else None,
        client_id=optional("client_id"), username=optional("username"), password=optional("password"),
        topic=optional("topic"), where=path, app=fields.string(request, "app", path) if "app" in request else None)


_COMMON = ("protocol", "host", "port", "delay_s", "app")
_HTTP = (*_COMMON, "method", "path", "query", "headers", "body", "json", "body_encoding")
_FIELDS_BY_PROTOCOL: Mapping[str, tuple[str, ...]] = {
    "http": _HTTP, "https": _HTTP,
    "tls": (*_COMMON, "payload"), "tcp": (*_COMMON, "payload"), "udp": (*_COMMON, "payload"),
    "dns": ("protocol", "host", "delay_s", "app"),
    "mqtt": (*_COMMON, "client_id", "username", "password", "topic", "payload"),
}
_NO_IDS = Identifiers(values=())


def _check_host(host: Template, path: str, fields: _Fields) -> None:
    """A fixed host must be a valid name or IPv4 address; a templated one needs a fixed zone after its labels."""
    if host.placeholders():
        zone = host.literal_suffix()
        if not zone.startswith(".") or not _valid_name(zone[1:]) or "." not in zone[1:]:
            raise fields.error(path, "a host with placeholders must end in a fixed zone of two or more labels",
                               "put placeholders in the leading labels, e.g. '{imei|md5}.t.ads.example'")
        return
    name = host.render(_NO_IDS, 0)
    if _is_ip(name):
        if ":" in name or ipaddress.ip_address(name) not in FAKE_INTERNET:
            raise fields.error(path, f"{name} is outside the lab's fake internet ({FAKE_INTERNET})",
                               f"use a host name, or an IPv4 address in {FAKE_INTERNET}")
    elif not _valid_name(name):
        raise fields.error(path, f"{name!r} is not a host name or IPv4 address", "write e.g. api.example.com")


def _valid_name(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def missing_identifiers(profile: FirmwareProfile, ids: Identifiers) -> list[str]:
    """Placeholders of ``profile`` that ``ids`` cannot fill: ``'rules[0].requests[1]: {imsi}'`` each."""
    problems: list[str] = []
    for where, placeholder in profile.placeholders():
        name, index = placeholder.name, placeholder.index
        if name in CLOCK_FIELDS:
            continue
        if name in CELL_PLACEHOLDERS or name in WIFI_PLACEHOLDERS:
            have = index + 1 if _field_entry(name, index, ids) is not None else 0
        else:
            have = len(ids.locations) if name in LOCATION_FIELDS else len(ids.get(name))
        if index >= have:
            label = f"{name}[{index}]" if index else name
            problems.append(f"{where}: {{{label}}}")
    return problems


def check_profile_for(profile: FirmwareProfile, ids: Identifiers, phone: str) -> None:
    """Raise InputError when ``profile`` needs an identifier the phone does not have (a typo, usually)."""
    problems = missing_identifiers(profile, ids)
    if problems:
        raise InputError(profile.source, f"phone {phone} has no value for {', '.join(sorted(set(problems)))}",
                         fix="add the identifier to the phone's identifiers, or fix the placeholder's name")


# --- rendering -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """A request with every template filled in, ready to send."""

    protocol: str
    host: str
    port: int
    masked_host: str
    method: str = "GET"
    target: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    topic: str | None = None


def render(request: Request, ids: Identifiers, now: float | None = None) -> Rendered:
    now = time.time() if now is None else now
    host = request.host.render(ids, now)
    masked = host if not request.host.placeholders() else _masked_host(request, ids, now)
    target = request.path.render(ids, now)
    if request.query:
        pairs = [(name, template.render(ids, now)) for name, template in request.query]
        target += ("&" if "?" in target else "?") + urllib.parse.urlencode(pairs)
    body = b""
    if request.body is not None:
        body = request.body.render(ids, now).encode()
    elif request.json_body is not None:
        body = json.dumps(_render_json(request.json_body, ids, now), separators=(",", ":")).encode()
    if request.body_encoding is not None:
        body = BODY_ENCODINGS[request.body_encoding](body)
    headers = tuple((name, template.render(ids, now)) for name, template in request.headers)
    if request.json_body is not None and not any(name.lower() == "content-type" for name, _ in headers):
        headers += (("Content-Type", "application/json"),)

    def opt(template: Template | None) -> str | None:
        return None if template is None else template.render(ids, now)

    return Rendered(protocol=request.protocol, host=host, port=request.port, masked_host=masked,
                    method=request.method, target=target, headers=headers, body=body,
                    client_id=opt(request.client_id) or "", username=opt(request.username),
                    password=opt(request.password), topic=opt(request.topic))


def _masked_host(request: Request, ids: Identifiers, now: float) -> str:
    parts = [part if isinstance(part, str) else mask(part.render(ids, now)) for part in request.host.parts]
    return "".join(parts)


def _render_json(value: Any, ids: Identifiers, now: float) -> Any:
    if isinstance(value, Template):
        return value.render(ids, now)
    if isinstance(value, dict):
        return {k: _render_json(v, ids, now) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, ids, now) for v in value]
    return value


def http_request_bytes(rendered: Rendered) -> bytes:
    """The request exactly as sent: Host first, then the profile's headers, Content-Length when there is a body."""
    host = rendered.host if rendered.port in (80, 443) else f"{rendered.host}:{rendered.port}"
    lines = [f"{rendered.method} {rendered.target} HTTP/1.1", f"Host: {host}"]
    names = {name.lower() for name, _ in rendered.headers}
    lines += [f"{name}: {value}" for name, value in rendered.headers]
    if "connection" not in names:
        lines.append("Connection: close")
    if rendered.body or rendered.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(rendered.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + rendered.body


# --- sending -------------------------------------------------------------------------------------------------


def dns_query_packet(name: str, ident: int, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def parse_dns_response(packet: bytes, ident: int) -> tuple[int, list[str]]:
    """(rcode, A records) of a response to query ``ident``."""
    if len(packet) < 12:
        raise ValueError("short DNS response")
    rid, flags, qdcount, ancount = struct.unpack("!HHHH", packet[:8])
    if rid != ident or not flags & 0x8000:
        raise ValueError("not the response to our query")
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(packet, offset) + 4
    addresses: list[str] = []
    for _ in range(ancount):
        offset = _skip_name(packet, offset)
        rtype, _rclass, _ttl, length = struct.unpack("!HHIH", packet[offset: offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            addresses.append(str(ipaddress.IPv4Address(packet[offset: offset + 4])))
        offset += length
    return flags & 0xF, addresses


def _skip_name(packet: bytes, offset: int) -> int:
    while True:
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


class ResolveError(OSError):
    """The fake DNS said NXDOMAIN or did not answer (the request fails, as it would on a phone)."""


def resolve(name: str, resolver: str, uid: int | None = None) -> str:
    """An A record for ``name`` asked from ``resolver`` over UDP 53, as a phone's resolver would. The query's
    socket is the app's (``uid``) and stays open a while, like the request's own (see appsockets)."""
    if _is_ip(name):
        return name
    for _attempt in range(DNS_RETRIES + 1):
        ident = random.randrange(1, 0xFFFF)
        sock = app_socket(socket.AF_INET, socket.SOCK_DGRAM, uid)
        try:
            sock.settimeout(DNS_TIMEOUT_S)
            sock.sendto(dns_query_packet(name, ident), (resolver, DEFAULT_PORTS["dns"]))
            try:
                rcode, addresses = parse_dns_response(sock.recv(4096), ident)
            except TimeoutError:
                continue
        finally:
            _release(sock, uid)
        if rcode == 0 and addresses:
            return addresses[0]
        raise ResolveError(f"DNS rcode {rcode} for the name")
    raise ResolveError(f"no DNS answer from {resolver}")


def _client_tls_context() -> ssl.SSLContext:
    """What the firmware's TLS stack offers. The lab's certificate is self-signed and made at start-up, so it is
    not verified: the point is a real handshake on the wire, not trust."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def send(rendered: Rendered, resolver: str, uid: int | None = None) -> str:
    """Send one request for real, from sockets owned by ``uid`` (the profile's app; None: root); returns a short
    outcome (``HTTP 200``, ``CONNACK 0``...). OSError on failure."""
    if rendered.protocol == "dns":
        try:
            address = resolve(rendered.host, resolver, uid)
        except ResolveError as exc:
            return str(exc)
        return f"A {address}"
    address = resolve(rendered.host, resolver, uid)
    if rendered.protocol == "udp":
        udp = app_socket(socket.AF_INET, socket.SOCK_DGRAM, uid)
        try:
            udp.sendto(rendered.body, (address, rendered.port))
        finally:
            _release(udp, uid)
        return f"{len(rendered.body)} bytes"
    sock = app_socket(socket.AF_INET, socket.SOCK_STREAM, uid)
    try:
        sock.settimeout(REQUEST_TIMEOUT_S)
        sock.connect((address, rendered.port))
        outcome, sock = _exchange(sock, rendered)
    finally:
        _release(sock, uid)
    return outcome


def _exchange(raw: socket.socket, rendered: Rendered) -> tuple[str, socket.socket]:
    """The request's bytes over a connected TCP socket: the outcome, and the socket now carrying the connection
    (the TLS one wraps, and takes over, ``raw``)."""
    sock: socket.socket = raw
    if rendered.protocol in ("https", "tls"):
        sock = _client_tls_context().wrap_socket(raw, server_hostname=rendered.host)
    if rendered.protocol in ("http", "https"):
        sock.sendall(http_request_bytes(rendered))
        return _read_http_response(sock), sock
    if rendered.protocol == "mqtt":
        return _mqtt_exchange(sock, rendered), sock
    sock.sendall(rendered.body)
    if isinstance(sock, ssl.SSLSocket):
        return f"{sock.version()} {len(rendered.body)} bytes", sock
    return f"{len(rendered.body)} bytes", sock


def _release(sock: socket.socket, uid: int | None) -> None:
    """An app's socket stays pooled a while (so the phone's socket table shows it); root's closes at once."""
    if uid is None:
        sock.close()
    else:
        hold(sock)


def _read_http_response(sock: socket.socket) -> str:
    """Read one response (headers, then Content-Length bytes, or up to close) and return its status line; a
    profile that asks for keep-alive must not wait for a close that never comes."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < MAX_RESPONSE_BYTES:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                   if line.lower().startswith(b"content-length:") and line.split(b":", 1)[1].strip().isdigit()),
                  None)
    while len(body) < (length if length is not None else MAX_RESPONSE_BYTES):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status or "no response"


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _mqtt_packet(first: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([first]) + bytes(encoded) + body


def _mqtt_exchange(sock: socket.socket, rendered: Rendered) -> str:
    """CONNECT (MQTT 3.1.1), wait for CONNACK, PUBLISH the payload at QoS 0 if a topic is set, DISCONNECT."""
    flags = 0x02 | (0x80 if rendered.username is not None else 0) | (0x40 if rendered.password is not None else 0)
    body = _mqtt_string("MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + _mqtt_string(rendered.client_id)
    if rendered.username is not None:
        body += _mqtt_string(rendered.username)
    if rendered.password is not None:
        body += _mqtt_string(rendered.password)
    sock.sendall(_mqtt_packet(0x10, body))
    connack = sock.recv(4)
    if len(connack) < 4 or connack[0] != 0x20:
        raise ConnectionError("no CONNACK")
    if rendered.topic is not None:
        sock.sendall(_mqtt_packet(0x30, _mqtt_string(rendered.topic) + rendered.body))
    sock.sendall(b"\xe0\x00")
    return f"CONNACK {connack[3]}"


# --- the runner ----------------------------------------------------------------------------------------------


@dataclass
class Runner:
    """Plays a profile: each event starts its rules' request sequences; periodic rules tick while booted."""

    profile: FirmwareProfile
    ids: Identifiers
    resolver: str
    report: Callable[[dict[str, Any]], None]
    _booted: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    #: bumped on every boot and shutdown, so a periodic timer of an earlier boot stops
    _boot: int = 0

    def on_event(self, event: str) -> None:
        if event == "boot_completed":
            self.start_booted()
        elif event == "shutdown":
            self._boot += 1
            self._booted.clear()
        for rule in self.profile.rules:
            if rule.event == event:
                self._start(self._play, rule, event)

    def start_booted(self) -> None:
        """Start the periodic timers of this boot (also used when a lab starts with phones already up)."""
        self._boot += 1
        self._booted.set()
        for rule in self.profile.rules:
            if rule.event == PERIODIC:
                self._start(self._periodic, rule, self._boot)

    def stop(self, timeout_s: float) -> None:
        self._stopping.set()
        self._booted.clear()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _wait(self, seconds: float) -> bool:
        """Sleep; False if the runner is stopping."""
        return not self._stopping.wait(seconds)

    def _play(self, rule: Rule, event: str) -> None:
        if not self._wait(rule.delay_s + random.uniform(0, rule.jitter_s)):
            return
        for request in rule.requests:
            if not self._wait(request.delay_s):
                return
            self._send(request, event)

    def _periodic(self, rule: Rule, boot: int) -> None:
        assert rule.every_s is not None
        while self._wait(rule.every_s + random.uniform(0, rule.jitter_s)) and self._boot == boot:
            for request in rule.requests:
                if not self._wait(request.delay_s) or self._boot != boot:
                    return
                self._send(request, PERIODIC)

    def _send(self, request: Request, event: str) -> None:
        rendered = render(request, self.ids)
        entry: dict[str, Any] = {"event": event, "protocol": rendered.protocol, "host": rendered.masked_host,
                                 "port": rendered.port, "where": request.where}
        try:
            entry.update(ok=True, result=send(rendered, self.resolver, self.profile.uid_of(request.app)))
        except (OSError, ValueError, ssl.SSLError) as exc:
            # a phone's app does not crash when its server is unreachable: report and carry on
            entry.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        self.report(entry)


_PRINT_LOCK = threading.Lock()


def _print(entry: dict[str, Any]) -> None:
    with _PRINT_LOCK:
        sys.stdout.write(json.dumps(entry, sort_keys=True) + "\n")
        sys.stdout.flush()


#: how long in-flight requests may finish when stdin closes
STOP_TIMEOUT_S = 3.0


def main(argv: Sequence[str] | None = None) -> int:
    """The runner process: configuration on the first stdin line, then one event per line until EOF."""
    argparse.ArgumentParser(prog="python -m phonehome.virtual.firmware",
                            description="Send a firmware profile's traffic; see the module docstring.").parse_args(argv)
    first = sys.stdin.readline()
    if not first:
        return 2
    config = json.loads(first)
    profile = load_profile(config["profile"])
    ids = parse_identifiers(config["identifiers"], source="<lab>")
    runner = Runner(profile=profile, ids=ids, resolver=str(config["resolver"]), report=_print)
    if config.get("booted"):
        runner.start_booted()
    _print({"ready": True, "profile": profile.name})
    for line in sys.stdin:
        event = line.strip()
        if event:
            runner.on_event(event)
    runner.stop(STOP_TIMEOUT_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
