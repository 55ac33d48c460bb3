"""A fitted linear model's predictions from its features, numpy only (no pyspark).

``LinearPredictor`` is what a model's ``transform`` ships into the executors' Arrow UDF: the
coefficient matrix, the intercepts, how margins become outputs and the output column names.
Unpickling it in a Python worker imports numpy, scipy.special and this module, not the estimator
classes (pyspark.ml, pandas: ~2 s per new worker), and it pickles the coefficients and nothing
else of the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

#: how margins ``M = X B' + c`` (n, rows) become outputs
KINDS = ("logistic", "multinomial", "margin_classifier", "identity", "exp", "glm")


@dataclass(frozen=True)
class LinearPredictor:
    """Outputs of a linear model for rows ``X`` (n, d) dense or CSR:

    * ``logistic``: binary; rawPrediction ``[-m, m]``, probability ``[1 - p, p]`` with
      ``p = expit(m)``, prediction ``p > threshold``;
    * ``multinomial``: rawPrediction the K margins, probability their softmax, prediction the
      argmax of the margins, or of ``p_k / t_k`` with ``thresholds`` (``t_k = 0`` wins outright);
    * ``margin_classifier`` (linear SVM): rawPrediction ``[-m, m]``, prediction ``m > threshold``;
    * ``identity`` / ``exp`` (Poisson, log link; the margin capped at 709 so the mean stays finite)
      / ``glm`` (``glm.mean(eta)``, ``eta = m + offset``; ``link`` names the linkPrediction column).

    ``coef``: (rows, d), one row per margin (K for multinomial, else 1); ``intercepts``: (rows,).
    Calling it gives the outputs whose column name is not empty."""

    kind: str
    coef: np.ndarray
    intercepts: np.ndarray
    prediction: str = "prediction"
    raw: str = ""
    probability: str = ""
    link: str = ""
    threshold: float = 0.5
    thresholds: Optional[tuple] = None
    glm: Any = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def margins(self, X) -> np.ndarray:
        """(n, rows) margins ``X B' + c``."""
        return np.asarray(X @ self.coef.T) + self.intercepts

    def raw_scores(self, X) -> np.ndarray:
        """rawPrediction: the margins, a binary model's as ``[-m, m]``."""
        M = self.margins(X)
        return np.hstack([-M, M]) if M.shape[1] == 1 and self.kind in ("logistic", "margin_classifier") else M

    def __call__(self, X, offset: Optional[np.ndarray] = None) -> dict:
        """{column name: array} of the outputs that have a column name, for the rows ``X``."""
        names = {"raw": self.raw, "probability": self.probability, "prediction": self.prediction, "link": self.link}
        return {names[role]: value for role, value in self.outputs(X, offset).items() if names[role]}

    def outputs(self, X, offset: Optional[np.ndarray] = None) -> dict:
        """{role: array} for the rows ``X``: raw, probability (classifiers), prediction, link
        (regressions: the linear predictor ``eta``)."""
        if self.kind in ("logistic", "multinomial", "margin_classifier"):
            return self._classify(self.raw_scores(X))
        eta = self.margins(X)[:, 0]
        if offset is not None:
            eta = eta + offset
        if self.kind == "identity":
            mean = eta
        elif self.kind == "exp":
            mean = np.exp(np.minimum(eta, 709.0))
        else:
            mean = self.glm.mean(eta)
        return {"prediction": mean, "link": eta}

    def _classify(self, raw: np.ndarray) -> dict:
        from scipy.special import expit, softmax

        if self.kind == "margin_classifier":
            return {"raw": raw, "prediction": (raw[:, 1] > self.threshold).astype(float)}
        if self.kind == "logistic":
            p1 = expit(raw[:, 1])
            return {"raw": raw, "probability": np.column_stack([1.0 - p1, p1]),
                    "prediction": (p1 > self.threshold).astype(float)}
        prob = softmax(raw, axis=1)
        if self.thresholds is None:
            prediction = np.argmax(raw, axis=1)
        else:
            t = np.asarray(self.thresholds, dtype=float)
            with np.errstate(divide="ignore", invalid="ignore"):
                prediction = np.argmax(np.where(t == 0, np.inf, prob / np.where(t == 0, 1.0, t)), axis=1)
        return {"raw": raw, "probability": prob, "prediction": prediction.astype(float)}
