"""Generalized linear models by IRLS (Fisher scoring) over an engine, MLlib's iteration step by step.

Driver side; never imports pyspark (the engine does the passes). MLlib's
GeneralizedLinearRegression with ``solver="irls"``, which sparkopt runs as:

1. Start (one pass): weighted least squares of the working label ``g(mu0) - offset`` (``mu0`` the
   family's start mean) on the features, with the row weights ``w`` and MLlib's *standardized*
   ridge (below). Gaussian with the identity link stops here: that solve is the fit.
2. Each iteration (one pass): at the current coefficients, the working label
   ``z = eta - offset + (y - mu) g'(mu)`` and weight ``W = w / (V(mu) g'(mu)^2)``, i.e. a Newton
   step with the expected (Fisher) Hessian ``X' W X`` on half the deviance, solved as the
   weighted least squares of z on X under W with MLlib's *unstandardized* ridge.
3. Stop when ``max |coef_new - coef_old| < tol`` (coefficients and intercept) or after maxIter
   iterations.

Each pass returns the weighted co-moments of (X, z) under the weights
(:mod:`sparkopt.objectives.gram`), from which the driver solves the d x d normal equations: up to
4096 features, MLlib's limit for this solver.

The ridge (MLlib's WeightedLeastSquares, regParam = lambda; S = sum of the pass's weights):

* start and gaussian/identity (standardizeFeatures and standardizeLabel on):
  ``min 1/(2S) sum W (z - x.b - c)^2 + lambda / (2 sd(z)) sum_j sd_j^2 b_j^2`` with sd_j and
  sd(z) the W-weighted population standard deviations;
* IRLS steps (both off): ``min 1/(2S) sum W (z - x.b - c)^2 + lambda/2 |b|^2``.

So at regParam > 0 the IRLS fixed point solves ``X' w (y - mu) / (V g') = lambda S(b) b`` with
``S(b) = sum_i W_i`` the total IRLS weight *at the solution*: a ridge scaled by a quantity that
moves with b, not the minimum of a fixed penalized deviance. At regParam = 0 it is the maximum
likelihood estimate.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .errors import InputError
from .objectives.glm import start_statistics, working_statistics
from .objectives.gram import GramStats
from .objectives.losses import GLMLoss
from .solvers import ConvergenceWarning

__all__ = ["IRLS_MAX_FEATURES", "GLMFit", "fit_glm", "solve_weighted_least_squares", "fisher_inverse_diagonal"]

#: MLlib's WeightedLeastSquares.MAX_NUM_FEATURES
IRLS_MAX_FEATURES = 4096


@dataclass
class GLMFit:
    """coef: ``[beta (d), intercept (if fit_intercept)]``; diag_inv: the diagonal of
    ``(A' W A + ridge)^-1`` of the last least-squares solve (A the features plus a column of ones
    with an intercept), which times the dispersion gives MLlib's standard errors (None when the
    solve had constant features, where MLlib has none either); n_iter: IRLS iterations (1 for
    gaussian/identity); history: one row per pass (iteration, deviance at the start of the
    step, max_change); solver: "irls", or the sparkopt solver that minimized the deviance."""

    coef: np.ndarray
    diag_inv: Optional[np.ndarray]
    n_iter: int
    converged: bool
    passes: float
    history: list = field(default_factory=list)
    solver: str = "irls"


def solve_weighted_least_squares(gram: GramStats, fit_intercept: bool, reg_param: float, standardize: bool):
    """MLlib's WeightedLeastSquares (Cholesky) from co-moments: ``(coef, diag_inv or None)``.

    Minimizes ``1/(2S) sum W (z - x.b - c)^2 + ridge/2`` with ``ridge = lambda / sd(z) * sum_j
    sd_j^2 b_j^2`` (``standardize``) or ``lambda |b|^2``. Features with zero variance get b_j = 0
    (MLlib zeroes their standardized column). A constant label (sd(z) = 0) with an intercept, or
    a zero one, gives ``b = 0, c = mean(z)`` as MLlib."""
    d = gram.n_features
    S = gram.weight
    if not S > 0:
        raise InputError("the sum of the IRLS weights is zero: every row has weight 0")
    variance = np.diag(gram.Mxx) / S
    active = np.flatnonzero(variance > 0)
    label_sd = float(np.sqrt(max(gram.Myy / S, 0.0)))
    coef = np.zeros(d + int(fit_intercept))
    if label_sd == 0.0:
        if fit_intercept or gram.ybar == 0.0:
            if fit_intercept:
                coef[d] = gram.ybar
            return coef, None
        label_sd = abs(gram.ybar)
    if standardize:
        ridge = reg_param / label_sd * variance[active]
    else:
        ridge = np.full(len(active), float(reg_param))
    xbar = gram.xbar[active]
    if fit_intercept:
        A = gram.Mxx[np.ix_(active, active)] / S
        rhs = gram.Mxy[active] / S
    else:
        A = gram.Mxx[np.ix_(active, active)] / S + np.outer(xbar, xbar)
        rhs = gram.Mxy[active] / S + xbar * gram.ybar
    A = A + np.diag(ridge)
    # solve in standardized units (unit diagonal), as MLlib does: raw units span decades
    scale = 1.0 / np.sqrt(np.where(np.diag(A) > 0, np.diag(A), 1.0))
    As = A * np.outer(scale, scale)
    try:
        factor = np.linalg.cholesky(As)
        inverse = np.linalg.inv(factor)
        inverse = inverse.T @ inverse
        singular = False
    except np.linalg.LinAlgError:
        inverse = np.linalg.pinv(As)
        singular = True
    beta = scale * (inverse @ (scale * rhs))
    coef[active] = beta
    if fit_intercept:
        coef[d] = gram.ybar - float(xbar @ beta)
    if singular or len(active) < d:
        return coef, None
    inv_diag = np.diag(inverse) * scale ** 2 / S
    if fit_intercept:
        A_inv_xbar = scale * (inverse @ (scale * xbar))
        inv_diag = np.r_[inv_diag, (1.0 + float(xbar @ A_inv_xbar)) / S]
    return coef, inv_diag


def fit_glm(engine, glm: GLMLoss, *, fit_intercept: bool = True, reg_param: float = 0.0, max_iter: int = 25,
            tol: float = 1e-6, intercept_only: bool = False, warn: bool = True) -> GLMFit:
    """MLlib's IRLS over ``engine``'s blocks (see the module docstring); ``intercept_only`` fits
    the model without features (the null model, whose deviance is MLlib's nullDeviance with an
    offset). Returns a :class:`GLMFit`."""
    d = 0 if intercept_only else engine.stats.n_features
    if d > IRLS_MAX_FEATURES:
        raise InputError(f"solver='irls' solves the normal equations of at most {IRLS_MAX_FEATURES} features "
                         f"(MLlib's limit), the data have {d}")
    if d == 0 and not fit_intercept:
        raise InputError("a model with 0 features needs fitIntercept=True (as MLlib)")
    passes0 = engine.passes
    history = []
    with engine.session():
        gram, bad_offsets = engine.map_sum(start_statistics, (glm, intercept_only))
        if bad_offsets:
            raise InputError(f"the offset column has {bad_offsets} NaN or infinite values; offsets must be finite")
        coef, diag_inv = solve_weighted_least_squares(gram, fit_intercept, reg_param, standardize=True)
        gaussian_identity = glm.family.name == "gaussian" and glm.link.name == "identity"
        if gaussian_identity:
            return GLMFit(coef, diag_inv, 1, True, float(engine.passes - passes0),
                          [dict(iteration=0, deviance=float("nan"), max_change=float("nan"))])
        converged, n_iter = False, 0
        while n_iter < max_iter and not converged:
            gram, deviance = engine.map_sum(working_statistics, (glm, coef, fit_intercept, intercept_only))
            new, diag_inv = solve_weighted_least_squares(gram, fit_intercept, reg_param, standardize=False)
            change = float(np.max(np.abs(new - coef))) if new.size else 0.0
            history.append(dict(iteration=n_iter, deviance=float(deviance), max_change=change))
            coef = new
            n_iter += 1
            converged = change < tol
            if not np.all(np.isfinite(coef)):
                break
    passes = float(engine.passes - passes0)
    if not np.all(np.isfinite(coef)):
        raise InputError(f"IRLS diverged for family={glm.family.name!r}, link={glm.link.name!r}: the coefficients "
                         "became non-finite (the link maps some linear predictors outside the family's range; "
                         "try another link or starting data)")
    if not converged and warn and max_iter > 0:
        warnings.warn(f"sparkopt: IRLS did not converge in {max_iter} iterations (last max change "
                      f"{history[-1]['max_change']:.3g} >= tol {tol:g})", ConvergenceWarning, stacklevel=2)
    return GLMFit(coef, diag_inv, n_iter, converged, passes, history)


def fisher_inverse_diagonal(engine, glm: GLMLoss, coef: np.ndarray, fit_intercept: bool,
                            ridge: float = 0.0) -> Optional[np.ndarray]:
    """One pass: the diagonal of ``(A' W A + ridge I_beta)^-1`` at ``coef`` (A the features plus a
    column of ones with an intercept, W the IRLS weights ``w / (V g'^2)``: the expected Hessian
    of half the deviance; ``ridge`` on the coefficients only), which times the dispersion gives
    the standard errors of a fit made by another solver than IRLS. None for more than
    IRLS_MAX_FEATURES features or a singular matrix."""
    d = engine.stats.n_features
    if d > IRLS_MAX_FEATURES:
        return None
    gram, _ = engine.map_sum(working_statistics, (glm, np.asarray(coef, dtype=float), fit_intercept, False))
    S, xbar = gram.weight, gram.xbar
    p = d + int(fit_intercept)
    H = np.empty((p, p))
    if fit_intercept:
        H[:d, :d] = gram.Mxx + S * np.outer(xbar, xbar)
        H[:d, d] = H[d, :d] = S * xbar
        H[d, d] = S
    else:
        H[:d, :d] = gram.Mxx + S * np.outer(xbar, xbar)
    H[np.arange(d), np.arange(d)] += ridge
    scale = 1.0 / np.sqrt(np.where(np.diag(H) > 0, np.diag(H), 1.0))
    try:
        inverse = np.linalg.inv(H * np.outer(scale, scale))
    except np.linalg.LinAlgError:
        return None
    return np.diag(inverse) * scale ** 2
