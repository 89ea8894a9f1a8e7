#!/usr/bin/env bash
# The project's own tests: unit, plugin (pytester + virtual phones + real dumpcap) and report tests.
# Lab tests need real phones and are skipped unless --lab is given. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PHONEHOME_REQUIRE_SPEEDUPS=1  # the C extension must have been built: setup fails, and a test, if not
bash "$root/ci/setup.sh"
cd "$root"
export ADBUTILS_ADB_PATH=/bin/false  # never let adbutils start a real adb server behind a test's back
echo "phonehome selftest: ruff and mypy --strict"
.venv/bin/ruff check --quiet .
.venv/bin/mypy src
for tier in testing/unit testing/plugin testing/report testing/lab tests benchmarks; do .venv/bin/mypy "$tier"; done
exec .venv/bin/python -m pytest testing -p no:cacheprovider "$@"
