"""The identifiers schema: validation, normalisation, errors that point at the line, masking, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from phonehome.errors import InputError
from phonehome.identifiers import (
    IDENTIFIER_KEYS,
    Identifiers,
    Location,
    identifiers_loader,
    load_identifiers,
    mask,
    parse_identifiers,
)

FULL_YAML = """\
imei: 352099001761481
imsi: "310260000000000"
iccid: 8901260000000000000
serial: R58M12ABCDE
phone: 0301234567
android_id: 9774D56D682E549C
gaid: 38400000-8CF0-11BD-B23E-10B96E40000D
wifi_mac: "AC:37:43:4D:5E:6F"
bt_mac: [ac-37-43-4d-5e-70, ac37434d5e71]
location:
  - {lat: 52.5163, lon: 13.3777}
  - {lat: -33.8568, lon: "151.2153"}
custom:
  account: alice@example.org
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "IDS.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_full_file_is_normalised(tmp_path: Path) -> None:
    ids = load_identifiers(write(tmp_path, FULL_YAML))
    assert ids.get("imei") == ("352099001761481",)
    assert ids.get("phone") == ("0301234567",)  # not an octal number, kept as given
    assert ids.get("android_id") == ("9774d56d682e549c",)
    assert ids.get("gaid") == ("38400000-8cf0-11bd-b23e-10b96e40000d",)
    assert ids.get("wifi_mac") == ("ac:37:43:4d:5e:6f",)
    assert ids.get("bt_mac") == ("ac:37:43:4d:5e:70", "ac:37:43:4d:5e:71")
    assert ids.get("account") == ("alice@example.org",)
    assert ids.locations == (Location(52.5163, 13.3777), Location(-33.8568, 151.2153))
    assert ids.names() == (*IDENTIFIER_KEYS, "account", "location")
    assert not ids.is_empty()


def test_to_mapping_round_trips(tmp_path: Path) -> None:
    ids = load_identifiers(write(tmp_path, FULL_YAML))
    dumped = yaml.safe_dump(ids.to_mapping(), sort_keys=False)
    again = parse_identifiers(yaml.load(dumped, Loader=identifiers_loader()), source="again")
    assert again == ids


def test_merged_is_a_union_without_duplicates() -> None:
    a = Identifiers(values=(("imei", "352099001761481"),), locations=(Location(1.0, 2.0),))
    b = Identifiers(values=(("imei", "352099001761481"), ("imsi", "310260000000000")),
                    locations=(Location(1.0, 2.0), Location(3.0, 4.0)))
    merged = a.merged(b)
    assert merged.values == (("imei", "352099001761481"), ("imsi", "310260000000000"))
    assert merged.locations == (Location(1.0, 2.0), Location(3.0, 4.0))
    assert Identifiers(values=()).is_empty()


def test_plain_safe_load_integers_are_accepted() -> None:
    ids = parse_identifiers(yaml.safe_load("imei: 352099001761481"), source="devices.yaml",
                            where="devices[0].identifiers")
    assert ids.get("imei") == ("352099001761481",)


@pytest.mark.parametrize(("text", "needle"), [
    ("imie: 352099001761481\n", "line 1, imie: unknown identifier 'imie'"),
    ("imei: 35209900176148\n", "line 1, imei: IMEI must be 15 digits, got 14"),
    ("imei: 3520990017614x1\n", "imei: IMEI must be digits"),
    ("imsi: 1234\n", "IMSI must be 14 or 15 digits"),
    ("wifi_mac: ac:37:43:4d:5e\n", "wifi_mac: MAC address"),
    ("gaid: 1234\n", "gaid: gaid"),
    ("phone: call me\n", "phone: phone number"),
    ("android_id: xyz\n", "must be 8-16 hex digits"),
    ("serial: ab\n", "serial"),
    ("imei:\n  - 352099001761481\n  - 1\n", "line 3, imei[1]: IMEI must be 15 digits"),
    ("location: {lat: 91, lon: 0}\n", "location.lat: coordinate must be a number in [-90, 90]"),
    ("location: {lat: 1}\n", "location: a location needs exactly 'lat' and 'lon'"),
    ("location: {lat: 0, lon: 0.0}\n", "location: lat 0, lon 0 is where an unset location points"),
    ("location:\n  - {lat: 1, lon: 2}\n  - {lat: 1, lon: east}\n", "line 3, location[1].lon"),
    ("custom: {imei: 352099001761481}\n", "custom.imei: bad custom name"),
    ("custom: {x: ab}\n", "custom.x: custom value for 'x' is shorter"),
    ("custom: []\n", "custom must be a non-empty mapping"),
    ("imei: [[1]]\n", "imei[0]: expected a string, got a list"),
    ("- imei\n", "identifiers must be a mapping, not a list"),
    ("imei: [352099001761481\n", "YAML syntax error"),
    ("", "identifiers file is empty"),
    ("imei: []\n", "imei: empty list"),
    ("gaid: 00000000-0000-0000-0000-000000000000\n", "gaid: gaid is all zeros"),
    ("wifi_mac: '02:00:00:00:00:00'\n", "wifi_mac: MAC address is the placeholder"),
    ("bt_mac: 000000000000\n", "bt_mac: MAC address is the placeholder"),
    ("android_id: '0000000000000000'\n", "android_id: android_id is all zeros"),
])
def test_bad_input_is_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as excinfo:
        load_identifiers(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert needle in message
    assert excinfo.value.fix  # always says what to do


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"line 3: .*flow sequence at line 2"):
        load_identifiers(write(tmp_path, "imei: '352099001761481'\nimsi: [1, 2\n"))


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="identifiers file not found"):
        load_identifiers(tmp_path / "nope.yaml")


def test_parse_uses_the_given_prefix() -> None:
    with pytest.raises(InputError, match=r"devices\[2\]\.identifiers\.foo: unknown identifier 'foo'"):
        parse_identifiers({"foo": "bar"}, source="devices.yaml", where="devices[2].identifiers")


def test_errors_never_show_the_identifier_in_clear() -> None:
    with pytest.raises(InputError) as excinfo:
        parse_identifiers({"imei": "35209900176148X"}, source="x")
    assert "35209900176148X" not in str(excinfo.value)


@pytest.mark.parametrize(("value", "masked"), [
    ("352099001761481", "35***********81"),
    ("ac:37:43:4d:5e:6f", "ac*************6f"),
    ("abcdef", "a****f"),
    ("abcd", "****"),
    ("", ""),
])
def test_mask(value: str, masked: str) -> None:
    assert mask(value) == masked


@given(st.text(max_size=60))
def test_mask_never_reveals_more_than_four_characters(value: str) -> None:
    masked = mask(value)
    assert len(masked) == len(value)
    assert sum(a == b for a, b in zip(masked, value, strict=True) if b != "*") <= min(4, len(value) // 3 + 2)


_yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from([*IDENTIFIER_KEYS, "location", "custom", "lat", "lon", "x", "name"]) | st.text(max_size=5),
        inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_yaml_values)
def test_fuzz_parse_identifiers_raises_only_input_error(data: object) -> None:
    try:
        ids = parse_identifiers(data, source="fuzz")
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        again = parse_identifiers(ids.to_mapping(), source="again")
        assert set(again.values) == set(ids.values)  # custom names move after the standard keys
        assert again.locations == ids.locations


_digits = st.text(alphabet="0123456789", min_size=15, max_size=15)
_mac = st.binary(min_size=6, max_size=6).filter(lambda b: b.rstrip(b"\0") not in (b"", b"\2")).map(lambda b: "-".join(f"{x:02X}" for x in b))
_point = st.fixed_dictionaries({"lat": st.floats(-90, 90), "lon": st.floats(-180, 180)}).filter(
    lambda point: (point["lat"], point["lon"]) != (0.0, 0.0))  # where an unset location points: refused


@settings(max_examples=100, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "imei": st.lists(_digits, min_size=1, max_size=3), "imsi": _digits, "wifi_mac": _mac,
    "gaid": st.uuids().filter(lambda u: u.int != 0).map(str), "serial": st.text(alphabet="ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=4,
                                                   max_size=20),
    "location": st.lists(_point, min_size=1, max_size=3),
    "custom": st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
        lambda n: n not in IDENTIFIER_KEYS and n not in ("location", "custom")),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz@.0123456789", min_size=4, max_size=30), min_size=1, max_size=3),
}))
def test_valid_identifiers_round_trip(data: dict[str, object]) -> None:
    ids = parse_identifiers(data, source="gen")
    again = parse_identifiers(ids.to_mapping(), source="again")
    assert set(again.values) == set(ids.values)
    assert again.locations == ids.locations
    assert again.merged(ids) == again


def test_a_key_given_twice_is_an_error_naming_its_line(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys; a second `imei:` would silently replace the first one."""
    ids = tmp_path / "ids.yaml"
    ids.write_text('imei: "352099001761481"\nserial: ABC123\nimei: "490154203237518"\n', encoding="utf-8")
    with pytest.raises(InputError) as excinfo:
        load_identifiers(ids)
    message = str(excinfo.value)
    assert message.startswith(f"{ids}: line 3, imei: duplicate key 'imei'")
    assert "keep one of them" in message
