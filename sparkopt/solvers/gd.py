"""Full-batch (proximal) gradient descent with Armijo backtracking, or a fixed step."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..objectives.penalties import soft_threshold
from ..rules import check_param
from .objective import Objective
from .result import Status, l1_value, optimality_norm, rounding_error
from .sgd import safe_step
from .solver import Solver, SolverState


class GradientDescent(Solver):
    """x+ = prox_{t*l1}(x - t * g). A given `step_size` is a multiplier of the data's safe step
    1 / L (L the largest curvature at the start), used at every iteration. With `step_size=None`
    (the default), t comes from backtracking on the
    proximal sufficient-decrease test f(x+) <= f(x) + g.(x+ - x) + |x+ - x|^2 / (2t) (Beck &
    Teboulle), against the largest of the last `window` objective values; each search starts from the Barzilai-Borwein step s.s / s.y of the last move (twice
    the last accepted step when that is not positive), which keeps plain GD usable on
    ill-conditioned problems at one pass per iteration most of the time."""

    name = "gd"

    def __init__(self, step_size: Optional[float] = None, shrink: float = 0.5, max_trials: int = 50, window: int = 10):
        if step_size is not None:
            check_param("stepSize", step_size)
        self.fixed_step = step_size
        self.shrink = shrink
        self.max_trials = max_trials
        self.window = window

    def init(self, objective, x0):
        state = super().init(objective, x0)
        # a fixed step is a multiple of the data's safe step 1 / L (sparkopt.solvers.sgd.safe_step)
        fixed = None if self.fixed_step is None else self.fixed_step * safe_step(objective, x0, 0)
        state.memory["next_step"] = 1.0 if fixed is None else fixed
        state.memory["recent_f"] = [state.f - l1_value(objective, x0)]
        return state

    def _candidate(self, objective, state, t):
        z = state.x - t * state.g
        return z if objective.l1_weights is None else soft_threshold(z, t * objective.l1_weights)

    def step(self, objective: Objective, state: SolverState) -> SolverState:
        smooth_f = state.f - l1_value(objective, state.x)
        # non-monotone reference (Grippo et al.; SPG of Birgin, Martinez & Raydan): BB steps may
        # raise f briefly, which a monotone test would reject at the cost of extra passes
        reference = max(state.memory["recent_f"])
        t = float(state.memory["next_step"])
        for trial in range(self.max_trials if self.fixed_step is None else 1):
            x_new = self._candidate(objective, state, t)
            f_new, g_new = objective.loss_grad(x_new)
            if self.fixed_step is not None:
                break
            d = x_new - state.x
            if np.isfinite(f_new) and np.all(np.isfinite(g_new)) and (
                f_new <= reference + state.g @ d + (d @ d) / (2 * t) + 1e-12 * abs(smooth_f)
            ):
                break
            if (d @ d) / (2 * t) < rounding_error(smooth_f):
                return state.fail(Status.PRECISION_LIMIT, "gradient step, F changes below its rounding error")
            t *= self.shrink
        else:
            return state.fail(Status.NO_PROGRESS, f"no sufficient decrease in {self.max_trials} backtracking trials")
        state.memory["recent_f"] = (state.memory["recent_f"] + [f_new])[-self.window:]
        if self.fixed_step is None:
            s_k, y_k = x_new - state.x, g_new - state.g
            sy = float(s_k @ y_k)
            state.memory["next_step"] = float(s_k @ s_k) / sy if sy > 0 else 2.0 * t
        state.x, state.g, state.step_size = x_new, g_new, t
        state.f = f_new + l1_value(objective, x_new)
        state.opt_norm = optimality_norm(objective, x_new, g_new)
        return state
