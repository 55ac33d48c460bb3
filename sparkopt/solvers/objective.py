"""What a solver may ask of the problem: the Objective protocol and its optional capabilities.

Driver side only; never imports pyspark or the engines. A solver sees the problem only through
these protocols, so the same code runs on a distributed evaluator, an in-memory fold or a plain
numpy function (:class:`CountingObjective`).

Every objective offers :class:`Objective`. Capabilities beyond it are declared by implementing
one of the small protocols below; a solver that needs one checks ``isinstance(objective, P)``
(they are runtime-checkable) and says so by name when it is missing, instead of probing
attributes:

==========================  ===========================================================
:class:`SampledObjective`   loss and gradient on a seeded Bernoulli sample of the rows (SGD)
:class:`LocalRoundObjective` one round of local SGD on every shard (``solver="local-sgd"``)
:class:`WorkerObjective`    a parameter server fed by long-lived workers (``async-sgd``)
:class:`PassCosts`          what each kind of pass costs, in gradient passes (``auto``'s choice)
:class:`CurvatureBound`     the largest curvature of the smooth part near x (SGD's safe step)
:class:`DiagonalCurvature`  loss, gradient and the Hessian's diagonal in one pass (preconditioning)
:class:`Fingerprinted`      what identifies the problem for a checkpoint
:class:`TrafficCounted`     bytes sent to / received from the workers so far
:class:`InexactObjective`   values that may trail the exact ones (compressed exchanges)
:class:`DistributedVectors` named vectors held by the engine (shards), vector programs that
                            return scalars only (vector-free L-BFGS / OWL-QN)
==========================  ===========================================================
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np

__all__ = ["Objective", "SampledObjective", "LocalRoundObjective", "WorkerObjective", "PassCosts",
           "CurvatureBound", "DiagonalCurvature", "Fingerprinted", "TrafficCounted", "InexactObjective",
           "DistributedVectors",
           "CountingObjective", "require"]


@runtime_checkable
class Objective(Protocol):
    """F(x) = smooth(x) + sum_j l1_weights[j] * |x_j|, x of shape (n_params,).

    ``loss_grad`` and friends describe the smooth part only; the non-smooth L1 part is data
    (``l1_weights``, None when absent) that proximal and orthant-wise solvers use directly.
    Every call that touches the data advances ``passes`` (1 per full pass, the fraction per
    sample) and ``evaluations`` (1 per call). ``smooth`` is False when the loss has kinks (hinge);
    ``has_hessian`` is False when ``loss_grad_hess`` / ``hessp`` carry no curvature.
    """

    n_params: int
    has_hessian: bool
    smooth: bool
    l1_weights: Optional[np.ndarray]

    def loss(self, x: np.ndarray) -> float: ...

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]: ...

    def loss_grad_hess(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]: ...

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray: ...

    @property
    def passes(self) -> float: ...

    @property
    def evaluations(self) -> int: ...


@runtime_checkable
class SampledObjective(Protocol):
    """Mean loss and gradient (smooth part) over a Bernoulli(``fraction``) sample of the rows;
    the same ``seed`` draws the same rows."""

    def stochastic_loss_grad(self, x: np.ndarray, fraction: float, seed: int) -> tuple[float, np.ndarray]: ...


@runtime_checkable
class LocalRoundObjective(Protocol):
    """One communication round of local SGD from ``x``: every shard takes ``len(step_sizes)``
    proximal SGD steps on its own rows; returns (weighted mean shard delta, estimate of F at x,
    sampled weight). See sparkopt.objectives.local_sgd."""

    def local_sgd_round(self, x: np.ndarray, step_sizes: np.ndarray, fraction: float,
                        seed: int) -> tuple[np.ndarray, float, float]: ...


@runtime_checkable
class WorkerObjective(Protocol):
    """Long-lived workers that pull the model from and push mini-batch sums to ``server`` (a
    sparkopt.solvers.async_sgd.ParameterServer); the penalty is applied by the server."""

    def run_parameter_server(self, server: Any, *, fraction: float, seed: int, delays: dict) -> list: ...

    def penalty_value(self, x: np.ndarray) -> float: ...

    def penalty_grad(self, x: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class PassCosts(Protocol):
    """The cost of one pass of each kind in units of one loss + gradient pass: ``{"gradient": 1,
    "hessian": ..., "hessp": ..., "overhead": ...}`` ("hessian" is a loss + gradient + Hessian
    pass; "overhead" the fixed cost of any pass: scheduling a job, a round trip)."""

    def pass_costs(self) -> dict: ...


@runtime_checkable
class CurvatureBound(Protocol):
    """An estimate of the largest eigenvalue of the smooth part's Hessian at ``x`` (from a sample
    of the rows, seeded), from which the SGD family takes its safe step 1 / L."""

    def curvature_bound(self, x: np.ndarray, seed: int) -> float: ...


@runtime_checkable
class DiagonalCurvature(Protocol):
    """``loss_grad_diag(x) -> (f, g, diag of the smooth Hessian)`` in one pass, offered when
    ``has_curvature_moments`` is true (Newton-CG's diagonal preconditioner)."""

    has_curvature_moments: bool

    def loss_grad_diag(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]: ...


@runtime_checkable
class Fingerprinted(Protocol):
    """A JSON-able description of the problem (loss, penalty, data shape) for checkpoints."""

    def fingerprint(self) -> dict: ...


@runtime_checkable
class TrafficCounted(Protocol):
    """Bytes of payload sent to and partial sums received from the workers, cumulative."""

    @property
    def bytes_sent(self) -> int: ...

    @property
    def bytes_received(self) -> int: ...


@runtime_checkable
class InexactObjective(Protocol):
    """Loss and gradient values that may trail the exact ones while ``inexact`` is true (an
    engine's compressed exchanges with error feedback: their error is a fraction of the values'
    last change); ``refresh(reason)`` makes the next evaluation exact (later ones trail again),
    ``make_exact(reason)`` every later one. The ``minimize`` loop refreshes when a step fails,
    and makes the values exact before it lets a run end converged (or fail twice at one
    iterate), so every end is confirmed with exact values."""

    inexact: bool

    def refresh(self, reason: str) -> None: ...

    def make_exact(self, reason: str) -> None: ...


@runtime_checkable
class DistributedVectors(Protocol):
    """Vectors of ``n_params`` values held where the data are (split into shards by coordinate
    ranges), under names; the driver sends *vector programs* and receives scalars only, so no
    n_params-long vector ever reaches it (Chen, Wang & Zhou, NIPS 2014).

    ``vec_run(program)`` runs the ops of sparkopt.solvers.vectors (``("combine", out, terms)``,
    ``("dots", pairs)``, ``("pseudo", out, g, x)``, ...; each op's meaning is its kernel there)
    in order on every shard and returns, for each op that yields a value, that value reduced over
    the shards (sums in shard order, maxima). ``("loss_grad", x, g)`` is the one op that reads the
    data: the smooth part of F at the named vector ``x`` (one pass), its gradient written into
    ``g``. ``vec_start(name)`` writes the problem's starting point into ``name``;
    ``vec_gather(name)`` returns a vector whole (small models, tests). Checkpoints (optional):
    ``vec_save(store, iteration, names, state)`` has every shard holder write its part of the
    named vectors next to the manifest of ``state`` (sparkopt.solvers.vectors.save_vectors),
    ``vec_load(store)`` loads the newest usable one back and returns its ``state`` (or None)."""

    n_params: int
    has_l1: bool

    def vec_run(self, program: list) -> list: ...

    def vec_start(self, name: str) -> None: ...

    def vec_gather(self, name: str) -> np.ndarray: ...


def require(objective: Any, capability: type, solver: str, what: str) -> None:
    """ValueError naming the solver and the missing capability when ``objective`` lacks it."""
    if not isinstance(objective, capability):
        raise ValueError(f"solver={solver!r} needs {what} ({capability.__name__}); "
                         f"{type(objective).__name__} does not offer it")


class CountingObjective:
    """Plain numpy callables as an :class:`Objective` (like scipy's fun / jac / hess / hessp),
    counting calls: for solver tests and in-memory problems.

    ``passes`` counts the calls that would be passes over data (loss, gradient, Hessian or
    Hessian-vector product; a sample counts its fraction). With ``stochastic_grad(x, fraction,
    seed)`` it is also a :class:`SampledObjective`; without, sampled calls use the full gradient.
    """

    def __init__(
        self,
        fun: Callable[[np.ndarray], float],
        grad: Callable[[np.ndarray], np.ndarray],
        n_params: int,
        hess: Optional[Callable[[np.ndarray], np.ndarray]] = None,
        hessp: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None,
        l1_weights: Optional[np.ndarray] = None,
        stochastic_grad: Optional[Callable[[np.ndarray, float, int], tuple[float, np.ndarray]]] = None,
    ):
        self._fun, self._grad, self._hess, self._hessp = fun, grad, hess, hessp
        self._stochastic = stochastic_grad
        self.n_params = n_params
        self.has_hessian = hess is not None
        self.smooth = True
        self.l1_weights = None if l1_weights is None else np.asarray(l1_weights, dtype=float)
        self._passes = 0.0
        self._evaluations = 0

    @property
    def passes(self) -> float:
        return self._passes

    @property
    def evaluations(self) -> int:
        return self._evaluations

    def _count(self, passes: float = 1.0) -> None:
        self._passes += passes
        self._evaluations += 1

    def loss(self, x):
        self._count()
        return float(self._fun(x))

    def loss_grad(self, x):
        self._count()
        return float(self._fun(x)), np.asarray(self._grad(x), dtype=float)

    def loss_grad_hess(self, x):
        self._count()
        return float(self._fun(x)), np.asarray(self._grad(x), dtype=float), np.asarray(self._hess(x), dtype=float)

    def hessp(self, x, v):
        self._count()
        if self._hessp is not None:
            return self._hessp(x, v)
        return self._hess(x) @ v

    def stochastic_loss_grad(self, x, fraction, seed):
        if self._stochastic is None:
            return self.loss_grad(x)
        self._count(fraction)
        f, g = self._stochastic(x, fraction, seed)
        return float(f), np.asarray(g, dtype=float)
