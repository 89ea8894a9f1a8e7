"""The ``cell`` and ``wifi`` identifier kinds of issue 10: the serving cell and the Wi-Fi network say where the
phone is. Each spelling is encoded, sent in a capture, scanned and found with the right encoding; a short number
(an area code, a GSM cell id, a base-station id) is found only beside its key or its partner, never alone or
inside an unrelated number."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from phonehome.errors import InputError
from phonehome.identifiers import Cell, Wifi, parse_identifiers
from phonehome.scan.matcher import build_matcher, hyperscan_available
from phonehome.scan.scanner import scan_capture
from phonehome.testing.captures import CaptureBuilder

LTE = {"mcc": "460", "mnc": "00", "tac": 4136, "cid": 19695115}  # cid 0x12c860b
GSM = {"mcc": "262", "mnc": "01", "lac": 21013, "cid": 40231}
CDMA = {"bsid": 3721}
WIFI = {"bssid": "AC:37:43:4D:5E:70", "ssid": "Kreuzberg-Gast"}
INCIDENT_JSON = base64.b64encode(json.dumps({"IMEI1": "x", "SIM1CELLID": "19695115"}).encode()).decode()

FOUND = [
    ("cid=19695115", "cell", "plain"),
    (f"c={base64.b64encode(b'19695115').decode()}", "cell", "base64"),
    (f"h={hashlib.sha256(b'19695115').hexdigest()}", "cell", "sha256"),
    (INCIDENT_JSON, "cell", "base64"),  # the 2019 client's Base64 JSON body
    ('{"cellId":"0x12C860B"}', "cell", "plain"),
    ("cgi=460-00-4136-19695115", "cell", "plain"),
    ("cgi=46000-4136-19695115", "cell", "plain"),  # MCC and MNC run together
    ("cgi=460_00_1028_12c860b", "cell", "plain"),  # area and cell in hex
    ("cgi=262-01-21013-40231", "cell", "plain"),  # a GSM cell: short numbers, combined
    ('{"lac":21013,"ci":40231}', "cell", "plain"),
    ("LAC=5215 CID=9D27", "cell", "plain"),  # GSM in hex, beside each other
    ("BASEID=3721", "cell", "plain"),
    ('{"tac": 4136}', "cell", "plain"),
    ("ap=ac:37:43:4d:5e:70", "wifi", "plain"),
    ("ap=AC-37-43-4D-5E-70", "wifi", "plain"),
    ("ap=ac37434d5e70", "wifi", "plain"),
    (f"ap={base64.b64encode(b'ac:37:43:4d:5e:70').decode()}", "wifi", "base64"),
    ("ssid=Kreuzberg-Gast", "wifi", "plain"),
    ("ssid=Kreuzberg%2DGast&x=1", "wifi", "url"),  # quote() leaves '-' alone; some clients do not
    (f"s={b'Kreuzberg-Gast'.hex()}", "wifi", "hex"),
    (f"s={hashlib.md5(b'Kreuzberg-Gast').hexdigest()}", "wifi", "md5"),
]

NOT_FOUND = [
    "n=196951150",  # the cell id's digits inside a longer number
    "id=4196951152",
    "len=21013" + "&x=1" * 20 + "&port=40231",  # nothing ties them: two ordinary numbers apart
    "t=4136 ms",  # the area code alone
    "v=3721",  # the base-station id alone
    "seq=40231",  # a GSM cell id alone
    "cid=196951150",  # keyed, but another number
    "mcc=460&mnc=00",  # the operator alone says the country, not where the phone is
    "ssid=Kreuzberg",
]


def _ids() -> dict[str, object]:
    return {"cell": [LTE, GSM, CDMA], "wifi": WIFI}


def _scan(tmp_path: Path, payload: str) -> set[tuple[str, str]]:
    cap = CaptureBuilder()
    cap.udp("10.0.0.2", "93.184.216.34", 40000, 9000, payload.encode())
    ids = parse_identifiers(_ids(), source="test")
    return {(f.identifier, f.encoding) for f in scan_capture(cap.write_pcap(tmp_path / "c.pcap"), ids).findings}


@pytest.mark.parametrize("payload, identifier, encoding", FOUND)
def test_spelling_is_found(tmp_path: Path, payload: str, identifier: str, encoding: str) -> None:
    assert (identifier, encoding) in _scan(tmp_path, payload)


@pytest.mark.parametrize("payload", NOT_FOUND)
def test_near_miss_is_not_found(tmp_path: Path, payload: str) -> None:
    assert _scan(tmp_path, payload) == set()


def test_schema_reads_cells_and_networks() -> None:
    ids = parse_identifiers(_ids(), source="test")
    assert ids.cells == (Cell("460", "00", 4136, 19695115), Cell("262", "01", 21013, 40231), Cell(bsid=3721))
    assert ids.wifis == (Wifi("ac:37:43:4d:5e:70", "Kreuzberg-Gast"),)
    assert ids.names() == ("cell", "wifi")
    assert parse_identifiers(ids.to_mapping(), source="test") == ids
    assert "19695115" not in repr(ids) and "Kreuzberg" not in repr(ids)
    assert parse_identifiers({"cell": {"cid": "0x12c860b"}}, source="t").cells == (Cell(cid=19695115),)


@pytest.mark.parametrize("block, where, words", [
    ({"cell": {"mcc": "460", "mnc": "00", "lac": 1}}, "identifiers.cell", "needs a cid"),
    ({"cell": {"mcc": "460", "cid": 5}}, "identifiers.cell.mnc", "needs mnc"),
    ({"cell": {"mcc": "46", "mnc": "00", "cid": 5}}, "identifiers.cell.mcc", "3 digits"),
    ({"cell": [{"cid": 5}, {"cid": -1}]}, "identifiers.cell[1].cid", "number from 0"),
    ({"cell": {"cid": 5, "lac": 1, "tac": 2}}, "identifiers.cell.tac", "not both"),
    ({"cell": {"cid": 5, "sid": 1}}, "identifiers.cell.sid", "unknown cell field"),
    ({"wifi": {"ssid": "abc"}}, "identifiers.wifi.ssid", "SSID"),
    ({"wifi": {"bssid": "02:00:00:00:00:00"}}, "identifiers.wifi.bssid", "placeholder"),
    ({"wifi": "HomeNet"}, "identifiers.wifi", "mapping"),
])
def test_bad_entries_name_the_field(block: dict[str, object], where: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        parse_identifiers(block, source="devices.yaml")
    assert info.value.where == where and words in str(info.value)


def test_errors_name_the_line(tmp_path: Path) -> None:
    from phonehome.identifiers import load_identifiers

    path = tmp_path / "IDS.yaml"
    path.write_text("imei: '356938035643809'\ncell:\n  mcc: '460'\n  mnc: '00'\n  cid: lots\n")
    with pytest.raises(InputError) as info:
        load_identifiers(path)
    assert info.value.where == "line 5, cell.cid"


@pytest.mark.parametrize("engine", [
    pytest.param("hyperscan", marks=pytest.mark.skipif(not hyperscan_available(), reason="no hyperscan wheel")),
    "python",
])
def test_both_matcher_engines_agree_on_the_cell_patterns(engine: str) -> None:
    matcher = build_matcher(parse_identifiers(_ids(), source="test"), engine=engine)
    for payload in ('{"SIM1CELLID":"19695115","BASEID":"3721"}', "cgi=46000-4136-19695115", "LAC=5215 CID=9D27"):
        assert {m.needle.identifier for m in matcher.find(payload.encode())} == {"cell"}, payload
    for payload in ("n=196951150", "v=3721", "seq=40231", "BASEID=37210"):
        assert not matcher.find(payload.encode()), payload
