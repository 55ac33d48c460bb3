#!/usr/bin/env bash
# The README's first command: install into .venv if needed, then fit L2 logistic regression on the
# bundled a9a data on an embedded local Spark, printing the per-iteration log and the objective.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/.ci/venv.sh"
cd "$ROOT"
exec python jobs/train.py --input data/a9a --model logistic --reg-param 1e-4 --output out/quickstart "$@"
