"""Summaries, member for member as pyspark.ml's: a summary of a model on a DataFrame (what
`model.evaluate(df)` returns) and, for the training data, the same plus what the fit did.

* ClassificationSummary: MLlib's MulticlassMetrics over (prediction, label, weight), weighted by
  the summary's `weightCol` when `predictions` has that column, as MLlib does.
* BinaryClassificationSummary: MLlib's BinaryClassificationMetrics over (score, label, weight):
  roc, pr, areaUnderROC and the by-threshold curves.
* RegressionSummary: MLlib's RegressionMetrics (weighted; through the origin without an
  intercept); LinearRegressionSummary adds r2adj, residuals and the coefficients' standard
  errors, t and p values.
* TrainingSummary: objectiveHistory, totalIterations and sparkopt's own fit record (solver,
  passes, status, history).

Every metric is one aggregation over `predictions` in Spark and a few lines of numpy on the
driver; nothing is computed before it is asked for.
"""
from __future__ import annotations

from functools import cached_property, partial
from typing import Optional

import numpy as np

from ..fit import LinearFit

#: the coefficients' covariance is formed from the exact (d+1) x (d+1) Hessian up to this many
#: features (MLlib's normal solver has the same limit)
MAX_FEATURES_FOR_STANDARD_ERRORS = 4096
#: MLlib's BinaryClassificationMetrics bins (numBins) for the summaries' curves
CURVE_BINS = 1000


def label_metrics(labels: np.ndarray, predicted: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """MLlib's MulticlassMetrics per true label from the weighted confusion table `counts`
    (L, P) of true labels `labels` (L,) by predicted classes `predicted` (P,): count (weight of
    each label), total, tp, precision (0 where nothing was predicted as it), recall, fpr."""
    at = {p: j for j, p in enumerate(predicted)}
    count = counts.sum(axis=1)
    total = count.sum()
    tp = np.array([counts[i, at[l]] if l in at else 0.0 for i, l in enumerate(labels)])
    predicted_as = np.array([counts[:, at[l]].sum() if l in at else 0.0 for l in labels])
    fp = predicted_as - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp == 0, 0.0, tp / np.where(tp + fp == 0, 1.0, tp + fp))
        recall = tp / count
        fpr = fp / (total - count)
    return {"count": count, "total": total, "tp": tp, "precision": precision, "recall": recall, "fpr": fpr}


def curve_points(score: np.ndarray, pos: np.ndarray, neg: np.ndarray, bins: int = CURVE_BINS) -> dict[str, np.ndarray]:
    """MLlib's BinaryClassificationMetrics points from the weights of positives `pos` and
    negatives `neg` at each distinct `score`, all (m,) in decreasing score order: per threshold
    the cumulative recall (TPR), false positive rate and precision (1 where nothing is predicted
    positive). Beyond 2 * bins scores, runs of m // bins consecutive scores are merged, each
    keeping its first (highest) score as its threshold."""
    grouping = len(score) // bins
    if grouping >= 2:
        starts = np.arange(0, len(score), grouping)
        score, pos, neg = score[starts], np.add.reduceat(pos, starts), np.add.reduceat(neg, starts)
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    positives, negatives = (tp[-1], fp[-1]) if len(tp) else (0.0, 0.0)
    recall = tp / positives if positives else np.zeros_like(tp)
    fpr = fp / negatives if negatives else np.zeros_like(fp)
    predicted = tp + fp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted == 0, 1.0, tp / np.where(predicted == 0, 1.0, predicted))
    return {"threshold": score, "recall": recall, "fpr": fpr, "precision": precision}


def _summary_model(model):
    """`model`, or a copy with generated names for the output columns it leaves out (an empty
    predictionCol, probabilityCol or rawPredictionCol), which the metrics need (MLlib's
    findSummaryModel)."""
    empty = [name for name in ("predictionCol", "probabilityCol", "rawPredictionCol")
             if model.hasParam(name) and not model.getOrDefault(name)]
    if not empty:
        return model
    return model.copy({model.getParam(name): f"{name[:-3]}_{model.uid}" for name in empty})


class _Summary:
    """A model's predictions on a DataFrame and the columns the metrics read."""

    def __init__(self, model, dataset):
        self._model = _summary_model(model)
        self._dataset = dataset

    @cached_property
    def predictions(self):
        """DataFrame output by the model's `transform` method."""
        return self._model.transform(self._dataset)

    @property
    def predictionCol(self) -> str:
        """Field in "predictions" which gives the prediction."""
        return self._model.getPredictionCol()

    @property
    def labelCol(self) -> str:
        """Field in "predictions" which gives the true label of each instance."""
        return self._model.getLabelCol()

    @property
    def featuresCol(self) -> str:
        """Field in "predictions" which gives the features of each instance as a vector."""
        return self._model.getFeaturesCol()

    def _model_weight_col(self) -> Optional[str]:
        m = self._model
        return m.getWeightCol() if m.isDefined(m.weightCol) and m.getWeightCol() else None


class TrainingSummary:
    """What the fit did: objectiveHistory (F per iteration, the start included), totalIterations,
    and sparkopt's record: totalPasses, solver (the one actually used), converged, status,
    message, objective, fitSeconds, ingestSeconds, engine, and the per-iteration history as a
    DataFrame. Mixed into each training summary; `_fit` is the LinearFit."""

    _fit: LinearFit

    @property
    def objectiveHistory(self) -> list[float]:
        """Objective function (scaled loss + regularization) at each iteration, the start first."""
        return [row["objective"] for row in self._fit.result.history]

    @property
    def totalIterations(self) -> int:
        """Number of training iterations until termination."""
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
        """The engine that ran the passes: 'driver', 'resident' or 'tree'."""
        return self._fit.params.get("engine", "tree")

    @property
    def ingestSeconds(self) -> float:
        return self._fit.params.get("ingest_seconds", float("nan"))

    @property
    def history(self):
        """Per-iteration records as a Spark DataFrame (iteration, objective, grad_norm, step_size,
        passes, seconds; plus rounds for local-sgd, and bytes_sent / bytes_received, cumulative,
        where the engine counts them)."""
        spark = self._dataset.sparkSession
        history = self._fit.result.history
        cols = ["iteration", "objective", "grad_norm", "step_size", "passes", "seconds"]
        schema = ("iteration int, objective double, grad_norm double, step_size double, passes double, "
                  "seconds double")
        if history and all("rounds" in r for r in history):      # local-sgd: communication rounds
            cols.append("rounds")
            schema += ", rounds int"
        if history and all("bytes_sent" in r for r in history):   # what crossed the engine's channel so far
            cols += ["bytes_sent", "bytes_received"]
            schema += ", bytes_sent long, bytes_received long"
        integral = ("iteration", "rounds", "bytes_sent", "bytes_received")
        rows = [tuple(int(r[c]) if c in integral else float(r[c]) for c in cols) for r in history]
        return spark.createDataFrame(rows, schema)


def _training(cls):
    """`cls`'s training variant: the same metrics on the training data plus TrainingSummary."""
    def __init__(self, model, fit: LinearFit, dataset):
        cls.__init__(self, model, dataset)
        self._fit = fit

    name = cls.__name__.replace("Summary", "TrainingSummary")
    return type(name, (cls, TrainingSummary), {"__init__": __init__, "__module__": cls.__module__,
                                              "__doc__": f"{cls.__name__} on the training data, plus what the "
                                                         f"fit did (TrainingSummary)."})


# -- classification ----------------------------------------------------------------------------
class ClassificationSummary(_Summary):
    """MLlib's multiclass metrics of the predictions. Arrays over labels follow `labels` (the
    distinct true labels, ascending). Weighted by `weightCol` where `predictions` has it."""

    @property
    def weightCol(self) -> str:
        """Field in "predictions" which gives the weight of each instance ("weightCol" when the
        model has none, as MLlib; a column of that name is then used if present)."""
        return self._model_weight_col() or "weightCol"

    def _weight(self):
        from pyspark.sql import functions as F

        return F.col(self.weightCol).cast("double") if self.weightCol in self.predictions.columns else F.lit(1.0)

    @cached_property
    def _confusion(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels (L,), predicted classes (P,), weight sums (L, P)) of the predictions."""
        from pyspark.sql import functions as F

        rows = (self.predictions
                .select(F.col(self.labelCol).cast("double").alias("label"),
                        F.col(self.predictionCol).cast("double").alias("prediction"), self._weight().alias("w"))
                .groupBy("label", "prediction").agg(F.sum("w").alias("w")).collect())
        labels = np.array(sorted({r["label"] for r in rows}), dtype=float)
        predicted = np.array(sorted({r["prediction"] for r in rows}), dtype=float)
        counts = np.zeros((len(labels), len(predicted)))
        for r in rows:
            counts[np.searchsorted(labels, r["label"]), np.searchsorted(predicted, r["prediction"])] += r["w"]
        return labels, predicted, counts

    @cached_property
    def _per_label(self) -> dict[str, np.ndarray]:
        return label_metrics(*self._confusion)

    def _weighted(self, values: np.ndarray) -> float:
        m = self._per_label
        return float(np.sum(values * m["count"] / m["total"]))

    @property
    def labels(self) -> list[float]:
        """The distinct true labels in ascending order (the order of every `...ByLabel`)."""
        return [float(v) for v in self._confusion[0]]

    @property
    def truePositiveRateByLabel(self) -> list[float]:
        return self.recallByLabel

    @property
    def falsePositiveRateByLabel(self) -> list[float]:
        return [float(v) for v in self._per_label["fpr"]]

    @property
    def precisionByLabel(self) -> list[float]:
        return [float(v) for v in self._per_label["precision"]]

    @property
    def recallByLabel(self) -> list[float]:
        return [float(v) for v in self._per_label["recall"]]

    def _f_measure(self, beta: float) -> np.ndarray:
        p, r, b2 = self._per_label["precision"], self._per_label["recall"], beta * beta
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(p + r == 0, 0.0, (1 + b2) * p * r / (b2 * p + r))

    def fMeasureByLabel(self, beta: float = 1.0) -> list[float]:
        """F-measure of each label (category)."""
        return [float(v) for v in self._f_measure(beta)]

    @property
    def accuracy(self) -> float:
        """Correctly classified weight over the total weight."""
        m = self._per_label
        return float(m["tp"].sum() / m["total"])

    @property
    def weightedTruePositiveRate(self) -> float:
        return self.weightedRecall

    @property
    def weightedFalsePositiveRate(self) -> float:
        return self._weighted(self._per_label["fpr"])

    @property
    def weightedRecall(self) -> float:
        return self._weighted(self._per_label["recall"])

    @property
    def weightedPrecision(self) -> float:
        return self._weighted(self._per_label["precision"])

    def weightedFMeasure(self, beta: float = 1.0) -> float:
        return self._weighted(self._f_measure(beta))


class BinaryClassificationSummary(ClassificationSummary):
    """ClassificationSummary plus MLlib's BinaryClassificationMetrics of element 1 of `scoreCol`
    (label > 0.5 is positive). The curves have one point per distinct score, as MLlib's; beyond
    2 * 1000 distinct scores consecutive scores are merged into ~1000 bins (MLlib's numBins,
    which MLlib applies within each partition of its sort and sparkopt over the whole sorted
    list, so such curves may differ from MLlib's at a few points)."""

    _score_param = "rawPredictionCol"

    @property
    def scoreCol(self) -> str:
        """Field in "predictions" which gives the probability or raw prediction of each class."""
        return self._model.getOrDefault(self._score_param)

    @cached_property
    def _curve_points(self) -> dict[str, np.ndarray]:
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        positive = (F.col(self.labelCol).cast("double") > 0.5)
        weight = self._weight()
        counts = (self.predictions
                  .select(vector_to_array(F.col(self.scoreCol))[1].alias("score"),
                          F.when(positive, weight).otherwise(0.0).alias("pos"),
                          F.when(positive, 0.0).otherwise(weight).alias("neg"))
                  .groupBy("score").agg(F.sum("pos").alias("pos"), F.sum("neg").alias("neg"))
                  .orderBy(F.col("score").desc()).toPandas())
        return curve_points(*(counts[c].to_numpy(dtype=float) for c in ("score", "pos", "neg")))

    def _frame(self, columns: list[str], values: list[np.ndarray]):
        rows = [tuple(float(v) for v in row) for row in zip(*values)]
        schema = ", ".join(f"`{c}` double" for c in columns)
        return self._dataset.sparkSession.createDataFrame(rows, schema)

    def _roc(self) -> tuple[np.ndarray, np.ndarray]:
        c = self._curve_points
        return np.r_[0.0, c["fpr"], 1.0], np.r_[0.0, c["recall"], 1.0]

    @property
    def roc(self):
        """The ROC curve as a DataFrame (FPR, TPR), (0, 0) prepended and (1, 1) appended."""
        return self._frame(["FPR", "TPR"], list(self._roc()))

    @property
    def areaUnderROC(self) -> float:
        """Area under the ROC curve (trapezoids)."""
        x, y = self._roc()
        return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))

    @property
    def pr(self):
        """The precision-recall curve as a DataFrame (recall, precision), with (0, the first
        threshold's precision) prepended."""
        c = self._curve_points
        first = c["precision"][0] if len(c["precision"]) else 1.0
        return self._frame(["recall", "precision"], [np.r_[0.0, c["recall"]], np.r_[first, c["precision"]]])

    @property
    def fMeasureByThreshold(self):
        """(threshold, F-Measure) with beta = 1 at every distinct score."""
        c = self._curve_points
        p, r = c["precision"], c["recall"]
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(p + r == 0, 0.0, 2 * p * r / (p + r))
        return self._frame(["threshold", "F-Measure"], [c["threshold"], f])

    @property
    def precisionByThreshold(self):
        """(threshold, precision) at every distinct score."""
        c = self._curve_points
        return self._frame(["threshold", "precision"], [c["threshold"], c["precision"]])

    @property
    def recallByThreshold(self):
        """(threshold, recall) at every distinct score."""
        c = self._curve_points
        return self._frame(["threshold", "recall"], [c["threshold"], c["recall"]])


class LogisticRegressionSummary(ClassificationSummary):
    """A logistic regression model's metrics on a DataFrame (multinomial models)."""

    @property
    def probabilityCol(self) -> str:
        """Field in "predictions" which gives the probability of each class as a vector."""
        return self._model.getProbabilityCol()


class BinaryLogisticRegressionSummary(BinaryClassificationSummary, LogisticRegressionSummary):
    """A binomial logistic regression model's metrics on a DataFrame; the score is the
    probability of class 1."""

    _score_param = "probabilityCol"


class LinearSVCSummary(BinaryClassificationSummary):
    """A linear SVM's metrics on a DataFrame; the score is the margin (rawPrediction[1])."""


LogisticRegressionTrainingSummary = _training(LogisticRegressionSummary)
BinaryLogisticRegressionTrainingSummary = type(
    "BinaryLogisticRegressionTrainingSummary",
    (BinaryLogisticRegressionSummary, LogisticRegressionTrainingSummary),
    {"__module__": __name__, "__doc__": "BinaryLogisticRegressionSummary on the training data, plus what the fit "
                                        "did (TrainingSummary)."})


class LinearSVCTrainingSummary(_training(LinearSVCSummary)):
    """LinearSVCSummary on the training data plus what the fit did. Callable, returning itself:
    pyspark's LinearSVCModel.summary is a method, sparkopt's a property like every other model's,
    so both `model.summary.accuracy` and `model.summary().accuracy` work."""

    def __call__(self):
        return self


# -- regression --------------------------------------------------------------------------------
class RegressionSummary(_Summary):
    """MLlib's RegressionMetrics of the predictions, weighted by the model's weightCol; without an
    intercept r2 is through the origin (1 - SSE / sum w y^2), as MLlib's."""

    @cached_property
    def _sums(self) -> dict[str, float]:
        from pyspark.sql import functions as F

        m = self._model
        weight = F.col(self._model_weight_col()).cast("double") if self._model_weight_col() else F.lit(1.0)
        y, p = F.col(self.labelCol).cast("double"), F.col(self.predictionCol)
        frame = self.predictions.select(y.alias("y"), p.alias("p"), weight.alias("w"))
        first = frame.agg(F.sum("w").alias("w"), F.sum(F.col("w") * F.col("w")).alias("ww"),
                          F.sum(F.col("w") * F.col("y")).alias("wy"), F.count(F.lit(1)).alias("n")).first()
        mean = first["wy"] / first["w"]
        r = F.col("y") - F.col("p")
        second = frame.agg(F.sum(F.col("w") * r * r).alias("sse"), F.sum(F.col("w") * F.abs(r)).alias("sae"),
                           F.sum(F.col("w") * F.col("y") * F.col("y")).alias("syy"),
                           F.sum(F.col("w") * (F.col("y") - mean) ** 2).alias("m2"),
                           F.sum(F.col("w") * (F.col("p") - mean) ** 2).alias("ssreg")).first()
        out = {**first.asDict(), **second.asDict(), "mean": mean}
        out["through_origin"] = not m.getFitIntercept()
        return out

    @property
    def meanSquaredError(self) -> float:
        s = self._sums
        return float(s["sse"] / s["w"])

    @property
    def rootMeanSquaredError(self) -> float:
        return float(np.sqrt(self.meanSquaredError))

    @property
    def meanAbsoluteError(self) -> float:
        s = self._sums
        return float(s["sae"] / s["w"])

    @property
    def r2(self) -> float:
        """1 - SSE / SStot; SStot is MLlib's: the weighted (reliability) variance times (sum w - 1),
        which is sum w (y - mean)^2 for unit weights; through the origin without an intercept."""
        s = self._sums
        if s["through_origin"]:
            return float(1.0 - s["sse"] / s["syy"])
        variance = s["m2"] / (s["w"] - s["ww"] / s["w"])
        return float(1.0 - s["sse"] / (variance * (s["w"] - 1.0)))

    @property
    def explainedVariance(self) -> float:
        """sum w (prediction - mean label)^2 / sum w (MLlib's definition)."""
        s = self._sums
        return float(s["ssreg"] / s["w"])

    @property
    def numInstances(self) -> int:
        """Number of rows in `predictions` (unweighted)."""
        return int(self._sums["n"])

    @property
    def residuals(self):
        """DataFrame with one column, residuals: label - prediction."""
        from pyspark.sql import functions as F

        return self.predictions.select((F.col(self.labelCol).cast("double") - F.col(self.predictionCol))
                                       .alias("residuals"))


class LinearRegressionSummary(RegressionSummary):
    """A linear regression model's metrics on a DataFrame, with MLlib's inference: standard
    errors, t and p values of the coefficients then the intercept (last, as MLlib orders them).

    They come from the exact Hessian of the model's objective at its coefficients on this
    DataFrame, for any solver (MLlib has them for its normal solver only):
    cov = sigma^2 (A'WA + sum(w) * P)^-1 with A the features plus a column of ones (with an
    intercept), P the L2 penalty's Hessian in coefficient space (0 at regParam 0) and
    sigma^2 = sum w (y - prediction)^2 / degreesOfFreedom, which is MLlib's normal solver's
    covariance. Not available for Huber's loss, under an L1 penalty, or beyond 4096 features.
    """

    @property
    def r2adj(self) -> float:
        """Adjusted R^2: 1 - (1 - r2) (n - i) / (n - d - i), i = 1 with an intercept."""
        n, i = self.numInstances, int(self._model.getFitIntercept())
        return float(1.0 - (1.0 - self.r2) * (n - i) / (n - self._model.numFeatures - i))

    @property
    def degreesOfFreedom(self) -> int:
        """numInstances minus the number of coefficients (the intercept included)."""
        return int(self.numInstances - self._model.numFeatures - int(self._model.getFitIntercept()))

    @property
    def devianceResiduals(self) -> list[float]:
        """[min, max] of the weighted residuals (label - prediction) * sqrt(weight)."""
        from pyspark.sql import functions as F

        weight = self._model_weight_col()
        scaled = F.col(self.labelCol).cast("double") - F.col(self.predictionCol)
        if weight:
            scaled = scaled * F.sqrt(F.col(weight).cast("double"))
        row = self.predictions.select(scaled.alias("r")).agg(F.min("r"), F.max("r")).first()
        return [float(row[0]), float(row[1])]

    @cached_property
    def _inverse_diagonal(self) -> np.ndarray:
        """diag((A'WA + sum(w) P)^-1), (d + intercept,), from one Hessian pass over the data."""
        from ..linear_objective import _loss_grad_hess
        from ..objectives import make_block_objective
        from .cache import ENGINE_CACHE

        m = self._model
        d, fit_intercept = m.numFeatures, bool(m.getFitIntercept())
        unavailable = "No Std. Error of coefficients available for this LinearRegressionModel"
        if m._state["loss"] != "squared_error":
            raise RuntimeError(f"{unavailable}: loss={m.getLoss()!r} (standard errors need squaredError)")
        if m.getRegParam() > 0 and m.getElasticNetParam() > 0:
            raise RuntimeError(f"{unavailable}: an L1 penalty (elasticNetParam={m.getElasticNetParam()}) has no "
                               f"Hessian at zero coefficients")
        if d > MAX_FEATURES_FOR_STANDARD_ERRORS:
            raise RuntimeError(f"{unavailable}: {d} features; the exact Hessian is formed up to "
                               f"{MAX_FEATURES_FOR_STANDARD_ERRORS}")
        engine, _ = ENGINE_CACHE.get(self._dataset, m.getFeaturesCol(), m.getLabelCol(), self._model_weight_col(),
                                     None, m.getAggregationDepth(), "tree")
        block_objective = make_block_objective("squared_error", d, fit_intercept)
        coef = np.asarray(m._state["coef_vector"], dtype=float)
        _, _, H = engine.map_sum(partial(_loss_grad_hess, block_objective), coef)
        penalty = np.asarray(m._state.get("l2Hessian", np.zeros(d)), dtype=float)
        if m.getRegParam() > 0 and "l2Hessian" not in m._state:
            raise RuntimeError(f"{unavailable}: the model was saved without its penalty's Hessian")
        H = np.array(H, dtype=float)
        H[np.arange(d), np.arange(d)] += float(engine.weight_sum) * penalty
        # invert with unit diagonal: raw units (a count next to the intercept) span many decades
        scale = 1.0 / np.sqrt(np.where(np.diag(H) > 0, np.diag(H), 1.0))
        return np.diag(np.linalg.inv(H * np.outer(scale, scale))) * scale ** 2

    @property
    def coefficientStandardErrors(self) -> list[float]:
        """Standard errors of the coefficients, then the intercept's (with fitIntercept)."""
        s = self._sums
        sigma2 = s["sse"] / self.degreesOfFreedom
        return [float(v) for v in np.sqrt(self._inverse_diagonal * sigma2)]

    def _estimates(self) -> np.ndarray:
        m = self._model
        values = np.asarray(m.coefficients.toArray(), dtype=float)
        return np.r_[values, m.intercept] if m.getFitIntercept() else values

    @property
    def tValues(self) -> list[float]:
        """Estimate / standard error, coefficients then the intercept."""
        return [float(v) for v in self._estimates() / np.asarray(self.coefficientStandardErrors)]

    @property
    def pValues(self) -> list[float]:
        """Two-sided p-values of the t statistics (Student's t with degreesOfFreedom)."""
        from scipy.stats import t as student_t

        return [float(v) for v in 2.0 * student_t.sf(np.abs(self.tValues), self.degreesOfFreedom)]


RegressionTrainingSummary = _training(RegressionSummary)
LinearRegressionTrainingSummary = _training(LinearRegressionSummary)

# the name earlier sparkopt versions gave the classifiers' summary
ClassifierSummary = ClassificationSummary
