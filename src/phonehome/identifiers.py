"""The identifiers schema: what one phone must never send in cleartext, and how to mask it in output.

``IDS.yaml`` (for ``phonehome scan``) and a device's ``identifiers:`` block in ``devices.yaml`` share this schema::

    imei: "352099001761481"          # or a list of strings
    imsi: "310260000000000"
    iccid: "8901260000000000000"
    serial: R58M12ABCDE
    phone: "+49 30 1234567"          # kept as given; the scanner derives E.164/national/00 forms
    android_id: 9774d56d682e549c
    gaid: 38400000-8cf0-11bd-b23e-10b96e40000d
    wifi_mac: "AC:37:43:4D:5E:6F"    # normalised to ac:37:43:4d:5e:6f
    bt_mac: ac-37-43-4d-5e-70
    location: {lat: 52.5163, lon: 13.3777}   # or a list of them
    cell: {mcc: "262", mnc: "01", lac: 4136, cid: 19695115}  # the serving cell (or a list); CDMA: bsid
    wifi: {bssid: "ac:37:43:00:11:22", ssid: HomeNet}        # the network the phone is on (or a list)
    custom: {account: alice@example.org}     # anything else, by name

Values are validated here once (shape, not plausibility) so that every later stage can trust them, and
normalised so that the scanner derives its forms from one canonical spelling. Bad input raises
:class:`~phonehome.errors.InputError` naming the file, line/field and the fix: the command line prints it as one
line, exit 2.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phonehome.errors import InputError

if TYPE_CHECKING:
    import yaml

IDENTIFIER_KEYS: tuple[str, ...] = (
    "imei", "imsi", "iccid", "serial", "phone", "android_id", "gaid", "wifi_mac", "bt_mac",
)
#: keys of the schema that are not in :data:`IDENTIFIER_KEYS`
LOCATION_KEY = "location"
CELL_KEY = "cell"
WIFI_KEY = "wifi"
CUSTOM_KEY = "custom"
SCHEMA_KEYS: tuple[str, ...] = (*IDENTIFIER_KEYS, LOCATION_KEY, CELL_KEY, WIFI_KEY, CUSTOM_KEY)
#: fields of a ``cell`` entry (``tac`` is another name for ``lac``: LTE and NR call the area a tracking area)
CELL_FIELDS: tuple[str, ...] = ("mcc", "mnc", "lac", "tac", "cid", "bsid")
WIFI_FIELDS: tuple[str, ...] = ("bssid", "ssid")
#: largest area code (a 24-bit NR TAC; GSM/UMTS LAC and LTE TAC are 16-bit), cell id (a 36-bit NR cell identity)
#: and CDMA base-station id (16-bit)
MAX_AREA = (1 << 24) - 1
MAX_CELL_ID = (1 << 36) - 1
MAX_BSID = (1 << 16) - 1
#: an SSID shorter than this would match random text; longer than 32 bytes is no SSID (IEEE 802.11)
MIN_SSID_LENGTH = 4
MAX_SSID_BYTES = 32

#: a custom value shorter than this would match random traffic
MIN_CUSTOM_LENGTH = 4
MIN_SERIAL_LENGTH = 4
MIN_PHONE_DIGITS = 6
MAX_PHONE_DIGITS = 15

_SEPARATORS = re.compile(r"[\s\-./]")
_HEX = re.compile(r"[0-9a-fA-F]+")
#: MACs Android reports to apps instead of the real one (the same on every phone), written without separators
_PLACEHOLDER_MACS = frozenset({"020000000000", "000000000000"})
_CUSTOM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_PHONE_CHARS = re.compile(r"\+?[0-9 ()./-]+")


@dataclass(frozen=True)
class Location:
    """A point the phone was at, in decimal degrees (WGS 84)."""

    lat: float
    lon: float

    def __repr__(self) -> str:  # a traceback's locals must not show where the phone was
        return f"Location(lat={mask(str(self.lat))}, lon={mask(str(self.lon))})"


@dataclass(frozen=True)
class Cell:
    """The serving cell, as Android reports it: where the phone is to within a few hundred metres to a few km.

    ``mcc``/``mnc`` (operator, as digit strings: ``"01"`` is not ``"1"``), ``lac`` (GSM/UMTS location area or
    LTE/NR tracking area code), ``cid`` (cell id: 16-bit GSM CI, 28-bit LTE ECI, 36-bit NR NCI) and ``bsid``
    (CDMA base-station id); a cell has at least a ``cid`` or a ``bsid``.
    """

    mcc: str | None = None
    mnc: str | None = None
    lac: int | None = None
    cid: int | None = None
    bsid: int | None = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={mask(str(value))}" for name, value in self.fields())
        return f"Cell({shown})"

    def fields(self) -> tuple[tuple[str, str], ...]:
        """(field, value as text) of the fields that are set, in schema order."""
        pairs = (("mcc", self.mcc), ("mnc", self.mnc), ("lac", self.lac), ("cid", self.cid), ("bsid", self.bsid))
        return tuple((name, str(value)) for name, value in pairs if value is not None)


@dataclass(frozen=True)
class Wifi:
    """The Wi-Fi network the phone is on: its access point's MAC (BSSID) and its name (SSID); either may be unset."""

    bssid: str | None = None
    ssid: str | None = None

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={mask(value)}" for name, value in self.fields())
        return f"Wifi({shown})"

    def fields(self) -> tuple[tuple[str, str], ...]:
        """(field, value) of the fields that are set."""
        return tuple((name, value) for name, value in (("bssid", self.bssid), ("ssid", self.ssid))
                     if value is not None)


@dataclass(frozen=True)
class Identifiers:
    """One device's identifiers, validated and normalised.

    ``values`` keeps (name, value) pairs in file order; a name is one of :data:`IDENTIFIER_KEYS` or a custom
    name from the ``custom`` block.
    """

    values: tuple[tuple[str, str], ...]
    locations: tuple[Location, ...] = ()
    cells: tuple[Cell, ...] = ()
    wifis: tuple[Wifi, ...] = ()

    def __repr__(self) -> str:
        """Masked: pytest prints a failing fixture's arguments and, with ``-l``, every local's repr."""
        shown = [f"{name}={mask(value)}" for name, value in self.values]
        for label, entries in (("locations", self.locations), ("cells", self.cells), ("wifis", self.wifis)):
            if entries:
                shown.append(f"{label}={list(entries)!r}")
        return f"Identifiers({', '.join(shown)})"

    def get(self, name: str) -> tuple[str, ...]:
        """All values of one identifier (several SIMs, several MACs...)."""
        return tuple(value for key, value in self.values if key == name)

    def names(self) -> tuple[str, ...]:
        """Distinct identifier names, in order, then ``location``, ``cell`` and ``wifi`` when set."""
        seen = dict.fromkeys(key for key, _ in self.values)
        for key, present in ((LOCATION_KEY, self.locations), (CELL_KEY, self.cells), (WIFI_KEY, self.wifis)):
            if present:
                seen[key] = None
        return tuple(seen)

    def is_empty(self) -> bool:
        """True when there is nothing to look for (a scan with it would prove nothing)."""
        return not self.values and not self.locations and not self.cells and not self.wifis

    def merged(self, other: Identifiers) -> Identifiers:
        """The union of both, without duplicates, this one's order first."""
        values = tuple(dict.fromkeys((*self.values, *other.values)))
        locations = tuple(dict.fromkeys((*self.locations, *other.locations)))
        cells = tuple(dict.fromkeys((*self.cells, *other.cells)))
        wifis = tuple(dict.fromkeys((*self.wifis, *other.wifis)))
        return Identifiers(values=values, locations=locations, cells=cells, wifis=wifis)

    def to_mapping(self) -> dict[str, object]:
        """Back to the YAML schema; ``parse_identifiers(ids.to_mapping(), ...) == ids`` up to key order."""
        out: dict[str, object] = {}
        custom: dict[str, object] = {}
        for name in dict.fromkeys(key for key, _ in self.values):
            values = list(self.get(name))
            value: object = values[0] if len(values) == 1 else values
            if name in IDENTIFIER_KEYS:
                out[name] = value
            else:
                custom[name] = value
        if self.locations:
            points = [{"lat": loc.lat, "lon": loc.lon} for loc in self.locations]
            out[LOCATION_KEY] = points[0] if len(points) == 1 else points
        for key, entries in ((CELL_KEY, self.cells), (WIFI_KEY, self.wifis)):
            if entries:
                blocks: list[dict[str, object]] = [
                    {name: getattr(entry, name) for name, _ in entry.fields()} for entry in entries]
                out[key] = blocks[0] if len(blocks) == 1 else blocks
        if custom:
            out[CUSTOM_KEY] = custom
        return out


def mask(value: str) -> str:
    """Hide an identifier for logs, messages and reports.

    Long values keep their first and last two characters so a reader can tell which identifier it was; short
    ones keep fewer, very short ones none — the shown part must never come close to revealing the value.
    """
    n = len(value)
    keep = 2 if n >= 10 else 1 if n >= 6 else 0
    if keep == 0:
        return "*" * n
    return value[:keep] + "*" * (n - 2 * keep) + value[-keep:]


# --- loading -------------------------------------------------------------------------------------------------


@functools.cache
def identifiers_loader() -> type[yaml.SafeLoader]:
    """A safe YAML loader that keeps integers as text.

    ``imei: 352099001761481`` must stay exactly those digits, and ``phone: 0301234567`` must not become an octal
    number; floats (coordinates) still load as floats. ``devices.yaml`` readers should load with it too. Made on
    first use: importing yaml is ~13 ms of ``phonehome scan``, which skips it when the identifiers file is one
    it has read before (:mod:`phonehome.scan.prepared`).
    """
    import yaml

    class IdentifiersLoader(yaml.SafeLoader):
        """A SafeLoader without the int resolver (see :func:`identifiers_loader`)."""

    IdentifiersLoader.yaml_implicit_resolvers = {
        key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return IdentifiersLoader


def load_identifiers(path: str | Path) -> Identifiers:
    """Read an ``IDS.yaml`` file; every problem is an :class:`InputError` naming the file, line and fix."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(source, "identifiers file not found",
                         fix="pass the path of an existing IDS.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(source, f"cannot read identifiers file: {exc}",
                         fix="pass a readable UTF-8 YAML file") from None
    return identifiers_from_yaml(text, source=source)


def identifiers_from_yaml(text: str, *, source: str) -> Identifiers:
    """The identifiers an ``IDS.yaml`` text holds (``source`` names it in errors), as :func:`load_identifiers`."""
    import yaml

    try:
        data = yaml.load(text, Loader=identifiers_loader())  # a SafeLoader subclass: safe
        lines = field_lines(text, source=source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark is not None else None
        problem = f"YAML syntax error: {exc.problem or exc.context}"
        if exc.context and exc.context_mark is not None and exc.problem:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise InputError(source, problem, where=where, fix="fix the YAML syntax") from None
    except yaml.YAMLError as exc:
        raise InputError(source, f"YAML error: {exc}", fix="fix the YAML syntax") from None
    if data is None:
        raise InputError(source, "identifiers file is empty",
                         fix=f"add at least one of: {', '.join(SCHEMA_KEYS)}")
    ids = _parse(data, source=source, where="", lines=lines)
    if ids.is_empty():
        raise InputError(source, "no identifiers given", fix=f"add at least one of: {', '.join(SCHEMA_KEYS)}")
    return ids


def field_lines(text: str, *, source: str | None = None) -> dict[str, int]:
    """Map field paths (``imei``, ``imei[1]``, ``location[0].lat``, ``custom.name``) to 1-based line numbers.

    Lets errors on a field say where it is in the file; the same paths are what :func:`parse_identifiers`
    names in ``InputError.where``. A key given twice in one mapping is an :class:`InputError` (YAML would
    silently keep the last one, and a value nobody meant would be the one checked); ``source`` names the file.
    """
    import yaml

    node = yaml.compose(text, Loader=identifiers_loader())
    lines: dict[str, int] = {}
    if node is not None:
        _collect_lines(node, "", lines, source)
    return lines


def line_of(lines: Mapping[str, int], path: str) -> int | None:
    """The line of ``path`` in a :func:`field_lines` map, else of its nearest parent (``imei[1]`` -> ``imei``):
    an error about a field the file lacks (a missing key, a value taken from defaults) still points near it."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def _collect_lines(node: yaml.Node, path: str, lines: dict[str, int], source: str | None) -> None:
    import yaml

    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            if key in seen:
                raise InputError(source, f"duplicate key {_one_line(key)!r}",
                                 where=f"line {key_node.start_mark.line + 1}, {_one_line(child)}",
                                 fix="keep one of them (YAML would silently use the last)")
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _collect_lines(value_node, child, lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_lines(item, f"{path}[{index}]", lines, source)


# --- parsing -------------------------------------------------------------------------------------------------


def parse_identifiers(data: object, *, source: str, where: str = "identifiers",
                      lines: Mapping[str, int] | None = None) -> Identifiers:
    """Validate and normalise one identifiers block (already loaded from YAML).

    ``where`` prefixes field paths in errors (``devices[2].identifiers``); ``lines`` optionally maps those
    field paths, without the prefix, to line numbers (see :func:`field_lines`).
    """
    return _parse(data, source=source, where=where, lines=lines or {})


class _Context:
    """Where we are in the input, to build errors that point at the field."""

    def __init__(self, source: str, prefix: str, lines: Mapping[str, int]) -> None:
        self.source = source
        self.prefix = prefix
        self.lines = lines

    def error(self, path: str, problem: str, fix: str) -> InputError:
        field = ".".join(part for part in (self.prefix, path) if part) or None
        line = line_of(self.lines, path)
        where = ", ".join(part for part in (f"line {line}" if line else None, field) if part) or None
        return InputError(self.source, _one_line(problem), where=_one_line(where) if where else None, fix=fix)


def _parse(data: object, *, source: str, where: str, lines: Mapping[str, int]) -> Identifiers:
    ctx = _Context(source, where, lines)
    if not isinstance(data, Mapping):
        raise ctx.error("", f"identifiers must be a mapping, not {yaml_kind(data)}",
                        f"write 'key: value' lines with keys from: {', '.join(SCHEMA_KEYS)}")
    values: list[tuple[str, str]] = []
    locations: list[Location] = []
    cells: list[Cell] = []
    wifis: list[Wifi] = []
    for key, raw in data.items():
        if not isinstance(key, str) or key not in SCHEMA_KEYS:
            raise ctx.error(str(key), f"unknown identifier '{key}'",
                            f"use one of {', '.join(SCHEMA_KEYS)}; put anything else under 'custom'")
        if key == LOCATION_KEY:
            locations.extend(_parse_locations(raw, ctx))
        elif key == CELL_KEY:
            cells.extend(_cell(item, path, ctx) for path, item in _entries(raw, key, "{mcc, mnc, lac, cid}", ctx))
        elif key == WIFI_KEY:
            wifis.extend(_wifi(item, path, ctx) for path, item in _entries(raw, key, "{bssid, ssid}", ctx))
        elif key == CUSTOM_KEY:
            values.extend(_parse_custom(raw, ctx))
        else:
            for path, text in _strings(raw, key, ctx):
                values.append((key, _NORMALISERS[key](text, path, ctx)))
    return Identifiers(values=tuple(dict.fromkeys(values)), locations=tuple(dict.fromkeys(locations)),
                       cells=tuple(dict.fromkeys(cells)), wifis=tuple(dict.fromkeys(wifis)))


def _one_line(text: str) -> str:
    """Errors are one line: escape control characters a key or value may carry."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def yaml_kind(value: object) -> str:
    """How a loaded YAML value reads in an error ("empty", "a mapping", "a list", "a str"), so that the
    identifiers and inventory loaders describe a wrong type the same way."""
    if value is None:
        return "empty"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _strings(raw: object, path: str, ctx: _Context) -> Iterable[tuple[str, str]]:
    """A value or a list of values as (path, text); numbers from plain YAML loaders are accepted as text."""
    items = list(enumerate(raw)) if isinstance(raw, list) else [(None, raw)]
    if isinstance(raw, list) and not raw:
        raise ctx.error(path, "empty list", "give at least one value or remove the key")
    for index, item in items:
        item_path = path if index is None else f"{path}[{index}]"
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ctx.error(item_path, f"expected a string, got {yaml_kind(item)}",
                            "write the value as a quoted string, or a list of them")
        text = str(item).strip()
        if not text:
            raise ctx.error(item_path, "empty value", "give the value or remove the key")
        yield item_path, text


def _digits(text: str, path: str, ctx: _Context, label: str, sizes: tuple[int, ...]) -> str:
    compact = _SEPARATORS.sub("", text)
    if not compact.isascii() or not compact.isdigit():
        raise ctx.error(path, f"{label} must be digits, got '{mask(text)}'",
                        f"write the {label} as {' or '.join(map(str, sizes))} digits (spaces and dashes allowed)")
    if len(compact) not in sizes:
        raise ctx.error(path, f"{label} must be {' or '.join(map(str, sizes))} digits, got {len(compact)}",
                        f"copy the full {label} (e.g. from *#06# or the SIM)")
    return compact


def _imei(text: str, path: str, ctx: _Context) -> str:
    return _digits(text, path, ctx, "IMEI", (15,))


def _imsi(text: str, path: str, ctx: _Context) -> str:
    return _digits(text, path, ctx, "IMSI", (14, 15))


def _iccid(text: str, path: str, ctx: _Context) -> str:
    compact = _SEPARATORS.sub("", text)
    if compact[-1:] in ("f", "F"):  # a padding nibble some tools print
        compact = compact[:-1]
    return _digits(compact, path, ctx, "ICCID", (18, 19, 20, 21, 22))


def _serial(text: str, path: str, ctx: _Context) -> str:
    if len(text) < MIN_SERIAL_LENGTH or not text.isprintable() or any(ch.isspace() for ch in text):
        raise ctx.error(path, f"serial '{mask(text)}' must be at least {MIN_SERIAL_LENGTH} printable characters "
                        "without spaces", "copy the serial from 'adb devices' or Settings > About phone")
    return text


def _phone(text: str, path: str, ctx: _Context) -> str:
    digits = sum(ch.isdigit() for ch in text)
    if not text.isascii() or not _PHONE_CHARS.fullmatch(text) or not MIN_PHONE_DIGITS <= digits <= MAX_PHONE_DIGITS:
        raise ctx.error(path, f"phone number '{mask(text)}' is not a phone number",
                        f"write it as E.164 ('+4930123456') or national ('030 123456'), "
                        f"{MIN_PHONE_DIGITS}-{MAX_PHONE_DIGITS} digits")
    return text


def _android_id(text: str, path: str, ctx: _Context) -> str:
    if not _HEX.fullmatch(text) or not 8 <= len(text) <= 16:
        raise ctx.error(path, f"android_id '{mask(text)}' must be 8-16 hex digits",
                        "copy it from 'adb shell settings get secure android_id'")
    if int(text, 16) == 0:
        raise ctx.error(path, "android_id is all zeros: no phone has it (it would match any run of zeros)",
                        "copy it from 'adb shell settings get secure android_id'")
    return text.lower()


def _gaid(text: str, path: str, ctx: _Context) -> str:
    compact = text.replace("-", "")
    if len(compact) != 32 or not _HEX.fullmatch(compact):
        raise ctx.error(path, f"gaid '{mask(text)}' must be a UUID (32 hex digits, dashes optional)",
                        "copy it from Settings > Google > Ads")
    if int(compact, 16) == 0:
        raise ctx.error(path, "gaid is all zeros: the placeholder Android reports when ad personalisation is off, "
                        "the same on every phone (it would match any run of zero bytes)",
                        "remove it, or give the phone's real advertising ID")
    c = compact.lower()
    return f"{c[:8]}-{c[8:12]}-{c[12:16]}-{c[16:20]}-{c[20:]}"


def _mac(text: str, path: str, ctx: _Context) -> str:
    compact = re.sub(r"[:\-. ]", "", text)
    if len(compact) != 12 or not _HEX.fullmatch(compact):
        raise ctx.error(path, f"MAC address '{mask(text)}' must be 6 octets",
                        "write it as 'aa:bb:cc:dd:ee:ff' (':', '-' or no separators)")
    c = compact.lower()
    if c in _PLACEHOLDER_MACS:
        raise ctx.error(path, "MAC address is the placeholder Android reports when it hides the real one, "
                        "the same on every phone", "remove it, or give the MAC from Settings > About phone")
    return ":".join(c[i:i + 2] for i in range(0, 12, 2))


_NORMALISERS = {
    "imei": _imei, "imsi": _imsi, "iccid": _iccid, "serial": _serial, "phone": _phone,
    "android_id": _android_id, "gaid": _gaid, "wifi_mac": _mac, "bt_mac": _mac,
}


def _parse_locations(raw: object, ctx: _Context) -> Iterable[Location]:
    if isinstance(raw, list):
        if not raw:
            raise ctx.error(LOCATION_KEY, "empty list", "give at least one {lat, lon} or remove the key")
        for index, item in enumerate(raw):
            yield _location(item, f"{LOCATION_KEY}[{index}]", ctx)
    else:
        yield _location(raw, LOCATION_KEY, ctx)


def _location(raw: object, path: str, ctx: _Context) -> Location:
    fix = "write it as {lat: 52.5163, lon: 13.3777} in decimal degrees"
    if not isinstance(raw, Mapping) or set(raw) != {"lat", "lon"}:
        raise ctx.error(path, "a location needs exactly 'lat' and 'lon'", fix)
    lat = _coordinate(raw["lat"], f"{path}.lat", 90.0, ctx, fix)
    lon = _coordinate(raw["lon"], f"{path}.lon", 180.0, ctx, fix)
    if lat == 0.0 and lon == 0.0:  # what an unset fix reads (Android's default); "0.0 0.0" is in any PDF
        raise ctx.error(path, "lat 0, lon 0 is where an unset location points, not where the phone is",
                        "give the phone's real location (dumpsys location, or a map), or leave location out")
    return Location(lat=lat, lon=lon)


def _coordinate(raw: object, path: str, limit: float, ctx: _Context, fix: str) -> float:
    value: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None or not math.isfinite(value) or not -limit <= value <= limit:
        raise ctx.error(path, f"coordinate must be a number in [-{limit:g}, {limit:g}]", fix)
    return value


def _entries(raw: object, key: str, shape: str, ctx: _Context) -> Iterable[tuple[str, object]]:
    """One mapping or a list of them, as (path, item)."""
    if isinstance(raw, list):
        if not raw:
            raise ctx.error(key, "empty list", f"give at least one {shape} or remove the key")
        yield from ((f"{key}[{index}]", item) for index, item in enumerate(raw))
    else:
        yield key, raw


def _cell(raw: object, path: str, ctx: _Context) -> Cell:
    fix = "write it as {mcc: \"262\", mnc: \"01\", lac: 4136, cid: 19695115} (CDMA: {bsid: 1234})"
    if not isinstance(raw, Mapping) or not raw:
        raise ctx.error(path, f"a cell must be a mapping of {', '.join(CELL_FIELDS)}, not {yaml_kind(raw)}", fix)
    for name in raw:
        if name not in CELL_FIELDS:
            raise ctx.error(f"{path}.{name}", f"unknown cell field '{name}'", f"use {', '.join(CELL_FIELDS)}")
    if "lac" in raw and "tac" in raw:
        raise ctx.error(f"{path}.tac", "give either lac or tac (the same field), not both", "remove one of them")
    mcc = _code(raw.get("mcc"), f"{path}.mcc", (3,), ctx)
    mnc = _code(raw.get("mnc"), f"{path}.mnc", (2, 3), ctx)
    if (mcc is None) != (mnc is None):
        missing = "mnc" if mnc is None else "mcc"
        raise ctx.error(f"{path}.{missing}", f"a cell with {'mcc' if mnc is None else 'mnc'} needs {missing} too",
                        f"add {missing} (from 'dumpsys telephony.registry') or remove both")
    area_key = "tac" if "tac" in raw else "lac"
    lac = _number(raw.get(area_key), f"{path}.{area_key}", MAX_AREA, ctx)
    cid = _number(raw.get("cid"), f"{path}.cid", MAX_CELL_ID, ctx)
    bsid = _number(raw.get("bsid"), f"{path}.bsid", MAX_BSID, ctx)
    if cid is None and bsid is None:
        raise ctx.error(path, "a cell needs a cid (GSM/UMTS/LTE/NR cell id) or a bsid (CDMA base station)",
                        "add cid or bsid: an operator or area code alone does not say where the phone is")
    return Cell(mcc=mcc, mnc=mnc, lac=lac, cid=cid, bsid=bsid)


def _code(raw: object, path: str, sizes: tuple[int, ...], ctx: _Context) -> str | None:
    """MCC or MNC: digit strings (an MNC's leading zero matters: 01 and 001 are different networks)."""
    if raw is None:
        return None
    label = path.rsplit(".", 1)[-1].upper()
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ctx.error(path, f"{label} must be digits, got {yaml_kind(raw)}", "write it as a quoted string")
    text = str(raw).strip()
    if not text.isascii() or not text.isdigit() or len(text) not in sizes:
        raise ctx.error(path, f"{label} must be {' or '.join(map(str, sizes))} digits",
                        f"write it quoted ({label.lower()}: \"{'262' if label == 'MCC' else '01'}\")")
    return text


def _number(raw: object, path: str, limit: int, ctx: _Context) -> int | None:
    if raw is None:
        return None
    label = path.rsplit(".", 1)[-1].upper()
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    value = int(text, 16) if text.lower().startswith("0x") and _HEX.fullmatch(text[2:]) else (
        int(text) if text.isascii() and text.isdigit() else None)
    if value is None or not 0 <= value <= limit:
        raise ctx.error(path, f"{label} must be a number from 0 to {limit}",
                        f"write the {label} in decimal (or hex as 0x...), as 'dumpsys telephony.registry' prints it")
    return value


def _wifi(raw: object, path: str, ctx: _Context) -> Wifi:
    fix = "write it as {bssid: \"aa:bb:cc:dd:ee:ff\", ssid: HomeNet}"
    if not isinstance(raw, Mapping) or not raw:
        raise ctx.error(path, f"wifi must be a mapping of bssid and ssid, not {yaml_kind(raw)}", fix)
    for name in raw:
        if name not in WIFI_FIELDS:
            raise ctx.error(f"{path}.{name}", f"unknown wifi field '{name}'", f"use {', '.join(WIFI_FIELDS)}")
    bssid = ssid = None
    for item_path, text in (_strings(raw["bssid"], f"{path}.bssid", ctx) if "bssid" in raw else ()):
        if isinstance(raw["bssid"], list):
            raise ctx.error(item_path, "a wifi entry has one bssid", "give one wifi entry per network")
        bssid = _mac(text, item_path, ctx)
    if "ssid" in raw:
        item = raw["ssid"]
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ctx.error(f"{path}.ssid", f"SSID must be a string, got {yaml_kind(item)}", "write it quoted")
        ssid = str(item)
        if len(ssid) < MIN_SSID_LENGTH or len(ssid.encode()) > MAX_SSID_BYTES or not ssid.isprintable():
            raise ctx.error(f"{path}.ssid", f"SSID '{mask(ssid)}' must be {MIN_SSID_LENGTH} to {MAX_SSID_BYTES} "
                            "printable bytes", "copy the network name exactly (shorter ones match random text)")
    return Wifi(bssid=bssid, ssid=ssid)


def _parse_custom(raw: object, ctx: _Context) -> Iterable[tuple[str, str]]:
    fix = "write custom identifiers as {name: value}, e.g. custom: {account: alice@example.org}"
    if not isinstance(raw, Mapping) or not raw:
        raise ctx.error(CUSTOM_KEY, "custom must be a non-empty mapping of name to value", fix)
    for name, value in raw.items():
        path = f"{CUSTOM_KEY}.{name}"
        if not isinstance(name, str) or not _CUSTOM_NAME.fullmatch(name) or name in SCHEMA_KEYS:
            raise ctx.error(path, f"bad custom name '{name}'",
                            "use a name of letters, digits, '_', '-' or '.', not one of the standard keys")
        for item_path, text in _strings(value, path, ctx):
            if len(text) < MIN_CUSTOM_LENGTH:
                raise ctx.error(item_path, f"custom value for '{name}' is shorter than {MIN_CUSTOM_LENGTH} "
                                "characters", "give a longer, distinctive value (short ones match random traffic)")
            yield name, text
