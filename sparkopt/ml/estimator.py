"""The estimator and model bases every sparkopt Estimator / Model derives from.

Thin on purpose: an estimator turns its params into one `fit_linear_model` call on an engine over
the (cached) ingested blocks, and fits a param grid on one ingest with warm starts
(`fitMultiple`); a model holds the coefficient vector and scores rows through `scoring`.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np
from pyspark.ml import Estimator, Model
from pyspark.ml.util import MLReadable, MLWritable

from ..engine import TreeEngine
from ..errors import InputError
from ..fit import LinearFit, fit_linear_model
from ..solvers import SOLVERS
from ..solvers.registry import solver_options
from .cache import ENGINE_CACHE
from .params import SparkoptParams
from .persistence import NOT_PERSISTED, EstimatorWriter, ModelReader, ModelWriter, ParamsOnlyReader
from .progress import Progress
from .scoring import transform_in_arrow
from .summary import TrainingSummary


class SparkoptEstimator(Estimator, SparkoptParams, MLWritable, MLReadable):
    """Fit = ingest (cached) + fit_linear_model + model. Subclasses define `_loss(stats)` and
    name the model they fit in `_model_class`; the base builds it."""

    _model_class: type["SparkoptModel"]

    def _loss(self, stats) -> str:   # pragma: no cover - abstract
        raise NotImplementedError

    def _loss_options(self) -> dict:
        return {}

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
                       combination=self.getLocalCombination(), staleness=self.getStaleness(),
                       optimizer=self.getOptimizer())
        if self.getSolver() == "gd" and not self.isSet(self.stepSize):
            options.pop("step_size")          # GD line-searches unless the user fixed a step
        # only what the requested solver takes (the params of the others are not typos)
        accepted = solver_options(self.getSolver()) if self.getSolver() in SOLVERS else ()
        options = {key: value for key, value in options.items() if key in accepted}
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
        model = self._model_class()
        model._init_from_fit(fit, engine.stats)
        self._copyValues(model)
        model._fit = fit
        model._attach_summary(model._summary_class(model, fit, dataset))
        return model

    def _engine_for(self, dataset):
        self._validate_all()
        weight = self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None
        num_partitions = self.getOrDefault(self.numPartitions) if self.isDefined(self.numPartitions) else None
        return ENGINE_CACHE.get(dataset, self.getFeaturesCol(), self.getLabelCol(), weight, num_partitions,
                                self.getAggregationDepth(), self.getEngine(), self.getMaxDriverSizeInMB())

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
        return EstimatorWriter(self)

    @classmethod
    def read(cls):
        return ParamsOnlyReader(cls)


class _FitMultipleIterator:
    """The iterator fitMultiple returns: CrossValidator's threads call next() on it concurrently,
    which a generator does not allow; `fit_next` serializes them."""

    def __init__(self, fit_next):
        self._fit_next = fit_next

    def __iter__(self):
        return self

    def __next__(self):
        return self._fit_next()


class SparkoptModel(Model, SparkoptParams, MLWritable, MLReadable):
    """Holds the coefficient vector in the objective's layout; scoring is numpy in mapInArrow.
    `_summary_class` is the summary its fit and `evaluate` report."""

    _summary_class: type[TrainingSummary] = TrainingSummary

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

    def evaluate(self, dataset):
        """This model's summary with its metrics computed on `dataset`."""
        return self._summary_class(self, self._fit, dataset)

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
        # ship a bare copy (params + coefficients): the model itself refers to its training
        # DataFrame through the summary, which must not be pickled into the tasks
        return transform_in_arrow(dataset, self.getFeaturesCol(), self.numFeatures, self._output_columns(),
                                  self._bare_copy()._score)

    def _bare_copy(self):
        bare = type(self)()
        bare._resetUid(self.uid)
        for source, target in ((self._paramMap, bare._paramMap), (self._defaultParamMap, bare._defaultParamMap)):
            target.update({bare.getParam(p.name): v for p, v in source.items() if p.name not in NOT_PERSISTED})
        bare._state = dict(self._state)
        return bare

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
