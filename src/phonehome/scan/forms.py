"""Identifier -> canonical forms -> encoded needles: every byte string that betrays an identifier.

A phone rarely sends ``352099001761481`` as such: it sends ``35-209900-176148-1``, ``imeisv=3520990017614801``,
``"MzUyMDk5MDAxNzYxNDgx"``, ``md5(imei)`` or eight TBCD bytes in a binary protocol. This module enumerates, for
each identifier, its *canonical forms* (the spellings an app would start from) and, for each form, its
*encodings* (what the app does to it before sending). Each result is a :class:`Needle` the matcher looks for.

Layered encodings (gzip of JSON, base64 of base64...) are not enumerated here: :mod:`phonehome.scan.layers`
decodes them and the matcher runs on each layer. The needle names say exactly what was found:

* ``form`` names the canonical form (``imei``, ``imei-14``, ``e164``, ``mac-dash-upper``, ``lat-decimal``...).
* ``encoding`` names what was applied to it, outermost first, ``>``-separated like the layer chains:
  ``plain``, ``url``, ``base64``, ``base64url``, ``base32``, ``base58``, ``hex``, ``utf16le``, ``utf16be``,
  ``rot13`` (and ``rotN``), ``reversed``, ``bcd`` (3GPP TBCD, swapped nibbles), ``bcd-mi`` (24.008 mobile identity),
  ``bcd-packed``, ``int64be``/``int64le``, ``varint``/``zigzag`` (protobuf), ``raw`` (the binary value: MAC octets, UUID bytes);
  a digest ``H`` of the form is ``H`` when written in hex, ``H-raw`` as raw bytes, ``base64>H`` and
  ``base64url>H`` when its raw bytes are base64-encoded; checksums and MurmurHash3 (``crc32``, ``mmh3_128``...)
  are decimal text;
  coordinates are ``plain`` (decimal degrees), ``e6``/``e7`` (scaled integers as text), ``nmea`` (degrees and
  decimal minutes), ``e7-int32be``/``e7-int32le`` (and ``e6-``, ``e5-``), ``float32be``/``le``,
  ``float64be``/``le``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from phonehome.identifiers import Cell, Identifiers, Location, Wifi
from phonehome.scan import serialised

#: a form shorter than this is not encoded further: its encodings would match random traffic
MIN_ENCODED_FORM_LENGTH = 6
#: shortest national significant number searched on its own (at digit boundaries)
MIN_NSN_DIGITS = 7
#: shortest base64/base32 middle kept from an alignment
MIN_MIDDLE_CHARS = 7
#: an E6/E7 prefix shorter than this (a point near 0 degrees) would match too much text to be worth it
MIN_SCALED_PREFIX_DIGITS = 4
#: a location counts when it is within this distance of the true point: 3 decimals truncated is <= 157 m off
LOCATION_RADIUS_M = 160.0
#: near the poles a degree of longitude is a few metres: cap the longitude window (and the needle count)
MAX_LON_TOLERANCE_DEG = 0.05
#: binary encodings (E7 int32, float, double) only for coordinates at least this far from 0
MIN_BINARY_COORDINATE_DEG = 0.1
#: a latitude and a longitude count as one location only when this close to each other in the payload
LOCATION_WINDOW_BYTES = 256
EARTH_RADIUS_M = 6_371_008.8
#: separators allowed between the digits of an IMEI or phone number written for humans
#: (one character: two-character separators and '.' cost hyperscan its literal anchors and '.' would match
#: decimal numbers; %20 and friends are decoded by the url layer first)
_DIGIT_SEPARATOR = rb"[ ()/\-]?"
_IMEI_SEPARATOR = rb"[ ./\-]?"
#: digits of a North American national number: area code, exchange, line
NANP_DIGITS = 10
#: shortest decimal spelling of a hex identifier worth matching: fewer digits occur in ordinary traffic
MIN_DECIMAL_ID_DIGITS = 10


@dataclass(frozen=True)
class Needle:
    """One byte pattern to look for, and what it means when found.

    ``pattern`` is a literal unless ``regex`` (then a bytes regex in the subset both hyperscan and :mod:`re`
    accept: classes, ``\\xHH``, ``{m,n}``, ``(?:...)``, alternation; no lookaround, no backreferences).
    ``digit_boundary`` rejects a match with an ASCII digit right before or after it, so a short numeric form
    does not match inside a longer number. ``location`` is set on coordinate needles, which the matcher
    verifies numerically (distance to the true point, lat and lon near each other).
    """

    pattern: bytes
    identifier: str
    encoding: str
    form: str
    caseless: bool = False
    regex: bool = False
    digit_boundary: bool = False
    location: Location | None = None


@dataclass(frozen=True)
class Form:
    """A canonical spelling of an identifier (before any encoding)."""

    identifier: str
    name: str
    text: str
    digit_boundary: bool = False


def build_needles(ids: Identifiers) -> tuple[Needle, ...]:
    """Every needle for every identifier and location, without duplicates (first spelling wins).

    Coordinate needles stay apart per point and axis: the same prefix (``-0.000``, or two nearby points) means
    a different check.
    """
    needles: dict[tuple[bytes, bool, bool, Location | None, str], Needle] = {}
    for needle in _all_needles(ids):
        axis = needle.form.split("-", 1)[0] if needle.location is not None else ""
        needles.setdefault((needle.pattern, needle.caseless, needle.regex, needle.location, axis), needle)
    return tuple(needles.values())


def _all_needles(ids: Identifiers) -> Iterator[Needle]:
    for name, value in ids.values:
        for form in canonical_forms(name, value):
            yield from encode_form(form)
        yield from _special_needles(name, value)
    for location in ids.locations:
        yield from location_needles(location)
    for cell in ids.cells:
        yield from cell_needles(cell)
    for wifi in ids.wifis:
        yield from wifi_needles(wifi)


# --- canonical forms -----------------------------------------------------------------------------------------


def canonical_forms(name: str, value: str) -> tuple[Form, ...]:
    """The spellings of one identifier value that an app could start from, case variants included."""
    maker = _FORM_MAKERS.get(name, _custom_forms)
    forms: dict[str, Form] = {}
    for form in maker(name, value):
        forms.setdefault(form.text, form)
    return tuple(forms.values())


def _digit_forms(name: str, value: str) -> Iterator[Form]:
    yield Form(name, name, value, digit_boundary=True)


def _imei_forms(name: str, value: str) -> Iterator[Form]:
    yield Form(name, "imei", value, digit_boundary=True)
    yield Form(name, "imei-14", value[:14], digit_boundary=True)


def _iccid_forms(name: str, value: str) -> Iterator[Form]:
    yield Form(name, "iccid", value, digit_boundary=True)
    if len(value) >= 19:  # often printed without its Luhn check digit
        yield Form(name, "iccid-nocheck", value[:-1], digit_boundary=True)


def _cased(name: str, form: str, text: str) -> Iterator[Form]:
    yield Form(name, form, text.lower())
    if text.upper() != text.lower():
        yield Form(name, f"{form}-upper", text.upper())


def _serial_forms(name: str, value: str) -> Iterator[Form]:
    yield Form(name, "serial", value, digit_boundary=value.isdigit())
    if not value.isdigit():
        yield from _cased(name, "serial", value)


def _custom_forms(name: str, value: str) -> Iterator[Form]:
    """As given, and lower/upper case: apps normalise e-mail addresses and account names before hashing."""
    boundary = value[:1].isdigit() or value[-1:].isdigit()
    yield Form(name, name, value, digit_boundary=boundary)
    if _has_letters(value):
        yield Form(name, name, value.lower(), digit_boundary=boundary)
        yield Form(name, f"{name}-upper", value.upper(), digit_boundary=boundary)


def _android_id_forms(name: str, value: str) -> Iterator[Form]:
    yield from _cased(name, "android_id", value)
    stripped = value.lstrip("0")
    if stripped != value and len(stripped) >= 8:  # Long.toHexString drops leading zeros
        yield from _cased(name, "android_id-short", stripped)
    number = int(value, 16)
    if len(str(number)) >= MIN_DECIMAL_ID_DIGITS:  # 0000000000000001 would be "1": in every HTTP/1.1
        yield Form(name, "android_id-decimal", str(number), digit_boundary=True)
    if number >= 1 << 63:  # as a signed Java long
        yield Form(name, "android_id-signed", str(number - (1 << 64)), digit_boundary=True)


def _gaid_forms(name: str, value: str) -> Iterator[Form]:
    yield from _cased(name, "gaid", value)
    yield from _cased(name, "gaid-nodash", value.replace("-", ""))


def _mac_forms(name: str, value: str) -> Iterator[Form]:
    octets = value.split(":")
    bare = "".join(octets)
    yield from _cased(name, "mac-colon", value)
    yield from _cased(name, "mac-dash", "-".join(octets))
    yield from _cased(name, "mac-bare", bare)
    yield from _cased(name, "mac-dot", ".".join(bare[i:i + 4] for i in range(0, 12, 4)))
    yield from _cased(name, "mac-space", " ".join(octets))
    yield from _cased(name, "mac-dash-quad", "-".join(bare[i:i + 4] for i in range(0, 12, 4)))
    yield from _cased(name, "mac-dash-half", f"{bare[:6]}-{bare[6:]}")
    unpadded = ":".join(o.lstrip("0") or "0" for o in octets)  # how some tools print a MAC (2:0:5e:0:53:1)
    if unpadded != value:
        yield from _cased(name, "mac-unpadded", unpadded)
    number = str(int(bare, 16))
    if len(number) >= MIN_DECIMAL_ID_DIGITS:
        yield Form(name, "mac-decimal", number, digit_boundary=True)


_FORM_MAKERS: dict[str, Callable[[str, str], Iterable[Form]]] = {
    "imei": _imei_forms, "imsi": _digit_forms, "iccid": _iccid_forms, "serial": _serial_forms,
    "android_id": _android_id_forms, "gaid": _gaid_forms, "wifi_mac": _mac_forms, "bt_mac": _mac_forms,
}


# --- phone numbers -------------------------------------------------------------------------------------------

#: ITU-T E.164 country calling codes of two digits; 1 and 7 have one; every other code has three
_CC2 = frozenset({20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54, 55,
                  56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98})
#: countries whose national numbers keep the leading 0 (no trunk prefix)
_NO_TRUNK = frozenset({"39", "378", "379"})
_TRUNK = {"1": "1", "7": "8"}


@dataclass(frozen=True)
class PhoneNumber:
    """A phone number split the way its forms need: country code (may be unknown) and national number."""

    country_code: str | None
    national: str  # national significant number, digits only

    @property
    def trunk(self) -> str:
        """The national trunk prefix dialled before the NSN inside the country."""
        if self.country_code in _NO_TRUNK:
            return ""
        return _TRUNK.get(self.country_code or "", "0")


def parse_phone(value: str) -> PhoneNumber:
    """Split a phone number as written in IDS.yaml (E.164, ``00``-prefixed or national)."""
    text = value.strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    international = text.startswith("+")
    if not international and digits.startswith("00"):
        digits, international = digits[2:], True
    if not international:
        return PhoneNumber(None, digits[1:] if digits.startswith("0") else digits)
    for size in (1, 2, 3):
        code = digits[:size]
        if (size == 1 and code in ("1", "7")) or (size == 2 and int(code or "0") in _CC2) or size == 3:
            return PhoneNumber(code, digits[size:])
    return PhoneNumber(None, digits)  # pragma: no cover - the loop always returns


def phone_forms(value: str) -> tuple[Form, ...]:
    """E.164, 00-prefixed, country code + number, national (with trunk prefix) and the bare national number."""
    number = parse_phone(value)
    forms: list[Form] = []
    if number.country_code is not None:
        full = number.country_code + number.national
        forms += [Form("phone", "e164", "+" + full), Form("phone", "intl-00", "00" + full),
                  Form("phone", "cc-digits", full, digit_boundary=True)]
        if number.trunk and number.trunk != number.country_code:
            forms.append(Form("phone", "national", number.trunk + number.national, digit_boundary=True))
    else:
        forms.append(Form("phone", "national", "0" + number.national, digit_boundary=True))
    if len(number.national) >= MIN_NSN_DIGITS:
        forms.append(Form("phone", "nsn", number.national, digit_boundary=True))
    compact = "".join(ch for ch in value if ch.isdigit() or ch == "+")
    if value != compact:
        forms.append(Form("phone", "as-given", value))
    unique: dict[str, Form] = {}
    for form in forms:
        unique.setdefault(form.text, form)
    return tuple(unique.values())


def _phone_forms(name: str, value: str) -> Iterator[Form]:
    yield from phone_forms(value)


_FORM_MAKERS["phone"] = _phone_forms


def _separated(digits: str) -> bytes:
    """A regex for digits written with optional separators between them (``030 123-45 67``)."""
    return _DIGIT_SEPARATOR.join(re.escape(d).encode() for d in digits)


def nanp_pattern(number: PhoneNumber) -> bytes | None:
    """``+1 (415) 555-2671`` and ``415.555.2671``: how North American numbers are written, which the
    one-character separators of ``_DIGIT_SEPARATOR`` miss (``) `` is two, and it has no '.'). Anchored on the
    literal digit groups, so it stays a cheap pattern."""
    if number.country_code != "1" or len(number.national) != NANP_DIGITS:
        return None
    area, exchange, line = (re.escape(part).encode() for part in
                            (number.national[:3], number.national[3:6], number.national[6:]))
    return (rb"(?:(?:\+|%2[bB])?1[ .\-]?)?(?:\(" + area + rb"\) ?|" + area + rb"[ .\-]?)"
            + exchange + rb"[ .\-]?" + line)


def _special_needles(name: str, value: str) -> Iterator[Needle]:
    """Plain-text needles that are patterns rather than forms: separators, IMEISV."""
    if name == "imei":
        body = value[:14]
        yield Needle(re.escape(body).encode() + rb"[0-9]{2}", name, "plain", "imeisv", regex=True,
                     digit_boundary=True)
        yield Needle(_IMEI_SEPARATOR.join(d.encode() for d in value), name, "plain", "imei-separated",
                     regex=True, digit_boundary=True)
        yield Needle(imeisv_identity_pattern(body), name, "bcd-mi", "imeisv", regex=True)
        # TAC and serial number sent as two fields (tac=35209900&snr=176148): both, in this order, close together
        yield Needle(value[:8].encode() + rb"[^0-9]{1,32}" + value[8:14].encode(), name, "plain", "imei-tac-snr",
                     regex=True, digit_boundary=True)
    elif name == "phone":
        for form in phone_forms(value):
            if form.name == "as-given":
                continue
            if form.text.startswith("+"):
                pattern = rb"(?:\+|%2[bB])" + _separated(form.text[1:])
            else:
                pattern = _separated(form.text)
            yield Needle(pattern, name, "plain", f"{form.name}-separated", regex=True, digit_boundary=True)
        nanp = nanp_pattern(parse_phone(value))
        if nanp is not None:
            yield Needle(nanp, name, "plain", "nanp", regex=True, digit_boundary=True)
    elif name == "gaid":
        yield Needle(bytes.fromhex(value.replace("-", "")), name, "raw", "gaid")
    elif name in ("wifi_mac", "bt_mac"):
        yield Needle(bytes.fromhex(value.replace(":", "")), name, "raw", "mac")


# --- where the phone is: serving cell and Wi-Fi network -------------------------------------------------------

#: a cell id with fewer decimal digits (a 16-bit GSM/UMTS CI) is looked for only beside its key or its area code
MIN_CELL_ID_DIGITS = 7
#: between the parts of a combined cell spelling (``460-00-4136-19695115``, ``460_00_1028_12c8a0b``)
_CELL_SEPARATOR = rb"[ _:;,/|.\-]"
#: between a key and its value: ``"SIM1CELLID":"``, ``cid=``, ``<ci>``, ``"lac": ``
_KEY_GLUE = rb"[^0-9A-Za-z]{1,4}"
#: key names apps send a cell id, area code and CDMA base-station id under (matched caseless, as a key's end:
#: ``SIM1CELLID`` ends in ``cellid``)
_CID_KEYS = rb"(?:cell_?id|cell-id|cid|ci|eci|nci)"
_LAC_KEYS = rb"(?:lac|tac)"
#: the rest of a key before its telling end (``SIM1`` of ``SIM1CELLID``): part of the match, so that the digit
#: before ``CELLID`` does not count as the value running into another number
_KEY_PREFIX = rb"[A-Za-z0-9_]{0,8}"
_BSID_KEYS = rb"(?:bsid|base_?id|base_?station_?id)"
#: most characters between an area code and a cell id sent as two fields
MAX_CELL_GAP = 32


def _digits_re(number: int, *, hexadecimal: bool = False) -> bytes:
    text = format(number, "x") if hexadecimal else str(number)
    return (rb"(?:0x)?" if hexadecimal else b"") + re.escape(text).encode()


def cell_needles(cell: Cell) -> Iterator[Needle]:
    """The serving cell: never a short number alone (a LAC, a GSM cell id or a base-station id is a 2-5 digit
    number found in any traffic), but each beside its key, area code and cell id together, the combined
    ``MCC-MNC-LAC-CID`` spellings in decimal and hex, and a long (LTE/NR) cell id in every text encoding."""
    def keyed(keys: bytes, number: int, form: str, *, hexadecimal: bool = False) -> Needle:
        return Needle(_KEY_PREFIX + keys + _KEY_GLUE + _digits_re(number, hexadecimal=hexadecimal), "cell", "plain", form,
                      caseless=True, regex=True, digit_boundary=True)

    if cell.cid is not None:
        if len(str(cell.cid)) >= MIN_CELL_ID_DIGITS:
            yield from encode_form(Form("cell", "cell-cid", str(cell.cid), digit_boundary=True))
        yield keyed(_CID_KEYS, cell.cid, "cell-cid-keyed")
        if format(cell.cid, "x") != str(cell.cid):
            yield keyed(_CID_KEYS, cell.cid, "cell-cid-hex-keyed", hexadecimal=True)
        for hexadecimal, suffix in ((False, ""), (True, "-hex")):
            cid = _digits_re(cell.cid, hexadecimal=hexadecimal)
            if cell.lac is not None:
                lac = _digits_re(cell.lac, hexadecimal=hexadecimal)
                gap = (rb"[^0-9a-fA-F]" if hexadecimal else rb"[^0-9]") + b"{1,%d}" % MAX_CELL_GAP
                for first, second, order in ((lac, cid, "lac-cid"), (cid, lac, "cid-lac")):
                    yield Needle(first + gap + second, "cell", "plain", f"cell-{order}{suffix}", caseless=True,
                                 regex=True, digit_boundary=True)
            if cell.mcc is not None and cell.mnc is not None:
                operator = re.escape(cell.mcc).encode() + _CELL_SEPARATOR + b"?" + re.escape(cell.mnc).encode()
                parts = [operator, *([_digits_re(cell.lac, hexadecimal=hexadecimal)] if cell.lac is not None else []),
                         cid]
                name = "cell-mcc-mnc-lac-cid" if cell.lac is not None else "cell-mcc-mnc-cid"
                yield Needle(_CELL_SEPARATOR.join(parts), "cell", "plain", name + suffix, caseless=True, regex=True,
                             digit_boundary=True)
    if cell.lac is not None:
        yield keyed(_LAC_KEYS, cell.lac, "cell-lac-keyed")
    if cell.bsid is not None:
        yield keyed(_BSID_KEYS, cell.bsid, "cell-bsid-keyed")


def wifi_needles(wifi: Wifi) -> Iterator[Needle]:
    """The network the phone is on: its BSSID in every MAC spelling (and as 6 raw bytes), its SSID as text in
    every encoding a custom value gets."""
    if wifi.bssid is not None:
        for form in _mac_forms("wifi", wifi.bssid):
            yield from encode_form(Form("wifi", form.name.replace("mac-", "bssid-", 1), form.text,
                                        digit_boundary=form.digit_boundary))
        yield Needle(bytes.fromhex(wifi.bssid.replace(":", "")), "wifi", "raw", "bssid")
    if wifi.ssid is not None:
        for form in _custom_forms("ssid", wifi.ssid):
            yield from encode_form(Form("wifi", form.name, form.text, digit_boundary=form.digit_boundary))


# --- encodings of one form -----------------------------------------------------------------------------------


def _has_letters(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def encode_form(form: Form) -> Iterator[Needle]:
    """Every encoded needle of one canonical form."""
    raw = form.text.encode("utf-8")
    caseless = _has_letters(form.text)
    upper_variant = form.name.endswith("-upper")

    def needle(pattern: bytes, encoding: str, *, nocase: bool = False, boundary: bool = False) -> Needle:
        return Needle(pattern, form.identifier, encoding, form.name, caseless=nocase, digit_boundary=boundary)

    # case-preserving encodings: one caseless needle covers both case variants
    if not upper_variant:
        yield needle(raw, "plain", nocase=caseless, boundary=form.digit_boundary)
        for url in sorted({urllib.parse.quote(form.text, safe=""), urllib.parse.quote_plus(form.text, safe="")}):
            if url != form.text:
                yield needle(url.encode(), "url", nocase=True)
        if len(raw) < MIN_ENCODED_FORM_LENGTH:
            return
        yield needle(raw.decode("latin-1").encode("utf-16-le"), "utf16le", nocase=caseless)
        yield needle(raw.decode("latin-1").encode("utf-16-be"), "utf16be", nocase=caseless)
        if raw[::-1] != raw:  # reversed, the cheapest obfuscation (.obfuscation has XOR)
            yield needle(raw[::-1], "reversed", nocase=caseless, boundary=form.digit_boundary)
    elif len(raw) < MIN_ENCODED_FORM_LENGTH:
        return
    # case-sensitive encodings: each case variant separately (hex digits themselves in either case)
    yield needle(raw.hex().encode(), "hex", nocase=True)
    yield from (needle(p, "base64") for p in base64_middles(raw))
    yield from (needle(p, "base64url") for p in base64_middles(raw, urlsafe=True) if b"-" in p or b"_" in p)
    yield from (needle(p, "base32") for p in base32_middles(raw))
    yield needle(base58(raw), "base58")
    if caseless and not upper_variant:
        for shift in range(1, 26):
            yield needle(rot(form.text, shift).encode(), f"rot{shift}", nocase=True)
    yield from hash_needles(form, raw)
    if form.text.isdigit():
        yield from _numeric_needles(form)


def base64_middles(raw: bytes, *, urlsafe: bool = False) -> tuple[bytes, ...]:
    """The base64 text of ``raw`` at each of the 3 byte alignments, minus the characters its neighbours change.

    LeakDetector's trick: inside a longer base64 string the value starts at byte offset 0, 1 or 2 of a 3-byte
    group; encoding it behind 0/1/2 filler bytes and keeping only the characters that depend on the value alone
    gives a literal that is found whatever surrounds it.
    """
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return _middles(raw, encode, bits=6)


def base32_middles(raw: bytes) -> tuple[bytes, ...]:
    """Like :func:`base64_middles` for base32 (5-byte groups, 5 alignments)."""
    return _middles(raw, base64.b32encode, bits=5)


def _middles(raw: bytes, encode: Callable[[bytes], bytes], *, bits: int) -> tuple[bytes, ...]:
    group = 3 if bits == 6 else 5
    out: list[bytes] = []
    for shift in range(group):
        text = encode(b"\x00" * shift + raw)
        first = -(-8 * shift // bits)
        last = 8 * (shift + len(raw)) // bits
        middle = text[first:last]
        if len(middle) >= MIN_MIDDLE_CHARS:
            out.append(middle)
    return tuple(dict.fromkeys(out))


_B58 = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58(raw: bytes) -> bytes:
    """Bitcoin-alphabet base58 (LeakDetector checks it; only a whole value can be found)."""
    number = int.from_bytes(raw, "big")
    out = bytearray()
    while number:
        number, digit = divmod(number, 58)
        out.append(_B58[digit])
    out.extend(b"1" * (len(raw) - len(raw.lstrip(b"\x00"))))
    return bytes(reversed(out))


def rot(text: str, shift: int) -> str:
    """Caesar-shift the letters (rot13 when shift is 13), leave the rest."""
    def one(ch: str) -> str:
        if "a" <= ch <= "z":
            return chr((ord(ch) - 97 + shift) % 26 + 97)
        if "A" <= ch <= "Z":
            return chr((ord(ch) - 65 + shift) % 26 + 65)
        return ch
    return "".join(one(ch) for ch in text)


# --- hashes --------------------------------------------------------------------------------------------------


def _hashlib(name: str) -> Callable[[bytes], bytes]:
    def digest(data: bytes) -> bytes:
        return hashlib.new(name, data).digest()
    return digest


def md4(data: bytes) -> bytes:
    """MD4 (RFC 1320) in pure Python: OpenSSL 3 hides it, LeakDetector checks it."""
    def f(x: int, y: int, z: int) -> int:
        return (x & y) | (~x & z)

    def g(x: int, y: int, z: int) -> int:
        return (x & y) | (x & z) | (y & z)

    def h(x: int, y: int, z: int) -> int:
        return x ^ y ^ z

    def rotl(x: int, n: int) -> int:
        x &= 0xFFFFFFFF
        return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF

    message = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", (8 * len(data)) & ((1 << 64) - 1))
    state = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    for offset in range(0, len(message), 64):
        x = struct.unpack("<16I", message[offset:offset + 64])
        a, b, c, d = state
        for i in range(16):
            k, s = i, (3, 7, 11, 19)[i % 4]
            a, b, c, d = d, rotl(a + f(b, c, d) + x[k], s), b, c
        for i in range(16):
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            a, b, c, d = d, rotl(a + g(b, c, d) + x[k] + 0x5A827999, s), b, c
        for i in range(16):
            k = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)[i]
            s = (3, 9, 11, 15)[i % 4]
            a, b, c, d = d, rotl(a + h(b, c, d) + x[k] + 0x6ED9EBA1, s), b, c
        state = [(v + w) & 0xFFFFFFFF for v, w in zip(state, (a, b, c, d), strict=True)]
    return struct.pack("<4I", *state)


#: MD2's S-table (RFC 1319): a permutation of 0..255 shuffled by the digits of pi. A constant, since deriving
#: it (a pi spigot) took a third of the needle build; testing/unit/test_forms.py derives it from pi again and
#: compares, so a wrong byte here cannot go unnoticed.
MD2_S_TABLE = bytes.fromhex(
    "292e43c9a2d87c013d3654a1ecf0061362a705f3c0c7738c98932bd9bc4c82ca"
    "1e9b573cfdd4e01667426f188a17e512be4ec4d6da9ede49a0fbf58ebb2fee7a"
    "a968799115b2073f94c210890b225f21807f5d9a5a903227353ecce7bff79703"
    "ff1930b348a5b5d1d75e922aac56aac64fb838d296a47db676fc6be29c7404f1"
    "459d705964718720865bcf65e62da8021b6025adaeb0b9f61c46616934407e0f"
    "5547a323dd51af3ac35cf9cebac5ea262c530d6e85288409d3dfcdf441814d52"
    "6adc37c86cc1abfa24e17b080cbdb14a7888958be363e86de9cbd5fe3b001d39"
    "f2efb70e6658d0e4a67772f8eb754b0a314450b48fed1f1adb998d339f118314"
)


def md2(data: bytes) -> bytes:
    """MD2 (RFC 1319) in pure Python: LeakDetector checks it, OpenSSL 3 dropped it."""
    s = MD2_S_TABLE
    pad = 16 - len(data) % 16
    message = data + bytes([pad]) * pad
    checksum = bytearray(16)
    last = 0
    for offset in range(0, len(message), 16):
        for j in range(16):
            checksum[j] ^= s[message[offset + j] ^ last]
            last = checksum[j]
    message += bytes(checksum)
    x = bytearray(48)
    for offset in range(0, len(message), 16):
        block = message[offset:offset + 16]
        for j in range(16):
            x[16 + j] = block[j]
            x[32 + j] = x[16 + j] ^ x[j]
        t = 0
        for j in range(18):
            for k in range(48):
                x[k] ^= s[t]
                t = x[k]
            t = (t + j) % 256
    return bytes(x[:16])


#: digests of each canonical form: LeakDetector's list minus whirlpool (neither hashlib nor a few lines of
#: Python), plus sha512_224/256 and sm3 that hashlib has anyway; MurmurHash3 and checksums are below
HASHES: dict[str, Callable[[bytes], bytes]] = {
    "md2": md2, "md4": md4, "md5": _hashlib("md5"), "sha1": _hashlib("sha1"), "sha224": _hashlib("sha224"),
    "sha256": _hashlib("sha256"), "sha384": _hashlib("sha384"), "sha512": _hashlib("sha512"),
    "sha512_224": _hashlib("sha512_224"), "sha512_256": _hashlib("sha512_256"),
    "sha3_224": _hashlib("sha3_224"), "sha3_256": _hashlib("sha3_256"), "sha3_384": _hashlib("sha3_384"),
    "sha3_512": _hashlib("sha3_512"), "blake2b": _hashlib("blake2b"), "blake2s": _hashlib("blake2s"),
}
if "ripemd160" in hashlib.algorithms_available:
    HASHES["ripemd160"] = _hashlib("ripemd160")
if "sm3" in hashlib.algorithms_available:
    HASHES["sm3"] = _hashlib("sm3")

#: 32-bit checksums, sent as decimal (as LeakDetector looks for them)
CHECKSUMS: dict[str, Callable[[bytes], int]] = {
    "crc32": lambda data: zlib.crc32(data) & 0xFFFFFFFF,
    "adler32": lambda data: zlib.adler32(data) & 0xFFFFFFFF,
}
#: a checksum with fewer decimal digits than this is too likely in random digits to report
MIN_CHECKSUM_DIGITS = 9


def hash_needles(form: Form, raw: bytes) -> Iterator[Needle]:
    """Digests of one form as hex (caseless), raw bytes, base64 and base64url; checksums and MurmurHash3 as
    decimal text."""
    def needle(pattern: bytes, encoding: str, *, nocase: bool = False, boundary: bool = False) -> Needle:
        return Needle(pattern, form.identifier, encoding, form.name, caseless=nocase, digit_boundary=boundary)

    for name, function in HASHES.items():
        digest = function(raw)
        yield needle(digest.hex().encode(), name, nocase=True)
        yield needle(digest, f"{name}-raw")
        yield needle(base64.b64encode(digest).rstrip(b"="), f"base64>{name}")
        url = base64.urlsafe_b64encode(digest).rstrip(b"=")
        if b"-" in url or b"_" in url:
            yield needle(url, f"base64url>{name}")
    for name, checksum in CHECKSUMS.items():
        value = checksum(raw)
        if len(str(value)) >= MIN_CHECKSUM_DIGITS:  # 8 hex digits would turn up in any hex-heavy traffic
            yield needle(str(value).encode(), name, boundary=True)
    for name, text in murmur_texts(raw).items():
        if sum(ch.isdigit() for ch in text) >= MIN_CHECKSUM_DIGITS:
            yield needle(text.encode(), name, boundary=True)


# --- binary encodings of numbers -----------------------------------------------------------------------------


def tbcd(digits: str) -> bytes:
    """3GPP TBCD (TS 29.002): two digits per byte, first digit in the low nibble, odd length padded with F."""
    padded = digits + ("F" if len(digits) % 2 else "")
    return bytes(int(padded[i + 1], 16) << 4 | int(padded[i], 16) for i in range(0, len(padded), 2))


def mobile_identity(digits: str, kind: int) -> bytes:
    """TS 24.008 mobile identity: first digit, odd/even flag and type in byte one, then TBCD of the rest."""
    odd = len(digits) % 2
    head = int(digits[0]) << 4 | odd << 3 | kind
    return bytes([head]) + tbcd(digits[1:])


def imeisv_identity_pattern(body: str) -> bytes:
    """A regex for the TS 24.008 mobile identity of an IMEISV (type 3, 16 digits: even) with any 2-digit SVN."""
    fixed = bytes([int(body[0]) << 4 | 3]) + tbcd(body[1:13])
    last_body = int(body[13])
    svn_first = b"[" + b"".join(b"\\x%02x" % (s << 4 | last_body) for s in range(10)) + b"]"
    return b"".join(b"\\x%02x" % byte for byte in fixed) + svn_first + rb"[\xf0-\xf9]"


#: shorter digit strings make BCD needles of 4 bytes or less: chance matches in binary data
MIN_BCD_DIGITS = 10
#: smaller numbers leave 4+ zero bytes in a 64-bit integer, and zero-padded binary data is everywhere
MIN_INT64_VALUE = 1 << 32


#: TS 24.008 type of identity
_IDENTITY_TYPE = {"imsi": 1, "imei": 2}


def _numeric_needles(form: Form) -> Iterator[Needle]:
    """Binary spellings of a digit string: TBCD, packed BCD, 64-bit integers."""
    def needle(pattern: bytes, encoding: str) -> Needle:
        return Needle(pattern, form.identifier, encoding, form.name)

    digits = form.text
    if len(digits) >= MIN_BCD_DIGITS:
        yield needle(tbcd(digits), "bcd")
        if len(digits) % 2 == 0:
            yield needle(bytes.fromhex(digits), "bcd-packed")
        kind = _IDENTITY_TYPE.get(form.identifier)
        if kind is not None and form.name in ("imei", "imsi"):
            yield needle(mobile_identity(digits, kind), "bcd-mi")
    number = int(digits)
    if MIN_INT64_VALUE <= number < 1 << 64:
        yield needle(number.to_bytes(8, "big"), "int64be")
        yield needle(number.to_bytes(8, "little"), "int64le")
        for pattern, encoding in serialised.integer_encodings(number):  # protobuf varint / zigzag
            yield needle(pattern, encoding)


# --- locations -----------------------------------------------------------------------------------------------


def distance_m(a: Location, b: Location) -> float:
    """Great-circle distance (haversine), enough for "within ~100 m"."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlon = math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def tolerance_deg(location: Location) -> tuple[float, float]:
    """How far (degrees of lat, of lon) a coordinate may be from the true point and still be it."""
    dlat = math.degrees(LOCATION_RADIUS_M / EARTH_RADIUS_M)
    coslat = max(math.cos(math.radians(location.lat)), 1e-6)
    return dlat, min(MAX_LON_TOLERANCE_DEG, dlat / coslat)


def location_needles(location: Location) -> Iterator[Needle]:
    """Prefix needles for each coordinate; the matcher reads the whole number and checks the distance."""
    dlat, dlon = tolerance_deg(location)
    for axis, value, tolerance, width in (("lat", location.lat, dlat, 2), ("lon", location.lon, dlon, 3)):
        lo, hi = value - tolerance, value + tolerance
        for text in decimal_prefixes(lo, hi):
            yield Needle(text.encode(), "location", "plain", f"{axis}-decimal", digit_boundary=False,
                         location=location)
        for encoding in ("e6", "e7"):
            for text in scaled_prefixes(lo, hi):
                yield Needle(text.encode(), "location", encoding, f"{axis}-{encoding}", location=location)
        for text in nmea_prefixes(lo, hi, width):
            yield Needle(text.encode(), "location", "nmea", f"{axis}-nmea", location=location)
        if abs(value) - tolerance < MIN_BINARY_COORDINATE_DEG:
            continue  # near 0 a binary coordinate is any small number or tiny float: no evidence
        for pattern, encoding in binary_coordinate_patterns(lo, hi):
            yield Needle(pattern, "location", encoding, f"{axis}-{encoding}", regex=True, location=location)


def _milli_range(lo: float, hi: float) -> range:
    return range(math.floor(lo * 1000) - 1, math.ceil(hi * 1000) + 2)


def decimal_prefixes(lo: float, hi: float) -> tuple[str, ...]:
    """Texts of the 3-decimal numbers a coordinate in [lo, hi] starts with when written in decimal degrees."""
    out: dict[str, None] = {}
    for k in _milli_range(lo, hi):
        sign = "-" if k < 0 else ""
        whole, frac = divmod(abs(k), 1000)
        out[f"{sign}{whole}.{frac:03d}"] = None
        if k == 0:
            out["-0.000"] = None
    return tuple(out)


def scaled_prefixes(lo: float, hi: float) -> tuple[str, ...]:
    """Texts an E6/E7 integer starts with: the decimal prefixes without the dot (the matcher checks the rest).

    Near 0 degrees the prefix loses its leading zeros and gets too short to look for; such points are only
    found in their other encodings.
    """
    out: dict[str, None] = {}
    for prefix in decimal_prefixes(lo, hi):
        sign = "-" if prefix.startswith("-") else ""
        digits = prefix.lstrip("-").replace(".", "").lstrip("0")
        if len(digits) >= MIN_SCALED_PREFIX_DIGITS:
            out[sign + digits] = None
    return tuple(out)


def nmea_prefixes(lo: float, hi: float, width: int) -> tuple[str, ...]:
    """Texts of ``ddmm.mm`` / ``dddmm.mm`` (NMEA, hemisphere letter separate) for a coordinate in [lo, hi]."""
    magnitudes = (0.0, max(-lo, hi)) if lo < 0 < hi else (min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))
    out: dict[str, None] = {}
    # in hundredths of a minute: 6000 per degree
    for k in range(max(0, math.floor(magnitudes[0] * 6000) - 1), math.ceil(magnitudes[1] * 6000) + 2):
        whole, hundredths = divmod(k, 6000)
        out[f"{whole:0{width}d}{hundredths // 100:02d}.{hundredths % 100:02d}"] = None
    return tuple(out)


def binary_coordinate_patterns(lo: float, hi: float) -> Iterator[tuple[bytes, str]]:
    """Regexes for a coordinate in [lo, hi] as E7 int32 and IEEE-754 float/double, both byte orders."""
    e7_lo, e7_hi = round(lo * 1e7), round(hi * 1e7)
    yield from _int_range_patterns(e7_lo & 0xFFFFFFFF, e7_hi & 0xFFFFFFFF, 4, "e7-int32", e7_lo < 0 <= e7_hi)
    for name, scale in serialised.SCALED_INT32:  # E6, E5
        s_lo, s_hi = round(lo * scale), round(hi * scale)
        yield from _int_range_patterns(s_lo & 0xFFFFFFFF, s_hi & 0xFFFFFFFF, 4, name, s_lo < 0 <= s_hi)
    for fmt, width, name in (("f", 4, "float32"), ("d", 8, "float64")):
        for a, b in _sign_split(lo, hi):
            bits_a = int.from_bytes(struct.pack(">" + fmt, a), "big")
            bits_b = int.from_bytes(struct.pack(">" + fmt, b), "big")
            yield from _int_range_patterns(min(bits_a, bits_b), max(bits_a, bits_b), width, name, False)


def _sign_split(lo: float, hi: float) -> Iterator[tuple[float, float]]:
    if lo < 0 < hi:
        yield lo, -0.0
        yield 0.0, hi
    else:
        yield lo, hi


def _int_range_patterns(lo: int, hi: int, width: int, name: str, wraps: bool) -> Iterator[tuple[bytes, str]]:
    if wraps:  # a negative-to-positive E7 range in two's complement: two unsigned ranges
        yield from _int_range_patterns(lo, (1 << 32) - 1, width, name, False)
        yield from _int_range_patterns(0, hi, width, name, False)
        return
    for a, b in _byte_ranges(lo, hi, width):
        for order in ("be", "le"):
            yield _byte_range_regex(a, b, width, order), f"{name}{order}"


def _byte_ranges(lo: int, hi: int, width: int) -> Iterator[tuple[int, int]]:
    """Split [lo, hi] into ranges whose values share all bytes above one 'class' byte."""
    shift = 0
    while shift + 8 < width * 8 and (hi >> shift) - (lo >> shift) >= 256:
        shift += 8
    # pieces that do not cross a boundary of the byte above the class byte
    step = 1 << (shift + 8)
    start = lo
    while start <= hi:
        end = min(hi, (start // step + 1) * step - 1)
        yield start, end
        start = end + 1


def _byte_range_regex(lo: int, hi: int, width: int, order: str) -> bytes:
    """A fixed-width regex for the big- or little-endian bytes of every integer in [lo, hi] (a superset)."""
    lo_bytes = lo.to_bytes(width, "big")
    hi_bytes = hi.to_bytes(width, "big")
    parts: list[bytes] = []
    fixed = True
    for a, b in zip(lo_bytes, hi_bytes, strict=True):
        if fixed and a == b:
            parts.append(b"\\x%02x" % a)
        elif fixed:
            parts.append(b"[\\x%02x-\\x%02x]" % (a, b))
            fixed = False
        else:
            parts.append(b"[\\x00-\\xff]")
    if order == "le":
        parts.reverse()
    return b"".join(parts)


# --- MurmurHash3 (LeakDetector's mmh3_32, mmh3_64_1, mmh3_64_2, mmh3_128), pure Python ---------------------

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _rotl64(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    return k ^ (k >> 33)


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32 as an unsigned int (``mmh3.hash`` is the same value, signed)."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & _M32
    blocks = len(data) // 4
    for (k,) in struct.iter_unpack("<I", data[: blocks * 4]):
        k = _rotl32((k * c1) & _M32, 15) * c2 & _M32
        h = (_rotl32(h ^ k, 13) * 5 + 0xE6546B64) & _M32
    tail = data[blocks * 4:]
    if tail:
        k = int.from_bytes(tail, "little")
        h ^= _rotl32((k * c1) & _M32, 15) * c2 & _M32
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def murmur3_x64_128(data: bytes, seed: int = 0) -> tuple[int, int]:
    """MurmurHash3 x64_128 as two unsigned 64-bit halves (``mmh3.hash64`` gives them signed)."""
    c1, c2 = 0x87C37B91114253D5, 0x4CF5AD432745937F
    h1 = h2 = seed & _M64
    blocks = len(data) // 16
    for k1, k2 in struct.iter_unpack("<QQ", data[: blocks * 16]):
        h1 ^= _rotl64((k1 * c1) & _M64, 31) * c2 & _M64
        h1 = (_rotl64(h1, 27) + h2) & _M64
        h1 = (h1 * 5 + 0x52DCE729) & _M64
        h2 ^= _rotl64((k2 * c2) & _M64, 33) * c1 & _M64
        h2 = (_rotl64(h2, 31) + h1) & _M64
        h2 = (h2 * 5 + 0x38495AB5) & _M64
    tail = data[blocks * 16:]
    if len(tail) > 8:
        k2 = int.from_bytes(tail[8:], "little")
        h2 ^= _rotl64((k2 * c2) & _M64, 33) * c1 & _M64
    if tail:
        k1 = int.from_bytes(tail[:8], "little")
        h1 ^= _rotl64((k1 * c1) & _M64, 31) * c2 & _M64
    h1 ^= len(data)
    h2 ^= len(data)
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    h1, h2 = _fmix64(h1), _fmix64(h2)
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    return h1, h2


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def murmur_texts(data: bytes) -> dict[str, str]:
    """What LeakDetector looks for: ``str()`` of the python ``mmh3`` results (signed ints, a 128-bit int)."""
    h1, h2 = murmur3_x64_128(data)
    return {
        "mmh3_32": str(_signed(murmur3_32(data), 32)),
        "mmh3_64_1": str(_signed(h1, 64)),
        "mmh3_64_2": str(_signed(h2, 64)),
        "mmh3_128": str(h1 | h2 << 64),
    }
