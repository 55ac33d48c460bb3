"""Solver names, the ``auto`` choice, and construction with checked options (scipy's
``minimize(method=...)`` dispatch, with unknown options reported instead of dropped).

Driver side only; never imports pyspark.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from .async_sgd import AsyncSGD
from .gd import GradientDescent
from .lbfgs import LBFGS, OWLQN
from .local_sgd import LocalSGD
from .newton import Newton, ProximalNewton, TrustRegionNewtonCG
from .objective import Objective, PassCosts
from .sgd import MiniBatchSGD
from .solver import OwnLoopSolver, Solver

__all__ = ["SOLVERS", "SolverChoice", "SolverOptionWarning", "choose_solver", "explain_solver", "make_solver",
           "solver_options", "has_l1", "compressed_passes", "estimated_cost", "EXACT_NEWTON_MAX_PARAMS", "EXPECTED_PASSES",
           "COST_TIE", "NEWTON_HESSIAN_SHARE"]

# exact Newton aggregates a dense p x p Hessian per partition and factors it on the driver
EXACT_NEWTON_MAX_PARAMS = 1024
# passes each method typically needs to a 1e-6 gradient reduction, in well-conditioned solver
# coordinates (measured on the raw-units matrix, a9a, letter, kddcup: newton 5-13 (kddcup's
# nearly separable classes: 23 iterations), newton-cg 30-150, lbfgs 20-175, owlqn 27-240,
# proximal newton 6-9): the cost model's only guess
EXPECTED_PASSES = {"newton": 9, "newton-cg": 60, "lbfgs": 80, "owlqn": 120}
#: the share of Newton's passes that bring a Hessian where it reuses them (a Hessian pass at
#: least Newton.LAZY_HESSIAN_RATIO gradient passes): letter 4 of 10, a9a 5 of 9, w8a 7 of 13,
#: synthetic dense 1e5 x 100 2 of 8 (in memory, tol 1e-6; the first pass's included)
NEWTON_HESSIAN_SHARE = 0.5
# what each method's passes are made of (an accepted Newton-CG step: one gradient pass, the
# rest Hessian-vector products)
_PASS_KINDS = {"newton": "hessian", "newton-cg": "hessp", "lbfgs": "gradient", "owlqn": "gradient"}
DEFAULT_COSTS = {"gradient": 1.0, "hessian": 1.0, "hessp": 1.0, "overhead": 0.0}
#: estimated costs this close (ratio) are a tie, which the method with fewer expected passes
#: wins: the cost model's calibration is good to about this much, and a method's pass count
#: is its risk (Newton's 5-13 against Newton-CG's 30-150 or L-BFGS's 20-175)
COST_TIE = 1.1


def estimated_cost(objective: Objective, method: str, passes: Optional[float] = None) -> float:
    """Expected passes (``passes``, default :data:`EXPECTED_PASSES`'s) x (cost of one such pass
    + the per-pass overhead), in gradient passes; Newton's passes where it reuses its Hessians
    (:data:`NEWTON_HESSIAN_SHARE` of them bring one)."""
    costs = dict(DEFAULT_COSTS, **(objective.pass_costs() if isinstance(objective, PassCosts) else {}))
    per_pass = costs[_PASS_KINDS[method]]
    if method == "newton" and not has_l1(objective) and Newton.hessian_is_dear(objective, with_overhead=False):
        # Newton reuses its dear Hessians: only some of its passes bring one (proximal Newton
        # under L1 does not)
        per_pass = costs["gradient"] + NEWTON_HESSIAN_SHARE * (costs["hessian"] - costs["gradient"])
    return (EXPECTED_PASSES[method] if passes is None else passes) * (per_pass + costs["overhead"])


class SolverOptionWarning(UserWarning):
    """An option given to a solver that it does not take (a typo, or meant for another solver)."""


@dataclass(frozen=True)
class SolverChoice:
    """The solver a requested name resolves to for a problem, and why (for the log)."""

    name: str
    reason: str


_BUILDERS: dict[str, Callable[..., Union[Solver, OwnLoopSolver]]] = {
    "gd": GradientDescent,
    "sgd": MiniBatchSGD,
    "local-sgd": LocalSGD,
    "async-sgd": AsyncSGD,
    "lbfgs": LBFGS,
    "owlqn": OWLQN,
    "newton": Newton,
    "newton-cg": TrustRegionNewtonCG,
}
# the same name, another method for the problem at hand: Newton under an L1 term is proximal
_VARIANTS: dict[str, tuple[Callable[..., Solver], ...]] = {"newton": (ProximalNewton,)}
SOLVERS = ("auto",) + tuple(_BUILDERS)
# which solvers' loss and gradient passes may travel compressed (sparkopt.engine.compression: the
# values trail the exact ones by a fraction of their last change, error feedback), and why
_COMPRESSED_PASSES: dict[str, tuple[bool, str]] = {
    "gd": (True, "gradient descent on error-feedback gradients (EF21, with the model sent the same way: "
                 "EF21-BC) converges linearly under the PL condition"),
    "lbfgs": (True, "L-BFGS on error-feedback gradients and losses: their errors vanish as the steps "
                    "shrink (measured in jobs/bench/comm.py; no convergence proof)"),
    "owlqn": (True, "OWL-QN on error-feedback gradients and losses: their errors vanish as the steps "
                    "shrink (measured in jobs/bench/comm.py; no convergence proof)"),
    "newton": (False, "Newton aggregates exact Hessians and its line search compares exact values"),
    "newton-cg": (False, "Newton-CG's trust region compares F with a model built from exact "
                         "Hessian-vector products"),
    "sgd": (False, "sampled passes are not compressed (error feedback needs the same value again)"),
    "local-sgd": (False, "local SGD exchanges model deltas of its own"),
    "async-sgd": (False, "the parameter server exchanges messages of its own"),
}
# what `auto` may resolve to (and so which options it may use)
_AUTO_CANDIDATES = ("newton", "newton-cg", "lbfgs", "owlqn")


def _accepted(builder: Callable) -> tuple[str, ...]:
    return tuple(name for name in inspect.signature(builder).parameters if name != "self")


def _accepted_by_name(name: str) -> tuple[str, ...]:
    out: list[str] = []
    for builder in (_BUILDERS[name],) + _VARIANTS.get(name, ()):
        out.extend(o for o in _accepted(builder) if o not in out)
    return tuple(out)


def solver_options(method: str) -> tuple[str, ...]:
    """The option names ``make_solver`` accepts for ``method`` (for ``auto``: those of any solver
    it may choose)."""
    names = _AUTO_CANDIDATES if method == "auto" else (method,)
    out: list[str] = []
    for name in names:
        if name not in _BUILDERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {method!r}")
        out.extend(o for o in _accepted_by_name(name) if o not in out)
    return tuple(out)


def compressed_passes(name: str) -> tuple[bool, str]:
    """(whether solver ``name``'s loss and gradient passes may travel compressed, why)."""
    return _COMPRESSED_PASSES.get(name, (False, f"{name!r} needs exact passes"))


def has_l1(objective: Objective) -> bool:
    w = objective.l1_weights
    return w is not None and bool(np.any(w > 0))


def explain_solver(objective: Objective, method: str = "auto") -> SolverChoice:
    """What ``method`` resolves to for this objective, and the reason.

    ``auto`` estimates each applicable method's cost (:func:`estimated_cost`: expected passes x
    the cost of a pass of its kind, from the objective's :class:`PassCosts`) and takes the
    cheapest (of costs within :data:`COST_TIE` of it, the one with the fewest expected passes):
    exact Newton (proximal Newton under L1) while p <= EXACT_NEWTON_MAX_PARAMS, Newton-CG,
    L-BFGS; OWL-QN under L1; L-BFGS / OWL-QN for a loss without curvature."""
    if method not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {method!r}")
    l1 = has_l1(objective)
    curvature = objective.smooth and objective.has_hessian
    small = objective.n_params <= EXACT_NEWTON_MAX_PARAMS
    if method == "auto":
        if not curvature:
            return SolverChoice("owlqn" if l1 else "lbfgs", "the loss has no usable curvature")
        candidates = (["newton"] if small else []) + (["owlqn"] if l1 else ["newton-cg", "lbfgs"])
        costs = {m: estimated_cost(objective, m) for m in candidates}
        cheapest = min(costs.values())
        tied = [m for m in candidates if costs[m] <= COST_TIE * cheapest]
        best = min(tied, key=lambda m: (EXPECTED_PASSES[m], costs[m], candidates.index(m)))
        table = ", ".join(f"{m} ~{c:.3g}" for m, c in sorted(costs.items(), key=lambda kv: kv[1]))
        why = f"cheapest by estimated cost in gradient passes ({table})"
        if len(tied) > 1:
            why += f"; within {COST_TIE:g}x of each other, the fewest expected passes"
        if not small:
            why += f"; exact Newton needs p <= {EXACT_NEWTON_MAX_PARAMS} (p = {objective.n_params})"
        if best == "newton" and l1:
            why += "; proximal Newton for the L1 term"
        return SolverChoice(best, why)
    if method == "newton" and l1 and curvature and small:
        return SolverChoice("newton", "proximal Newton: the L1 model is solved on the driver")
    if method in ("lbfgs", "newton", "newton-cg") and l1:
        return SolverChoice("owlqn", "as MLlib, L-BFGS becomes OWL-QN under an L1 term")
    if method == "newton":
        if not objective.has_hessian:
            raise ValueError("solver='newton' needs a twice-differentiable loss (hinge is not); use 'lbfgs'")
        if not small:
            return SolverChoice("newton-cg", f"{objective.n_params} parameters > {EXACT_NEWTON_MAX_PARAMS}: "
                                             "Newton-CG instead of a dense Hessian")
    return SolverChoice(method, "requested")


def choose_solver(objective: Objective, method: str = "auto") -> str:
    """The solver name ``method`` resolves to for this objective (see :func:`explain_solver`)."""
    return explain_solver(objective, method).name


def make_solver(name: str, options: dict[str, Any], l1: bool = False) -> Union[Solver, OwnLoopSolver]:
    """Build the solver ``name`` (a resolved name, not ``auto``) from ``options``.

    Options it does not take are left out with a :class:`SolverOptionWarning` naming them and the
    ones it accepts; invalid values raise InputError naming the parameter."""
    if name not in _BUILDERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")
    builder = ProximalNewton if (name == "newton" and l1) else _BUILDERS[name]
    accepted = _accepted_by_name(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        warnings.warn(f"sparkopt: solver {name!r} ignores option(s) {unknown}; it accepts {list(accepted)}",
                      SolverOptionWarning, stacklevel=3)
    takes = _accepted(builder)
    return builder(**{k: v for k, v in options.items() if k in takes})
