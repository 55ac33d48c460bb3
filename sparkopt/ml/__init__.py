"""Spark ML estimators backed by sparkopt's solvers: drop-in for their pyspark.ml namesakes."""
from .cache import clear_cache
from .glm import (
    GeneralizedLinearRegression,
    GeneralizedLinearRegressionModel,
    GeneralizedLinearRegressionSummary,
    GeneralizedLinearRegressionTrainingSummary,
)
from .classification import LinearSVC, LinearSVCModel, LogisticRegression, LogisticRegressionModel
from .regression import (
    LinearRegression,
    LinearRegressionModel,
    PoissonRegression,
    PoissonRegressionModel,
)
from .summary import (
    BinaryLogisticRegressionSummary,
    BinaryLogisticRegressionTrainingSummary,
    LinearRegressionSummary,
    LinearRegressionTrainingSummary,
    LinearSVCSummary,
    LinearSVCTrainingSummary,
    LogisticRegressionSummary,
    LogisticRegressionTrainingSummary,
    RegressionSummary,
    RegressionTrainingSummary,
    TrainingSummary,
)
from .tuning import LinearRegressionCV, LinearRegressionCVModel, LogisticRegressionCV, LogisticRegressionCVModel

__all__ = [
    "LinearRegression", "LinearRegressionModel", "LinearSVC", "LinearSVCModel", "LogisticRegression",
    "LogisticRegressionModel", "PoissonRegression", "PoissonRegressionModel", "RegressionSummary",
    "RegressionTrainingSummary", "TrainingSummary", "BinaryLogisticRegressionSummary",
    "BinaryLogisticRegressionTrainingSummary", "LinearRegressionSummary", "LinearRegressionTrainingSummary",
    "LinearSVCSummary", "LinearSVCTrainingSummary", "LogisticRegressionSummary", "LogisticRegressionTrainingSummary",
    "clear_cache", "GeneralizedLinearRegression", "GeneralizedLinearRegressionModel",
    "GeneralizedLinearRegressionSummary", "GeneralizedLinearRegressionTrainingSummary",
    "LogisticRegressionCV", "LogisticRegressionCVModel", "LinearRegressionCV", "LinearRegressionCVModel",
]
