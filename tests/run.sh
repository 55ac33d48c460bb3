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
exec python -m pytest "$@"
