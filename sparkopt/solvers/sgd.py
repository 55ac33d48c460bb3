"""Mini-batch (proximal) SGD: every iteration samples a fraction of every partition."""
from __future__ import annotations

import numpy as np

from ..blocks import round_seed
from ..objectives.penalties import soft_threshold
from ..rules import SCHEDULES, check_param
from .objective import Objective, SampledObjective, require
from .result import l1_value
from .solver import SampledSolver, SolverState

__all__ = ["MiniBatchSGD", "scheduled_step", "check_sgd_params", "round_seed", "SCHEDULES"]


def scheduled_step(step0: float, schedule: str, decay: float, k: int) -> float:
    """t_k of iteration (round) k >= 1 under a schedule (see MiniBatchSGD)."""
    if schedule == "constant":
        return step0
    if schedule == "inverse_sqrt":
        return step0 / np.sqrt(k)
    return step0 * decay ** (k - 1)


def check_sgd_params(step_size, fraction, schedule, decay) -> None:
    """InputError (a ValueError) naming the param (the estimators' names) for a bad SGD setting."""
    check_param("stepSize", step_size)
    check_param("miniBatchFraction", fraction)
    check_param("stepSchedule", schedule)
    check_param("decay", decay)


class MiniBatchSGD(SampledSolver):
    """x_{k+1} = prox(x_k - t_k * v_k), v_k = momentum * v_{k-1} + g_k, g_k the gradient on a
    Bernoulli(fraction) sample of every partition, seeded by (seed, k) so a run is reproducible.

    Schedules: constant t_k = t0; inverse_sqrt t_k = t0 / sqrt(k) (MLlib's GradientDescent);
    exponential t_k = t0 * decay^(k-1). Convergence uses MLlib's test on the iterate change:
    |x_k - x_{k-1}| < tol * max(|x_k|, 1), since a sampled gradient never vanishes.
    """

    name = "sgd"

    def __init__(self, step_size: float = 1.0, fraction: float = 0.1, schedule: str = "inverse_sqrt",
                 decay: float = 0.99, momentum: float = 0.0, seed: int = 0):
        check_sgd_params(step_size, fraction, schedule, decay)
        check_param("momentum", momentum)
        check_param("seed", seed)
        self.step0, self.fraction, self.schedule = float(step_size), float(fraction), schedule
        self.decay, self.momentum, self.seed = float(decay), float(momentum), int(seed)

    def step_size_at(self, k: int) -> float:
        return scheduled_step(self.step0, self.schedule, self.decay, k)

    def init(self, objective, x0):
        if self.fraction < 1.0:
            require(objective, SampledObjective, self.name, "loss and gradient on row samples")
        state = super().init(objective, x0)
        state.memory["velocity"] = np.zeros_like(x0)
        state.memory["change"] = np.inf
        return state

    def step(self, objective: Objective, state: SolverState) -> SolverState:
        k = state.iteration + 1
        sample_seed = round_seed(self.seed, k)
        if self.fraction < 1.0:
            f_sample, g = objective.stochastic_loss_grad(state.x, self.fraction, sample_seed)
        else:
            f_sample, g = objective.loss_grad(state.x)
        v = self.momentum * state.memory["velocity"] + g
        t = self.step_size_at(k)
        x_new = state.x - t * v
        if objective.l1_weights is not None:
            x_new = soft_threshold(x_new, t * objective.l1_weights)
        state.memory["velocity"] = v
        self.record_change(state, x_new)
        # F on the full data would cost a pass per step: the history carries the sample's estimate
        # at the previous iterate, and minimize() evaluates F exactly once at the end.
        state.f = float(f_sample) + l1_value(objective, state.x)
        state.x, state.g, state.step_size = x_new, g, t
        state.opt_norm = float(np.max(np.abs(g), initial=0.0))
        return state
