"""Firmware profiles: the documented format, its validation errors, templates and encodings (pure, no network)."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phonehome.errors import InputError
from phonehome.identifiers import Identifiers, Location, parse_identifiers
from phonehome.virtual import fakenet
from phonehome.virtual.firmware import (
    EVENTS,
    Template,
    dns_query_packet,
    http_request_bytes,
    load_profile,
    missing_identifiers,
    parse_dns_response,
    render,
)

FIRMWARE_DIR = Path(__file__).parents[2] / "fixtures" / "firmware"
SHIPPED = ("nokia7plus-2019", "nokia7plus-fixed", "adsdk", "clean")
IDS = parse_identifiers({
    "imei": ["352099001761481", "352099001761499"], "imsi": "242017100000001", "iccid": "8947080012345678901",
    "serial": "B2NGAA8801234567", "phone": "+47 912 34 567", "android_id": "9774d56d682e549c",
    "gaid": "38400000-8cf0-11bd-b23e-10b96e40000d", "wifi_mac": "ac:37:43:4d:5e:6f",
    "location": {"lat": 59.9127, "lon": 10.7461},
    "cell": [{"mcc": "242", "mnc": "01", "lac": 3011, "cid": 27115023}, {"bsid": 3721}],
    "wifi": {"bssid": "ac:37:43:00:11:22", "ssid": "Oslo-Gjest"},
}, source="test")
NOW = 1_700_000_000.5


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


def one_request(tmp_path: Path, request: str, event: str = "boot_completed") -> Path:
    body = "\n".join("      " + line for line in request.strip().splitlines())
    return write(tmp_path, f"profile: 1\nname: t\nrules:\n  - event: {event}\n    requests:\n      -{body[7:]}\n")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_load_and_fit_a_full_identifier_set(name: str) -> None:
    profile = load_profile(FIRMWARE_DIR / f"{name}.yaml")
    assert profile.name == name
    assert profile.description
    assert missing_identifiers(profile, IDS) == []
    for request in profile.requests():
        rendered = render(request, IDS, NOW)
        assert rendered.host and "{" not in rendered.host


def _rendered_texts(name: str, event: str) -> list[tuple[str, str, bytes]]:
    profile = load_profile(FIRMWARE_DIR / f"{name}.yaml")
    out = []
    for rule in profile.rules:
        if rule.event == event:
            for request in rule.requests:
                r = render(request, IDS, NOW)
                out.append((r.protocol, r.host, http_request_bytes(r) if r.protocol in ("http", "https") else r.body))
    return out


@pytest.mark.parametrize("event", ["boot_completed", "screen_on", "unlocked"])
def test_the_nokia_incident_posts_position_serial_number_and_sim_in_cleartext_on_each_event(event: str) -> None:
    sent = _rendered_texts("nokia7plus-2019", event)
    assert sent, f"nothing sent on {event}"
    protocol, host, data = sent[0]
    assert protocol == "http"
    assert host.endswith(".example") and "vnet" in host  # a look-alike under a reserved domain
    for value in ("59.9127", "10.7461", IDS.get("serial")[0], IDS.get("phone")[0], IDS.get("imsi")[0],
                  IDS.get("iccid")[0]):
        assert value.encode() in data, value


def test_the_nokia_incident_also_sends_the_clients_base64_json_shape() -> None:
    """NRK's capture: Base64 of a JSON body labelled ``application/encrypted-json``, with the serving cell."""
    for event in ("boot_completed", "screen_on", "unlocked"):
        raw = next(data for _, _, data in _rendered_texts("nokia7plus-2019", event)
                   if b"application/encrypted-json" in data)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"\r\nContent-Type: application/encrypted-json" in head
        fields = json.loads(base64.b64decode(body, validate=True))
        assert list(fields) == ["IMEI1", "IMEI2", "SIM1ICCID", "SIM1LTEIMSI", "MACID", "SIM1CELLID", "BASEID"]
        assert fields["IMEI2"] == IDS.get("imei")[1]
        assert (fields["SIM1CELLID"], fields["BASEID"]) == ("27115023", "3721")


def test_cell_and_wifi_fields_render_and_are_checked(tmp_path: Path) -> None:
    path = one_request(tmp_path, """
- protocol: http
  host: api.example.com
  path: "/c/{cell.mcc}-{cell.mnc}-{cell.lac}-{cell.cid}/{wifi.bssid|nocolon}/{wifi.ssid|url}"
""")
    profile = load_profile(path)
    assert render(next(iter(profile.requests())), IDS, NOW).target == "/c/242-01-3011-27115023/ac3743001122/Oslo-Gjest"
    no_lac = parse_identifiers({"cell": {"cid": 5}}, source="t")
    assert missing_identifiers(profile, no_lac) == [
        "rules[0].requests[0]: {cell.mcc}", "rules[0].requests[0]: {cell.mnc}", "rules[0].requests[0]: {cell.lac}",
        "rules[0].requests[0]: {wifi.bssid}", "rules[0].requests[0]: {wifi.ssid}"]


def test_the_fixed_nokia_talks_tls_only() -> None:
    profile = load_profile(FIRMWARE_DIR / "nokia7plus-fixed.yaml")
    assert {request.protocol for request in profile.requests()} <= {"https", "tls"}
    assert {rule.event for rule in profile.rules} >= {"boot_completed", "screen_on", "unlocked"}


def test_the_ad_sdk_hides_identifiers_in_hashes_base64_dns_labels_and_urls() -> None:
    sent = [item for event in (*EVENTS, "periodic") for item in _rendered_texts("adsdk", event)]
    dns = [host for protocol, host, _ in sent if protocol == "dns"]
    assert dns == [hashlib.md5(IDS.get("android_id")[0].encode()).hexdigest() + ".t.adsdk-metrics.example"]
    blob = b"".join(data for _, _, data in sent)
    assert hashlib.md5(IDS.get("imei")[0].encode()).hexdigest().encode() in blob
    assert base64.b64encode(IDS.get("gaid")[0].encode()) in blob
    assert b"/v1/ad/59.9127,10.7461/banner" in blob
    for name in ("imei", "android_id", "gaid", "imsi", "serial"):
        assert IDS.get(name)[0].encode() not in blob, f"{name} is sent as-is"


def test_the_clean_phone_sends_no_identifier_at_all() -> None:
    profile = load_profile(FIRMWARE_DIR / "clean.yaml")
    assert profile.placeholders() == ()


def test_host_names_and_ports_for_the_fake_internet() -> None:
    profile = load_profile(FIRMWARE_DIR / "adsdk.yaml")
    assert "*.t.adsdk-metrics.example" in profile.host_names()
    assert ("tcp", 1883) in profile.ports() and ("tcp", 80) in profile.ports()


# --- templates -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("{imei}", "352099001761481"),
    ("{imei[1]}", "352099001761499"),
    ("{imei|md5}", hashlib.md5(b"352099001761481").hexdigest()),
    ("{imei|sha256|upper}", hashlib.sha256(b"352099001761481").hexdigest().upper()),
    ("{serial|base64}", base64.b64encode(b"B2NGAA8801234567").decode()),
    ("{serial|hex}", b"B2NGAA8801234567".hex()),
    ("{phone|digits}", "4791234567"),
    ("{phone|url}", urllib.parse.quote("+47 912 34 567", safe="")),
    ("{wifi_mac|nocolon|upper}", "AC37434D5E6F"),
    ("{location.lat},{location.lon}", "59.9127,10.7461"),
    ("{{literal}} {timestamp}", "{literal} 1700000000"),
    ('{{"ts":{timestamp_ms}}}', '{"ts":1700000000500}'),
])
def test_template_rendering(text: str, expected: str) -> None:
    assert Template.parse(text, source="p.yaml", where="x").render(IDS, NOW) == expected


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=4, max_size=40))
def test_encodings_round_trip_any_custom_value(value: str) -> None:
    ids = Identifiers(values=(("account", value),), locations=(Location(1.5, -2.25),))
    rendered = Template.parse("{account|base64}|{account|url}|{account|hex}", source="p", where="x").render(ids, 0)
    b64, url, hexed = rendered.split("|")
    assert base64.b64decode(b64).decode() == value
    assert urllib.parse.unquote(url) == value
    assert bytes.fromhex(hexed).decode() == value


def test_json_bodies_are_rendered_as_json(tmp_path: Path) -> None:
    path = one_request(tmp_path, """
- protocol: http
  host: api.example.com
  json: {imei: "{imei}", pos: ["{location.lat}"], n: 3}
""")
    request = next(iter(load_profile(path).requests()))
    rendered = render(request, IDS, NOW)
    assert rendered.method == "POST"
    assert json.loads(rendered.body) == {"imei": "352099001761481", "pos": ["59.9127"], "n": 3}
    raw = http_request_bytes(rendered)
    assert raw.startswith(b"POST / HTTP/1.1\r\nHost: api.example.com\r\n")
    assert f"Content-Length: {len(rendered.body)}".encode() in raw


# --- validation: one line naming the file, line and field, and the fix ---------------------------------------


@pytest.mark.parametrize(("request_yaml", "field", "words"), [
    ("- protocol: gopher\n  host: a.example", "protocol", "unknown protocol"),
    ("- protocol: http\n  host: a.example\n  colour: red", "colour", "unknown field"),
    ("- protocol: http\n  host: a.example\n  path: '/{imei|rot13}'", "path", "unknown encoding"),
    ("- protocol: http\n  host: a.example\n  path: '/{imei'", "path", "unbalanced brace"),
    ("- protocol: http\n  host: a.example\n  path: '/{location.alt}'", "path", "bad placeholder"),
    ("- protocol: tcp\n  host: a.example", "port", "needs a port"),
    ("- protocol: http\n  host: a.example\n  port: 70000", "port", "1-65535"),
    ("- protocol: dns\n  host: '{imei}'", "host", "fixed zone"),
    ("- protocol: http\n  host: 'bad_host!'", "host", "not a host name"),
    ("- protocol: tcp\n  host: 8.8.8.8\n  port: 53", "host", "outside the lab's fake internet"),
    ("- protocol: http\n  host: a.example\n  path: nope", "path", "starts with '/'"),
    ("- protocol: udp\n  host: a.example\n  port: 9\n  method: GET", "method", "does not apply"),
    ("- protocol: http\n  host: a.example\n  path: '/{cell.lat}'", "path", "bad placeholder"),
    ("- protocol: http\n  host: a.example\n  json: {a: 1}\n  body_encoding: rot13", "body_encoding",
     "unknown body encoding"),
    ("- protocol: http\n  host: a.example\n  body_encoding: base64", "body_encoding", "needs a body"),
])
def test_bad_requests_name_file_line_and_field(tmp_path: Path, request_yaml: str, field: str, words: str) -> None:
    path = one_request(tmp_path, request_yaml)
    with pytest.raises(InputError) as excinfo:
        load_profile(path)
    message = str(excinfo.value)
    assert str(path) in message and words in message and "line " in message, message
    assert f"rules[0].requests[0].{field}" in message, message
    assert "\n" not in message


@pytest.mark.parametrize(("text", "words"), [
    ("name: t\nrules: []\n", "format version"),
    ("profile: 1\nname: t\nrules:\n  - on: boot_completed\n    requests: []\n", "YAML reads"),
    ("profile: 1\nname: t\nrules:\n  - event: reboot\n    requests: []\n", "unknown event"),
    ("profile: 1\nname: t\nrules:\n  - event: periodic\n    requests: [{protocol: dns, host: a.example}]\n",
     "needs 'every_s'"),
    ("profile: 1\nname: t\nrules:\n  - event: unlocked\n", "non-empty 'requests'"),
    ("profile: 1\nname: t\nrules: {}\n", "must be a list"),
    ("profile: 1\nname: t\nrules: [\n", "not valid YAML"),
])
def test_bad_profiles_say_what_to_fix(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        load_profile(write(tmp_path, text))


def test_missing_profile_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_profile(tmp_path / "nope.yaml")


def test_a_phone_without_the_identifier_a_profile_needs_is_named(tmp_path: Path) -> None:
    profile = load_profile(FIRMWARE_DIR / "nokia7plus-2019.yaml")
    thin = parse_identifiers({"imei": "352099001761481", "serial": "B2NGAA8801234567"}, source="t")
    missing = missing_identifiers(profile, thin)
    assert any("{imsi}" in item for item in missing)
    assert any("{location.lat}" in item for item in missing)
    assert not any("{serial}" in item for item in missing)
    assert any("{cell.bsid[1]}" in item for item in missing)


# --- the DNS the runner speaks is the DNS the fake internet answers -----------------------------------------------


@pytest.mark.parametrize(("name", "rcode", "answers"), [
    ("zzhc.vnet-cn.example", 0, ["198.18.0.7"]),
    ("ABC.t.ads.example", 0, ["198.18.0.9"]),
    ("unknown.example", 3, []),
])
def test_dns_query_and_answer_round_trip(name: str, rcode: int, answers: list[str]) -> None:
    hosts = {"zzhc.vnet-cn.example": "198.18.0.7", "*.t.ads.example": "198.18.0.9"}
    reply, question, _ = fakenet.dns_answer(dns_query_packet(name, 0x4242), hosts)
    assert question.name == name
    assert parse_dns_response(reply, 0x4242) == (rcode, answers)


def test_the_documented_example_profile_is_valid(tmp_path: Path) -> None:
    """docs/firmware-profiles.md shows the format with a full example: it must load as written."""
    doc = (Path(__file__).parents[2] / "docs" / "firmware-profiles.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    profile = load_profile(write(tmp_path, example))
    assert profile.name == "my-phone-2024"
    assert {rule.event for rule in profile.rules} == {"boot_completed", "periodic"}
    request = profile.rules[0].requests[0]
    rendered = render(request, IDS, NOW)
    assert rendered.target == "/register?imei=352099001761481"
    assert json.loads(rendered.body) == {"serial": "B2NGAA8801234567", "lat": "59.9127"}
