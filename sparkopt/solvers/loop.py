"""``minimize(objective, x0, method)``: the one iteration loop every step-wise solver runs in.

The loop owns the budgets (max_iter, max_passes), timing, the history, the callback, the best
finite iterate, checkpoints and the final result; a solver only knows how to take one step and
when it is done (sparkopt.solvers.solver). Driver side only; never imports pyspark.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional, Union

import numpy as np

from ..rules import check_param
from .checkpoint import CheckpointStore, problem_fingerprint, restore, snapshot
from .objective import InexactObjective, Objective, TrafficCounted
from .registry import choose_solver, has_l1, make_solver
from .result import OptimizeResult, Status, convergence_scale, finish, l1_value, optimality_norm, rounding_error
from .solver import Callback, OwnLoopSolver, SampledSolver, Solver, SolverState

__all__ = ["minimize"]

logger = logging.getLogger("sparkopt")

# an exact solver whose F has stayed within its rounding error, without halving its gradient norm,
# for this many iterations is at the precision limit (tol asks for more than float64 gives)
STALL_ITERATIONS = 20

# a compressed run whose steps fail again this soon after a refresh goes on with exact values
REFRESH_ITERATIONS = 10

# the endings an inexact objective's run must confirm with exact values (the others -- budgets,
# a callback, divergence -- end the run whatever the values)
_CONFIRM = (Status.CONVERGED, Status.NO_PROGRESS, Status.PRECISION_LIMIT)

# the statuses after which the state is whole and worth a final checkpoint (a failed step may
# have left it half-updated: its rerun replays the last interval instead)
_CLEAN_END = (Status.CONVERGED, Status.MAX_ITER, Status.MAX_PASSES, Status.CALLBACK_STOP, Status.PRECISION_LIMIT)


def _finite(*arrays) -> bool:
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


class _Run:
    """The loop's bookkeeping for one run: counters, history, the best iterate, the checkpoint
    store. Counters continue those of the run a checkpoint came from."""

    def __init__(self, objective: Objective, solver: Solver, store: Optional[CheckpointStore]):
        self.objective, self.solver, self.store = objective, solver, store
        self.start = time.perf_counter()
        self.passes0, self.evaluations0 = objective.passes, objective.evaluations
        traffic = isinstance(objective, TrafficCounted)
        self.traffic0 = {"bytes_sent": objective.bytes_sent, "bytes_received": objective.bytes_received} if traffic else {}
        self.before = {"passes": 0.0, "evaluations": 0, "seconds": 0.0}
        self.history: list[dict] = []
        self.saved_iteration: Optional[int] = None
        self.best_opt = np.inf  # smallest optimality norm so far
        self.progress: list[tuple[float, float, float]] = []   # (best F, best optimality, F) recently
        self.refreshed_at: Optional[int] = None   # the iteration an inexact objective was last refreshed at

    # -- counters
    def passes(self) -> float:
        return self.before["passes"] + float(self.objective.passes - self.passes0)

    def evaluations(self) -> int:
        return self.before["evaluations"] + int(self.objective.evaluations - self.evaluations0)

    def seconds(self) -> float:
        return self.before["seconds"] + time.perf_counter() - self.start

    # -- start: fresh or from a checkpoint
    def begin(self, x0: np.ndarray, gradient_scale: Optional[float]) -> SolverState:
        n = self.objective.n_params
        loaded = self.store.load(decode=lambda payload, arrays: restore(payload, arrays, n)) \
            if self.store is not None else None
        if loaded is not None:
            state, loop = loaded
            self.history, self.scale = loop["history"], loop["scale"]
            self.best = (loop["best_x"], loop["best_f"], loop["best_g"])
            self.before = {key: loop[key] for key in ("passes", "evaluations", "seconds")}
            self.saved_iteration = state.iteration
            logger.info("resuming from checkpoint at iteration %d (%s)", state.iteration, self.store.directory)
            return state
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            state = self.solver.init(self.objective, x0)
        scale = convergence_scale(self.objective, state.x, state.g, state.opt_norm) if gradient_scale is None else gradient_scale
        self.scale = float(scale) if np.isfinite(scale) and scale > 0 else 1.0
        self.record(state)      # a solver's init may start its own columns (local-sgd: rounds 0)
        finite = _finite(state.f, state.x)
        self.best = (state.x.copy(), state.f, state.g) if finite else (x0, np.inf, None)
        return state

    def record(self, state: SolverState) -> dict:
        row = {"iteration": state.iteration, "objective": float(state.f), "grad_norm": float(state.opt_norm),
               "step_size": float(state.step_size), "passes": self.passes(), "seconds": self.seconds()}
        for key, base in self.traffic0.items():
            row[key] = int(getattr(self.objective, key) - base)
        row.update(state.info)
        self.history.append(row)
        logger.info("iter %4d  objective %.12g  grad %.3e  step %.3e  passes %g  %.2fs", row["iteration"],
                    row["objective"], row["grad_norm"], row["step_size"], row["passes"], row["seconds"])
        return row

    def keep_best(self, state: SolverState, x_before: np.ndarray) -> None:
        x, f, g = self.solver.candidate(state, x_before)
        if np.isfinite(f) and (f <= self.best[1] or self._ties_closer(x, f, g)):
            self.best = (x.copy(), f, g)
        self.best_opt = min(self.best_opt, state.opt_norm)
        self.progress.append((self.best[1], self.best_opt, f))
        del self.progress[:-(STALL_ITERATIONS + 1)]

    def _ties_closer(self, x, f, g) -> bool:
        """F within rounding of the best's and a smaller optimality norm: near the optimum F can
        no longer rank two iterates (measured: Newton's converged last iterate, gradient 3e-16,
        lost to the one before it, gradient 1e-9, by 6e-17 in F), the gradient still can."""
        best_x, best_f, best_g = self.best
        if g is None or best_g is None or not f <= best_f + rounding_error(best_f):
            return False
        return optimality_norm(self.objective, x, g) < optimality_norm(self.objective, best_x, best_g)

    def stalled(self) -> bool:
        """An exact solver that, over the last STALL_ITERATIONS iterations, lowered F by less than
        its rounding error per iteration and did not halve its best optimality norm: it is at
        float64's limit (progress smaller than that is not progress one could measure)."""
        if isinstance(self.solver, SampledSolver) or len(self.progress) <= STALL_ITERATIONS:
            return False
        (f_then, opt_then, _), (f_now, opt_now, _) = self.progress[0], self.progress[-1]
        band = STALL_ITERATIONS * rounding_error(f_then)
        # flat: the iterates' F stays within the band too (a run whose F climbs is diverging)
        flat = all(abs(f - f_now) <= band for _, _, f in self.progress)
        return flat and f_then - f_now <= band and opt_now > 0.5 * opt_then

    def confirm_exactly(self, state: SolverState, ending: tuple) -> bool:
        """When the objective's values are inexact (compressed exchanges) and the run is about to
        end: evaluate the iterate once more with exact values and go on (True), so the solver's
        next test or step decides on them. A failed step refreshes the values (the next pass is
        exact, later ones compressed again); convergence, or another failure within
        REFRESH_ITERATIONS iterations of a refresh (near the optimum the errors stay as large as
        the changes), makes every later value exact. The best iterate so far is forgotten: its F was
        inexact."""
        objective = self.objective
        if ending[0] not in _CONFIRM or not isinstance(objective, InexactObjective) or not objective.inexact:
            return False
        if ending[0] == Status.CONVERGED or (self.refreshed_at is not None
                                             and state.iteration - self.refreshed_at < REFRESH_ITERATIONS):
            objective.make_exact(f"the solver's {ending[0].name} on inexact values at iteration {state.iteration} "
                                 "is checked with exact ones")
        else:
            objective.refresh(f"{ending[0].name} at iteration {state.iteration}: the solver retries from exact values")
            self.refreshed_at = state.iteration
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            f, g = objective.loss_grad(state.x)
        state.f, state.g = f + l1_value(objective, state.x), g
        state.opt_norm = optimality_norm(objective, state.x, g)
        state.failure = None
        self.best = (state.x.copy(), state.f, state.g) if _finite(state.f, state.g) else (state.x.copy(), np.inf, None)
        self.progress.clear()
        return True

    def checkpoint(self, state: SolverState) -> None:
        best_x, best_f, best_g = self.best
        meta, arrays = snapshot(state, dict(history=self.history, best_x=best_x, best_f=best_f, best_g=best_g,
                                            scale=self.scale, passes=self.passes(), seconds=self.seconds(),
                                            evaluations=self.evaluations()))
        self.store.save(state.iteration, meta, arrays)
        self.saved_iteration = state.iteration


def _callback_stops(callback: Optional[Callback], row: dict, x: np.ndarray) -> bool:
    if callback is None:
        return False
    try:
        return bool(callback(dict(row, x=x.copy())))
    except StopIteration:
        return True


def minimize(
    objective: Objective,
    x0: Optional[np.ndarray] = None,
    method: Union[str, Solver, OwnLoopSolver] = "auto",
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
    max_passes: Optional[float] = None,
    callback: Optional[Callback] = None,
    options: Optional[dict[str, Any]] = None,
    warn: bool = True,
    gradient_scale: Optional[float] = None,
    checkpoint_dir: Optional[Union[str, os.PathLike]] = None,
    checkpoint_interval: int = 10,
    checkpoint_fingerprint: Optional[dict] = None,
) -> OptimizeResult:
    """Minimize F(x) = smooth(x) + sum_j l1_j |x_j| with the named solver (or a Solver instance).

    Converged (status 0) when the solver's test holds: for the deterministic solvers the inf-norm
    of the (pseudo-)gradient is <= tol * gradient_scale, by default its inf-norm at x0 (a relative
    reduction, as TRON / LIBLINEAR: invariant to the scale of the labels; a warm start should pass
    the norm at the cold start); for the SGD family MLlib's relative iterate change < tol.
    ``callback(record)`` is called after every iteration with the history record (plus 'x');
    returning True (or raising StopIteration) stops the run with status CALLBACK_STOP.
    ``options`` go to the solver (sparkopt.solvers.registry.make_solver warns about unknown ones).

    With ``checkpoint_dir``, the loop's whole state (iterate, F, gradient, solver memory,
    iteration count, history, best iterate, convergence scale, pass / evaluation / second
    counters) is written there every ``checkpoint_interval`` iterations and when the run ends
    cleanly (converged, max_iter, max_passes, callback stop), and a run that finds a checkpoint
    resumes from it: the result is the one an uninterrupted run gives (bit for bit for the
    deterministic solvers; SGD's and local SGD's samples are seeded by (seed, iteration), so they
    too). The checkpoint must belong to the same problem (n_params, solver and its settings, x0,
    the objective's ``fingerprint()``, ``checkpoint_fingerprint``); a difference raises
    CheckpointError. One run per directory; see sparkopt.solvers.checkpoint.
    """
    check_param("maxIter", max_iter)
    check_param("tol", tol)
    if max_passes is not None:
        check_param("maxPasses", max_passes)
    if checkpoint_dir is not None:
        check_param("checkpointInterval", checkpoint_interval)
    if isinstance(method, (Solver, OwnLoopSolver)):
        solver = method
    else:
        solver = make_solver(choose_solver(objective, method), options or {}, l1=has_l1(objective))
    x0 = np.zeros(objective.n_params) if x0 is None else np.array(x0, dtype=float, copy=True)
    if x0.shape != (objective.n_params,):
        raise ValueError(f"x0 must have shape ({objective.n_params},), got {x0.shape}")
    store = None
    if checkpoint_dir is not None:
        store = CheckpointStore(checkpoint_dir, problem_fingerprint(objective, solver, x0, checkpoint_fingerprint))
        store.acquire()               # one writer per directory, held for the whole run
    try:
        if isinstance(solver, OwnLoopSolver):
            return solver.run(objective, x0, tol=tol, max_iter=max_iter, max_passes=max_passes, callback=callback,
                              warn=warn, store=store, checkpoint_interval=checkpoint_interval)
        return _iterate(objective, solver, x0, store, tol=tol, max_iter=max_iter, max_passes=max_passes,
                        callback=callback, warn=warn, gradient_scale=gradient_scale,
                        checkpoint_interval=checkpoint_interval)
    finally:
        if store is not None:
            store.release()


def _iterate(objective, solver, x0, store, *, tol, max_iter, max_passes, callback, warn, gradient_scale,
             checkpoint_interval) -> OptimizeResult:
    """minimize's loop proper (see there), with the checkpoint store, if any, already locked."""
    run = _Run(objective, solver, store)
    state = run.begin(x0, gradient_scale)
    ending = (Status.DIVERGED, "") if not _finite(state.f, state.g) else None
    while ending is None:
        ending = solver.terminate(state, tol, run.scale)
        if ending is None and state.iteration >= max_iter:
            ending = (Status.MAX_ITER, "")
        if ending is None and max_passes is not None and run.passes() >= max_passes:
            ending = (Status.MAX_PASSES, "")
        if ending is not None:
            if run.confirm_exactly(state, ending):
                ending = None
                continue
            break
        state.info = {}
        x_before = state.x
        # overflow on the way to divergence is detected below and reported in the status
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            state = solver.step(objective, state)
        if state.failure is not None:         # the step could not be taken: not an iteration
            ending = state.failure
            if run.confirm_exactly(state, ending):
                ending = None
                continue
            break
        state.iteration += 1
        row = run.record(state)
        if not _finite(state.x, state.g, state.f):
            ending = (Status.DIVERGED, "")
            break
        run.keep_best(state, x_before)
        if run.stalled():
            ending = solver.terminate(state, tol, run.scale) or (
                Status.PRECISION_LIMIT, f"{STALL_ITERATIONS} iterations without progress beyond F's rounding error")
            if run.confirm_exactly(state, ending):
                ending = None
        # before the callback: a callback that interrupts (KeyboardInterrupt) loses nothing
        if store is not None and state.iteration % checkpoint_interval == 0:
            run.checkpoint(state)
        if _callback_stops(callback, row, state.x) and ending is None:
            ending = (Status.CALLBACK_STOP, "")

    status, detail = ending
    if status in (Status.PRECISION_LIMIT, Status.NO_PROGRESS) and not objective.smooth:
        # at a kink of a non-smooth loss (hinge) the gradient never vanishes: no descent step
        # left is how (quasi-)Newton methods end there (Lewis & Overton 2013), and MLlib's
        # LinearSVC stops on F's change too
        status, detail = Status.CONVERGED, f"{detail}; the loss is not smooth: F no longer decreases"
    if store is not None and run.saved_iteration != state.iteration and status in _CLEAN_END:
        run.checkpoint(state)        # a rerun returns this result; a larger max_iter continues
    x, fun, jac = solver.answer(state, run.best, status)
    if isinstance(objective, InexactObjective) and objective.inexact:
        # a budget or the callback ended a run on inexact values: F and the gradient of the answer
        # are evaluated exactly once (in finish)
        objective.make_exact(f"the run ended ({status.name}) on inexact values")
        fun, jac = None, None
    return finish(objective, solver=solver.name, x=x, status=status, nit=state.iteration, passes=run.passes(),
                  nfev=run.evaluations(), history=run.history, seconds=run.seconds(), fun=fun, jac=jac,
                  detail=detail, threshold=tol * run.scale, warn=warn, stacklevel=4)
