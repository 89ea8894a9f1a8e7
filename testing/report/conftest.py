"""Fixtures of the report tests: raw Allure results from the sample suite in :mod:`reportsuite`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reportsuite import run_sample_suite, write_sample_suite


@pytest.fixture(scope="session")
def sample_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Raw results of one run of the sample suite (shared by the generator and browser tests)."""
    base = tmp_path_factory.mktemp("sample")
    results = base / "allure-results"
    proc = run_sample_suite(write_sample_suite(base / "suite"), results)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the leaky phone and the denied host fail
    yield results
