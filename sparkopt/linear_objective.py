"""The driver-side Objective of a linear model over an engine's blocks.

Joins the three parts without letting them know of each other: a block objective (per-block
weighted sums), an engine (how those sums are computed and added over the data) and a penalty.

F(z) = (1 / sum_i w_i) * sum_blocks loss_sum(coef(z), block) + penalty(z)

Solvers work in coordinates z (see :class:`Coordinates`), coef = T z: features whose standard
deviation is 0 are inactive (coefficient 0, as MLlib); the others are scaled to comparable
curvature and, with an intercept, centred virtually, whatever the penalty's scale; the penalty is
expressed in z with per-coordinate weights (sparkopt.fit.build_objective chooses the map).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np

from .engine.compression import Exchange
from .objectives import make_block_objective
from .objectives.async_sgd import AsyncSGDWorker
from .objectives.linear import DENSE_COLUMN_SHARE
from .objectives.local_sgd import LocalSGDBlockFn, local_steps
from .objectives.penalties import ElasticNet
from .solvers.checkpoint import approx_scalar, array_digest

logger = logging.getLogger("sparkopt")


@dataclass(frozen=True)
class Coordinates:
    """The linear map ``coef = T z`` between solver coordinates z (n_z,) and model coefficients
    coef (n_params,), in the block objective's layout (K outputs of ``[beta (d), c]``, then a
    jointly estimated scale such as Huber's sigma).

    z holds, per output k, the active features' coordinates and (with an intercept) one intercept
    coordinate, then the scale's coordinate::

        beta_k[active] = z_k * inv_scale                      (0 on inactive features)
        c_k            = value_scale * z_c,k - center . beta_k[active]
        sigma          = value_scale * z_sigma

    With ``center`` the features' means, the margin is ``sum_j z_kj (x_j - center_j) inv_scale_j
    + value_scale z_c,k``: the intercept coordinate is the mean margin, orthogonal to the centred
    features, so uncentred features (longitude ~ -119) no longer couple with the intercept (the
    centring is virtual: blocks are never copied or densified, they just see ``coef``).
    """

    n_params: int
    n_features: int
    n_outputs: int
    fit_intercept: bool
    active: np.ndarray                  # (n_a,) int, active feature indices in 0..d-1
    inv_scale: np.ndarray               # (n_a,) beta_j = z_j * inv_scale_j
    center: Optional[np.ndarray] = None  # (n_a,) feature means for the virtual centring
    value_scale: float = 1.0            # units of the intercept and the scale coordinate
    scale_index: Optional[int] = None   # index of sigma in coef, if any

    @classmethod
    def identity(cls, n_params: int) -> "Coordinates":
        """z = coef, for a problem of n_params coefficients without intercept (tests, tools)."""
        return cls(n_params, n_params, 1, False, np.arange(n_params), np.ones(n_params))

    # -- layout
    @property
    def _q(self) -> int:                # coefficients per output
        return self.n_features + int(self.fit_intercept)

    @property
    def _qz(self) -> int:               # coordinates per output
        return len(self.active) + int(self.fit_intercept)

    @property
    def n_z(self) -> int:
        return self.n_outputs * self._qz + int(self.scale_index is not None)

    def _shift(self) -> np.ndarray:
        return np.zeros(len(self.active)) if self.center is None else self.center

    # -- the map and its transpose
    def to_coef(self, z: np.ndarray) -> np.ndarray:
        """coef = T z, for z (n_z,) or columns (n_z, m)."""
        z = np.asarray(z, dtype=float)
        cols = z.shape[1:]
        out = np.zeros((self.n_params,) + cols)
        na, K = len(self.active), self.n_outputs
        Z = z[: K * self._qz].reshape((K, self._qz) + cols)
        C = out[: K * self._q].reshape((K, self._q) + cols)
        scale = self.inv_scale.reshape((na,) + (1,) * len(cols))
        beta = Z[:, :na] * scale
        C[:, self.active] = beta
        if self.fit_intercept:
            C[:, self.n_features] = self.value_scale * Z[:, na] - np.tensordot(beta, self._shift(), axes=([1], [0]))
        if self.scale_index is not None:
            out[self.scale_index] = self.value_scale * z[-1]
        return out

    def to_z_grad(self, grad_coef: np.ndarray) -> np.ndarray:
        """T^T g, for g (n_params,) or columns (n_params, m): a coefficient gradient in z."""
        g = np.asarray(grad_coef, dtype=float)
        cols = g.shape[1:]
        na, K = len(self.active), self.n_outputs
        out = np.empty((self.n_z,) + cols)
        G = g[: K * self._q].reshape((K, self._q) + cols)
        Z = out[: K * self._qz].reshape((K, self._qz) + cols)
        scale = self.inv_scale.reshape((na,) + (1,) * len(cols))
        gb = G[:, self.active]
        if self.fit_intercept:
            gc = G[:, self.n_features]
            shift = self._shift().reshape((na,) + (1,) * len(cols))
            Z[:, :na] = (gb - shift[None] * gc[:, None]) * scale
            Z[:, na] = self.value_scale * gc
        else:
            Z[:, :na] = gb * scale
        if self.scale_index is not None:
            out[-1] = self.value_scale * g[self.scale_index]
        return out

    def from_coef(self, coef: np.ndarray) -> np.ndarray:
        """z with T z = coef (coefficients on inactive features are taken as 0)."""
        coef = np.asarray(coef, dtype=float)
        na, K = len(self.active), self.n_outputs
        z = np.empty(self.n_z)
        C = coef[: K * self._q].reshape(K, self._q)
        Z = z[: K * self._qz].reshape(K, self._qz)
        beta = C[:, self.active]
        Z[:, :na] = beta / self.inv_scale
        if self.fit_intercept:
            Z[:, na] = (C[:, self.n_features] + beta @ self._shift()) / self.value_scale
        if self.scale_index is not None:
            z[-1] = coef[self.scale_index] / self.value_scale
        return z

    def expand_direction(self, v: np.ndarray) -> np.ndarray:
        """A z-direction (n_z,) or (n_z, m) as a coefficient direction (T is linear)."""
        return self.to_coef(v)

    def hessian(self, H: np.ndarray) -> np.ndarray:
        """T^T H T for a coefficient Hessian H (n_params, n_params), in O(n_params * n_z)."""
        HT = self.to_z_grad(H.T).T          # H T: rows of H mapped; H is symmetric
        return self.to_z_grad(HT)

    def hessian_diagonal(self, A: np.ndarray, B: np.ndarray, C: np.ndarray) -> np.ndarray:
        """diag(T^T H T) (n_z,) from a Hessian whose output k has row curvatures h_k:
        A = (X^2)^T h (d, K), B = X^T h (d, K), C = sum h (K,). A centred coordinate sees
        ``inv_scale^2 (A - 2 center B + center^2 C)``; an intercept ``value_scale^2 C``."""
        na, K = len(self.active), self.n_outputs
        out = np.zeros(self.n_z)
        Z = out[: K * self._qz].reshape(K, self._qz)
        a, b = A[self.active].T, B[self.active].T             # (K, n_a)
        m = self._shift()[None]
        Z[:, :na] = self.inv_scale[None] ** 2 * (a - 2.0 * m * b + m * m * C[:, None])
        if self.fit_intercept:
            Z[:, na] = self.value_scale ** 2 * C
        return out

    def inactive(self) -> np.ndarray:
        """Coefficient indices fixed at 0 (features with zero variance)."""
        mask = np.ones(self.n_params, dtype=bool)
        K = self.n_outputs
        view = mask[: K * self._q].reshape(K, self._q)
        view[:, self.active] = False
        if self.fit_intercept:
            view[:, self.n_features] = False
        if self.scale_index is not None:
            mask[self.scale_index] = False
        return np.flatnonzero(mask)

    def digest(self) -> dict:
        """What identifies the map in a checkpoint fingerprint (float32 digests: see array_digest)."""
        return {"inv_scale": array_digest(self.inv_scale),
                "center": None if self.center is None else array_digest(self.center),
                "value_scale": approx_scalar(self.value_scale)}


def _loss(obj, block, coef):
    return (obj.loss_sum(coef, block),)


def _loss_grad(obj, block, coef):
    return obj.loss_grad(coef, block)


def _loss_grad_hess(obj, block, coef):
    f, g = obj.loss_grad(coef, block)
    return f, g, obj.hess(coef, block)


def _hessp(obj, block, payload):
    coef, V = payload
    return (obj.hessp(coef, block, V),)


def _stochastic(obj, block, coef):
    return obj.loss_grad_weight(coef, block)


def _loss_grad_moments(obj, block, coef):
    return obj.loss_grad_moments(coef, block)


def _hessp_weight(obj, block, payload):
    coef, V = payload
    return obj.hessp(coef, block, V), float(block.w.sum())


#: a curvature estimate uses a sample of at least this many rows (and 20 per parameter)
CURVATURE_SAMPLE_ROWS = 5000
#: subspace iterations (with CURVATURE_VECTORS vectors) of a curvature estimate
CURVATURE_ITERATIONS = 4
CURVATURE_VECTORS = 3


class LinearModelObjective:
    """The Objective over an engine (LocalEngine, TreeEngine, ResidentEngine) for a block objective,
    with every capability a solver may ask for (sparkopt.solvers.objective): sampled passes, local
    SGD rounds, parameter-server workers, pass costs, a fingerprint and traffic counters.

    `coordinates` maps solver coordinates to coefficients; `penalty` is an ElasticNet over the
    solver coordinates (n_active,). A coefficient vector outside the loss's domain (the Huber
    scale sigma <= 0, see BlockObjective.feasible) is rejected without a pass: F is then +inf.
    """

    def __init__(self, engine, block_objective, penalty: ElasticNet, coordinates: Optional[Coordinates] = None):
        self.engine = engine
        # whether loss and loss + gradient passes may travel compressed when the engine's channel
        # compresses (sparkopt.engine.compression): only for a solver that tolerates it, which the
        # caller says with compress_passes()
        self.compressed = False
        self.block_objective = block_objective
        self.penalty = penalty
        self.coordinates = coordinates or Coordinates.identity(block_objective.n_params)
        self.n_params = self.coordinates.n_z
        self.smooth = bool(block_objective.smooth)
        self.has_hessian = bool(block_objective.has_hessian)
        l1 = penalty.l1_weights()
        self.l1_weights = l1 if np.any(l1 > 0) else None
        self.weight_sum = float(engine.weight_sum)
        # local SGD rounds touch H * fraction of the data in one engine call, which the engine
        # counts as one pass: the difference is kept here (see local_sgd_round)
        self._extra_passes = 0.0

    @property
    def passes(self) -> float:
        return self.engine.passes + self._extra_passes

    @property
    def evaluations(self) -> int:
        return self.engine.evaluations

    def pass_costs(self) -> dict:
        """What a pass of each kind costs in loss + gradient passes (the ``auto`` solver choice).

        A row with q stored entries and K outputs costs ~4 q K flops in a gradient pass (X b and
        X^T r, matrix-vector speed). A Hessian pass adds, for dense blocks, the symmetric rank-k
        update of ~(K q)^2 / 2 flops per row at matrix-matrix speed; for CSR blocks, the sparse
        product over the q_s entries a row stores outside its nearly full columns (~q_s^2 per
        row, per pair of classes) plus the n_d nearly full columns' dense update (~n_d^2 per row
        at matrix-matrix speed): see sparkopt.objectives.linear.DENSE_COLUMN_SHARE. Calibrated
        on single-process passes against the row-sliced gradient (``PYTHONPATH=.:jobs python -m
        bench.block_passes``, one and two BLAS threads): dense 1e5 x 100 5.1x a gradient pass,
        letter (26 classes x 17) 12-16x; CSR a9a (q 13.9, n_d 6) 7.6-7.9x, w8a (q 11.7, n_d 0)
        14.3x, kddcup one-hot (q 12.5, n_d 11) 4.4x. A Hessian-vector product costs 1.2-1.3
        gradient passes (CSR, multinomial), 1.4-1.6 (dense). The
        engine's fixed cost per pass (a Spark job: ~50 ms for the tree engine; a round trip:
        ~0.2 ms for the resident one) is expressed in the same unit."""
        stats = self.engine.stats
        K = int(self.block_objective.n_classes) if self.block_objective.loss == "multinomial" else 1
        n = max(stats.n_rows, 1)
        fi = int(self.block_objective.fit_intercept)
        if stats.is_sparse:
            counts = np.asarray(stats.feature_nonzero, dtype=float)
            full = counts >= DENSE_COLUMN_SHARE * n
            q = max(stats.nnz / n, 1.0) + fi
            q_sparse = float(counts[~full].sum()) / n
            n_dense = int(full.sum()) + fi
            hessian = 1.0 + (K + 1) / 2.0 * (1.1 * q_sparse**2 + 0.25 * n_dense**2) / q
        else:
            q = float(stats.n_features) + fi
            hessian = 1.0 + K * q / (24.0 if K == 1 else 36.0)
        gradient_seconds = 4.0 * q * K * n / 1e9
        overhead = float(getattr(self.engine, "pass_overhead", 0.0)) / gradient_seconds
        hessp = 1.3 if K > 1 else (1.15 if stats.is_sparse else 1.5)
        return {"gradient": 1.0, "hessian": hessian, "hessp": hessp, "overhead": overhead}

    @property
    def bytes_sent(self) -> int:
        return self.engine.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self.engine.bytes_received

    def _valid(self, coef) -> bool:
        return self.block_objective.feasible(coef)

    @property
    def gradient_rows(self) -> int:
        """The rows of the coefficient vector seen as a matrix (multinomial: one per class)."""
        bo = self.block_objective
        return int(bo.n_classes) if bo.loss == "multinomial" else 1

    @property
    def inexact(self) -> bool:
        """Whether loss and gradient values may trail the exact ones now (InexactObjective)."""
        return self.compressed and not self.engine.compression.lossless

    def make_exact(self, reason: str) -> None:
        """Every later pass travels exactly (InexactObjective; the reason is logged)."""
        if self.compressed:
            logger.info("sparkopt: exact passes from here on: %s", reason)
        self.compressed = False

    def refresh(self, reason: str) -> None:
        """The next pass sends exact values, later ones compress again (InexactObjective)."""
        if self.compressed:
            self.engine.refresh_exchange(reason)

    def compress_passes(self) -> None:
        """Let loss and loss + gradient passes travel compressed (error feedback: the values
        returned trail the exact ones by a fraction of their last change) when the engine
        compresses; before it, and for every other pass, values are exact."""
        self.compressed = True

    def _pass_fn(self, fn, sums: tuple):
        """``fn`` bound to the block objective, marked as compressible (model out, the ``sums``
        entries back) unless this objective's passes must be exact."""
        bound = partial(fn, self.block_objective)
        if self.compressed:
            bound.exchange = Exchange(model=True, sums=sums, rows=self.gradient_rows)
        return bound

    def loss(self, z):
        coef = self.coordinates.to_coef(z)
        if not self._valid(coef):
            return np.inf
        (f,) = self.engine.map_sum(self._pass_fn(_loss, ()), coef)
        return f / self.weight_sum + self.penalty.smooth_value(z)

    def loss_grad(self, z):
        coef = self.coordinates.to_coef(z)
        if not self._valid(coef):
            return np.inf, np.full(self.n_params, np.nan)
        f, g = self.engine.map_sum(self._pass_fn(_loss_grad, (1,)), coef)
        return (f / self.weight_sum + self.penalty.smooth_value(z),
                self.coordinates.to_z_grad(g) / self.weight_sum + self.penalty.smooth_grad(z))

    def loss_grad_hess(self, z):
        coef = self.coordinates.to_coef(z)
        if not self._valid(coef):
            nan = np.full(self.n_params, np.nan)
            return np.inf, nan, np.full((self.n_params, self.n_params), np.nan)
        f, g, H = self.engine.map_sum(partial(_loss_grad_hess, self.block_objective), coef)
        c = self.coordinates
        Hz = c.hessian(H) / self.weight_sum
        Hz[np.diag_indices_from(Hz)] += self.penalty.smooth_hess_diag()
        return (f / self.weight_sum + self.penalty.smooth_value(z),
                c.to_z_grad(g) / self.weight_sum + self.penalty.smooth_grad(z), Hz)

    def loss_grad_diag(self, z):
        """``(F's smooth part, its gradient, the diagonal of its Hessian)`` at z in one pass (the
        preconditioner of Newton-CG). Losses whose block objective has no curvature moments
        (Huber's joint scale) raise AttributeError: the solver then runs unpreconditioned."""
        coef = self.coordinates.to_coef(z)
        if not self._valid(coef):
            nan = np.full(self.n_params, np.nan)
            return np.inf, nan, nan
        f, g, A, B, C = self.engine.map_sum(partial(_loss_grad_moments, self.block_objective), coef)
        c = self.coordinates
        diag = c.hessian_diagonal(A, B, C) / self.weight_sum + self.penalty.smooth_hess_diag()
        return (f / self.weight_sum + self.penalty.smooth_value(z),
                c.to_z_grad(g) / self.weight_sum + self.penalty.smooth_grad(z), diag)

    @property
    def has_curvature_moments(self) -> bool:
        return callable(getattr(self.block_objective, "loss_grad_moments", None))

    def hessp(self, z, v):
        coef = self.coordinates.to_coef(z)
        c = self.coordinates
        (Hv,) = self.engine.map_sum(partial(_hessp, self.block_objective), (coef, c.expand_direction(v)))
        Hv = c.to_z_grad(Hv) / self.weight_sum
        return Hv + self.penalty.smooth_hessp(z, v)

    def curvature_bound(self, z, seed: int) -> float:
        """Largest eigenvalue of the smooth part's Hessian at z (the SGD family's safe step is its
        inverse): subspace iteration with CURVATURE_VECTORS vectors, CURVATURE_ITERATIONS
        Hessian-vector products (data and L2 penalty) on one seeded Bernoulli sample of
        ~max(5000, 20 n_z) rows (a fraction of a pass), then the Rayleigh quotient.
        A loss without curvature (hinge) is measured with its smoothed version (band 1)."""
        bo = self.block_objective
        if not bo.has_hessian:
            bo = make_block_objective("smoothed_hinge", bo.n_features, bo.fit_intercept, smoothing=1.0)
        n_rows = max(int(self.engine.stats.n_rows), 1)
        fraction = min(1.0, max(CURVATURE_SAMPLE_ROWS, 20 * self.n_params) / n_rows)
        rng = np.random.default_rng(seed)
        V, _ = np.linalg.qr(rng.standard_normal((self.n_params, min(CURVATURE_VECTORS, self.n_params))))
        coef = self.coordinates.to_coef(z)
        rayleigh = 0.0
        for _ in range(CURVATURE_ITERATIONS):
            HV, weight = self.engine.map_sum(partial(_hessp_weight, bo), (coef, self.coordinates.to_coef(V)),
                                             fraction=None if fraction >= 1.0 else fraction, seed=seed)
            if not weight > 0:
                break
            W = self.coordinates.to_z_grad(HV) / weight + self.penalty.smooth_hessp(z, V)
            rayleigh = float(np.max(np.linalg.eigvalsh(0.5 * (V.T @ W + W.T @ V)), initial=0.0))
            V, _ = np.linalg.qr(W)
        return rayleigh

    def stochastic_loss_grad(self, z, fraction, seed):
        """Mean loss and gradient over a Bernoulli(fraction) sample of every partition."""
        if fraction >= 1.0:
            return self.loss_grad(z)
        coef = self.coordinates.to_coef(z)
        if not self._valid(coef):
            return np.inf, np.full(self.n_params, np.nan)
        out = self.engine.map_sum(partial(_stochastic, self.block_objective), coef, fraction=fraction, seed=seed)
        f, g, wsum = out
        if wsum <= 0:
            return self.penalty.smooth_value(z), self.penalty.smooth_grad(z)
        return (f / wsum + self.penalty.smooth_value(z),
                self.coordinates.to_z_grad(g) / wsum + self.penalty.smooth_grad(z))

    def local_sgd_round(self, z, step_sizes, fraction, seed):
        """One communication round of local SGD: one ``engine.map_sum`` in which every block (a
        shard) runs len(step_sizes) = H local proximal SGD steps from z (n,) on Bernoulli(fraction)
        samples of its own rows (sparkopt.objectives.local_sgd has the update rule and seeding).

        Returns (delta (n,), f_estimate, weight): delta = sum_b S_b (u_b - z) / sum_b S_b, the
        shards' pre-prox endpoints u_b averaged with weights S_b = the weight of the rows shard b
        used (fraction 1: H times its weight sum, so shards of unequal size count in proportion
        to their data, and H = 1 is the full-gradient step; with sampling, H = 1 is exactly
        MiniBatchSGD's step on the union of the samples); f_estimate = F's smooth part at z
        estimated on the union of the step-1 samples; weight = sum_b S_b. When no shard sampled
        a row, delta is the penalty-only path. Counts H * min(fraction, 1) passes.
        """
        step_sizes = np.asarray(step_sizes, dtype=float).ravel()
        z = np.asarray(z, dtype=float)
        fraction = float(min(fraction, 1.0))
        fn = LocalSGDBlockFn(self.block_objective, self.coordinates, self.penalty, self.l1_weights)
        passes_before = self.engine.passes
        delta_sum, weight, f1, w1 = self.engine.map_sum(fn, (z, step_sizes, fraction, int(seed)))
        # the data the shards touched, not the one engine call
        self._extra_passes += len(step_sizes) * fraction - (self.engine.passes - passes_before)
        if weight > 0:
            delta = np.asarray(delta_sum, dtype=float) / weight
        else:
            delta = local_steps(z, step_sizes, lambda x, h: (0.0, None, 0.0), self.penalty, self.l1_weights)[0]
        f = (f1 / w1 if w1 > 0 else 0.0) + self.penalty.smooth_value(z)
        return delta, float(f), float(weight)

    def fingerprint(self) -> dict:
        """What identifies this problem for a checkpoint (see solvers/checkpoint.py): the loss and
        its settings, the layout, the penalty and the data's shape. Data-derived floats are
        rounded (10 digits / float32 digests) so a repartitioned rerun of the same data matches."""
        bo, pen, stats = self.block_objective, self.penalty, self.engine.stats
        return {
            "loss": bo.loss, "n_features": int(bo.n_features),
            "fit_intercept": bool(bo.fit_intercept), "n_classes": int(bo.n_classes),
            "epsilon": float(bo.epsilon), "smoothing": float(getattr(bo, "smoothing", 0.0)),
            "n_coef": int(bo.n_params), "n_active": int(self.n_params),
            "coordinates": self.coordinates.digest(),
            "reg_param": float(pen.reg_param), "elastic_net_param": float(pen.elastic_net_param),
            "penalty_scale": array_digest(pen.scale),
            "data": {"n_rows": int(stats.n_rows), "weight_sum": approx_scalar(self.weight_sum),
                     "label_mean": approx_scalar(stats.label_mean)},
        }

    def penalty_value(self, z) -> float:
        """The smooth (L2) part of the penalty at z."""
        return self.penalty.smooth_value(z)

    def penalty_grad(self, z) -> np.ndarray:
        return self.penalty.smooth_grad(z)

    def block_functions(self) -> list:
        """Every block function (and worker program) this objective may ask its engine to run, so
        an engine that ships code to its workers once (the resident engine) can ship them all."""
        bo = self.block_objective
        # the compressed passes and their exact twins (a run may switch to exact values: make_exact)
        fns = [self._pass_fn(_loss, ()), self._pass_fn(_loss_grad, (1,))] if self.compressed else []
        fns += [partial(f, bo) for f in (_loss, _loss_grad, _loss_grad_hess, _loss_grad_moments, _hessp,
                                         _hessp_weight, _stochastic)]
        return fns + [LocalSGDBlockFn(bo, self.coordinates, self.penalty, self.l1_weights), AsyncSGDWorker(bo)]

    def run_parameter_server(self, server, *, fraction: float, seed: int, delays: dict) -> list:
        """Run an :class:`~sparkopt.objectives.async_sgd.AsyncSGDWorker` on every worker of the
        engine, served by ``server`` (which works in solver coordinates; the workers see
        coefficients). Returns the workers' summaries."""
        config = {"fraction": fraction, "seed": seed, "delays": dict(delays)}
        return self.engine.run_workers(AsyncSGDWorker(self.block_objective), config,
                                       _CoefficientServer(server, self.coordinates))

    def total(self, z) -> float:
        """F(z) including the L1 term (one pass)."""
        return self.loss(z) + self.penalty.l1_value(z)


class _CoefficientServer:
    """Translates between a parameter server in solver coordinates and workers in coefficients."""

    def __init__(self, server, coordinates: Coordinates) -> None:
        self.server, self.coordinates = server, coordinates

    def start(self, workers: list) -> None:
        self.server.start(workers)

    def handle(self, worker: int, message: tuple) -> list:
        if message[0] == "push":
            _, clock, version, f_sum, g_sum, w_sum = message
            message = ("push", clock, version, f_sum, self.coordinates.to_z_grad(np.asarray(g_sum)), w_sum)
        replies = []
        for target, reply in self.server.handle(worker, message):
            if reply[0] == "model":
                _, z, version, clock = reply
                reply = ("model", self.coordinates.to_coef(z), version, clock)
            replies.append((target, reply))
        return replies

