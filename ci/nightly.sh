#!/usr/bin/env bash
# The main job: the privacy suite in tests/ against devices.yaml (virtual phones by default), then an Allure
# report in reports/allure. Farms run this script from ci/github-nightly.yml and ci/gitlab-nightly.yml.
# Extra arguments go to pytest (e.g. -m 'model("Nokia 7 Plus")', --phonehome-devices=...).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/ci/setup.sh" || exit $?
cd "$root"
results=${PHONEHOME_RESULTS:-results/allure-results}
report=${PHONEHOME_REPORT:-reports/allure}
rm -rf "$results"
mkdir -p "$results"
.venv/bin/python -m pytest tests --alluredir="$results" "$@"
status=$?
if [ -x node_modules/.bin/allure ]; then
  .venv/bin/python -m phonehome.report.generate "$results" "$report" || status=${status:-1}
fi
exit $status
