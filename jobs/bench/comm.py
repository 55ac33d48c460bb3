"""Compressed exchanges, the link model and load balancing on the resident engine (issue 19).

Three parts, each printing a table (ratios are measured within one run of this script):

``compression``: every scheme (``none``, ``bf16``, ``int8``, ``topk``, ``powersgd`` for the
multinomial case) fitted by the same solver on the resident engine, one task per partition;
per scheme the iterations and passes to a 1e-6 relative objective gap, the bytes per iteration
(payloads out + partial sums back, as the history rows count them) up to there, and the seconds
to there; then ``none`` and the compressed runs again behind a throttled channel (``--link``,
default 1 Gbit/s and 0.5 ms, sparkopt.engine.link). The gap is F at every iterate evaluated
exactly on a copy of the data in the driver (in a callback whose time is not counted) against
F* from a long exact L-BFGS run on that copy.

``balance``: a9a cut so that partition 0 holds ~100x the stored entries of partition 1 (blocks of
1000 rows); the tasks' seconds per pass (as they measure their folds) and their max / median,
with balancing off and on.

``straggler``: a9a in equal partitions, task 0 slowed 3x (``inject_slowness``: it sleeps twice
its fold time); the median pass wall time with balancing off and on against the unslowed run.
With T tasks, a 3x slower task leaves T - 2/3 tasks' worth of speed, so the best possible ratio is
T / (T - 2/3): 1.5 for 2 tasks, 1.29 for 3; ``--master local[4]`` runs 4 tasks on this
machine's cores.

    PYTHONPATH=.:jobs python -m bench.comm [--parts compression,balance,straggler] [--cases sector,a9a]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
GAP = 1e-6
CASES = {
    # name: (file, features, loss, regParam, label rule, solver, schemes with their ratio)
    "sector": ("sector.scale.bz2", 55197, "multinomial", 1e-2, "shift", "lbfgs",
               (("none", None), ("bf16", None), ("int8", None), ("topk", 32.0), ("powersgd", 32.0))),
    "a9a": ("a9a", 123, "logistic", 1e-3, "binary", "lbfgs",
            (("none", None), ("bf16", None), ("int8", None), ("topk", 4.0))),
}


def log(message: str) -> None:
    print(f"[comm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _load(spark, name: str, datasets: Path, partitions: int):
    from pyspark.sql import functions as F

    file, features, _, _, labels, _, _ = CASES[name]
    df = spark.read.format("libsvm").option("numFeatures", features).load(str(datasets / file))
    if labels == "binary":
        df = df.withColumn("label", F.when(F.col("label") > 0, 1.0).otherwise(0.0))
    else:
        df = df.withColumn("label", F.col("label") - 1.0)
    return df.repartition(partitions).cache()


def _reference(local, loss: str, reg: float) -> float:
    """F* of the problem: a long exact L-BFGS run on the driver's copy."""
    from sparkopt.fit import fit_linear_model

    fit = fit_linear_model(local, loss, reg_param=reg, solver="lbfgs", max_iter=3000, tol=1e-12)
    return float(fit.result.fun)


def _run(engine, local, loss: str, reg: float, solver: str, best: float, max_iter: int) -> dict:
    """One fit stopped at the gap target; iterations, passes, bytes and seconds to it."""
    from sparkopt.fit import build_objective, fit_linear_model

    exact = build_objective(local, loss, reg_param=reg)[0]
    state = {"callback": 0.0, "hit": None}

    def callback(row: dict) -> bool:
        start = time.perf_counter()
        gap = (exact.total(row["x"]) - best) / abs(best)
        state["callback"] += time.perf_counter() - start
        if gap <= GAP and state["hit"] is None:
            state["hit"] = dict(iteration=row["iteration"], passes=row["passes"],
                                bytes=row.get("bytes_sent", 0) + row.get("bytes_received", 0),
                                seconds=row["seconds"] - state["callback"], gap=gap)
            return True
        return False

    started = time.perf_counter()
    fit = fit_linear_model(engine, loss, reg_param=reg, solver=solver, max_iter=max_iter, tol=1e-12,
                           callback=callback)
    out = {"status": fit.result.status.name, "nit": fit.result.nit, "wall": time.perf_counter() - started}
    if state["hit"] is not None:
        hit = state["hit"]
        out.update(hit, bytes_per_iteration=hit["bytes"] / max(hit["iteration"], 1))
    return out


def compression_part(spark, args) -> list[dict]:
    from sparkopt.engine import LocalEngine, ResidentEngine, ingest

    rows = []
    for name in args.cases:
        _, _, loss, reg, _, solver, schemes = CASES[name]
        df = _load(spark, name, args.datasets, args.partitions)
        blocks, stats = ingest(df)
        local = LocalEngine(ResidentEngine(blocks, stats).collect_blocks(), stats=stats)
        log(f"{name}: reference optimum")
        best = _reference(local, loss, reg)
        for link in (None, args.link):
            for scheme, ratio in schemes:
                if link is not None and scheme not in args.link_schemes:
                    continue
                engine = ResidentEngine(blocks, stats, compression=scheme, compression_ratio=ratio, link=link)
                log(f"{name}: {scheme} (ratio {ratio}), link {link}")
                row = _run(engine, local, loss, reg, solver, best, args.max_iter)
                row.update(case=name, scheme=scheme, ratio=ratio, link=link or "localhost", solver=solver)
                rows.append(row)
                log(json.dumps(row))
        blocks.unpersist()
        df.unpersist()
    return rows


def compression_table(rows: list[dict]) -> str:
    lines = ["| case | link | scheme | iterations to 1e-6 | passes | bytes / iteration | bytes ratio | "
             "iteration ratio | seconds to 1e-6 | seconds ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    base = {(r["case"], r["link"]): r for r in rows if r["scheme"] == "none" and "iteration" in r}
    for r in rows:
        b = base.get((r["case"], r["link"]))
        scheme = r["scheme"] + (f" {r['ratio']:g}" if r["ratio"] else "")
        if "iteration" not in r:
            lines.append(f"| {r['case']} | {r['link']} | {scheme} | not reached ({r['status']}, {r['nit']} its) "
                         "| | | | | | |")
            continue
        ratios = ("", "", "") if b is None else (f"{b['bytes_per_iteration'] / r['bytes_per_iteration']:.1f}x",
                                                 f"{r['iteration'] / b['iteration']:.2f}",
                                                 f"{r['seconds'] / b['seconds']:.2f}")
        lines.append(f"| {r['case']} | {r['link']} | {scheme} | {r['iteration']} | {r['passes']:g} | "
                     f"{r['bytes_per_iteration']:.3g} | {ratios[0]} | {ratios[1]} | {r['seconds']:.1f} | {ratios[2]} |")
    return "\n".join(lines)


def _skewed(spark, datasets: Path, heavy: int, light: int):
    """a9a's rows: ``heavy`` in partition 0 and ``light`` in partition 1."""
    df = _load(spark, "a9a", datasets, 1)
    rdd = (df.rdd.zipWithIndex().filter(lambda pair: pair[1] < heavy + light)
           .map(lambda pair: (0 if pair[1] < heavy else 1, pair[0])).partitionBy(2, lambda key: key).values())
    return spark.createDataFrame(rdd, df.schema).cache()


def _ingest_in_blocks(spark, df, rows: int):
    from sparkopt.engine import ingest

    old = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(rows))
    try:
        return ingest(df, max_block_bytes=1)
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", old)


def _passes(engine, loss: str, passes: int) -> dict:
    """``passes`` gradient passes at a fixed point; the engine's pass seconds and task times."""
    from sparkopt.fit import build_objective

    objective = build_objective(engine, loss, reg_param=1e-3)[0]
    z = np.zeros(objective.n_params)
    with engine.session():
        for _ in range(passes):
            objective.loss_grad(z)
    walls = list(engine._pass_seconds)[-passes:]
    out = {"pass_seconds": statistics.median(walls[passes // 2:])}
    if engine.balancer is not None:
        history = engine.balancer.history[passes // 2:]
        out["spread"] = statistics.median(h["spread"] for h in history)
        tasks = sorted(history[-1]["task_seconds"])
        out["task_seconds"] = {g: statistics.median(h["task_seconds"].get(g, 0.0) for h in history) for g in tasks}
        out["regroupings"] = engine.balancer.regroupings
    return out


def balance_part(spark, args) -> list[dict]:
    df = _skewed(spark, args.datasets, 32000, 320)
    blocks, stats = _ingest_in_blocks(spark, df, 1000)
    return _pass_runs(blocks, stats, df, args, f"skewed a9a (partition rows {stats.partition_rows})",
                      (("balance off", dict(balance=True, balance_threshold=1e9)), ("balance on", dict(balance=True))))


def _pass_runs(blocks, stats, df, args, what: str, runs) -> list[dict]:
    """:func:`_passes` on a ResidentEngine per (label, options) of ``runs``; frees the data after."""
    from sparkopt.engine import ResidentEngine

    rows = []
    for label, kwargs in runs:
        log(f"{what}: {label}")
        row = _passes(ResidentEngine(blocks, stats, **kwargs), "logistic", args.passes)
        row.update(what=f"{what}, {label}")
        rows.append(row)
        log(json.dumps(row))
    blocks.unpersist()
    df.unpersist()
    return rows


def straggler_part(spark, args) -> list[dict]:
    from sparkopt.engine.resident import task_slots

    slots = max(task_slots(spark.sparkContext), 1)
    df = _load(spark, "a9a", args.datasets, slots)
    blocks, stats = _ingest_in_blocks(spark, df, 1000)
    return _pass_runs(blocks, stats, df, args, f"a9a in {slots} tasks",
                      (("unslowed", dict()), ("task 0 3x slower, balance off", dict(inject_slowness={0: 3.0})),
                       ("task 0 3x slower, balance on", dict(inject_slowness={0: 3.0}, balance=True))))


def pass_table(rows: list[dict], base: dict | None = None) -> str:
    lines = ["| run | pass seconds (median) | vs first row | task seconds (median per task) | max / median | "
             "regroupings |", "|---|---|---|---|---|---|"]
    first = base or rows[0]
    for r in rows:
        tasks = ", ".join(f"{g}: {t * 1e3:.1f} ms" for g, t in (r.get("task_seconds") or {}).items())
        spread = f"{r['spread']:.2f}" if "spread" in r else ""
        lines.append(f"| {r['what']} | {r['pass_seconds'] * 1e3:.1f} ms | {r['pass_seconds'] / first['pass_seconds']:.2f} | "
                     f"{tasks} | {spread} | {r.get('regroupings', '')} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="compression,balance,straggler")
    p.add_argument("--cases", default="sector,a9a", help="compression cases: sector, a9a")
    p.add_argument("--datasets", default=str(ROOT / "data"), help="directory of the LIBSVM files")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--partitions", type=int, default=2, help="compression part: partitions (= tasks)")
    p.add_argument("--link", default="1gbit,0.5ms", help="the throttled channel of the compression part")
    p.add_argument("--link-schemes", default="none,int8,topk,powersgd", help="schemes run behind --link")
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--passes", type=int, default=30, help="balance / straggler parts: passes per run")
    p.add_argument("--output", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.link_schemes = [s.strip() for s in args.link_schemes.split(",")]
    args.datasets = Path(args.datasets).resolve()
    parts = [s.strip() for s in args.parts.split(",")]

    sys.path.insert(0, str(ROOT / "jobs"))
    from _common import job_session

    settings = {"spark.ui.enabled": "false", "spark.driver.memory": "6g", "spark.driver.maxResultSize": "0",
                "spark.sql.shuffle.partitions": "2", "spark.executorEnv.OMP_NUM_THREADS": "1",
                "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    results = {}
    with job_session("sparkopt-comm-benchmark", master=args.master, default_master=args.master,
                     defaults=settings) as spark:
        header = (f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, {os.cpu_count()} cores "
                  f"(shared machine: seconds are indicative, counts and bytes are exact), {args.master}")
        print(header)
        if "compression" in parts:
            results["compression"] = compression_part(spark, args)
            print("\n" + compression_table(results["compression"]))
        if "balance" in parts:
            results["balance"] = balance_part(spark, args)
            print("\n" + pass_table(results["balance"]))
        if "straggler" in parts:
            results["straggler"] = straggler_part(spark, args)
            print("\n" + pass_table(results["straggler"]))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
