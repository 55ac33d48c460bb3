"""Automatic tuning against MLlib (issue 18's benchmark), each case runnable alone.

* ``a9a-cv`` / ``synthetic-cv``: sparkopt's LogisticRegressionCV (20 regParam values from
  lambda_max x 5 folds, ingest included: the cache is cleared first) against ONE cold fit of
  MLlib's LogisticRegression (its defaults, at the regParam the CV chose), on the same cached
  DataFrame in one local[2] session; target ratio <= 1.5. Synthetic: jobs/generate.py's dense
  logistic rows (``--synthetic-rows``, default 1e6, x 100).
* ``crossvalidator``: pyspark's own CrossValidator (3 folds, 4 regParam values, AUC) over
  sparkopt's LogisticRegression and over MLlib's, on a9a; target: sparkopt's not slower.
* ``sector-path``: elastic-net paths (20 values from lambda_max, logistic, label "class > 52") on
  sector (6412 x 55197, sparse; in memory, no Spark: passes are what a Spark run pays one job
  each for) with and without strong rules: alpha 0.5 down to 1e-2 lambda_max (glmnet's default
  ratio here), and the lasso down to 0.05 lambda_max; target: fewer passes with them.

Seconds are wall time on whatever machine runs it (say which); passes are exact.

    PYTHONPATH=.:jobs python -m bench.tuning_cv [--cases a9a-cv,crossvalidator,...] [--data DIR]

Run the Spark cases one at a time under the project's Spark lock on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

# Before numpy or the JVM start, as jobs/benchmark.py: one BLAS thread per process (Spark's Python
# workers inherit it). Measured here: the in-memory CV's many small BLAS calls run 3-4x slower
# with OpenBLAS's own threads on a loaded 2-core machine (a9a 5-fold x 20: 15.7 s CPU against 3.4 s).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


ROOT = Path(__file__).resolve().parents[2]
CASES = ("a9a-cv", "synthetic-cv", "crossvalidator", "sector-path")
SETTINGS = {"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "6g", "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}


def _session():
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]").appName("sparkopt-bench-tuning")
    for key, value in SETTINGS.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _a9a(spark, data: Path):
    from pyspark.sql import functions as F

    df = (spark.read.format("libsvm").option("numFeatures", 123).load(str(data / "a9a"))
          .withColumn("label", (F.col("label") > 0).cast("double")).repartition(2))
    return "a9a (32561 x 123, sparse)", df


def _synthetic(spark, rows: int):
    import generate

    spec = generate.Spec(n=rows, d=100, density=1.0, task="logistic", classes=3, seed=0, num_partitions=2)
    return f"synthetic ({rows} x 100, dense)", generate.synthetic_frame(spark, spec).select("features", "label")


def _timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def cv_against_one_mllib_fit(spark, name, df) -> list[str]:
    from pyspark.ml.classification import LogisticRegression as MLlibLR

    from sparkopt.ml import LogisticRegressionCV, clear_cache

    df = df.cache()
    df.count()
    MLlibLR(maxIter=5).fit(df)                # warm-up: the JVM's JIT and the Python workers, for both
    clear_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, cv_seconds = _timed(lambda: LogisticRegressionCV(numFolds=5, numRegParams=20, seed=0).fit(df))
    result = model.cvResult
    mllib, mllib_seconds = _timed(lambda: MLlibLR(regParam=model.bestRegParam).fit(df))
    clear_cache()
    df.unpersist()
    engine = model._fit.params.get("engine")
    return [f"| {name} | LogisticRegressionCV 20 x 5 folds ({engine} engine) | {cv_seconds:.1f} | "
            f"{result.passes:g} passes ({result.fit_passes:g} one fit after another) | |",
            f"| | MLlib LogisticRegression, one cold fit at bestRegParam {model.bestRegParam:.3g} | "
            f"{mllib_seconds:.1f} | {mllib.summary.totalIterations} iterations | "
            f"ratio {cv_seconds / mllib_seconds:.2f} (target <= 1.5) |"]


def crossvalidator(spark, data: Path) -> list[str]:
    from pyspark.ml.classification import LogisticRegression as MLlibLR
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    from sparkopt.ml import LogisticRegression, clear_cache

    name, df = _a9a(spark, data)
    df = df.cache()
    df.count()
    MLlibLR(maxIter=5).fit(df)
    rows, seconds = [], {}
    for system, estimator in (("sparkopt", LogisticRegression()), ("MLlib", MLlibLR())):
        grid = ParamGridBuilder().addGrid(estimator.regParam, [1e-1, 1e-2, 1e-3, 1e-4]).build()
        cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, evaluator=BinaryClassificationEvaluator(),
                            numFolds=3, seed=7)
        clear_cache()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted, seconds[system] = _timed(lambda: cv.fit(df))
        rows.append(f"| {name} | pyspark CrossValidator 3 folds x 4 regParams over {system} | {seconds[system]:.1f} | "
                    f"best AUC {max(fitted.avgMetrics):.4f} | |")
    rows[-1] = rows[-1][:-2] + f"sparkopt / MLlib {seconds['sparkopt'] / seconds['MLlib']:.2f} (target <= 1) |"
    clear_cache()
    df.unpersist()
    return rows


def sector_path(data: Path) -> list[str]:
    from sklearn.datasets import load_svmlight_file

    from sparkopt.engine import LocalEngine
    from sparkopt.tuning import regularization_path

    X, y = load_svmlight_file(str(data / "sector.scale.bz2"), n_features=55197)
    y = (y > 52).astype(float)
    rows = []
    for alpha, min_ratio in ((0.5, None), (1.0, 0.05)):
        for label, screening in (("strong rules + KKT", True), ("no screening", False)):
            engine = LocalEngine.from_arrays(X.tocsr(), y, num_partitions=2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path, seconds = _timed(lambda: regularization_path(engine, "logistic", elastic_net_param=alpha,
                                                                     n_reg_params=20, min_ratio=min_ratio,
                                                                     early_stop=False, screening=screening))
            widest = max(p.screened or 0 for p in path.points) if screening else X.shape[1]
            newton = sum(p.solver == "newton" for p in path.points)
            rows.append(f"| sector (6412 x 55197, sparse) | path alpha {alpha}, 20 values to "
                        f"{min_ratio or 1e-2:g} lambda_max, {label} | {seconds:.1f} | {path.passes:g} passes | "
                        f"widest solve {widest} features, {newton} points by Newton, "
                        f"{path.points[-1].n_nonzero} nonzero at the end |")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {CASES}")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="directory holding a9a, sector.scale.bz2")
    parser.add_argument("--synthetic-rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {CASES}")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"{platform.processor() or platform.platform()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| data | what | seconds | passes / iterations | |")
    print("|---|---|---|---|---|")
    if "sector-path" in cases:
        for row in sector_path(args.data):
            print(row, flush=True)
    spark_cases = [c for c in cases if c != "sector-path"]
    if not spark_cases:
        return
    spark = _session()
    try:
        for case in spark_cases:
            if case == "a9a-cv":
                rows = cv_against_one_mllib_fit(spark, *_a9a(spark, args.data))
            elif case == "synthetic-cv":
                rows = cv_against_one_mllib_fit(spark, *_synthetic(spark, args.synthetic_rows))
            else:
                rows = crossvalidator(spark, args.data)
            for row in rows:
                print(row, flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
