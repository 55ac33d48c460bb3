"""Saving and loading estimators and models as plain JSON metadata in pyspark's
DefaultParamsWriter layout (so a PipelineModel can load them): the writers, the readers, the
registry of classes that may be loaded, and which params are never written or carried into a copy.

Loading trusts nothing in the file: the class it names must be one registered here (looked up by
name, never imported from a path the file gives), params pass the same rules as `set`, and a
model's coefficient vector must have the shape its numFeatures, numClasses, fitIntercept and loss
imply. Anything else is an InputError naming the metadata file and the field.
"""
from __future__ import annotations

import json
import math
import time
from typing import Any, Optional

import numpy as np
from pyspark.ml.util import MLReader, MLWriter

from ..engine.session import is_connect
from ..errors import InputError
from ..objectives.losses import MAX_CLASSES

# initialModel is a whole fitted model (with its summary and training DataFrame), not a setting
NOT_PERSISTED = ("initialModel",)

#: the classes a saved file may name, by their full name: models, and estimators (params only)
MODEL_CLASSES: dict[str, type] = {}
ESTIMATOR_CLASSES: dict[str, type] = {}

# what a fit stores as numClasses, by loss
_BINARY_LOSSES = ("logistic", "hinge", "squared_hinge")
_REGRESSION_LOSSES = ("squared_error", "huber", "poisson", "glm")


def class_name(cls) -> str:
    return cls.__module__ + "." + cls.__name__


def register_model(*losses: str):
    """Class decorator: `cls` may be loaded from a saved file, holding a model of one of `losses`."""
    def register(cls):
        from .estimator import SparkoptModel

        if not issubclass(cls, SparkoptModel):
            raise TypeError(f"{cls.__name__} is not a SparkoptModel")
        cls._saved_losses = tuple(losses)
        MODEL_CLASSES[class_name(cls)] = cls
        return cls
    return register


def register_estimator(cls):
    """Class decorator: the estimator `cls` may be loaded (its params) from a saved file."""
    from .estimator import SparkoptEstimator

    if not issubclass(cls, SparkoptEstimator):
        raise TypeError(f"{cls.__name__} is not a SparkoptEstimator")
    ESTIMATOR_CLASSES[class_name(cls)] = cls
    return cls


# ------------------------------------------------------------------------------------ writing
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


def _state_json(instance) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in instance._state.items()}


def metadata_of(instance, spark_version: str) -> dict:
    """What is saved for `instance`: pyspark's DefaultParamsWriter fields, plus a model's state
    under 'sparkoptModel' (loss, numFeatures, numClasses, fitIntercept, coef_vector, objective, scale)."""
    meta = {
        "class": class_name(type(instance)),
        "timestamp": int(round(time.time() * 1000)),
        "sparkVersion": spark_version,
        "uid": instance.uid,
        "paramMap": _params_json(instance),
        "defaultParamMap": _default_params_json(instance),
    }
    if hasattr(instance, "_state"):
        meta["sparkoptModel"] = _state_json(instance)
    return meta


def _save_metadata(instance, path, spark):
    """Plain JSON metadata in pyspark's DefaultParamsWriter layout (so PipelineModel can load it),
    one text file written through a DataFrame (as pyspark.ml's writers do: a classic and a Spark
    Connect session write and read the same files)."""
    meta = metadata_of(instance, spark.version)
    text = json.dumps(meta, separators=(",", ":"))
    spark.createDataFrame([(text,)], "value string").coalesce(1).write.text(f"{path}/metadata")


class EstimatorWriter(MLWriter):
    """Writes an estimator's params (a model's: params and state)."""

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def _handleOverwrite(self, path):
        if is_connect(self.sparkSession):   # no py4j on a Connect client: the server's ML helper deletes
            from pyspark.ml.connect.readwrite import RemoteMLWriter

            RemoteMLWriter.handleOverwrite(path, True)
        else:
            super()._handleOverwrite(path)

    def saveImpl(self, path):
        _save_metadata(self.instance, path, self.sparkSession)


ModelWriter = EstimatorWriter


# ------------------------------------------------------------------------------------ reading
def _load_metadata(path: str, spark) -> tuple[dict, str]:
    """(the metadata JSON object, the name of its file for messages) of what is saved at `path`."""
    where = f"{path}/metadata"
    try:
        first = spark.read.text(where).first()
        if first is None:
            raise ValueError("the metadata directory holds no line")
        text = first[0]
    except Exception as err:   # missing path, empty or unreadable directory: Spark's error, in one line
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise InputError(f"no saved sparkopt object at {path}: cannot read {where} ({reason})") from None
    try:
        metadata = json.loads(text)
    except ValueError as err:
        raise InputError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(metadata, dict):
        raise InputError(f"{where}: must hold a JSON object, got {type(metadata).__name__}")
    return metadata, where


def _bad(where: str, field: str, problem: str) -> InputError:
    return InputError(f"{where}: field '{field}' {problem}")


def _saved_class(metadata: dict, cls, registry: dict, kind: str, where: str):
    if "class" not in metadata:
        raise _bad(where, "class", "is missing")
    name = metadata["class"]
    found = registry.get(name) if isinstance(name, str) else None
    if found is None:
        raise _bad(where, "class", f"is {name!r}, not a sparkopt {kind} class (one of {sorted(registry)})")
    if not issubclass(found, cls):
        raise _bad(where, "class", f"is {name!r}: the saved object at this path is a {name!r}, "
                                   f"not a {class_name(cls)!r}")
    return found


def _set_params(instance, metadata: dict, where: str) -> None:
    from .params import validate_param

    for field in ("defaultParamMap", "paramMap"):
        values = metadata.get(field, {})
        if not isinstance(values, dict):
            raise _bad(where, field, f"must be a JSON object, got {type(values).__name__}")
        for name, value in values.items():
            if name in NOT_PERSISTED or not instance.hasParam(name):
                continue
            try:
                value = _decode(value)                  # matrices and vectors (the bounds params)
                if field == "paramMap":
                    instance._set(**{name: value})     # converted and checked as a user's set
                else:
                    param = instance.getParam(name)
                    value = param.typeConverter(value) if param.typeConverter is not None else value
                    validate_param(name, value, instance._extra_validators)
                    instance._setDefault(**{name: value})
            except (InputError, TypeError, ValueError, KeyError) as err:
                raise _bad(where, f"{field}.{name}", f"is invalid: {err}") from None


def _new_instance(cls, metadata: dict, where: str):
    uid = metadata.get("uid")
    if not isinstance(uid, str) or not uid:
        raise _bad(where, "uid", f"must be a non-empty string, got {uid!r}")
    instance = cls()
    instance._resetUid(uid)
    _set_params(instance, metadata, where)
    return instance


def params_instance_from_metadata(cls, metadata: dict, where: str):
    """An estimator of class `cls` with the saved uid and params (see the module docstring)."""
    return _new_instance(_saved_class(metadata, cls, ESTIMATOR_CLASSES, "estimator", where), metadata, where)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked_state(cls, state: Any, where: str) -> dict:
    """The model state of `state` (the saved 'sparkoptModel' object), every field checked."""
    def bad(field, problem):
        return _bad(where, f"sparkoptModel.{field}", problem)

    if not isinstance(state, dict):
        raise _bad(where, "sparkoptModel", f"must be a JSON object, got {type(state).__name__}")
    for field in ("loss", "numFeatures", "numClasses", "fitIntercept", "coef_vector"):
        if field not in state:
            raise bad(field, "is missing")
    loss, d, classes, fit_intercept = state["loss"], state["numFeatures"], state["numClasses"], state["fitIntercept"]
    if loss not in cls._saved_losses:
        raise bad("loss", f"is {loss!r}; a {cls.__name__} holds one of {', '.join(map(repr, cls._saved_losses))}")
    if not _is_int(d):
        raise bad("numFeatures", f"must be an integer, got {d!r}")
    if d < 1:
        raise bad("numFeatures", f"must be >= 1, got {d}")
    if not _is_int(classes):
        raise bad("numClasses", f"must be an integer, got {classes!r}")
    if loss == "multinomial" and not 2 <= classes <= MAX_CLASSES:
        raise bad("numClasses", f"must be in [2, {MAX_CLASSES}] for a multinomial model, got {classes}")
    if loss in _BINARY_LOSSES and classes != 2:
        raise bad("numClasses", f"must be 2 for loss {loss!r}, got {classes}")
    if loss in _REGRESSION_LOSSES and classes != 1:
        raise bad("numClasses", f"must be 1 for loss {loss!r}, got {classes}")
    if not isinstance(fit_intercept, bool):
        raise bad("fitIntercept", f"must be true or false, got {fit_intercept!r}")
    coef = state["coef_vector"]
    if not isinstance(coef, list) or not all(_is_number(v) for v in coef):
        raise bad("coef_vector", "must be a list of numbers")
    rows = classes if loss == "multinomial" else 1
    expected = rows * (d + int(fit_intercept)) + (1 if loss == "huber" else 0)
    if len(coef) != expected:
        raise bad("coef_vector", f"has {len(coef)} values; numFeatures={d}, numClasses={classes}, "
                                 f"fitIntercept={fit_intercept} and loss {loss!r} need {expected}")
    coef = np.asarray(coef, dtype=float)
    if not np.all(np.isfinite(coef)):
        raise bad("coef_vector", f"must be finite, has {int(np.sum(~np.isfinite(coef)))} NaN or infinite values")
    objective, scale = state.get("objective"), state.get("scale")
    if objective is not None and not _is_number(objective):
        raise bad("objective", f"must be a number, got {objective!r}")
    if loss == "huber" or scale is not None:
        if not (_is_number(scale) and math.isfinite(scale) and scale > 0):
            raise bad("scale", f"must be a finite number > 0{' for a huber model' if loss == 'huber' else ''}, "
                               f"got {scale!r}")
    checked = {"loss": loss, "numFeatures": d, "numClasses": classes, "fitIntercept": fit_intercept,
               "coef_vector": coef, "objective": None if objective is None else float(objective),
               "scale": None if scale is None else float(scale)}
    l2_hessian = state.get("l2Hessian")
    if l2_hessian is not None:      # the penalty's curvature, for the summary's standard errors
        if not (isinstance(l2_hessian, list) and len(l2_hessian) == d and all(_is_number(v) for v in l2_hessian)
                and all(math.isfinite(v) and v >= 0 for v in l2_hessian)):
            raise bad("l2Hessian", f"must be a list of {d} finite numbers >= 0")
        checked["l2Hessian"] = np.asarray(l2_hessian, dtype=float)
    extra = getattr(cls, "_checked_extra_state", None)
    if extra is not None:           # what a subclass keeps beside the model (the CV models' results)
        checked.update(extra(state, bad))
    return checked


def model_from_metadata(cls, metadata: dict, where: str):
    """A model of class `cls` (or a registered subclass) from its saved metadata, every field checked."""
    found = _saved_class(metadata, cls, MODEL_CLASSES, "model", where)
    if "sparkoptModel" not in metadata:
        raise _bad(where, "sparkoptModel", "is missing (a model's coefficients and sizes)")
    state = _checked_state(found, metadata["sparkoptModel"], where)
    instance = _new_instance(found, metadata, where)
    instance._state = state
    return instance


class ParamsOnlyReader(MLReader):
    """Reads what EstimatorWriter wrote for an estimator into a new instance of `cls`."""

    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path):
        metadata, where = _load_metadata(path, self.sparkSession)
        return params_instance_from_metadata(self.cls, metadata, where)


class ModelReader(ParamsOnlyReader):
    """Reads what the writer saved for a model: the params, then the checked state."""

    def load(self, path):
        metadata, where = _load_metadata(path, self.sparkSession)
        return model_from_metadata(self.cls, metadata, where)


def saved_model_class(name: Optional[str]):
    """The registered model class of the full class name `name`, or None."""
    return MODEL_CLASSES.get(name) if isinstance(name, str) else None
