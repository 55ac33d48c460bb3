"""Solver state and the small protocol every driver-side solver follows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .base import Objective, Status


@dataclass
class SolverState:
    """The changing part of a run. `x`, `f`, `g` are the current iterate, smooth objective plus the
    L1 term (total F), and the smooth gradient; `opt_norm` is the inf-norm of the optimality measure
    the convergence test uses (projected/pseudo gradient under L1). `memory` holds solver-specific
    arrays (L-BFGS pairs, momentum), plain numpy so a checkpoint can store them."""

    x: np.ndarray
    f: float
    g: np.ndarray
    opt_norm: float
    iteration: int = 0
    step_size: float = float("nan")
    memory: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)   # per-iteration extras for the history
    stop: Optional[Status] = None                      # set by a step that cannot continue


class Solver:
    """init(objective, x0) -> state; step(objective, state) -> state; converged(state, tol, ref)."""

    name = "solver"
    exact_objective = True   # False when state.f is an estimate (sampled solvers)

    def init(self, objective: Objective, x0: np.ndarray) -> SolverState:
        f, g = objective.loss_grad(x0)
        f_total = f + l1_value(objective, x0)
        return SolverState(x=x0, f=f_total, g=g, opt_norm=optimality_norm(objective, x0, g))

    def step(self, objective: Objective, state: SolverState) -> SolverState:  # pragma: no cover
        raise NotImplementedError

    def converged(self, state: SolverState, tol: float, scale: float) -> bool:
        """Gradient test shared by the deterministic solvers: ||opt||_inf <= tol * scale, the scale
        being the gradient's norm at the (cold) starting point."""
        return state.opt_norm <= tol * scale


def l1_value(objective: Objective, x: np.ndarray) -> float:
    w = objective.l1_weights
    return 0.0 if w is None else float(w @ np.abs(x))


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


def optimality_norm(objective: Objective, x: np.ndarray, g: np.ndarray) -> float:
    return float(np.max(np.abs(pseudo_gradient(g, x, objective.l1_weights)), initial=0.0))


def soft_threshold(v: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.maximum(np.abs(v) - thresholds, 0.0)
