"""Idle: what an unlocked phone sends on its own while nobody touches it."""

from __future__ import annotations

from phonehome.devices.base import Phone
from phonehome.fixtures import Traffic


def test_idle_sends_no_identifier_in_cleartext(phone: Phone, traffic: Traffic) -> None:
    """Background traffic during the inventory's idle window (``settle_s.idle``) must not carry identifiers.

    A phone may rightly stay silent while idle, so the window may be empty; waking and unlocking it afterwards
    proves that the same capture sees the phone (a dead capture or a wrong filter is still an error). Only the
    idle window is judged here: unlocking has its own test.
    """
    with traffic.phase("idle", expect_traffic=False):
        pass  # nothing is done to the phone: the window is its idle settle time
    phone.screen_off()
    traffic.settle("screen_off")
    with traffic.phase("unlock"):
        phone.unlock()
    traffic.assert_no_cleartext_identifiers(phases=["idle"])
