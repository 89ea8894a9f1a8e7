"""Every protocol a firmware profile can use, sent for real from a virtual phone's namespace to the fake
internet, seen in a capture on the phone's lab interface and in the fake internet's log (needs root)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import Dumpcap, instance_name, tshark_fields

from phonehome.identifiers import parse_identifiers
from phonehome.virtual.lab import Lab, LabDevice, LabState

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the virtual lab needs root (run the project tests with sudo)"),
    pytest.mark.skipif(shutil.which("dumpcap") is None or shutil.which("tshark") is None,
                       reason="dumpcap/tshark not installed (ci/setup.sh installs them)"),
]

#: time for every request of the screen-on rule to be sent and answered
SETTLE_S = 3.0

IDS = parse_identifiers({
    "imei": "352099001761481", "imsi": "242017100000001", "serial": "PROBE0001", "android_id": "9774d56d682e549c",
    "wifi_mac": "02:1a:11:f0:00:21", "location": {"lat": 48.8584, "lon": 2.2945},
}, source="test")

ALL_PROTOCOLS = """\
profile: 1
name: all-protocols
description: one request of every protocol on screen-on, a fast periodic ping
rules:
  - event: screen_on
    requests:
      - protocol: dns
        host: "{imei|md5}.t.probe.example"
      - protocol: http
        host: plain.probe.example
        port: 8080
        path: "/p/{location.lat}"
        headers: {X-Id: "{serial|base64}", Connection: keep-alive}
      - protocol: https
        host: secure.probe.example
        path: /s
        json: {imei: "{imei}"}
      - protocol: tls
        host: raw-tls.probe.example
        port: 8883
        payload: "{imsi}"
      - protocol: tcp
        host: raw.probe.example
        port: 7000
        payload: "IMSI={imsi}"
      - protocol: udp
        host: udp.probe.example
        port: 5683
        payload: "aid={android_id}"
      - protocol: mqtt
        host: mq.probe.example
        client_id: "c-{serial}"
        topic: t/1
        payload: "{imei|sha1}"
      - protocol: tcp
        host: 198.18.7.7
        port: 9000
        payload: hello
  - event: periodic
    every_s: 1
    requests:
      - protocol: http
        host: tick.probe.example
        path: /tick
"""


@pytest.fixture(scope="module")
def probe_capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabState, Path, str]]:
    """One lab phone with the all-protocols profile; its screen is switched on while dumpcap records."""
    import adbutils

    tmp = tmp_path_factory.mktemp("firmware")
    profile = tmp / "all.yaml"
    profile.write_text(ALL_PROTOCOLS)
    from phonehome.virtual.phone import VirtualPhoneSpec

    instance = instance_name()
    state = Lab.up([LabDevice(VirtualPhoneSpec(serial="VPROBE0001", label="probe", model="Probe", identifiers=IDS),
                              profile)], instance=instance)
    try:
        pcap = tmp / "probe.pcapng"
        capture = Dumpcap(state.phones[0].interface, pcap)
        device = adbutils.AdbClient(host=state.adb_host, port=state.adb_port).device("VPROBE0001")
        device.shell("input keyevent KEYCODE_WAKEUP")
        time.sleep(SETTLE_S)
        capture.stop()
        log = Path(state.log_path).read_text()
        yield state, pcap, log
    finally:
        Lab.down(instance)


@pytest.mark.timeout(90)
def test_dns_label_leak_is_a_real_query_answered_by_the_zone(probe_capture: tuple[LabState, Path, str]) -> None:
    _, pcap, _ = probe_capture
    label = hashlib.md5(IDS.get("imei")[0].encode()).hexdigest()
    answers = tshark_fields(pcap, f'dns.qry.name == "{label}.t.probe.example" && dns.flags.response == 1', "dns.a")
    assert answers and answers[0].startswith("198.1")


@pytest.mark.timeout(90)
def test_http_on_any_port_with_the_identifier_in_path_and_header(probe_capture: tuple[LabState, Path, str]) -> None:
    _, pcap, _ = probe_capture
    rows = tshark_fields(pcap, "http.request && tcp.dstport == 8080", "http.request.uri", "http.request.line")
    assert len(rows) == 1
    assert "/p/48.8584" in rows[0]
    assert base64.b64encode(IDS.get("serial")[0].encode()).decode() in rows[0]
    assert tshark_fields(pcap, "http.response.code == 200 && tcp.srcport == 8080", "frame.number")


@pytest.mark.timeout(90)
def test_https_and_raw_tls_are_real_handshakes_with_sni(probe_capture: tuple[LabState, Path, str]) -> None:
    _, pcap, log = probe_capture
    sni = tshark_fields(pcap, "tls.handshake.type == 1", "tls.handshake.extensions_server_name")
    assert sorted(sni) == ["raw-tls.probe.example", "secure.probe.example"]
    assert len(tshark_fields(pcap, "tls.handshake.type == 2", "frame.number")) == 2  # ServerHello from the fake internet
    raw = pcap.read_bytes()
    assert IDS.get("imsi")[0].encode() in raw  # in the cleartext TCP payload...
    assert raw.count(IDS.get("imsi")[0].encode()) == 1  # ...but not in the TLS one
    assert '"sni": "secure.probe.example"' in log and '"proto": "https"' in log


@pytest.mark.timeout(90)
def test_raw_tcp_udp_and_a_hard_coded_address(probe_capture: tuple[LabState, Path, str]) -> None:
    _, pcap, log = probe_capture
    assert tshark_fields(pcap, 'tcp.dstport == 7000 && tcp.payload contains "IMSI=242017100000001"', "frame.number")
    assert tshark_fields(pcap, 'udp.dstport == 5683 && udp.payload contains "aid=9774d56d682e549c"', "frame.number")
    assert tshark_fields(pcap, "ip.dst == 198.18.7.7 && tcp.flags.syn == 1 && tcp.flags.ack == 0", "frame.number")
    assert tshark_fields(pcap, "ip.src == 198.18.7.7 && tcp.flags.syn == 1 && tcp.flags.ack == 1", "frame.number")
    assert '"proto": "udp"' in log and '"port": 7000' in log


@pytest.mark.timeout(90)
def test_mqtt_connect_gets_a_connack_and_the_publish_is_captured(probe_capture: tuple[LabState, Path, str]) -> None:
    _, pcap, log = probe_capture
    assert tshark_fields(pcap, 'mqtt.clientid == "c-PROBE0001"', "frame.number")
    assert tshark_fields(pcap, "mqtt.msgtype == 2", "mqtt.conack.val") == ["0"]
    assert tshark_fields(pcap, "mqtt.msgtype == 3", "mqtt.topic") == ["t/1"]
    assert '"packet": "CONNECT"' in log


@pytest.mark.timeout(90)
def test_periodic_rules_tick_while_the_phone_is_up(probe_capture: tuple[LabState, Path, str]) -> None:
    _, pcap, _ = probe_capture
    assert len(tshark_fields(pcap, 'http.host == "tick.probe.example"', "frame.number")) >= 2


@pytest.mark.timeout(90)
def test_the_logs_never_show_identifiers(probe_capture: tuple[LabState, Path, str]) -> None:
    _, _, log = probe_capture
    label = hashlib.md5(IDS.get("imei")[0].encode()).hexdigest()
    assert ".t.probe.example" in log
    assert label not in log
    for name in ("imei", "imsi", "serial", "android_id"):
        assert IDS.get(name)[0] not in log, name


@pytest.mark.timeout(90)
def test_every_request_of_the_profile_was_sent_and_answered(probe_capture: tuple[LabState, Path, str]) -> None:
    _, _, log = probe_capture
    outcomes = [line for line in log.splitlines() if "firmware[probe]" in line and '"event": "screen_on"' in line]
    assert len(outcomes) == 8, outcomes
    assert all('"ok": true' in line for line in outcomes), outcomes
