"""LogisticRegression (binomial / multinomial) and LinearSVC, drop-in for pyspark.ml's."""
from __future__ import annotations

import numpy as np
from pyspark import keyword_only
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasProbabilityCol, HasRawPredictionCol, HasThreshold
from scipy.special import expit, softmax

from ..errors import InputError
from .estimator import SparkoptEstimator, SparkoptModel
from .params import LINEAR_SVC_MODEL_VALIDATORS, LINEAR_SVC_VALIDATORS, add_setters
from .scoring import as_matrix, dense_matrix, dense_vector
from .summary import ClassifierSummary


def _margins(X, coef_matrix, intercepts):
    return np.asarray(X @ coef_matrix.T) + intercepts


class _ClassifierModel(SparkoptModel, HasRawPredictionCol):
    _summary_class = ClassifierSummary

    @property
    def numClasses(self) -> int:
        return int(self._state["numClasses"])

    def _coef_matrix(self):
        d, fi = self.numFeatures, int(bool(self._state["fitIntercept"]))
        rows = self.numClasses if self._state["loss"] == "multinomial" else 1
        M = np.asarray(self._state["coef_vector"], dtype=float).reshape(rows, d + fi)
        return M[:, :d], (M[:, d] if fi else np.zeros(rows))

    @property
    def coefficientMatrix(self):
        return dense_matrix(self._coef_matrix()[0])

    @property
    def interceptVector(self):
        return dense_vector(self._coef_matrix()[1])

    @property
    def coefficients(self):
        if self._state["loss"] == "multinomial":
            raise RuntimeError("Multinomial models contain a matrix of coefficients, use coefficientMatrix instead.")
        return dense_vector(self._coef_matrix()[0][0])

    @property
    def intercept(self) -> float:
        if self._state["loss"] == "multinomial":
            raise RuntimeError("Multinomial models contain a vector of intercepts, use interceptVector instead.")
        return float(self._coef_matrix()[1][0])

    def predictRaw(self, value):
        return dense_vector(self._raw(as_matrix(value))[0])

    def predict(self, value) -> float:
        return float(self._score(as_matrix(value))[self.getPredictionCol() or "prediction"][0])

    def _raw(self, X):
        B, c = self._coef_matrix()
        M = _margins(X, B, c)
        if M.shape[1] == 1:
            return np.hstack([-M, M])
        return M


class LogisticRegressionModel(_ClassifierModel, HasProbabilityCol, HasThreshold):
    """Fitted logistic regression: binomial (coefficients, intercept) or multinomial
    (coefficientMatrix (K, d), interceptVector (K,)). transform adds rawPrediction, probability
    (vectors) and prediction (double), like pyspark.ml's."""

    def _output_columns(self):
        return [(self.getRawPredictionCol(), "vector"), (self.getProbabilityCol(), "vector"),
                (self.getPredictionCol(), "double")]

    def _score(self, X):
        raw = self._raw(X)
        if self.numClasses == 2 and self._state["loss"] == "logistic":
            p1 = expit(raw[:, 1])
            prob = np.column_stack([1.0 - p1, p1])
            prediction = (p1 > self.getThreshold()).astype(float)
        else:
            prob = softmax(raw, axis=1)
            prediction = np.argmax(raw, axis=1).astype(float)
        return {self.getRawPredictionCol(): raw, self.getProbabilityCol(): prob, self.getPredictionCol(): prediction}

    def predictProbability(self, value):
        return dense_vector(self._score(as_matrix(value))[self.getProbabilityCol()][0])


class LogisticRegression(SparkoptEstimator, HasProbabilityCol, HasRawPredictionCol, HasThreshold):
    """Logistic regression with MLlib's objective:
    (1/sum w) sum w_i log-loss + regParam * (alpha |beta|_1 + (1-alpha)/2 |beta|_2^2), intercept
    unpenalized; family auto (binomial for labels {0, 1}, multinomial for more classes)."""

    family = Param(Params._dummy(), "family", "auto, binomial or multinomial", typeConverter=TypeConverters.toString)

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction", maxIter=100,
                 regParam=0.0, elasticNetParam=0.0, tol=1e-6, fitIntercept=True, threshold=0.5,
                 probabilityCol="probability", rawPredictionCol="rawPrediction", standardization=True,
                 weightCol=None, aggregationDepth=2, family="auto", solver="auto", stepSize=None,
                 miniBatchFraction=1.0, stepSchedule="auto", optimizer="sgd", seed=0, numPartitions=None,
                 initialModel=None, verbose=False,
                 checkpointDir=None, checkpointInterval=10, engine="auto", maxDriverSizeInMB=256.0, localSteps=1,
                 localCombination=1.0, staleness=2):
        super().__init__()
        self._setDefault(family="auto", threshold=0.5, probabilityCol="probability", rawPredictionCol="rawPrediction")
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs):
        return self._set(**self._input_kwargs)

    def getFamily(self) -> str:
        return self.getOrDefault(self.family)

    def setFamily(self, value):
        return self._set(family=value)

    def _loss(self, stats) -> str:
        family = self.getFamily()
        if family == "multinomial":
            return "multinomial"
        if family == "binomial":
            if stats.label_max > 1:
                raise InputError(f"family='binomial' needs labels 0/1 in column {self.getLabelCol()!r}; "
                                 f"found class index {stats.label_max:g} (use family='multinomial')")
            return "logistic"
        return "multinomial" if stats.label_max > 1 or stats.n_label_non_integer else "logistic"

    _model_class = LogisticRegressionModel


class LinearSVCModel(_ClassifierModel, HasThreshold):
    """Fitted linear SVM: rawPrediction [-m, m], prediction 1.0 where m > threshold (default 0)."""

    _extra_validators = LINEAR_SVC_MODEL_VALIDATORS

    def _output_columns(self):
        return [(self.getRawPredictionCol(), "vector"), (self.getPredictionCol(), "double")]

    def _score(self, X):
        raw = self._raw(X)
        return {self.getRawPredictionCol(): raw, self.getPredictionCol(): (raw[:, 1] > self.getThreshold()).astype(float)}


class LinearSVC(SparkoptEstimator, HasRawPredictionCol, HasThreshold):
    """Linear SVM with MLlib's objective: (1/sum w) sum w_i max(0, 1 - (2y_i - 1) m_i) + regParam/2 |beta|^2
    (elasticNetParam adds L1); loss='squared_hinge' squares the hinge (smooth, Newton-capable)."""

    loss = Param(Params._dummy(), "loss", "hinge (MLlib's) or squared_hinge", typeConverter=TypeConverters.toString)
    _extra_validators = LINEAR_SVC_VALIDATORS

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction", maxIter=100,
                 regParam=0.0, elasticNetParam=0.0, tol=1e-6, rawPredictionCol="rawPrediction", fitIntercept=True,
                 standardization=True, threshold=0.0, weightCol=None, aggregationDepth=2, loss="hinge",
                 solver="auto", stepSize=None, miniBatchFraction=1.0, stepSchedule="auto", optimizer="sgd", seed=0,
                 numPartitions=None, initialModel=None, verbose=False,
                 checkpointDir=None, checkpointInterval=10, engine="auto", maxDriverSizeInMB=256.0, localSteps=1,
                 localCombination=1.0, staleness=2):
        super().__init__()
        self._setDefault(loss="hinge", threshold=0.0, rawPredictionCol="rawPrediction")
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs):
        return self._set(**self._input_kwargs)

    def getLoss(self) -> str:
        return self.getOrDefault(self.loss)

    def _loss(self, stats) -> str:
        return self.getLoss()

    _model_class = LinearSVCModel


add_setters(LogisticRegression, "probabilityCol", "rawPredictionCol", "threshold")
add_setters(LogisticRegressionModel, "probabilityCol", "rawPredictionCol", "threshold")
add_setters(LinearSVC, "rawPredictionCol", "threshold", "loss")
add_setters(LinearSVCModel, "rawPredictionCol", "threshold")
