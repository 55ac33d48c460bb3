"""The Spark Connect suite's server and client: a real Spark Connect server from the pinned
pyspark (``jobs/_common.local_connect_server``: ``spark-submit --class SparkConnectServer``, a JVM
of its own on loopback), and this process its client (``SparkSession.builder.remote("sc://...")``).
pyspark allows one kind of session per process, so this suite runs in a process of its own:
tests/spark/test_connect_suite.py starts it (``SPARKOPT_CONNECT_SUITE=1``), and tests/conftest.py
leaves this directory out of the classic run. Everything started here is stopped here."""
from __future__ import annotations

import sys

import pytest
from _common import JobError, local_connect_server

SETTINGS = {
    "spark.driver.memory": "3g",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.pyspark.python": sys.executable,
    "spark.executorEnv.OMP_NUM_THREADS": "1",
}


@pytest.fixture(scope="session")
def connect_port(tmp_path_factory) -> int:
    log = tmp_path_factory.mktemp("connect-server") / "server.log"
    try:
        with local_connect_server(SETTINGS, str(log)) as port:
            yield port
    except JobError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def connect_spark(connect_port):
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(f"sc://127.0.0.1:{connect_port}").getOrCreate()
    yield session
    session.stop()
