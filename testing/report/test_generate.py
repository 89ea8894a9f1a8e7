"""The report generator: the real pinned Allure 3, our categories, history, "what changed", and no analytics."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phonehome.report import diff, generate

#: one generator run takes ~2 s on this machine
GENERATE_TEST_TIMEOUT_S = 120


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "phonehome.report.generate", *args], capture_output=True,
                          text=True, timeout=GENERATE_TEST_TIMEOUT_S, check=False)


def _report_text(out: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in out.rglob("*")
                     if p.is_file() and p.suffix in (".html", ".js", ".css", ".json"))


def _observed(results: Path, devices: dict[str, list[str]]) -> None:
    flows = {device: [{"host": host, "dst": "203.0.113.9", "dport": 443, "transport": "tcp", "encrypted": True}
                      for host in hosts] for device, hosts in devices.items()}
    observations = diff.Observations()
    for device, device_flows in flows.items():
        observations.add(device, device_flows, [])
    observations.write(results)


@pytest.mark.timeout(GENERATE_TEST_TIMEOUT_S)
def test_report_has_no_analytics_and_no_off_machine_reference(sample_results: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    (out / "stale").mkdir(parents=True)
    (out / "stale" / "old.html").write_text("<script src='https://www.googletagmanager.com/gtag/js'></script>")
    proc = _run_cli(str(sample_results), str(out), "--history", str(tmp_path / "history" / "history.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"report: {out / 'index.html'}"
    assert not (out / "stale").exists()  # the output folder is cleaned first
    assert generate.find_leftovers(out) == []
    app = _report_text(out)
    for marker in ("googletagmanager", "gtag(", "dataLayer", "G-LNDJ3J7WT0", "allurereport.org",
                   "trace.playwright.dev"):
        assert marker not in app, marker
    assert "http://www.w3.org/2000/svg" in app  # namespace names stay: the app needs them to draw


@pytest.mark.timeout(GENERATE_TEST_TIMEOUT_S)
def test_categories_and_results_reach_the_report(sample_results: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    generate.generate([sample_results], out)
    results = [json.loads(p.read_text()) for p in (out / "data" / "test-results").glob("*.json")]
    by_name = {r["name"]: r for r in results}
    assert by_name["Nokia 7 Plus (nokia-7-plus): unlock sends no identifier in cleartext"]["status"] == "failed"
    assert by_name["Pixel 7 (fixed-phone): power on capture fault"]["status"] == "broken"
    categories = json.loads((out / "widgets" / "default" / "categories.json").read_text())
    names = json.dumps(categories)
    for category in ("Cleartext identifier leak", "Traffic to a denied host", "Capture fault"):
        assert category in names, category
    attachments = list((out / "data" / "attachments").iterdir())
    assert any(p.suffix == ".pcapng" for p in attachments)


@pytest.mark.timeout(GENERATE_TEST_TIMEOUT_S)
def test_history_and_what_changed_across_two_nights(sample_results: Path, tmp_path: Path) -> None:
    history = tmp_path / "ci-cache" / "history.jsonl"
    night1 = tmp_path / "night1"
    shutil.copytree(sample_results, night1)
    generate.generate([night1], tmp_path / "report1", history=history)
    baseline = diff.load_baseline(diff.baseline_path_for(history))
    assert set(baseline.devices) == {"nokia-7-plus", "fixed-phone"}
    assert len(history.read_text().splitlines()) == 1

    night2 = tmp_path / "night2"
    shutil.copytree(sample_results, night2)
    _observed(night2, {"fixed-phone": ["new-tracker.example"]})
    out = tmp_path / "report2"
    generate.generate([night2], out, history=history)
    assert len(history.read_text().splitlines()) == 2
    results = [json.loads(p.read_text()) for p in (out / "data" / "test-results").glob("*.json")]
    changed = {r["name"]: r for r in results if "What changed" in r["name"]}
    fixed = next(r for name, r in changed.items() if "fixed-phone" in name)
    assert "1 new destinations, 0 new findings" in fixed["name"]
    nokia = next(r for name, r in changed.items() if "nokia-7-plus" in name)
    assert "0 new destinations, 0 new findings" in nokia["name"]
    # information, not tests: "unknown", which Allure 3 counts in no pass rate (3 of 7 tests passed, not 5 of 9)
    assert {r["status"] for r in changed.values()} == {diff.CHANGES_STATUS}
    pie = json.loads((out / "widgets" / "pie_chart.json").read_text())
    assert pie["percentage"] == 42.85
    page = (out / "index.html").read_text()
    assert "Pass rate 42.86 % (3 of 7 tests passed)" in page
    assert f"What changed: <a href='allure.html#{fixed['id']}'>What changed on fixed-phone since" in page
    attachment_text = "\n".join(p.read_text() for p in (out / "data" / "attachments").glob("*.html"))
    assert "new-tracker.example" in attachment_text
    assert diff.destination_of({"host": "new-tracker.example", "dport": 443, "transport": "tcp"}) in (
        diff.load_baseline(diff.baseline_path_for(history)).devices["fixed-phone"].destinations)


@pytest.mark.timeout(GENERATE_TEST_TIMEOUT_S)
def test_shards_merge_into_one_report(sample_results: Path, tmp_path: Path) -> None:
    shard_a, shard_b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(sample_results, shard_a)
    shard_b.mkdir()
    for path in sample_results.iterdir():  # a second shard with the same tests under other uuids
        text = path.read_bytes()
        if path.name.endswith("-result.json"):
            data = json.loads(text)
            data["uuid"] = "b-" + data["uuid"]
            data["parameters"] = [*data.get("parameters", []), {"name": "shard", "value": "b"}]
            data["historyId"] = "b-" + str(data["historyId"])
            (shard_b / ("b-" + path.name)).write_text(json.dumps(data))
        elif "-attachment" in path.name:
            (shard_b / path.name).write_bytes(text)
    out = tmp_path / "merged"
    generate.generate([shard_a, shard_b], out)
    assert len(list((out / "data" / "test-results").glob("*.json"))) == 14


@pytest.mark.timeout(GENERATE_TEST_TIMEOUT_S)
def test_report_opens_with_a_verdict_per_phone(sample_results: Path, tmp_path: Path) -> None:
    """index.html is the verdict page, linking each test to its result in the Allure app (allure.html)."""
    out = tmp_path / "report"
    assert generate.generate([sample_results], out) == out / "index.html"
    app = (out / generate.ALLURE_PAGE).read_text()
    assert "app-" in app and "<script" in app  # Allure's own page, moved
    page = (out / "index.html").read_text()
    ids = {r["name"]: r["id"] for r in (json.loads(p.read_text()) for p in (out / "data" / "test-results").glob("*"))}
    nokia = page[page.index("<tr data-phone='nokia-7-plus'>"):]
    nokia = nokia[:nokia.index("</tr>")]
    assert ">FAIL<" in nokia
    assert "imei sent in cleartext in unlock to fota.nokia-updates.example" in nokia
    leak_id = ids["Nokia 7 Plus (nokia-7-plus): unlock sends no identifier in cleartext"]
    assert f"<a href='allure.html#{leak_id}'>unlock sends no identifier in cleartext</a>" in nokia
    fixed = page[page.index("<tr data-phone='fixed-phone'>"):]
    assert "talked to denied host(s) telemetry.denied.example" in fixed
    assert "1 test(s) inconclusive: CaptureError: dumpcap saw no packet" in fixed
    assert "<script" not in page


@pytest.mark.timeout(GENERATE_TEST_TIMEOUT_S)
def test_evidence_manifest_is_attached_and_linked(sample_results: Path, tmp_path: Path) -> None:
    """The manifest a run copied into its results folder (and its signature) is in the report: beside the
    verdict page, linked from it, and an Allure global attachment."""
    results = tmp_path / "results"
    shutil.copytree(sample_results, results)
    (results / "phonehome-manifest.json").write_text('{"format": "phonehome-manifest/1", "files": []}\n')
    (results / "phonehome-manifest.json.sig").write_text('{"algorithm": "ed25519"}\n')
    out = tmp_path / "report"
    generate.generate([results], out)
    assert (out / "manifest.json").read_text() == (results / "phonehome-manifest.json").read_text()
    assert (out / "manifest.json.sig").is_file()
    page = (out / "index.html").read_text()
    assert "<a href='manifest.json'>evidence manifest</a>" in page
    assert "<a href='manifest.json.sig'>its signature</a>" in page
    globals_ = json.loads((out / "widgets" / "globals.json").read_text())
    assert [a["name"] for a in globals_["attachments"]] == ["manifest.json", "manifest.json.sig"]


def test_empty_results_are_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = _run_cli(str(tmp_path / "empty"), str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no Allure results" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run_cli(str(tmp_path / "missing"), str(tmp_path / "out"))
    assert proc.returncode == 2 and "no such results folder" in proc.stderr


def test_strip_and_verify_on_synthetic_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text(
        "<html><head><script async src=\"https://www.googletagmanager.com/gtag/js?id=G-X\"></script>"
        "<script>window.dataLayer=[];function gtag(){dataLayer.push(arguments);}</script>"
        "<script src=\"app.js\"></script><link rel=stylesheet href=\"https://fonts.example.com/a.css\"></head>"
        "<body><a href=\"http://127.0.0.1:8000/x\">local</a></body></html>")
    (out / "app.js").write_text('var ns="http://www.w3.org/2000/svg",u="https://cdn.example.net/lib.js";')
    (out / "data.json").write_text('{"excerpt": "GET http://tracker.example.com/?imei=35*******09"}')
    assert len(generate.find_leftovers(out)) >= 4
    assert generate.strip_report(out) == 2
    assert generate.find_leftovers(out) == []
    html = (out / "index.html").read_text()
    assert '<script src="app.js"></script>' in html and "http://127.0.0.1:8000/x" in html
    assert "tracker.example.com" in (out / "data.json").read_text()  # evidence is data, left as it was


def test_leftover_fails_closed(tmp_path: Path) -> None:
    """A tracker call that stripping cannot remove (say, inside a future bundle) removes the report."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("<html><body><script src='app.js'></script></body></html>")
    (out / "app.js").write_text('window.gtag("event","page_view");')
    with pytest.raises(generate.ReportError, match=r"gtag\(.*removed, not published"):
        generate.make_clean(out)
    assert not out.exists()
