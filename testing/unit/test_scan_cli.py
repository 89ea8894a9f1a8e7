"""``phonehome scan``: exit codes, table, OUT.json, one-line errors (the contract of issue 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phonehome.cli import main
from phonehome.errors import CaptureError
from phonehome.identifiers import mask
from phonehome.scan.evidence import dissect_frames
from phonehome.testing.captures import CaptureBuilder, http_request, tls_client_hello, tls_server_hello

IMEI = "356938035643809"
IDS_YAML = f'imei: "{IMEI}"\nserial: R58M12ABCDE\n'
CLI_TIMEOUT_S = 60


@pytest.fixture
def ids(tmp_path: Path) -> Path:
    path = tmp_path / "ids.yaml"
    path.write_text(IDS_YAML)
    return path


def _leaky(tmp_path: Path) -> Path:
    cap = CaptureBuilder()
    conn = cap.tcp("10.0.0.2", "93.184.216.34", 80)
    conn.send(http_request("GET", f"/?imei={IMEI}", host="leak.example"))
    return cap.write_pcap(tmp_path / "leaky.pcap")


def _clean(tmp_path: Path) -> Path:
    cap = CaptureBuilder()
    conn = cap.tcp("10.0.0.2", "93.184.216.34", 443)
    conn.send(tls_client_hello("clean.example"))
    conn.reply(tls_server_hello())
    return cap.write_pcapng(tmp_path / "clean.pcapng")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["scan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_exit_1_with_masked_table(tmp_path: Path, ids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, str(_leaky(tmp_path)), "--identifiers", str(ids))
    assert code == 1
    assert IMEI not in out
    header = out.splitlines()[0].split()
    assert header == ["IDENTIFIER", "VALUE", "ENCODING", "PROTOCOL", "HOST", "DESTINATION", "FRAMES", "PHASE"]
    row = out.splitlines()[1].split()
    assert row[0] == "imei" and row[2] == "plain" and row[3] == "http" and row[4] == "leak.example"
    assert row[5] == "93.184.216.34:80" and row[6] == "4"
    assert "1 cleartext finding" in out
    assert err == ""


def test_show_identifiers(tmp_path: Path, ids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "out.json"
    code, out, _ = _run(capsys, str(_leaky(tmp_path)), "-i", str(ids), "--show-identifiers", "--json", str(out_json))
    assert code == 1 and IMEI in out
    assert json.loads(out_json.read_text())["findings"][0]["value"] == IMEI


def test_exit_0_when_clean(tmp_path: Path, ids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, str(_clean(tmp_path)), "--identifiers", str(ids))
    assert code == 0
    assert "0 cleartext findings" in out and "(1 encrypted)" in out


def test_json_and_phases(tmp_path: Path, ids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phases = tmp_path / "phases.json"
    phases.write_text(json.dumps([{"name": "boot", "start": 0, "end": 2_000_000_000}]))
    out_json = tmp_path / "out.json"
    code, out, _ = _run(capsys, str(_leaky(tmp_path)), "-i", str(ids), "--json", str(out_json), "--phases",
                        str(phases))
    assert code == 1
    data = json.loads(out_json.read_text())
    assert set(data) == {"capture", "findings", "flows"}
    (finding,) = data["findings"]
    assert finding["phase"] == "boot" and finding["frames"] == [4] and finding["identifier"] == "imei"
    assert IMEI not in out_json.read_text()
    assert finding["value"] == mask(IMEI)  # which of two IMEIs leaked, still masked
    assert "boot" in out


def test_json_to_stdout_and_the_phases_beside_the_capture(tmp_path: Path, ids: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``--json -`` writes OUT.json to stdout (the table goes to stderr); CAPTURE.phases.json, as phonehome's
    captures leave it, is used without --phases."""
    capture = _leaky(tmp_path)
    sidecar = capture.with_name(capture.name + ".phases.json")
    sidecar.write_text(json.dumps([{"name": "unlock", "start": 0, "end": 2_000_000_000}]))
    code, out, err = _run(capsys, str(capture), "-i", str(ids), "--json", "-")
    assert code == 1
    (finding,) = json.loads(out)["findings"]
    assert finding["phase"] == "unlock" and finding["value"] == mask(IMEI)
    assert f"phonehome scan: phases from {sidecar}" in err and "1 cleartext finding" in err
    code, out, _ = _run(capsys, str(capture), "-i", str(ids), "--phases", str(tmp_path / "none.json"))
    assert code == 2  # an explicit --phases wins, and a missing one is an error


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.write_bytes(b""), "empty file, not a capture"),
    (lambda p: p.write_bytes(b"garbage garbage garbage"), "not a pcap or pcapng file"),
    (lambda p: None, "capture file not found"),
])
def test_bad_capture_is_one_line_exit_2(tmp_path: Path, ids: Path, capsys: pytest.CaptureFixture[str],
                                        make: object, problem: str) -> None:
    path = tmp_path / "bad.pcap"
    make(path)  # type: ignore[operator]
    code, _out, err = _run(capsys, str(path), "-i", str(ids))
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(f"phonehome scan: error: {path}: {problem}")
    assert "(" in err and "Traceback" not in err


def test_capture_without_packets_is_exit_2(tmp_path: Path, ids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = CaptureBuilder().write_pcap(tmp_path / "nothing.pcap")
    code, _, err = _run(capsys, str(path), "-i", str(ids))
    assert code == 2 and "holds no packets" in err


@pytest.mark.parametrize("content, problem", [
    ("imei: [", "YAML syntax error"),
    ("imei: '12'", "IMEI must be 15 digits"),
    ("colour: blue", "unknown identifier 'colour'"),
])
def test_bad_identifiers_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                            problem: str) -> None:
    ids = tmp_path / "ids.yaml"
    ids.write_text(content)
    code, _, err = _run(capsys, str(_leaky(tmp_path)), "-i", str(ids))
    assert code == 2 and err.count("\n") == 1 and problem in err and str(ids) in err


def test_bad_phases_is_exit_2(tmp_path: Path, ids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phases = tmp_path / "phases.json"
    phases.write_text('{"boot": 1}')
    code, _, err = _run(capsys, str(_leaky(tmp_path)), "-i", str(ids), "--phases", str(phases))
    assert code == 2 and err.count("\n") == 1 and "phases must be a JSON list" in err


def test_json_into_missing_directory_is_exit_2(tmp_path: Path, ids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, str(_leaky(tmp_path)), "-i", str(ids), "--json", str(tmp_path / "no" / "o.json"))
    assert code == 2 and "directory does not exist" in err


def test_missing_identifiers_option_is_usage_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["scan", str(_leaky(tmp_path))])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--identifiers" in err


def test_truncated_capture_warns_and_completes(tmp_path: Path, ids: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _leaky(tmp_path)
    path.write_bytes(path.read_bytes() + b"\x01\x02\x03")
    code, _out, err = _run(capsys, str(path), "-i", str(ids))
    assert code == 1
    assert err.startswith(f"phonehome scan: warning: {path}: capture truncated")
    assert err.count("\n") == 1


@pytest.mark.timeout(CLI_TIMEOUT_S)
def test_help_states_the_contract() -> None:
    proc = subprocess.run([sys.executable, "-m", "phonehome", "scan", "--help"], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, check=False)
    assert proc.returncode == 0
    text = proc.stdout
    for needle in ("exit status", "0  no cleartext finding", "1  at least one", "2  bad input", "imei", "gaid",
                   "wifi_mac", "location", "custom", "OUT.json", "findings", "flows", "excerpt", "phase",
                   "One finding per (flow, identifier, encoding)"):
        assert needle in text, needle


@pytest.mark.timeout(CLI_TIMEOUT_S)
def test_console_run_exit_codes(tmp_path: Path, ids: Path) -> None:
    """The real entry point, as scripts call it."""
    leaky = subprocess.run([sys.executable, "-m", "phonehome", "scan", str(_leaky(tmp_path)), "-i", str(ids)],
                           capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
    assert leaky.returncode == 1 and "imei" in leaky.stdout
    bad = subprocess.run([sys.executable, "-m", "phonehome", "scan", str(ids), "-i", str(ids)],
                         capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


@pytest.mark.timeout(CLI_TIMEOUT_S * 2)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_evidence_dissects_the_cited_frames_masked(tmp_path: Path, ids: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, str(_leaky(tmp_path)), "-i", str(ids), "--evidence")
    assert code == 1, err
    evidence = out.split("== imei (plain)", 1)[1]
    assert "frame 4" in evidence and "http.host: leak.example" in evidence
    assert "10.0.0.2:40000 -> 93.184.216.34:80" in evidence
    assert IMEI not in out and mask(IMEI) in evidence


def _flaky_tshark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int) -> None:
    """A ``tshark`` first on PATH that exits 2 (as a crashing tshark does) on its first ``failures`` reads of a
    capture, and is the real tshark after that."""
    real = shutil.which("tshark")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    count = tmp_path / "reads"
    script = bin_dir / "tshark"
    script.write_text(f"""#!/bin/sh
case " $* " in *" -r "*)
  n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}
  if [ "$n" -lt {failures} ]; then echo "tshark: simulated crash reading {IMEI}" >&2; exit 2; fi;;
esac
exec {real} "$@"
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(real).parent}:/usr/bin:/bin")


@pytest.mark.timeout(CLI_TIMEOUT_S * 2)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_evidence_survives_one_failed_dissection(tmp_path: Path, ids: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _flaky_tshark(tmp_path, monkeypatch, failures=1)
    code, out, err = _run(capsys, str(_leaky(tmp_path)), "-i", str(ids), "--evidence")
    assert code == 1 and err == ""
    assert "http.host: leak.example" in out.split("== imei (plain)", 1)[1]


@pytest.mark.timeout(CLI_TIMEOUT_S * 2)
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_evidence_that_cannot_be_dissected_leaves_the_findings(tmp_path: Path, ids: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    _flaky_tshark(tmp_path, monkeypatch, failures=99)
    code, out, err = _run(capsys, str(_leaky(tmp_path)), "-i", str(ids), "--evidence")
    assert code == 1  # the finding stands; the dissection is evidence, best effort
    assert "could not dissect frames [4] for evidence" in out.split("== imei (plain)", 1)[1]
    assert err.startswith("phonehome scan: warning: could not dissect frames [4]") and "failed 2 times" in err
    assert "simulated crash" in err and IMEI not in err + out and mask(IMEI) in err

    cap = CaptureBuilder()  # two findings: tshark fails twice on the first, and is not run for the second
    conn = cap.tcp("10.0.0.2", "93.184.216.34", 80)
    conn.send(http_request("GET", f"/?imei={IMEI}&sn=R58M12ABCDE", host="leak.example"))
    (tmp_path / "reads").unlink()
    code, out, err = _run(capsys, str(cap.write_pcap(tmp_path / "two.pcap")), "-i", str(ids), "--evidence")
    assert code == 1 and out.count("== ") == 2 and "(not dissected: tshark could not" in out
    assert (tmp_path / "reads").read_text().strip() == "2" and err.count("warning:") == 1


def test_evidence_without_tshark_is_a_capture_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no tshark on it
    with pytest.raises(CaptureError, match="tshark is not installed"):
        dissect_frames(_leaky(tmp_path), [4])
