"""The Spark Connect suite's server and client: a real Spark Connect server from the pinned
pyspark (``jobs/_common.local_connect_server``: ``spark-submit --class SparkConnectServer``, a JVM
of its own on loopback), and this process its client (``SparkSession.builder.remote("sc://...")``).
pyspark allows one kind of session per process, so this suite runs in a process of its own:
tests/spark/test_connect_suite.py starts it (``SPARKOPT_CONNECT_SUITE=1``), and tests/conftest.py
leaves this directory out of the classic run. Everything started here is stopped here."""
from __future__ import annotations

import os
import sys

import pytest
from _common import JobError, local_connect_server

from sparkopt.engine.threads import THREAD_VARIABLES

SETTINGS = {
    "spark.driver.memory": "3g",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.pyspark.python": sys.executable,
    # set, as many deployments do; a Connect server then passes no OMP_NUM_THREADS at all to the
    # Python workers of DataFrame functions (its default, executor cores, is skipped when this is
    # set, and executorEnv does not reach them), so the tasks hold their own BLAS threads (tested)
    "spark.executorEnv.OMP_NUM_THREADS": "1",
}


@pytest.fixture(scope="session")
def connect_port(tmp_path_factory) -> int:
    log = tmp_path_factory.mktemp("connect-server") / "server.log"
    # the server (and so its Python workers) starts without the suite's thread settings, as a
    # user's would: the tasks must hold their BLAS threads themselves
    saved = {name: os.environ.pop(name) for name in THREAD_VARIABLES if name in os.environ}
    try:
        with local_connect_server(SETTINGS, str(log)) as port:
            os.environ.update(saved)
            yield port
    except JobError as err:
        pytest.fail(str(err), pytrace=False)
    finally:
        os.environ.update(saved)


@pytest.fixture(scope="session")
def connect_spark(connect_port):
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(f"sc://127.0.0.1:{connect_port}").getOrCreate()
    yield session
    session.stop()
