#!/usr/bin/env bash
# Create (or reuse) .venv at the repo root with the package and its test extras installed.
# Sourced by tests/run.sh and jobs/quickstart.sh so a fresh machine needs nothing but python3 + Java 17.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PY" -m venv "$ROOT/.venv"
fi
stamp="$ROOT/.venv/.sparkopt-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "sparkopt: installing into $ROOT/.venv (log: $ROOT/.venv/install.log)" >&2
  # --no-compile: byte-compiling every installed module (pyspark, mlflow, matplotlib, ...) is half
  # of a cached install (55 s -> 29 s here); Python compiles what is imported, once
  if ! "$ROOT/.venv/bin/python" -m pip install --no-compile -e "$ROOT[test]" > "$ROOT/.venv/install.log" 2>&1; then
    tail -20 "$ROOT/.venv/install.log" >&2
    exit 1
  fi
  "$ROOT/.venv/bin/python" -c "import sparkopt, pyspark, pyarrow, sklearn, chispa, grpc, zstandard"
  touch "$stamp"
fi
# Spark's Python workers must run this interpreter (it has numpy/pyarrow), not python3 from PATH.
export PYSPARK_PYTHON="$ROOT/.venv/bin/python"
export PYSPARK_DRIVER_PYTHON="$ROOT/.venv/bin/python"
export PATH="$ROOT/.venv/bin:$PATH"
# an embedded Spark binds to loopback: no hostname warnings, nothing exposed
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
