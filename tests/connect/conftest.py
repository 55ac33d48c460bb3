"""The Spark Connect suite's server and client: a real Spark Connect server from the pinned
pyspark (``spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer``, a JVM of
its own on loopback), and this process its client (``SparkSession.builder.remote("sc://...")``).
pyspark allows one kind of session per process, so this suite runs in a process of its own:
tests/spark/test_connect_suite.py starts it (``SPARKOPT_CONNECT_SUITE=1``), and tests/conftest.py
leaves this directory out of the classic run. Everything started here is stopped here."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
START_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def connect_port(tmp_path_factory) -> int:
    import pyspark

    port = free_port()
    settings = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.memory": "3g",
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "4",
        "spark.pyspark.python": sys.executable,
        "spark.executorEnv.OMP_NUM_THREADS": "1",
    }
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    command = [str(submit), "--class", SERVER_CLASS, "--master", "local[2]", "--name", "sparkopt-connect-tests"]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    log = tmp_path_factory.mktemp("connect-server") / "server.log"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    with open(log, "w") as out:
        server = subprocess.Popen(command + ["spark-internal"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Spark Connect server did not start (exit {server.poll()}); its log:\n"
                            + log.read_text()[-3000:], pytrace=False)
            time.sleep(0.25)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


@pytest.fixture(scope="session")
def connect_spark(connect_port):
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(f"sc://127.0.0.1:{connect_port}").getOrCreate()
    yield session
    session.stop()
