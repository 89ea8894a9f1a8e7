"""The nightly pipelines: both files valid against their vendored schemas (offline), both calling the README's
main-job script, raw results kept private and only the generated report published; and the script's shard/merge
logic run for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / "ci" / "github-nightly.yml"
GITLAB = ROOT / "ci" / "gitlab-nightly.yml"
NIGHTLY = ROOT / "ci" / "nightly.sh"
MAIN_JOB = "bash ci/nightly.sh"
#: check-jsonschema reads its vendored schemas from the wheel: no network
VALIDATE_TIMEOUT_S = 60
#: setup.sh's checks plus two generator runs
NIGHTLY_TIMEOUT_S = 180


def _check_jsonschema() -> str:
    found = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    assert Path(found).exists(), "check-jsonschema is not installed (pip install -e '.[test]')"
    return found


def validate(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_check_jsonschema(), "--builtin-schema", schema, str(path)], capture_output=True,
                          text=True, timeout=VALIDATE_TIMEOUT_S, check=False)


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.timeout(VALIDATE_TIMEOUT_S)
@pytest.mark.parametrize(("schema", "path"), [("vendor.github-workflows", GITHUB), ("vendor.gitlab-ci", GITLAB)],
                         ids=["github", "gitlab"])
def test_pipeline_is_valid(schema: str, path: Path) -> None:
    proc = validate(schema, path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok -- validation done" in proc.stdout


@pytest.mark.timeout(VALIDATE_TIMEOUT_S)
def test_validation_can_fail(tmp_path: Path) -> None:
    broken = _load(GITHUB)
    del broken["jobs"]["shard"]["runs-on"]
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert validate("vendor.github-workflows", path).returncode == 1


def test_readme_main_job_is_the_pipelines_script() -> None:
    assert MAIN_JOB in (ROOT / "README.md").read_text(encoding="utf-8")
    assert os.access(NIGHTLY, os.R_OK)


def test_github_shards_per_host_and_merge_publishes_only_the_report() -> None:
    jobs = _load(GITHUB)["jobs"]
    shard, report = jobs["shard"], jobs["report"]
    assert shard["runs-on"][0] == "self-hosted" and "matrix.host" in shard["runs-on"][1]
    assert shard["strategy"]["fail-fast"] is False
    runs = [step.get("run", "") for step in shard["steps"]]
    assert any(run.startswith(f"{MAIN_JOB} shard ") for run in runs)
    upload = next(s for s in shard["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and upload["with"]["path"].startswith("results/shards/")

    assert report["needs"] == "shard" and report["if"] == "always()"
    assert f"{MAIN_JOB} report" in [step.get("run", "") for step in report["steps"]]
    uses = [step.get("uses", "") for step in report["steps"]]
    assert any(u.startswith("actions/cache/restore") for u in uses)
    assert any(u.startswith("actions/cache/save") for u in uses)
    published = [s["with"]["path"] for s in report["steps"] if s.get("uses", "").startswith("actions/upload-")]
    assert published == ["reports/allure"]


def test_gitlab_shards_per_host_and_merge_publishes_only_the_report() -> None:
    config = _load(GITLAB)
    shard, pages = config["phonehome-shard"], config["pages"]
    assert shard["tags"] == ["$FARM_HOST"]
    assert {entry["FARM_HOST"] for entry in shard["parallel"]["matrix"]} >= {"farm-host-1"}
    assert any(line.startswith(f"{MAIN_JOB} shard ") for line in shard["script"])
    assert shard["artifacts"]["when"] == "always" and shard["artifacts"]["access"] != "all"
    assert shard["artifacts"]["paths"] == ["results/shards/$SHARD/"]

    assert f"{MAIN_JOB} report" in pages["script"]
    assert pages["artifacts"]["paths"] == ["public"]
    assert pages["cache"]["paths"] == ["reports/history/"] and pages["cache"]["when"] == "always"
    assert all(rule["when"] == "always" for rule in pages["rules"])


def _nightly(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(NIGHTLY), *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=NIGHTLY_TIMEOUT_S, check=False)


@pytest.mark.timeout(NIGHTLY_TIMEOUT_S * 2)
def test_nightly_merges_shards_with_history(sample_results: Path, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    for name in ("host-a", "host-b"):
        shutil.copytree(sample_results, shards / name)
    env = {"PHONEHOME_REPORT": str(tmp_path / "report"), "PHONEHOME_HISTORY": str(tmp_path / "h" / "h.jsonl")}
    for night in (1, 2):
        proc = _nightly("report", str(shards / "host-a"), str(shards / "host-b"), env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (tmp_path / "report" / "index.html").is_file()
        assert len((tmp_path / "h" / "h.jsonl").read_text().splitlines()) == night
    assert (tmp_path / "h" / "h.jsonl.phonehome-baseline.json").is_file()
    # the same phones in both shards: the merge says so, on stderr and on the opening page
    warning = "phone nokia-7-plus ran in 2 shards (host-a, host-b)"
    assert f"phonehome report: warning: {warning}" in proc.stderr
    assert warning in (tmp_path / "report" / "index.html").read_text()


def test_nightly_help_prints_its_usage() -> None:
    proc = _nightly("--help", env={})
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("The main job: the privacy suite in tests/")
    for text in ("bash ci/nightly.sh shard NAME", "PHONEHOME_INVENTORY=bench.yaml bash ci/nightly.sh",
                 "--phonehome-inventory=bench.yaml", "Exit status:", "exits 1 on purpose"):
        assert text in proc.stdout, text
    assert "set -uo pipefail" not in proc.stdout and "#" not in proc.stdout.splitlines()[0]


@pytest.mark.timeout(NIGHTLY_TIMEOUT_S)
def test_nightly_report_without_results_fails(tmp_path: Path) -> None:
    (tmp_path / "empty-shard").mkdir()
    env = {"PHONEHOME_REPORT": str(tmp_path / "report"), "PHONEHOME_HISTORY": str(tmp_path / "h.jsonl")}
    proc = _nightly("report", str(tmp_path / "empty-shard"), env=env)
    assert proc.returncode == 6
    assert "holds no results" in proc.stderr and "no results to report on" in proc.stderr
    assert not (tmp_path / "report").exists()
