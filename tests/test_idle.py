"""Idle: what an unlocked phone sends on its own while nobody touches it."""

from __future__ import annotations

from phonehome.devices.base import Phone
from phonehome.fixtures import Traffic


def test_idle_sends_no_identifier_in_cleartext(phone: Phone, traffic: Traffic) -> None:
    """Background traffic during the inventory's idle window (``settle_s.idle``) must not carry identifiers.

    The window is the phase's settle time, so a farm sets its length per device in devices.yaml.
    """
    with traffic.phase("idle"):
        pass  # nothing is done to the phone: the window is its settle time
    traffic.assert_no_cleartext_identifiers()
