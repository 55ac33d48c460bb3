"""minimize(objective, x0, method): the one iteration loop every solver runs in.

The loop owns max_iter, max_passes, timing, the history, callbacks, divergence guards, warnings
and the final OptimizeResult; a solver only knows how to take one step.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any, Optional, Union

import numpy as np

from .checkpoint import CheckpointStore, array_digest, restore, snapshot, valid_interval
from .base import STATUS_MESSAGES, Callback, ConvergenceWarning, Objective, OptimizeResult, Status
from .async_sgd import AsyncSGD
from .gd import GradientDescent
from .lbfgs import LBFGS, OWLQN
from .newton import Newton, ProximalNewton, TrustRegionNewtonCG
from .local_sgd import LocalSGD
from .sgd import MiniBatchSGD
from .state import Solver, optimality_norm, l1_value

logger = logging.getLogger("sparkopt")

SOLVERS = ("auto", "gd", "sgd", "local-sgd", "async-sgd", "lbfgs", "owlqn", "newton", "newton-cg")
# exact Newton aggregates a dense p x p Hessian per partition: keep p small enough to be cheap
EXACT_NEWTON_MAX_PARAMS = 1024
# auto takes exact Newton only while a Hessian pass costs at most this many gradient passes, and
# the trust-region Newton-CG (Hessian-vector products, ~2 gradient passes each) beyond: measured
# in memory (regParam 1e-3, 2 cores) on letter (26 classes x 16 dense features, Hessian ~100
# gradients) Newton 3.1 s / Newton-CG 1.9 s / L-BFGS not converged in 100 iterations, and on
# 3e5 x 100 dense logistic (~25 gradients) 2.6 s / 1.1 s / 0.7 s. L-BFGS is fastest when it
# converges, Newton-CG converges on both.
AUTO_NEWTON_MAX_HESSIAN_COST = 8.0


def _has_l1(objective: Objective) -> bool:
    w = objective.l1_weights
    return w is not None and bool(np.any(w > 0))


def choose_solver(objective: Objective, method: str = "auto") -> str:
    """The solver a name resolves to for this objective (`auto`, or `lbfgs`/`newton` variants)."""
    if method not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {method!r}")
    l1 = _has_l1(objective)
    small_newton = objective.smooth and objective.has_hessian and objective.n_params <= EXACT_NEWTON_MAX_PARAMS
    if method == "auto":
        cheap_hessian = getattr(objective, "hessian_cost", 1.0) <= AUTO_NEWTON_MAX_HESSIAN_COST
        if l1:
            return "newton" if small_newton and cheap_hessian else "owlqn"
        if objective.smooth and objective.has_hessian:
            return "newton" if small_newton and cheap_hessian else "newton-cg"
        return "lbfgs"
    if method == "newton" and l1 and small_newton:
        return "newton"                # proximal Newton: the L1 model solved on the driver
    if method in ("lbfgs", "newton", "newton-cg") and l1:
        return "owlqn"                 # as MLlib: L-BFGS becomes OWL-QN under an L1 term
    if method == "newton":
        if not objective.has_hessian:
            raise ValueError("solver='newton' needs a twice-differentiable loss (hinge is not); use 'lbfgs'")
        return "newton" if objective.n_params <= EXACT_NEWTON_MAX_PARAMS else "newton-cg"
    return method


def make_solver(name: str, options: dict[str, Any], l1: bool = False) -> Solver:
    opts = dict(options)
    if name == "newton" and l1:
        return ProximalNewton()
    if name == "gd":
        return GradientDescent(step_size=opts.pop("step_size", None))
    if name == "sgd":
        return MiniBatchSGD(**{k: opts[k] for k in ("step_size", "fraction", "schedule", "decay", "momentum", "seed") if k in opts})
    if name == "async-sgd":
        return AsyncSGD(**{k: opts[k] for k in ("step_size", "fraction", "schedule", "decay", "seed",
                                                "deterministic", "delays") if k in opts},
                        tau=opts.get("staleness", 2))
    if name == "local-sgd":
        return LocalSGD(**{k: opts[k] for k in ("step_size", "fraction", "schedule", "decay", "local_steps",
                                                "combination", "seed") if k in opts})
    if name == "lbfgs":
        return LBFGS(memory=opts.get("memory", 10))
    if name == "owlqn":
        return OWLQN(memory=opts.get("memory", 10))
    if name == "newton":
        return Newton(fallback_memory=opts.get("memory", 10))
    if name == "newton-cg":
        return TrustRegionNewtonCG(max_cg=opts.get("max_cg", 250))
    raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")


def _solver_config(solver: Solver) -> dict:
    """A solver's settings (scalar attributes, nested solvers) for the checkpoint fingerprint."""
    out: dict[str, Any] = {"class": type(solver).__name__}
    for key, value in sorted(vars(solver).items()):
        if isinstance(value, Solver):
            out[key] = _solver_config(value)
        elif value is None or isinstance(value, (bool, int, float, str, np.number)):
            out[key] = value
    return out


def problem_fingerprint(objective: Objective, solver: Solver, x0: np.ndarray, extra: Optional[dict] = None) -> dict:
    """What a checkpoint must agree on to be resumed: parameters, solver and its settings, x0,
    the L1 weights, the objective's own description (`objective.fingerprint()`, optional) and
    whatever the caller adds (`extra`)."""
    l1 = objective.l1_weights
    fp: dict[str, Any] = {
        "n_params": int(objective.n_params), "solver": solver.name, "solver_config": _solver_config(solver),
        "x0": array_digest(x0), "l1_weights": None if l1 is None else array_digest(l1),
    }
    describe = getattr(objective, "fingerprint", None)
    if callable(describe):
        fp["objective"] = describe()
    if extra:
        fp["caller"] = dict(extra)
    return fp


def _finite(*arrays) -> bool:
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def minimize(
    objective: Objective,
    x0: Optional[np.ndarray] = None,
    method: Union[str, Solver] = "auto",
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
    """Minimize F(x) = smooth(x) + sum_j l1_j |x_j| with the named solver.

    Converged (status 0) when the inf-norm of the (pseudo-)gradient is <= tol * gradient_scale,
    by default the gradient's inf-norm at x0 (a relative reduction, as TRON / LIBLINEAR: invariant
    to the scale of the labels); a warm start should pass the norm at the cold starting point
    (SGD: MLlib's relative iterate change < tol). callback(record) is called after every
    iteration with the history record (plus 'x'); returning True (or raising StopIteration) stops
    the run with status CALLBACK_STOP.

    With `checkpoint_dir`, the loop's whole state (iterate, f, g, solver memory, iteration count,
    history, best-iterate bookkeeping, convergence scale, pass/evaluation/second counters) is
    written there every `checkpoint_interval` iterations and when the run ends without failing
    (converged, max_iter, max_passes, callback stop), and a run that finds a checkpoint there
    resumes from it instead of calling the solver's init: the result (x, history, nit, passes) is
    then the one an uninterrupted run gives (bit for bit for the deterministic solvers; SGD's and local SGD's
    samples are seeded by (seed, iteration), so they too). The checkpoint must belong to the same
    problem: n_params, solver and its settings, x0, the objective's own `fingerprint()` when it
    has one, and `checkpoint_fingerprint` (what the caller knows: loss, params, data shape);
    a difference raises CheckpointError. One run per directory; see solvers/checkpoint.py.
    """
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 0):
        raise ValueError(f"maxIter must be an integer >= 0, got {max_iter!r}")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if max_passes is not None and not max_passes > 0:
        raise ValueError(f"maxPasses must be > 0, got {max_passes!r}")
    if checkpoint_dir is not None and not valid_interval(checkpoint_interval):
        raise ValueError(f"checkpointInterval must be an integer >= 1, got {checkpoint_interval!r}")
    if isinstance(method, (Solver, AsyncSGD)):
        solver = method
    else:
        solver = make_solver(choose_solver(objective, method), options or {}, l1=_has_l1(objective))
    x0 = np.zeros(objective.n_params) if x0 is None else np.array(x0, dtype=float, copy=True)
    if x0.shape != (objective.n_params,):
        raise ValueError(f"x0 must have shape ({objective.n_params},), got {x0.shape}")
    if isinstance(solver, AsyncSGD):
        # workers and a parameter server, not one step at a time: its own loop
        if checkpoint_dir is not None:
            raise ValueError("checkpointDir is not supported with solver='async-sgd' (its state lives in the workers)")
        result = solver.run(objective, x0, tol=tol, max_iter=max_iter, callback=callback)
        if result.status not in (Status.CONVERGED, Status.CALLBACK_STOP) and warn:
            warnings.warn(f"sparkopt {solver.name}: {result.message} (nit={result.nit}, "
                          f"grad_norm={result.grad_norm:.3g})", ConvergenceWarning, stacklevel=2)
        return result

    store = None
    loaded = None
    if checkpoint_dir is not None:
        store = CheckpointStore(checkpoint_dir, problem_fingerprint(objective, solver, x0, checkpoint_fingerprint))
        loaded = store.load()

    start = time.perf_counter()
    passes0 = objective.passes
    evaluations0 = getattr(objective, "evaluations", 0)
    # communication, when the objective's engine counts it (cumulative since this call, like passes)
    traffic0 = {key: getattr(objective, key) for key in ("bytes_sent", "bytes_received") if hasattr(objective, key)}
    # counters carried over from the run a checkpoint came from (zero on a fresh start)
    passes_before, evaluations_before, seconds_before = 0.0, 0, 0.0

    def passes_done() -> float:
        return passes_before + float(objective.passes - passes0)

    def seconds_done() -> float:
        return seconds_before + time.perf_counter() - start

    if loaded is not None:
        state, loop = restore(*loaded)
        history: list[dict] = loop["history"]
        scale = loop["scale"]
        best_x, best_f, best_g = loop["best_x"], loop["best_f"], loop["best_g"]
        passes_before, evaluations_before, seconds_before = loop["passes"], loop["evaluations"], loop["seconds"]
        saved_iteration = state.iteration
        logger.info("resuming from checkpoint at iteration %d (%s)", state.iteration, store.directory)
    else:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            state = solver.init(objective, x0)
        if gradient_scale is None:
            gradient_scale = state.opt_norm
        scale = float(gradient_scale) if np.isfinite(gradient_scale) and gradient_scale > 0 else 1.0
        history = []
        saved_iteration = None

    def checkpoint() -> None:
        nonlocal saved_iteration
        meta, arrays = snapshot(state, dict(history=history, best_x=best_x, best_f=best_f, best_g=best_g,
                                            scale=scale, passes=passes_done(), seconds=seconds_done(),
                                            evaluations=evaluations_before + getattr(objective, "evaluations", 0)
                                            - evaluations0))
        store.save(state.iteration, meta, arrays)
        saved_iteration = state.iteration

    def record(extra: dict) -> dict:
        row = {
            "iteration": state.iteration,
            "objective": float(state.f),
            "grad_norm": float(state.opt_norm),
            "step_size": float(state.step_size),
            "passes": passes_done(),
            "seconds": seconds_done(),
        }
        for key, base in traffic0.items():
            row[key] = int(getattr(objective, key) - base)
        row.update(extra)
        history.append(row)
        logger.info(
            "iter %4d  objective %.12g  grad %.3e  step %.3e  passes %g  %.2fs",
            row["iteration"], row["objective"], row["grad_norm"], row["step_size"], row["passes"], row["seconds"],
        )
        return row

    status: Optional[Status] = None
    if loaded is None:
        record(state.info)      # a solver's init may start its own columns (local-sgd: rounds 0)
        # the best finite iterate is what a diverging run returns
        best_x, best_f, best_g = (state.x.copy(), state.f, state.g) if _finite(state.f, state.x) else (x0, np.inf, None)
        if not _finite(state.f, state.g):
            status = Status.DIVERGED
    while status is None:
        if solver.converged(state, tol, scale):
            status = Status.CONVERGED
            break
        if state.iteration >= max_iter:
            status = Status.MAX_ITER
            break
        if max_passes is not None and passes_done() >= max_passes:
            status = Status.MAX_PASSES
            break
        state.info = {}
        x_before = state.x
        # overflow on the way to divergence is detected below and reported in the status
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            state = solver.step(objective, state)
        if state.stop is not None:
            status = state.stop
            break
        state.iteration += 1
        row = record(state.info)
        if not _finite(state.x, state.g, state.f):
            status = Status.DIVERGED
            break
        if solver.exact_objective and state.f <= best_f:
            best_x, best_f, best_g = state.x.copy(), state.f, state.g
        elif not solver.exact_objective and np.isfinite(state.f) and state.f <= best_f:
            # a sampled solver estimates F at the iterate it started the step from
            best_x, best_f, best_g = x_before.copy(), state.f, None
        # before the callback: a callback that interrupts (KeyboardInterrupt) loses nothing
        if store is not None and state.iteration % checkpoint_interval == 0:
            checkpoint()
        if callback is not None:
            try:
                stop = callback(dict(row, x=state.x.copy()))
            except StopIteration:
                stop = True
            if stop:
                status = Status.CALLBACK_STOP
                break

    # a clean end leaves a checkpoint of the final state: a rerun then returns this result
    # without passes over the data, and a larger max_iter continues from here; a failed step
    # (no progress, divergence) may have left the state half-updated, so its rerun replays the
    # last interval instead
    if (store is not None and saved_iteration != state.iteration
            and status in (Status.CONVERGED, Status.MAX_ITER, Status.MAX_PASSES, Status.CALLBACK_STOP)):
        checkpoint()

    if solver.exact_objective or status == Status.DIVERGED:
        x, fun, g = best_x, float(best_f), best_g
    else:
        x, g = state.x, None              # a sampled solver's answer is its last iterate
    if g is None:
        # sampled solvers only estimated F along the way: one exact pass at the end
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            fun, g = objective.loss_grad(x)
        fun += l1_value(objective, x)
        if not _finite(fun, g):
            status = Status.DIVERGED
    grad_norm = optimality_norm(objective, x, g) if _finite(g) else float("inf")
    message = STATUS_MESSAGES[status]
    if status == Status.NO_PROGRESS and grad_norm <= 10 * tol * scale:
        message += f" (gradient norm {grad_norm:.3g} is within 10x of the tolerance: tol may be tighter than the attainable precision)"
    result = OptimizeResult(
        x=x, fun=float(fun), grad_norm=float(grad_norm), nit=state.iteration,
        passes=passes_done(), nfev=int(evaluations_before + getattr(objective, "evaluations", 0) - evaluations0),
        status=status, message=message, solver=solver.name, history=history, jac=g, seconds=seconds_done(),
    )
    if status not in (Status.CONVERGED, Status.CALLBACK_STOP) and warn:
        warnings.warn(f"sparkopt {solver.name}: {message} (nit={result.nit}, grad_norm={grad_norm:.3g})",
                      ConvergenceWarning, stacklevel=2)
    return result
