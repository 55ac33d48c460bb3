"""Local SGD with periodic synchronization: H local steps per shard, one combination per round.

Driver side; knows nothing of Spark. The objective runs a round (`objective.local_sgd_round`,
a LocalRoundObjective such as sparkopt.linear_objective.LinearModelObjective): every shard (engine block) starts from x_k and takes H
proximal mini-batch SGD steps on its own rows; the solver combines the shards.
"""
from __future__ import annotations

import numpy as np

from ..blocks import round_seed
from ..objectives.penalties import soft_threshold
from ..rules import check_param
from .objective import LocalRoundObjective, Objective, require
from .result import l1_value
from .sgd import back_off, check_sgd_params, healthy, safe_step, scheduled_step
from .solver import SampledSolver, SolverState


class LocalSGD(SampledSolver):
    """Round k = 1, 2, ... (one `minimize` iteration, one communication round, H * fraction passes):

        every shard b, from x_k:  H proximal SGD steps with step t_k, endpoint u_b before the
                                  last step's prox, S_b = weight of the rows it sampled
        delta_k = sum_b S_b (u_b - x_k) / sum_b S_b          (weighted mean of the shard deltas)
        v_k     = momentum * v_{k-1} + beta * delta_k        (outer heavy ball, SlowMo; default 0.9)
        x_{k+1} = soft_threshold(x_k + v_k, beta * t_k * l1)  (no L1: no threshold)

    - beta = `combination` >= 1. beta = 1 is averaging: x_{k+1} is the S_b-weighted average of the
      shard models (exact for shards of unequal size: with fraction 1, S_b = H * the shard's
      weight sum). beta = K (the number of shards) with equal shards is CoCoA+'s adding,
      x + sum_b delta_b; in between interpolates. A beta above ~K overshoots the sum of the
      shard steps and is rarely stable; beta < 1 (damping) is not offered: reduce stepSize.
    - t_k = step_size * t_safe * schedule(k), t_safe the data's safe step 1 / L measured at the
      start (sparkopt.solvers.sgd.safe_step; step_size is a multiplier, default 1), the schedule
      over rounds (constant, inverse_sqrt 1/sqrt(k), exponential decay^(k-1)); the H steps of a
      round share t_k. A round whose estimate blows up is undone with a quarter of the step, as
      MiniBatchSGD does.
    - Samples: shard (p, j) of round k draws its H Bernoulli(fraction) samples in turn from
      sample_rng(round_seed(seed, k), p, j), the generator MiniBatchSGD's iteration k uses for
      that block; so H = 1, beta = 1 is MiniBatchSGD (same momentum) with the same samples.
    - History: `rounds` (communication rounds so far) beside `passes` (H * fraction per round);
      `objective` is F at x_k estimated on the round's first samples (as MiniBatchSGD);
      `grad_norm` is the inf-norm of the round's mean effective gradient -delta_k / (H t_k)
      (the sampled gradient when H = 1). Converged, as MiniBatchSGD, when the relative change
      of the (averaged, by default) iterate is below tol.
    """

    name = "local-sgd"

    def __init__(self, step_size: float = 1.0, fraction: float = 0.1, schedule: str = "auto",
                 decay: float = 0.99, local_steps: int = 1, combination: float = 1.0, momentum: float = 0.9,
                 averaging: bool = True, seed: int = 0):
        check_sgd_params(step_size, fraction, schedule, decay)
        schedule = "inverse_sqrt" if schedule == "auto" else schedule
        check_param("localSteps", local_steps)
        check_param("localCombination", combination)
        check_param("seed", seed)
        self.step0, self.fraction, self.schedule, self.decay = float(step_size), float(fraction), schedule, float(decay)
        self.local_steps, self.combination, self.seed = int(local_steps), float(combination), int(seed)
        self.averaging = bool(averaging)
        self.momentum = float(check_param("momentum", momentum))

    def step_size_at(self, state: SolverState, k: int) -> float:
        return scheduled_step(state.memory["base_step"], self.schedule, self.decay, k) * state.memory["backoff"]

    def init(self, objective: Objective, x0: np.ndarray) -> SolverState:
        require(objective, LocalRoundObjective, self.name,
                "local SGD rounds on the data's shards (a LinearModelObjective over an engine)")
        state = super().init(objective, x0)
        state.memory.update(change=np.inf, base_step=self.step0 * safe_step(objective, x0, self.seed), backoff=1.0,
                            f_start=float(state.f), anchor=x0.copy(), backoffs=0, velocity=np.zeros_like(x0))
        self.start_averaging(objective, state)
        state.info = {"rounds": 0}
        return state

    def step(self, objective: Objective, state: SolverState) -> SolverState:
        k = state.iteration + 1
        t = self.step_size_at(state, k)
        steps = np.full(self.local_steps, t)
        delta, f_estimate, _ = objective.local_sgd_round(state.x, steps, self.fraction, round_seed(self.seed, k))
        f_estimate = float(f_estimate) + l1_value(objective, state.x)
        if not healthy(f_estimate, delta, state.memory["f_start"]):
            state = back_off(state)
            state.info["rounds"] = k
            return state
        state.memory["anchor"] = state.x.copy()
        beta = self.combination
        # outer heavy-ball momentum on the combined move (SlowMo, Wang et al. 2020); with H = 1
        # and beta = 1 it is MiniBatchSGD's momentum step for step
        velocity = self.momentum * state.memory["velocity"] + beta * delta
        state.memory["velocity"] = velocity
        x_new = state.x + velocity
        if objective.l1_weights is not None:
            x_new = soft_threshold(x_new, beta * t * objective.l1_weights)
        self.advance(state, x_new, k)
        g = -delta / (self.local_steps * t)
        state.f = f_estimate
        state.x, state.g, state.step_size = x_new, g, t
        state.opt_norm = float(np.max(np.abs(g), initial=0.0))
        state.info = {"rounds": k}
        return state
