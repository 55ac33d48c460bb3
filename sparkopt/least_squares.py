"""Squared error solved from sufficient statistics: one pass, then every fit on the driver.

The Objective here evaluates the pinned squared-error objective (MLlib's, sparkopt.fit) exactly
from the data's weighted co-moments (sparkopt.objectives.gram.GramStats) in O(d^2) per call and no
pass over the data, in the same solver coordinates and with the same penalty as the objective over
the blocks, so any solver runs on it unchanged: exact Newton ends in one step, proximal Newton
solves the elastic net by coordinate descent on the Gram matrix, and a whole regularization path
or a cross-validation grid costs the one pass that computed the statistics (MLlib's
``solver="normal"``, WeightedLeastSquares, up to d = 4096).
"""
from __future__ import annotations


import numpy as np

from .linear_objective import Coordinates
from .objectives.gram import GramStats, block_gram
from .objectives.penalties import ElasticNet

__all__ = ["GramObjective", "gram_statistics", "NORMAL_MAX_FEATURES"]

#: the widest problem solved from its d x d statistics (MLlib's WeightedLeastSquares limit)
NORMAL_MAX_FEATURES = 4096


def _gram_of_block(block, _payload):
    return block_gram(block)


def gram_statistics(engine) -> GramStats:
    """The data's co-moments, computed in one pass the first time an engine is asked and kept on
    it (every later fit over the same engine, a path or a grid, reuses them)."""
    cached = getattr(engine, "_gram_statistics", None)
    if cached is None:
        cached = engine.map_sum(_gram_of_block, None)
        engine._gram_statistics = cached
    return cached


class GramObjective:
    """``F(z) = loss_sum(T z) / W + penalty(z)`` for squared error, from GramStats (see the
    module docstring). Same coordinates ``T`` and penalty as the blocks' LinearModelObjective;
    ``passes`` stays 0 (the statistics' pass is counted where they were computed)."""

    smooth = True
    has_hessian = True

    def __init__(self, gram: GramStats, coordinates: Coordinates, penalty: ElasticNet, fit_intercept: bool):
        self.gram, self.coordinates, self.penalty = gram, coordinates, penalty
        self.fit_intercept = bool(fit_intercept)
        self.n_params = coordinates.n_z
        l1 = penalty.l1_weights()
        self.l1_weights = l1 if np.any(l1 > 0) else None
        self._evaluations = 0
        d = gram.n_features
        # the coefficient-space Hessian is constant: the centred Gram plus the mean's rank one
        H = np.empty((coordinates.n_params, coordinates.n_params))
        H[:d, :d] = gram.Mxx + gram.weight * np.outer(gram.xbar, gram.xbar)
        if self.fit_intercept:
            H[:d, d] = H[d, :d] = gram.weight * gram.xbar
            H[d, d] = gram.weight
        Hz = coordinates.hessian(H) / gram.weight
        Hz[np.diag_indices_from(Hz)] += penalty.smooth_hess_diag()
        self._hess_z = Hz

    @property
    def passes(self) -> float:
        return 0.0

    @property
    def evaluations(self) -> int:
        return self._evaluations

    def _loss_and_coef_grad(self, z) -> tuple[float, np.ndarray]:
        return self.coef_loss_grad(self.coordinates.to_coef(z))

    def coef_loss_grad(self, coef) -> tuple[float, np.ndarray]:
        """The weighted loss sum ``sum_i w_i (y_i - x_i.beta - c)^2 / 2`` and its gradient
        (n_params,) at coefficients ``coef`` (no penalty, not divided by the weight sum)."""
        self._evaluations += 1
        g, d = self.gram, self.gram.n_features
        coef = np.asarray(coef, dtype=float)
        beta = coef[:d]
        c = coef[d] if self.fit_intercept else 0.0
        r0 = g.ybar - g.xbar @ beta - c                 # the mean residual
        Mb = g.Mxx @ beta
        loss = 0.5 * (g.Myy - 2.0 * beta @ g.Mxy + beta @ Mb) + 0.5 * g.weight * r0 * r0
        grad = np.zeros(self.coordinates.n_params)
        grad[:d] = Mb - g.Mxy - g.weight * r0 * g.xbar
        if self.fit_intercept:
            grad[d] = -g.weight * r0
        return float(loss), grad

    def loss(self, z) -> float:
        return self.loss_grad(z)[0]

    def loss_grad(self, z):
        loss, grad = self._loss_and_coef_grad(z)
        W = self.gram.weight
        return (loss / W + self.penalty.smooth_value(z),
                self.coordinates.to_z_grad(grad) / W + self.penalty.smooth_grad(z))

    def loss_grad_hess(self, z):
        f, g = self.loss_grad(z)
        return f, g, self._hess_z.copy()

    def hessp(self, z, v):
        self._evaluations += 1
        return self._hess_z @ v

    def total(self, z) -> float:
        return self.loss(z) + self.penalty.l1_value(z)
