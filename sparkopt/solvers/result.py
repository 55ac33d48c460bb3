"""How a run ends: status codes, the one result record every solver returns, and ``finish``.

Driver side only; never imports pyspark. Every producer of a result (the ``minimize`` loop, the
asynchronous parameter server, the hinge's smoothing continuation in sparkopt.fit) ends through
:func:`finish`, so ``fun``, ``jac`` and ``grad_norm`` always describe the returned ``x``, the
message and the warning follow one rule, and a sampled answer gets its one exact evaluation.
"""
from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..objectives.penalties import weighted_l1

__all__ = ["Status", "STATUS_MESSAGES", "ConvergenceWarning", "OptimizeResult", "finish", "conclude", "optimality_norm",
           "pseudo_gradient", "l1_value", "rounding_error"]


class Status(enum.IntEnum):
    """Why a run ended. Only CONVERGED counts as success (scipy's ``success``)."""

    CONVERGED = 0
    MAX_ITER = 1
    NO_PROGRESS = 2      # line search failed / objective stopped decreasing above tol
    DIVERGED = 3         # non-finite objective or gradient; the best finite iterate is returned
    CALLBACK_STOP = 4
    MAX_PASSES = 5
    PRECISION_LIMIT = 6  # F no longer decreases by more than its rounding error: tol is below what float64 allows


STATUS_MESSAGES = {
    Status.CONVERGED: "converged",
    Status.MAX_ITER: "maximum number of iterations reached before convergence",
    Status.NO_PROGRESS: "stopped: no further decrease of the objective is possible (line search failed)",
    Status.DIVERGED: "diverged: non-finite objective or gradient; returned the best finite iterate",
    Status.CALLBACK_STOP: "stopped by the callback",
    Status.MAX_PASSES: "maximum number of passes over the data reached before convergence",
    Status.PRECISION_LIMIT: "stopped at the limit of float64 precision: the objective no longer decreases by more "
                            "than its rounding error, so tol is tighter than this problem's rounding allows",
}

#: relative rounding error of F: a sum of many nonnegative loss terms in float64 (BLAS dot
#: products, partition sums) carries a few dozen ulps; a change smaller than this is noise
REL_ROUNDING = 64 * np.finfo(np.float64).eps


def rounding_error(f: float) -> float:
    """The smallest change of F = f that can be told from rounding noise."""
    return REL_ROUNDING * max(abs(float(f)), np.finfo(np.float64).tiny)


class ConvergenceWarning(UserWarning):
    """A run ended without converging (max_iter, max_passes, no progress, divergence)."""


@dataclass
class OptimizeResult:
    """One record for every solver, shaped like scipy's OptimizeResult.

    x: (n_params,) final (best finite) iterate; fun: F(x), L1 term included; jac: the smooth
    gradient at x; grad_norm: inf-norm of the (projected, for L1) gradient at x; nit: iterations
    (rounds for the SGD family); passes: passes over the data (fractional for samples); nfev:
    objective evaluations; history: one dict per iteration (iteration, objective, grad_norm,
    step_size, passes, seconds, plus solver-specific keys); extra: solver-specific facts.
    """

    x: np.ndarray
    fun: float
    grad_norm: float
    nit: int
    passes: float
    nfev: int
    status: Status
    message: str
    solver: str
    history: list[dict] = field(default_factory=list)
    jac: Optional[np.ndarray] = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status == Status.CONVERGED

    def __repr__(self) -> str:
        return (
            f"OptimizeResult(solver={self.solver!r}, success={self.success}, status={self.status.name}, "
            f"fun={self.fun:.12g}, grad_norm={self.grad_norm:.3g}, nit={self.nit}, passes={self.passes:g}, "
            f"message={self.message!r})"
        )


# ------------------------------------------------------------------------- optimality measures
def l1_value(objective: Any, x: np.ndarray) -> float:
    """``sum_j l1_j |x_j|`` of the objective's L1 weights (0 without an L1 term)."""
    return weighted_l1(objective.l1_weights, x)


def pseudo_gradient(g: np.ndarray, x: np.ndarray, l1: Optional[np.ndarray]) -> np.ndarray:
    """Minimum-norm subgradient of smooth(x) + sum l1_j |x_j| (OWL-QN's pseudo-gradient)."""
    if l1 is None:
        return g
    pg = np.where(x > 0, g + l1, np.where(x < 0, g - l1, 0.0))
    at_zero = x == 0
    right, left = g + l1, g - l1
    pg = np.where(at_zero & (right < 0), right, pg)
    pg = np.where(at_zero & (left > 0), left, pg)
    return pg


def optimality_norm(objective: Any, x: np.ndarray, g: np.ndarray) -> float:
    """inf-norm of the pseudo-gradient: 0 exactly at a minimizer of F."""
    return float(np.max(np.abs(pseudo_gradient(g, x, objective.l1_weights)), initial=0.0))


def convergence_scale(objective: Any, x: np.ndarray, g: Optional[np.ndarray],
                      pseudo: Optional[float] = None) -> float:
    """What a relative tolerance is relative to: the larger of the pseudo-gradient's and the
    smooth gradient's inf-norms at ``x`` (the start). With L1 near lambda_max the pseudo-gradient
    at a zero start vanishes, and a tolerance relative to it would ask for more digits than
    float64 holds; the smooth gradient keeps the problem's own scale."""
    if pseudo is None:
        pseudo = optimality_norm(objective, x, g)
    smooth = float(np.max(np.abs(g), initial=0.0)) if g is not None else 0.0
    return max(pseudo, smooth) if np.isfinite(smooth) else pseudo


def _finite(*arrays) -> bool:
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


# ------------------------------------------------------------------------- the one way out
def finish(objective: Any, *, solver: str, x: np.ndarray, status: Status, nit: int, passes: float, nfev: int,
           history: list[dict], seconds: float, fun: Optional[float] = None, jac: Optional[np.ndarray] = None,
           detail: str = "", threshold: Optional[float] = None, extra: Optional[dict] = None,
           warn: bool = True, stacklevel: int = 3) -> OptimizeResult:
    """The OptimizeResult of a run that ends at ``x`` with ``status``.

    ``fun`` (F(x), L1 term included) and ``jac`` (smooth gradient at x) are used when the caller
    knows them exactly; otherwise x is evaluated once here (that pass is added to ``passes`` and
    ``nfev``), which is what a sampled solver's answer needs. A non-finite F or gradient turns the
    status into DIVERGED. ``detail`` is appended to the status message; ``threshold`` (the
    convergence test's tol * scale) lets a NO_PROGRESS message say when the run stopped within
    reach of the tolerance. Unless ``warn`` is False, a run that neither converged nor was stopped
    by its callback emits a :class:`ConvergenceWarning`.
    """
    x = np.array(x, dtype=float, copy=True)
    if fun is None or jac is None:
        passes0, evaluations0 = objective.passes, objective.evaluations
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            smooth, jac = objective.loss_grad(x)
        fun = smooth + l1_value(objective, x)
        passes += float(objective.passes - passes0)
        nfev += int(objective.evaluations - evaluations0)
    if not _finite(fun, jac) and status != Status.DIVERGED:
        status, detail = Status.DIVERGED, ""
    grad_norm = optimality_norm(objective, x, jac) if _finite(jac) else float("inf")
    return conclude(x=x, fun=fun, jac=jac, grad_norm=grad_norm, solver=solver, status=status, nit=nit,
                    passes=passes, nfev=nfev, history=history, seconds=seconds, detail=detail,
                    threshold=threshold, extra=extra, warn=warn, stacklevel=stacklevel + 1)


def conclude(*, x: Any, fun: float, jac: Any, grad_norm: float, solver: str, status: Status, nit: int,
             passes: float, nfev: int, history: list[dict], seconds: float, detail: str = "",
             threshold: Optional[float] = None, extra: Optional[dict] = None, warn: bool = True,
             stacklevel: int = 3) -> OptimizeResult:
    """The OptimizeResult, message and warning of a run whose answer is already evaluated
    (``grad_norm`` its optimality norm): :func:`finish`'s last step, and the whole ending of a
    vector-free run, whose ``x`` and ``jac`` are handles to vectors the driver never holds."""
    message = STATUS_MESSAGES[status] + (f" ({detail})" if detail else "")
    if status == Status.PRECISION_LIMIT and threshold is not None:
        message += f" (gradient norm {grad_norm:.3g}; tol asks for <= {threshold:.3g})"
    if status == Status.NO_PROGRESS and threshold is not None and grad_norm <= 10 * threshold:
        message += (f" (gradient norm {grad_norm:.3g} is within 10x of the tolerance: tol may be tighter than "
                    "the attainable precision)")
    result = OptimizeResult(x=x, fun=float(fun), grad_norm=float(grad_norm), nit=int(nit), passes=float(passes),
                            nfev=int(nfev), status=status, message=message, solver=solver, history=history,
                            jac=jac, seconds=float(seconds), extra=dict(extra or {}))
    if warn and status not in (Status.CONVERGED, Status.CALLBACK_STOP):
        warnings.warn(f"sparkopt {solver}: {message} (nit={result.nit}, grad_norm={grad_norm:.3g})",
                      ConvergenceWarning, stacklevel=stacklevel)
    return result
