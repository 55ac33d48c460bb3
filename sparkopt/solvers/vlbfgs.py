"""Vector-free L-BFGS and OWL-QN (Chen, Wang & Zhou, "Large-scale L-BFGS using MapReduce",
NIPS 2014) over a :class:`~sparkopt.solvers.objective.DistributedVectors` objective.

Driver side only; never imports pyspark. Every n_params-long vector (the iterate, the gradient,
the pseudo-gradient, the m correction pairs, the direction, the line search's trials) lives where
the objective keeps it, under a name; the driver holds scalars, names and the dot products of
the basis ``b = [s_0 .. s_{m-1}, y_0 .. y_{m-1}, g]``, i.e. the (2m+1)^2 matrix on which the
two-loop recursion runs. The recursion's result is a coefficient vector ``delta`` with
``H g = sum_j delta_j b_j``, turned into the direction by one ``combine`` where the vectors are.
Per iteration the vectors see: one program that builds the direction and its slope, one program
per line-search trial (the step, the loss and gradient pass, the slope and norms at the trial),
and one that forms the new pair and every new dot product.

The iterates are those of :class:`~sparkopt.solvers.lbfgs.LBFGS` / :class:`OWLQN` (same line
searches, same safeguards, same pair test), up to the rounding of dot products taken from the
matrix instead of from the vectors (tested to 1e-10 on a9a and letter). The loop mirrors
:func:`~sparkopt.solvers.loop.minimize`'s: budgets, history, callback, the best iterate (kept by
name), the precision stall, checkpoints (the objective stores the named vectors shard by shard;
the driver's scalars go in the manifest) and one result record.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..rules import check_param
from .linesearch import strong_wolfe
from .loop import STALL_ITERATIONS
from .objective import DistributedVectors, require
from .result import Status, conclude, rounding_error

__all__ = ["VectorFreeLBFGS", "VectorHandle", "two_loop_coefficients", "vector_free_fingerprint"]

logger = logging.getLogger("sparkopt")

_CLEAN_END = (Status.CONVERGED, Status.MAX_ITER, Status.MAX_PASSES, Status.CALLBACK_STOP, Status.PRECISION_LIMIT)


@dataclass(frozen=True)
class VectorHandle:
    """A vector the objective holds under ``name`` (``n`` values): what a vector-free run returns
    as its ``x`` and ``jac`` (``objective.vec_gather(name)`` fetches it whole)."""

    name: str
    n: int


def two_loop_coefficients(gram: np.ndarray, m: int) -> np.ndarray:
    """Coefficients ``delta`` (2m+1,) with ``H g = sum_j delta_j b_j`` for the basis
    ``b = [s_0..s_{m-1}, y_0..y_{m-1}, g]`` (oldest pair first) whose dot products are ``gram``:
    the two-loop recursion of :func:`~sparkopt.solvers.lbfgs.two_loop` step for step, every
    ``v . q`` taken from the matrix (``q`` is a combination of the basis)."""
    q = np.zeros(2 * m + 1)
    q[2 * m] = 1.0
    if m == 0:
        return q
    S, Y = np.arange(m), m + np.arange(m)
    rho = [1.0 / gram[Y[i], S[i]] for i in range(m)]
    alpha = np.zeros(m)
    for i in reversed(range(m)):
        alpha[i] = rho[i] * float(gram[S[i]] @ q)
        q[Y[i]] -= alpha[i]
    q *= gram[S[m - 1], Y[m - 1]] / gram[Y[m - 1], Y[m - 1]]
    for i in range(m):
        beta = rho[i] * float(gram[Y[i]] @ q)
        q[S[i]] += alpha[i] - beta
    return q


def vector_free_fingerprint(objective: Any, solver: "VectorFreeLBFGS", extra: Optional[dict] = None) -> dict:
    """What a vector-free checkpoint must agree on (the vector analogue of
    sparkopt.solvers.checkpoint.problem_fingerprint): size, solver settings, the L1 term's
    presence, the objective's own description and the caller's."""
    fp: dict[str, Any] = {"n_params": int(objective.n_params), "solver": "vector-free",
                          "memory": int(solver.m), "l1": bool(objective.has_l1)}
    if callable(getattr(objective, "fingerprint", None)):
        fp["objective"] = objective.fingerprint()
    if extra:
        fp["caller"] = dict(extra)
    return fp


class _Trial:
    """One line-search trial: its vector names and scalars."""

    def __init__(self, x: str, g: str, pg: Optional[str], f: float, slope: float, opt_norm: float, l1_norm: float):
        self.x, self.g, self.pg, self.f, self.slope = x, g, pg, f, slope
        self.opt_norm, self.l1_norm = opt_norm, l1_norm


class VectorFreeLBFGS:
    """L-BFGS (OWL-QN when the objective has an L1 term) with ``memory`` correction pairs, on
    vectors the driver never holds. ``run`` is the whole loop (like an
    :class:`~sparkopt.solvers.solver.OwnLoopSolver`); see the module docstring."""

    def __init__(self, memory: int = 10):
        self.m = int(check_param("memory", memory))
        self._counter = 0

    # -- naming
    def _new(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    # -- the objective's vectors
    def _run(self, program: list) -> list:
        """Run a program, preceded by the deletions queued since the last one (one round trip)."""
        if self._doomed:
            program = [("delete",) + tuple(self._doomed)] + list(program)
            self._doomed = []
        return self.obj.vec_run(program)

    @staticmethod
    def _key(a: str, b: str) -> tuple:
        return (a, b) if a <= b else (b, a)

    def _dot(self, a: str, b: str) -> float:
        return self.dots[self._key(a, b)]

    def _forget(self, *names: str) -> None:
        keep = {self.x, self.g, self.pg, self.best[0], self.best[2]} | set(self.S) | set(self.Y)
        drop = [n for n in names if n is not None and n not in keep]
        if drop:
            self._doomed.extend(n for n in drop if n not in self._doomed)
            self.dots = {k: v for k, v in self.dots.items() if k[0] not in drop and k[1] not in drop}

    # -- evaluation at a point
    def _evaluate(self, x: str, d: str, t: float, orthant: Optional[str]) -> _Trial:
        """F (smooth part + L1) and its gradient at x + t d (projected onto ``orthant`` for
        OWL-QN), with the trial's slope along d (L-BFGS) or the predicted decrease (OWL-QN)."""
        xt, gt = self._new("x"), self._new("g")
        if orthant is None:
            # the trial point is not kept: x + t d is formed again, with the same bits, if accepted
            program = [("axpy", xt, x, t, d), ("loss_grad", xt, gt), ("dots", [(gt, d)]), ("norms", gt),
                       ("delete", xt)]
            f, (slope,), (l1n, inf, finite) = self._run(program)
            f = f if finite and np.isfinite(slope) else np.inf
            return _Trial(None, gt, None, f, slope, inf, l1n)
        pgt, step = self._new("pg"), self._new("step")
        program = [("project", xt, x, t, d, orthant), ("sub", step, xt, x), ("dots", [(self.pg, step)]),
                   ("loss_grad", xt, gt), ("l1", xt), ("pseudo", pgt, gt, xt), ("norms", pgt), ("norms", gt),
                   ("delete", step)]
        (predicted,), f, l1, (pl1, pinf, pfinite), (_, _, gfinite) = self._run(program)
        total = f + l1 if pfinite and gfinite else np.inf
        return _Trial(xt, gt, pgt, total, predicted, pinf, pl1)

    # -- the two-loop direction
    def _direction(self, grad: str, then: tuple = ()) -> tuple[str, float]:
        """d = -H grad from the matrix of dot products, formed where the vectors are, then the
        ops ``then(d)`` and the slope grad . d, in one program: (d, slope)."""
        m = len(self.S)
        basis = list(self.S) + list(self.Y) + [grad]
        gram = np.array([[self._dot(a, b) for b in basis] for a in basis]) if m else np.ones((1, 1))
        delta = two_loop_coefficients(gram, m)
        d = self._new("d")
        program = [("combine", d, [(-c, name) for c, name in zip(delta, basis) if c != 0.0 or name == grad])]
        program += [op(d) for op in then] + [("dots", [(grad, d)])]
        (slope,) = self._run(program)[-1]
        return d, slope

    def _clear_memory(self) -> None:
        """Drop every correction pair (a stale curvature estimate): steepest descent next."""
        pairs, self.S, self.Y = self.S + self.Y, [], []
        self._forget(*pairs)

    def _push(self, s: str, y: str) -> bool:
        """Keep (s, y) when s . y > 1e-10 y . y (the estimate stays positive definite)."""
        if self._dot(s, y) > 1e-10 * self._dot(y, y):
            self.S.append(s)
            self.Y.append(y)
            if len(self.S) > self.m:
                old_s, old_y = self.S.pop(0), self.Y.pop(0)
                self._forget(old_s, old_y)
            return True
        self._forget(s, y)
        return False

    def _refresh_dots(self, new: list, first: list = ()) -> None:
        """Dot products of the ``new`` vectors with the pairs and the (pseudo-)gradient, after
        the ops ``first`` (that form them), in one program."""
        grad = self.pg if self.l1 else self.g
        others = set(self.S) | set(self.Y) | {grad}
        pairs, seen = [], set()
        for a in new:
            for b in sorted(others | set(new)):
                key = self._key(a, b)
                if key not in seen and key not in self.dots:
                    seen.add(key)
                    pairs.append(key)
        if not first and not pairs:
            return
        values = self._run(list(first) + ([("dots", pairs)] if pairs else []))
        if pairs:
            self.dots.update({key: v for key, v in zip(pairs, values[-1])})

    # -- one iteration
    def _step(self) -> Optional[tuple[Status, str]]:
        if self.l1:
            return self._step_owlqn()
        d, dphi0 = self._direction(self.g)
        step0 = 1.0 if self.S else min(1.0, 1.0 / max(self.g_l1, 1e-300))
        ls = self._line_search(d, dphi0, step0)
        if not ls.ok and self.S:
            self._clear_memory()
            self._forget(d)
            d = self._new("d")
            (dphi0,) = self._run([("combine", d, [(-1.0, self.g)]), ("dots", [(self.g, d)])])[-1]
            ls = self._line_search(d, dphi0, min(1.0, 1.0 / max(self.g_l1, 1e-300)))
        if not ls.ok:
            self._forget(d)
            if 0.5 * abs(dphi0) < rounding_error(self.f):
                return Status.PRECISION_LIMIT, "L-BFGS step, F changes below its rounding error"
            return Status.NO_PROGRESS, f"strong-Wolfe line search failed after {ls.trials} trials"
        trial = ls.g
        s, y, x_new = self._new("s"), self._new("y"), self._new("x")
        old_x, old_g = self.x, self.g
        self.x, self.g, self.f, self.step_size = x_new, trial.g, ls.f, ls.step
        self.opt_norm, self.g_l1 = trial.opt_norm, trial.l1_norm
        self._refresh_dots([s, y, self.g], [("axpy", x_new, old_x, ls.step, d), ("sub", s, x_new, old_x),
                                            ("sub", y, trial.g, old_g)])
        self._push(s, y)
        self._forget(old_x, old_g, d)
        return None

    def _line_search(self, d: str, dphi0: float, step0: float):
        """strong_wolfe on trials held by name; a trial the search can no longer return is
        deleted at once (at most the bracket's two ends and the current trial are held)."""
        alive: list[_Trial] = []

        def evaluate(t):
            trial = self._evaluate(self.x, d, t, None)
            alive.append(trial)
            return trial.f, trial

        def holding(held: list) -> None:
            keep = {id(h) for h in held}
            for trial in [tr for tr in alive if id(tr) not in keep]:
                alive.remove(trial)
                self._forget(trial.g)

        ls = strong_wolfe(evaluate, None, self.f, None, step0, slope=lambda trial: trial.slope, dphi0=dphi0,
                          holding=holding)
        kept = ls.g if ls.ok else None
        self._forget(*[tr.g for tr in alive if tr is not kept])
        return ls

    def _step_owlqn(self) -> Optional[tuple[Status, str]]:
        pg = self.pg
        orthant = self._new("o")
        d, pg_d = self._direction(pg, (lambda d: ("descent", d, pg), lambda d: ("orthant", orthant, self.x, pg)))
        if not pg_d < 0:
            self._run([("combine", d, [(-1.0, pg)])])
        step0 = 1.0 if self.S else min(1.0, 1.0 / max(self.pg_l1, 1e-300))
        t, accepted, noise = step0, None, rounding_error(self.f)
        for _ in range(40):
            trial = self._evaluate(self.x, d, t, orthant)
            predicted = trial.slope
            if np.isfinite(trial.f) and (trial.f <= self.f + 1e-4 * predicted
                                         or (trial.f <= self.f + noise and trial.opt_norm < self.opt_norm)):
                accepted = trial
                break
            self._forget(trial.x, trial.g, trial.pg)
            if -predicted < noise:
                if self.S:
                    break                      # retry from steepest descent below
                self._forget(d, orthant)
                return Status.PRECISION_LIMIT, "OWL-QN step, F changes below its rounding error"
            t *= 0.5
        self._forget(orthant)
        if accepted is None:
            self._forget(d)
            if self.S:
                self._clear_memory()
                return self._step_owlqn()
            return Status.NO_PROGRESS, "no sufficient decrease along the projected direction"
        s, y = self._new("s"), self._new("y")
        old = (self.x, self.g, self.pg)
        self.x, self.g, self.pg, self.f, self.step_size = accepted.x, accepted.g, accepted.pg, accepted.f, t
        self.opt_norm, self.pg_l1 = accepted.opt_norm, accepted.l1_norm
        self._refresh_dots([s, y, self.pg], [("sub", s, accepted.x, old[0]), ("sub", y, accepted.pg, pg)])
        self._push(s, y)
        self._forget(*old, d)
        return None

    # -- the loop
    def run(self, objective: Any, *, tol: float = 1e-6, max_iter: int = 100, max_passes: Optional[float] = None,
            callback: Optional[Callable[[dict], Optional[bool]]] = None, warn: bool = True,
            gradient_scale: Optional[float] = None, store: Any = None, checkpoint_interval: int = 10):
        """Minimize from the objective's starting point (``vec_start``); an OptimizeResult whose
        ``x`` and ``jac`` are :class:`VectorHandle` s. ``store``: a checkpoint store the objective
        can write its vectors next to (see :meth:`checkpoint`), loaded first when it holds one.
        The callback gets each history record (no ``x``: it is not on the driver)."""
        require(objective, DistributedVectors, "vector-free lbfgs", "named vectors held by the engine")
        check_param("maxIter", max_iter)
        check_param("tol", tol)
        self.obj, self.l1 = objective, bool(objective.has_l1)
        self.name = "owlqn" if self.l1 else "lbfgs"
        self.S, self.Y, self.dots = [], [], {}
        self._doomed: list[str] = []
        self.pg = None
        self.best = (None, np.inf, None, np.inf)        # x name, F, g name, optimality norm
        start = time.perf_counter()
        passes0, evaluations0 = objective.passes, objective.evaluations
        self.before = {"passes": 0.0, "evaluations": 0, "seconds": 0.0}
        self.history: list[dict] = []
        resumed = store is not None and self._resume(store)
        if not resumed:
            self._init(gradient_scale)
        self.store, self.saved = store, (self.iteration if resumed else None)

        def passes() -> float:
            return self.before["passes"] + float(objective.passes - passes0)

        def seconds() -> float:
            return self.before["seconds"] + time.perf_counter() - start

        self._passes, self._seconds = passes, seconds
        if not resumed:
            self._record()
            if np.isfinite(self.f):
                self.best = (self.x, self.f, self.g, self.opt_norm)
        ending = (Status.DIVERGED, "") if not np.isfinite(self.f) else None
        while ending is None:
            if self.opt_norm <= tol * self.scale:
                ending = (Status.CONVERGED, "projected gradient norm <= tol relative to the start")
            elif self.iteration >= max_iter:
                ending = (Status.MAX_ITER, "")
            elif max_passes is not None and passes() >= max_passes:
                ending = (Status.MAX_PASSES, "")
            if ending is not None:
                break
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                failure = self._step()
            if failure is not None:
                ending = failure
                break
            self.iteration += 1
            row = self._record()
            if not np.isfinite(self.f):
                ending = (Status.DIVERGED, "")
                break
            self._keep_best()
            if self._stalled():
                ending = ((Status.CONVERGED, "projected gradient norm <= tol relative to the start")
                          if self.opt_norm <= tol * self.scale else
                          (Status.PRECISION_LIMIT,
                           f"{STALL_ITERATIONS} iterations without progress beyond F's rounding error"))
            if store is not None and self.iteration % checkpoint_interval == 0:
                self.checkpoint()
            if callback is not None:
                try:
                    stop = bool(callback(dict(row)))
                except StopIteration:
                    stop = True
                if stop and ending is None:
                    ending = (Status.CALLBACK_STOP, "")
        status, detail = ending
        if status in (Status.PRECISION_LIMIT, Status.NO_PROGRESS) and not getattr(objective, "smooth", True):
            status, detail = Status.CONVERGED, f"{detail}; the loss is not smooth: F no longer decreases"
        if store is not None and self.saved != self.iteration and status in _CLEAN_END:
            self.checkpoint()
        x_name, fun, g_name, grad_norm = self.best
        if x_name is None:             # nothing finite was ever seen
            x_name, fun, g_name, grad_norm = self.x, self.f, self.g, np.inf
        n = objective.n_params
        return conclude(x=VectorHandle(x_name, n), fun=fun, jac=VectorHandle(g_name, n), grad_norm=grad_norm,
                        solver=self.name, status=status, nit=self.iteration, passes=passes(),
                        nfev=self.before["evaluations"] + int(objective.evaluations - evaluations0),
                        history=self.history, seconds=seconds(), detail=detail, threshold=tol * self.scale,
                        extra={"vector_free": True, "memory": self.m}, warn=warn, stacklevel=3)

    def _init(self, gradient_scale: Optional[float]) -> None:
        self.x, self.g = self._new("x"), self._new("g")
        self.obj.vec_start(self.x)
        if self.l1:
            self.pg = self._new("pg")
            f, l1, (pl1, pinf, _), (_, ginf, finite) = self._run(
                [("loss_grad", self.x, self.g), ("l1", self.x), ("pseudo", self.pg, self.g, self.x),
                 ("norms", self.pg), ("norms", self.g)])
            self.f, self.opt_norm, self.pg_l1 = f + l1, pinf, pl1
            smooth = ginf
        else:
            f, (gl1, ginf, finite) = self._run([("loss_grad", self.x, self.g), ("norms", self.g)])
            self.f, self.opt_norm, self.g_l1 = f, ginf, gl1
            smooth = ginf
        if not finite:
            self.f = np.inf
        self._refresh_dots([self.pg if self.l1 else self.g])
        self.iteration, self.step_size = 0, float("nan")
        if gradient_scale is None:
            scale = max(self.opt_norm, smooth) if np.isfinite(smooth) else self.opt_norm
        else:
            scale = gradient_scale
        self.scale = float(scale) if np.isfinite(scale) and scale > 0 else 1.0
        self.progress: list[tuple[float, float, float]] = []
        self.best_opt = np.inf

    def _record(self) -> dict:
        row = {"iteration": self.iteration, "objective": float(self.f), "grad_norm": float(self.opt_norm),
               "step_size": float(self.step_size), "passes": self._passes(), "seconds": self._seconds()}
        for key in ("bytes_sent", "bytes_received"):
            if hasattr(self.obj, key):
                row[key] = int(getattr(self.obj, key))
        self.history.append(row)
        logger.info("iter %4d  objective %.12g  grad %.3e  step %.3e  passes %g  %.2fs (vector-free)",
                    row["iteration"], row["objective"], row["grad_norm"], row["step_size"], row["passes"],
                    row["seconds"])
        return row

    def _keep_best(self) -> None:
        """The loop's best-iterate rule (lowest F; within rounding, the smaller optimality norm),
        by name: the best vectors are kept until a better iterate replaces them."""
        best_x, best_f, best_g, best_opt = self.best
        better = np.isfinite(self.f) and (self.f <= best_f or (
            self.f <= best_f + rounding_error(best_f) and self.opt_norm < best_opt))
        if better:
            self.best = (self.x, self.f, self.g, self.opt_norm)
            if best_x is not None:
                self._forget(best_x, best_g)
        self.best_opt = min(self.best_opt, self.opt_norm)
        self.progress.append((self.best[1], self.best_opt, self.f))
        del self.progress[:-(STALL_ITERATIONS + 1)]

    def _stalled(self) -> bool:
        if len(self.progress) <= STALL_ITERATIONS:
            return False
        (f_then, opt_then, _), (f_now, opt_now, _) = self.progress[0], self.progress[-1]
        band = STALL_ITERATIONS * rounding_error(f_then)
        flat = all(abs(f - f_now) <= band for _, _, f in self.progress)
        return flat and f_then - f_now <= band and opt_now > 0.5 * opt_then

    # -- checkpoints: scalars here, vectors where they live
    def _driver_state(self) -> dict:
        return {"x": self.x, "g": self.g, "pg": self.pg, "f": float(self.f), "opt_norm": float(self.opt_norm),
                "g_l1": float(getattr(self, "g_l1", 0.0)), "pg_l1": float(getattr(self, "pg_l1", 0.0)),
                "iteration": int(self.iteration), "step_size": float(self.step_size), "S": list(self.S),
                "Y": list(self.Y), "dots": [[a, b, float(v)] for (a, b), v in sorted(self.dots.items())],
                "best": [self.best[0], float(self.best[1]), self.best[2], float(self.best[3])],
                "scale": float(self.scale), "counter": int(self._counter), "best_opt": float(self.best_opt),
                "progress": [list(p) for p in self.progress], "history": self.history,
                "passes": float(self._passes()), "seconds": float(self._seconds()),
                "evaluations": int(self.before["evaluations"] + self.obj.evaluations)}

    def checkpoint(self) -> None:
        """Write the run's state: the objective writes every named vector the state refers to
        (its shards), the store the driver's scalars and the list of those vectors."""
        state = self._driver_state()
        names = sorted({n for n in (self.x, self.g, self.pg, self.best[0], self.best[2], *self.S, *self.Y) if n})
        self._run([])                                  # the queued deletions first
        self.obj.vec_save(self.store, self.iteration, names, state)
        self.saved = self.iteration

    def _resume(self, store: Any) -> bool:
        loaded = self.obj.vec_load(store)
        if loaded is None:
            return False
        s = loaded
        self.x, self.g, self.pg = s["x"], s["g"], s["pg"]
        self.f, self.opt_norm, self.g_l1, self.pg_l1 = s["f"], s["opt_norm"], s["g_l1"], s["pg_l1"]
        self.iteration, self.step_size = s["iteration"], s["step_size"]
        self.S, self.Y = list(s["S"]), list(s["Y"])
        self.dots = {(a, b): float(v) for a, b, v in s["dots"]}
        b = s["best"]
        self.best = (b[0], float(b[1]), b[2], float(b[3]))
        self.scale, self._counter, self.best_opt = s["scale"], int(s["counter"]), float(s["best_opt"])
        self.progress = [tuple(p) for p in s["progress"]]
        self.history = list(s["history"])
        self.before = {"passes": s["passes"], "seconds": s["seconds"], "evaluations": s["evaluations"]}
        logger.info("vector-free %s: resuming from the checkpoint at iteration %d", self.name, self.iteration)
        return True
