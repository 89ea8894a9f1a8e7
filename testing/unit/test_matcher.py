"""The matcher: every form and encoding round-trips (encode, embed in noise, find), no false positives, both
engines agree. Encodings are computed here with the standard library, independently of ``forms.py``."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import random
import struct
import time
import urllib.parse
import zlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phonehome.identifiers import Identifiers, Location, parse_identifiers
from phonehome.scan.forms import MIN_CHECKSUM_DIGITS, build_needles, murmur_texts
from phonehome.scan.matcher import Match, Matcher, build_matcher, hyperscan_available

ENGINES = [
    pytest.param("hyperscan", marks=pytest.mark.skipif(not hyperscan_available(), reason="no hyperscan wheel")),
    "python",
]

DEVICE = parse_identifiers({
    "imei": "352099001761481",
    "imsi": "310260000000000",
    "iccid": "8901260000000000001",
    "serial": "R58M12ABCDE",
    "phone": "+49 30 1234567",
    "android_id": "9774d56d682e549c",
    "gaid": "38400000-8cf0-11bd-b23e-10b96e40000d",
    "wifi_mac": "ac:37:43:4d:5e:6f",
    "bt_mac": "ac:37:43:4d:5e:70",
    "location": {"lat": 52.5163, "lon": 13.3777},
    # short numbers on purpose: a GSM cell and a CDMA base station must not turn up in bulk random text
    "cell": [{"mcc": "262", "mnc": "01", "lac": 4136, "cid": 19695115}, {"mcc": "262", "mnc": "01", "lac": 513,
                                                                         "cid": 4021}, {"bsid": 37}],
    "wifi": {"bssid": "ac:37:43:00:11:22", "ssid": "Kreuzberg-Gast"},
    "custom": {"account": "alice@example.org"},
}, source="test")

OTHER = parse_identifiers({
    "imei": "490154203237518",
    "imsi": "262011234567890",
    "iccid": "8949226000000000002",
    "serial": "ZX1G22KLMN",
    "phone": "+33 6 12 34 56 78",
    "android_id": "1234abcd5678ef90",
    "gaid": "cdda802e-fb9c-47ad-9866-0794d394c912",
    "wifi_mac": "00:1a:2b:3c:4d:5e",
    "bt_mac": "00:1a:2b:3c:4d:5f",
    "location": {"lat": 48.8584, "lon": 2.2945},
    "custom": {"account": "bob@example.net"},
}, source="test")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def matcher_for(engine: str, ids: Identifiers = DEVICE) -> Matcher:
    return build_matcher(ids, engine=engine)


def found(matches: list[Match]) -> set[tuple[str, str]]:
    return {(m.needle.identifier, m.needle.encoding) for m in matches}


def noise(rng: random.Random, size: int) -> bytes:
    """Random bytes without ASCII digits, so digit boundaries hold around the embedded value."""
    alphabet = bytes(b for b in range(256) if not 0x30 <= b <= 0x39)
    return bytes(rng.choice(alphabet) for _ in range(size))


# --- encoders, written independently of forms.py ---------------------------------------------------------------

def tbcd(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex("".join(digits[i + 1] + digits[i] for i in range(0, len(digits), 2)))


def b64_embed(prefix: bytes, value: bytes, suffix: bytes) -> bytes:
    return base64.b64encode(prefix + value + suffix)


TEXT_ENCODINGS: dict[str, Callable[[str], bytes]] = {
    "plain": lambda v: v.encode(),
    "hex": lambda v: v.encode().hex().encode(),
    "utf16le": lambda v: v.encode("utf-16-le"),
    "utf16be": lambda v: v.encode("utf-16-be"),
    "base58": lambda v: _b58(v.encode()),
    "rot13": lambda v: v.encode().translate(bytes.maketrans(
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        b"nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM")),
}
for _name in ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3_256", "blake2b", "ripemd160"):
    TEXT_ENCODINGS[_name] = (lambda h: lambda v: hashlib.new(h, v.encode()).hexdigest().encode())(_name)
    TEXT_ENCODINGS[f"{_name}-raw"] = (lambda h: lambda v: hashlib.new(h, v.encode()).digest())(_name)
    TEXT_ENCODINGS[f"base64>{_name}"] = (
        lambda h: lambda v: base64.b64encode(hashlib.new(h, v.encode()).digest()))(_name)
TEXT_ENCODINGS["crc32"] = lambda v: str(zlib.crc32(v.encode())).encode()
TEXT_ENCODINGS["mmh3_64_1"] = lambda v: murmur_texts(v.encode())["mmh3_64_1"].encode()  # checked in test_forms
TEXT_ENCODINGS["adler32"] = lambda v: str(zlib.adler32(v.encode())).encode()


def _b58(raw: bytes) -> bytes:
    alphabet = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    n = int.from_bytes(raw, "big")
    out = b""
    while n:
        n, r = divmod(n, 58)
        out = alphabet[r:r + 1] + out
    return out


#: (identifier, the text an app starts from)
CANONICAL = [
    ("imei", "352099001761481"),
    ("imei", "35209900176148"),
    ("imsi", "310260000000000"),
    ("iccid", "8901260000000000001"),
    ("serial", "R58M12ABCDE"),
    ("serial", "r58m12abcde"),
    ("phone", "+49301234567"),
    ("phone", "0049301234567"),
    ("phone", "0301234567"),
    ("android_id", "9774d56d682e549c"),
    ("android_id", "9774D56D682E549C"),
    ("gaid", "38400000-8cf0-11bd-b23e-10b96e40000d"),
    ("gaid", "38400000-8CF0-11BD-B23E-10B96E40000D"),
    ("gaid", "384000008cf011bdb23e10b96e40000d"),
    ("wifi_mac", "ac:37:43:4d:5e:6f"),
    ("wifi_mac", "AC-37-43-4D-5E-6F"),
    ("wifi_mac", "ac37434d5e6f"),
    ("bt_mac", "AC:37:43:4D:5E:70"),
    ("account", "alice@example.org"),
    ("account", "ALICE@EXAMPLE.ORG"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("identifier", "text"), CANONICAL)
def test_every_text_encoding_round_trips(engine: str, identifier: str, text: str) -> None:
    matcher = matcher_for(engine)
    rng = random.Random(text)
    for encoding, encode in TEXT_ENCODINGS.items():
        if encoding == "rot13" and not any(ch.isalpha() for ch in text):
            continue
        if encoding in ("crc32", "adler32") and len(encode(text)) < MIN_CHECKSUM_DIGITS:
            continue  # too short to tell from random digits: not looked for
        data = noise(rng, 40) + b" " + encode(text) + b" " + noise(rng, 40)
        assert (identifier, encoding) in found(matcher.find(data)), (identifier, text, encoding)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("identifier", "text"), CANONICAL)
def test_url_encoding_round_trips(engine: str, identifier: str, text: str) -> None:
    encoded = urllib.parse.quote(text, safe="").encode()
    matches = found(matcher_for(engine).find(b"GET /?id=" + encoded + b" HTTP/1.1"))
    expected = "url" if encoded != text.encode() else "plain"
    assert (identifier, expected) in matches


@pytest.mark.timeout(120)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(CANONICAL), prefix=st.binary(max_size=5), suffix=st.binary(max_size=5),
       urlsafe=st.booleans())
def test_base64_at_every_alignment(engine: str, case: tuple[str, str], prefix: bytes, suffix: bytes,
                                   urlsafe: bool) -> None:
    identifier, text = case
    value = text.encode()
    encoded = base64.b64encode(prefix + value + suffix)
    expected = "base64"
    if urlsafe:
        encoded = base64.urlsafe_b64encode(prefix + value + suffix)
        middle = encoded[len(prefix) * 4 // 3 + 2: (len(prefix) + len(value)) * 4 // 3 - 1]
        expected = "base64url" if (b"-" in middle or b"_" in middle) else "base64"
    matches = found(matcher_for(engine).find(b"token=" + encoded + b";"))
    assert (identifier, expected) in matches or (urlsafe and (identifier, "base64") in matches)


@pytest.mark.timeout(60)
def test_base32_at_every_alignment(engine: str) -> None:
    matcher = matcher_for(engine)
    for shift in range(5):
        data = base64.b32encode(b"x" * shift + b"352099001761481" + b"yz")
        assert ("imei", "base32") in found(matcher.find(data))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("identifier", "digits"), [
    ("imei", "352099001761481"), ("imsi", "310260000000000"), ("iccid", "8901260000000000001"),
    ("phone", "49301234567"), ("phone", "0301234567"),
])
def test_bcd_and_integers_round_trip(engine: str, identifier: str, digits: str) -> None:
    matcher = matcher_for(engine)
    rng = random.Random(digits)
    assert (identifier, "bcd") in found(matcher.find(noise(rng, 30) + tbcd(digits) + noise(rng, 30)))
    for packed, name in ((struct.pack(">Q", int(digits)), "int64be"), (struct.pack("<Q", int(digits)), "int64le")):
        data = noise(rng, 30) + packed + noise(rng, 30)
        # small numbers are mostly zero bytes as int64: looked for only from 2**32 up
        assert ((identifier, name) in found(matcher.find(data))) == (int(digits) >= 1 << 32)


@pytest.mark.timeout(60)
def test_imei_mobile_identity_ie(engine: str) -> None:
    digits = "352099001761481"
    ie = bytes([int(digits[0]) << 4 | 1 << 3 | 2]) + tbcd(digits[1:])  # odd length, type IMEI
    assert ("imei", "bcd-mi") in found(matcher_for(engine).find(b"\x17\x08" + ie + b"\x00"))
    sv = "35209900176148" + "07"
    ie_sv = bytes([int(sv[0]) << 4 | 3]) + tbcd(sv[1:])  # even length, type IMEISV
    matches = [m for m in matcher_for(engine).find(b"\x17\x09" + ie_sv + b"\x00") if m.needle.form == "imeisv"]
    assert [m.needle.encoding for m in matches] == ["bcd-mi"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", [
    "IMEI: 35-209900-176148-1", "imei 35 209900 176148 1", "imeisv=3520990017614801;", "id=352099/00/176148/1",
])
def test_imei_written_for_humans(engine: str, text: str) -> None:
    assert ("imei", "plain") in found(matcher_for(engine).find(text.encode()))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", [
    "+49 30 1234567", "+49-30-123-4567", "0049(30)123 45 67", "tel:030/1234567", "030 123 45 67",
    "msisdn=4930 1234567&", "phone=%2B49301234567", "1234567 is not it, but 301234567 is",
])
def test_phone_forms(engine: str, text: str) -> None:
    assert ("phone", "plain") in found(matcher_for(engine).find(text.encode())) or \
        ("phone", "url") in found(matcher_for(engine).find(text.encode()))


US_PHONE = parse_identifiers({"phone": "+14155552671"}, source="test")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", [
    "(415) 555-2671", "+1 (415) 555-2671", "tel=1 (415) 555-2671&", "415.555.2671", "+1.415.555.2671",
])
def test_phone_written_the_north_american_way(engine: str, text: str) -> None:
    """A US number is usually written ``(415) 555-2671``: two separators in a row, or dots between groups."""
    assert ("phone", "plain") in found(matcher_for(engine, US_PHONE).find(text.encode()))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["0000000000000001", "00000000000f4240"])
def test_android_id_with_leading_zeros_is_no_small_number(engine: str, value: str) -> None:
    """An Android ID with many leading zeros (emulators, test builds) is a small decimal: ``1``, ``1000000``.
    Matching that would flag every ``HTTP/1.1``; the full value must still be found."""
    matcher = matcher_for(engine, parse_identifiers({"android_id": value}, source="test"))
    assert not found(matcher.find(b"GET /v1/items?page=1&limit=1000000 HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
    assert ("android_id", "plain") in found(matcher.find(b"aid=" + value.encode() + b"&"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", ["(415) 555-2672", "415..555..2671 is not", "(415)  555-2671"])
def test_phone_separators_do_not_stretch(engine: str, text: str) -> None:
    assert ("phone", "plain") not in found(matcher_for(engine, US_PHONE).find(text.encode()))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("text", "encoding"), [
    ('{"lat": 52.51634, "lng": 13.37771}', "plain"),
    ('{"lon":13.3771,"lat":52.5159}', "plain"),  # either order, 3-4 decimals, ~60 m off
    ("ll=52.517,13.378", "plain"),  # 3 decimals, rounded
    ("lat=52.5163&lon=13.3777", "plain"),
    ("lat=-33.8568&lon=151.2153", None),  # another point: must not match
    ('{"latE7": 525163421, "lngE7": 133777012}', "e7"),
    ("lat_e6=52516342,lon_e6=13377701", "e6"),
    ("$GPGGA,123519,5230.978,N,01322.662,E,1,08,0.9,545.4,M,46.9,M,,*47", "nmea"),
])
def test_location_text(engine: str, text: str, encoding: str | None) -> None:
    matches = matcher_for(engine).find(text.encode())
    locations = {m.needle.encoding for m in matches if m.needle.identifier == "location"}
    if encoding is None:
        assert not locations
    else:
        assert encoding in locations


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("fmt", "scale", "encoding"), [
    (">ii", 1e7, "e7-int32be"), ("<ii", 1e7, "e7-int32le"), (">ff", 1, "float32be"), ("<ff", 1, "float32le"),
    (">dd", 1, "float64be"), ("<dd", 1, "float64le"),
])
def test_location_binary(engine: str, fmt: str, scale: float, encoding: str) -> None:
    lat, lon = 52.51641, 13.37763  # ~15 m off
    values = (round(lat * scale), round(lon * scale)) if scale != 1 else (lat, lon)
    packed = struct.pack(fmt, *values)
    rng = random.Random(fmt)
    matches = matcher_for(engine).find(noise(rng, 21) + packed + noise(rng, 21))
    assert encoding in {m.needle.encoding for m in matches if m.needle.identifier == "location"}
    swapped = struct.pack(fmt, *reversed(values))  # lon first: still one location
    matches = matcher_for(engine).find(noise(rng, 21) + swapped + noise(rng, 21))
    assert encoding in {m.needle.encoding for m in matches if m.needle.identifier == "location"}


LAT_E7, LON_E7 = round(52.51641 * 1e7), round(13.37763 * 1e7)  # ~15 m off


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("payload", "encoding"), [
    # protobuf sfixed32 fields 17 and 18: two-byte tags, the field numbers differ
    (b"\x8d\x01" + struct.pack("<i", LAT_E7) + b"\x95\x01" + struct.pack("<i", LON_E7), "e7-int32le"),
    # Thrift binary i32 fields 1 and 2: type byte 0x08 and a 16-bit field id before each value
    (b"\x08\x00\x01" + struct.pack(">i", LAT_E7) + b"\x08\x00\x02" + struct.pack(">i", LON_E7), "e7-int32be"),
    # UBJSON object {"lat": float64, "lon": float64}: key, then the type marker D
    (b"i\x03latD" + struct.pack(">d", 52.51641) + b"i\x03lonD" + struct.pack(">d", 13.37763), "float64be"),
    # Thrift compact doubles (little-endian), field header delta 1, type 7
    (b"\x17" + struct.pack("<d", 52.51641) + b"\x17" + struct.pack("<d", 13.37763), "float64le"),
    # MessagePack {"latitude": float32, "longitude": float32}: 11 bytes of framing, the marker 0xca before each
    (b"\xa8latitude\xca" + struct.pack(">f", 52.51641) + b"\xa9longitude\xca" + struct.pack(">f", 13.37763),
     "float32be"),
])
def test_location_binary_across_serialisation_framing(engine: str, payload: bytes, encoding: str) -> None:
    """Framing between the two values is a serialisation's when it frames both alike (see the next test)."""
    rng = random.Random(encoding)
    matches = matcher_for(engine).find(noise(rng, 21) + payload + noise(rng, 21))
    assert encoding in {m.needle.encoding for m in matches if m.needle.identifier == "location"}


# --- no false positives -------------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_another_devices_values_do_not_match(engine: str) -> None:
    matcher = matcher_for(engine)
    rng = random.Random(7)
    for _, value in OTHER.values:
        for encoding, encode in TEXT_ENCODINGS.items():
            data = noise(rng, 20) + b" " + encode(value) + b" " + noise(rng, 20)
            assert not matcher.find(data), (value, encoding)
    other_location = b'{"lat": 48.85837, "lon": 2.29448}'
    assert not matcher.find(other_location)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", [
    "tac=35209900 model=SM-G973F",  # the 8-digit TAC alone
    "lat=52.5&lon=13.4",  # city level
    "lat=52.52&lon=13.38",  # 2 decimals: about 1 km
    "lat=52.5163",  # a latitude alone is not a location
    "price 52.5163 EUR" + " " * 300 + "13.3777 USD",  # lat and lon too far apart to be one location
    "13523520990017614812",  # the IMEI inside a longer number
    "0352099001761481",
    "id=90301234567",  # the national number inside a longer number
])
def test_near_misses_do_not_match(engine: str, text: str) -> None:
    matches = matcher_for(engine).find(text.encode())
    if text.startswith("price"):
        assert not [m for m in matches if m.needle.identifier == "location"]
    else:
        assert not matches, [(m.needle.identifier, m.needle.encoding, m.needle.form) for m in matches]


@pytest.mark.timeout(60)
def test_random_digits_in_bulk_text(engine: str) -> None:
    rng = random.Random(11)
    words = []
    for _ in range(60_000):
        words.append("".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20))))
        words.append(rng.choice([" ", ", ", ".", "\n", "-", ":", " lat ", "&lon="]))
    data = "".join(words).encode()
    assert not matcher_for(engine).find(data)


@pytest.mark.timeout(60)
def test_random_hex_base64_and_sparse_binary(engine: str) -> None:
    """Bulk tokens, hashes and zero-padded structs from other sources are not this device's identifiers."""
    rng = random.Random(13)
    matcher = matcher_for(engine)
    hex_text = b" ".join(rng.randbytes(rng.randint(4, 64)).hex().encode() for _ in range(20_000))
    b64_text = b"\n".join(base64.b64encode(rng.randbytes(rng.randint(4, 96))) for _ in range(15_000))
    sparse = bytes(b if rng.random() < 0.2 else 0 for b in rng.randbytes(1 << 20))
    for data in (hex_text, hex_text.upper(), b64_text, sparse):
        assert not matcher.find(data)


@pytest.mark.timeout(60)
def test_random_binary(engine: str) -> None:
    data = random.Random(5).randbytes(1 << 20)
    assert not matcher_for(engine).find(data)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layout", ["<iBi", "<iHi", "<i3si", "<i6si", "<iqi", ">iHi"])
def test_location_binary_in_a_packed_struct_with_a_field_between(engine: str, layout: str) -> None:
    """A packed struct (Java DataOutputStream, ByteBuffer, #pragma pack(1)) with an unframed field of any size up to
    12 bytes between latitude and longitude is a location: detection stays (the framing-only rule lost these)."""
    rng = random.Random(layout)
    middle = b"\x00" * struct.calcsize(layout[0] + layout[2:-1]) if "s" in layout else 7
    payload = struct.pack(layout, LAT_E7, middle, LON_E7)
    encoding = "e7-int32le" if layout[0] == "<" else "e7-int32be"
    matches = matcher_for(engine).find(noise(rng, 21) + payload + noise(rng, 21))
    assert encoding in {m.needle.encoding for m in matches if m.needle.identifier == "location"}


# --- engines and API ----------------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(CANONICAL), min_size=1, max_size=4), st.integers(0, 2**32))
def test_engines_agree(cases: list[tuple[str, str]], seed: int) -> None:
    if not hyperscan_available():
        pytest.skip("no hyperscan wheel")
    rng = random.Random(seed)
    parts = [noise(rng, rng.randint(0, 50))]
    for _, text in cases:
        encode = rng.choice(list(TEXT_ENCODINGS.values()))
        parts += [encode(text), noise(rng, rng.randint(1, 50))]
    data = b"".join(parts)
    fast = build_matcher(DEVICE, engine="hyperscan").find(data)
    slow = build_matcher(DEVICE, engine="python").find(data)
    assert [(m.needle, m.start, m.end) for m in fast] == [(m.needle, m.start, m.end) for m in slow]


def test_match_offsets_point_at_the_value(engine: str) -> None:
    data = b"xx imei=352099001761481 yy"
    matches = [m for m in matcher_for(engine).find(data) if m.needle.form == "imei"]
    assert matches and data[matches[0].start:matches[0].end] == b"352099001761481"


def test_memoryview_and_empty_input(engine: str) -> None:
    matcher = matcher_for(engine)
    assert matcher.find(b"") == []
    assert matcher.find(memoryview(b"imei=352099001761481"))


def test_overlap_covers_the_longest_needle() -> None:
    matcher = build_matcher(DEVICE)
    assert matcher.overlap >= max(len(n.pattern) for n in build_needles(DEVICE) if not n.regex)


def test_chunked_scanning_with_overlap(engine: str) -> None:
    """A value split across two chunks is found when the caller carries ``overlap`` bytes."""
    matcher = matcher_for(engine)
    data = b"a" * 5000 + b"imei=352099001761481" + b"b" * 5000
    chunk = 5010
    first, second = data[:chunk], data[chunk - matcher.overlap:]
    assert not [m for m in matcher.find(first) if m.needle.form == "imei"]
    assert ("imei", "plain") in found(matcher.find(second))


def test_build_matcher_is_cached() -> None:
    assert build_matcher(DEVICE) is build_matcher(DEVICE)


def test_engine_env_forces_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHONEHOME_MATCHER", "python")
    assert Matcher(build_needles(DEVICE)[:10]).engine == "python"


def test_empty_needles() -> None:
    assert Matcher([]).find(b"anything") == []


def test_location_needles_need_both_coordinates() -> None:
    only = Identifiers(values=(), locations=(Location(52.5163, 13.3777),))
    assert build_matcher(only).find(b"52.5163 13.3777")


@pytest.mark.timeout(120)
def test_throughput_printout(engine: str) -> None:
    """Not a timed assertion: prints MB/s on a no-hit buffer so regressions are visible in -s output."""
    matcher = matcher_for(engine)
    data = os.urandom(1 << 20)
    best = math.inf
    for _ in range(10 if engine == "hyperscan" else 2):
        start = time.process_time()  # CPU time: other jobs on a shared machine distort wall time
        matches = matcher.find(data)
        best = min(best, time.process_time() - start)
        assert matches == []
    print(f"\n{engine}: {len(matcher.needles)} needles, {len(data) / max(best, 1e-9) / 1e6:.0f} MB/s "
          "on random bytes (best CPU time of a 1 MiB find)")


def test_without_hyperscan_the_python_engine_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """ARM has no hyperscan wheel: asking for hyperscan there still gives a working matcher."""
    import sys

    monkeypatch.setitem(sys.modules, "hyperscan", None)  # import hyperscan -> ImportError
    monkeypatch.delenv("PHONEHOME_MATCHER", raising=False)
    assert not hyperscan_available()
    needles = build_needles(DEVICE)
    for engine in (None, "hyperscan"):
        matcher = Matcher(needles, engine=engine)
        assert matcher.engine == "python"
        assert ("imei", "plain") in found(matcher.find(b"imei=352099001761481"))
    with pytest.raises(ValueError, match="unknown matcher engine"):
        Matcher(needles, engine="grep")


@pytest.mark.parametrize("point", [(0.00012, -0.0003), (-33.8568, -70.6483), (64.1466, -21.9426)])
def test_locations_in_every_hemisphere(engine: str, point: tuple[float, float]) -> None:
    lat, lon = point
    ids = Identifiers(values=(), locations=(Location(lat, lon),))
    matcher = build_matcher(ids, engine=engine)
    near_lat, near_lon = lat + 0.0002, lon - 0.0002
    for text in (f'{{"lat":{near_lat:.5f},"lon":{near_lon:.5f}}}', f"{near_lon:.4f},{near_lat:.4f}"):
        assert matcher.find(text.encode()), text
    if abs(lat) > 1 and abs(lon) > 1:  # near 0, binary coordinates are not evidence (any small number)
        for fmt in ("<ii", ">ii"):
            assert matcher.find(struct.pack(fmt, round(near_lat * 1e7), round(near_lon * 1e7)))
    else:
        assert not matcher.find(random.Random(1).randbytes(1 << 16) + b"?>?>?>?>" * 1000)
    mirrored = f'{{"lat":{-lat - 0.01:.5f},"lon":{-lon - 0.01:.5f}}}'
    assert not matcher.find(mirrored.encode())


def test_two_nearby_locations_each_found(engine: str) -> None:
    ids = Identifiers(values=(), locations=(Location(52.5163, 13.3777), Location(52.5171, 13.3790)))
    matcher = build_matcher(ids, engine=engine)
    for lat, lon in ((52.5163, 13.3777), (52.5171, 13.3790)):
        assert matcher.find(f"lat={lat:.4f}&lon={lon:.4f}".encode())
