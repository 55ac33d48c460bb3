"""CrossValidator over sparkopt estimators with parallelism 1 and 2: wall time and identical models.

One local[2] SparkSession; a cached DataFrame per data set; each case fits the same
CrossValidator (3 folds, collectSubModels) with parallelism=1, then =2 (then 1 and 2 once more,
and the faster run of each counts: the machine may be shared), and checks that every sub-model's
coefficients are bit-identical between the two. Cases: a9a logistic regression, a 2 x 2 grid of
regParam x elasticNetParam (two groups: two regularization paths per fold, side by side with
parallelism 2), on the driver engine and on the tree engine; the same grid fitted as chains of
single fits (L-BFGS-B under box bounds: no path); GeneralizedLinearRegression (poisson IRLS,
cold fits) on bike counts over regParam x fitIntercept (four independent fits per fold).

    PYTHONPATH=.:jobs python -m bench.cv_parallelism [--data DIR] [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np


def _session():
    import sys

    from pyspark.sql import SparkSession

    return (SparkSession.builder.master("local[2]").appName("sparkopt-cv-parallelism")
            .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", "4").config("spark.driver.memory", "4g")
            .config("spark.pyspark.python", sys.executable).getOrCreate())


def _cases(spark, data: Path):
    from pyspark.ml.evaluation import BinaryClassificationEvaluator, RegressionEvaluator
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.linalg import Matrices, Vectors
    from pyspark.ml.tuning import ParamGridBuilder
    from pyspark.sql import functions as F

    from sparkopt.ml import GeneralizedLinearRegression, LogisticRegression

    a9a = (spark.read.format("libsvm").option("numFeatures", 123).load(str(data / "a9a"))
           .withColumn("label", (F.col("label") > 0).cast("double")).repartition(2).cache())
    a9a.count()
    auc = BinaryClassificationEvaluator()
    for engine in ("driver", "tree"):
        lr = LogisticRegression(engine=engine, tol=1e-6)
        grid = ParamGridBuilder().addGrid(lr.regParam, [1e-2, 1e-3]).addGrid(lr.elasticNetParam, [0.0, 0.5]).build()
        yield f"a9a logistic, 2 paths of 2 per fold, {engine} engine", lr, grid, auc, a9a
    bounded = LogisticRegression(engine="driver", tol=1e-6, lowerBoundsOnCoefficients=Matrices.dense(1, 123, [-1.0] * 123),
                                 upperBoundsOnCoefficients=Matrices.dense(1, 123, [1.0] * 123),
                                 lowerBoundsOnIntercepts=Vectors.dense([-5.0]), upperBoundsOnIntercepts=Vectors.dense([5.0]))
    grid = ParamGridBuilder().addGrid(bounded.regParam, [1e-2, 1e-3]).addGrid(bounded.fitIntercept, [True]) \
        .addGrid(bounded.standardization, [True, False]).build()
    yield "a9a logistic, box bounds: 2 chains of 2 fits per fold, driver engine", bounded, grid, auc, a9a
    cols = ["season", "hr", "workingday", "weathersit", "temp", "hum", "windspeed"]
    raw = spark.read.option("header", True).option("inferSchema", True).csv(str(data / "bike_sharing_hour.csv"))
    bike = (VectorAssembler(inputCols=cols, outputCol="features").transform(raw)
            .select("features", F.col("cnt").cast("double").alias("label")).repartition(2).cache())
    bike.count()
    glr = GeneralizedLinearRegression(family="poisson", engine="tree")
    grid = ParamGridBuilder().addGrid(glr.regParam, [0.0, 1e-2]).addGrid(glr.fitIntercept, [True, False]).build()
    yield "bike poisson GLR (IRLS), 4 cold fits per fold, tree engine", glr, grid, RegressionEvaluator(), bike


def _coefficients(cv_model) -> list:
    return [np.asarray(m._fit.coef_vector if hasattr(m._fit, "coef_vector") else m._fit.coef)
            for fold in cv_model.subModels for m in fold]


def main(argv=None) -> None:
    from pyspark.ml.tuning import CrossValidator

    from sparkopt.ml import clear_cache

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "data")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each parallelism (the fastest counts)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    spark = _session()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
              f"{os.cpu_count()} cores, local[2], 3 folds; seconds: the fastest of {args.repeats} runs")
        print("| case | parallelism 1 (s) | parallelism 2 (s) | ratio | sub-models identical |")
        print("|---|---|---|---|---|")
        for name, estimator, grid, evaluator, df in _cases(spark, args.data):
            seconds, models = {1: [], 2: []}, {}
            for _ in range(args.repeats):
                for parallelism in (1, 2):
                    clear_cache()           # every run ingests its folds itself
                    cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, evaluator=evaluator,
                                        numFolds=3, seed=11, parallelism=parallelism, collectSubModels=True)
                    started = time.perf_counter()
                    fitted = cv.fit(df)
                    seconds[parallelism].append(time.perf_counter() - started)
                    models[parallelism] = _coefficients(fitted)
            same = all(np.array_equal(a, b) for a, b in zip(models[1], models[2]))
            one, two = min(seconds[1]), min(seconds[2])
            print(f"| {name} | {one:.1f} | {two:.1f} | {one / two:.2f} | {'yes' if same else 'NO'} |", flush=True)
    finally:
        clear_cache()
        spark.stop()


if __name__ == "__main__":
    main()
