"""What a Spark Connect session costs sparkopt: one pass (a gradient-shaped block sum) and one cold
logistic fit (ingest included) on a classic session's RDD tree and resident engines and its DataFrame
(frame) engine, and on a Connect session's frame engine and resident engine (barrier tasks that
connect to the client), on a9a (32,561 x 123, sparse) or synthetic dense rows (``--data synthetic
--n 1000000``: 1e6 x 100, jobs/generate.py), in 2 partitions.

pyspark allows one kind of session per process, so the script starts a local Spark Connect server
(jobs/_common.local_connect_server, loopback) and runs each side in a subprocess of its own
(``--part classic`` / ``--part connect --remote URL``); each prints its medians as JSON, and the
parent prints the table: passes against the classic RDD tree engine, each fit against the same
engine's fit on the classic session.

    PYTHONPATH=.:jobs python -m bench.connect_pass [--repeats 15] [--fits 3] [--data a9a|synthetic] [--n N]
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

from bench.measure import timed

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "6g",
            "spark.executorEnv.OMP_NUM_THREADS": "1"}


def gradient(block, v):
    return block.X.T @ (block.w * (block.X @ v - block.y))


def _median_seconds(fn, repeats: int) -> float:
    return statistics.median(timed(fn, repeats))


def _load(spark, data: str, n: int):
    from pyspark.sql import functions as F

    if data == "a9a":
        df = (spark.read.format("libsvm").option("numFeatures", 123).load(str(ROOT / "data" / "a9a"))
              .withColumn("label", (F.col("label") > 0).cast("double")))
    else:
        import generate

        spec = generate.Spec(n=n, d=100, density=1.0, task="logistic", classes=3, seed=0, num_partitions=2)
        df = generate.synthetic_frame(spark, spec)
    df = df.select("features", "label").repartition(2).cache()
    df.count()
    return df


def _measure(spark, repeats: int, fits: int, classic: bool, data: str, n: int) -> dict:
    from pyspark import cloudpickle

    from sparkopt.engine import ResidentEngine, TreeEngine, ingest
    from sparkopt.engine.frame import FrameEngine, ingest_frame
    from sparkopt.engine.frame_resident import FrameResidentEngine
    from sparkopt.ml import LogisticRegression, clear_cache

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    df = _load(spark, data, n)
    frame_blocks, frame_stats = ingest_frame(df)
    engines = {"frame": FrameEngine(frame_blocks, frame_stats)}
    if classic:
        rdd, stats = ingest(df)
        engines["rdd"] = TreeEngine(rdd, stats)
        engines["resident"] = ResidentEngine(rdd, stats)
    else:
        engines["resident"] = FrameResidentEngine(frame_blocks, frame_stats)
    v = np.linspace(-1, 1, frame_stats.n_features)
    out = {"n": frame_stats.n_rows, "d": frame_stats.n_features}
    for name, engine in engines.items():
        with engine.session():
            for _ in range(3):               # warm-up: the JVM's JIT, the Python workers' imports, the session
                engine.map_sum(gradient, v)
            out[f"pass_{name}"] = _median_seconds(lambda: engine.map_sum(gradient, v), repeats)
    for engine in engines.values():
        engine.unpersist()

    for engine in ("tree", "resident"):
        def fit():
            LogisticRegression(regParam=1e-4, solver="newton", engine=engine).fit(df)
            clear_cache()

        fit()
        out[f"fit_{engine}"] = _median_seconds(fit, fits)
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
        print(json.dumps(_measure(spark, args.repeats, args.fits, args.part == "classic", args.data, args.n)))
    finally:
        spark.stop()


def _run_part(part: str, args, remote: str | None = None) -> dict:
    command = [sys.executable, "-m", "bench.connect_pass", "--part", part, "--repeats", str(args.repeats),
               "--fits", str(args.fits), "--data", args.data, "--n", str(args.n)] + (["--remote", remote] if remote else [])
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
    p.add_argument("--data", choices=("a9a", "synthetic"), default="a9a", help="a9a, or synthetic dense rows")
    p.add_argument("--n", type=lambda text: int(float(text)), default=1_000_000, help="rows of --data synthetic")
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
    what = "a9a 32561 x 123 sparse" if args.data == "a9a" else f"synthetic {classic['n']} x {classic['d']} dense"
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, {os.cpu_count()} cores, "
          f"{what} in 2 partitions, local[2]; medians of {args.repeats} passes, {args.fits} fits")
    print(f"{'what':44s} {'seconds':>9s} {'ratio':>7s}")
    rows = [("pass, classic session, RDD tree engine", classic["pass_rdd"], base),
            ("pass, classic session, frame engine", classic["pass_frame"], base),
            ("pass, classic session, resident engine", classic["pass_resident"], base),
            ("pass, Connect session, frame engine", connect["pass_frame"], base),
            ("pass, Connect session, resident engine", connect["pass_resident"], base),
            ("pass, Connect / classic, resident engine", connect["pass_resident"], classic["pass_resident"])]
    for engine in ("tree", "resident"):
        rows += [(f"newton fit ({engine}), classic session", classic[f"fit_{engine}"], classic[f"fit_{engine}"]),
                 (f"newton fit ({engine}), Connect session", connect[f"fit_{engine}"], classic[f"fit_{engine}"])]
    for what, seconds, against in rows:
        print(f"{what:44s} {seconds:9.4f} {seconds / against:7.2f}")


if __name__ == "__main__":
    main()
