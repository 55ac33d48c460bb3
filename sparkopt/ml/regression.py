"""LinearRegression (squared error, Huber) and PoissonRegression, drop-in for pyspark.ml's."""
from __future__ import annotations

import numpy as np
from pyspark import keyword_only
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.regression import RegressionModel, Regressor

from ..predictions import LinearPredictor
from .estimator import SparkoptEstimator, SparkoptModel
from .persistence import register_estimator, register_model
from .params import LINEAR_REGRESSION_VALIDATORS, POISSON_REGRESSION_VALIDATORS, add_setters
from .scoring import dense_vector
from . import summary as summaries

_MLLIB_LOSS = {"squaredError": "squared_error", "huber": "huber"}


class _RegressionModel(SparkoptModel, RegressionModel):

    @property
    def coefficients(self):
        return dense_vector(np.asarray(self._state["coef_vector"], dtype=float)[: self.numFeatures])

    @property
    def intercept(self) -> float:
        return float(self._state["coef_vector"][self.numFeatures]) if self._state["fitIntercept"] else 0.0

    #: how the margin becomes the prediction (LinearPredictor's kind)
    _prediction_kind = "identity"

    def _predictor(self) -> LinearPredictor:
        coef = np.asarray(self._state["coef_vector"], dtype=float)
        return LinearPredictor(self._prediction_kind, coef[None, : self.numFeatures], np.array([self.intercept]),
                               prediction=self.getPredictionCol())

    def _output_columns(self):
        return [(self.getPredictionCol(), "double")]


class _LinearRegressionParams(Params):
    loss = Param(Params._dummy(), "loss", "squaredError or huber", typeConverter=TypeConverters.toString)
    epsilon = Param(Params._dummy(), "epsilon", "Huber's shape parameter, > 1.0 (default 1.35)",
                    typeConverter=TypeConverters.toFloat)
    _extra_validators = LINEAR_REGRESSION_VALIDATORS

    def getLoss(self) -> str:
        return self.getOrDefault(self.loss)

    def getEpsilon(self) -> float:
        return self.getOrDefault(self.epsilon)


class _PoissonRegressionParams(Params):
    link = Param(Params._dummy(), "link", "link function: log (the only one)", typeConverter=TypeConverters.toString)
    _extra_validators = POISSON_REGRESSION_VALIDATORS

    def getLink(self) -> str:
        return self.getOrDefault(self.link)


@register_model("squared_error", "huber")
class LinearRegressionModel(_RegressionModel, _LinearRegressionParams):
    """Fitted linear regression; `scale` is Huber's sigma (1.0 for squared error, as MLlib)."""

    _extra_validators = LINEAR_REGRESSION_VALIDATORS

    def _summary_classes(self):
        return summaries.LinearRegressionSummary, summaries.LinearRegressionTrainingSummary

    @property
    def scale(self) -> float:
        return float(self._state["scale"]) if self._state.get("scale") is not None else 1.0


@register_estimator
class LinearRegression(SparkoptEstimator, _LinearRegressionParams, Regressor):
    """Linear regression with MLlib's objective. loss='squaredError':
    (1/sum w) sum w_i (y_i - m_i)^2 / 2 + (regParam / sd(y)) * (alpha |beta|_1 + (1-alpha)/2 |beta|^2);
    loss='huber': MLlib's robust regression with jointly estimated scale sigma (L2 only)."""

    _model_class = LinearRegressionModel
    _extra_validators = LINEAR_REGRESSION_VALIDATORS

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction", maxIter=100,
                 regParam=0.0, elasticNetParam=0.0, tol=1e-6, fitIntercept=True, standardization=True,
                 weightCol=None, aggregationDepth=2, loss="squaredError", epsilon=1.35, solver="auto",
                 stepSize=None, miniBatchFraction=1.0, stepSchedule="auto", optimizer="sgd", seed=0, numPartitions=None,
                 initialModel=None, verbose=False,
                 checkpointDir=None, checkpointInterval=10, engine="auto", maxDriverSizeInMB=256.0, compression="none", compressionRatio=None, localSteps=1,
                 localCombination=1.0, staleness=2, maxBlockSizeInMB=0.0):
        super().__init__()
        self._setDefault(loss="squaredError", epsilon=1.35)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs):
        return self._set(**self._input_kwargs)

    def _loss(self, stats) -> str:
        return _MLLIB_LOSS[self.getLoss()]

    def _loss_options(self) -> dict:
        return {"epsilon": self.getEpsilon()} if self.getLoss() == "huber" else {}


@register_model("poisson")
class PoissonRegressionModel(_RegressionModel, _PoissonRegressionParams):
    """Fitted Poisson regression (log link): prediction = exp(x.beta + c)."""

    _extra_validators = POISSON_REGRESSION_VALIDATORS

    _prediction_kind = "exp"


@register_estimator
class PoissonRegression(SparkoptEstimator, _PoissonRegressionParams, Regressor):
    """Poisson regression, log link: (1/sum w) sum w_i (exp(m_i) - y_i m_i) + regParam * penalty
    (half the mean deviance up to a constant; scikit-learn's PoissonRegressor convention). At
    regParam = 0 it equals MLlib's GeneralizedLinearRegression(family='poisson')."""

    _model_class = PoissonRegressionModel
    _extra_validators = POISSON_REGRESSION_VALIDATORS

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction", maxIter=100,
                 regParam=0.0, elasticNetParam=0.0, tol=1e-6, fitIntercept=True, standardization=True,
                 weightCol=None, aggregationDepth=2, link="log", solver="auto", stepSize=None,
                 miniBatchFraction=1.0, stepSchedule="auto", optimizer="sgd", seed=0, numPartitions=None,
                 initialModel=None, verbose=False,
                 checkpointDir=None, checkpointInterval=10, engine="auto", maxDriverSizeInMB=256.0, compression="none", compressionRatio=None, localSteps=1,
                 localCombination=1.0, staleness=2, maxBlockSizeInMB=0.0):
        super().__init__()
        self._setDefault(link="log")
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs):
        return self._set(**self._input_kwargs)

    def _loss(self, stats) -> str:
        return "poisson"


add_setters(LinearRegression, "loss", "epsilon")
