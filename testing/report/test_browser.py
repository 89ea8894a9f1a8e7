"""The generated report in a real browser: served on 127.0.0.1, clicked into, and not a single request elsewhere.

Debian's chromium driven by playwright-core (``browse.mjs``); see the notes on Allure for the launch flags.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phonehome.inventory import load_inventory
from phonehome.manifest import signing
from phonehome.provisions import provision_ids
from phonehome.report import generate

ROOT = Path(__file__).resolve().parents[2]
BROWSE_SCRIPT = Path(__file__).with_name("browse.mjs")
#: the README's main job on two virtual phones, unlock only: lab start, two tests, the report
MAIN_JOB_TIMEOUT_S = 420
#: Chromium start, page load and a few clicks: ~5 s; generous for a loaded CI machine
BROWSE_TIMEOUT_S = 120

NOKIA_SPEC: dict[str, Any] = {
    "phone": "nokia-7-plus",
    "verdictTexts": ["2 of 2 phone(s) leak", "Nokia 7 Plus (nokia-7-plus)",
                     "imei sent in cleartext in unlock to fota.nokia-updates.example"],
    "testLink": "unlock sends no identifier in cleartext",
    "test": "Nokia 7 Plus (nokia-7-plus): unlock sends no identifier in cleartext",
    "texts": ["Failed", "Critical", "Cleartext identifier leak", "sent in cleartext (base64)"],
    "step": "phase unlock:",
    "findings": "findings (unlock)",
    "findingsTexts": ["imei", "base64", "fota.nokia-updates.example", "MzU2OTM4MD***************DM4MDk="],
    "pcap": "capture (unlock).pcapng",
}


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep the test output to what matters
        pass


@functools.cache
def _node() -> str:
    node = shutil.which("node")
    assert node, "node is not installed (bash ci/setup.sh installs it)"
    return node


def serve(directory: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def browse(url: str, spec: dict[str, Any], tmp_path: Path) -> tuple[int, dict[str, Any]]:
    spec_path = tmp_path / "spec.json"
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    spec_path.write_text(json.dumps({**spec, "url": url, "shots": str(shots)}), encoding="utf-8")
    proc = subprocess.run([_node(), str(BROWSE_SCRIPT), str(spec_path)], capture_output=True, text=True,
                          timeout=BROWSE_TIMEOUT_S, check=False)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"browse.mjs printed nothing; stderr: {proc.stderr[-2000:]}"
    return proc.returncode, json.loads(lines[-1])


@pytest.fixture(scope="module")
def report(sample_results: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "report"
    generate.generate([sample_results], out)
    return out


@pytest.mark.timeout(BROWSE_TIMEOUT_S + 30)
def test_failing_test_shows_finding_and_pcap_and_nothing_leaves_the_machine(report: Path, tmp_path: Path) -> None:
    for url in serve(report):
        returncode, result = browse(url, NOKIA_SPEC, tmp_path)
        assert result["problems"] == [], result
        assert returncode == 0
        assert result["offMachine"] == []
        assert result["pcapMagic"] == "0a0d0d0a"
        _assert_screenshots(result["shots"], opening=[
            "phonehome: phones phoning home: 2 of 2 phone(s) leak", "Pass rate 42.86 % (3 of 7 tests passed)",
            "Nokia 7 Plus (nokia-7-plus)\tFAIL\timei sent in cleartext in unlock to fota.nokia-updates.example",
            "Pixel 7 (fixed-phone)\tFAIL\ttalked to denied host(s) telemetry.denied.example"],
            failing=["Nokia 7 Plus (nokia-7-plus): unlock sends no identifier in cleartext", "Failed", "Critical",
                     "phase unlock: 1 cleartext findings"])
        assert any("/data/attachments/" in r for r in result["requests"])  # attachments load on demand
        assert all(r.startswith((url.rsplit("/", 1)[0], "blob:", "data:")) for r in result["requests"])


def _assert_screenshots(shots: dict[str, Any], *, opening: list[str], failing: list[str]) -> None:
    """Both screenshots were taken (real PNGs) and the page showed these texts when they were."""
    for name, expected in (("opening", opening), ("failing-phone", failing)):
        shot = shots[name]
        assert Path(shot["path"]).read_bytes()[:4] == b"\x89PNG", name
        for text in expected:
            assert text in shot["text"], (name, text, shot["text"][:3000])


@pytest.mark.timeout(BROWSE_TIMEOUT_S + 30)
def test_browser_check_catches_a_request_off_the_machine(report: Path, tmp_path: Path) -> None:
    """The check must be able to fail: a report with a tracker pixel added is caught (and the pixel blocked)."""
    tampered = tmp_path / "tampered"
    shutil.copytree(report, tampered)
    index = tampered / generate.ALLURE_PAGE
    index.write_text(index.read_text().replace(
        "</body>", '<img src="http://198.51.100.7/pixel.gif" alt=""></body>'), encoding="utf-8")
    for url in serve(tampered):
        returncode, result = browse(url, NOKIA_SPEC, tmp_path)
    assert returncode == 1
    assert result["offMachine"] == ["http://198.51.100.7/pixel.gif"]
    assert any("left the machine" in p for p in result["problems"])


@pytest.mark.timeout(MAIN_JOB_TIMEOUT_S + BROWSE_TIMEOUT_S)
def test_main_job_report_from_virtual_phones(tmp_path: Path) -> None:
    """The README's main job (``bash ci/nightly.sh``) on the Nokia-incident phone and its fixed twin leaves a
    browsable report: the incident phone fails unlock with its findings and pcap, the fixed phone is green,
    and nothing in the report reaches off the machine."""
    key = Ed25519PrivateKey.generate()
    public = tmp_path / "lab.pub.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    raw_key = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    env = {**os.environ, "PHONEHOME_RESULTS": str(tmp_path / "results"), "PHONEHOME_REPORT": str(tmp_path / "report"),
           "PHONEHOME_HISTORY": str(tmp_path / "history" / "history.jsonl"),
           "PHONEHOME_CAPTURE_DIR": str(tmp_path / "captures"), signing.KEY_ENV: base64.b64encode(raw_key).decode()}
    env.pop(signing.KEY_FILE_ENV, None)
    proc = subprocess.run(["bash", "ci/nightly.sh", "-k", "unlock", "-p", "no:cacheprovider",
                           "--phonehome-device", "nokia7plus-2019", "--phonehome-device", "nokia7plus-fixed"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=MAIN_JOB_TIMEOUT_S, check=False)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # the incident phone leaks
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    report = tmp_path / "report"
    results = {r["name"]: r for r in (json.loads(p.read_text()) for p in (report / "data" / "test-results").glob("*.json"))}
    leaky_title = "Nokia 7 Plus (nokia7plus-2019): unlock sends no identifier in cleartext"
    assert results[leaky_title]["status"] == "failed"
    assert results["Nokia 7 Plus (nokia7plus-fixed): unlock sends no identifier in cleartext"]["status"] == "passed"
    nokia = results[leaky_title]
    evidence = {a["link"]["name"] for a in nokia["attachments"]}  # the generated report's attachment links
    assert "frames cited by findings" in evidence, evidence
    spec = {
        "phone": "nokia7plus-2019",
        "verdictTexts": ["1 of 2 phone(s) leak", "Nokia 7 Plus (nokia7plus-2019)", "sent in cleartext in unlock to"],
        "testLink": "unlock sends no identifier in cleartext",
        "test": leaky_title,
        "texts": ["Failed", "Critical", "Cleartext identifier leak", "in cleartext"],
        "step": "phase unlock:",
        "findings": "findings (unlock)",
        "findingsTexts": ["imei", "zzhc.vnet-cn.example", "http"],
        "pcap": "capture (unlock).pcapng",
    }
    for url in serve(report):
        returncode, result = browse(url, spec, tmp_path)
        assert result["problems"] == [], result
        assert returncode == 0 and result["offMachine"] == []
        _assert_evidence_manifest(report, tmp_path / "captures", public)
        _assert_screenshots(result["shots"], opening=[
            "phonehome: phones phoning home: 1 of 2 phone(s) leak", "Pass rate 50.00 % (1 of 2 tests passed)",
            "Nokia 7 Plus (nokia7plus-2019)\tFAIL\t", "Nokia 7 Plus (nokia7plus-fixed)\tPASS\t",
            "evidence manifest"],
            failing=[leaky_title, "Failed", "Critical", "phase unlock:"])


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "phonehome", "verify", *args], capture_output=True, text=True,
                          timeout=BROWSE_TIMEOUT_S, check=False)


def _assert_evidence_manifest(report: Path, captures: Path, public: Path) -> None:
    """The run's signed manifest is in the report; it verifies against the captures and the lab's key, names
    each phone's verdict and build, holds no identifier in clear, and a changed capture is caught."""
    manifest = report / "manifest.json"
    assert (report / "manifest.json.sig").is_file()
    assert (captures / "manifest.json").read_bytes() == manifest.read_bytes()
    proc = _verify(str(manifest), "--files", str(captures), "--key", str(public))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the leaky phone's capture, its phases and its unlock slice, and its screenshot; the clean phone's three
    # files were deleted (--phonehome-keep-pcaps=failed) but keep their hashes
    assert "OK: 4 file(s) re-hashed, 3 not kept by the run; signature by key sha256" in proc.stdout
    data = json.loads(manifest.read_text())
    assert sorted(f["role"] for f in data["files"] if f["kept"]) == ["capture", "evidence: screenshot", "phases",
                                                                     "slice"]
    assert {v["device"]: v["verdict"] for v in data["verdicts"]} == {"nokia7plus-2019": "fail",
                                                                      "nokia7plus-fixed": "pass"}
    assert data["verdicts"][0]["tests"][0]["provisions"] == list(provision_ids())
    assert data["phones"]["nokia7plus-2019"]["fingerprint"].startswith("virtual/nokia_7_plus/")
    assert data["phones"]["nokia7plus-2019"]["identifiers"]["imei"]["source"] == "phone: service call iphonesubinfo 1"
    assert {"dumpcap", "tshark", "adb", "uiautomator2", "allure", "phonehome"} <= set(data["tools"])
    assert [p["name"] for p in data["captures"][0]["phases"]] == ["unlock"]
    inventory = load_inventory(ROOT / "devices.yaml")
    text = manifest.read_text()
    for entry in inventory.devices:
        for _, value in entry.identifiers.values:
            assert value not in text, f"{entry.label}: an identifier in clear in the manifest"
    kept = next(f for f in data["files"] if f["kept"] and f["role"] == "capture")
    with (captures / kept["path"]).open("r+b") as fh:
        fh.seek(40)
        fh.write(b"\xff\xff")
    proc = _verify(str(manifest), "--files", str(captures), "--key", str(public))
    assert proc.returncode == 1 and f"{kept['path']}: changed since the run" in proc.stdout, proc.stdout
