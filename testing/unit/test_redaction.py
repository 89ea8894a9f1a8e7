"""Masking in phonehome's own output: plain spellings, encoded forms and encoded runs, secrets, reprs; and the
excerpt of a finding, where a neighbouring encoded run must not give away what the masked match hides."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from phonehome.identifiers import Identifiers, Location, parse_identifiers
from phonehome.inventory import load_inventory
from phonehome.redaction import Redactor, leak_spans
from phonehome.scan.matcher import build_matcher
from phonehome.scan.scanner import scan_capture
from phonehome.testing.captures import CaptureBuilder, http_request

IMEI = "356938035643809"
SERIAL = "R58M12ABCDE"
LAT, LON = 52.5163, 13.3777
PIN = "482915"


def ids() -> Identifiers:
    return parse_identifiers({"imei": IMEI, "serial": SERIAL, "location": {"lat": LAT, "lon": LON}}, source="t")


def test_plain_and_separated_spellings_are_masked() -> None:
    redact = Redactor().with_identifiers(ids())
    text = redact(f"imei={IMEI} serial {SERIAL.lower()}")
    assert IMEI not in text and SERIAL.lower() not in text
    assert text == "imei=35***********09 serial r5*******de"
    # a spelling the value itself does not have is the deep pass's (the scanner's forms)
    assert "35-693803-564380-9" not in redact.deep("imei again 35-693803-564380-9")


def test_the_deep_pass_masks_encoded_forms_and_runs() -> None:
    redact = Redactor().with_identifiers(ids())
    report = base64.b64encode(json.dumps({"lat": LAT, "lon": LON, "t": 1}).encode()).decode()
    hexed = IMEI.encode().hex()
    text = f"payload {report} and {hexed} and {base64.b64encode(IMEI.encode()).decode()[2:]} end"
    masked = redact.deep(text)
    assert report not in masked and hexed not in masked
    matcher = build_matcher(ids())
    assert leak_spans(masked.encode(), matcher) == []
    assert masked.startswith("payload ") and masked.endswith(" end")


def test_secrets_are_starred_whole_even_when_identifiers_are_shown() -> None:
    redact = Redactor(show=True).with_identifiers(ids()).with_secrets([PIN])
    assert redact(f"typed {PIN} for {IMEI}") == f"typed {'*' * len(PIN)} for {IMEI}"


def test_reprs_hold_no_identifier(tmp_path: Path) -> None:
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(f"""\
version: 1
devices:
  - label: bench1
    model: Pixel 7
    serial: {SERIAL}
    backend: uiautomator2
    identifiers: {{imei: "{IMEI}", location: {{lat: {LAT}, lon: {LON}}}}}
""", encoding="utf-8")
    [entry] = load_inventory(inventory).devices
    for text in (repr(entry), repr(entry.identifiers), repr(Location(LAT, LON)), repr(Redactor())):
        assert IMEI not in text and SERIAL not in text and str(LAT) not in text and str(LON) not in text, text
    assert "bench1" in repr(entry)


def test_an_excerpt_masks_a_neighbouring_encoded_run(tmp_path: Path) -> None:
    """The IMEI leaks in plain beside a base64 report of the position: the excerpt of the IMEI finding must
    not carry the base64 run, which decodes to the coordinates."""
    report = base64.b64encode(json.dumps({"lat": LAT, "lon": LON}).encode()).decode()
    body = f"imei={IMEI}&r={report}".encode()
    cap = CaptureBuilder()
    conn = cap.tcp("10.0.0.2", "93.184.216.34", 80)
    conn.send(http_request("POST", "/collect", host="collect.example", body=body))
    conn.close()
    result = scan_capture(cap.write_pcap(tmp_path / "c.pcap"), ids())
    [imei] = [f for f in result.findings if f.identifier == "imei" and f.encoding == "plain"]
    assert IMEI not in imei.excerpt and report not in imei.excerpt, imei.excerpt
    assert "imei=" in imei.excerpt  # the context is still there to read
