"""The Spark Connect suite (tests/connect), run in a process of its own -- a real Spark Connect
server from the pinned pyspark and its client: pyspark allows one kind of session per process --
and its recorded fits compared (to 1e-10) with the same fits on a classic session, also in a
process of its own, so this module needs no shared session and runs beside the tests that do."""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.spark_subprocess, pytest.mark.slow]


@functools.lru_cache(maxsize=1)
def _cases():
    spec = importlib.util.spec_from_file_location("connect_cases", ROOT / "tests" / "connect" / "cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def connect_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("connect")
    env = dict(os.environ, SPARKOPT_CONNECT_SUITE="1", SPARKOPT_CONNECT_RESULTS=str(results),
               PYSPARK_PYTHON=sys.executable)
    for key in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE", "PYSPARK_GATEWAY_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/connect", "-q", "-rA", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    classic = tmp_path_factory.mktemp("classic")
    env.pop("SPARKOPT_CONNECT_SUITE")
    reference = subprocess.run([sys.executable, str(ROOT / "tests" / "connect" / "cases.py"), str(classic)],
                               capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert reference.returncode == 0, reference.stderr[-3000:]
    return proc, results, classic


def test_the_connect_suite_passes_without_skips(connect_run):
    proc, _, _ = connect_run
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, tail


@pytest.mark.parametrize("case", _cases().CASES)
def test_connect_fits_equal_the_classic_sessions(connect_run, case):
    proc, results, classic_results = connect_run
    recorded = results / f"{case}.json"
    assert recorded.is_file(), proc.stdout[-3000:]
    connect = json.loads(recorded.read_text())
    classic = json.loads((classic_results / f"{case}.json").read_text())
    for engine, theirs in classic.items():
        ours = connect[engine]
        assert ours["engine"] == theirs["engine"] == engine
        for key in ("coefficients", "intercept"):
            a, b = np.asarray(ours[key]), np.asarray(theirs[key])
            assert np.max(np.abs(a - b)) <= 1e-10 * max(1.0, np.max(np.abs(b))), (engine, key)
