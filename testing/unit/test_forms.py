"""Canonical forms and needle construction: the pieces the matcher tests rely on, checked on their own."""

from __future__ import annotations

import base64
import math
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phonehome.identifiers import Identifiers, Location, parse_identifiers
from phonehome.scan.forms import (
    HASHES,
    LOCATION_RADIUS_M,
    MD2_S_TABLE,
    base32_middles,
    base58,
    base64_middles,
    binary_coordinate_patterns,
    build_needles,
    canonical_forms,
    decimal_prefixes,
    distance_m,
    md2,
    md4,
    mobile_identity,
    murmur3_32,
    murmur_texts,
    nmea_prefixes,
    parse_phone,
    phone_forms,
    tbcd,
    tolerance_deg,
)


@pytest.mark.parametrize(("value", "country", "national"), [
    ("+49 30 1234567", "49", "301234567"),
    ("0049301234567", "49", "301234567"),
    ("+1 (555) 123-4567", "1", "5551234567"),
    ("+7 912 345 67 89", "7", "9123456789"),
    ("+39 06 1234 5678", "39", "0612345678"),
    ("+358 40 1234567", "358", "401234567"),
    ("030 1234567", None, "301234567"),
])
def test_parse_phone(value: str, country: str | None, national: str) -> None:
    number = parse_phone(value)
    assert (number.country_code, number.national) == (country, national)


def test_phone_forms_cover_e164_national_and_00() -> None:
    texts = {form.name: form.text for form in phone_forms("+49 30 1234567")}
    assert texts["e164"] == "+49301234567"
    assert texts["intl-00"] == "0049301234567"
    assert texts["cc-digits"] == "49301234567"
    assert texts["national"] == "0301234567"
    assert texts["nsn"] == "301234567"
    assert texts["as-given"] == "+49 30 1234567"
    italy = {form.name: form.text for form in phone_forms("+39 06 1234 5678")}
    assert italy["nsn"] == "0612345678" and "national" not in italy  # Italy keeps its 0, no trunk prefix
    usa = {form.name: form.text for form in phone_forms("+1 555 123 4567")}
    assert usa["nsn"] == "5551234567" and "national" not in usa  # NANP trunk "1" is the country code


def test_mac_forms_all_separators_and_cases() -> None:
    texts = {form.text for form in canonical_forms("wifi_mac", "ac:37:43:4d:5e:6f")}
    assert {"ac:37:43:4d:5e:6f", "AC-37-43-4D-5E-6F", "ac37434d5e6f", "AC37434D5E6F", "ac37.434d.5e6f"} <= texts


def test_gaid_and_android_id_forms() -> None:
    gaid = {form.text for form in canonical_forms("gaid", "38400000-8cf0-11bd-b23e-10b96e40000d")}
    assert "384000008cf011bdb23e10b96e40000d" in gaid and "38400000-8CF0-11BD-B23E-10B96E40000D" in gaid
    android = {form.name: form.text for form in canonical_forms("android_id", "0774d56d682e549c")}
    assert android["android_id-short"] == "774d56d682e549c"
    assert android["android_id-decimal"] == str(int("0774d56d682e549c", 16))


def test_imei_forms_and_no_tac() -> None:
    forms = {form.name: form.text for form in canonical_forms("imei", "352099001761481")}
    assert forms == {"imei": "352099001761481", "imei-14": "35209900176148"}
    needles = build_needles(Identifiers(values=(("imei", "352099001761481"),)))
    assert not [n for n in needles if not n.regex and n.pattern == b"35209900"]


def test_tbcd_and_mobile_identity() -> None:
    assert tbcd("12345") == bytes.fromhex("2143f5")
    assert tbcd("3520990017614810") == bytes.fromhex("5302990071168401")
    assert mobile_identity("352099001761481", 2) == bytes([0x3A]) + tbcd("52099001761481")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=6, max_size=40), st.binary(max_size=7), st.binary(max_size=7))
def test_base64_middle_is_inside_any_embedding(value: bytes, before: bytes, after: bytes) -> None:
    middles = base64_middles(value)
    encoded = base64.b64encode(before + value + after)
    assert any(m in encoded for m in middles)
    url = base64.urlsafe_b64encode(before + value + after)
    assert any(m in url for m in base64_middles(value, urlsafe=True))
    b32 = base64.b32encode(before + value + after)
    assert any(m in b32 for m in base32_middles(value))


def test_base58_known_vector() -> None:
    assert base58(b"hello world") == b"StV1DL6CwTryKyV"
    assert base58(b"\x00\x00abc") == b"11ZiCa"


def test_md2_md4_rfc_vectors() -> None:
    assert md2(b"").hex() == "8350e5a3e24c153df2275c9f80692773"
    assert md2(b"message digest").hex() == "ab4f496bfb2a530b219ff33031fe06b0"
    assert md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"
    assert md4(b"message digest").hex() == "d9130a8164549fe818874806e1c7014b"
    assert md4(b"a" * 200) != md4(b"a" * 201)


def _pi_digits(count: int) -> list[int]:
    """Decimal digits of pi (Gibbons' spigot)."""
    q, r, t, k, n, m = 1, 0, 1, 1, 3, 3
    out: list[int] = []
    while len(out) < count:
        if 4 * q + r - t < n * t:
            out.append(n)
            q, r, t, k, n, m = 10 * q, 10 * (r - n * t), t, k, (10 * (3 * q + r)) // t - 10 * n, m
        else:
            q, r, t, k, n, m = q * k, (2 * q + r) * m, t * m, k + 1, (q * (7 * k + 2) + r * m) // (t * m), m + 2
    return out


def test_md2_table_is_rfc1319_pi_permutation() -> None:
    """The constant table is the one RFC 1319 derives from pi (rejection-sampled digits shuffle 0..255)."""
    digits = iter(_pi_digits(800))

    def rand(n: int) -> int:
        x, y = next(digits), 10
        if n > 10:
            x, y = x * 10 + next(digits), 100
        if n > 100:
            x, y = x * 10 + next(digits), 1000
        return x % n if x < n * (y // n) else rand(n)

    table = list(range(256))
    for i in range(2, 257):
        j = rand(i)
        table[j], table[i - 1] = table[i - 1], table[j]
    assert bytes(table) == MD2_S_TABLE
    assert MD2_S_TABLE[:4] == bytes([41, 46, 67, 201])  # RFC 1319's first entries


def test_murmur3_reference_values() -> None:
    """The values the python ``mmh3`` package documents, which LeakDetector sends through ``str()``."""
    assert murmur_texts(b"foo") == {
        "mmh3_32": "-156908512", "mmh3_64_1": "-2129773440516405919", "mmh3_64_2": "9128664383759220103",
        "mmh3_128": "168394135621993849475852668931176482145",
    }
    assert murmur3_32(b"", 1) == 0x514E28B7
    assert murmur3_32(b"Hello, world!", 1234) == 0xFAF6CDB3


def test_hash_list_covers_the_issue() -> None:
    assert {"md5", "sha1", "sha224", "sha256", "sha384", "sha512"} <= set(HASHES)


def test_needles_are_unique_and_named() -> None:
    ids = parse_identifiers({"imei": "352099001761481", "wifi_mac": "ac:37:43:4d:5e:6f",
                             "phone": "+49 30 1234567", "location": {"lat": 52.5163, "lon": 13.3777}},
                            source="test")
    needles = build_needles(ids)
    keys = [(n.pattern, n.caseless, n.regex) for n in needles]
    assert len(keys) == len(set(keys))
    assert {n.identifier for n in needles} == {"imei", "wifi_mac", "phone", "location"}
    for needle in needles:
        if needle.regex:
            re.compile(needle.pattern)
        assert needle.encoding and needle.form


@settings(max_examples=300, deadline=None)
@given(st.floats(-89.9, 89.9), st.floats(-179.9, 179.9), st.floats(0, 2 * math.pi), st.floats(0, 0.99))
def test_prefixes_cover_every_point_within_the_radius(lat: float, lon: float, angle: float, frac: float) -> None:
    truth = Location(lat, lon)
    dlat, dlon = tolerance_deg(truth)
    near = Location(lat + math.sin(angle) * dlat * frac, lon + math.cos(angle) * dlon * frac)
    assert distance_m(truth, near) <= LOCATION_RADIUS_M * 1.01
    for value, axis_lo, axis_hi, width in ((near.lat, lat - dlat, lat + dlat, 2),
                                           (near.lon, lon - dlon, lon + dlon, 3)):
        text = f"{value:.6f}"
        assert any(text.startswith(p) for p in decimal_prefixes(axis_lo, axis_hi))
        # as an NMEA writer does: minutes rounded first, a carry of 60 minutes goes to the degrees
        whole, minutes = divmod(round(abs(value) * 60, 6), 60)
        nmea = f"{int(whole):0{width}d}{minutes:09.6f}"
        assert any(nmea.startswith(p) for p in nmea_prefixes(axis_lo, axis_hi, width)), nmea
        patterns = dict(binary_coordinate_patterns(axis_lo, axis_hi))
        packed = {
            "e7-int32be": struct.pack(">i", round(value * 1e7)), "e7-int32le": struct.pack("<i", round(value * 1e7)),
            "float32be": struct.pack(">f", value), "float64le": struct.pack("<d", value),
        }
        for encoding, raw in packed.items():
            matching = [p for p, e in binary_coordinate_patterns(axis_lo, axis_hi) if e == encoding]
            assert any(re.fullmatch(p, raw, re.DOTALL) for p in matching), (encoding, value)
        assert patterns


def test_city_level_prefixes_do_not_exist() -> None:
    truth = Location(52.5163, 13.3777)
    dlat, _ = tolerance_deg(truth)
    assert not any(p.startswith("52.5") and len(p) < 6 for p in decimal_prefixes(52.5163 - dlat, 52.5163 + dlat))
