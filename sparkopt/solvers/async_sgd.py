"""Parameter-server SGD with bounded staleness (``solver="async-sgd"``).

The driver holds the model in a :class:`ParameterServer`; every worker (a resident task, or a
thread per partition in memory) loops: receive the model, compute the gradient of a mini-batch of
its own rows, push it, receive the next model. Nobody waits for the others except through the
staleness bound.

Clocks (stale synchronous parallel, Ho et al. 2013): worker k's clock c_k counts its pushes. A
worker asking for the model of its clock c waits while ``c - min_j c_j > tau`` (it may run at most
tau clocks ahead of the slowest worker); ``tau=None`` never waits.

Updates (z: solver coordinates, t: the step schedule, G_k / W_k: the mini-batch gradient sum /
weight worker k pushed):

* ``tau >= 1`` (or None): each push replaces its worker's slot (G_k, W_k) and is applied when it
  arrives as a step on every worker's latest mini-batch (an incremental aggregated gradient),
  ``z <- prox_{(t/K) l1}(z - (t/K) (sum_j G_j / sum_j W_j + grad penalty(z)))``, t from the schedule
  at the round (pushes applied / K): K pushes move the model as far as one synchronous step, a fast
  worker moves it more often, and a slow worker's data keep their weight (its slot stays in the
  sum; weighting each push by its own mini-batch instead biases the fit towards the fast workers'
  data: measured 3-4e-3 of objective on a9a halves at 10:1 speeds).
* ``tau = 0``: nobody can run ahead, so the K pushes of a clock are applied as one step,
  ``z <- prox_{t l1}(z - t (sum G_k / sum W_k + grad penalty(z)))``: synchronous mini-batch
  SGD, and with the same seed exactly :class:`~sparkopt.solvers.sgd.MiniBatchSGD` (the mini-batch of
  clock c is drawn as MiniBatchSGD draws iteration c+1's).

``deterministic=True`` (tests, studies of staleness) fixes the order: pushes are applied in the
order (clock, worker) whatever their arrival, and the model sent for clock c is the one at the end
of clock c - tau - 1, so every update has a fixed staleness (tau K + k versions for
worker k, once past the start) and two runs give the same numbers. Truly asynchronous updates
have at most (K - 1)(2 tau + 1). The default mode is truly asynchronous: pushes apply on arrival and pulls get
the newest model. Every applied update's staleness (versions applied between its pull and its
push) is recorded; ``result.extra["staleness_histogram"]`` counts them.

A round is K applied pushes (one clock of every worker when tau = 0). Stops after ``max_iter``
rounds, or when the model moved less than ``tol`` (relative, MLlib's SGD test) over a round; F is
then evaluated exactly once.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable, Optional

import numpy as np

from ..errors import WorkersLost
from ..objectives.penalties import soft_threshold
from ..rules import check_param
from .checkpoint import CheckpointStore
from .objective import Objective, WorkerObjective, require
from .result import OptimizeResult, Status, finish, l1_value
from .sgd import MAX_BACKOFFS, check_sgd_params, healthy, safe_step, scheduled_step
from .solver import Callback, OwnLoopSolver

__all__ = ["AsyncSGD", "ParameterServer"]

logger = logging.getLogger("sparkopt")


class ParameterServer:
    """The driver's model and the staleness rules; see the module docstring.

    Messages from worker k: ``("pull", clock)`` and ``("push", clock, version, f_sum, g_sum, w_sum)``
    (g_sum in solver coordinates, (n_params,)); a push is also the pull of the next clock. Replies:
    ``("model", z, version, clock)`` or ``("stop",)``."""

    def __init__(self, objective: Objective, z0: np.ndarray, *, tau: Optional[int], deterministic: bool,
                 step_size_at: Callable[[int], float], fraction: float, max_clocks: int, tol: float,
                 callback: Optional[Callback] = None, max_passes: Optional[float] = None,
                 averaging: bool = False, momentum: float = 0.0) -> None:
        self.objective = objective
        self.z = np.array(z0, dtype=float, copy=True)
        self.tau, self.deterministic = tau, deterministic
        self.step_size_at, self.fraction = step_size_at, fraction
        self.max_clocks, self.tol, self.callback = max_clocks, tol, callback
        self.max_passes = max_passes
        self.averaging, self.momentum = averaging, momentum
        self.average = self.z.copy()     # polynomial-decay average of the round-end models
        self.velocity = np.zeros_like(self.z)
        self.f_start: Optional[float] = None           # the first round's estimate of F
        self.healthy_z = self.z.copy()                 # the last model whose round did not blow up
        self.backoff, self.backoffs = 1.0, 0
        self.l1 = objective.l1_weights
        self.version = 0
        self.staleness: Counter = Counter()
        self.history: list[dict] = []
        self.status: Optional[Status] = None
        self.started = time.perf_counter()
        self.rounds_before = 0           # rounds done by earlier sessions (or a checkpoint)
        self.sessions, self.k, self.pushes = 0, 0, 0
        self.restored = False
        self.checkpoint_every: Optional[int] = None
        self.save: Optional[Callable[[], None]] = None

    # -- set-up
    def start(self, workers: list[dict]) -> None:
        """Begin a session of workers. A later call (the workers were lost and started again, maybe
        fewer of them) keeps the model, its version, the history, the passes and the rounds done,
        and starts the clocks afresh: the fit continues from the server's model."""
        resumed = self.sessions > 0
        self.sessions += 1
        self.rounds_before = self.completed
        self.k = len(workers)
        weights = np.array([w["weight"] for w in workers], dtype=float)
        self.shares = weights / weights.sum() if weights.sum() > 0 else np.full(self.k, 1.0 / self.k)
        self.clocks = [0] * self.k                 # pushes received per worker (SSP clocks)
        self.waiting: dict[int, int] = {}          # worker -> clock it waits to start
        self.buffer: dict[tuple[int, int], tuple] = {}  # (clock, worker) -> push, until applied
        self.next_index = 0                        # deterministic order: clock * K + worker
        self.pushes = 0                            # pushes applied this session; a round is K
        self.slots: dict[int, tuple] = {}          # worker -> latest (f, g, w) sums it pushed
        self.snapshots = {-1: (self.z.copy(), self.version)}   # (model, version) by session round
        if not resumed:
            self.passes = self.passes if self.restored else 0.0   # data touched by applied pushes
            self.last_round_z = self.z.copy()
            if not self.restored:
                self.best = (self.z.copy(), np.inf)
                self._row(0, np.nan, np.nan, np.nan)

    @property
    def session_rounds(self) -> int:
        """Rounds done by the current session's workers (their clocks count from 0)."""
        return self.pushes // self.k if self.k else 0

    @property
    def completed(self) -> int:
        """Rounds done in all (K applied pushes each; a clock of every worker when tau = 0)."""
        return self.rounds_before + self.session_rounds

    # -- checkpoints
    def checkpoint(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(meta, arrays) of everything a resumed fit continues from (see AsyncSGD.run)."""
        arrays = {"z": self.z, "average": self.average, "velocity": self.velocity, "healthy_z": self.healthy_z,
                  "best_z": self.best[0]}
        meta = {"rounds": self.completed, "version": self.version, "passes": self.passes, "history": self.history,
                "backoff": self.backoff, "backoffs": self.backoffs, "f_start": self.f_start,
                "best_f": float(self.best[1]), "staleness": {str(k): v for k, v in self.staleness.items()},
                "seconds": time.perf_counter() - self.started}
        return meta, {k: np.asarray(v, dtype=float) for k, v in arrays.items()}

    def restore(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Take the state of a checkpoint (see :meth:`checkpoint`). Everything is read and checked
        first and assigned only then: a checkpoint that fails leaves the server untouched."""
        n = self.z.shape[0]
        for name in ("z", "average", "velocity", "healthy_z", "best_z"):
            if arrays[name].shape != (n,):
                raise ValueError(f"array {name} has shape {arrays[name].shape}, this problem has {n} parameters")
        state = dict(
            z=np.array(arrays["z"], copy=True), average=np.array(arrays["average"], copy=True),
            velocity=np.array(arrays["velocity"], copy=True), healthy_z=np.array(arrays["healthy_z"], copy=True),
            best=(np.array(arrays["best_z"], copy=True), float(meta["best_f"])),
            rounds_before=int(meta["rounds"]), version=int(meta["version"]), passes=float(meta["passes"]),
            history=list(meta["history"]), backoff=float(meta["backoff"]), backoffs=int(meta["backoffs"]),
            f_start=None if meta["f_start"] is None else float(meta["f_start"]),
            staleness=Counter({int(k): int(v) for k, v in meta["staleness"].items()}))
        seconds = float(meta["seconds"])
        vars(self).update(state)
        self.started -= seconds
        self.last_round_z = self.z.copy()
        self.restored = True
        if self.rounds_before >= self.max_clocks:
            self.status = Status.MAX_ITER

    # -- messages
    def handle(self, worker: int, message: tuple) -> list[tuple[int, tuple]]:
        """A worker's message -> the replies to send. Workers see global clocks (the rounds of
        earlier sessions added), so a resumed fit samples what an uninterrupted one would."""
        if message[0] == "push":
            _, clock, version, f_sum, g_sum, w_sum = message
            clock -= self.rounds_before
            self.clocks[worker] = clock + 1
            if self.status is None:
                self._receive(worker, clock, version, float(f_sum), np.asarray(g_sum, dtype=float), float(w_sum))
            self.waiting[worker] = clock + 1
        elif message[0] == "pull":
            self.waiting[worker] = max(int(message[1]) - self.rounds_before, 0)
        else:
            raise ValueError(f"parameter server: unknown message {message[0]!r} from worker {worker}")
        return self._answer()

    def _answer(self) -> list[tuple[int, tuple]]:
        replies = []
        slowest = min(self.clocks)
        for worker, clock in list(self.waiting.items()):
            if self.status is not None:
                replies.append((worker, ("stop",)))
                del self.waiting[worker]
                continue
            if self.tau is not None and clock - slowest > self.tau:
                continue
            if self.tau == 0 or self.deterministic:
                # the model at the end of round c - tau - 1 (the newest one in the synchronous case)
                ready = max(clock - (self.tau or 0) - 1, -1)
                if self.session_rounds - 1 < ready:
                    continue
                z, version = self.snapshots[ready]
            else:
                z, version = self.z, self.version
            replies.append((worker, ("model", z.copy(), version, clock + self.rounds_before)))
            del self.waiting[worker]
        return replies

    # -- updates
    def _receive(self, worker, clock, version, f_sum, g_sum, w_sum) -> None:
        push = (version, f_sum, g_sum, w_sum)
        if self.tau == 0:
            self.buffer[(clock, worker)] = push
            if sum(1 for (c, _) in self.buffer if c == clock) == self.k:
                for k in range(self.k):
                    version_k, f_k, g_k, w_k = self.buffer.pop((clock, k))
                    self.staleness[self.version - version_k] += 1
                    self.slots[k] = (f_k, g_k, w_k)
                self._step(self.rounds_before + clock, share=1.0)
                self.pushes += self.k
                self.passes += self.fraction
                self._end_round()
            return
        if self.deterministic:
            self.buffer[(clock, worker)] = push
            while True:
                key = divmod(self.next_index, self.k)
                if key not in self.buffer or self.status is not None:
                    break
                self._apply(key[1], *self.buffer.pop(key))
                self.next_index += 1
            return
        self._apply(worker, *push)

    def _apply(self, worker, version, f_sum, g_sum, w_sum) -> None:
        self.staleness[self.version - version] += 1
        # each push refreshes its worker's slot; the step uses every worker's latest mini-batch
        # (pooled), so a fast worker moves the model more often without its data weighing more
        self.slots[worker] = (f_sum, g_sum, w_sum)
        self._step(self.completed, share=1.0 / self.k)
        self.pushes += 1
        self.passes += self.fraction * float(self.shares[worker])
        if self.pushes % self.k == 0:
            self._end_round()

    def _pooled(self) -> tuple[float, np.ndarray, float]:
        f = sum(self.slots[k][0] for k in sorted(self.slots))
        g = sum(self.slots[k][1] for k in sorted(self.slots))
        w = sum(self.slots[k][2] for k in sorted(self.slots))
        return f, g, w

    def _step(self, round_index, share) -> None:
        t = self.step_size_at(round_index + 1) * self.backoff
        _, g_sum, w_sum = self._pooled()
        g = self.objective.penalty_grad(self.z)
        if w_sum > 0:
            g = g + g_sum / w_sum
        # heavy ball per applied update, momentum**share so that a round of K pushes carries the
        # synchronous step's momentum (tau = 0 is then MiniBatchSGD step for step)
        self.velocity = self.momentum ** share * self.velocity + t * share * g
        z = self.z - self.velocity
        if self.l1 is not None:
            z = soft_threshold(z, t * share * self.l1)
        self.z = z
        self.version += 1
        if not np.all(np.isfinite(z)):
            self.status = Status.DIVERGED

    def _end_round(self) -> None:
        done, session_done = self.completed, self.session_rounds
        self.snapshots[session_done - 1] = (self.z.copy(), self.version)
        # a pull is for a clock >= the rounds done and needs the snapshot of clock - tau - 1
        for old in [c for c in self.snapshots if c < session_done - (self.tau or 0) - 2]:
            del self.snapshots[old]
        f, g, w = self._pooled()
        if self.averaging:
            rho = 4.0 / (done + 3.0)            # as SampledSolver.advance (eta = 3)
            previous, self.average = self.average, (1.0 - rho) * self.average + rho * self.z
            change = float(np.linalg.norm(self.average - previous)) / max(float(np.linalg.norm(self.average)), 1.0)
        else:
            change = float(np.linalg.norm(self.z - self.last_round_z)) / max(float(np.linalg.norm(self.z)), 1.0)
        self.last_round_z = self.z.copy()
        estimate = (f / w if w > 0 else np.nan) + self._penalty_value(self.z)
        extra = {}
        if self.f_start is None:
            self.f_start = estimate
        if healthy(estimate, self.z, self.f_start):
            self.healthy_z = self.z.copy()
        elif self.backoffs < MAX_BACKOFFS:
            # the round blew up: back to the last healthy model with a quarter of the step (as
            # MiniBatchSGD's back_off)
            self.backoffs += 1
            self.backoff *= 0.25
            self.z, self.velocity = self.healthy_z.copy(), np.zeros_like(self.z)
            self.snapshots[session_done - 1] = (self.z.copy(), self.version)
            self.average = self.z.copy()
            extra["backoff"] = self.backoff
        else:
            self.status = Status.DIVERGED
        self._row(done, estimate, float(np.max(np.abs(g / w))) if w > 0 else np.nan,
                  self.step_size_at(done) * self.backoff, change=change, **extra)
        if np.isfinite(estimate) and estimate <= self.best[1]:
            self.best = (self.z.copy(), estimate)
        if self.status is None and change < self.tol:
            self.status = Status.CONVERGED
        if self.status is None and done >= self.max_clocks:
            self.status = Status.MAX_ITER      # the budget is in rounds: a fast worker may do more clocks
        if self.status is None and self.max_passes is not None and self.passes >= self.max_passes:
            self.status = Status.MAX_PASSES
        # before the callback: a callback that interrupts loses nothing
        if self.save is not None and self.status not in (Status.DIVERGED,) and (
                done % self.checkpoint_every == 0 or self.status is not None):
            self.save()
        if self.status is None and self.callback is not None:
            try:
                stop = self.callback(dict(self.history[-1], x=self.z.copy()))
            except StopIteration:
                stop = True
            if stop:
                self.status = Status.CALLBACK_STOP
                if self.save is not None:
                    self.save()

    def _penalty_value(self, z) -> float:
        return self.objective.penalty_value(z) + l1_value(self.objective, z)

    def _row(self, iteration, objective, grad_norm, step, **extra) -> None:
        self.history.append({"iteration": iteration, "objective": float(objective), "grad_norm": float(grad_norm),
                             "step_size": float(step), "passes": self.passes, "rounds": iteration,
                             "updates": int(self.version),
                             "max_staleness": int(max(self.staleness, default=0)),
                             "seconds": time.perf_counter() - self.started, **extra})


class AsyncSGD(OwnLoopSolver):
    """Parameter-server SGD; see the module docstring. ``step_size``, ``fraction``, ``schedule``,
    ``decay`` and ``seed`` mean what they mean for :class:`~sparkopt.solvers.sgd.MiniBatchSGD`;
    ``staleness`` (tau) is the bound in clocks (None: unbounded); ``delays`` ({worker: seconds})
    slows workers down, for benchmarks of stragglers only."""

    name = "async-sgd"

    def __init__(self, step_size: float = 1.0, fraction: float = 0.1, schedule: str = "auto",
                 decay: float = 0.99, seed: int = 0, staleness: Optional[int] = 2, deterministic: bool = False,
                 momentum: float = 0.0, averaging: bool = True, delays: Optional[dict] = None) -> None:
        check_sgd_params(step_size, fraction, schedule, decay)
        check_param("seed", seed)
        check_param("staleness", staleness)
        delays = dict(delays or {})
        if any(not (np.isfinite(v) and v >= 0) for v in delays.values()):
            raise ValueError(f"delays must be seconds >= 0, got {delays!r}")
        self.step0, self.schedule, self.decay = float(step_size), schedule, float(decay)
        self.fraction, self.seed = float(fraction), int(seed)
        self.tau = None if staleness is None else int(staleness)
        self.deterministic, self.delays, self.averaging = bool(deterministic), delays, bool(averaging)
        self.momentum = float(check_param("momentum", momentum))
        self._safe = 1.0            # measured at the start of each run
        self._schedule = schedule

    def step_size_at(self, k: int) -> float:
        """t_k: step_size * the safe step measured at the start (see MiniBatchSGD) * schedule(k)."""
        return scheduled_step(self.step0 * self._safe, self._schedule, self.decay, k)

    #: how many times one fit starts its workers again after losing them
    MAX_RESTARTS = 3

    def run(self, objective: Objective, x0: np.ndarray, *, tol: float, max_iter: int,
            max_passes: Optional[float] = None, callback: Optional[Callback] = None,
            warn: bool = True, store: Optional[CheckpointStore] = None,
            checkpoint_interval: int = 10) -> OptimizeResult:
        """The fit (see the module docstring). Lost workers (WorkersLost: a dead task or executor)
        are started again, up to MAX_RESTARTS times, and continue from the server's model. With a
        checkpoint ``store`` the server's state (model, averages, momentum, history, rounds,
        passes) is saved every ``checkpoint_interval`` rounds and at a clean end, and a rerun
        resumes from the newest usable checkpoint."""
        require(objective, WorkerObjective, self.name,
                "workers that live across messages (engine='resident' on Spark, or a LocalEngine)")
        start = time.perf_counter()
        passes0, evaluations0 = objective.passes, objective.evaluations
        self._safe = safe_step(objective, x0, self.seed)
        # "auto": a constant step, averaged (stale updates with a decaying step lag further
        # behind), but a decaying one for a non-smooth loss, whose subgradients do not vanish
        self._schedule = self.schedule if self.schedule != "auto" else (
            "constant" if objective.smooth else "inverse_sqrt")
        server = ParameterServer(objective, x0, tau=self.tau, deterministic=self.deterministic,
                                 step_size_at=self.step_size_at, fraction=self.fraction,
                                 max_clocks=max_iter, tol=tol, callback=callback, max_passes=max_passes,
                                 averaging=self.averaging and objective.l1_weights is None, momentum=self.momentum)
        if store is not None:
            loaded = store.load(decode=lambda payload, arrays: server.restore(payload["meta"], arrays) or True)
            if loaded:
                logger.info("sparkopt async-sgd: resuming from checkpoint at round %d (%s)", server.completed,
                            store.directory)
            server.checkpoint_every = checkpoint_interval
            server.save = lambda: store.save(server.completed, *server.checkpoint())
        summaries: list = []
        restarts = 0
        # overflow on the way to divergence is detected and reported in the status
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            while server.status is None:
                try:
                    summaries += objective.run_parameter_server(server, fraction=self.fraction, seed=self.seed,
                                                                delays=self.delays)
                except WorkersLost as exc:
                    if server.status is not None:
                        break          # lost while stopping: the server's model is final
                    restarts += 1
                    if restarts > self.MAX_RESTARTS:
                        raise
                    logger.warning("sparkopt async-sgd: %s; starting the workers again from the server's model at "
                                   "round %d (%d/%d)", exc, server.completed, restarts, self.MAX_RESTARTS)
        status = server.status or Status.MAX_ITER
        x = server.best[0] if status == Status.DIVERGED else (server.average if server.averaging else server.z)
        pushes = [int(s.get("pushes", 0)) for s in summaries]
        return finish(
            objective, solver=self.name, x=x, status=status, nit=server.completed,
            passes=server.passes + float(objective.passes - passes0),
            nfev=int(objective.evaluations - evaluations0) + sum(pushes), history=server.history,
            seconds=time.perf_counter() - start, warn=warn, stacklevel=4,
            extra={"staleness_histogram": dict(sorted(server.staleness.items())), "updates": server.version,
                   "pushes": sum(pushes), "tau": self.tau, "deterministic": self.deterministic,
                   "pushes_per_worker": pushes, "restarts": restarts})
