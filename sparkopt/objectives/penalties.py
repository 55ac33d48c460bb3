"""Elastic-net penalty on the full parameter vector, applied once on the driver.

numpy only; never imports pyspark. Never evaluated per partition: the data term is a weighted
*sum* over partitions, the penalty is added after dividing that sum by ``sum_i w_i``.

    P(x) = lam * ( alpha * sum_j s_j |x_j|  +  (1 - alpha)/2 * sum_j (s_j x_j)^2 )

with ``lam = reg_param`` (MLlib ``regParam``), ``alpha = elastic_net_param`` (``elasticNetParam``)
and ``s`` a nonnegative per-coordinate scale, zero on unpenalized coordinates (intercepts, Huber
sigma). ``s_j = 1`` on coefficients gives the plain penalty; ``s_j = std_j`` penalizes the
standardized-scale coefficients ``std_j x_j`` as MLlib does with ``standardization=True``.

The smooth part (L2) and the L1 part are exposed separately because solvers treat them
differently: the L2 term goes into gradients and Hessians, the L1 term into OWL-QN or proximal
steps through :meth:`ElasticNet.l1_weights` and :meth:`ElasticNet.prox_l1`.
"""
from __future__ import annotations

import numpy as np

from ..rules import check_param

__all__ = ["ElasticNet", "soft_threshold", "weighted_l1"]


def soft_threshold(v, thresholds) -> np.ndarray:
    """``sign(v) * max(|v| - t, 0)`` coordinatewise: the proximal map of ``sum_j t_j |v_j|``
    (``thresholds`` scalar or shaped like v, >= 0). Every L1 step in sparkopt goes through here."""
    v = np.asarray(v, dtype=np.float64)
    return np.sign(v) * np.maximum(np.abs(v) - thresholds, 0.0)


def weighted_l1(weights, x) -> float:
    """``sum_j weights_j |x_j|`` (0.0 when ``weights`` is None)."""
    if weights is None:
        return 0.0
    return float(np.dot(weights, np.abs(x)))


class ElasticNet:
    """``lam * (alpha * sum_j s_j|x_j| + (1-alpha)/2 * sum_j (s_j x_j)^2)`` on x of shape (p,).

    Parameters
    ----------
    reg_param : float
        ``lam >= 0`` (ValueError naming ``regParam`` otherwise).
    elastic_net_param : float
        ``alpha`` in [0, 1] (ValueError naming ``elasticNetParam`` otherwise); 0 is ridge, 1 lasso.
    scale : array (p,)
        Nonnegative finite per-coordinate multipliers ``s``; 0 where a coordinate is unpenalized.
    """

    def __init__(self, reg_param: float, elastic_net_param: float, scale, l1_factor: float = 1.0):
        lam = float(check_param("regParam", reg_param))
        alpha = float(check_param("elasticNetParam", elastic_net_param))
        s = np.array(scale, dtype=np.float64)  # a private copy: callers may reuse their array
        if s.ndim != 1:
            raise ValueError(f"scale must be a 1-D array; got shape {s.shape}")
        if not np.all(np.isfinite(s) & (s >= 0.0)):
            raise ValueError("scale must be finite and nonnegative")
        s.setflags(write=False)
        self.reg_param = lam
        self.elastic_net_param = alpha
        self.scale = s
        self.n_params = s.shape[0]
        # Per-coordinate coefficients of the two parts, precomputed once.
        # l1_factor rescales the L1 part alone: MLlib's squared error divides only the L2 part
        # by sd(y) (see sparkopt.fit)
        if not (np.isfinite(l1_factor) and l1_factor > 0):
            raise ValueError(f"l1_factor must be finite and > 0; got {l1_factor!r}")
        self._l1 = lam * alpha * float(l1_factor) * s
        self._l2 = lam * (1.0 - alpha) * s * s  # smooth part = 0.5 * sum_j _l2_j x_j^2
        self._l1.setflags(write=False)
        self._l2.setflags(write=False)

    def __repr__(self) -> str:
        return (
            f"ElasticNet(reg_param={self.reg_param!r}, "
            f"elastic_net_param={self.elastic_net_param!r}, n_params={self.n_params})"
        )

    def _x(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.n_params,):
            raise ValueError(f"x must have shape ({self.n_params},); got {x.shape}")
        return x

    @property
    def is_zero(self) -> bool:
        """True when the penalty vanishes identically (lam = 0 or all scales 0)."""
        return not (np.any(self._l1) or np.any(self._l2))

    @property
    def has_l1(self) -> bool:
        """True when some coordinate carries a nonzero L1 weight (a non-smooth penalty)."""
        return bool(np.any(self._l1))

    # --- smooth (L2) part --------------------------------------------------------------------

    def smooth_value(self, x) -> float:
        """``lam (1-alpha)/2 * sum_j (s_j x_j)^2``."""
        x = self._x(x)
        return 0.5 * float(np.dot(self._l2, x * x))

    def smooth_grad(self, x) -> np.ndarray:
        """(p,) ``lam (1-alpha) s^2 * x``."""
        return self._l2 * self._x(x)

    def smooth_hessp(self, x, V) -> np.ndarray:
        """``diag(lam (1-alpha) s^2) @ V`` for V (p,) or (p, m); same shape as V. (The L2 part is
        quadratic, so x does not enter; it is taken for a uniform solver interface.)"""
        V = np.asarray(V, dtype=np.float64)
        if V.shape[:1] != (self.n_params,) or V.ndim > 2:
            raise ValueError(f"V must have shape ({self.n_params},) or ({self.n_params}, m)")
        return self._l2 * V if V.ndim == 1 else self._l2[:, None] * V

    def smooth_hess_diag(self) -> np.ndarray:
        """(p,) diagonal of the smooth part's (constant) Hessian, ``lam (1-alpha) s^2``."""
        return self._l2.copy()

    # --- L1 part -----------------------------------------------------------------------------

    def l1_weights(self) -> np.ndarray:
        """(p,) per-coordinate L1 weights ``lam * alpha * s`` (for OWL-QN and proximal steps)."""
        return self._l1.copy()

    def l1_value(self, x) -> float:
        """``lam alpha sum_j s_j |x_j|``."""
        return weighted_l1(self._l1, self._x(x))

    def prox_l1(self, x, step) -> np.ndarray:
        """Soft-thresholding ``argmin_z 1/2 |z - x|^2 + step * l1(z)`` coordinatewise:
        ``sign(x) * max(|x| - step * l1_weights, 0)``; ``step`` scalar or (p,) (>= 0)."""
        return soft_threshold(self._x(x), np.asarray(step, dtype=np.float64) * self._l1)

    def prox(self, x, step) -> np.ndarray:
        """Proximal map of the whole penalty: ``argmin_z 1/2 |z - x|^2 + step * P(z)``, i.e.
        soft-thresholding followed by the ridge shrink ``1 / (1 + step lam (1-alpha) s^2)``."""
        step = np.asarray(step, dtype=np.float64)
        return self.prox_l1(x, step) / (1.0 + step * self._l2)

    # --- total -------------------------------------------------------------------------------

    def value(self, x) -> float:
        """Total penalty ``l1_value(x) + smooth_value(x)``."""
        x = self._x(x)
        return weighted_l1(self._l1, x) + 0.5 * float(np.dot(self._l2, x * x))
