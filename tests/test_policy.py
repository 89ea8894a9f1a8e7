"""Destination policy: no traffic at all, encrypted or not, to the inventory's denied hosts."""

from __future__ import annotations

from phonehome.devices.base import Phone
from phonehome.fixtures import Traffic


def test_no_traffic_to_denied_hosts(phone: Phone, traffic: Traffic) -> None:
    """Unlocking the phone from a dark screen (which wakes it) must not contact a denied host
    (``policy.denied_hosts``), encrypted or not."""
    phone.screen_off()
    traffic.settle("screen_off")
    with traffic.phase("unlock"):
        phone.unlock()
    traffic.assert_no_denied_hosts()
