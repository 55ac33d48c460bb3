"""Local SGD on one block: the block-side half of ``solver="local-sgd"``.

numpy only; never imports pyspark. One communication round is one ``engine.map_sum`` with a
:class:`LocalSGDBlockFn`: every block (a shard) starts from the round's iterate ``z`` and takes H
(proximal) mini-batch SGD steps on its own rows, in solver coordinates, with the same maths as
every other solver (the block objective's ``loss_grad`` in coefficient space, mapped by the
objective's coordinates, plus the penalty's smooth gradient; L1 by soft-thresholding). The driver
(sparkopt.linear_objective.LinearModelObjective.local_sgd_round and sparkopt.solvers.local_sgd)
combines the shards.

Local step h = 1..H of shard b (rows B_h a sample of the shard, S_bh = sum of their weights):

    g_h = to_z_grad(sum_{i in B_h} w_i grad loss_i(to_coef(z_{h-1}))) / S_bh + grad P_smooth(z_{h-1})
    u_h = z_{h-1} - t_h g_h
    z_h = soft_threshold(u_h, t_h * l1)      for h < H;   the shard returns u_H (no prox)

The last step's L1 prox is left to the driver, which applies it once to the combined point: with
H = 1 a round is then exactly proximal mini-batch SGD (MiniBatchSGD), and the combined model is
sparse (an average of thresholded shard models would not be). A step whose sample is empty
(S_bh = 0) moves by the penalty gradient only and adds nothing to the shard's weight.

Sampling: shard (p, j) draws its H samples one after another from ``sample_rng(seed, p, j)``,
each as ``Block.sample`` does (Bernoulli(fraction) per row; fraction >= 1: the whole shard, no
draw). Its first sample is therefore the row set the engines' ``map_sum(..., fraction, seed)``
would draw for that block, which is what lines local SGD with H = 1 up with MiniBatchSGD.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from ..blocks import Block, sample_rng
from .penalties import soft_threshold

__all__ = ["LocalSGDBlockFn", "local_steps"]

# data_grad(z, h) -> (loss sum, gradient sum in z coordinates (n,), weight sum) of step h's sample
DataGrad = Callable[[np.ndarray, int], tuple[float, np.ndarray, float]]


def local_steps(z0: np.ndarray, step_sizes: np.ndarray, data_grad: DataGrad, penalty,
                l1: Optional[np.ndarray]) -> tuple[np.ndarray, float, float, float]:
    """Run the H steps above from z0 (n,) with step sizes t (H,).

    Returns (u_H - z0 (n,), S = sum_h S_bh, loss sum of step 1's sample at z0, S_b1): the driver
    estimates F(z0) from step 1's sample, the iterate the round started from, as MiniBatchSGD does.
    """
    z = np.array(z0, dtype=float, copy=True)
    weight, first_loss, first_weight = 0.0, 0.0, 0.0
    last = len(step_sizes) - 1
    for h, t in enumerate(step_sizes):
        f, g, w = data_grad(z, h)
        grad = penalty.smooth_grad(z)
        if w > 0:
            grad = g / w + grad
        if h == 0:
            first_loss, first_weight = f, w
        z = z - t * grad
        if l1 is not None and h < last:
            z = soft_threshold(z, t * l1)
        weight += w
    return z - z0, weight, first_loss, first_weight


class LocalSGDBlockFn:
    """``fn(block, payload, (p, j))`` for ``engine.map_sum``: one shard's part of a round.

    payload = (z (n,) the round's iterate, step sizes (H,), fraction in (0, 1], round seed).
    Returns (S_b * (u_H - z) (n,), S_b, loss sum of step 1's sample, S_b1) with S_b the weight of
    all rows the shard's H steps used, so the engine's sum over blocks is directly the numerator
    and denominator of the weighted mean of the shard deltas (see LinearModelObjective).

    `coordinates` needs to_coef / to_z_grad (sparkopt.linear_objective.Coordinates), `penalty`
    smooth_grad (ElasticNet). A step that leaves the loss's domain (Huber's scale sigma <= 0, see
    BlockObjective.feasible) makes the shard's result NaN, and the driver then reports divergence.
    """

    wants_index = True

    def __init__(self, block_objective, coordinates, penalty, l1: Optional[np.ndarray] = None):
        self.block_objective = block_objective
        self.coordinates = coordinates
        self.penalty = penalty
        self.l1 = l1

    def __call__(self, block: Block, payload: Any, index: tuple[int, int]):
        z0, step_sizes, fraction, seed = payload
        rng = sample_rng(seed, index[0], index[1])
        coords, objective = self.coordinates, self.block_objective

        def data_grad(z, h):
            rows = block if fraction >= 1.0 else block.sample(fraction, rng)
            w = float(rows.w.sum())
            if w <= 0:
                return 0.0, None, 0.0
            coef = coords.to_coef(z)
            if not objective.feasible(coef):
                return np.nan, np.full(len(z), np.nan), w
            f, g = objective.loss_grad(coef, rows)
            return float(f), coords.to_z_grad(g), w

        delta, weight, f1, w1 = local_steps(np.asarray(z0, dtype=float), step_sizes, data_grad, self.penalty, self.l1)
        return weight * delta, weight, f1, w1
