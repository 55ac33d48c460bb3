"""What a Spark Connect session costs sparkopt: one tree-engine pass (a gradient-shaped block sum)
and one cold logistic fit, on a classic session's RDD engine, a classic session's DataFrame (frame)
engine, and a Connect session's frame engine, on a9a (32,561 x 123, sparse, 2 partitions).

pyspark allows one kind of session per process, so the script starts a local Spark Connect server
(jobs/_common.local_connect_server, loopback) and runs each side in a subprocess of its own
(``--part classic`` / ``--part connect --remote URL``); each prints its medians as JSON, and the
parent prints the table, ratios against the classic RDD engine.

    PYTHONPATH=.:jobs python -m bench.connect_pass [--repeats 15] [--fits 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "4g",
            "spark.executorEnv.OMP_NUM_THREADS": "1"}


def gradient(block, v):
    return block.X.T @ (block.w * (block.X @ v - block.y))


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _measure(spark, repeats: int, fits: int, classic: bool) -> dict:
    from pyspark import cloudpickle
    from pyspark.sql import functions as F

    from sparkopt.engine import TreeEngine, ingest
    from sparkopt.engine.frame import FrameEngine, ingest_frame
    from sparkopt.ml import LogisticRegression, clear_cache

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    df = (spark.read.format("libsvm").option("numFeatures", 123).load(str(ROOT / "data" / "a9a"))
          .withColumn("label", (F.col("label") > 0).cast("double")).repartition(2).cache())
    df.count()
    engines = {"frame": FrameEngine(*ingest_frame(df))}
    if classic:
        engines["rdd"] = TreeEngine(*ingest(df))
    v = np.linspace(-1, 1, 123)
    for engine in engines.values():          # warm-up: the JVM's JIT, the Python workers' imports
        for _ in range(3):
            engine.map_sum(gradient, v)
    out = {}
    for name, engine in engines.items():
        out[f"pass_{name}"] = _median_seconds(lambda: engine.map_sum(gradient, v), repeats)
    for engine in engines.values():
        engine.unpersist()

    def fit():
        LogisticRegression(regParam=1e-4, solver="newton", engine="tree").fit(df)
        clear_cache()

    fit()
    out["fit_tree"] = _median_seconds(fit, fits)
    return out


def _part(args) -> None:
    from pyspark.sql import SparkSession

    if args.part == "connect":
        spark = SparkSession.builder.remote(args.remote).getOrCreate()
    else:
        builder = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
        for key, value in {**SETTINGS, "spark.driver.host": "127.0.0.1",
                           "spark.driver.bindAddress": "127.0.0.1"}.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
    try:
        print(json.dumps(_measure(spark, args.repeats, args.fits, args.part == "classic")))
    finally:
        spark.stop()


def _run_part(part: str, args, remote: str | None = None) -> dict:
    command = [sys.executable, "-m", "bench.connect_pass", "--part", part, "--repeats", str(args.repeats),
               "--fits", str(args.fits)] + (["--remote", remote] if remote else [])
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'jobs'}", PYSPARK_PYTHON=sys.executable)
    for key in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
        env.pop(key, None)
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{part} part failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15, help="passes per engine (median)")
    p.add_argument("--fits", type=int, default=3, help="cold fits per session (median)")
    p.add_argument("--part", choices=("classic", "connect"), help=argparse.SUPPRESS)
    p.add_argument("--remote", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.part:
        return _part(args)
    from _common import local_connect_server

    classic = _run_part("classic", args)
    with local_connect_server(SETTINGS) as port:
        connect = _run_part("connect", args, f"sc://127.0.0.1:{port}")
    base = classic["pass_rdd"]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, {os.cpu_count()} cores, "
          f"a9a 32561 x 123 in 2 partitions, local[2]; medians of {args.repeats} passes, {args.fits} fits")
    print(f"{'what':38s} {'seconds':>9s} {'ratio':>7s}")
    rows = [("pass, classic session, RDD tree engine", classic["pass_rdd"], base),
            ("pass, classic session, frame engine", classic["pass_frame"], base),
            ("pass, Connect session, frame engine", connect["pass_frame"], base),
            ("newton fit, classic session (tree)", classic["fit_tree"], classic["fit_tree"]),
            ("newton fit, Connect session (tree)", connect["fit_tree"], classic["fit_tree"])]
    for what, seconds, against in rows:
        print(f"{what:38s} {seconds:9.3f} {seconds / against:7.2f}")


if __name__ == "__main__":
    main()
