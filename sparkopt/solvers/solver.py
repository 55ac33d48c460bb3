"""The Solver protocol every driver-side method follows, and its state.

Driver side only; never imports pyspark. A solver is three functions over an explicit state
(optimistix / optax style): ``init(objective, x0) -> state``, ``step(objective, state) -> state``
and ``terminate(state, tol, scale) -> (status, detail) | None``. The ``minimize`` loop
(sparkopt.solvers.loop) owns everything else: budgets, history, callbacks, checkpoints, the best
iterate and the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .objective import Objective
from .result import Status, l1_value, optimality_norm

__all__ = ["SolverState", "Solver", "SampledSolver", "OwnLoopSolver", "Termination", "Callback"]

#: (status, detail for the message) when a run must end
Termination = tuple[Status, str]
#: called with each iteration's history record (plus 'x'); True (or StopIteration) stops the run
Callback = Callable[[dict], Optional[bool]]


@dataclass
class SolverState:
    """The changing part of a run.

    ``x``, ``f``, ``g``: the current iterate, F there (smooth part plus the L1 term; an estimate
    for sampled solvers) and the smooth gradient; ``opt_norm``: the inf-norm of the optimality
    measure (the pseudo-gradient under L1) the convergence test uses. ``memory`` holds the
    solver's own arrays and scalars (L-BFGS pairs, momentum, ...) as plain numpy so a checkpoint
    can store them; ``info`` the extra history columns of the last step; ``failure`` is set by a
    step that cannot continue (and read by ``terminate``)."""

    x: np.ndarray
    f: float
    g: np.ndarray
    opt_norm: float
    iteration: int = 0
    step_size: float = float("nan")
    memory: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    failure: Optional[Termination] = None

    def fail(self, status: Status, detail: str = "") -> "SolverState":
        """Mark the run as unable to continue (e.g. NO_PROGRESS after a failed line search)."""
        self.failure = (status, detail)
        return self


class Solver:
    """A deterministic method: F and its gradient are exact at every iterate.

    Subclasses implement :meth:`step` (and :meth:`init` when they need more than one loss and
    gradient pass at x0). The convergence test is the gradient test ``||opt||_inf <= tol * scale``,
    the scale being the optimality norm at the (cold) starting point."""

    name = "solver"

    def init(self, objective: Objective, x0: np.ndarray) -> SolverState:
        f, g = objective.loss_grad(x0)
        return SolverState(x=x0, f=f + l1_value(objective, x0), g=g, opt_norm=optimality_norm(objective, x0, g))

    def step(self, objective: Objective, state: SolverState) -> SolverState:  # pragma: no cover - abstract
        raise NotImplementedError

    def terminate(self, state: SolverState, tol: float, scale: float) -> Optional[Termination]:
        if state.failure is not None:
            return state.failure
        if state.opt_norm <= tol * scale:
            return Status.CONVERGED, "projected gradient norm <= tol relative to the start"
        return None

    def candidate(self, state: SolverState, x_before: np.ndarray) -> tuple[np.ndarray, float, Optional[np.ndarray]]:
        """(x, F(x), gradient or None) of the last step, for the loop's best-iterate record."""
        return state.x, state.f, state.g

    def answer(self, state: SolverState, best: tuple, status: Status) -> tuple:
        """(x, F or None, gradient or None) the run returns: the best iterate seen. None means
        "evaluate exactly once" (see sparkopt.solvers.result.finish)."""
        return best


class SampledSolver(Solver):
    """A method that sees samples (SGD and its relatives): ``state.f`` is an estimate of F at the
    iterate the step started from, a sampled gradient never vanishes, so convergence is MLlib's
    test on the iterate change, ``|x_k - x_{k-1}| / max(|x_k|, 1) < tol`` (kept in
    ``memory["change"]``), and the answer is the last iterate, evaluated exactly once.

    With ``averaging`` the answer is instead the polynomial-decay average of the iterates
    (Shamir & Zhang 2013; weights growing like k^3, so the early transient fades): it removes most
    of the noise a constant step leaves, and the change test applies to the average. Under an L1
    term the last (proximal, hence sparse) iterate is the answer: an average of sparse iterates
    is not sparse. Subclasses call :meth:`start_averaging` in init and :meth:`advance` per step."""

    averaging = False
    AVERAGE_ETA = 3.0

    def terminate(self, state: SolverState, tol: float, scale: float) -> Optional[Termination]:
        if state.failure is not None:
            return state.failure
        if state.memory.get("change", np.inf) < tol:
            return Status.CONVERGED, "relative change of the " + ("averaged " if self.averaging else "") + "iterate < tol"
        return None

    def candidate(self, state, x_before):
        if "backoff" in state.info:         # the step was undone: x_before was not healthy
            return state.x, np.inf, None
        return x_before, state.f, None

    def answer(self, state, best, status):
        if status == Status.DIVERGED:
            return best[0], None, None
        if state.memory.get("averaged"):
            return state.memory["average"], None, None
        return state.x, None, None

    def start_averaging(self, objective: Objective, state: SolverState) -> None:
        state.memory["averaged"] = bool(self.averaging and objective.l1_weights is None)
        state.memory["average"] = state.x.copy()

    def advance(self, state: SolverState, x_new: np.ndarray, k: int) -> None:
        """Record the move to x_new at step k: the running average (when averaging) and the
        relative change the convergence test reads."""
        if state.memory.get("averaged"):
            rho = (self.AVERAGE_ETA + 1.0) / (k + self.AVERAGE_ETA)
            old = state.memory.get("average", state.x)
            new = (1.0 - rho) * old + rho * x_new
            state.memory["average"] = new
            state.memory["change"] = float(np.linalg.norm(new - old)) / max(float(np.linalg.norm(new)), 1.0)
        else:
            state.memory["change"] = float(np.linalg.norm(x_new - state.x)) / max(float(np.linalg.norm(x_new)), 1.0)


class OwnLoopSolver:
    """A method that cannot run one step at a time on the driver because its iterations happen in
    workers (the asynchronous parameter server): ``minimize`` hands it the budget and the callback
    and returns what :meth:`run` returns (built with sparkopt.solvers.result.finish)."""

    name = "own-loop"

    def run(self, objective: Objective, x0: np.ndarray, *, tol: float, max_iter: int, max_passes: Optional[float],
            callback: Any, warn: bool, store: Any = None, checkpoint_interval: int = 10) -> Any:  # pragma: no cover
        raise NotImplementedError
