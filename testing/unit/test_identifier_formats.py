"""Identifier spellings of issue 10: IMEI as a URN, IMEISV, TAC and serial number split into two fields; MAC
addresses in every common spelling. Each is found by a scan of a real capture; near misses are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from phonehome.identifiers import parse_identifiers
from phonehome.scan.scanner import scan_capture
from phonehome.testing.captures import CaptureBuilder

IMEI = "356938035643809"
MAC = "ac:37:43:4d:5e:6f"
BT_MAC = "02:00:5e:00:53:01"

FOUND = [
    (f"urn:gsma:imei:{IMEI[:8]}-{IMEI[8:14]}-{IMEI[14]}", "imei"),
    (f"imeisv={IMEI[:14]}01", "imei"),
    (f"tac={IMEI[:8]}&snr={IMEI[8:14]}", "imei"),
    (f'{{"tac":"{IMEI[:8]}","snr":"{IMEI[8:14]}"}}', "imei"),
    ("mac=AC:37:43:4D:5E:6F", "wifi_mac"),
    ("mac=ac-37-43-4d-5e-6f", "wifi_mac"),
    ("mac=ac37434d5e6f", "wifi_mac"),
    ("mac=ac37.434d.5e6f", "wifi_mac"),
    ("mac=ac 37 43 4d 5e 6f", "wifi_mac"),
    ("mac=AC37-434D-5E6F", "wifi_mac"),
    ("mac=ac3743-4d5e6f", "wifi_mac"),
    (f"mac={int('ac37434d5e6f', 16)}", "wifi_mac"),
    ("bt=2:0:5e:0:53:1", "bt_mac"),
]
NOT_FOUND = [
    f"tac={IMEI[:8]}&snr={IMEI[8:14]}7",  # a longer serial number is another phone
    f"n={int('ac37434d5e6f', 16)}9",  # the MAC's decimal inside a longer number
    f"tac={IMEI[:8]}" + "&x=1" * 20 + f"&snr={IMEI[8:14]}",  # too far apart to be one IMEI
]


def _scan(tmp_path: Path, payload: str) -> set[str]:
    cap = CaptureBuilder()
    cap.udp("10.0.0.2", "93.184.216.34", 40000, 9000, payload.encode())
    ids = parse_identifiers({"imei": IMEI, "wifi_mac": MAC, "bt_mac": BT_MAC}, source="test")
    return {f.identifier for f in scan_capture(cap.write_pcap(tmp_path / "c.pcap"), ids).findings}


@pytest.mark.parametrize("payload, identifier", FOUND)
def test_spelling_is_found(tmp_path: Path, payload: str, identifier: str) -> None:
    assert _scan(tmp_path, payload) == {identifier}


@pytest.mark.parametrize("payload", NOT_FOUND)
def test_near_miss_is_not_found(tmp_path: Path, payload: str) -> None:
    assert _scan(tmp_path, payload) == set()
