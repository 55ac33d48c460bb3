"""A real Spark standalone cluster on 127.0.0.1 (one master, two one-core workers), the same
topology as docker-compose.yml, with jobs/train.py sent by spark-submit: its executors run the
environment jobs/pack_env.py packed, shipped with --archives (their own Python has no sparkopt)."""
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
from conftest import SHORT_LIVED_JVM_OPTIONS

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SPARK_HOME = Path(pyspark.__file__).parent
# the executors' JVMs, like the master's, workers' and drivers' (tests/conftest.py)
EXECUTOR_JVM = ["--conf", f"spark.executor.extraJavaOptions={SHORT_LIVED_JVM_OPTIONS}"] if SHORT_LIVED_JVM_OPTIONS else []


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

    def __init__(self, workdir: Path, n_workers: int = 2, python: str = sys.executable):
        """``python``: the workers' PYSPARK_PYTHON (the driver's own by default)."""
        self.workdir = workdir
        self.python = python
        self.port, self.ui_port = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.env = dict(os.environ, SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1",
                        SPARK_NO_DAEMONIZE="1", PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=sys.executable,
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
        self.workers = [self._start_worker(i) for i in range(len(self.worker_dirs))]
        self._wait_for_workers()
        return self

    def _start_worker(self, i: int) -> subprocess.Popen:
        self.worker_dirs[i].mkdir(parents=True)
        return self._spawn(["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                            "--memory", "1g", "--webui-port", str(free_port()), "--work-dir",
                            str(self.worker_dirs[i]), self.url], f"{self.worker_dirs[i].name}.log")

    def _wait_for_workers(self, alive: int | None = None):
        alive = len(self.workers) if alive is None else alive
        wait_for(lambda: len([w for w in master_state(self.ui_port)["workers"] if w["state"] == "ALIVE"])
                 == alive, 90, f"{alive} workers alive")

    def replace_worker(self, i: int):
        """A new worker (new work directory) in place of worker ``i``, which must be gone: once
        the master has seen it go, so that the count of live workers means the new one."""
        assert self.workers[i].poll() is not None
        self._wait_for_workers(len(self.workers) - 1)
        self.worker_dirs[i] = self.workdir / f"worker{i}-{len(self.processes)}"
        self.workers[i] = self._start_worker(i)
        self._wait_for_workers()

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


#: a Python without sparkopt (nor numpy): the interpreter the driver's venv was made from
BARE_PYTHON = getattr(sys, "_base_executable", None) or sys.executable


@pytest.fixture(scope="module")
def packing(tmp_path_factory):
    """jobs/pack_env.py packing the executors' environment, started first so that it runs while
    the cluster starts; the test waits for it (once per run: module scope)."""
    archive = tmp_path_factory.mktemp("env") / "sparkopt-env.tar.gz"   # a .tar Spark would unpack in Java: refused
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "pack_env.py"), "--output", str(archive),
                             "--compress-level", "1"],                # little to gain on loopback
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        yield proc, archive, started
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def cluster(packing, tmp_path_factory):
    """Workers whose Python (PYSPARK_PYTHON) lacks sparkopt, with nothing of the driver's venv on
    their PATH or PYTHONPATH."""
    workdir = tmp_path_factory.mktemp("standalone")
    c = StandaloneCluster(workdir, python=BARE_PYTHON)
    venv_bin = str(Path(sys.executable).parent)
    c.env["PATH"] = os.pathsep.join(p for p in c.env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    c.env.pop("PYTHONPATH", None)
    try:
        yield c.start()
    finally:
        c.stop()
    assert all(p.poll() is not None for p in c.processes)


def spark_submit(cluster, *job_args, archive=None, timeout=600):
    """spark-submit jobs/train.py to ``cluster``; with ``archive``, the executors run its Python
    (--archives ARCHIVE#environment, spark.pyspark.python=./environment/bin/python) and the
    driver this one."""
    python = ["--archives", f"{archive}#environment", "--conf", "spark.pyspark.python=./environment/bin/python",
              "--conf", f"spark.pyspark.driver.python={sys.executable}"] if archive else \
        ["--conf", f"spark.pyspark.python={sys.executable}"]
    cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", cluster.url,
           "--conf", "spark.executor.memory=512m", "--conf", "spark.executor.cores=1",
           "--conf", "spark.ui.enabled=false", *EXECUTOR_JVM, *python, str(ROOT / "jobs" / "train.py"), *job_args]
    return subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def failure(stderr: str) -> str:
    """What a failed spark-submit said first (its ERROR lines and exceptions), then its end."""
    first = [line for line in stderr.splitlines() if " ERROR " in line or "Exception:" in line or "Error:" in line]
    return "\n".join(first[:20]) + "\n...\n" + stderr[-1500:]


def test_train_job_runs_from_a_packed_environment(packing, cluster, tmp_path):
    """The workers' Python cannot import sparkopt; train.py's executors run the packed one
    (--archives), read file:// inputs and write a file:// output, which the job reads back."""
    # (from a directory of the workers', as their executors run: this checkout's would import ./sparkopt)
    assert subprocess.run([cluster.python, "-c", "import sparkopt"], capture_output=True, env=cluster.env,
                          cwd=cluster.worker_dirs[0]).returncode != 0
    proc, archive, started = packing
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    print(f"packed {archive.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - started:.0f} s: {output.strip()}")

    out = tmp_path / "out"
    run = spark_submit(cluster, "--input", f"file://{ROOT / 'data' / 'a9a'}", "--test-input",
                       f"file://{ROOT / 'data' / 'a9a.t'}", "--model", "logistic", "--reg-param", "1e-4",
                       "--num-partitions", "4", "--output", f"file://{out}", archive=archive)
    assert run.returncode == 0, failure(run.stderr)
    assert f"wrote file:{out}" in run.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["converged"] and metrics["num_rows"] == 32561 and metrics["num_features"] == 123
    assert 0.89 < metrics["test"]["auc"] < 0.92
    for name in ("model", "history.csv", "convergence.png", "_SPARKOPT_OUTPUT"):
        assert (out / name).exists()
    # the executors ran the archive's Python, unpacked in their own working directories, and
    # imported sparkopt from it (not from this checkout)
    assert metrics["executors"]
    for executor in metrics["executors"]:
        env = executor["python"][:-len("/bin/python")]
        assert executor["python"].endswith("environment/bin/python"), executor
        assert any(executor["python"].startswith(str(w)) for w in cluster.worker_dirs), executor
        assert executor["sparkopt"].startswith(env + "/lib/") and not executor["sparkopt"].startswith(str(ROOT))
    # the model as saved: the coefficients of metrics.json (train.py loaded it back before exit 0)
    [part] = (out / "model" / "metadata").glob("part-*")
    saved = json.loads(part.read_text())["sparkoptModel"]["coef_vector"]
    assert saved == metrics["coefficients"] + [metrics["intercept"]]
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
def test_fit_survives_a_killed_worker(cluster, tmp_path, engine):
    """SIGKILL one worker with its executor and Python workers mid-fit: the fit ends with the
    coefficients of an undisturbed fit over the same blocks (1e-8). (The module's cluster; the
    executors run this Python, named by spark.pyspark.python. A new worker replaces the killed
    one afterwards.)"""
    c = cluster
    try:
        markers, out = tmp_path / "markers", tmp_path / "out.json"
        markers.mkdir()
        cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", c.url,
               "--conf", "spark.executor.memory=512m", "--conf", "spark.executor.cores=1",
               "--conf", "spark.ui.enabled=false", "--conf", f"spark.pyspark.python={sys.executable}", *EXECUTOR_JVM,
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
            victim = c.workers[0]
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
        if c.workers[0].poll() is None:
            c.workers[0].kill()
        c.workers[0].wait(timeout=30)
        c.replace_worker(0)
