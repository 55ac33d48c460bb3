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
from scipy.special import expit, ndtr, ndtri, xlogy

from ..errors import InputError
# MLlib's families and, per family, its allowed links (canonical first): param rules, declared there
from ..rules import GLM_FAMILIES, GLM_FAMILY_LINKS, GLM_LINKS, check_glm_link

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
    "GLM_FAMILIES",
    "GLM_LINKS",
    "GLM_FAMILY_LINKS",
    "GLMFamily",
    "GLMLink",
    "GLMLoss",
    "glm_family",
    "glm_loss",
    "glm_loss_name",
    "power_link",
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



# ============================================================================ GLM families / links
#: MLlib clips a fitted mean into its family's range by this much (its ``epsilon``)
GLM_EPSILON = 1e-16
#: MLlib's Tweedie ``delta``: the start mean of a zero count, and the floor of y in the deviance's
#: y^(1-p) term for 1 <= p < 2
TWEEDIE_DELTA = 0.1
#: the power links MLlib names (Link.fromParams for tweedie's linkPower)
_POWER_LINK_NAMES = {0.0: "log", 1.0: "identity", -1.0: "inverse", 0.5: "sqrt"}


@dataclass(frozen=True)
class GLMLink:
    """A link ``eta = g(mu)``: ``name`` one of :data:`GLM_LINKS` or ``"power"`` with ``power``
    (``g(mu) = mu^power``; log for power 0). All methods are vectorized over (n,) arrays."""

    name: str
    power: float = 1.0

    def link(self, mu):
        mu = _as_float(mu)
        if self.name == "identity":
            return mu
        if self.name == "log":
            return np.log(mu)
        if self.name == "logit":
            return np.log(mu / (1.0 - mu))
        if self.name == "probit":
            return ndtri(mu)
        if self.name == "cloglog":
            return np.log(-np.log1p(-mu))
        if self.name == "inverse":
            return 1.0 / mu
        if self.name == "sqrt":
            return np.sqrt(mu)
        return np.power(mu, self.power)

    def unlink(self, eta):
        eta = _as_float(eta)
        if self.name == "identity":
            return eta
        if self.name == "log":
            return np.exp(np.minimum(eta, POISSON_MAX_MARGIN))
        if self.name == "logit":
            return expit(eta)
        if self.name == "probit":
            return ndtr(eta)
        if self.name == "cloglog":
            return -np.expm1(-np.exp(np.minimum(eta, POISSON_MAX_MARGIN)))
        if self.name == "inverse":
            return 1.0 / eta
        if self.name == "sqrt":
            return eta * eta
        return np.power(eta, 1.0 / self.power)

    def deriv(self, mu):
        """``g'(mu)``."""
        mu = _as_float(mu)
        if self.name == "identity":
            return np.ones_like(mu)
        if self.name == "log":
            return 1.0 / mu
        if self.name == "logit":
            return 1.0 / (mu * (1.0 - mu))
        if self.name == "probit":
            return 1.0 / _normal_pdf(ndtri(mu))
        if self.name == "cloglog":
            return 1.0 / ((mu - 1.0) * np.log1p(-mu))
        if self.name == "inverse":
            return -1.0 / (mu * mu)
        if self.name == "sqrt":
            return 0.5 / np.sqrt(mu)
        return self.power * np.power(mu, self.power - 1.0)

    def deriv2(self, mu):
        """``g''(mu)`` (the observed Hessian of a non-canonical link needs it)."""
        mu = _as_float(mu)
        if self.name == "identity":
            return np.zeros_like(mu)
        if self.name == "log":
            return -1.0 / (mu * mu)
        if self.name == "logit":
            v = mu * (1.0 - mu)
            return (2.0 * mu - 1.0) / (v * v)
        if self.name == "probit":
            q = ndtri(mu)
            pdf = _normal_pdf(q)
            return q / (pdf * pdf)
        if self.name == "cloglog":
            a = (1.0 - mu) * np.log1p(-mu)
            return -(np.log1p(-mu) + 1.0) / (a * a)
        if self.name == "inverse":
            return 2.0 / (mu * mu * mu)
        if self.name == "sqrt":
            return -0.25 / (mu * np.sqrt(mu))
        return self.power * (self.power - 1.0) * np.power(mu, self.power - 2.0)


def _normal_pdf(q):
    return np.exp(-0.5 * q * q) / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class GLMFamily:
    """An exponential-dispersion family with variance ``V(mu)``: ``name`` one of gaussian,
    binomial, poisson, gamma, or tweedie with ``variance_power`` p (``V = mu^p``). As in MLlib,
    tweedie with p = 0, 1, 2 *is* gaussian, poisson, gamma (see :func:`glm_family`)."""

    name: str
    variance_power: float = 0.0

    @property
    def canonical_link(self) -> GLMLink:
        if self.name == "tweedie":
            return power_link(1.0 - self.variance_power)
        return GLMLink(GLM_FAMILY_LINKS[self.name][0])

    def variance(self, mu):
        mu = _as_float(mu)
        if self.name == "gaussian":
            return np.ones_like(mu)
        if self.name == "binomial":
            return mu * (1.0 - mu)
        if self.name == "poisson":
            return mu
        if self.name == "gamma":
            return mu * mu
        return np.power(mu, self.variance_power)

    def variance_deriv(self, mu):
        """``V'(mu)``."""
        mu = _as_float(mu)
        if self.name == "gaussian":
            return np.zeros_like(mu)
        if self.name == "binomial":
            return 1.0 - 2.0 * mu
        if self.name == "poisson":
            return np.ones_like(mu)
        if self.name == "gamma":
            return 2.0 * mu
        p = self.variance_power
        return p * np.power(mu, p - 1.0)

    def unit_deviance(self, y, mu):
        """The textbook unit deviance ``d(y, mu)`` per row (MLlib's Family.deviance, weight 1):
        gaussian ``(y - mu)^2``; binomial ``2 [y log(y/mu) + (1-y) log((1-y)/(1-mu))]``; poisson
        ``2 [y log(y/mu) - (y - mu)]``; gamma ``-2 [log(y/mu) - (y - mu)/mu]``; tweedie
        ``2 [y (y1^(1-p) - mu^(1-p)) / (1-p) - (y^(2-p) - mu^(2-p)) / (2-p)]`` with
        ``y1 = max(y, 0.1)`` for 1 <= p < 2 (MLlib's), ``0 log 0 = 0``."""
        y, mu = _as_float(y), _as_float(mu)
        if self.name == "gaussian":
            return (y - mu) ** 2
        if self.name == "binomial":
            return 2.0 * (xlogy(y, y / mu) + xlogy(1.0 - y, (1.0 - y) / (1.0 - mu)))
        if self.name == "poisson":
            return 2.0 * (xlogy(y, y / mu) - (y - mu))
        if self.name == "gamma":
            return -2.0 * (np.log(y / mu) - (y - mu) / mu)
        p = self.variance_power
        y1 = np.maximum(y, TWEEDIE_DELTA) if 1.0 <= p < 2.0 else y
        return 2.0 * (y * _power_difference(y1, mu, 1.0 - p) - _power_difference(y, mu, 2.0 - p))

    def project(self, mu):
        """The fitted mean clipped into the family's range, as MLlib's Family.project."""
        mu = _as_float(mu)
        if self.name == "gaussian":
            return np.clip(mu, -np.finfo(float).max, np.finfo(float).max)
        if self.name == "binomial":
            return np.clip(mu, GLM_EPSILON, 1.0 - GLM_EPSILON)
        return np.where(mu < GLM_EPSILON, GLM_EPSILON, np.minimum(mu, np.finfo(float).max))

    def start_mean(self, y, w):
        """MLlib's IRLS start (Family.initialize): binomial ``(w y + 0.5) / (w + 1)``, poisson
        ``max(y, 0.1)``, tweedie 0.1 for y = 0, otherwise y itself."""
        y, w = _as_float(y), _as_float(w)
        if self.name == "binomial":
            return (w * y + 0.5) / (w + 1.0)
        if self.name == "poisson":
            return np.maximum(y, TWEEDIE_DELTA)
        if self.name == "tweedie":
            return np.where(y == 0.0, TWEEDIE_DELTA, y)
        return y


def _power_difference(a, mu, q):
    """``(a^q - mu^q) / q``, its limit ``log(a / mu)`` at q = 0 (MLlib's Tweedie.yp)."""
    if q == 0.0:
        return np.log(a / mu)
    return (np.power(a, q) - np.power(mu, q)) / q


def power_link(power: float) -> GLMLink:
    """The power link ``mu^power``, by MLlib's name where it has one (0 log, 1 identity, -1
    inverse, 0.5 sqrt)."""
    power = float(power)
    name = _POWER_LINK_NAMES.get(power)
    return GLMLink(name) if name is not None else GLMLink("power", power)


def glm_family(family: str, variance_power: float = 0.0) -> GLMFamily:
    """The family object of MLlib's params: tweedie with variancePower 0, 1, 2 is gaussian,
    poisson, gamma (MLlib's Family.fromParams)."""
    if family == "tweedie":
        named = {0.0: "gaussian", 1.0: "poisson", 2.0: "gamma"}.get(float(variance_power))
        return GLMFamily(named) if named else GLMFamily("tweedie", float(variance_power))
    if family not in GLM_FAMILIES:
        raise InputError(f"family must be one of {GLM_FAMILIES}, got {family!r}")
    return GLMFamily(family, {"gaussian": 0.0, "poisson": 1.0, "gamma": 2.0, "binomial": 0.0}[family])


@dataclass(frozen=True)
class GLMLoss:
    """Half the unit deviance of a family and link as a loss in the linear predictor ``m``.

    ``value = d(y, mu) / 2`` with ``mu = project(g^-1(m))`` (exactly half the deviance: no
    constant dropped), ``d1 = -(y - mu) / (V(mu) g'(mu))``. ``d2`` is the *expected* (Fisher)
    curvature ``1 / (V(mu) g'(mu)^2)`` by default -- what IRLS uses, and always >= 0, where the
    observed one of a non-canonical link can be negative; ``terms(..., observed=True)`` gives the
    observed ``d/dm d1 = 1/(V g'^2) + (y - mu)(V' g' + V g'') / (V^2 g'^3)``. The two agree for
    canonical links (then the second term vanishes)."""

    family: GLMFamily
    link: GLMLink

    @property
    def canonical(self) -> bool:
        return self.link == self.family.canonical_link

    def mean(self, m):
        """The fitted mean ``project(g^-1(m))``."""
        return self.family.project(self.link.unlink(m))

    def terms(self, y, m, observed: bool = False) -> LossTerms:
        y = _as_float(y)
        mu = self.mean(m)
        V = self.family.variance(mu)
        gp = self.link.deriv(mu)
        value = 0.5 * self.family.unit_deviance(y, mu)
        d1 = -(y - mu) / (V * gp)
        fisher = 1.0 / (V * gp * gp)
        if not observed or self.canonical:
            return LossTerms(value, d1, fisher)
        correction = (y - mu) * (self.family.variance_deriv(mu) * gp + V * self.link.deriv2(mu)) / (V * V * gp ** 3)
        return LossTerms(value, d1, fisher + correction)

    def working_response(self, y, m, offset=None):
        """IRLS's working label and weight factor at margins ``m`` (offset included):
        ``z = m - offset + (y - mu) g'(mu)`` and ``1 / (V(mu) g'(mu)^2)`` (MLlib's reweightFunc)."""
        y = _as_float(y)
        mu = self.mean(m)
        gp = self.link.deriv(mu)
        base = m if offset is None else m - offset
        return base + (y - mu) * gp, 1.0 / (self.family.variance(mu) * gp * gp)


def glm_loss(family: str, link: Optional[str] = None, variance_power: float = 0.0,
             link_power: Optional[float] = None) -> GLMLoss:
    """The loss of MLlib's (family, link, variancePower, linkPower): tweedie's link is the power
    ``linkPower`` (default ``1 - variancePower``), the other families' is ``link`` (default the
    canonical one), which must be one MLlib allows for the family (InputError otherwise)."""
    fam = glm_family(family, variance_power)
    if family == "tweedie":
        chosen = power_link(1.0 - float(variance_power) if link_power is None else link_power)
    elif link is None:
        chosen = GLMLink(GLM_FAMILY_LINKS[family][0])
    else:
        chosen = GLMLink(check_glm_link(family, link))
    return GLMLoss(fam, chosen)


def glm_loss_name(family: str, variance_power: float = 0.0) -> str:
    """The LOSS_INFO entry holding the label rule of a GLM family."""
    if family == "tweedie":
        return "glm_tweedie_positive" if variance_power >= 2.0 else (
            "glm_tweedie" if variance_power >= 1.0 else "glm_gaussian")
    return "glm_" + family


# ============================================================================== the loss registry
@dataclass(frozen=True)
class LossInfo:
    """What the rest of sparkopt needs to know about a loss, declared once.

    ``labels``: the label rule, one of ``"binary"`` (0/1, both present), ``"classes"`` (class
    indices 0..K-1, K >= 2), ``"nonnegative"``, ``"positive"``, ``"unit_interval"`` ([0, 1]) or
    ``"real"``. ``smooth``: differentiable
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
    # GeneralizedLinearRegression's families (sparkopt.glm fits them; their loss is a GLMLoss):
    # only the label rules live here
    LossInfo("glm_gaussian", "real", public=False),
    LossInfo("glm_binomial", "unit_interval", public=False),
    LossInfo("glm_poisson", "nonnegative", public=False),
    LossInfo("glm_gamma", "positive", public=False),
    LossInfo("glm_tweedie", "nonnegative", public=False),            # 1 <= variancePower < 2
    LossInfo("glm_tweedie_positive", "positive", public=False),      # variancePower >= 2
    # a GLMLoss (any family and link) minimized by the general solvers: fit_linear_model(loss="glm",
    # glm=...); its family's label rule is checked above by the caller
    LossInfo("glm", "real", public=False),
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
    what = loss[4:].split("_")[0] if loss.startswith("glm_") else None
    where = f"family={what!r}" if what else f"{loss} loss"
    if info.labels == "nonnegative" and lo < 0:
        raise InputError(f"label column {label_col!r} must be >= 0 for {where}; found minimum {lo:g}")
    if info.labels == "positive" and lo <= 0:
        raise InputError(f"label column {label_col!r} must be > 0 for {where}; found minimum {lo:g}")
    if info.labels == "unit_interval" and (lo < 0 or hi > 1):
        raise InputError(f"label column {label_col!r} must lie in [0, 1] for {where}; found values in "
                         f"[{lo:g}, {hi:g}]")
    return 1
