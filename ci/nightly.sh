#!/usr/bin/env bash
# The main job: the privacy suite in tests/ against devices.yaml (virtual phones by default), then an Allure
# report in reports/allure with history and "what changed since the previous run". Farms run the same script
# from ci/github-nightly.yml and ci/gitlab-nightly.yml, split into shards (one per farm host or device group)
# and a final merge.
#
#   bash ci/nightly.sh [PYTEST_ARGS...]              suite + report on this machine (the README's main job)
#   bash ci/nightly.sh shard NAME [PYTEST_ARGS...]   suite only; raw results in results/shards/NAME
#   bash ci/nightly.sh report [RESULTS_DIR...]       one report from shards' results (default: results/shards/*)
#
#   bash ci/nightly.sh --help                        this text
#
# PYTEST_ARGS go to pytest (e.g. --phonehome-device=nokia7plus-2019, --phonehome-model="Nokia 7 Plus"); give
# an option's value with '=' (--phonehome-inventory=bench.yaml): a value after a space may be taken as a test path.
# A bench: PHONEHOME_INVENTORY=bench.yaml bash ci/nightly.sh
# Environment:
#   PHONEHOME_RESULTS  raw results folder of a full run or a shard (never publish it: it holds unmasked values)
#   PHONEHOME_REPORT   the report folder, emptied first (default reports/allure): the only thing to publish
#   PHONEHOME_HISTORY  Allure history file (default reports/history/history.jsonl); the "what changed"
#                      baseline sits next to it. CI restores that folder before the report and saves it after.
#   PHONEHOME_WORKERS  pytest-xdist workers (e.g. 2 with several phones on one host; default: no xdist)
#   PHONEHOME_DEVICE / PHONEHOME_INVENTORY  select devices / inventory (the plugin reads them); on a farm, each
#                      runner names its own inventory, so that no phone runs in two shards
#   PHONEHOME_SIGNING_KEY / PHONEHOME_SIGNING_KEY_FILE  sign the run's evidence manifest (docs/verdicts.md)
# Exit status: pytest's (0 = every phone passed; 1 = a phone leaked or broke a policy, or a device or capture
# fault left a test inconclusive: the report is made all the same; 4 = a usage error such as a bad devices.yaml;
# 5 = no test ran), 3 when the report could not be made clean, 6 for a report without results (no shard
# left any: pytest's own codes stop at 5). With the default devices.yaml the main job exits 1 on purpose: its
# leaky virtual phones fail.
set -uo pipefail
case "${1:-}" in
  -h|--help)
    sed -n '2,/^set -uo pipefail/{/^set -uo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit 0
    ;;
esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/ci/setup.sh" || exit $?
cd "$root"

report=${PHONEHOME_REPORT:-reports/allure}
history=${PHONEHOME_HISTORY:-reports/history/history.jsonl}
EXIT_NO_RESULTS=6  # not one of pytest's exit codes (0-5), so a usage error (4) is told apart

# run_suite DIR [PYTEST_ARGS...]: the privacy suite with raw Allure results in DIR (cleaned before pytest starts:
# --clean-alluredir under xdist lets every worker wipe the folder); prints nothing else, returns pytest's status
run_suite() {
  local dir=$1
  shift
  rm -rf "$dir"
  mkdir -p "$dir"
  local xdist=()
  if [ -n "${PHONEHOME_WORKERS:-}" ]; then
    xdist=(-n "$PHONEHOME_WORKERS")
  fi
  .venv/bin/python -m pytest tests --alluredir="$dir" "${xdist[@]}" "$@"
  local status=$?
  if [ "$status" -eq 5 ]; then
    echo "phonehome nightly: no test ran (no device selected?): that is not a clean night" >&2
  fi
  return "$status"
}

# make_report RESULTS_DIR...: one report from all shards, with history; fails when it would phone home
make_report() {
  local found=()
  local dir
  for dir in "$@"; do
    if compgen -G "$dir/*-result.json" >/dev/null; then
      found+=("$dir")
    else
      echo "phonehome nightly: $dir holds no results (shard failed before pytest?)" >&2
    fi
  done
  if [ ${#found[@]} -eq 0 ]; then
    echo "phonehome nightly: no results to report on" >&2
    return $EXIT_NO_RESULTS
  fi
  .venv/bin/python -m phonehome.report.generate "${found[@]}" "$report" --history "$history"
}

# combine PYTEST_STATUS REPORT_STATUS: a broken report outranks test failures (nobody would see them)
combine() {
  if [ "$2" -ne 0 ]; then
    echo "$2"
  else
    echo "$1"
  fi
}

case "${1:-}" in
  shard)
    name=${2:?usage: bash ci/nightly.sh shard NAME [PYTEST_ARGS...]}
    shift 2
    # the shard is a label of every result (the merged report tells the shards apart)
    PHONEHOME_SHARD=$name run_suite "${PHONEHOME_RESULTS:-results/shards/$name}" "$@"
    exit $?
    ;;
  report)
    shift
    if [ $# -eq 0 ]; then
      set -- results/shards/*/
    fi
    make_report "$@"
    exit $?
    ;;
  *)
    results=${PHONEHOME_RESULTS:-results/allure-results}
    run_suite "$results" "$@"
    status=$?
    make_report "$results"
    report_status=$?
    exit "$(combine "$status" "$report_status")"
    ;;
esac
