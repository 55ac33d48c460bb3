"""What every solver shares: the Objective protocol, the result record, status codes, history.

Driver side only; never imports pyspark. A solver sees the problem only through `Objective`, so the
same code runs on a distributed evaluator, an in-memory fold or a plain numpy function.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Objective(Protocol):
    """F(x) = smooth(x) + sum_j l1_weights[j] * |x_j|, x of shape (n_params,).

    `loss_grad` and friends describe the smooth part only; the non-smooth L1 part is data
    (`l1_weights`, None when absent) that proximal and orthant-wise solvers use directly.
    Every call that touches the data advances `passes` (1 per full pass, the fraction per sample).
    """

    n_params: int
    has_hessian: bool
    smooth: bool
    l1_weights: Optional[np.ndarray]

    def loss(self, x: np.ndarray) -> float: ...

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]: ...

    def loss_grad_hess(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]: ...

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray: ...

    def stochastic_loss_grad(self, x: np.ndarray, fraction: float, seed: int) -> tuple[float, np.ndarray]: ...

    @property
    def passes(self) -> float: ...


class Status(enum.IntEnum):
    """Why a run ended. Only CONVERGED counts as success (scipy's `success`)."""

    CONVERGED = 0
    MAX_ITER = 1
    NO_PROGRESS = 2      # line search failed / objective stopped decreasing above tol
    DIVERGED = 3         # non-finite objective or gradient; the best finite iterate is returned
    CALLBACK_STOP = 4
    MAX_PASSES = 5


STATUS_MESSAGES = {
    Status.CONVERGED: "converged: projected gradient norm <= tol",
    Status.MAX_ITER: "maximum number of iterations reached before convergence",
    Status.NO_PROGRESS: "stopped: no further decrease of the objective is possible (line search failed)",
    Status.DIVERGED: "diverged: non-finite objective or gradient; returned the best finite iterate",
    Status.CALLBACK_STOP: "stopped by the callback",
    Status.MAX_PASSES: "maximum number of passes over the data reached before convergence",
}


class ConvergenceWarning(UserWarning):
    """A run ended without converging (max_iter, no progress, divergence)."""


@dataclass
class OptimizeResult:
    """One record for every solver, shaped like scipy's OptimizeResult.

    x: (n_params,) final (best finite) iterate; fun: objective there; grad_norm: inf-norm of the
    (projected, for L1) gradient; nit: iterations; passes: passes over the data (fractional for
    samples); nfev: objective evaluations; history: one dict per iteration (iteration, objective,
    grad_norm, step_size, passes, seconds, plus solver-specific keys).
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


Callback = Callable[[dict], Optional[bool]]


class CountingObjective:
    """Wrap plain numpy callables as an `Objective` (like scipy's fun/jac/hessp), counting calls.

    Useful for solver tests and for users with an in-memory problem. `passes` counts calls that
    would have been passes over the data (loss, gradient, Hessian or Hessian-vector product).
    """

    def __init__(
        self,
        fun: Callable[[np.ndarray], float],
        grad: Callable[[np.ndarray], np.ndarray],
        n_params: int,
        hess: Optional[Callable[[np.ndarray], np.ndarray]] = None,
        hessp: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None,
        l1_weights: Optional[np.ndarray] = None,
        stochastic_grad: Optional[Callable[[np.ndarray, float, int], tuple[float, np.ndarray]]] = None,
    ):
        self._fun, self._grad, self._hess, self._hessp = fun, grad, hess, hessp
        self._stochastic = stochastic_grad
        self.n_params = n_params
        self.has_hessian = hess is not None
        self.smooth = True
        self.l1_weights = None if l1_weights is None else np.asarray(l1_weights, dtype=float)
        self._passes = 0.0
        self.evaluations = 0

    @property
    def passes(self) -> float:
        return self._passes

    def loss(self, x):
        self._passes += 1
        self.evaluations += 1
        return float(self._fun(x))

    def loss_grad(self, x):
        self._passes += 1
        self.evaluations += 1
        return float(self._fun(x)), np.asarray(self._grad(x), dtype=float)

    def loss_grad_hess(self, x):
        self._passes += 1
        self.evaluations += 1
        return float(self._fun(x)), np.asarray(self._grad(x), dtype=float), np.asarray(self._hess(x), dtype=float)

    def hessp(self, x, v):
        self._passes += 1
        self.evaluations += 1
        if self._hessp is not None:
            return self._hessp(x, v)
        return self._hess(x) @ v

    def stochastic_loss_grad(self, x, fraction, seed):
        if self._stochastic is None:
            return self.loss_grad(x)
        self._passes += fraction
        self.evaluations += 1
        f, g = self._stochastic(x, fraction, seed)
        return float(f), np.asarray(g, dtype=float)
