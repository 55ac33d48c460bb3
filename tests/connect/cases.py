"""The fits a Spark Connect session and a classic one must agree on: the same estimators on the same
bundled data, each on the tree, the driver and the resident engine. ``fit_cases(spark)`` runs them on whichever
session it is given and returns plain JSON-able results. The Connect suite (its own process: pyspark
allows one kind of session per process) writes them to files; ``python tests/connect/cases.py OUT``
writes the same fits from a classic local[2] session of its own, and
tests/spark/test_connect_suite.py compares the two."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ("tree", "driver", "resident")


def a9a_head(spark, rows: int = 3000):
    """a9a's first rows as LIBSVM gives them (sparse vectors), labels 0/1, in 2 partitions."""
    from pyspark.sql import functions as F

    return (spark.read.format("libsvm").option("numFeatures", 123).load(str(ROOT / "data" / "a9a"))
            .limit(rows).withColumn("label", (F.col("label") > 0).cast("double")).repartition(2))


def letter_head(spark, rows: int = 3000):
    """letter.scale's first rows, 'label' the class index 0..25, in 2 partitions."""
    from pyspark.sql import functions as F

    return (spark.read.format("libsvm").option("numFeatures", 16).load(str(ROOT / "data" / "letter.scale"))
            .limit(rows).withColumn("label", F.col("label") - 1).repartition(2))


def california_raw(spark, rows: int = 4000):
    """california_housing in raw units as VectorAssembler gives them, label log(median value)."""
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    raw = (spark.read.option("header", True).option("inferSchema", True)
           .csv(str(ROOT / "data" / "california_housing.csv")).limit(rows).na.fill(0.0))
    columns = ["longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms", "population",
               "households", "median_income"]
    assembled = VectorAssembler(inputCols=columns, outputCol="features").transform(raw)
    return assembled.select("features", F.log("median_house_value").alias("label")).repartition(2)


def _estimators():
    from sparkopt.ml import LinearRegression, LogisticRegression

    # solvers named: engines differ in pass cost, so solver="auto" may pick differently on each
    return {
        "binary-logistic-a9a": (a9a_head, lambda: LogisticRegression(regParam=0.01, solver="newton", tol=1e-10)),
        "multinomial-letter": (letter_head, lambda: LogisticRegression(regParam=0.01, family="multinomial",
                                                                         solver="newton", tol=1e-10)),
        "ridge-california-raw": (california_raw, lambda: LinearRegression(regParam=1e-3, solver="lbfgs",
                                                                            standardization=False, tol=1e-10)),
    }


def coefficients_of(model) -> dict:
    if getattr(model, "numClasses", 2) > 2:
        return {"coefficients": model.coefficientMatrix.toArray().ravel().tolist(),
                "intercept": model.interceptVector.toArray().tolist()}
    return {"coefficients": model.coefficients.toArray().tolist(), "intercept": [float(model.intercept)]}


CASES = tuple(_estimators())


def fit_case(spark, name: str) -> dict:
    """{engine: {"coefficients", "intercept", "objective", "engine"}} of case ``name`` on ``spark``."""
    from sparkopt.ml import clear_cache

    data, make = _estimators()[name]
    df = data(spark).cache()
    out = {}
    for engine in ENGINES:
        model = make().setEngine(engine).fit(df)
        out[engine] = {**coefficients_of(model), "objective": model.summary.objective,
                       "engine": model._fit.params["engine"]}
    df.unpersist()
    clear_cache()
    return out


def main(out: str) -> None:
    """Every case on a classic local[2] session, one ``<case>.json`` per case in ``out``."""
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName("sparkopt-connect-reference")
             .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1").config("spark.sql.shuffle.partitions", "4")
             .config("spark.pyspark.python", sys.executable).getOrCreate())
    try:
        for case in CASES:
            (Path(out) / f"{case}.json").write_text(json.dumps(fit_case(spark, case)))
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(sys.argv[1])
