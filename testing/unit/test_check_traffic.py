"""What ``phonehome check --traffic`` prints of a capture filter: every identifier value and every MAC masked."""

from __future__ import annotations

from phonehome.check.traffic import masked_filter
from phonehome.identifiers import mask, parse_identifiers

IDS = parse_identifiers({"imei": "352099001761481", "wifi_mac": "02:1a:11:f0:00:01"}, source="test")


def test_the_filled_values_and_literal_macs_are_masked() -> None:
    bpf = "ether host 02:1a:11:f0:00:01 or ether host 02-1A-11-F0-00-99 or (udp and port 5353)"
    shown = masked_filter(bpf, IDS)
    assert shown == (f"ether host {mask('02:1a:11:f0:00:01')} or ether host {mask('02-1A-11-F0-00-99')} or "
                     "(udp and port 5353)")


def test_an_identifier_that_is_no_mac_is_masked_too() -> None:
    assert masked_filter("host 10.0.0.1 and not ether proto 352099001761481", IDS) == (
        f"host 10.0.0.1 and not ether proto {mask('352099001761481')}")
    assert masked_filter(None, IDS) is None
