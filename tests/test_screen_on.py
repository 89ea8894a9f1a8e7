"""Screen-on: what a phone sends when its display wakes up (still locked)."""

from __future__ import annotations

from phonehome.devices.base import Phone
from phonehome.fixtures import Traffic


def test_screen_on_sends_no_identifier_in_cleartext(phone: Phone, traffic: Traffic) -> None:
    """Waking the display must not send any identifier unencrypted."""
    phone.screen_off()
    traffic.settle("screen_off")
    with traffic.phase("screen-on"):
        phone.screen_on()
    traffic.assert_no_cleartext_identifiers()
