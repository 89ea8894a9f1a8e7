"""Destination policy: no traffic at all, encrypted or not, to the inventory's denied hosts."""

from __future__ import annotations

from phonehome.devices.base import Phone
from phonehome.fixtures import Traffic


def test_no_traffic_to_denied_hosts(phone: Phone, traffic: Traffic) -> None:
    """Waking and unlocking the phone must not contact a denied host (``policy.denied_hosts``)."""
    phone.screen_off()
    traffic.settle("screen_off")
    with traffic.phase("screen-on"):
        phone.screen_on()
    with traffic.phase("unlock"):
        phone.unlock()
    traffic.assert_no_denied_hosts()
