"""Training summaries: what a fit did (TrainingSummary), plus the metrics over a model's
predictions that classifiers (ClassifierSummary) and regressors (RegressionSummary) report."""
from __future__ import annotations

from ..fit import LinearFit


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
        """The engine that ran the passes: 'driver', 'resident' or 'tree'."""
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


class ClassifierSummary(TrainingSummary):
    """Training summary with accuracy, and areaUnderROC for binary models."""

    @property
    def accuracy(self) -> float:
        from pyspark.ml.evaluation import MulticlassClassificationEvaluator

        m = self._model
        return MulticlassClassificationEvaluator(labelCol=m.getLabelCol(), predictionCol=m.getPredictionCol(),
                                                 metricName="accuracy").evaluate(self.predictions)

    @property
    def areaUnderROC(self) -> float:
        from pyspark.ml.evaluation import BinaryClassificationEvaluator

        m = self._model
        if m.numClasses != 2:
            raise RuntimeError("areaUnderROC is defined for binary models only")
        return BinaryClassificationEvaluator(labelCol=m.getLabelCol(), rawPredictionCol=m.getRawPredictionCol(),
                                             metricName="areaUnderROC").evaluate(self.predictions)


class RegressionSummary(TrainingSummary):
    """Training summary with rootMeanSquaredError, meanAbsoluteError and r2 on the predictions."""

    def _metric(self, name):
        from pyspark.ml.evaluation import RegressionEvaluator

        m = self._model
        ev = RegressionEvaluator(labelCol=m.getLabelCol(), predictionCol=m.getPredictionCol(), metricName=name)
        if m.isDefined(m.weightCol) and m.getWeightCol():
            ev.setWeightCol(m.getWeightCol())
        return ev.evaluate(self.predictions)

    @property
    def rootMeanSquaredError(self) -> float:
        return self._metric("rmse")

    @property
    def meanAbsoluteError(self) -> float:
        return self._metric("mae")

    @property
    def r2(self) -> float:
        return self._metric("r2")
