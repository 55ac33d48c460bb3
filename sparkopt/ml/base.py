"""What every sparkopt estimator and model shares: params, validation, the ingest cache, fitting,
Arrow-based transform, summaries and JSON persistence.

Thin on purpose: an estimator turns its params into one `fit_linear_model` call; a model holds
coefficients and scores rows in `mapInArrow` with numpy.
"""
from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any, Callable, Optional

import numpy as np
from pyspark.ml import Estimator, Model
from pyspark.ml.linalg import DenseMatrix, DenseVector, SparseVector, Vectors
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasAggregationDepth,
    HasCheckpointInterval,
    HasElasticNetParam,
    HasFeaturesCol,
    HasFitIntercept,
    HasLabelCol,
    HasMaxIter,
    HasPredictionCol,
    HasRegParam,
    HasSeed,
    HasStandardization,
    HasStepSize,
    HasTol,
    HasWeightCol,
)
from pyspark.ml.util import DefaultParamsReader, MLReadable, MLReader, MLWritable, MLWriter

from ..engine import ENGINES, TreeEngine, ingest, make_engine
from ..errors import InputError
from ..fit import LinearFit, fit_linear_model
from ..solvers import SOLVERS


# ------------------------------------------------------------------------------------ validation
_VALIDATORS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "maxIter": (lambda v: v >= 0, ">= 0"),
    "tol": (lambda v: np.isfinite(v) and v > 0, "> 0"),
    "regParam": (lambda v: np.isfinite(v) and v >= 0, ">= 0"),
    "elasticNetParam": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "aggregationDepth": (lambda v: v >= 1, ">= 1"),
    "stepSize": (lambda v: np.isfinite(v) and v > 0, "> 0"),
    "miniBatchFraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "solver": (lambda v: v in SOLVERS, f"one of {SOLVERS}"),
    "localSteps": (lambda v: v >= 1, ">= 1"),
    "localCombination": (lambda v: np.isfinite(v) and v >= 1, "a finite number >= 1"),
    "staleness": (lambda v: v >= -1, ">= 0 (or -1 for unbounded)"),
    "stepSchedule": (lambda v: v in ("constant", "inverse_sqrt", "exponential"),
                     "one of ('constant', 'inverse_sqrt', 'exponential')"),
    "threshold": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "family": (lambda v: v in ("auto", "binomial", "multinomial"), "one of ('auto', 'binomial', 'multinomial')"),
    "epsilon": (lambda v: np.isfinite(v) and v > 1.0, "> 1.0"),
    "numPartitions": (lambda v: v >= 1, ">= 1"),
    "engine": (lambda v: v in ENGINES, f"one of {ENGINES}"),
    # pyspark's convention: -1 disables checkpointing
    "checkpointInterval": (lambda v: v == -1 or v >= 1, ">= 1 (or -1 to disable)"),
    "checkpointDir": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty path"),
}


def _validate_param(name: str, value: Any, extra: Optional[dict] = None) -> None:
    rules = dict(_VALIDATORS)
    rules.update(extra or {})
    if name in rules and value is not None:
        check, text = rules[name]
        try:
            ok = bool(check(value))
        except TypeError:
            ok = False
        if not ok:
            raise InputError(f"param {name} must be {text}, got {value!r}")


class _SparkoptParams(HasFeaturesCol, HasLabelCol, HasWeightCol, HasPredictionCol, HasMaxIter, HasTol, HasRegParam,
                      HasElasticNetParam, HasFitIntercept, HasStandardization, HasAggregationDepth, HasSeed,
                      HasStepSize, HasCheckpointInterval):
    """pyspark.ml's shared params plus sparkopt's solver params, validated when set and at fit."""

    solver = Param(Params._dummy(), "solver",
                   "optimizer: auto, gd, sgd, local-sgd, async-sgd (resident engine), lbfgs, owlqn, newton or newton-cg (auto picks exact Newton when "
                   "a Hessian is cheap, else Newton-CG; proximal Newton or OWL-QN under L1)", typeConverter=TypeConverters.toString)
    miniBatchFraction = Param(Params._dummy(), "miniBatchFraction",
                              "fraction of every partition sampled per SGD iteration, in (0, 1]",
                              typeConverter=TypeConverters.toFloat)
    stepSchedule = Param(Params._dummy(), "stepSchedule", "SGD step schedule: constant, inverse_sqrt, exponential",
                         typeConverter=TypeConverters.toString)
    localSteps = Param(Params._dummy(), "localSteps",
                       "local-sgd: SGD steps every shard takes on its own data per communication round (>= 1)",
                       typeConverter=TypeConverters.toInt)
    localCombination = Param(Params._dummy(), "localCombination",
                             "local-sgd: beta >= 1 in x + beta * (weighted mean of the shard deltas); 1 averages "
                             "the shard models, the number of shards adds their deltas (CoCoA+)",
                             typeConverter=TypeConverters.toFloat)
    staleness = Param(Params._dummy(), "staleness",
                      "async-sgd: a worker may run at most this many clocks ahead of the slowest one (0 is "
                      "synchronous SGD, -1 unbounded)", typeConverter=TypeConverters.toInt)
    numPartitions = Param(Params._dummy(), "numPartitions",
                          "repartition the input into this many partitions before ingest (None keeps them)",
                          typeConverter=TypeConverters.toInt)
    initialModel = Param(Params._dummy(), "initialModel", "a fitted model of the same kind to warm-start from")
    engine = Param(Params._dummy(), "engine",
                   "how passes run on Spark: 'resident' keeps the data in the executors' Python workers for the "
                   "whole fit, 'tree' runs one treeAggregate job per pass, 'auto' picks resident when every "
                   "partition can run at once", typeConverter=TypeConverters.toString)
    verbose = Param(Params._dummy(), "verbose",
                    "show per-iteration progress: a live line in a notebook, else a line on stderr",
                    typeConverter=TypeConverters.toBoolean)
    checkpointDir = Param(Params._dummy(), "checkpointDir",
                          "directory (on the driver's filesystem: local or shared) where the solver state is saved "
                          "every checkpointInterval iterations; a fit rerun with the same directory resumes from it "
                          "(None: no checkpoints)", typeConverter=TypeConverters.toString)

    _extra_validators: dict = {}

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(maxIter=100, tol=1e-6, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
                         standardization=True, aggregationDepth=2, solver="auto", stepSize=1.0,
                         miniBatchFraction=1.0, stepSchedule="inverse_sqrt", seed=0, verbose=False,
                         checkpointInterval=10, engine="auto", localSteps=1, localCombination=1.0,
                         staleness=2)

    def _set(self, **kwargs):
        for name, value in kwargs.items():
            if value is not None and self.hasParam(name):
                param = self.getParam(name)
                if param.typeConverter is not None:
                    try:
                        value = param.typeConverter(value)
                    except TypeError as err:
                        raise InputError(f"param {name}: {err}") from None
                _validate_param(name, value, self._extra_validators)
        return super()._set(**kwargs)

    def _validate_all(self) -> None:
        for param in self.params:
            if self.isDefined(param):
                _validate_param(param.name, self.getOrDefault(param), self._extra_validators)

    def getSolver(self) -> str:
        return self.getOrDefault(self.solver)

    def getMiniBatchFraction(self) -> float:
        return self.getOrDefault(self.miniBatchFraction)

    def getStepSchedule(self) -> str:
        return self.getOrDefault(self.stepSchedule)

    def getLocalSteps(self) -> int:
        return self.getOrDefault(self.localSteps)

    def getLocalCombination(self) -> float:
        return self.getOrDefault(self.localCombination)

    def getStaleness(self) -> Optional[int]:
        """The async-sgd staleness bound (None when unbounded, i.e. the param is -1)."""
        value = self.getOrDefault(self.staleness)
        return None if value == -1 else value

    def getEngine(self) -> str:
        return self.getOrDefault(self.engine)

    def getInitialModel(self):
        return self.getOrDefault(self.initialModel) if self.isDefined(self.initialModel) else None

    def getCheckpointDir(self) -> Optional[str]:
        return self.getOrDefault(self.checkpointDir) if self.isDefined(self.checkpointDir) else None

    def _checkpoint_kwargs(self, namespace: Optional[str] = None) -> dict:
        """fit_linear_model's checkpoint arguments (none when checkpointDir is unset or the
        interval is -1); `namespace` is a sub-directory, one per fit of a param grid."""
        directory, interval = self.getCheckpointDir(), self.getCheckpointInterval()
        if not directory or interval == -1:
            return {}
        if namespace:
            directory = os.path.join(directory, namespace)
        return {"checkpoint_dir": directory, "checkpoint_interval": interval}


def add_setters(cls, *names):
    """pyspark.ml-style setters (setRegParam, setMaxIter, ...) for the named params of `cls`."""
    for name in names:
        def setter(self, value, _name=name):
            return self._set(**{_name: value})
        setter.__name__ = "set" + name[0].upper() + name[1:]
        setter.__doc__ = f"Sets the value of :py:attr:`{name}` (validated)."
        setattr(cls, setter.__name__, setter)
    return cls


add_setters(_SparkoptParams, "featuresCol", "labelCol", "weightCol", "predictionCol", "maxIter", "tol", "regParam",
            "elasticNetParam", "fitIntercept", "standardization", "aggregationDepth", "seed", "stepSize", "solver",
            "miniBatchFraction", "stepSchedule", "numPartitions", "initialModel", "verbose",
            "checkpointInterval", "checkpointDir", "engine", "localSteps", "localCombination", "staleness")


class Progress:
    """Per-iteration progress for `verbose=True`: one live-updated line in a Jupyter notebook
    (IPython's display handle), a carriage-return line on stderr elsewhere."""

    def __init__(self, max_iter: int, stream=None):
        self.max_iter = max_iter
        self.stream = stream
        self._handle = None
        if stream is None:
            try:
                from IPython import get_ipython
                from IPython.display import display

                shell = get_ipython()
                if shell is not None and getattr(shell, "kernel", None) is not None:
                    self._handle = display("sparkopt: starting", display_id=True)
            except ImportError:
                pass

    def __call__(self, row: dict) -> None:
        text = (f"sparkopt: iter {row['iteration']}/{self.max_iter}  objective {row['objective']:.10g}  "
                f"grad {row['grad_norm']:.2e}  passes {row['passes']:g}  {row['seconds']:.1f}s")
        if self._handle is not None:
            self._handle.update(text)
        else:
            import sys

            stream = self.stream or sys.stderr
            stream.write("\r" + text)
            stream.flush()
        return None


# ------------------------------------------------------------------------------------ ingest cache
class _EngineCache:
    """Ingested blocks reused across fits of the same DataFrame (a regularization path, a grid
    search): keyed by the DataFrame's semantic plan hash and the columns, bounded LRU; evicted
    entries are unpersisted. `sparkopt.ml.clear_cache()` releases everything."""

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._entries: "OrderedDict[tuple, tuple[Any, TreeEngine]]" = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(df, features_col, label_col, weight_col, num_partitions):
        try:
            plan = df.semanticHash()
        except Exception:   # Spark Connect or older: fall back to object identity
            plan = ("id", id(df))
        return (plan, df.sparkSession.sparkContext.applicationId, str(features_col), label_col,
                weight_col, num_partitions)

    def get(self, df, features_col, label_col, weight_col, num_partitions, depth,
            engine: str = "auto") -> tuple[TreeEngine, float]:
        """A fresh engine of the requested kind over the (cached) blocks, and the ingest seconds."""
        key = self._key(df, features_col, label_col, weight_col, num_partitions)
        with self._lock:
            for stale in [k for k, (ref, _) in self._entries.items() if ref() is None]:
                self._entries.pop(stale)[1].unpersist()      # its DataFrame is gone: free the blocks
            hit = self._entries.get(key)
            if hit is not None and hit[0]().sameSemantics(df):
                self._entries.move_to_end(key)
                cached = hit[1]
                return make_engine(cached.rdd, cached.stats, depth, engine), 0.0
        start = time.perf_counter()
        rdd, stats = ingest(df, features_col, label_col, weight_col, num_partitions=num_partitions)
        seconds = time.perf_counter() - start
        with self._lock:
            self._entries[key] = (weakref.ref(df), TreeEngine(rdd, stats, depth))
            while len(self._entries) > self.capacity:
                _, (_, old) = self._entries.popitem(last=False)
                old.unpersist()
        return make_engine(rdd, stats, depth, engine), seconds

    def clear(self) -> None:
        with self._lock:
            for _, engine in self._entries.values():
                engine.unpersist()
            self._entries.clear()


ENGINE_CACHE = _EngineCache()


def clear_cache() -> None:
    """Unpersist every block set sparkopt keeps for reuse between fits."""
    ENGINE_CACHE.clear()


# ------------------------------------------------------------------------------------ estimator
class _SparkoptEstimator(Estimator, _SparkoptParams, MLWritable, MLReadable):
    """Fit = ingest (cached) + fit_linear_model + model. Subclasses define `_loss(stats)` and
    `_make_model(fit, ...)`."""

    def _loss(self, stats) -> str:   # pragma: no cover - abstract
        raise NotImplementedError

    def _loss_options(self) -> dict:
        return {}

    _summary_class: type = None   # set below to TrainingSummary; subclasses refine it

    def _fit_on_engine(self, engine: TreeEngine, ingest_seconds: float, dataset, warm: Optional[np.ndarray] = None,
                       checkpoint_namespace: Optional[str] = None):
        self._validate_all()
        loss = self._loss(engine.stats)
        initial = warm
        model0 = self.getInitialModel()
        if initial is None and model0 is not None:
            initial = model0._coef_vector_for(loss, engine.stats.n_features, self.getFitIntercept())
        options = dict(step_size=self.getStepSize(), fraction=self.getMiniBatchFraction(),
                       schedule=self.getStepSchedule(), seed=self.getSeed(), local_steps=self.getLocalSteps(),
                       combination=self.getLocalCombination(), staleness=self.getStaleness())
        if self.getSolver() == "gd" and not self.isSet(self.stepSize):
            options.pop("step_size")          # GD line-searches unless the user fixed a step
        started = time.perf_counter()
        fit = fit_linear_model(
            engine, loss, reg_param=self.getRegParam(), elastic_net_param=self.getElasticNetParam(),
            fit_intercept=self.getFitIntercept(), standardization=self.getStandardization(),
            solver=self.getSolver(), max_iter=self.getMaxIter(), tol=self.getTol(), initial_coef=initial,
            solver_options=options, label_col=self.getLabelCol(),
            callback=Progress(self.getMaxIter()) if self.getOrDefault(self.verbose) else None,
            **self._checkpoint_kwargs(checkpoint_namespace), **self._loss_options())
        fit.params.update(fit_seconds=time.perf_counter() - started, ingest_seconds=ingest_seconds,
                          num_rows=engine.stats.n_rows, engine=engine.kind)
        fit.params["fit_intercept"] = self.getFitIntercept()
        model = self._make_model(fit, engine.stats)
        self._copyValues(model)
        model._fit = fit
        model._attach_summary((self._summary_class or TrainingSummary)(model, fit, dataset))
        return model

    def _engine_for(self, dataset):
        self._validate_all()
        weight = self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None
        num_partitions = self.getOrDefault(self.numPartitions) if self.isDefined(self.numPartitions) else None
        return ENGINE_CACHE.get(dataset, self.getFeaturesCol(), self.getLabelCol(), weight, num_partitions,
                                self.getAggregationDepth(), self.getEngine())

    def _fit(self, dataset):
        engine, seconds = self._engine_for(dataset)
        return self._fit_on_engine(engine, seconds, dataset)

    def fitMultiple(self, dataset, paramMaps):
        """Ingest once, then fit every param map, warm-starting along decreasing regParam when the
        maps differ only in continuous params (what CrossValidator and TrainValidationSplit call)."""
        estimators = [self.copy(pm) for pm in paramMaps]
        for est in estimators:
            est._validate_all()
        shared_data = {(e.getFeaturesCol(), e.getLabelCol(), e.getWeightCol() if e.isDefined(e.weightCol) else None)
                       for e in estimators}
        order = sorted(range(len(estimators)), key=lambda i: -estimators[i].getRegParam())
        lock = threading.Lock()
        state = {"next": 0, "engine": None, "seconds": 0.0, "previous": {}}

        def fit_next():
            with lock:
                if state["next"] >= len(order):
                    raise StopIteration("No models remaining.")
                index = order[state["next"]]
                state["next"] += 1
                est = estimators[index]
                if len(shared_data) == 1:
                    if state["engine"] is None:
                        state["engine"], state["seconds"] = est._engine_for(dataset)
                    engine, seconds = state["engine"], state["seconds"]
                else:
                    engine, seconds = est._engine_for(dataset)
                key = (est._loss(engine.stats), est.getFitIntercept(), est.getStandardization())
                warm = state["previous"].get(key) if est.getInitialModel() is None else None
                # one checkpoint sub-directory per param map: the fits of a grid are different problems
                model = est._fit_on_engine(engine, seconds, dataset, warm=warm, checkpoint_namespace=f"fit-{index}")
                if model._fit.result.success:
                    state["previous"][key] = model._fit.coef_vector
                return index, model

        return _FitMultipleIterator(fit_next)

    def write(self):
        return _EstimatorWriter(self)

    @classmethod
    def read(cls):
        return _ParamsOnlyReader(cls)


class _FitMultipleIterator:
    def __init__(self, fit_next):
        self._fit_next = fit_next

    def __iter__(self):
        return self

    def __next__(self):
        return self._fit_next()


# ------------------------------------------------------------------------------------ summaries
class TrainingSummary:
    """What the fit did: objectiveHistory (F per iteration), totalIterations, totalPasses,
    solver (the one actually used), converged, status, message, and the per-iteration history
    as a DataFrame. Metrics over the training predictions are computed lazily."""

    def __init__(self, model, fit: LinearFit, dataset):
        self._model, self._fit, self._dataset = model, fit, dataset
        self._predictions = None

    @property
    def objectiveHistory(self) -> list[float]:
        return [row["objective"] for row in self._fit.result.history]

    @property
    def totalIterations(self) -> int:
        return self._fit.result.nit

    @property
    def totalPasses(self) -> float:
        return self._fit.result.passes

    @property
    def solver(self) -> str:
        return self._fit.result.solver

    @property
    def converged(self) -> bool:
        return self._fit.result.success

    @property
    def status(self) -> str:
        return self._fit.result.status.name

    @property
    def message(self) -> str:
        return self._fit.result.message

    @property
    def objective(self) -> float:
        return self._fit.objective

    @property
    def fitSeconds(self) -> float:
        return self._fit.params.get("fit_seconds", float("nan"))

    @property
    def engine(self) -> str:
        """The engine that ran the passes: 'resident' or 'tree'."""
        return self._fit.params.get("engine", "tree")

    @property
    def ingestSeconds(self) -> float:
        return self._fit.params.get("ingest_seconds", float("nan"))

    @property
    def history(self):
        """Per-iteration records as a Spark DataFrame (iteration, objective, grad_norm, step_size,
        passes, seconds; plus rounds for local-sgd)."""
        spark = self._dataset.sparkSession
        history = self._fit.result.history
        cols = ["iteration", "objective", "grad_norm", "step_size", "passes", "seconds"]
        schema = ("iteration int, objective double, grad_norm double, step_size double, passes double, "
                  "seconds double")
        if history and all("rounds" in r for r in history):      # local-sgd: communication rounds
            cols.append("rounds")
            schema += ", rounds int"
        rows = [tuple(int(r[c]) if c in ("iteration", "rounds") else float(r[c]) for c in cols) for r in history]
        return spark.createDataFrame(rows, schema)

    @property
    def predictions(self):
        if self._predictions is None:
            self._predictions = self._model.transform(self._dataset)
        return self._predictions


# ------------------------------------------------------------------------------------ model
class _SparkoptModel(Model, _SparkoptParams, MLWritable, MLReadable):
    """Holds the coefficient vector in the objective's layout; scoring is numpy in mapInArrow."""

    def __init__(self):
        super().__init__()
        self._fit: Optional[LinearFit] = None
        self._state: dict = {}
        self._summary = None

    def _init_from_fit(self, fit: LinearFit, stats) -> None:
        self._state = {"loss": fit.loss, "numFeatures": stats.n_features, "numClasses": fit.n_classes,
                       "fitIntercept": bool(fit.params.get("fit_intercept", True)), "coef_vector": fit.coef_vector,
                       "objective": fit.objective, "scale": fit.scale}

    @property
    def numFeatures(self) -> int:
        return int(self._state["numFeatures"])

    @property
    def hasSummary(self) -> bool:
        return self._fit is not None and self._summary is not None

    @property
    def summary(self):
        if not self.hasSummary:
            raise RuntimeError(f"No training summary available for this {type(self).__name__} (it was loaded or copied)")
        return self._summary

    def _attach_summary(self, summary):
        self._summary = summary

    def _coef_vector_for(self, loss: str, n_features: int, fit_intercept: bool) -> np.ndarray:
        if self.numFeatures != n_features:
            raise InputError(f"initialModel has {self.numFeatures} features, the data has {n_features}")
        coef = np.asarray(self._state["coef_vector"], dtype=float)
        if loss != self._state["loss"] or bool(self._state["fitIntercept"]) != bool(fit_intercept):
            raise InputError(f"initialModel was fitted with loss={self._state['loss']!r}, "
                             f"fitIntercept={self._state['fitIntercept']}; this fit uses loss={loss!r}, "
                             f"fitIntercept={fit_intercept}")
        return coef

    # -- scoring ---------------------------------------------------------------------------------
    def _output_columns(self) -> list[tuple[str, str]]:   # pragma: no cover - abstract
        """[(column name, 'vector' | 'double')] this model appends."""
        raise NotImplementedError

    def _score(self, X) -> dict[str, np.ndarray]:   # pragma: no cover - abstract
        raise NotImplementedError

    def _transform(self, dataset):
        import pyarrow as pa
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import types as T

        from ..engine.ingest import _convert_vectors

        features = self.getFeaturesCol()
        if features not in dataset.columns:
            raise InputError(f"features column {features!r} not found; available columns: {dataset.columns}")
        outputs = [(name, kind) for name, kind in self._output_columns() if name]
        for name, _ in outputs:
            if name in dataset.columns:
                raise InputError(f"output column {name!r} already exists in the DataFrame")
        if not outputs:
            return dataset
        position = dataset.columns.index(features)
        n_features = self.numFeatures
        # ship a bare copy (params + coefficients): the model itself refers to its training
        # DataFrame through the summary, which must not be pickled into the tasks
        score = self._bare_copy()._score
        fields = list(dataset.schema.fields)
        for name, kind in outputs:
            fields.append(T.StructField(name, T.ArrayType(T.DoubleType(), False) if kind == "vector" else T.DoubleType()))
        schema = T.StructType(fields)

        def scorer(batches):
            for batch in batches:
                n = batch.num_rows
                col = batch.column(position)
                if col.null_count:
                    raise ValueError(f"features column {features!r} has null vectors")
                X, d, bad = _convert_vectors(col, np.ones(n, dtype=bool), None)
                if n and (bad or d != n_features):
                    raise ValueError(f"features column {features!r} has vectors of size {bad or d}, "
                                     f"the model expects {n_features}")
                if X is None:
                    X = np.zeros((0, n_features))
                out = score(X)
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

    def _bare_copy(self):
        bare = type(self)()
        bare._resetUid(self.uid)
        for source, target in ((self._paramMap, bare._paramMap), (self._defaultParamMap, bare._defaultParamMap)):
            target.update({bare.getParam(p.name): v for p, v in source.items() if p.name not in _NOT_PERSISTED})
        bare._state = dict(self._state)
        return bare

    @staticmethod
    def _as_matrix(vector) -> np.ndarray:
        if isinstance(vector, SparseVector):
            return vector.toArray().reshape(1, -1)
        return np.asarray(vector, dtype=float).reshape(1, -1)

    # -- persistence -----------------------------------------------------------------------------
    def write(self):
        return _ModelWriter(self)

    @classmethod
    def read(cls):
        return _ModelReader(cls)

    def copy(self, extra=None):
        that = super().copy(extra)
        that._state = dict(self._state)
        that._fit, that._summary = self._fit, self._summary
        return that


# ------------------------------------------------------------------------------------ persistence
_NOT_PERSISTED = ("initialModel",)


def _params_json(instance) -> dict:
    out = {}
    for param, value in instance._paramMap.items():
        if param.name not in _NOT_PERSISTED:
            out[param.name] = value
    return out


def _default_params_json(instance) -> dict:
    return {p.name: v for p, v in instance._defaultParamMap.items() if p.name not in _NOT_PERSISTED}


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


class _EstimatorWriter(MLWriter):
    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path):
        _save_metadata(self.instance, path, self.sparkSession.sparkContext)


class _ModelWriter(_EstimatorWriter):
    def saveImpl(self, path):
        state = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.instance._state.items()}
        _save_metadata(self.instance, path, self.sparkSession.sparkContext, {"sparkoptModel": state})


def _set_params_from(instance, metadata):
    for name, value in metadata.get("defaultParamMap", {}).items():
        if instance.hasParam(name):
            instance._setDefault(**{name: value})
    for name, value in metadata.get("paramMap", {}).items():
        if instance.hasParam(name):
            instance._set(**{name: value})


class _ParamsOnlyReader(MLReader):
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


class _ModelReader(_ParamsOnlyReader):
    def load(self, path):
        instance = super().load(path)
        state = DefaultParamsReader.loadMetadata(path, self.sparkSession.sparkContext)["sparkoptModel"]
        instance._state = {k: (np.asarray(v, dtype=float) if isinstance(v, list) else v) for k, v in state.items()}
        return instance


def _check_class(metadata, cls):
    expected = cls.__module__ + "." + cls.__name__
    if metadata.get("class") != expected:
        raise InputError(f"the saved object at this path is a {metadata.get('class')!r}, not a {expected!r}")


def dense_vector(values) -> DenseVector:
    return Vectors.dense(np.asarray(values, dtype=float))


def dense_matrix(M: np.ndarray) -> DenseMatrix:
    M = np.asarray(M, dtype=float)
    return DenseMatrix(M.shape[0], M.shape[1], M.ravel(order="F").tolist(), False)
