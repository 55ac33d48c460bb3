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
from .sgd import check_sgd_params, scheduled_step
from .solver import SampledSolver, SolverState


class LocalSGD(SampledSolver):
    """Round k = 1, 2, ... (one `minimize` iteration, one communication round, H * fraction passes):

        every shard b, from x_k:  H proximal SGD steps with step t_k, endpoint u_b before the
                                  last step's prox, S_b = weight of the rows it sampled
        delta_k = sum_b S_b (u_b - x_k) / sum_b S_b          (weighted mean of the shard deltas)
        x_{k+1} = soft_threshold(x_k + beta * delta_k, beta * t_k * l1)   (no L1: no threshold)

    - beta = `combination` >= 1. beta = 1 is averaging: x_{k+1} is the S_b-weighted average of the
      shard models (exact for shards of unequal size: with fraction 1, S_b = H * the shard's
      weight sum). beta = K (the number of shards) with equal shards is CoCoA+'s adding,
      x + sum_b delta_b; in between interpolates. A beta above ~K overshoots the sum of the
      shard steps and is rarely stable; beta < 1 (damping) is not offered: reduce stepSize.
    - t_k follows the schedule over rounds (constant, inverse_sqrt t0/sqrt(k), exponential
      t0 * decay^(k-1)); the H steps of a round share t_k.
    - Samples: shard (p, j) of round k draws its H Bernoulli(fraction) samples in turn from
      sample_rng(round_seed(seed, k), p, j), the generator MiniBatchSGD's iteration k uses for
      that block; so H = 1, beta = 1 is MiniBatchSGD (no momentum) with the same samples.
    - History: `rounds` (communication rounds so far) beside `passes` (H * fraction per round);
      `objective` is F at x_k estimated on the round's first samples (as MiniBatchSGD);
      `grad_norm` is the inf-norm of the round's mean effective gradient -delta_k / (H t_k)
      (the sampled gradient when H = 1). Converged, as MiniBatchSGD, when the relative change
      |x_{k+1} - x_k| / max(|x_{k+1}|, 1) < tol.
    """

    name = "local-sgd"

    def __init__(self, step_size: float = 1.0, fraction: float = 0.1, schedule: str = "inverse_sqrt",
                 decay: float = 0.99, local_steps: int = 1, combination: float = 1.0, seed: int = 0):
        check_sgd_params(step_size, fraction, schedule, decay)
        check_param("localSteps", local_steps)
        check_param("localCombination", combination)
        check_param("seed", seed)
        self.step0, self.fraction, self.schedule, self.decay = float(step_size), float(fraction), schedule, float(decay)
        self.local_steps, self.combination, self.seed = int(local_steps), float(combination), int(seed)

    def step_size_at(self, k: int) -> float:
        return scheduled_step(self.step0, self.schedule, self.decay, k)

    def init(self, objective: Objective, x0: np.ndarray) -> SolverState:
        require(objective, LocalRoundObjective, self.name,
                "local SGD rounds on the data's shards (a LinearModelObjective over an engine)")
        state = super().init(objective, x0)
        state.memory["change"] = np.inf
        state.info = {"rounds": 0}
        return state

    def step(self, objective: Objective, state: SolverState) -> SolverState:
        k = state.iteration + 1
        t = self.step_size_at(k)
        steps = np.full(self.local_steps, t)
        delta, f_estimate, _ = objective.local_sgd_round(state.x, steps, self.fraction, round_seed(self.seed, k))
        beta = self.combination
        x_new = state.x + beta * delta
        if objective.l1_weights is not None:
            x_new = soft_threshold(x_new, beta * t * objective.l1_weights)
        self.record_change(state, x_new)
        g = -delta / (self.local_steps * t)
        state.f = float(f_estimate) + l1_value(objective, state.x)
        state.x, state.g, state.step_size = x_new, g, t
        state.opt_norm = float(np.max(np.abs(g), initial=0.0))
        state.info = {"rounds": k}
        return state
