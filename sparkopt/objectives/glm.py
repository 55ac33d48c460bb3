"""Block functions of a generalized linear model: the sums one IRLS step and the GLM summary need.

numpy / scipy only; never imports pyspark. Every function takes a :class:`~sparkopt.blocks.Block`
and a payload and returns weighted sums, so partitions combine by addition (the engines' fold):

* :func:`start_statistics`: the co-moments (:class:`.gram.GramStats`) of MLlib's IRLS start, the
  working label ``g(mu0) - offset`` with ``mu0`` the family's start mean, under the row weights;
* :func:`working_statistics`: the co-moments of the working label ``z = m - offset + (y - mu)
  g'(mu)`` under the IRLS weights ``w / (V(mu) g'(mu)^2)`` at the current coefficients, and the
  deviance there;
* :func:`summary_sums`: what MLlib's GeneralizedLinearRegressionSummary aggregates (deviance,
  Pearson chi-square, AIC's log-likelihood terms) at given coefficients.

``intercept_only`` drops the features (``X[:, :0]``): the intercept-only model whose deviance is
the null deviance when an offset is present.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
from scipy.special import gammaln, xlogy

from ..blocks import Block
from .gram import block_gram
from .losses import GLMLoss

__all__ = ["start_statistics", "working_statistics", "summary_sums", "SummarySums", "margins", "family_aic",
           "residuals"]


def _features(block: Block, intercept_only: bool):
    return block.X[:, :0] if intercept_only else block.X


def margins(block: Block, coef: np.ndarray, fit_intercept: bool, intercept_only: bool = False) -> np.ndarray:
    """``X @ beta + c + offset`` for ``coef = [beta (d), c (if fit_intercept)]`` (beta empty when
    ``intercept_only``)."""
    X = _features(block, intercept_only)
    d = X.shape[1]
    m = np.asarray(X @ coef[:d]).ravel() if d else np.zeros(block.n_rows)
    if fit_intercept:
        m = m + coef[d]
    return m if block.offset is None else m + block.offset


def start_statistics(block: Block, payload) -> tuple:
    """``(GramStats of (X, g(project(mu0)) - offset, w), number of non-finite offsets)``;
    payload ``(GLMLoss, intercept_only)``."""
    glm, intercept_only = payload
    mu0 = glm.family.start_mean(block.y, block.w)
    z = glm.link.link(glm.family.project(mu0))
    bad = 0
    if block.offset is not None:
        bad = int(np.sum(~np.isfinite(block.offset)))
        z = z - block.offset
    return block_gram(Block(_features(block, intercept_only), z, block.w)), bad


def working_statistics(block: Block, payload) -> tuple:
    """``(GramStats of (X, z, w / (V g'^2)), sum_i w_i d(y_i, mu_i))`` at ``coef``; payload
    ``(GLMLoss, coef (n_params,), fit_intercept, intercept_only)``."""
    glm, coef, fit_intercept, intercept_only = payload
    m = margins(block, coef, fit_intercept, intercept_only)
    z, factor = glm.working_response(block.y, m, block.offset)
    deviance = float(np.dot(block.w, glm.family.unit_deviance(block.y, glm.mean(m))))
    return block_gram(Block(_features(block, intercept_only), z, block.w * factor)), deviance


class SummarySums(NamedTuple):
    """Weighted sums over rows at fixed coefficients (add element-wise across blocks)."""

    count: float            # rows
    weight: float           # sum w
    deviance: float         # sum w d(y, mu)
    pearson: float          # sum w (y - mu)^2 / V(mu)
    label_offset: float     # sum w (y - offset)
    log_weight: float       # sum log w (gaussian AIC)
    log_likelihood: float   # binomial / poisson: sum of MLlib's per-row log-likelihood
    w_log_y: float          # gamma AIC: sum w log y
    w_y_over_mu: float      # gamma AIC: sum w y / mu
    w_log_mu: float         # gamma AIC: sum w log mu


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5)            # Scala's math.round


def summary_sums(block: Block, payload) -> tuple:
    """:class:`SummarySums` (as a plain tuple, which the fold adds) at ``coef``; payload
    ``(GLMLoss, coef, fit_intercept, intercept_only)``. The log-likelihood terms are MLlib's:
    binomial ``log Binomial(round(w); mu).pmf(round(y w))`` per row (0 where round(w) = 0),
    poisson ``w log Poisson(mu).pmf(trunc(y))``."""
    glm, coef, fit_intercept, intercept_only = payload
    y, w = block.y, block.w
    mu = glm.mean(margins(block, coef, fit_intercept, intercept_only))
    family = glm.family
    offset = block.offset if block.offset is not None else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_likelihood = 0.0
        if family.name == "binomial":
            trials = _round_half_up(w)
            successes = _round_half_up(y * w)
            row = (gammaln(trials + 1) - gammaln(successes + 1) - gammaln(trials - successes + 1)
                   + xlogy(successes, mu) + xlogy(trials - successes, 1.0 - mu))
            log_likelihood = float(np.sum(np.where(trials == 0, 0.0, row)))
        elif family.name == "poisson":
            k = np.trunc(y)
            log_likelihood = float(np.dot(w, xlogy(k, mu) - mu - gammaln(k + 1)))
        positive = family.name in ("gamma", "tweedie")
        sums = SummarySums(
            count=float(block.n_rows), weight=float(w.sum()),
            deviance=float(np.dot(w, family.unit_deviance(y, mu))),
            pearson=float(np.dot(w, (y - mu) ** 2 / family.variance(mu))),
            label_offset=float(np.dot(w, y - offset)),
            log_weight=float(np.sum(np.log(w))) if family.name == "gaussian" else 0.0,
            log_likelihood=log_likelihood,
            w_log_y=float(np.dot(w, np.log(y))) if positive else 0.0,
            w_y_over_mu=float(np.dot(w, y / mu)) if positive else 0.0,
            w_log_mu=float(np.dot(w, np.log(mu))) if positive else 0.0,
        )
    return tuple(sums)


def family_aic(glm: GLMLoss, sums: SummarySums, rank: int) -> Optional[float]:
    """MLlib's AIC from the sums: gaussian ``n (log(2 pi D / n) + 1) + 2 - sum log w``, binomial
    and poisson ``-2 loglik``, gamma ``-2 sum w log Gamma(1/phi, mu phi).pdf(y) + 2`` with
    ``phi = D / sum w``; plus ``2 rank``. None for a true tweedie family (MLlib has no AIC)."""
    name = glm.family.name
    if name == "gaussian":
        n = sums.count
        base = n * (np.log(sums.deviance / n * 2.0 * np.pi) + 1.0) + 2.0 - sums.log_weight
    elif name in ("binomial", "poisson"):
        base = -2.0 * sums.log_likelihood
    elif name == "gamma":
        phi = sums.deviance / sums.weight
        shape = 1.0 / phi
        # sum_i w_i [(a - 1) log y - y / (mu phi) - lgamma(a) - a log(mu phi)]
        log_pdf = ((shape - 1.0) * sums.w_log_y - sums.w_y_over_mu / phi
                   - sums.weight * (gammaln(shape) + shape * np.log(phi)) - shape * sums.w_log_mu)
        base = -2.0 * log_pdf + 2.0
    else:
        return None
    return float(base + 2.0 * rank)


def residuals(glm: GLMLoss, kind: str, y: np.ndarray, mu: np.ndarray, w: np.ndarray) -> np.ndarray:
    """MLlib's residuals per row of label y, fitted mean mu, weight w: deviance
    ``sign(y - mu) sqrt(max(w d(y, mu), 0))`` (negative where y <= mu), pearson
    ``(y - mu) sqrt(w) / sqrt(V(mu))``, working ``(y - mu) g'(mu)``, response ``y - mu``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "deviance":
            r = np.sqrt(np.maximum(w * glm.family.unit_deviance(y, mu), 0.0))
            return np.where(y > mu, r, -r)
        if kind == "pearson":
            return (y - mu) * np.sqrt(w) / np.sqrt(glm.family.variance(mu))
        if kind == "working":
            return (y - mu) * glm.link.deriv(mu)
        if kind == "response":
            return y - mu
    raise ValueError(f"unknown residuals type {kind!r}")
