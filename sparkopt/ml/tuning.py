"""LogisticRegressionCV and LinearRegressionCV: choose regParam by k-fold cross-validation of a
regularization path on one ingest (sparkopt.tuning.cv), then refit on all rows.

The estimator takes its base estimator's params plus numFolds (default 5), foldCol (optional: a
numeric column of the user's own fold ids 0..numFolds-1, instead of folds drawn from seed),
regParams (an explicit list) or numRegParams (default 20: a path from the full data's lambda_max),
metricName and seed (the fold assignment's). The folds' paths and the refit on all rows advance
together, one pass over the data serving all of them. The model is the base model refitted at bestRegParam (its regParam),
with regParams, avgMetrics, stdMetrics (over folds, as pyspark's CrossValidatorModel),
bestRegParam and oneStdErrRegParam (glmnet's lambda.1se); all of it is saved and loaded.
"""
from __future__ import annotations

import time

import numpy as np
from pyspark import keyword_only
from pyspark.ml.param import Param, Params, TypeConverters

from ..errors import InputError
from ..rules import Rule, canonical_solver, is_int
from ..tuning.cv import METRICS, cross_validate
from .cache import ENGINE_CACHE
from .classification import LogisticRegression, LogisticRegressionModel
from .estimator import PATH_SOLVERS
from .params import LINEAR_REGRESSION_VALIDATORS, add_setters
from .persistence import register_estimator, register_model
from .regression import LinearRegression, LinearRegressionModel

__all__ = ["LogisticRegressionCV", "LogisticRegressionCVModel", "LinearRegressionCV", "LinearRegressionCVModel"]

_CLASSIFICATION_METRICS = ("logLoss", "accuracy", "areaUnderROC", "loss")
_REGRESSION_METRICS = ("rmse", "mae", "r2", "loss")


def _cv_validators(metrics: tuple) -> dict:
    return {
        "numFolds": Rule(lambda v: is_int(v) and v >= 2, "an integer >= 2"),
        "numRegParams": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "regParams": Rule(lambda v: len(v) >= 1 and all(np.isfinite(x) and x >= 0 for x in v)
                          and len(set(v)) == len(v), "a non-empty list of distinct finite values >= 0"),
        "metricName": Rule(lambda v: v in metrics, f"one of {metrics}"),
        "foldCol": Rule(lambda v: isinstance(v, str) and v != "", "a column name"),
        "solver": Rule(lambda v: v in PATH_SOLVERS, f"one of {PATH_SOLVERS} (cross-validation runs paths)"),
    }


class _CVParams(Params):
    numFolds = Param(Params._dummy(), "numFolds", "number of folds (>= 2)", typeConverter=TypeConverters.toInt)
    regParams = Param(Params._dummy(), "regParams", "the regParam values to cross-validate (default: a path "
                      "of numRegParams values from lambda_max)", typeConverter=TypeConverters.toListFloat)
    numRegParams = Param(Params._dummy(), "numRegParams", "values of the automatic path (default 20)",
                         typeConverter=TypeConverters.toInt)
    metricName = Param(Params._dummy(), "metricName", "held-out metric the choice optimizes",
                       typeConverter=TypeConverters.toString)
    foldCol = Param(Params._dummy(), "foldCol", "column of user fold ids 0..numFolds-1 (default: folds drawn "
                    "from seed)", typeConverter=TypeConverters.toString)

    def getNumFolds(self) -> int:
        return self.getOrDefault(self.numFolds)

    def getRegParams(self):
        return self.getOrDefault(self.regParams) if self.isDefined(self.regParams) else None

    def getNumRegParams(self) -> int:
        return self.getOrDefault(self.numRegParams)

    def getMetricName(self) -> str:
        return self.getOrDefault(self.metricName)

    def getFoldCol(self):
        return self.getOrDefault(self.foldCol) if self.isDefined(self.foldCol) else None


class _CVModelMixin:
    """The cross-validation's results, kept in the model's state (so they are persisted). The
    accessors never raise: pyspark looks names up with getattr (hasParam) before a model has
    its state."""

    #: the sparkopt.tuning.CVResult of the fit that made this model (None after load or copy)
    cvResult = None

    def _cv(self, key, convert):
        value = getattr(self, "_state", {}).get(key)
        return None if value is None else convert(value)

    @property
    def bestRegParam(self) -> float:
        return self._cv("cvBestRegParam", float)

    @property
    def oneStdErrRegParam(self) -> float:
        return self._cv("cvOneStdErrRegParam", float)

    @property
    def regParams(self) -> list[float]:
        return self._cv("cvRegParams", lambda v: [float(x) for x in v])

    @property
    def avgMetrics(self) -> list[float]:
        return self._cv("cvAvgMetrics", lambda v: [float(x) for x in v])

    @property
    def stdMetrics(self) -> list[float]:
        return self._cv("cvStdMetrics", lambda v: [float(x) for x in v])

    @property
    def metricName(self) -> str:
        return self._cv("cvMetricName", str)

    @staticmethod
    def _checked_extra_state(state: dict, bad) -> dict:
        """The saved cross-validation results, checked as persistence checks the model's state."""
        checked = {}
        lists = ("cvRegParams", "cvAvgMetrics", "cvStdMetrics")
        for key in lists:
            value = state.get(key)
            if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      for v in value):
                raise bad(key, "must be a list of numbers")
            checked[key] = [float(v) for v in value]
        if not len(checked["cvRegParams"]) == len(checked["cvAvgMetrics"]) == len(checked["cvStdMetrics"]):
            raise bad("cvAvgMetrics", "must have one value per regParam in cvRegParams")
        for key in ("cvBestRegParam", "cvOneStdErrRegParam"):
            value = state.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise bad(key, f"must be a number >= 0, got {value!r}")
            checked[key] = float(value)
        if not isinstance(state.get("cvMetricName"), str):
            raise bad("cvMetricName", f"must be a string, got {state.get('cvMetricName')!r}")
        checked["cvMetricName"] = state["cvMetricName"]
        return checked


class _CVEstimatorMixin:
    def _engine_for(self, dataset):
        fold_col = self.getFoldCol()
        if fold_col is None:
            return super()._engine_for(dataset)
        self._validate_all()
        weight = self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None
        num_partitions = self.getOrDefault(self.numPartitions) if self.isDefined(self.numPartitions) else None
        # the blocks carry the fold ids beside the rows (a separate cache entry from the plain data's)
        return ENGINE_CACHE.get(dataset, self.getFeaturesCol(), self.getLabelCol(), weight, num_partitions,
                                self.getAggregationDepth(), self.getEngine(), self.getMaxDriverSizeInMB(),
                                fold_col=fold_col)

    def _fit(self, dataset):
        self._validate_all()
        engine, seconds = self._engine_for(dataset)
        loss = self._loss(engine.stats)
        metric = self.getMetricName()
        if metric == "logLoss" and loss not in ("logistic", "multinomial"):
            raise InputError(f"metricName 'logLoss' needs a classifier's loss, not {loss!r}")
        if METRICS.get(metric) is not None and loss not in METRICS[metric]:
            raise InputError(f"param metricName {metric!r} does not apply to loss {loss!r}")
        started = time.perf_counter()
        result = cross_validate(
            engine, loss, n_folds=self.getNumFolds(), seed=self.getSeed(), fold_col=self.getFoldCol(),
            metric_name=metric,
            elastic_net_param=self.getElasticNetParam(), reg_params=self.getRegParams(),
            n_reg_params=self.getNumRegParams(), fit_intercept=self.getFitIntercept(),
            standardization=self.getStandardization(), solver=canonical_solver(self.getSolver()), tol=self.getTol(),
            max_iter=self.getMaxIter(), label_col=self.getLabelCol(), **self._loss_options())
        fit = result.best
        fit.params.update(fit_seconds=time.perf_counter() - started, cv_passes=result.passes)
        best = self.copy({self.regParam: result.best_reg_param})
        model = best._model_from_fit(fit, engine, seconds, dataset)
        model._state.update(cvRegParams=result.reg_params.tolist(), cvAvgMetrics=result.avg_metrics.tolist(),
                            cvStdMetrics=result.std_metrics.tolist(), cvBestRegParam=result.best_reg_param,
                            cvOneStdErrRegParam=result.one_std_err_reg_param, cvMetricName=metric)
        model.cvResult = result          # the folds' and the full data's paths (not persisted)
        return model

    def fitMultiple(self, dataset, paramMaps):
        # every map is its own cross-validation: fit them one at a time
        from .estimator import _FitMultipleIterator

        estimators = [self.copy(pm) for pm in paramMaps]
        state = {"next": 0}

        def fit_next():
            if state["next"] >= len(estimators):
                raise StopIteration("No models remaining.")
            index = state["next"]
            state["next"] += 1
            return index, estimators[index].fit(dataset)

        return _FitMultipleIterator(fit_next)


@register_model("logistic", "multinomial")
class LogisticRegressionCVModel(_CVModelMixin, LogisticRegressionModel):
    """A LogisticRegressionModel refitted at the cross-validated regParam (see the module docstring)."""


@register_estimator
class LogisticRegressionCV(_CVEstimatorMixin, LogisticRegression, _CVParams):
    """LogisticRegression whose regParam is chosen by k-fold cross-validation of a path (see the
    module docstring); metricName: logLoss (default), accuracy, areaUnderROC (binary), loss."""

    _extra_validators = _cv_validators(_CLASSIFICATION_METRICS)
    _model_class = LogisticRegressionCVModel

    @keyword_only
    def __init__(self, *, numFolds=5, regParams=None, numRegParams=20, metricName="logLoss", **kwargs):
        given = dict(self._input_kwargs)
        super().__init__()
        self._setDefault(numFolds=5, numRegParams=20, metricName="logLoss")
        self._set(**given)

    @keyword_only
    def setParams(self, **kwargs):
        return self._set(**self._input_kwargs)


@register_model("squared_error", "huber")
class LinearRegressionCVModel(_CVModelMixin, LinearRegressionModel):
    """A LinearRegressionModel refitted at the cross-validated regParam (see the module docstring)."""


@register_estimator
class LinearRegressionCV(_CVEstimatorMixin, LinearRegression, _CVParams):
    """LinearRegression whose regParam is chosen by k-fold cross-validation of a path (see the
    module docstring); metricName: rmse (default), mae, r2, loss."""

    _extra_validators = {**LINEAR_REGRESSION_VALIDATORS, **_cv_validators(_REGRESSION_METRICS)}
    _model_class = LinearRegressionCVModel

    @keyword_only
    def __init__(self, *, numFolds=5, regParams=None, numRegParams=20, metricName="rmse", **kwargs):
        given = dict(self._input_kwargs)
        super().__init__()
        self._setDefault(numFolds=5, numRegParams=20, metricName="rmse")
        self._set(**given)

    @keyword_only
    def setParams(self, **kwargs):
        return self._set(**self._input_kwargs)


for _cls in (LogisticRegressionCV, LinearRegressionCV):
    add_setters(_cls, "numFolds", "regParams", "numRegParams", "metricName", "foldCol")
