"""The estimator and model bases every sparkopt Estimator / Model derives from.

Thin on purpose: an estimator turns its params into one `fit_linear_model` call on an engine over
the (cached) ingested blocks, and fits a param grid on one ingest with warm starts
(`fitMultiple`); a model holds the coefficient vector and scores rows through `scoring`.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import threading
import time
from typing import Optional

import numpy as np
from pyspark.ml import PredictionModel, Predictor
from pyspark.ml.util import MLReadable, MLWritable

from ..engine import TreeEngine
from ..engine.compression import Compression
from ..errors import InputError
from ..fit import LinearFit, fit_linear_model
from ..rules import canonical_solver
from ..solvers import SOLVERS
from ..objectives.losses import loss_info
from ..predictions import LinearPredictor
from ..solvers.checkpoint import approx_scalar
from ..solvers.registry import solver_options
from ..tuning import regularization_path
from .cache import ENGINE_CACHE
from .params import SparkoptParams
from .persistence import EstimatorWriter, ModelReader, ModelWriter, ParamsOnlyReader
from .progress import Progress
from .scoring import as_matrix, transform_in_arrow
from .summary import RegressionSummary, RegressionTrainingSummary, TrainingSummary


class SparkoptEstimator(Predictor, SparkoptParams, MLWritable, MLReadable):
    """Fit = ingest (cached) + fit_linear_model + model. Subclasses define `_loss(stats)` and
    name the model they fit in `_model_class`; the base builds it.

    A pyspark.ml `Predictor` (pure Python in pyspark 4: Params and abstract methods, no JVM);
    each estimator also derives from the base its MLlib namesake has (`ProbabilisticClassifier`,
    `Classifier`, `Regressor`), listed after sparkopt's own param mixins so their validated
    setters and MLlib-consistent threshold rules win."""

    _model_class: type["SparkoptModel"]

    def _loss(self, stats) -> str:   # pragma: no cover - abstract
        raise NotImplementedError

    def _loss_options(self) -> dict:
        return {}

    def _bounds(self, loss: str, stats) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(lower, upper) bounds on the coefficient vector for a bound-constrained fit, or None."""
        return None

    def _has_bounds(self) -> bool:
        """Whether a bounds param is set (a bound-constrained grid is fitted map by map, not as a path)."""
        names = ("lowerBoundsOnCoefficients", "upperBoundsOnCoefficients", "lowerBoundsOnIntercepts",
                 "upperBoundsOnIntercepts")
        return any(self.hasParam(name) and self.isDefined(self.getParam(name)) for name in names)

    def _fit_on_engine(self, engine: TreeEngine, ingest_seconds: float, dataset, warm: Optional[np.ndarray] = None,
                       checkpoint_namespace: Optional[str] = None):
        self._validate_all()
        loss = self._loss(engine.stats)
        # the sharded engine starts from its own shards (an initial model would pass through the
        # driver): a grid's fits there run cold, same optimum
        initial = None if getattr(engine, "kind", None) == "sharded" else warm
        model0 = self.getInitialModel()
        if initial is None and model0 is not None:
            initial = model0._coef_vector_for(loss, engine.stats.n_features, self.getFitIntercept())
        options = dict(step_size=self.getStepSize(), fraction=self.getMiniBatchFraction(),
                       schedule=self.getStepSchedule(), seed=self.getSeed(), local_steps=self.getLocalSteps(),
                       combination=self.getLocalCombination(), staleness=self.getStaleness(),
                       optimizer=self.getOptimizer())
        solver = canonical_solver(self.getSolver())
        if solver == "gd" and not self.isSet(self.stepSize):
            options.pop("step_size")          # GD line-searches unless the user fixed a step
        # only what the requested solver takes (the params of the others are not typos)
        accepted = solver_options(solver) if solver in SOLVERS else ()
        options = {key: value for key, value in options.items() if key in accepted}
        started = time.perf_counter()
        with exclusive_engine(engine):
            fit = fit_linear_model(
                engine, loss, reg_param=self.getRegParam(), elastic_net_param=self.getElasticNetParam(),
                fit_intercept=self.getFitIntercept(), standardization=self.getStandardization(),
                solver=solver, max_iter=self.getMaxIter(), tol=self.getTol(), initial_coef=initial,
                solver_options=options, label_col=self.getLabelCol(),
                callback=Progress(self.getMaxIter()) if self.getOrDefault(self.verbose) else None,
                bounds=self._bounds(loss, engine.stats),
                **self._checkpoint_kwargs(checkpoint_namespace), **self._loss_options())
        fit.params.update(fit_seconds=time.perf_counter() - started)
        return self._model_from_fit(fit, engine, ingest_seconds, dataset)

    def _model_from_fit(self, fit: LinearFit, engine, ingest_seconds: float, dataset):
        fit.params.update(ingest_seconds=ingest_seconds, num_rows=engine.stats.n_rows, engine=engine.kind)
        fit.params["fit_intercept"] = self.getFitIntercept()
        model = self._model_class()
        model._init_from_fit(fit, engine.stats)
        self._copyValues(model)
        model._fit = fit
        model._state["l2Hessian"] = _l2_hessian(engine.stats, fit.loss, self.getRegParam(), self.getElasticNetParam(),
                                                self.getStandardization())
        model._attach_summary(model._summary_classes()[1](model, fit, dataset))
        return model

    def _engine_for(self, dataset):
        self._validate_all()
        weight = self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None
        num_partitions = self.getOrDefault(self.numPartitions) if self.isDefined(self.numPartitions) else None
        return ENGINE_CACHE.get(dataset, self.getFeaturesCol(), self.getLabelCol(), weight, num_partitions,
                                self.getAggregationDepth(), self.getEngine(), self.getMaxDriverSizeInMB(),
                                model_values=self._model_values,
                                compression=Compression.of(self.getCompression(), self.getCompressionRatio()))

    def _model_values(self, stats) -> int:
        """The model's coefficients, d x K (``engine="auto"`` shards the model beyond a budget)."""
        try:
            multinomial = self._loss(stats) == "multinomial"
        except Exception:  # noqa: BLE001 - the fit reports a bad label itself
            multinomial = False
        classes = max(int(stats.label_max) + 1, 2) if multinomial and stats.n_rows else 1
        return int(stats.n_features) * classes

    def _fit(self, dataset):
        engine, seconds = self._engine_for(dataset)
        return self._fit_on_engine(engine, seconds, dataset)

    def fitMultiple(self, dataset, paramMaps):
        """Ingest once, then fit every param map (what CrossValidator and TrainValidationSplit
        call, once per fold), concurrently when the caller calls ``next`` from several threads
        (``CrossValidator(parallelism=p)``). The maps are grouped by every param but regParam:
        a group of two or more that a path can fit is one regularization path
        (sparkopt.tuning.regularization_path: decreasing regParam, warm starts, strong rules
        with the KKT check; squared error from one pass of statistics); any other group is a
        chain of fits along decreasing regParam, each warm-started from the previous one's
        coefficients (when that fit converged). Groups run side by side, a group's own steps
        in order, so each model is the same whatever the number of threads and whichever
        finishes first (see :class:`_GridFits`). Models come back in the caller's order within
        a path. With checkpointDir (never a path), map i's fit on these data checkpoints under
        `data-<data_digest>/fit-<i>`, so each fold's fits resume from their own checkpoints."""
        estimators = [self.copy(pm) for pm in paramMaps]
        for est in estimators:
            est._validate_all()
        return _GridFits(dataset, estimators, self._grid_groups(estimators))

    #: whether a grid's fits warm-start one another and may run as a path (GLR: MLlib's IRLS, cold)
    _grid_warm_starts = True

    def _grid_groups(self, estimators) -> list["_GridGroup"]:
        """The maps grouped by every param but regParam (see fitMultiple), in first-index order."""
        if not self._grid_warm_starts:
            return [_GridGroup(estimators, [i], False) for i in range(len(estimators))]
        groups: list[list[int]] = []
        keys: list[dict] = []
        for i, est in enumerate(estimators):
            key = _without_reg_param(est)
            for members, other in zip(groups, keys):
                if _same_values(key, other):
                    members.append(i)
                    break
            else:
                groups.append([i])
                keys.append(key)
        return [_GridGroup(estimators, members, self._path_applies([estimators[i] for i in members]))
                for members in groups]

    def _path_applies(self, estimators) -> bool:
        """Whether the maps are one regularization path: two or more, equal in every param but
        regParam, a synchronous solver, no checkpoints, initial model, progress or bounds (a
        non-smooth loss, known once the data are, falls back to a chain)."""
        if len(estimators) < 2:
            return False
        first = estimators[0]
        if canonical_solver(first.getSolver()) not in PATH_SOLVERS or first.getInitialModel() is not None \
                or first._checkpoint_kwargs() or first.getOrDefault(first.verbose) or first._has_bounds():
            return False
        reference = _without_reg_param(first)
        return all(_same_values(_without_reg_param(est), reference) for est in estimators[1:])

    def _fit_path(self, dataset, estimators) -> Optional[list]:
        """The estimators' models from one regularization path over their regParams (in their
        order), or None when the loss is not smooth (no path: the caller fits them one by one)."""
        first = estimators[0]
        engine, seconds = first._engine_for(dataset)
        loss = first._loss(engine.stats)
        if not loss_info(loss).smooth:
            return None
        regs = sorted({float(est.getRegParam()) for est in estimators}, reverse=True)
        started = time.perf_counter()
        with exclusive_engine(engine):
            path = regularization_path(
                engine, loss, elastic_net_param=first.getElasticNetParam(), reg_params=regs,
                fit_intercept=first.getFitIntercept(), standardization=first.getStandardization(),
                solver=canonical_solver(first.getSolver()), tol=first.getTol(), max_iter=first.getMaxIter(),
                label_col=first.getLabelCol(), **first._loss_options())
        total = time.perf_counter() - started
        by_reg = {p.reg_param: p for p in path.points}
        models = []
        for est in estimators:
            point = by_reg[float(est.getRegParam())]
            fit = point.fit
            fit.params.update(fit_seconds=point.seconds, path_seconds=total, path_passes=path.passes,
                              path_points=len(path.points))
            models.append(est._model_from_fit(fit, engine, seconds, dataset))
        return models

    def _fit_in_grid(self, dataset, index: int, warm: Optional[np.ndarray]):
        """This map's model (`index` in the grid) on the cached ingest, warm-started from `warm`."""
        engine, seconds = self._engine_for(dataset)
        # one checkpoint sub-directory per (data, param map): CrossValidator fits every map on
        # each fold, and each fold's fits are other problems than the previous fold's
        namespace = os.path.join(f"data-{data_digest(engine.stats)}", f"fit-{index}")
        return self._fit_on_engine(engine, seconds, dataset, warm=warm if self.getInitialModel() is None else None,
                                   checkpoint_namespace=namespace)

    def write(self):
        return EstimatorWriter(self)

    @classmethod
    def read(cls):
        return ParamsOnlyReader(cls)


def data_digest(stats) -> str:
    """A short name for the rows a fit sees, the same for the same rows on a rerun: counts and
    extremes (exact whatever the partitioning), the weight sum and label mean to 10 digits (as
    the checkpoint fingerprint has them). Folds of one DataFrame differ in all of these."""
    described = {"n_rows": int(stats.n_rows), "n_features": int(stats.n_features), "nnz": int(stats.nnz),
                 "weight_sum": approx_scalar(stats.weight_sum), "label_mean": approx_scalar(stats.label_mean),
                 "label_min": float(stats.label_min), "label_max": float(stats.label_max)}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    for values in (stats.feature_nonzero, stats.feature_min, stats.feature_max):
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()[:16]


#: the solvers a path runs with (the sampled and asynchronous ones fit a grid one map at a time)
PATH_SOLVERS = ("auto", "normal", "gd", "lbfgs", "owlqn", "newton", "newton-cg")


def _same_values(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(a[k] is b[k] or (type(a[k]) is type(b[k]) and a[k] == b[k]) for k in a)


def _without_reg_param(est) -> dict:
    return {p.name: v for p, v in est.extractParamMap().items() if p.name != "regParam"}


#: held by every fit on a resident engine (see exclusive_engine)
_RESIDENT_FITS = threading.RLock()


@contextlib.contextmanager
def exclusive_engine(engine):
    """Run the block's fit alone if `engine` is resident, beside any other fit otherwise.

    A resident session is one barrier job whose tasks take every task slot for the whole fit:
    a second session started beside it could not get its slots (it would wait until the first
    ends, then time out or find them taken again), and passes of another fit interleaved into
    it would gain nothing, each pass already using every slot. So concurrent fits (a
    CrossValidator with parallelism > 1, threads of one application) take turns on resident
    engines, one fit at a time in this process; fits on the driver and tree engines run side
    by side (Spark schedules their jobs' tasks together, the driver's numpy releases the GIL)."""
    if getattr(engine, "kind", None) != "resident":
        yield
        return
    with _RESIDENT_FITS:
        yield


class _GridGroup:
    """Maps of a grid equal in every param but regParam (indices into the grid): one
    regularization path fitted at once, or a chain of fits along decreasing regParam (ties in
    grid order), each warm-started from the last converged one's coefficients. A chain's fits
    run one at a time, in that order, so every fit starts from the same point whatever the
    threads do."""

    def __init__(self, estimators, members: list[int], path: bool):
        self.estimators = estimators
        self.members = sorted(members)
        self.chain = sorted(members, key=lambda i: (-float(estimators[i].getRegParam()), i))
        self.path = path
        self.position = 0          # the next fit of the chain
        self.busy = False          # a step is running
        self.warm: Optional[np.ndarray] = None

    def claim(self):
        """The next step ('path', members) or ('fit', index, warm start), or None while a step
        runs or when the group is done; the caller then runs it and calls `finished`."""
        if self.busy or self.position >= len(self.chain):
            return None
        self.busy = True
        if self.path:
            return ("path", self.members)
        return ("fit", self.chain[self.position], self.warm)

    def finished(self, step, models: Optional[list]) -> None:
        """Record a step's models (None: the step raised, or the path did not apply)."""
        self.busy = False
        if step[0] == "path":
            if models is None:
                self.path = False           # not a path after all: fit the chain
            else:
                self.position = len(self.chain)
            return
        self.position += 1
        fit = models[0]._fit if models else None
        if getattr(fit, "result", None) is not None and fit.result.success:    # a LinearFit that converged
            self.warm = fit.coef_vector


class _GridFits:
    """What fitMultiple returns: an iterator of (index, model), one per map, safe to call from
    several threads at once (CrossValidator's `parallelism` threads each call `next`).

    Each call takes the next step some group can run (a path, or a chain's next fit whose
    predecessor is done), runs it outside the lock, and returns one of its models; a path's
    other models wait for the next calls. A call finding no step free (every group busy or
    waiting on its own running fit) waits until a step ends. A step that raises raises in its
    caller; a failed path's other maps each raise the same error in a later call (so every
    call gets one model or one error); a chain goes on after a failed fit, cold."""

    def __init__(self, dataset, estimators, groups: list[_GridGroup]):
        self._dataset = dataset
        self._estimators = estimators
        self._groups = groups
        self._ready: collections.deque = collections.deque()       # (index, model) fitted, not yet returned
        self._failed: collections.deque = collections.deque()      # errors owed to later calls
        self._settled = 0
        self._cond = threading.Condition()

    def __iter__(self):
        return self

    def __next__(self):
        with self._cond:
            while True:
                if self._ready:
                    self._settled += 1
                    return self._ready.popleft()
                if self._failed:
                    self._settled += 1
                    raise self._failed.popleft()
                if self._settled >= len(self._estimators):
                    raise StopIteration("No models remaining.")
                group, step = next(((g, s) for g in self._groups for s in [g.claim()] if s is not None),
                                   (None, None))
                if step is not None:
                    break
                if not any(g.busy for g in self._groups):       # pragma: no cover - every map is settled
                    raise StopIteration("No models remaining.")
                self._cond.wait()
        try:
            models = self._run(step)
        except BaseException as exc:
            with self._cond:
                group.finished(step, None)
                if step[0] == "path":       # this call's error stands for the path's first map
                    self._failed.extend(exc for _ in step[1][1:])
                self._settled += 1
                self._cond.notify_all()
            raise
        with self._cond:
            group.finished(step, models)
            self._cond.notify_all()
            if models is not None:
                fitted = list(zip(step[1] if step[0] == "path" else [step[1]], models))
                self._ready.extend(fitted[1:])
                self._settled += 1
                return fitted[0]
        return next(self)                   # not a path after all: its group is a chain now

    def _run(self, step) -> Optional[list]:
        if step[0] == "path":
            estimators = [self._estimators[i] for i in step[1]]
            return estimators[0]._fit_path(self._dataset, estimators)
        _, index, warm = step
        return [self._estimators[index]._fit_in_grid(self._dataset, index, warm)]


def _l2_hessian(stats, loss: str, reg_param: float, elastic_net_param: float, standardization: bool) -> np.ndarray:
    """The diagonal (d,) of the L2 penalty's Hessian in coefficient space (what the summary's
    standard errors add to the data's Hessian): lam (1 - alpha) s_j^2 with the fit's lam
    (regParam / sd(y) for squared error, as fit.solver_coordinates) and s_j = sd_j under
    standardization; 0 for constant features, whose coefficients are fixed at 0."""
    sd = np.asarray(stats.feature_std, dtype=float)
    lam = float(reg_param)
    if loss == "squared_error" and reg_param > 0 and float(stats.label_std) > 0:
        lam = reg_param / float(stats.label_std)
    scale = sd if standardization else np.ones_like(sd)
    return np.where(sd > 0, lam * (1.0 - elastic_net_param) * scale ** 2, 0.0)


class _FitMultipleIterator:
    """The iterator fitMultiple returns: CrossValidator's threads call next() on it concurrently,
    which a generator does not allow; `fit_next` serializes them."""

    def __init__(self, fit_next):
        self._fit_next = fit_next

    def __iter__(self):
        return self

    def __next__(self):
        return self._fit_next()


class SparkoptModel(PredictionModel, SparkoptParams, MLWritable, MLReadable):
    """Holds the coefficient vector in the objective's layout; scoring is numpy in one Arrow UDF
    over the features column (`scoring.transform_in_arrow`). `_summary_classes()` are the
    summaries `evaluate` and its fit report. A pyspark.ml `PredictionModel`; each model also
    derives from its MLlib namesake's base (`ProbabilisticClassificationModel`,
    `ClassificationModel`, `RegressionModel`). `repr` is MLlib's `toString`."""

    def _summary_classes(self) -> tuple[type, type[TrainingSummary]]:
        """(what evaluate(df) returns, what the training summary is)."""
        return RegressionSummary, RegressionTrainingSummary

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

    def _repr_sizes(self) -> str:
        return f"numFeatures={self.numFeatures}"

    def __repr__(self) -> str:
        """MLlib's toString, e.g. ``LinearRegressionModel: uid=..., numFeatures=8`` (the uid alone,
        as any pyspark.ml object's, before the model has coefficients)."""
        if not self._state:
            return super().__repr__()
        return f"{type(self).__name__}: uid={self.uid}, {self._repr_sizes()}"

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

    def evaluate(self, dataset):
        """This model's metrics on `dataset` (works on a loaded model: no fit needed)."""
        return self._summary_classes()[0](self, dataset)

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

    def _output_metadata(self) -> dict[str, dict]:
        """{output column: schema metadata}, as MLlib's transform writes it (a regression's
        prediction: a numeric attribute without name, ``{"ml_attr": {}}``)."""
        return {self.getPredictionCol(): {"ml_attr": {}}}

    def _predictor(self) -> LinearPredictor:   # pragma: no cover - abstract
        """This model's coefficients and output rule as a numpy-only LinearPredictor: what
        transform ships into the tasks (not the model: its params would make every Python
        worker import pyspark.ml and the estimators)."""
        raise NotImplementedError

    def predict(self, value) -> float:
        return float(self._predictor().outputs(as_matrix(value))["prediction"][0])

    def _transform(self, dataset):
        return transform_in_arrow(dataset, self.getFeaturesCol(), self.numFeatures, self._output_columns(),
                                  self._predictor(), metadata=self._output_metadata())

    # -- persistence -----------------------------------------------------------------------------
    def write(self):
        return ModelWriter(self)

    @classmethod
    def read(cls):
        return ModelReader(cls)

    def copy(self, extra=None):
        that = super().copy(extra)
        that._state = dict(self._state)
        that._fit, that._summary = self._fit, self._summary
        return that
