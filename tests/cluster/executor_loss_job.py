"""spark-submit driver for the executor-loss test: a fit that pauses at iteration K until the test
has killed one worker (and everything it started), then runs to the end.

Writes OUT (JSON): the coefficients of the disturbed fit on the chosen engine, those of the same
fit folded on the driver over the same blocks (collected before the kill), and engine counters.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
from pyspark.sql import SparkSession, functions as F

from sparkopt.engine import LocalEngine, ingest, make_engine
from sparkopt.fit import fit_linear_model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--engine", required=True)
    p.add_argument("--markers", required=True)
    p.add_argument("--pause-at", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    markers = Path(args.markers)
    spark = SparkSession.builder.getOrCreate()
    df = (spark.read.format("libsvm").option("numFeatures", 123).load(args.data)
          .withColumn("label", (F.col("label") + 1) / 2).repartition(2).cache())
    rdd, stats = ingest(df)
    engine = make_engine(rdd, stats, engine=args.engine)
    local = LocalEngine(engine.collect_blocks(), stats=stats)
    settings = dict(reg_param=1e-3, solver="newton", tol=1e-10, max_iter=100)

    def pause(row):
        if row["iteration"] == args.pause_at:
            (markers / "paused").write_text(str(row["iteration"]))
            deadline = time.time() + 300
            while not (markers / "killed").exists():
                if time.time() > deadline:
                    raise TimeoutError("the test never killed a worker")
                time.sleep(0.2)

    started = time.time()
    disturbed = fit_linear_model(engine, "logistic", callback=pause, **settings)
    seconds = time.time() - started
    reference = fit_linear_model(local, "logistic", **settings)
    Path(args.out).write_text(json.dumps({
        "engine": engine.kind, "status": disturbed.result.status.name, "nit": disturbed.result.nit,
        "reference_nit": reference.result.nit, "coef": np.asarray(disturbed.coef_vector).tolist(),
        "reference_coef": np.asarray(reference.coef_vector).tolist(), "seconds": seconds,
        "restarts": getattr(engine, "restarts", None)}))
    spark.stop()


if __name__ == "__main__":
    main()
