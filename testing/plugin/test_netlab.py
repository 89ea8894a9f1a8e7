"""The lab network for real: namespaces, veths, bridge, the fake internet, a firmware runner inside a phone's
namespace, and dumpcap on the phone's root-side interface (needs root, as the lab does)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from labtools import TSHARK_TIMEOUT_S, Dumpcap, instance_name

from phonehome.errors import LabError
from phonehome.identifiers import Identifiers, parse_identifiers
from phonehome.virtual import netlab
from phonehome.virtual.fakenet import FakenetConfig
from phonehome.virtual.firmware import load_profile

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the network lab needs root (run the project tests with sudo)"),
    pytest.mark.skipif(shutil.which("dumpcap") is None or shutil.which("tshark") is None,
                       reason="dumpcap/tshark not installed (ci/setup.sh installs them)"),
]

CHILD_TIMEOUT_S = 15.0

IDS = parse_identifiers({
    "imei": ["352099001761481", "352099001761499"], "imsi": "242017100000001", "iccid": "8947080012345678901", "serial": "B2NGAA8801234567",
    "phone": "+47 912 34 567", "android_id": "9774d56d682e549c", "gaid": "38400000-8cf0-11bd-b23e-10b96e40000d",
    "wifi_mac": "ac:37:43:4d:5e:6f", "location": {"lat": 59.9127, "lon": 10.7461},
    "cell": [{"mcc": "242", "mnc": "01", "lac": 3011, "cid": 27115023}, {"bsid": 3721}],
}, source="test")
PROFILE = Path(__file__).parents[2] / "fixtures" / "firmware" / "nokia7plus-2019.yaml"

TLS_PROFILE = """\
profile: 1
name: tls-probe
rules:
  - event: screen_on
    requests:
      - protocol: https
        host: secure.probe.example
        path: /hello
"""


def tshark(path: Path, *args: str) -> str:
    proc = subprocess.run([str(shutil.which("tshark")), "-r", str(path), *args], capture_output=True, text=True,
                          timeout=TSHARK_TIMEOUT_S, check=True)
    return proc.stdout


@dataclass
class MiniLab:
    """The network part of a lab, without virtual phones: runners get their events from the test."""

    plan: netlab.NetPlan
    state: netlab.StateFile
    fakenet: subprocess.Popen[str]
    workdir: Path
    children: list[subprocess.Popen[str]]

    def runner(self, phone: netlab.PhoneNet, profile: Path, ids: Identifiers) -> subprocess.Popen[str]:
        proc = subprocess.Popen([*netlab.netns_exec_prefix(phone.netns), sys.executable, "-m",
                                 "phonehome.virtual.firmware"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, bufsize=1)
        self.state.add_process(proc.pid, "runner")
        self.children.append(proc)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"profile": str(profile), "identifiers": ids.to_mapping(),
                                     "resolver": self.plan.gateway_ip}) + "\n")
        assert json.loads(proc.stdout.readline())["ready"] is True
        return proc


def fire(runner: subprocess.Popen[str], *events: str, expect: int) -> list[dict[str, object]]:
    """Send events, wait for ``expect`` outcome lines."""
    assert runner.stdin is not None and runner.stdout is not None
    for event in events:
        runner.stdin.write(event + "\n")
    runner.stdin.flush()
    return [json.loads(runner.stdout.readline()) for _ in range(expect)]


@contextlib.contextmanager
def mini_lab(tmp_path: Path, profiles: list[Path], phones: int = 2) -> Iterator[MiniLab]:
    instance = instance_name()
    netplan = netlab.plan(instance, [(f"SER{i}", f"phone{i}", IDS.get("wifi_mac")[0] if i == 0 else None)
                                     for i in range(phones)])
    state = netlab.StateFile.claim(instance)
    children: list[subprocess.Popen[str]] = []
    try:
        netlab.create(netplan, state)
        loaded = [load_profile(p) for p in profiles]
        hosts: dict[str, str] = {}
        for name in sorted({n for p in loaded for n in p.host_names()}):
            hosts[name] = netlab.host_ip(name, set(hosts.values()))
        config = tmp_path / "fakenet.json"
        config.write_text(FakenetConfig(hosts=hosts, tcp_ports=(80, 443), udp_ports=()).to_json())
        fakenet = subprocess.Popen([*netlab.netns_exec_prefix(netplan.fakenet_netns), sys.executable, "-m",
                                    "phonehome.virtual.fakenet", "--config", str(config)],
                                   stdout=subprocess.PIPE, text=True)
        children.append(fakenet)
        state.add_process(fakenet.pid, "fakenet")
        assert fakenet.stdout is not None
        assert json.loads(fakenet.stdout.readline())["ready"] is True
        yield MiniLab(netplan, state, fakenet, tmp_path, children)
    finally:
        problems = netlab.teardown_state(state)
        for child in children:
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            child.wait(CHILD_TIMEOUT_S)
        assert problems == []


def assert_gone(netplan: netlab.NetPlan, pids: list[int]) -> None:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    for ns in netplan.namespaces():
        assert ns not in namespaces
    for link in netplan.links():
        assert f" {link}:" not in links and f" {link}@" not in links
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not netlab.state_path(netplan.instance).exists()


@pytest.mark.timeout(90)
def test_capture_on_the_lab_interface_shows_dns_http_with_identifier_and_tls_sni(tmp_path: Path) -> None:
    tls_profile = tmp_path / "tls.yaml"
    tls_profile.write_text(TLS_PROFILE)
    with mini_lab(tmp_path, [PROFILE, tls_profile]) as lab:
        phone = lab.plan.phones[0]
        runner = lab.runner(phone, PROFILE, IDS)
        tls_runner = lab.runner(phone, tls_profile, IDS)
        pcap = tmp_path / "phone0.pcapng"
        # the filter an access point would use: this phone's Wi-Fi MAC
        capture = Dumpcap(phone.interface, pcap, f"ether host {phone.wifi_mac}")
        # the incident profile sends two requests per event: JSON, then Base64 JSON
        outcomes = fire(runner, "boot_completed", expect=2) + fire(tls_runner, "screen_on", expect=1)
        rest = capture.stop()
        assert "dropped" not in rest or "/0 " in rest, rest
        pids = [runner.pid, tls_runner.pid, lab.fakenet.pid]
        assert all(o["ok"] for o in outcomes), outcomes
        netplan = lab.plan

    dns = tshark(pcap, "-Y", "dns.flags.response == 0", "-T", "fields", "-e", "dns.qry.name")
    assert "zzhc.vnet-cn.example" in dns.split()
    assert "secure.probe.example" in dns.split()
    http = tshark(pcap, "-Y", "http.request", "-T", "fields", "-e", "http.host", "-e", "http.file_data")
    assert "zzhc.vnet-cn.example" in http
    for name in ("imei", "serial", "imsi", "iccid"):
        assert IDS.get(name)[0] in http, name
    assert "59.9127" in http
    sni = tshark(pcap, "-Y", "tls.handshake.type == 1", "-T", "fields", "-e", "tls.handshake.extensions_server_name")
    assert sni.split() == ["secure.probe.example"]
    assert tshark(pcap, "-Y", "tls.handshake.type == 2", "-T", "fields", "-e", "frame.number").strip()
    # the phone's frames carry its Wi-Fi MAC, as on a real access point
    macs = tshark(pcap, "-Y", "dns", "-T", "fields", "-e", "eth.src").split()
    assert phone.wifi_mac in macs
    assert_gone(netplan, pids)


@pytest.mark.timeout(60)
def test_root_namespace_has_no_address_and_phones_cannot_reach_the_host(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("0.0.0.0", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    host_ips = [a["local"] for item in json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True,
                                                                 text=True, check=True).stdout)
                for a in item.get("addr_info", []) if not a["local"].startswith("127.")]
    try:
        with mini_lab(tmp_path, [PROFILE], phones=1) as lab:
            for link in lab.plan.links():
                info = json.loads(subprocess.run(["ip", "-j", "addr", "show", "dev", link], capture_output=True,
                                                 text=True, check=True).stdout)
                assert info[0]["addr_info"] == [], f"{link} has an address"
            probe = ("import socket,sys\n"
                     "for ip in sys.argv[2:]:\n"
                     "    s = socket.socket(); s.settimeout(1.0)\n"
                     "    try:\n"
                     "        s.connect((ip, int(sys.argv[1]))); print('REACHED', ip)\n"
                     "    except OSError as e:\n"
                     "        print('blocked', ip, type(e).__name__)\n")
            out = subprocess.run([*netlab.netns_exec_prefix(lab.plan.phones[0].netns), sys.executable, "-c", probe,
                                  str(port), *host_ips, "127.0.0.1"], capture_output=True, text=True,
                                 timeout=CHILD_TIMEOUT_S, check=True).stdout
            assert "REACHED" not in out
            assert out.count("blocked") == len(host_ips) + 1
    finally:
        listener.close()


@pytest.mark.timeout(60)
def test_a_dead_owners_leftovers_are_cleaned(tmp_path: Path) -> None:
    instance = instance_name()
    script = ("import os,sys,time\n"
              "from phonehome.virtual import netlab\n"
              "p = netlab.plan(sys.argv[1], [('S1','one',None)])\n"
              "s = netlab.StateFile.claim(sys.argv[1])\n"
              "netlab.create(p, s)\n"
              "print('built', flush=True)\n"
              "time.sleep(60)\n")
    owner = subprocess.Popen([sys.executable, "-c", script, instance], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    assert owner.stdout.readline().strip() == "built"
    netplan = netlab.plan(instance, [("S1", "one", None)])
    assert Path("/run/netns", netplan.phones[0].netns).exists()
    # while the owner lives, nobody else may take the instance
    with pytest.raises(LabError, match="already running"):
        netlab.StateFile.claim(instance)
    owner.send_signal(signal.SIGKILL)  # a crash: no teardown ran
    owner.wait(CHILD_TIMEOUT_S)
    owner.stdout.close()
    assert Path("/run/netns", netplan.phones[0].netns).exists()
    assert netlab.clean_stale() == []
    assert_gone(netplan, [owner.pid])


@pytest.mark.timeout(30)
def test_without_root_the_error_says_so_and_how_to_fix_it(tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not installed")
    script = ("from phonehome.virtual import netlab\n"
              "from phonehome.errors import LabError\n"
              "try:\n"
              "    netlab.create(netlab.plan('nobody', [('S','one',None)]), netlab.StateFile('nobody', 0, None))\n"
              "except LabError as e:\n"
              "    print(e)\n")
    env = {**os.environ, netlab.STATE_DIR_ENV: str(tmp_path)}
    out = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env, check=True)
    assert "needs root" in out.stdout and "sudo" in out.stdout, out
    assert "Traceback" not in out.stderr


def test_interface_names_fit_and_two_instances_never_clash() -> None:
    first = netlab.plan("nightly-run-0001", [(f"S{i}", f"p{i}", None) for i in range(netlab.MAX_PHONES)])
    second = netlab.plan("nightly-run-0002", [(f"S{i}", f"p{i}", None) for i in range(3)])
    assert all(len(name) <= netlab.MAX_IFNAME for name in first.links())
    assert not set(first.links()) & set(second.links())
    assert not set(first.namespaces()) & set(second.namespaces())
    assert len({p.ip for p in first.phones}) == netlab.MAX_PHONES
    with pytest.raises(LabError):
        netlab.plan("x", [(f"S{i}", f"p{i}", None) for i in range(netlab.MAX_PHONES + 1)])
