"""Scoring with numpy: `transform_in_arrow` appends a model's output columns to a DataFrame in
one `mapInArrow` pass, and the conversions between pyspark.ml vectors / matrices and numpy that
single-row prediction and the coefficient accessors use."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from pyspark.ml.linalg import DenseMatrix, DenseVector, SparseVector, Vectors

from ..errors import InputError


def transform_in_arrow(dataset, features_col: str, n_features: int, output_columns: list[tuple[str, str]],
                       score: Callable[..., dict], offset_col: Optional[str] = None):
    """`dataset` plus the columns `output_columns` names ([(name, 'vector' | 'double')]; an empty
    name leaves that output out), computed batch by batch as `score(X)` -> {name: array} on the
    features as a numpy / CSR matrix, or `score(X, offset)` with `offset_col` (a numeric column
    read as float64, nulls as NaN; a GLM's offsetCol). `score` is pickled into the tasks with
    everything it holds."""
    import pyarrow as pa
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import types as T

    from ..engine.ingest import _convert_vectors

    if features_col not in dataset.columns:
        raise InputError(f"features column {features_col!r} not found; available columns: {dataset.columns}")
    outputs = [(name, kind) for name, kind in output_columns if name]
    for name, _ in outputs:
        if name in dataset.columns:
            raise InputError(f"output column {name!r} already exists in the DataFrame")
    if not outputs:
        return dataset
    position = dataset.columns.index(features_col)
    offset_position = None
    if offset_col is not None:
        if offset_col not in dataset.columns:
            raise InputError(f"offset column {offset_col!r} not found; available columns: {dataset.columns}")
        offset_position = dataset.columns.index(offset_col)
    fields = list(dataset.schema.fields)
    for name, kind in outputs:
        fields.append(T.StructField(name, T.ArrayType(T.DoubleType(), False) if kind == "vector" else T.DoubleType()))
    schema = T.StructType(fields)

    def scorer(batches):
        for batch in batches:
            n = batch.num_rows
            col = batch.column(position)
            if col.null_count:
                raise ValueError(f"features column {features_col!r} has null vectors")
            X, d, bad = _convert_vectors(col, np.ones(n, dtype=bool), None)
            if n and (bad or d != n_features):
                raise ValueError(f"features column {features_col!r} has vectors of size {bad or d}, "
                                 f"the model expects {n_features}")
            if X is None:
                X = np.zeros((0, n_features))
            if offset_position is None:
                out = score(X)
            else:
                offset = batch.column(offset_position).cast(pa.float64()).to_numpy(zero_copy_only=False)
                out = score(X, np.asarray(offset, dtype=float))
            arrays = list(batch.columns)
            for name, kind in outputs:
                values = np.asarray(out[name], dtype=float)
                if kind == "vector":
                    width = values.shape[1] if values.ndim == 2 else 0
                    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32) if n else np.zeros(1, np.int32))
                    arrays.append(pa.ListArray.from_arrays(offsets, pa.array(values.ravel())))
                else:
                    arrays.append(pa.array(values))
            yield pa.RecordBatch.from_arrays(arrays, names=[f.name for f in fields])

    result = dataset.mapInArrow(scorer, schema)
    for name, kind in outputs:
        if kind == "vector":
            result = result.withColumn(name, array_to_vector(name))
    return result


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
