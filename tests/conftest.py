"""Shared fixtures: one local[2] SparkSession per test run, the real datasets in data/, and the
skip gate (tests/skipgate.py: a skip must say what to do about it, else the session fails)."""
from __future__ import annotations

import contextlib
import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["skipgate"]

# tests/connect needs a process of its own (a Spark Connect client); tests/spark/test_connect_suite.py runs it
if not os.environ.get("SPARKOPT_CONNECT_SUITE"):
    collect_ignore = ["connect"]

ROOT = Path(__file__).resolve().parents[1]

# Executors must run the interpreter that has numpy/scipy/pyarrow (the venv's), not python3 on PATH.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# Two cores shared by two Python workers: keep BLAS single-threaded in each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# The JVMs the tests start in subprocesses (job runs, standalone master / workers / executors, the
# Connect server) live for seconds to a minute: C2's compile threads cost them ~8 CPU-seconds each on
# this 2-core machine (a start plus a small job: 19-22 CPU-s, 11-13 with C1 only) and they rarely run
# long enough to repay it (tests/cluster: 311 -> 191 CPU-s, the Connect suite 217 -> 160). A JVM
# that does heavy work for a long time keeps the default (long_lived_jvm_env): the shared session's,
# whose MLlib fits run ~25% faster with C2 (test_ml_vs_mllib + test_ml_api: 199 s vs 254 s), and
# the quick benchmark's. Every subprocess that copies this environment gets the options;
# SPARKOPT_TEST_JVM_OPTIONS="" turns them off.
SHORT_LIVED_JVM_OPTIONS = os.environ.get("SPARKOPT_TEST_JVM_OPTIONS", "-XX:TieredStopAtLevel=1")
_JVM_OPTION_VARIABLES = ("SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS")    # spark-submit's JVM; master / worker
_JVM_VARIABLES_BEFORE = {name: os.environ.get(name) for name in _JVM_OPTION_VARIABLES}
if SHORT_LIVED_JVM_OPTIONS:
    for _name in _JVM_OPTION_VARIABLES:
        os.environ[_name] = " ".join(filter(None, (os.environ.get(_name), SHORT_LIVED_JVM_OPTIONS)))


def long_lived_jvm_env(env: dict) -> dict:
    """A copy of ``env`` with the JVM option variables as they were before this file changed them."""
    env = {k: v for k, v in env.items() if k not in _JVM_OPTION_VARIABLES}
    env.update({k: v for k, v in _JVM_VARIABLES_BEFORE.items() if v is not None})
    return env


def _set_jvm_variables(values: dict) -> None:
    for name, value in values.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value


@contextlib.contextmanager
def _long_lived_jvm_options():
    """os.environ as long_lived_jvm_env makes it, inside the block (pyspark starts its JVM from it)."""
    saved = {name: os.environ.get(name) for name in _JVM_OPTION_VARIABLES}
    _set_jvm_variables(_JVM_VARIABLES_BEFORE)
    try:
        yield
    finally:
        _set_jvm_variables(saved)


@pytest.hookimpl(tryfirst=True)  # before -m selects on the mark
def pytest_collection_modifyitems(config, items):
    # tests/run.sh runs `-m shared_session` and `-m "not shared_session"` as two processes side by
    # side: one local[2] session in the first, the unit tests and the tests that start Spark
    # processes of their own (standalone cluster, Connect server, job subprocesses) in the second.
    # The spark marker (module-wide in tests/spark) decides as well as the fixture list: some tests
    # reach the session through other fixtures or request.getfixturevalue.
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()) or (
                item.get_closest_marker("spark") is not None and item.get_closest_marker("spark_subprocess") is None):
            item.add_marker(pytest.mark.shared_session)


def dataset(name: str) -> Path:
    """A real dataset from the repository's data/. A missing one fails the test: the files are
    part of the repository (data/README.md), so a test that cannot find one has not been run."""
    path = ROOT / "data" / name
    if not path.is_file():
        pytest.fail(f"dataset {name} is missing: expected {path}; data/ is part of the repository "
                    f"(see data/README.md and data/SHA256SUMS), restore it with `git checkout -- data/{name}`",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def spark(request):
    from pyspark.sql import SparkSession

    if request.config.getoption("markexpr") == "not shared_session":
        pytest.fail("a test outside the shared_session mark asked for the shared SparkSession: mark it spark "
                    "(and not spark_subprocess) so tests/run.sh runs it in the session's process", pytrace=False)

    with _long_lived_jvm_options():
        session = _shared_session(SparkSession)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _shared_session(SparkSession):
    return (
        SparkSession.builder.master("local[2]")
        .appName("sparkopt-tests")
        .config("spark.ui.enabled", "false")
        # loopback only: tests that play hostile peers must not reach beyond this machine
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.driver.memory", "4g")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.executorEnv.OMP_NUM_THREADS", "1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )


_job_groups = itertools.count()


@contextlib.contextmanager
def spark_jobs(spark):
    """Collects the ids of the Spark jobs run inside the block."""
    sc = spark.sparkContext
    group = f"sparkopt-test-{next(_job_groups)}"
    sc.setJobGroup(group, "sparkopt test")
    found: list[int] = []
    try:
        yield found
    finally:
        found.extend(sc.statusTracker().getJobIdsForGroup(group))
        sc.setLocalProperty("spark.jobGroup.id", None)


def letter_head(spark, partitions: int, empty_partition=None):
    """letter.scale's first 3000 rows, cached: 'label' the class index 0..25, 'binary' letters A-M
    vs N-Z, in `partitions` partitions (`empty_partition` emptied)."""
    from pyspark.sql import functions as F

    df = (spark.read.format("libsvm").option("numFeatures", 16).load(str(dataset("letter.scale")))
          .limit(3000).withColumn("label", F.col("label") - 1)
          .withColumn("binary", (F.col("label") < 13).cast("double")).repartition(partitions))
    if empty_partition is not None:
        df = df.filter(F.spark_partition_id() != empty_partition)
    return df.cache()


def max_rel_diff(a, b) -> float:
    """max |a - b| / max |b|: the relative difference the engine-equality tests bound."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


# every loss on the letter_head columns: (loss, label column, build_objective kwargs)
LOSS_CASES = [
    ("multinomial", "label", dict(reg_param=1e-3)),
    ("logistic", "binary", dict(reg_param=1e-2, elastic_net_param=0.3)),
    ("squared_error", "label", dict(reg_param=0.1, standardization=False)),
    ("poisson", "label", dict(reg_param=1e-3)),
    ("huber", "label", dict(reg_param=1e-3)),
    ("squared_hinge", "binary", dict(reg_param=1e-3)),
]


@contextlib.contextmanager
def spark_conf(spark, key: str, value: str):
    """A runtime SQL conf set for the duration of the block, then restored."""
    old = spark.conf.get(key)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        spark.conf.set(key, old)
