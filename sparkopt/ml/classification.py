"""LogisticRegression (binomial / multinomial) and LinearSVC, drop-in for pyspark.ml's."""
from __future__ import annotations

import numpy as np
from pyspark import keyword_only
from pyspark.ml.classification import (Classifier, ClassificationModel, ProbabilisticClassificationModel,
                                       ProbabilisticClassifier, _ProbabilisticClassifierParams)
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasThreshold

from ..errors import InputError
from ..fit import check_labels
from ..predictions import LinearPredictor
from .estimator import SparkoptEstimator, SparkoptModel
from .persistence import register_estimator, register_model
from .params import LINEAR_SVC_MODEL_VALIDATORS, LINEAR_SVC_VALIDATORS, add_setters
from .scoring import as_matrix, dense_matrix, dense_vector
from . import summary as summaries


class _ClassifierModel(SparkoptModel, ClassificationModel):

    @property
    def numClasses(self) -> int:
        return int(self._state["numClasses"])

    def _repr_sizes(self) -> str:
        return f"numClasses={self.numClasses}, numFeatures={self.numFeatures}"

    def _output_metadata(self):
        """MLlib's: rawPrediction and probability (the vector outputs) an attribute group of
        numClasses attributes, prediction a nominal attribute with numClasses values."""
        k = self.numClasses
        meta = {name: {"ml_attr": {"num_attrs": k}} for name, kind in self._output_columns() if kind == "vector"}
        meta[self.getPredictionCol()] = {"ml_attr": {"type": "nominal", "num_vals": k}}
        return meta

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
        return dense_vector(self._predictor().raw_scores(as_matrix(value))[0])


class _LogisticRegressionParams(_ProbabilisticClassifierParams, HasThreshold):
    """The params LogisticRegression and its model share, with MLlib's names and meanings:
    family, threshold / thresholds (kept consistent as MLlib's: setting one clears the other)
    and the bounds on coefficients and intercepts."""

    family = Param(Params._dummy(), "family", "auto, binomial or multinomial", typeConverter=TypeConverters.toString)
    thresholds = Param(Params._dummy(), "thresholds",
                       "thresholds in multiclass classification to adjust the probability of predicting each "
                       "class: the predicted class maximizes p/t, p the class's probability and t its threshold "
                       "(values >= 0, at most one 0, one per class)", typeConverter=TypeConverters.toListFloat)
    lowerBoundsOnCoefficients = Param(Params._dummy(), "lowerBoundsOnCoefficients",
                                      "lower bounds on the coefficients in a bound-constrained fit: a matrix "
                                      "(1, numFeatures) for binomial, (numClasses, numFeatures) for multinomial",
                                      typeConverter=TypeConverters.toMatrix)
    upperBoundsOnCoefficients = Param(Params._dummy(), "upperBoundsOnCoefficients",
                                      "upper bounds on the coefficients in a bound-constrained fit: a matrix "
                                      "(1, numFeatures) for binomial, (numClasses, numFeatures) for multinomial",
                                      typeConverter=TypeConverters.toMatrix)
    lowerBoundsOnIntercepts = Param(Params._dummy(), "lowerBoundsOnIntercepts",
                                    "lower bounds on the intercepts in a bound-constrained fit: a vector of size 1 "
                                    "for binomial, numClasses for multinomial", typeConverter=TypeConverters.toVector)
    upperBoundsOnIntercepts = Param(Params._dummy(), "upperBoundsOnIntercepts",
                                    "upper bounds on the intercepts in a bound-constrained fit: a vector of size 1 "
                                    "for binomial, numClasses for multinomial", typeConverter=TypeConverters.toVector)

    def getFamily(self) -> str:
        return self.getOrDefault(self.family)

    def setThreshold(self, value):
        """Sets threshold and clears thresholds (MLlib's rule)."""
        self._set(threshold=value)
        self.clear(self.thresholds)
        return self

    def setThresholds(self, value):
        """Sets thresholds and clears threshold (MLlib's rule)."""
        self._set(thresholds=value)
        self.clear(self.threshold)
        return self

    def _check_threshold_consistency(self) -> None:
        if self.isSet(self.threshold) and self.isSet(self.thresholds):
            ts = self.getOrDefault(self.thresholds)
            if len(ts) != 2:
                raise InputError(f"param thresholds has {len(ts)} values but threshold is set too: threshold "
                                 f"applies to binary classification only (set one of them)")
            t = 1.0 / (1.0 + ts[0] / ts[1]) if ts[1] else 0.0
            if abs(self.getOrDefault(self.threshold) - t) > 1e-5:
                raise InputError(f"params threshold ({self.getOrDefault(self.threshold)}) and thresholds ({ts}) "
                                 f"disagree: threshold must be 1 / (1 + thresholds[0] / thresholds[1]) = {t}")

    def getThreshold(self) -> float:
        """The binary threshold: `threshold`, or the one thresholds [t0, t1] imply, 1 / (1 + t0/t1)."""
        self._check_threshold_consistency()
        if self.isSet(self.thresholds):
            ts = self.getOrDefault(self.thresholds)
            if len(ts) != 2:
                raise InputError(f"getThreshold only applies to binary classification, but param thresholds has "
                                 f"{len(ts)} values: {ts}")
            return 1.0 / (1.0 + ts[0] / ts[1]) if ts[1] else 0.0
        return self.getOrDefault(self.threshold)

    def getThresholds(self):
        """thresholds, or [1 - threshold, threshold] when only threshold is set."""
        self._check_threshold_consistency()
        if not self.isSet(self.thresholds) and self.isSet(self.threshold):
            t = self.getOrDefault(self.threshold)
            return [1.0 - t, t]
        return self.getOrDefault(self.thresholds)

    def _bound(self, param):
        return self.getOrDefault(param) if self.isDefined(param) else None

    def getLowerBoundsOnCoefficients(self):
        return self._bound(self.lowerBoundsOnCoefficients)

    def getUpperBoundsOnCoefficients(self):
        return self._bound(self.upperBoundsOnCoefficients)

    def getLowerBoundsOnIntercepts(self):
        return self._bound(self.lowerBoundsOnIntercepts)

    def getUpperBoundsOnIntercepts(self):
        return self._bound(self.upperBoundsOnIntercepts)


@register_model("logistic", "multinomial")
class LogisticRegressionModel(_ClassifierModel, _LogisticRegressionParams, ProbabilisticClassificationModel):
    """Fitted logistic regression: binomial (coefficients, intercept) or multinomial
    (coefficientMatrix (K, d), interceptVector (K,)). transform adds rawPrediction, probability
    (vectors) and prediction (double), like pyspark.ml's. With thresholds set, a multinomial
    model predicts argmax_k p_k / t_k (MLlib's rule; t_k = 0 wins outright)."""

    def _summary_classes(self):
        if self.numClasses <= 2:      # MLlib: binary metrics for a binomial model
            return summaries.BinaryLogisticRegressionSummary, summaries.BinaryLogisticRegressionTrainingSummary
        return summaries.LogisticRegressionSummary, summaries.LogisticRegressionTrainingSummary

    def _output_columns(self):
        return [(self.getRawPredictionCol(), "vector"), (self.getProbabilityCol(), "vector"),
                (self.getPredictionCol(), "double")]

    def _predictor(self) -> LinearPredictor:
        B, c = self._coef_matrix()
        binary = self.numClasses == 2 and self._state["loss"] == "logistic"
        thresholds = None
        if not binary and self.isDefined(self.thresholds):
            thresholds = tuple(self.getOrDefault(self.thresholds))
        return LinearPredictor("logistic" if binary else "multinomial", B, c, prediction=self.getPredictionCol(),
                               raw=self.getRawPredictionCol(), probability=self.getProbabilityCol(),
                               threshold=self.getThreshold() if binary else 0.5, thresholds=thresholds)

    def _check_thresholds(self) -> None:
        if self.numClasses == 2 and self._state["loss"] == "logistic":
            self.getThreshold()               # raises on inconsistent or non-binary thresholds
        elif self.isDefined(self.thresholds) and len(self.getOrDefault(self.thresholds)) != self.numClasses:
            raise InputError(f"param thresholds has {len(self.getOrDefault(self.thresholds))} values, but the "
                             f"model has numClasses = {self.numClasses}")

    def _transform(self, dataset):
        self._check_thresholds()
        return super()._transform(dataset)

    def predict(self, value) -> float:
        self._check_thresholds()
        return super().predict(value)

    def predictProbability(self, value):
        return dense_vector(self._predictor().outputs(as_matrix(value))["probability"][0])


@register_estimator
class LogisticRegression(SparkoptEstimator, _LogisticRegressionParams, ProbabilisticClassifier):
    """Logistic regression with MLlib's objective:
    (1/sum w) sum w_i log-loss + regParam * (alpha |beta|_1 + (1-alpha)/2 |beta|_2^2), intercept
    unpenalized; family auto (binomial for labels {0, 1}, multinomial for more classes)."""

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction", maxIter=100,
                 regParam=0.0, elasticNetParam=0.0, tol=1e-6, fitIntercept=True, threshold=0.5,
                 probabilityCol="probability", rawPredictionCol="rawPrediction", standardization=True,
                 weightCol=None, aggregationDepth=2, family="auto", solver="auto", stepSize=None,
                 miniBatchFraction=1.0, stepSchedule="auto", optimizer="sgd", seed=0, numPartitions=None,
                 initialModel=None, verbose=False,
                 checkpointDir=None, checkpointInterval=10, engine="auto", maxDriverSizeInMB=256.0, compression="none", compressionRatio=None, localSteps=1,
                 localCombination=1.0, staleness=2, thresholds=None, lowerBoundsOnCoefficients=None,
                 upperBoundsOnCoefficients=None, lowerBoundsOnIntercepts=None, upperBoundsOnIntercepts=None,
                 maxBlockSizeInMB=0.0):
        super().__init__()
        self._setDefault(family="auto", threshold=0.5, probabilityCol="probability", rawPredictionCol="rawPrediction")
        kwargs = self._input_kwargs
        self._set(**kwargs)
        self._check_threshold_consistency()

    @keyword_only
    def setParams(self, **kwargs):
        self._set(**self._input_kwargs)
        self._check_threshold_consistency()
        return self

    def setFamily(self, value):
        return self._set(family=value)

    def _loss(self, stats) -> str:
        self._check_threshold_consistency()
        family = self.getFamily()
        if family == "multinomial":
            return "multinomial"
        if family == "binomial":
            if stats.label_max > 1:
                raise InputError(f"family='binomial' needs labels 0/1 in column {self.getLabelCol()!r}; "
                                 f"found class index {stats.label_max:g} (use family='multinomial')")
            return "logistic"
        return "multinomial" if stats.label_max > 1 or stats.n_label_non_integer else "logistic"

    def _bounds(self, loss: str, stats):
        """MLlib's bounds params as (lower, upper) over the coefficient layout (K rows of
        [beta (d), c]); None when no bound is set."""
        params = (self.lowerBoundsOnCoefficients, self.upperBoundsOnCoefficients, self.lowerBoundsOnIntercepts,
                  self.upperBoundsOnIntercepts)
        if not any(self.isDefined(p) for p in params):
            return None
        d, fit_intercept = stats.n_features, self.getFitIntercept()
        rows = check_labels(stats, loss, self.getLabelCol()) if loss == "multinomial" else 1
        q = d + int(fit_intercept)
        bounds = []
        for side, (coefficients, intercepts) in (("lower", params[0::2]), ("upper", params[1::2])):
            vector = np.full((rows, q), -np.inf if side == "lower" else np.inf)
            if self.isDefined(coefficients):
                M = self.getOrDefault(coefficients).toArray()
                if M.shape != (rows, d):
                    raise InputError(f"param {coefficients.name} must be a ({rows}, {d}) matrix for this "
                                     f"{'multinomial' if rows > 1 else 'binomial'} fit on {d} features, got "
                                     f"{M.shape}")
                vector[:, :d] = M
            if self.isDefined(intercepts):
                v = self.getOrDefault(intercepts).toArray()
                if not fit_intercept:
                    raise InputError(f"param {intercepts.name} needs fitIntercept=True")
                if v.shape != (rows,):
                    raise InputError(f"param {intercepts.name} must be a vector of size {rows}, got {v.size}")
                vector[:, d] = v
            bounds.append(vector.ravel())
        return bounds[0], bounds[1]

    _model_class = LogisticRegressionModel


class _LinearSVCParams(HasThreshold):
    loss = Param(Params._dummy(), "loss", "hinge (MLlib's) or squared_hinge", typeConverter=TypeConverters.toString)

    def getLoss(self) -> str:
        return self.getOrDefault(self.loss)


@register_model("hinge", "squared_hinge")
class LinearSVCModel(_ClassifierModel, _LinearSVCParams):
    """Fitted linear SVM: rawPrediction [-m, m], prediction 1.0 where m > threshold (default 0)."""

    _extra_validators = LINEAR_SVC_MODEL_VALIDATORS

    def _summary_classes(self):
        return summaries.LinearSVCSummary, summaries.LinearSVCTrainingSummary

    def _output_columns(self):
        return [(self.getRawPredictionCol(), "vector"), (self.getPredictionCol(), "double")]

    def _predictor(self) -> LinearPredictor:
        B, c = self._coef_matrix()
        return LinearPredictor("margin_classifier", B, c, prediction=self.getPredictionCol(),
                               raw=self.getRawPredictionCol(), threshold=self.getThreshold())


@register_estimator
class LinearSVC(SparkoptEstimator, _LinearSVCParams, Classifier):
    """Linear SVM with MLlib's objective: (1/sum w) sum w_i max(0, 1 - (2y_i - 1) m_i) + regParam/2 |beta|^2
    (elasticNetParam adds L1); loss='squared_hinge' squares the hinge (smooth, Newton-capable)."""

    _extra_validators = LINEAR_SVC_VALIDATORS

    @keyword_only
    def __init__(self, *, featuresCol="features", labelCol="label", predictionCol="prediction", maxIter=100,
                 regParam=0.0, elasticNetParam=0.0, tol=1e-6, rawPredictionCol="rawPrediction", fitIntercept=True,
                 standardization=True, threshold=0.0, weightCol=None, aggregationDepth=2, loss="hinge",
                 solver="auto", stepSize=None, miniBatchFraction=1.0, stepSchedule="auto", optimizer="sgd", seed=0,
                 numPartitions=None, initialModel=None, verbose=False,
                 checkpointDir=None, checkpointInterval=10, engine="auto", maxDriverSizeInMB=256.0, compression="none", compressionRatio=None, localSteps=1,
                 localCombination=1.0, staleness=2, maxBlockSizeInMB=0.0):
        super().__init__()
        self._setDefault(loss="hinge", threshold=0.0, rawPredictionCol="rawPrediction")
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs):
        return self._set(**self._input_kwargs)

    def _loss(self, stats) -> str:
        return self.getLoss()

    _model_class = LinearSVCModel


add_setters(LogisticRegression, "probabilityCol", "rawPredictionCol", "lowerBoundsOnCoefficients",
            "upperBoundsOnCoefficients", "lowerBoundsOnIntercepts", "upperBoundsOnIntercepts")
add_setters(LogisticRegressionModel, "probabilityCol", "rawPredictionCol")
add_setters(LinearSVC, "rawPredictionCol", "threshold", "loss")
add_setters(LinearSVCModel, "rawPredictionCol", "threshold")
