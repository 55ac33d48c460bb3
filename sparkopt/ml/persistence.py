"""Saving and loading estimators and models as plain JSON metadata in pyspark's
DefaultParamsWriter layout (so a PipelineModel can load them): the writers, the readers, and
which params are never written or carried into a copy."""
from __future__ import annotations

import json
import time

import numpy as np
from pyspark.ml.util import DefaultParamsReader, MLReader, MLWriter

from ..errors import InputError

# initialModel is a whole fitted model (with its summary and training DataFrame), not a setting
NOT_PERSISTED = ("initialModel",)


def _encode(value):
    """A param value as JSON: pyspark.ml matrices and vectors (the bounds params) as tagged dicts."""
    from pyspark.ml.linalg import Matrix, Vector

    if isinstance(value, Matrix):
        dense = value.toArray()
        return {"sparkoptType": "matrix", "numRows": dense.shape[0], "numCols": dense.shape[1],
                "values": dense.ravel(order="F").tolist()}
    if isinstance(value, Vector):
        return {"sparkoptType": "vector", "values": value.toArray().tolist()}
    return value


def _decode(value):
    from pyspark.ml.linalg import Matrices, Vectors

    if isinstance(value, dict) and value.get("sparkoptType") == "matrix":
        return Matrices.dense(value["numRows"], value["numCols"], value["values"])
    if isinstance(value, dict) and value.get("sparkoptType") == "vector":
        return Vectors.dense(value["values"])
    return value


def _params_json(instance) -> dict:
    out = {}
    for param, value in instance._paramMap.items():
        if param.name not in NOT_PERSISTED:
            out[param.name] = _encode(value)
    return out


def _default_params_json(instance) -> dict:
    return {p.name: _encode(v) for p, v in instance._defaultParamMap.items() if p.name not in NOT_PERSISTED}


def _save_metadata(instance, path, sc, extra=None):
    """Plain JSON metadata in pyspark's DefaultParamsWriter layout (so PipelineModel can load it)."""
    meta = {
        "class": type(instance).__module__ + "." + type(instance).__name__,
        "timestamp": int(round(time.time() * 1000)),
        "sparkVersion": sc.version,
        "uid": instance.uid,
        "paramMap": _params_json(instance),
        "defaultParamMap": _default_params_json(instance),
    }
    if extra:
        meta.update(extra)
    sc.parallelize([json.dumps(meta, separators=(",", ":"))], 1).saveAsTextFile(f"{path}/metadata")


class EstimatorWriter(MLWriter):
    """Writes an estimator's params."""

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path):
        _save_metadata(self.instance, path, self.sparkSession.sparkContext)


class ModelWriter(EstimatorWriter):
    """Writes a model's params and its state (loss, sizes, coefficient vector, objective, scale)."""

    def saveImpl(self, path):
        state = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.instance._state.items()}
        _save_metadata(self.instance, path, self.sparkSession.sparkContext, {"sparkoptModel": state})


def _set_params_from(instance, metadata):
    for name, value in metadata.get("defaultParamMap", {}).items():
        if instance.hasParam(name):
            instance._setDefault(**{name: _decode(value)})
    for name, value in metadata.get("paramMap", {}).items():
        if instance.hasParam(name):
            instance._set(**{name: _decode(value)})


class ParamsOnlyReader(MLReader):
    """Reads what EstimatorWriter wrote into a new instance of `cls` (the saved class must be `cls`)."""

    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path):
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession.sparkContext)
        _check_class(metadata, self.cls)
        instance = self.cls()
        instance._resetUid(metadata["uid"])
        _set_params_from(instance, metadata)
        return instance


class ModelReader(ParamsOnlyReader):
    """Reads what ModelWriter wrote: the params, then the state."""

    def load(self, path):
        instance = super().load(path)
        state = DefaultParamsReader.loadMetadata(path, self.sparkSession.sparkContext)["sparkoptModel"]
        instance._state = {k: (np.asarray(v, dtype=float) if isinstance(v, list) else v) for k, v in state.items()}
        return instance


def _check_class(metadata, cls):
    expected = cls.__module__ + "." + cls.__name__
    if metadata.get("class") != expected:
        raise InputError(f"the saved object at this path is a {metadata.get('class')!r}, not a {expected!r}")
