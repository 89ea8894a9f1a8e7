"""Unlock: what a phone sends when its user unlocks it (swipe, PIN or password, from the inventory)."""

from __future__ import annotations

from phonehome.devices.base import Phone
from phonehome.fixtures import Traffic


def test_unlock_sends_no_identifier_in_cleartext(phone: Phone, traffic: Traffic) -> None:
    """Unlocking from a dark screen must not send any identifier unencrypted."""
    phone.screen_off()
    traffic.settle("screen_off")
    with traffic.phase("unlock"):
        phone.unlock()
    traffic.assert_no_cleartext_identifiers()
