"""Pointwise losses on linear margins, with their first and second derivatives.

numpy / scipy only; never imports pyspark.

Every function here is vectorized over rows and takes labels ``y`` and margins ``m`` (the linear
predictor ``x_i . beta + c``). Single-output losses return a :class:`LossTerms` triple of (n,)
arrays ``(value, d1, d2)`` = ``(loss, d loss / d m, d^2 loss / d m^2)``. The multinomial and Huber
losses have more structure and return their own records (see their docstrings).

Numerics. All losses are finite (or honestly +inf where the true value exceeds the float range,
e.g. ``(y - m)^2 / 2`` at ``|m| = 1e300``) and never NaN for finite inputs:

- logistic uses one ``exp(-|m|)`` per row and builds softplus, the sigmoid and its derivative from
  it, so nothing overflows and small tails keep their relative accuracy;
- multinomial uses the max-shifted log-sum-exp;
- Poisson clips the margin at :data:`POISSON_MAX_MARGIN` before ``exp`` (see there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import numpy as np
from scipy.special import expit, xlogy

from ..errors import InputError

__all__ = [
    "LossInfo",
    "LOSS_INFO",
    "LOSSES",
    "loss_info",
    "check_labels",
    "LossTerms",
    "HuberTerms",
    "MultinomialTerms",
    "POISSON_MAX_MARGIN",
    "squared_error",
    "logistic",
    "poisson",
    "poisson_constant",
    "hinge",
    "squared_hinge",
    "multinomial",
    "huber",
    "softplus",
]

#: ``exp(700) ~ 1.0e304`` is close to the largest double (1.8e308). Margins beyond it only occur
#: far from any sensible Poisson fit; taking ``exp(min(m, 700))`` in the value, gradient and
#: Hessian keeps all three huge but finite, so a line search sees "much worse" rather than
#: inf/NaN and the gradient still points back to smaller margins. (Above the clip they are no
#: longer exact derivatives of one another; below it they are exact.)
POISSON_MAX_MARGIN = 700.0


class LossTerms(NamedTuple):
    """Per-row loss and its derivatives with respect to the margin; each an (n,) float64 array."""

    value: np.ndarray
    d1: np.ndarray
    d2: np.ndarray


class MultinomialTerms(NamedTuple):
    """Softmax cross-entropy terms for an (n, K) margin matrix.

    ``value`` (n,): ``logsumexp(M_i) - M_i[y_i]``; ``prob`` (n, K): the softmax ``P``;
    ``grad`` (n, K): ``P - onehot(y)``. The per-row Hessian in ``M_i`` is ``diag(p_i) - p_i p_i^T``
    and is never materialized here.
    """

    value: np.ndarray
    grad: np.ndarray
    prob: np.ndarray


class HuberTerms(NamedTuple):
    """Huber-with-scale terms, all (n,) arrays, as functions of margin ``m`` and scale ``sigma``.

    ``value``; ``d_m``, ``d_s``: first derivatives in ``m`` and ``sigma``; ``d_mm``, ``d_ms``,
    ``d_ss``: second derivatives.
    """

    value: np.ndarray
    d_m: np.ndarray
    d_s: np.ndarray
    d_mm: np.ndarray
    d_ms: np.ndarray
    d_ss: np.ndarray


def _as_float(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def softplus(m) -> np.ndarray:
    """``log(1 + exp(m))`` without overflow: ``= m`` for huge ``m``, ``~ exp(m)`` for very
    negative ``m`` (kept to full relative accuracy)."""
    m = _as_float(m)
    return np.maximum(m, 0.0) + np.log1p(np.exp(-np.abs(m)))


def squared_error(y, m) -> LossTerms:
    """``(y - m)^2 / 2``; d1 ``= m - y``; d2 ``= 1``."""
    y, m = _as_float(y), _as_float(m)
    r = m - y
    return LossTerms(0.5 * r * r, r, np.ones_like(r))


def logistic(y, m) -> LossTerms:
    """Binary cross-entropy with labels in [0, 1] (MLlib uses 0/1): ``log(1 + exp(m)) - y m``.

    Written as ``(1 - y) softplus(m) + y softplus(-m)`` (algebraically equal, since
    ``softplus(m) - softplus(-m) = m``) so that a well-classified row keeps its tiny positive loss
    instead of cancelling to 0. d1 ``= sigmoid(m) - y``; d2 ``= sigmoid(m) sigmoid(-m)``.
    """
    y, m = _as_float(y), _as_float(m)
    e = np.exp(-np.abs(m))  # in (0, 1]: never overflows
    log1pe = np.log1p(e)
    sp_pos = np.maximum(m, 0.0) + log1pe  # softplus(m)
    sp_neg = np.maximum(-m, 0.0) + log1pe  # softplus(-m)
    value = (1.0 - y) * sp_pos + y * sp_neg
    # The smaller of sigmoid(m), sigmoid(-m) is e / (1 + e) to full relative accuracy; taking the
    # larger as 1 - smaller costs nothing in absolute terms.
    small = e / (1.0 + e)
    prob = np.where(m >= 0.0, 1.0 - small, small)
    return LossTerms(value, prob - y, small * (1.0 - small))


def poisson(y, m) -> LossTerms:
    """Poisson deviance with log link, up to a constant: ``exp(m) - y m``.

    Adding :func:`poisson_constant` gives half the unit deviance ``y log(y / mu) - y + mu``.
    d1 ``= exp(m) - y``; d2 ``= exp(m)``; every ``exp`` is taken of ``min(m, POISSON_MAX_MARGIN)``.
    """
    y, m = _as_float(y), _as_float(m)
    mu = np.exp(np.minimum(m, POISSON_MAX_MARGIN))
    return LossTerms(mu - y * m, mu - y, mu)


def poisson_constant(y) -> np.ndarray:
    """``y log(y) - y`` with ``0 log 0 = 0``: per-row constant turning :func:`poisson` into half
    the unit deviance (so the reported deviance is ``2 * sum_i w_i (loss_i + const_i)``)."""
    y = _as_float(y)
    return xlogy(y, y) - y


def hinge(y, m) -> LossTerms:
    """MLlib LinearSVC hinge loss ``max(0, 1 - s m)`` with ``s = 2y - 1`` for labels 0/1.

    d1 is the subgradient ``-s`` where ``1 - s m > 0`` and 0 elsewhere (MLlib's choice at the
    kink); d2 is 0 (the loss is piecewise linear).
    """
    y, m = _as_float(y), _as_float(m)
    s = 2.0 * y - 1.0
    slack = 1.0 - s * m
    active = slack > 0.0
    return LossTerms(np.where(active, slack, 0.0), np.where(active, -s, 0.0), np.zeros_like(slack))


def smoothed_hinge(y, m, mu: float) -> LossTerms:
    """Softplus-smoothed hinge ``mu * log(1 + exp((1 - s m) / mu))`` with ``s = 2y - 1``: smooth,
    strictly convex in the margin, and within ``mu * log(2)`` above the hinge. Newton solves it as
    well as a logistic loss; a decreasing ``mu`` approaches the hinge optimum (LinearSVC)."""
    y, m = _as_float(y), _as_float(m)
    s = 2.0 * y - 1.0
    u = (1.0 - s * m) / mu
    p = expit(u)
    return LossTerms(mu * softplus(u), -s * p, p * (1.0 - p) / mu)


def squared_hinge(y, m) -> LossTerms:
    """``max(0, 1 - s m)^2`` with ``s = 2y - 1``; d1 ``= -2 s max(0, 1 - s m)``; generalized
    d2 ``= 2`` where ``1 - s m > 0`` and 0 elsewhere (the loss is C1, not C2, at the kink)."""
    y, m = _as_float(y), _as_float(m)
    s = 2.0 * y - 1.0
    slack = np.maximum(1.0 - s * m, 0.0)
    return LossTerms(slack * slack, -2.0 * s * slack, np.where(slack > 0.0, 2.0, 0.0))


def multinomial(y, M) -> MultinomialTerms:
    """Softmax cross-entropy for integer labels ``y`` in ``0..K-1`` and margins ``M`` (n, K).

    value ``= logsumexp(M_i) - M_i[y_i]``; gradient in ``M`` ``= P - onehot(y)``. The row max is
    subtracted before ``exp`` so no term overflows; at least one shifted entry is exactly 0, so the
    log argument is >= 1.
    """
    M = _as_float(M)
    n, K = M.shape
    labels = np.asarray(y).astype(np.intp, copy=False)
    rows = np.arange(n)
    mx = M.max(axis=1)
    Z = M - mx[:, None]
    E = np.exp(Z)
    s = E.sum(axis=1)
    # logsumexp(M) - M[y] = log(s) - Z[y]: both terms are O(1)-accurate, no large cancellation.
    value = np.log(s) - Z[rows, labels]
    P = E / s[:, None]
    G = P.copy()
    G[rows, labels] -= 1.0
    return MultinomialTerms(value, G, P)


def huber(y, m, sigma: float, epsilon: float) -> HuberTerms:
    """MLlib's robust regression loss with jointly estimated scale (Owen 2006), per row.

    With residual ``r = y - m`` and ``sigma > 0`` (Spark ``HuberAggregator`` /
    ``HuberBlockAggregator``)::

        |r| <= eps*sigma:  0.5 * (sigma + r^2 / sigma)
        otherwise:         0.5 * (sigma + 2*eps*|r| - eps^2 * sigma)

    First derivatives (inside / outside): ``d_m = -r/sigma`` / ``-eps*sign(r)``;
    ``d_s = 0.5*(1 - (r/sigma)^2)`` / ``0.5*(1 - eps^2)``. Second derivatives inside:
    ``d_mm = 1/sigma``, ``d_ms = r/sigma^2``, ``d_ss = r^2/sigma^3``; outside all 0 (the loss is
    linear in (m, sigma) there). The loss is C1 across ``|r| = eps*sigma``; the Hessian jumps
    there and the inside formulas are used on the boundary, as Spark does (``<=``).
    """
    y, m = _as_float(y), _as_float(m)
    sigma = float(sigma)
    r = y - m
    absr = np.abs(r)
    inside = absr <= epsilon * sigma
    # z only where it is used: outside rows may have |r| ~ 1e300 and z^2 would overflow.
    z = np.where(inside, r, 0.0) / sigma
    value = np.where(
        inside,
        0.5 * (sigma + sigma * z * z),
        0.5 * (sigma + 2.0 * epsilon * absr - epsilon * epsilon * sigma),
    )
    d_m = np.where(inside, -z, np.where(r >= 0.0, -epsilon, epsilon))
    d_s = np.where(inside, 0.5 * (1.0 - z * z), 0.5 * (1.0 - epsilon * epsilon))
    d_mm = np.where(inside, 1.0 / sigma, 0.0)
    d_ms = z / sigma  # already 0 outside
    d_ss = z * z / sigma
    return HuberTerms(value, d_m, d_s, d_mm, d_ms, d_ss)



# ============================================================================== the loss registry
@dataclass(frozen=True)
class LossInfo:
    """What the rest of sparkopt needs to know about a loss, declared once.

    ``labels``: the label rule, one of ``"binary"`` (0/1, both present), ``"classes"`` (class
    indices 0..K-1, K >= 2), ``"nonnegative"`` or ``"real"``. ``smooth``: differentiable
    everywhere; ``has_hessian``: its second derivative carries curvature (hinge: 0 a.e.).
    ``terms``: the pointwise ``(y, m) -> LossTerms`` (None for the structured multinomial and
    Huber losses). ``start_intercept(label_mean)``: the intercept that minimizes the loss at
    beta = 0 where it has a closed form (None: start at 0). ``scale_param``: the name of a
    jointly estimated scale that follows the coefficients (Huber's sigma), else None.
    ``public``: a user-facing loss (``smoothed_hinge`` is an internal stage of the hinge fit).
    ``start_curvature(label_mean, n_classes)``: a typical second derivative of the loss in the
    margin at the start (intercept-only model), which weighs the data against the penalty when the
    solver coordinates are chosen. ``label_units``: the coefficients carry the label's units (real
    labels), so the solver works in units of the label's standard deviation, as MLlib does.
    """

    name: str
    labels: str
    smooth: bool = True
    has_hessian: bool = True
    terms: Optional[Callable[..., LossTerms]] = None
    start_intercept: Optional[Callable[[float], Optional[float]]] = None
    scale_param: Optional[str] = None
    public: bool = True
    start_curvature: Callable[[float, int], float] = lambda mean, classes: 1.0
    label_units: bool = False

    @property
    def binary(self) -> bool:
        return self.labels == "binary"


def _logit_start(mean: float) -> Optional[float]:
    return math.log(mean / (1.0 - mean)) if 0.0 < mean < 1.0 else None


def _log_start(mean: float) -> Optional[float]:
    return math.log(mean) if mean > 0.0 else None


def _mean_start(mean: float) -> Optional[float]:
    return float(mean)


def _bernoulli_curvature(mean: float, classes: int) -> float:
    p = min(max(mean, 1e-6), 1.0 - 1e-6)
    return p * (1.0 - p)


def _softmax_curvature(mean: float, classes: int) -> float:
    return (1.0 / classes) * (1.0 - 1.0 / classes)        # uniform probabilities at the zero start


def _poisson_curvature(mean: float, classes: int) -> float:
    return max(mean, 1e-6)                                # exp(margin) = the mean count at the start


def _constant(value: float) -> Callable[[float, int], float]:
    return lambda mean, classes: value


LOSS_INFO: dict[str, LossInfo] = {info.name: info for info in (
    LossInfo("squared_error", "real", terms=squared_error, start_intercept=_mean_start, label_units=True),
    LossInfo("logistic", "binary", terms=logistic, start_intercept=_logit_start,
             start_curvature=_bernoulli_curvature),
    LossInfo("multinomial", "classes", start_curvature=_softmax_curvature),
    LossInfo("poisson", "nonnegative", terms=poisson, start_intercept=_log_start, start_curvature=_poisson_curvature),
    # inside the band the curvature is 1 / sigma, sigma ~ sd(y): 1 in units of sd(y)
    LossInfo("huber", "real", start_intercept=_mean_start, scale_param="sigma", label_units=True),
    # the smoothed stages' softplus at margin 0 and band 1: sigmoid(1) sigmoid(-1) ~ 0.2
    LossInfo("hinge", "binary", smooth=False, has_hessian=False, terms=hinge, start_curvature=_constant(0.2)),
    LossInfo("squared_hinge", "binary", terms=squared_hinge, start_curvature=_constant(2.0)),
    LossInfo("smoothed_hinge", "binary", public=False, start_curvature=_constant(0.2)),
)}

#: the user-facing loss names, in a fixed order
LOSSES = tuple(name for name, info in LOSS_INFO.items() if info.public)

#: more classes than this is refused (a d x K model of that size is not what this package fits)
MAX_CLASSES = 10_000


def loss_info(loss: str) -> LossInfo:
    """The registry entry of ``loss``; InputError naming the valid ones otherwise."""
    try:
        return LOSS_INFO[loss]
    except KeyError:
        raise InputError(f"loss must be one of {LOSSES}, got {loss!r}") from None


def check_labels(loss: str, label_min: float, label_max: float, n_non_integer: int, n_rows: int,
                 label_col: str = "label") -> int:
    """Check the label range the data show against the loss's label rule; return the number of
    classes (2 for binary losses, K for multinomial, 1 otherwise). InputError names the column."""
    info = loss_info(loss)
    lo, hi = label_min, label_max
    if info.labels == "binary":
        if n_non_integer or lo < 0 or hi > 1:
            raise InputError(
                f"label column {label_col!r} must contain only 0 and 1 for {loss} loss; found values in [{lo:g}, {hi:g}]"
                + (f" ({n_non_integer} non-integer)" if n_non_integer else ""))
        if lo == hi:
            raise InputError(f"label column {label_col!r} has a single class ({lo:g}) in {n_rows} rows: "
                             f"a {loss} model needs both 0 and 1")
        return 2
    if info.labels == "classes":
        if n_non_integer or lo < 0:
            raise InputError(f"label column {label_col!r} must hold class indices 0, 1, ..., K-1 for multinomial loss; "
                             f"found values in [{lo:g}, {hi:g}]"
                             + (f" with {n_non_integer} non-integer" if n_non_integer else ""))
        if hi > MAX_CLASSES:
            raise InputError(f"label column {label_col!r} has class index {hi:g}: more than {MAX_CLASSES} classes "
                             "is not supported")
        if lo == hi:
            raise InputError(f"label column {label_col!r} has a single class ({lo:g}): multinomial needs at least two")
        return int(hi) + 1
    if info.labels == "nonnegative" and lo < 0:
        raise InputError(f"label column {label_col!r} must be >= 0 for {loss} loss; found minimum {lo:g}")
    return 1
