"""A small privacy suite that drives the Allure reporter through phonehome's hooks, the way the harness does.

It runs in a subprocess (allure-pytest keeps global state) with phonehome's own pytest plugin disabled, so these
tests exercise the reporter alone: hookspecs from :mod:`phonehome.hooks`, the reporter from
:func:`phonehome.report.allure_results.register`, realistic finding/flow dicts as in ``phonehome scan --json``
and a real pcapng slice written byte by byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: the sample suite takes ~2 s; xdist start-up adds a few more
SUITE_TIMEOUT_S = 120

#: the leaky phone's identifiers: they must never appear in a text attachment or message of the results
IMEI = "356938035643809"
WIFI_MAC = "ac:37:43:4d:5e:6f"
SERIAL = "NOKIA7PLUSX1"
#: an identifier only the ``traffic`` object knows (the harness reads some from the phone at run time)
READ_ANDROID_ID = "9774d56d682e549c"

SAMPLE_CONFTEST = '''
from __future__ import annotations

from phonehome import hooks
from phonehome.report.allure_results import register


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hooks)


def pytest_configure(config):
    if config.option.allure_report_dir:
        register(config)
'''

SAMPLE_TESTS = '''
from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from phonehome.errors import CaptureError
from phonehome.identifiers import parse_identifiers

IMEI = "%(imei)s"
WIFI_MAC = "%(mac)s"
SERIAL = "%(serial)s"
READ_ANDROID_ID = "%(android_id)s"
T0 = 1764400000.0
DEVICES = {
    "nokia-7-plus": {"model": "Nokia 7 Plus", "android_build": "00WW_3_22C", "leaky": True,
                     "tools": ["dumpcap 4.0.17", "adb 1.0.41"], "adb_server": "127.0.0.1:5037",
                     "fingerprint": "Nokia/Onyx_00WW/B2N_sprout:10/QKQ1.190828.002/00WW_3_22C:user/release-keys",
                     "identifiers": {"imei": IMEI, "wifi_mac": WIFI_MAC, "serial": SERIAL}},
    "fixed-phone": {"model": "Pixel 7", "android_build": "TQ3A.230901.001", "leaky": False,
                    "fingerprint": "google/panther/panther:13/TQ3A.230901.001/10750268:user/release-keys",
                    "identifiers": {"imei": "490154203237518", "wifi_mac": "02:00:00:aa:bb:cc"}},
}
PHONE_IP = "10.23.0.2"


def _pcapng(payloads, dports=()):
    """A pcapng slice: section header, one raw-IPv4 interface, one enhanced packet per UDP payload (to port 80,
    or to the port at the same index of ``dports``)."""
    def block(kind, body):
        body += b"\\0" * (-len(body) %% 4)
        size = 12 + len(body)
        return struct.pack("<II", kind, size) + body + struct.pack("<I", size)
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 101, 0, 65535))
    for i, payload in enumerate(payloads):
        dport = dports[i] if i < len(dports) else 80
        udp = struct.pack("!HHHH", 40000 + i, dport, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                         bytes([10, 23, 0, 2]), bytes([203, 0, 113, 7])) + udp
        ts = int((T0 + i) * 1e6)
        out += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(ip), len(ip)) + ip)
    return out


def _flow(host, dport, encrypted, *, denied=False, nbytes=420):
    return {"transport": "udp" if dport == 53 else "tcp", "src": PHONE_IP, "sport": 40000, "dst": "203.0.113.7",
            "dport": dport, "host": host, "protocol": "tls" if encrypted else "http", "encrypted": encrypted,
            "bytes": nbytes, "frames": [1, 2, 3], "denied": denied}


def _finding(phase):
    return {"identifier": "imei", "encoding": "base64", "transport": "tcp", "src": PHONE_IP, "sport": 40000,
            "dst": "203.0.113.7", "dport": 80, "host": "fota.nokia-updates.example", "protocol": "http",
            "encrypted": False, "frames": [1, 2], "time": T0 + 1, "phase": phase,
            "excerpt": "GET /checkin?id=MzU2OTM4MD***************DM4MDk= HTTP/1.1"}


@pytest.fixture(params=sorted(DEVICES))
def device(request):
    label = request.param
    info = {k: v for k, v in DEVICES[label].items() if k != "leaky"}
    request.config.hook.pytest_phonehome_device_info(device=label, info=info)
    return label


@pytest.fixture
def traffic(tmp_path):
    """Like the harness's ``traffic``: ``traffic.capture.pcap`` is the test's whole capture (frame 2: a DNS query
    naming an identifier that only ``traffic.identifiers`` holds)."""
    pcap = tmp_path / "whole.pcapng"
    name = b"".join(bytes([len(label)]) + label for label in (READ_ANDROID_ID.encode(), b"checkin", b"example"))
    query = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + name + b"\\0" + struct.pack("!HH", 1, 1)
    pcap.write_bytes(_pcapng([b"GET /checkin?imei=" + IMEI.encode(), query, b"ping"], dports=(80, 53)))
    identifiers = parse_identifiers({"imei": IMEI, "android_id": READ_ANDROID_ID}, source="phone")
    return SimpleNamespace(capture=SimpleNamespace(pcap=pcap), identifiers=identifiers)


def _phase(request, tmp_path, device, name, findings, flows):
    step = request.config.hook.pytest_phonehome_step(name=name, device=device)
    with step:
        pass
    pcap = tmp_path / f"{name}.pcapng"
    pcap.write_bytes(_pcapng([b"GET /checkin?imei=" + IMEI.encode(), b"ping"]))
    phase = SimpleNamespace(name=name, start=T0, end=T0 + 5, findings=findings, flows=flows, pcap=pcap)
    request.config.hook.pytest_phonehome_phase_finished(item=request.node, device=device, phase=phase)


def test_unlock_sends_no_identifier_in_cleartext(request, tmp_path, device, traffic):
    """Unlock sends no identifier in cleartext."""
    leaky = DEVICES[device]["leaky"]
    findings = [_finding("unlock")] if leaky else []
    flows = [_flow("fota.nokia-updates.example", 80, False)] if leaky else [_flow("android.googleapis.com", 443, True)]
    _phase(request, tmp_path, device, "unlock", findings, flows)
    if findings:
        screenshot = tmp_path / "screen.png"
        screenshot.write_bytes(b"\\x89PNG\\r\\n\\x1a\\n" + b"\\0" * 32)
        request.config.hook.pytest_phonehome_failure_evidence(item=request.node, device=device, evidence={
            "screenshot": screenshot,
            "logcat": f"I/Checkin: sending imei={IMEI} mac={WIFI_MAC.upper()} serial={SERIAL}",
            "frames": f"Frame 4: GET /checkin?imei={IMEI}\\n  Host: fota.nokia-updates.example",
        })
    assert not findings, f"imei {IMEI} sent in cleartext (base64) to fota.nokia-updates.example in phase unlock"


def test_power_on_capture_fault(request, tmp_path):
    with request.config.hook.pytest_phonehome_step(name="power-on", device="fixed-phone"):
        raise CaptureError("dumpcap saw no packet from the phone during phase power-on",
                           command=["dumpcap", "-i", "veth0", "-f", f"ether host {WIFI_MAC}"], returncode=0)


def test_no_traffic_to_denied_hosts(request, tmp_path):
    flows = [_flow("telemetry.denied.example", 443, True, denied=True)]
    _phase(request, tmp_path, "fixed-phone", "idle", [], flows)
    assert False, "traffic to a denied host: telemetry.denied.example:443 (encrypted) in phase idle"


@pytest.mark.parametrize("_entry", [SimpleNamespace(label="nokia-7-plus", identifiers={"imei": IMEI})],
                         ids=["nokia-7-plus"])
def test_connect_only(request, _entry):
    """A plugin-internal parameter (``_entry``, like the harness's inventory entry) stays out of the report."""
    with request.config.hook.pytest_phonehome_step(name="connect", device=_entry.label):
        pass


@pytest.fixture
def wifi_off(request):
    request.config.hook.pytest_phonehome_device_info(device="nokia-7-plus", info=DEVICES["nokia-7-plus"])
    raise RuntimeError(f"adb: svc wifi disable failed on {SERIAL}")


def test_fixture_error_is_masked(wifi_off):
    pass


def test_idle_cleartext_without_identifiers(request, tmp_path):
    _phase(request, tmp_path, "fixed-phone", "idle", [], [_flow("time.example", 80, False)])
'''


def write_sample_suite(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "conftest.py").write_text(SAMPLE_CONFTEST, encoding="utf-8")
    (path / "test_sample_suite.py").write_text(
        SAMPLE_TESTS % {"imei": IMEI, "mac": WIFI_MAC, "serial": SERIAL, "android_id": READ_ANDROID_ID}, encoding="utf-8")
    return path


def run_sample_suite(suite: Path, results: Path, *args: str,
                     env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the sample suite with ``--alluredir`` in a fresh interpreter, phonehome's own plugin off."""
    command = [sys.executable, "-m", "pytest", str(suite), f"--alluredir={results}", "-p", "no:phonehome",
               "-p", "no:cacheprovider", "-q", "--rootdir", str(suite), "-c", os.devnull, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S, check=False,
                          cwd=suite, env={**os.environ, **(env or {})})


def load_results(results: Path) -> dict[str, dict[str, Any]]:
    """Allure results by test name (``name`` includes the parametrize id)."""
    by_name = {}
    for path in results.glob("*-result.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        by_name[str(data["name"])] = data
    return by_name
