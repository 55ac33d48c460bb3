#!/usr/bin/env bash
# The test command (README): installs everything into .venv on a fresh machine, then runs pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k solvers`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/.ci/venv.sh"
# docker-compose (Debian's package) validates docker-compose.yml in the suite; no engine is needed.
if ! command -v docker-compose >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose) >/dev/null 2>&1 || echo "warning: could not install docker-compose" >&2
fi
cd "$ROOT"
# With arguments (a selection), or SPARKOPT_TEST_SPLIT=0: one pytest process.
if [ "$#" -gt 0 ] || [ "${SPARKOPT_TEST_SPLIT:-1}" = 0 ]; then
  exec python -m pytest "$@"
fi
# The whole suite as two pytest processes side by side (tests/conftest.py sets the mark): the
# tests of the one shared local[2] SparkSession in this one, streamed; beside it the unit tests and
# the tests that start Spark processes of their own (standalone cluster, Connect server, job
# subprocesses), logged and shown at the end. Each is waiting on Spark or sockets much of the time,
# so together they take about the longer of the two. The run fails if either fails.
# the machine's busy share over the run (from /proc/stat: idle + iowait against all), printed at the end
cpu_ticks() { awk '/^cpu /{print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat 2>/dev/null || echo "0 0"; }
read -r idle_start total_start < <(cpu_ticks)
started=$SECONDS
scratch="$(mktemp -d "${TMPDIR:-/tmp}/sparkopt-tests.XXXXXX")"
other_log="$scratch/others.log"
python -m pytest -m "not shared_session" -p no:cacheprovider --durations=25 --basetemp "$scratch/others" > "$other_log" 2>&1 &
other=$!
trap 'kill "$other" 2>/dev/null || true' INT TERM
status=0
python -m pytest -m shared_session --durations=25 --basetemp "$scratch/shared" || status=$?
other_status=0
wait "$other" || other_status=$?
echo
echo "================ tests outside the shared SparkSession (-m 'not shared_session') ================"
cat "$other_log"
rm -rf "$scratch"
echo "shared-session tests: exit $status; the others: exit $other_status"
read -r idle_end total_end < <(cpu_ticks)
awk -v s=$((SECONDS - started)) -v i=$((idle_end - idle_start)) -v t=$((total_end - total_start)) \
  'BEGIN { printf "whole suite: %d min %02d s wall, machine %s busy\n", s / 60, s % 60, (t > 0 ? sprintf("%.0f%%", 100 * (1 - i / t)) : "n/a") }'
[ "$status" = 0 ] && [ "$other_status" = 0 ]
