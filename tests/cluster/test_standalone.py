"""A real Spark standalone cluster on 127.0.0.1 (one master, two one-core workers), the same
topology as docker-compose.yml, with jobs/train.py sent by spark-submit."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import pyspark

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SPARK_HOME = Path(pyspark.__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def master_state(ui_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as resp:
        return json.load(resp)


class StandaloneCluster:
    """Master + workers from pyspark's bundled spark-class, each in its own process group so that
    stop() kills the launcher and the JVM it starts."""

    def __init__(self, workdir: Path, n_workers: int = 2):
        self.workdir = workdir
        self.port, self.ui_port = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.env = dict(os.environ, SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1",
                        SPARK_NO_DAEMONIZE="1", PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
                        SPARK_LOG_DIR=str(workdir / "logs"), OMP_NUM_THREADS="1")
        self.processes: list[subprocess.Popen] = []
        self.worker_dirs = [workdir / f"worker{i}" for i in range(n_workers)]

    def _spawn(self, args, log_name):
        log = open(self.workdir / log_name, "w")
        proc = subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(proc)
        return proc

    def start(self):
        self._spawn(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
                     "--webui-port", str(self.ui_port)], "master.log")
        wait_for(self._master_up, 90, "the standalone master")
        for i, wdir in enumerate(self.worker_dirs):
            wdir.mkdir(parents=True)
            self._spawn(["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1", "--memory",
                         "1g", "--webui-port", str(free_port()), "--work-dir", str(wdir), self.url], f"worker{i}.log")
        wait_for(lambda: len([w for w in master_state(self.ui_port)["workers"] if w["state"] == "ALIVE"])
                 == len(self.worker_dirs), 90, "both workers to register")
        return self

    def _master_up(self):
        try:
            master_state(self.ui_port)
            return True
        except OSError:
            return False

    def stop(self):
        for proc in reversed(self.processes):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = StandaloneCluster(tmp_path_factory.mktemp("standalone"))
    try:
        yield c.start()
    finally:
        c.stop()
    assert all(p.poll() is not None for p in c.processes)


def spark_submit(cluster, *job_args, timeout=600):
    cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster.url,
           "--conf", "spark.executor.memory=512m", "--conf", "spark.executor.cores=1",
           "--conf", "spark.ui.enabled=false", "--conf", f"spark.pyspark.python={sys.executable}",
           str(ROOT / "jobs" / "train.py"), *job_args]
    return subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_train_job_on_standalone_cluster(cluster, tmp_path):
    out = tmp_path / "out"
    proc = spark_submit(cluster, "--input", str(ROOT / "data" / "a9a"), "--test-input", str(ROOT / "data" / "a9a.t"),
                        "--model", "logistic", "--reg-param", "1e-4", "--num-partitions", "4", "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["converged"] and metrics["num_rows"] == 32561 and metrics["num_features"] == 123
    assert 0.89 < metrics["test"]["auc"] < 0.92
    for name in ("model", "history.csv", "convergence.png"):
        assert (out / name).exists()
    # both workers launched an executor for the app and ran tasks on it
    for wdir in cluster.worker_dirs:
        stderr_logs = list(wdir.glob("app-*/*/stderr"))
        assert stderr_logs, f"no executor ran on {wdir.name}"
        assert any("Running task" in p.read_text(errors="replace") for p in stderr_logs), \
            f"no task ran on {wdir.name}"


def _descendants(pid: int) -> list[int]:
    """Every process started (transitively) by `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.mark.parametrize("engine", ["tree", "resident"])
def test_fit_survives_a_killed_worker(tmp_path, engine):
    """SIGKILL one worker with its executor and Python workers mid-fit: the fit ends with the
    coefficients of an undisturbed fit over the same blocks (1e-8)."""
    (tmp_path / "cluster").mkdir()
    c = StandaloneCluster(tmp_path / "cluster").start()
    try:
        markers, out = tmp_path / "markers", tmp_path / "out.json"
        markers.mkdir()
        cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", c.url,
               "--conf", "spark.executor.memory=512m", "--conf", "spark.executor.cores=1",
               "--conf", "spark.ui.enabled=false", "--conf", f"spark.pyspark.python={sys.executable}",
               # a barrier stage waits for free slots; after the loss there is one fewer
               "--conf", "spark.scheduler.barrier.maxConcurrentTasksCheck.interval=1s",
               "--conf", "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures=10",
               str(ROOT / "tests" / "cluster" / "executor_loss_job.py"), "--data", str(ROOT / "data" / "a9a"),
               "--engine", engine, "--markers", str(markers), "--out", str(out)]
        job = subprocess.Popen(cmd, env=c.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        try:
            wait_for(lambda: (markers / "paused").exists() or job.poll() is not None, 300, "the fit to pause")
            assert job.poll() is None, job.stdout.read()[-3000:]
            # both executors hold data; kill the first worker and everything it started
            victim = c.processes[1]
            doomed = [victim.pid, *_descendants(victim.pid)]
            assert len(doomed) >= 3, "the worker should have an executor (and its Python workers) running"
            for pid in doomed:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            (markers / "killed").write_text("1")
            output, _ = job.communicate(timeout=600)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()
        assert job.returncode == 0, output[-4000:]
        result = json.loads(out.read_text())
        assert result["engine"] == engine and result["status"] == "CONVERGED", result["nit"]
        coef, ref = np.array(result["coef"]), np.array(result["reference_coef"])
        assert np.max(np.abs(coef - ref)) <= 1e-8 * np.max(np.abs(ref))
        if engine == "resident":
            assert result["restarts"] >= 1
    finally:
        c.stop()
