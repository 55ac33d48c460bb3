"""Mini-batch (proximal) SGD: every iteration samples a fraction of every partition."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..blocks import round_seed
from ..objectives.penalties import soft_threshold
from ..rules import SCHEDULES, check_param
from . import adaptive
from .objective import CurvatureBound, Objective, SampledObjective, require
from .result import Status, l1_value
from .solver import SampledSolver, SolverState

__all__ = ["MiniBatchSGD", "scheduled_step", "check_sgd_params", "round_seed", "safe_step", "healthy", "SCHEDULES"]


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


def safe_step(objective: Objective, x0: np.ndarray, seed: int) -> float:
    """1 / L, L the largest curvature of the smooth part at x0: the step of gradient descent that
    cannot overshoot along any direction there (SAG / SAGA's choice, with L measured rather than
    bounded). From the objective's own estimate (CurvatureBound: a sampled subspace iteration),
    else a few power iterations with ``hessp``; 1.0 when neither exists."""
    if isinstance(objective, CurvatureBound):
        curvature = objective.curvature_bound(x0, seed)
    elif objective.has_hessian:
        v = np.random.default_rng(seed).standard_normal(objective.n_params)
        curvature = 0.0
        for _ in range(4):
            v = v / max(float(np.linalg.norm(v)), 1e-300)
            hv = objective.hessp(x0, v)
            curvature = float(v @ hv)
            v = hv
    else:
        return 1.0
    return 1.0 / curvature if np.isfinite(curvature) and curvature > 0 else 1.0


#: a sampled objective this far above its value at the start (relative) means the steps are too
#: long: the SGD family goes back to its last healthy iterate with a quarter of the step
BLOW_UP = 3.0
MAX_BACKOFFS = 12


def healthy(f: float, g: np.ndarray, f_start: float) -> bool:
    """A sampled (f, g) that does not show the run blowing up."""
    return bool(np.isfinite(f) and np.all(np.isfinite(g)) and f <= f_start + BLOW_UP * max(abs(f_start), 1e-12))


class MiniBatchSGD(SampledSolver):
    """x_{k+1} = prox(x_k - v_k), v_k = momentum v_{k-1} + t_k u_k, g_k the gradient on a
    Bernoulli(fraction) sample of every partition, seeded by (seed, k) so a run is reproducible,
    and u_k from the update rule (``optimizer``, see sparkopt.solvers.adaptive): ``sgd`` (u = g,
    heavy-ball momentum, default 0.9), ``adagrad`` or ``adam`` (no extra momentum).

    Step: t_k = step_size * t_safe * schedule(k). ``t_safe`` comes from the data: 1 / L, L the
    largest curvature at the start in solver coordinates (:func:`safe_step`, a fraction of a pass);
    for AdaGrad and Adam, whose steps move each coordinate by ~t, it is ``|g_0|_inf / L``, the
    largest move of that safe gradient step. ``step_size`` is a multiplier (default 1). Schedules:
    constant; inverse_sqrt t_safe / sqrt(k) (MLlib's GradientDescent); exponential decay^(k-1);
    auto (default): inverse_sqrt, constant for AdaGrad (whose accumulators shrink its steps). ``averaging`` (default on) answers with the polynomial-decay average of the
    iterates (see SampledSolver), which removes most of the noise a constant step leaves.
    A sampled F that blows up (non-finite, or BLOW_UP times above its start) sends the run back to
    its last healthy iterate with a quarter of the step (recorded as ``backoff`` in the history),
    so the defaults never diverge. Convergence is MLlib's test on the iterate change:
    |x_k - x_{k-1}| < tol * max(|x_k|, 1), since a sampled gradient never vanishes.
    """

    name = "sgd"

    def __init__(self, step_size: float = 1.0, fraction: float = 0.1, schedule: str = "auto",
                 decay: float = 0.99, momentum: float = 0.9, optimizer: str = "sgd", averaging: bool = True,
                 seed: int = 0):
        check_sgd_params(step_size, fraction, schedule, decay)
        check_param("momentum", momentum)
        check_param("optimizer", optimizer)
        check_param("seed", seed)
        if schedule == "auto":
            # AdaGrad's accumulated gradients already shrink its steps
            schedule = "constant" if optimizer == "adagrad" else "inverse_sqrt"
        self.step0, self.fraction, self.schedule = float(step_size), float(fraction), schedule
        self.decay, self.momentum, self.optimizer, self.seed = float(decay), float(momentum), optimizer, int(seed)
        self.averaging = bool(averaging)

    def step_size_at(self, state: SolverState, k: int) -> float:
        return scheduled_step(state.memory["base_step"], self.schedule, self.decay, k) * state.memory["backoff"]

    def init(self, objective, x0):
        if self.fraction < 1.0:
            require(objective, SampledObjective, self.name, "loss and gradient on row samples")
        state = super().init(objective, x0)
        t_safe = safe_step(objective, x0, self.seed)
        if self.optimizer != "sgd":
            t_safe *= float(np.max(np.abs(state.g), initial=0.0)) or 1.0
        state.memory.update(adaptive.init_memory(self.optimizer, len(x0)))
        state.memory.update(change=np.inf, base_step=self.step0 * t_safe, backoff=1.0, f_start=float(state.f),
                            anchor=x0.copy(), backoffs=0, velocity=np.zeros_like(x0))
        self.start_averaging(objective, state)
        return state



    def step(self, objective: Objective, state: SolverState) -> SolverState:
        k = state.iteration + 1
        if self.fraction < 1.0:
            f_sample, g = objective.stochastic_loss_grad(state.x, self.fraction, round_seed(self.seed, k))
        else:
            f_sample, g = objective.loss_grad(state.x)
        f_sample = float(f_sample) + l1_value(objective, state.x)
        if not healthy(f_sample, g, state.memory["f_start"]):
            return back_off(state, self.optimizer)
        state.memory["anchor"] = state.x.copy()
        u, scale = adaptive.direction(self.optimizer, state.memory, g, k)
        t = self.step_size_at(state, k)
        # heavy ball in the step-scaled form v = momentum v + t u (for a constant step the classic
        # one); AdaGrad and Adam carry their own averages of the gradient instead
        v = (self.momentum if self.optimizer == "sgd" else 0.0) * state.memory["velocity"] + t * u
        state.memory["velocity"] = v
        x_new = state.x - v
        if objective.l1_weights is not None:
            x_new = soft_threshold(x_new, t * scale * objective.l1_weights)
        self.advance(state, x_new, k)
        # F on the full data would cost a pass per step: the history carries the sample's estimate
        # at the previous iterate, and minimize() evaluates F exactly once at the end.
        state.f = f_sample
        state.x, state.g, state.step_size = x_new, g, t
        state.opt_norm = float(np.max(np.abs(g), initial=0.0))
        return state


def back_off(state: SolverState, optimizer: Optional[str] = None) -> SolverState:
    """Return to the last healthy iterate with a quarter of the step (accumulators reset); after
    MAX_BACKOFFS the run is reported as DIVERGED."""
    memory = state.memory
    if memory["backoffs"] >= MAX_BACKOFFS:
        return state.fail(Status.DIVERGED, f"still blowing up after {MAX_BACKOFFS} step reductions")
    memory["backoffs"] += 1
    memory["backoff"] *= 0.25
    if optimizer is not None:
        memory.update(adaptive.init_memory(optimizer, len(state.x)))
    if "velocity" in memory:
        memory["velocity"] = np.zeros_like(state.x)
    state.x = memory["anchor"].copy()
    if "average" in memory:
        memory["average"] = state.x.copy()       # the blown-up iterates must not weigh in
    state.info["backoff"] = memory["backoff"]
    memory["change"] = np.inf
    return state
