"""Inside TLS with the virtual lab (issue 11): the privacy suite against the ``nokia7plus-tls`` phone, whose
firmware sends the incident's report over HTTPS to a host outside ``identifier_hosts``.

The fake internet's TLS servers write their key log; the phone's ``tls_keys: {source: file, path: auto,
require: true}`` points at it. The phone passes the cleartext and denied-host tests and fails only the
identifier-hosts test, with the decrypted report as evidence. A clone whose key log (pulled from the phone by
adb) holds no key for its sessions is an error (require fails closed), never a pass; the pulled copy sits 0600
beside the kept capture, and no key-log secret reaches any output or report file.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_privacy_suite import FAST_SETTLE_S, Outcome, copy_suite, read_junit, run_suite, suite_inventory

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("dumpcap") is None or shutil.which("ip") is None,
                       reason="needs dumpcap and iproute2 (run ci/setup.sh)"),
]

TLS_PHONE = "nokia7plus-tls"
BLIND = "tls-no-keylog"
REPORT_HOST = "zzhc.activation-cn.example"
SUITE_TIMEOUT_S = 420
BLIND_KEYLOG = "/data/local/tmp/keys.log"
#: the blind phone's key logger wrote a key log, but of some other session: its own flows have no key
UNRELATED_KEY = "CLIENT_RANDOM " + "ab" * 32 + " " + "cd" * 48
PLANT_CONFTEST = f'''
from __future__ import annotations

import shutil
import subprocess

import pytest


@pytest.fixture(autouse=True)
def _blind_phone_has_an_unrelated_key_log(phone, tmp_path):
    if phone.label != "{BLIND}":
        return
    host, port = phone.info()["adb_server"].rsplit(":", 1)
    local = tmp_path / "keys.log"
    local.write_text("{UNRELATED_KEY}\\n", encoding="ascii")
    subprocess.run([shutil.which("adb"), "-H", host, "-P", port, "-s", phone.serial, "push", str(local),
                    "{BLIND_KEYLOG}"], check=True, timeout=30, capture_output=True)
'''
TESTS = ("test_unlock_sends_no_identifier_in_cleartext", "test_no_traffic_to_denied_hosts",
         "test_identifiers_only_to_allowed_hosts")


@dataclass(frozen=True)
class TlsRun:
    outcomes: dict[tuple[str, str], Outcome]
    output: str
    files_text: str
    path: Path


@pytest.fixture(scope="module")
def tls_run(tmp_path_factory: pytest.TempPathFactory) -> TlsRun:
    path = tmp_path_factory.mktemp("tls-suite")
    inventory = suite_inventory((TLS_PHONE,), clones=((BLIND, TLS_PHONE),))
    assert FAST_SETTLE_S["unlock"] < 5
    blind = next(device for device in inventory["devices"] if device["label"] == BLIND)
    blind["tls_keys"] = {"source": "adb-pull", "path": BLIND_KEYLOG, "require": True}
    copy_suite(path, inventory, ("test_unlock.py", "test_policy.py"))
    (path / "tests" / "conftest.py").write_text(PLANT_CONFTEST, encoding="utf-8")
    junit = path / "junit.xml"
    output = run_suite(path, ["-p", "no:cacheprovider", "-rA", f"--junitxml={junit}",
                              "--phonehome-keep-pcaps=failed", "--alluredir", str(path / "allure")], {},
                       SUITE_TIMEOUT_S)
    files_text = "\n".join(file.read_text(encoding="utf-8", errors="replace")
                           for file in path.rglob("*") if file.is_file() and not file.name.endswith(".keys.log")
                           and file.suffix not in (".pcapng", ".pcap") and file.stat().st_size < 5_000_000)
    return TlsRun(outcomes=read_junit(junit), output=output, files_text=files_text, path=path)


def test_tls_phone_fails_only_the_identifier_hosts_test(tls_run: TlsRun) -> None:
    verdicts = {test: outcome.verdict for (test, device), outcome in tls_run.outcomes.items() if device == TLS_PHONE}
    assert verdicts == {"test_unlock_sends_no_identifier_in_cleartext": "passed",
                        "test_no_traffic_to_denied_hosts": "passed",
                        "test_identifiers_only_to_allowed_hosts": "leak"}, tls_run.output[-4000:]
    message = tls_run.outcomes[("test_identifiers_only_to_allowed_hosts", TLS_PHONE)].message
    assert "to hosts outside identifier_hosts" in message
    for name in ("imei", "imsi", "iccid", "serial", "phone", "location"):
        assert re.search(rf"- (?:\S+ sent )?{name} ", message), (name, message)  # the sending app, when named
    assert f"as tls>plain to {REPORT_HOST} (" in message and "phase unlock" in message
    assert "VNOKIA7P0005" not in message and "244051234567890" not in message  # masked
    assert "hmd-update" not in message.split("identifier_hosts:")[0]  # the allowed host is not blamed


def test_require_without_keys_is_an_error_not_a_pass(tls_run: TlsRun) -> None:
    for test in TESTS:
        outcome = tls_run.outcomes[(test, BLIND)]
        assert outcome.verdict == "error", outcome.message
        assert "CaptureError" in outcome.message and "tls_keys require" in outcome.message, outcome.message
        assert "no-key" in outcome.message


def test_no_key_log_secret_in_any_output(tls_run: TlsRun) -> None:
    for label in ("CLIENT_TRAFFIC_SECRET_0", "SERVER_HANDSHAKE_TRAFFIC_SECRET", "cd" * 48):
        assert label not in tls_run.output
        assert label not in tls_run.files_text.replace(PLANT_CONFTEST, "")
    # a key log sits 0600 beside each kept (failed) capture, so the evidence can be decrypted again once the lab
    # is gone: the blind phone's pulled from the phone for each of its tests, the TLS phone's copied from the
    # fake internet's for its one failed test; passed tests keep neither capture nor key log
    kept = sorted(tls_run.path.rglob("*.keys.log"))
    assert sorted(p.name.split("-test_")[0] for p in kept) == sorted([BLIND] * len(TESTS) + [TLS_PHONE]), kept
    for path in kept:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.with_name(path.name.removesuffix(".keys.log")).is_file()  # beside its capture
        if path.name.startswith(BLIND):
            assert path.read_text().strip() == UNRELATED_KEY
        else:
            assert "CLIENT_TRAFFIC_SECRET_0" in path.read_text()


def _steps(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for step in node.get("steps", []):
        yield step
        yield from _steps(step)


def test_report_shows_inside_tls_apart_and_masked(tls_run: TlsRun) -> None:
    """The Allure results: each phase step says its TLS coverage; decrypted findings get their own table."""
    allure = tls_run.path / "allure"
    results = [json.loads(p.read_text()) for p in allure.glob("*-result.json")]
    (result,) = [r for r in results if r.get("fullName", "").endswith("#test_identifiers_only_to_allowed_hosts")
                 and {"name": "device", "value": repr(TLS_PHONE)} in r.get("parameters", [])]
    steps = list(_steps(result))
    (phase,) = [s for s in steps if s["name"].startswith("phase unlock:")]
    assert "0 cleartext findings" in phase["name"] and "inside TLS: " in phase["name"], phase["name"]
    assert "decrypted, 0 without a key, 0 failed" in phase["name"], phase["name"]
    tables = {a["name"]: (allure / a["source"]).read_text() for a in phase["attachments"]
              if a.get("type") == "text/html"}
    inside = tables["inside TLS (unlock)"]
    assert "tls&gt;plain" in inside and REPORT_HOST in inside
    assert "VNOKIA7P0005" not in inside and "244051234567890" not in inside
    assert "tls&gt;" not in tables["findings (unlock)"]
