"""Where the time of loading data into resident tasks goes: the steps of today's resident fit
(ingest into a pickled block RDD, then a barrier job reading it back) against the steps of a fused
load (one barrier ``mapInArrow`` job whose tasks build the blocks from the DataFrame's Arrow batches
themselves), and the Arrow transfers they stand on, on synthetic dense rows (jobs/generate.py) in a
cached DataFrame, 2 partitions, local[2].

For each step: wall seconds (median) and the CPU seconds of the JVM and of the Python workers
(from /proc, so Linux only), which tell which side a step waits on. ``mapInArrow`` runs twice:
with Spark's default byte limit per Arrow batch (64 MB: the JVM then measures its Arrow writer
after every row, see sparkopt.engine.session.arrow_batches_by_rows) and with batches cut by rows
only.

    PYTHONPATH=.:jobs python -m bench.load_paths [--n 200000] [--d 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]


def _ticks(pid: int, children: bool = False) -> int:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)


def cpu_seconds(jvm: int) -> tuple[float, float]:
    """(CPU seconds of the JVM, of its descendants: the Python daemon and workers, finished ones too)."""
    from bench.memory import _children, _descendants

    hz = os.sysconf("SC_CLK_TCK")
    return _ticks(jvm) / hz, sum(_ticks(p, True) for p in _descendants(jvm, _children())) / hz


def _count_rows(batches: Iterator) -> Iterator:
    import pyarrow as pa

    rows = sum(batch.num_rows for batch in batches)
    yield pa.RecordBatch.from_arrays([pa.array([rows], pa.int64())], names=["rows"])


def _build(spec) -> Callable:
    """mapInArrow function: the ingest's blocks and statistics built from the batches and held
    (what a fused resident task does before it serves), one row out."""
    from sparkopt.engine.ingest import _build_blocks, _start_features, partition_blocks

    def run(batches: Iterator) -> Iterator:
        import pyarrow as pa

        records: list = []
        held = list(partition_blocks(_build_blocks(batches, spec, None, 64 * 2**20), _start_features(spec),
                                     records.append))
        yield pa.RecordBatch.from_arrays([pa.array([sum(b.n_rows for b in held)], pa.int64())], names=["rows"])

    return run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=lambda text: int(float(text)), default=200_000)
    p.add_argument("--d", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from pyspark import SparkContext, StorageLevel, cloudpickle
    from pyspark.sql import SparkSession

    import generate
    from sparkopt.engine import ResidentEngine, ingest
    from sparkopt.engine.ingest import _arrow_batch_rdd, prepare
    from sparkopt.engine.session import arrow_batches_by_rows

    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "6g").config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1").config("spark.sql.shuffle.partitions", "2")
             .config("spark.pyspark.python", sys.executable).config("spark.executorEnv.OMP_NUM_THREADS", "1")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    jvm = SparkContext._gateway.proc.pid
    spec = generate.Spec(n=args.n, d=args.d, density=1.0, task="logistic", classes=3, seed=0, num_partitions=2)
    df = generate.synthetic_frame(spark, spec).select("features", "label").repartition(2)
    df = df.persist(StorageLevel.MEMORY_AND_DISK)
    df.count()
    ispec, selected = prepare(df, "features", "label", None, None, None, 64 * 2**20, None)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, synthetic {args.n} x "
          f"{args.d} dense ({args.n * args.d * 8 / 2**20:.0f} MiB float64), cached, 2 partitions, local[2]; "
          f"medians of {args.repeats}")
    print(f"{'step':58s} {'wall s':>8s} {'JVM cpu':>8s} {'Python cpu':>10s}")

    def step(name: str, fn: Callable, repeats: int = args.repeats) -> float:
        walls, jvms, pys = [], [], []
        for _ in range(repeats):
            j0, p0 = cpu_seconds(jvm)
            started = time.perf_counter()
            fn()
            walls.append(time.perf_counter() - started)
            j1, p1 = cpu_seconds(jvm)
            jvms.append(j1 - j0)
            pys.append(p1 - p0)
        print(f"{name:58s} {statistics.median(walls):8.2f} {statistics.median(jvms):8.2f} "
              f"{statistics.median(pys):10.2f}", flush=True)
        return statistics.median(walls)

    step("warm-up (a bare mapInArrow)", lambda: selected.mapInArrow(_count_rows, "rows long").collect(), 1)
    step("Arrow transfer: toArrowBatchRdd, counted", lambda: _arrow_batch_rdd(selected).count())
    step("Arrow transfer: mapInArrow, 64 MB byte limit (default)",
         lambda: selected.mapInArrow(_count_rows, "rows long").collect())
    with arrow_batches_by_rows(spark):
        step("Arrow transfer: mapInArrow, cut by rows only",
             lambda: selected.mapInArrow(_count_rows, "rows long").collect())
        step("fused load: barrier mapInArrow building the blocks",
             lambda: selected.mapInArrow(_build(ispec), "rows long", barrier=True).collect())
    held = {}

    def ingest_once():
        if "rdd" in held:
            held["rdd"].unpersist()
        held["rdd"], held["stats"] = ingest(df)

    step("today, step 1: ingest (Arrow -> pickled block RDD)", ingest_once)

    def session_start():
        engine = ResidentEngine(held["rdd"], held["stats"])
        with engine.session():
            engine.map_sum(_nothing, None)

    step("today, step 2: resident session start (reads the RDD back)", session_start)
    held["rdd"].unpersist()
    df.unpersist()
    spark.stop()


def _nothing(block, payload) -> float:
    return 0.0


if __name__ == "__main__":
    main()
