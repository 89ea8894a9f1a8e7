"""Destination policy: no traffic at all, encrypted or not, to the inventory's denied hosts; identifiers, in
cleartext or inside TLS, only to its identifier hosts."""

from __future__ import annotations

import pytest

from phonehome.devices.base import Phone
from phonehome.fixtures import Traffic


def test_no_traffic_to_denied_hosts(phone: Phone, traffic: Traffic) -> None:
    """Unlocking the phone from a dark screen (which wakes it) must not contact a denied host
    (``policy.denied_hosts``), encrypted or not."""
    if not traffic.policy_configured:
        pytest.skip(f"{traffic.device}: no destination policy configured (set policy.denied_hosts or "
                    "policy.allowed_hosts in devices.yaml): nothing to check")
    phone.screen_off()
    traffic.settle("screen_off")
    with traffic.phase("unlock"):
        phone.unlock()
    traffic.assert_no_denied_hosts()


def test_identifiers_only_to_allowed_hosts(phone: Phone, traffic: Traffic) -> None:
    """Waking and unlocking the phone must not send any identifier, in cleartext or inside TLS (decrypted with
    the device's ``tls_keys``), to a host outside ``policy.identifier_hosts``."""
    if not traffic.policy.identifier_hosts:
        pytest.skip(f"{traffic.device}: no identifier_hosts configured (set policy.identifier_hosts in "
                    "devices.yaml): nothing to check")
    phone.screen_off()
    traffic.settle("screen_off")
    with traffic.phase("unlock"):
        phone.unlock()
    traffic.assert_identifiers_only_to_allowed_hosts()
