"""A linear model saved shard by shard (sparkopt.sharded_objective.write_sharded_model), scored
without ever holding its coefficients in the driver.

The model directory holds ``model.json`` (loss, sizes, the K intercepts, Huber's scale) and
``coefficients/part-RRRRR.parquet``, one file per task of the fit, rows ``(output, feature,
value)`` for the nonzero coefficients. :meth:`ShardedLinearModel.transform` scores a DataFrame
with Spark alone: the rows' nonzero features ``(row, feature, x)`` joined with the coefficient
table on ``feature``, the products summed per ``(row, output)``, then the intercepts (K values)
added and the link applied per row. The driver plans the job and holds the K intercepts, nothing
d-sized.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["ShardedLinearModel"]

_ROW = "_sparkopt_row"


def _entries(vector: Any) -> list:
    """(feature, value) of a Spark ML vector's nonzeros."""
    if vector is None:
        return []
    if hasattr(vector, "indices"):
        return [(int(i), float(v)) for i, v in zip(vector.indices, vector.values) if v != 0]
    return [(int(i), float(v)) for i, v in enumerate(vector.toArray()) if v != 0]


def _score(loss: str, intercepts: list, scale: Any, pairs: Any) -> tuple:
    """(raw margins, probabilities or None, prediction) of one row from its summed (output,
    margin) pairs."""
    raw = np.array(intercepts, dtype=float)
    for output, margin in pairs or []:
        raw[int(output)] += float(margin)
    if loss == "multinomial":
        shifted = np.exp(raw - raw.max())
        prob = shifted / shifted.sum()
        return raw.tolist(), prob.tolist(), float(np.argmax(raw))
    m = float(raw[0])
    if loss == "logistic":
        p = 1.0 / (1.0 + np.exp(-m))
        return [-m, m], [1.0 - p, p], float(m > 0)
    if loss == "poisson":
        return [m], None, float(np.exp(m))
    return [m], None, m


class ShardedLinearModel:
    """A model written by a sharded fit (``fit_sharded(..., model_dir=...)``)."""

    def __init__(self, path: str, meta: dict) -> None:
        self.path, self.meta = path, meta

    @classmethod
    def load(cls, path: Any) -> "ShardedLinearModel":
        path = os.fspath(path)
        try:
            with open(os.path.join(path, "model.json")) as fh:
                meta = json.load(fh)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path!r} is not a sparkopt sharded model directory: {exc}") from None
        if meta.get("format") != "sparkopt-sharded-model" or meta.get("version") != 1:
            raise InputError(f"{path!r} is not a sparkopt sharded model (format {meta.get('format')!r})")
        return cls(path, meta)

    @property
    def loss(self) -> str:
        return self.meta["loss"]

    @property
    def intercepts(self) -> np.ndarray:
        return np.asarray(self.meta["intercepts"], dtype=float)

    def coefficient_table(self, spark: Any) -> Any:
        """The coefficients as a DataFrame of (output, feature, value), read by the executors."""
        return spark.read.parquet(os.path.join(self.path, "coefficients"))

    def transform(self, df: Any, features_col: str = "features", prediction_col: str = "prediction",
                  raw_col: str = "rawPrediction", probability_col: str = "probability") -> Any:
        """``df`` with the raw margins (an array), the probabilities (classification) and the
        prediction (class index; the mean for regression), scored by a join with the coefficient
        table (see the module docstring)."""
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        if features_col not in df.columns:
            raise InputError(f"featuresCol {features_col!r} is not a column of the DataFrame ({df.columns})")
        loss, intercepts, scale = self.loss, list(self.meta["intercepts"]), self.meta.get("scale")
        spark = df.sparkSession
        rows = df.withColumn(_ROW, F.monotonically_increasing_id())   # df read twice: same ids if df is deterministic
        entry = T.ArrayType(T.StructType([T.StructField("feature", T.IntegerType()),
                                          T.StructField("x", T.DoubleType())]))
        entries = (rows.select(_ROW, F.explode(F.udf(lambda v: _entries(v), entry)(F.col(features_col))).alias("e"))
                   .select(_ROW, F.col("e.feature").alias("feature"), F.col("e.x").alias("x")))
        coefficients = self.coefficient_table(spark)
        margins = (entries.join(coefficients, "feature")
                   .groupBy(_ROW, "output").agg(F.sum(F.col("x") * F.col("value")).alias("margin"))
                   .groupBy(_ROW).agg(F.collect_list(F.struct("output", "margin")).alias("_pairs")))
        scored = T.StructType([T.StructField("raw", T.ArrayType(T.DoubleType())),
                               T.StructField("prob", T.ArrayType(T.DoubleType())),
                               T.StructField("prediction", T.DoubleType())])
        score = F.udf(lambda pairs: _score(loss, intercepts, scale, pairs), scored)
        out = rows.join(margins, _ROW, "left").withColumn("_scored", score(F.col("_pairs")))
        out = out.withColumn(raw_col, F.col("_scored.raw"))
        if loss in ("logistic", "multinomial"):
            out = out.withColumn(probability_col, F.col("_scored.prob"))
        return out.withColumn(prediction_col, F.col("_scored.prediction")).drop("_scored", "_pairs", _ROW)
