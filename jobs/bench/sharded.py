"""A model larger than the driver: a synthetic sparse multinomial with d = 2^20 hashed features and
K classes (d x K >= 50M coefficients at K = 48) fitted with spark.driver.memory=1g by the sharded
engine (vector-free L-BFGS, coefficients and history in the resident tasks' shards), and by
MLlib's LogisticRegression under the same driver memory.

Each fit runs in a subprocess of its own (the driver's JVM memory is fixed when it starts),
local[2]: in local mode the driver JVM is the executor too, so spark.driver.memory bounds the
whole JVM; the Python driver and the Python workers are measured separately (jobs/bench/memory).
Rows: each row has ``--nnz`` features, a third of them from its class's own features
(``feature % K == class``), the rest uniform; values 1. The table gives, per fit: the outcome,
passes, seconds per pass, bytes each task sent to the other tasks per pass, bytes between the
driver and the tasks per pass, and peak resident memory (Python driver, JVM, Python workers).

    PYTHONPATH=.:jobs flock /tmp/sparkopt-spark.lock python -m bench.sharded [--rows 200000]
        [--classes 48] [--iterations 8] [--memory 3] [--skip-mllib] [--mllib-driver-memory 1g]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
D = 2**20


def _rows(partition: int, rows: int, classes: int, nnz: int, seed: int):
    from pyspark.ml.linalg import SparseVector

    rng = np.random.default_rng([seed, partition])
    own = max(nnz // 3, 1)
    for _ in range(rows):
        k = int(rng.integers(classes))
        idx = np.concatenate([k + classes * rng.integers(D // classes, size=own),
                              rng.integers(D, size=nnz - own)])
        idx = np.unique(idx)
        yield float(k), SparseVector(D, idx.tolist(), [1.0] * len(idx))


def _frame(spark, rows: int, classes: int, nnz: int, seed: int):
    from pyspark.sql.types import DoubleType, StructField, StructType
    from pyspark.ml.linalg import VectorUDT

    per = [rows // 2 + (1 if p < rows % 2 else 0) for p in range(2)]
    rdd = spark.sparkContext.parallelize(range(2), 2).mapPartitionsWithIndex(
        lambda p, _: _rows(p, per[p], classes, nnz, seed))
    schema = StructType([StructField("label", DoubleType()), StructField("features", VectorUDT())])
    df = spark.createDataFrame(rdd, schema).cache()
    df.count()
    return df


def _session(driver_memory: str, extra: dict):
    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.master("local[2]").appName("sparkopt-bench-sharded")
               .config("spark.ui.enabled", "false").config("spark.driver.memory", driver_memory)
               .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "2").config("spark.executorEnv.OMP_NUM_THREADS", "1"))
    for key, value in extra.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _sparkopt(args) -> dict:
    from pyspark import cloudpickle

    from bench.memory import PeakMemory
    from sparkopt.engine import ShardedEngine, ingest
    from sparkopt.sharded_objective import fit_sharded

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # recovery checkpoints off: they would write every shard each iteration (a tested feature,
    # not what this measures)
    # a cap on each Python worker's address space: past it a MemoryError ends this fit, not the
    # machine's other processes
    spark = _session(args.driver_memory, {"spark.sparkopt.sharded.recoveryInterval": "0",
                                          "spark.executor.pyspark.memory": args.worker_memory})
    out: dict = {"what": "sparkopt engine='sharded'", "driver_memory": args.driver_memory}
    try:
        df = _frame(spark, args.rows, args.classes, args.nnz, args.seed)
        rdd, stats = ingest(df)
        engine = ShardedEngine(rdd, stats)
        with PeakMemory() as peaks:
            started = time.perf_counter()
            fit = fit_sharded(engine, "multinomial", reg_param=1e-4, max_iter=args.iterations, tol=1e-12,
                              solver_options={"memory": args.memory}, gather=False)
            seconds = time.perf_counter() - started
        r = fit.result
        per_pass = r.extra["bytes_between_tasks_per_pass"]
        tasks = r.extra["shards"]
        out.update(outcome=f"{r.status.name.lower()} after {r.nit} iterations, {r.extra['n_params']:,} active "
                           f"coordinates in {tasks} shards", passes=r.passes, seconds=seconds, seconds_per_pass=seconds / max(r.passes, 1),
                   task_bytes_per_pass=float(np.mean(per_pass)) / tasks if per_pass else None,
                   driver_bytes_per_pass=(engine.bytes_sent + engine.bytes_received) / max(r.passes, 1),
                   tasks=tasks, objective=r.fun, peaks=vars(peaks.result))
        engine.unpersist()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        out.update(outcome=f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                   trace=traceback.format_exc()[-2000:])
    finally:
        spark.stop()
    return out


def _mllib(args) -> dict:
    from pyspark.ml.classification import LogisticRegression

    from bench.memory import PeakMemory

    spark = _session(args.mllib_driver_memory, {})
    out: dict = {"what": "MLlib LogisticRegression", "driver_memory": args.mllib_driver_memory}
    try:
        df = _frame(spark, args.rows, args.classes, args.nnz, args.seed)
        with PeakMemory() as peaks:
            started = time.perf_counter()
            try:
                model = LogisticRegression(family="multinomial", regParam=1e-4, maxIter=args.iterations,
                                           tol=1e-12, standardization=True).fit(df)
                out["outcome"] = f"fitted, {model.summary.totalIterations} iterations"
            except Exception as exc:  # noqa: BLE001 - the point of the comparison
                import re

                text = str(exc)
                # the JVM's own error (java.lang.OutOfMemoryError: ...) if the message names one
                found = re.search(r"java\.lang\.\w+(?:Error|Exception)(?:: [^\n]*)?", text)
                cause = found.group(0) if found else (text.splitlines() or [type(exc).__name__])[0]
                out["outcome"] = f"failed: {cause.strip()[:300]}"
            out["seconds"] = time.perf_counter() - started
        out["peaks"] = vars(peaks.result)
    finally:
        try:
            spark.stop()
        except Exception:  # noqa: BLE001 - a JVM that died of OOM cannot stop cleanly
            pass
    return out


def _run_part(part: str, args) -> dict:
    command = [sys.executable, "-m", "bench.sharded", "--part", part] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if k not in ("part", "skip_mllib", "skip_sparkopt") and v is not None]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'jobs'}", PYSPARK_PYTHON=sys.executable)
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        return {"what": part, "outcome": f"process ended with code {proc.returncode}: {proc.stderr[-500:]}"}
    return json.loads(lines[-1])


def _mb(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--classes", type=int, default=48)
    p.add_argument("--nnz", type=int, default=30, help="features per row (before removing repeats)")
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--memory", type=int, default=3, help="L-BFGS correction pairs (m)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--driver-memory", default="1g")
    p.add_argument("--mllib-driver-memory", default="1g")
    p.add_argument("--worker-memory", default="8g", help="cap of each sparkopt Python worker (spark.executor.pyspark.memory)")
    p.add_argument("--skip-mllib", action="store_true")
    p.add_argument("--skip-sparkopt", action="store_true")
    p.add_argument("--part", choices=("sparkopt", "mllib"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.part:
        print(json.dumps(_sparkopt(args) if args.part == "sparkopt" else _mllib(args), default=float))
        return
    results = (([] if args.skip_sparkopt else [_run_part("sparkopt", args)])
               + ([] if args.skip_mllib else [_run_part("mllib", args)]))
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, {os.cpu_count()} cores "
          f"(shared, loaded machine), local[2]; {args.rows} rows x d = 2^20 x K = {args.classes} "
          f"({D * args.classes:,} coefficients), {args.nnz} features a row, {args.iterations} iterations, m = {args.memory}")
    print("| fit | driver memory | outcome | passes | s / pass | task->task bytes / task / pass | driver<->tasks bytes / pass "
          "| peak MB: Python driver / JVM / Python workers |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        peaks = r.get("peaks") or {}
        task_bytes = r.get("task_bytes_per_pass")
        driver_bytes = r.get("driver_bytes_per_pass")
        spp = r.get("seconds_per_pass")
        print(f"| {r['what']} | {r.get('driver_memory', '-')} | {r['outcome']} | {r.get('passes', '-')} | "
              f"{'-' if spp is None else f'{spp:.2f}'} | {'-' if task_bytes is None else f'{task_bytes:,.0f}'} | "
              f"{'-' if driver_bytes is None else f'{driver_bytes:,.0f}'} | {_mb(peaks.get('driver_python'))} / "
              f"{_mb(peaks.get('jvm'))} / {_mb(peaks.get('workers'))} |")
    for r in results:
        if "trace" in r:
            print(f"\n{r['what']} failed:\n{r['trace']}", file=sys.stderr)


if __name__ == "__main__":
    main()
