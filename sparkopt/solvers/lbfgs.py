"""L-BFGS (strong-Wolfe line search) and OWL-QN (L-BFGS for objectives with an L1 term)."""
from __future__ import annotations

import numpy as np

from ..rules import check_param
from .linesearch import strong_wolfe
from .objective import Objective
from .result import Status, l1_value, optimality_norm, pseudo_gradient, rounding_error
from .solver import Solver, SolverState


def two_loop(grad: np.ndarray, s_list: list, y_list: list) -> np.ndarray:
    """H_k @ grad for the L-BFGS inverse-Hessian estimate from pairs (s_i, y_i), oldest first."""
    q = grad.copy()
    rhos = [1.0 / float(y @ s) for s, y in zip(s_list, y_list)]
    alphas = []
    for s, y, rho in zip(reversed(s_list), reversed(y_list), reversed(rhos)):
        a = rho * float(s @ q)
        alphas.append(a)
        q -= a * y
    if s_list:
        s, y = s_list[-1], y_list[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), a in zip(zip(s_list, y_list, rhos), reversed(alphas)):
        b = rho * float(y @ q)
        q += (a - b) * s
    return q


class LBFGS(Solver):
    """Limited-memory BFGS with `memory` correction pairs (MLlib's default is 10)."""

    name = "lbfgs"

    def __init__(self, memory: int = 10):
        self.m = int(check_param("memory", memory))

    def init(self, objective, x0):
        state = super().init(objective, x0)
        state.memory["s"], state.memory["y"] = [], []
        return state

    def _push(self, state, s, y):
        if float(s @ y) > 1e-10 * float(y @ y):   # keep the estimate positive definite
            state.memory["s"].append(s)
            state.memory["y"].append(y)
            if len(state.memory["s"]) > self.m:
                state.memory["s"].pop(0)
                state.memory["y"].pop(0)

    def step(self, objective: Objective, state: SolverState) -> SolverState:
        d = -two_loop(state.g, state.memory["s"], state.memory["y"])
        step0 = 1.0
        if not state.memory["s"]:
            step0 = min(1.0, 1.0 / max(float(np.abs(state.g).sum()), 1e-300))
        ls = strong_wolfe(lambda t: objective.loss_grad(state.x + t * d), d, state.f, state.g, step0)
        if not ls.ok and state.memory["s"]:
            # a stale curvature estimate: restart from steepest descent once
            state.memory["s"].clear()
            state.memory["y"].clear()
            d = -state.g
            step0 = min(1.0, 1.0 / max(float(np.abs(state.g).sum()), 1e-300))
            ls = strong_wolfe(lambda t: objective.loss_grad(state.x + t * d), d, state.f, state.g, step0)
        if not ls.ok:
            if 0.5 * abs(float(state.g @ d)) < rounding_error(state.f):
                return state.fail(Status.PRECISION_LIMIT, "L-BFGS step, F changes below its rounding error")
            return state.fail(Status.NO_PROGRESS, f"strong-Wolfe line search failed after {ls.trials} trials")
        x_new = state.x + ls.step * d
        self._push(state, x_new - state.x, ls.g - state.g)
        state.x, state.f, state.g, state.step_size = x_new, ls.f, ls.g, ls.step
        state.opt_norm = optimality_norm(objective, x_new, ls.g)
        return state


class OWLQN(LBFGS):
    """Orthant-wise limited-memory quasi-Newton (Andrew & Gao 2007) for smooth + sum l1_j |x_j|:
    L-BFGS direction on the pseudo-gradient, constrained to its orthant, with a projected
    backtracking line search. The curvature pairs use the smooth gradient only."""

    name = "owlqn"

    def step(self, objective: Objective, state: SolverState) -> SolverState:
        l1 = objective.l1_weights
        pg = pseudo_gradient(state.g, state.x, l1)
        d = -two_loop(pg, state.memory["s"], state.memory["y"])
        d = np.where(d * pg < 0, d, 0.0)               # keep descent w.r.t. the pseudo-gradient
        if not float(pg @ d) < 0:
            d = -pg
        orthant = np.where(state.x != 0, np.sign(state.x), -np.sign(pg))
        step0 = 1.0 if state.memory["s"] else min(1.0, 1.0 / max(float(np.abs(pg).sum()), 1e-300))

        t, accepted, noise = step0, None, rounding_error(state.f)
        for _ in range(40):
            x_t = state.x + t * d
            x_t = np.where(np.sign(x_t) == orthant, x_t, 0.0)
            predicted = float(pg @ (x_t - state.x))
            f, g = objective.loss_grad(x_t)
            f_total = f + l1_value(objective, x_t)
            if np.isfinite(f_total) and np.all(np.isfinite(g)) and (
                    f_total <= state.f + 1e-4 * predicted
                    # F's change lost in rounding: the pseudo-gradient judges the step
                    or (f_total <= state.f + noise and optimality_norm(objective, x_t, g) < state.opt_norm)):
                accepted = (x_t, f_total, g)
                break
            if -predicted < noise:
                if state.memory["s"]:
                    break                      # retry from steepest descent below
                return state.fail(Status.PRECISION_LIMIT, "OWL-QN step, F changes below its rounding error")
            t *= 0.5
        if accepted is None:
            if state.memory["s"]:
                state.memory["s"].clear()
                state.memory["y"].clear()
                return self.step(objective, state)
            return state.fail(Status.NO_PROGRESS, "no sufficient decrease along the projected direction")
        x_new, f_new, g_new = accepted
        self._push(state, x_new - state.x, pseudo_gradient(g_new, x_new, l1) - pg)
        state.x, state.f, state.g, state.step_size = x_new, f_new, g_new, t
        state.opt_norm = optimality_norm(objective, x_new, g_new)
        return state
