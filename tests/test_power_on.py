"""Power-on: everything a phone sends while it boots, up to its settle time after boot completed."""

from __future__ import annotations

from phonehome.devices.base import Phone
from phonehome.fixtures import Traffic


def test_power_on_sends_no_identifier_in_cleartext(phone: Phone, traffic: Traffic) -> None:
    """A fresh boot (reboot or the lab's power cycle) must not send any identifier unencrypted."""
    with traffic.phase("power-on"):
        phone.power_on()
    traffic.assert_no_cleartext_identifiers()
