"""Scoring with numpy: `transform_in_arrow` appends a model's output columns to a DataFrame through
one scalar Arrow UDF over the features column (and an offset column), and the conversions between
pyspark.ml vectors / matrices and numpy that single-row prediction and the coefficient accessors use."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from pyspark.ml.linalg import DenseMatrix, DenseVector, SparseVector, Vectors

from ..errors import InputError


def _quoted(name: str) -> str:
    """A column name for F.col, taken literally (dots and backticks in it included)."""
    return "`" + name.replace("`", "``") + "`"


def transform_in_arrow(dataset, features_col: str, n_features: int, output_columns: list[tuple[str, str]],
                       score: Callable[..., dict], offset_col: Optional[str] = None,
                       metadata: Optional[dict] = None):
    """`dataset` plus the columns `output_columns` names ([(name, 'vector' | 'double')]; an empty
    name leaves that output out), computed batch by batch as `score(X)` -> {name: array} on the
    features as a numpy / CSR matrix, or `score(X, offset)` with `offset_col` (a numeric column
    read as float64, nulls as NaN; a GLM's offsetCol). `metadata` gives an output column its
    schema metadata ({name: dict}: MLlib's ``ml_attr``). `score` is pickled into the tasks with
    everything it holds: a model's numpy-only ``LinearPredictor``, so that the Python workers
    import neither pyspark.ml nor the estimators.

    Only the features column (and the offset column) goes through Arrow, into one scalar Arrow
    UDF whose struct result the output columns are read from: every other column stays in the
    JVM untouched (any type: intervals, maps, UDTs), and Spark's column pruning works through it
    (selecting one output column reads the features and nothing else)."""
    import pyarrow as pa
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if features_col not in dataset.columns:
        raise InputError(f"features column {features_col!r} not found; available columns: {dataset.columns}")
    outputs = [(name, kind) for name, kind in output_columns if name]
    for name, _ in outputs:
        if name in dataset.columns:
            raise InputError(f"output column {name!r} already exists in the DataFrame")
    if len({name for name, _ in outputs}) != len(outputs):
        raise InputError(f"output columns must have distinct names, got {[name for name, _ in outputs]}")
    if not outputs:
        return dataset
    if offset_col is not None and offset_col not in dataset.columns:
        raise InputError(f"offset column {offset_col!r} not found; available columns: {dataset.columns}")

    fields = [T.StructField(f"_{i}", T.ArrayType(T.DoubleType(), False) if kind == "vector" else T.DoubleType(),
                            False) for i, (_, kind) in enumerate(outputs)]
    scorer = arrow_scorer(features_col, n_features, outputs, score)
    inputs = [F.col(_quoted(features_col))]
    if offset_col is not None:
        inputs.append(F.col(_quoted(offset_col)))

        def run(features, offset):
            return scorer(features, offset)
    else:
        def run(features):
            return scorer(features)
    # a scalar Arrow UDF, told by its type hints (pa.Array, ... -> pa.Array) as pyspark 4 prefers
    run.__annotations__ = {**{name: pa.Array for name in run.__code__.co_varnames[:len(inputs)]}, "return": pa.Array}
    scores = F.arrow_udf(run, T.StructType(fields))(*inputs)
    # one UDF call per row: its struct in a scratch column, each output read from a field of it
    scratch = "__sparkopt_scores"
    while scratch in dataset.columns:
        scratch += "_"
    result = dataset.withColumn(scratch, scores)
    columns = {}
    for i, (name, kind) in enumerate(outputs):
        value = F.col(scratch).getField(f"_{i}")
        columns[name] = array_to_vector(value) if kind == "vector" else value
    result = result.withColumns(columns).drop(scratch)
    for name, _ in outputs:
        if metadata and name in metadata:
            result = result.withMetadata(name, metadata[name])
    return result


def arrow_scorer(features_col: str, n_features: int, outputs: list[tuple[str, str]],
                 score: Callable[..., dict]) -> Callable:
    """``scorer(features, offset=None)``: one Arrow batch of a features column (Spark ML vectors;
    offsets as any numeric Arrow array) -> a struct array of `outputs` (fields ``_0, _1, ...``:
    a list of float64 for 'vector', float64 for 'double'), from ``score(X[, offset])``. What the
    executors unpickle: it refers to numpy, pyarrow, the vector conversion of
    ``sparkopt.engine.ingest`` and `score`, nothing of pyspark.ml."""
    import pyarrow as pa

    from ..engine.ingest import _convert_vectors

    arrow_fields = [pa.field(f"_{i}", pa.list_(pa.field("element", pa.float64(), False)) if kind == "vector"
                             else pa.float64(), False) for i, (_, kind) in enumerate(outputs)]

    def scorer(features, offset=None):
        if isinstance(features, pa.ChunkedArray):
            features = features.combine_chunks()
        n = len(features)
        if features.null_count:
            raise ValueError(f"features column {features_col!r} has null vectors")
        X, d, bad = _convert_vectors(features, np.ones(n, dtype=bool), None)
        if n and (bad or d != n_features):
            raise ValueError(f"features column {features_col!r} has vectors of size {bad or d}, "
                             f"the model expects {n_features}")
        if X is None:
            X = np.zeros((0, n_features))
        if offset is None:
            out = score(X)
        else:
            out = score(X, np.asarray(offset.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=float))
        arrays = []
        for (name, kind), field in zip(outputs, arrow_fields):
            values = np.asarray(out[name], dtype=float)
            if kind == "vector":
                width = values.shape[1] if values.ndim == 2 else 0
                offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32) if n and width
                                   else np.zeros(n + 1, np.int32))
                arrays.append(pa.ListArray.from_arrays(offsets, pa.array(values.ravel()), type=field.type))
            else:
                arrays.append(pa.array(values, type=pa.float64()))
        return pa.StructArray.from_arrays(arrays, fields=arrow_fields)

    return scorer


def as_matrix(vector) -> np.ndarray:
    """One pyspark.ml vector (or a sequence of numbers) as a 1-row matrix."""
    if isinstance(vector, SparseVector):
        return vector.toArray().reshape(1, -1)
    return np.asarray(vector, dtype=float).reshape(1, -1)


def dense_vector(values) -> DenseVector:
    return Vectors.dense(np.asarray(values, dtype=float))


def dense_matrix(M: np.ndarray) -> DenseMatrix:
    M = np.asarray(M, dtype=float)
    return DenseMatrix(M.shape[0], M.shape[1], M.ravel(order="F").tolist(), False)
