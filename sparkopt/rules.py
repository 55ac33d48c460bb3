"""Every parameter rule, declared once.

numpy only; never imports pyspark. The estimators (``sparkopt.ml``), ``fit_linear_model`` and the
solvers all check their parameters here, under the user-facing name (MLlib's camelCase), so one
value is refused with one message wherever it enters::

    check_param("regParam", -1.0)   ->  InputError: regParam must be >= 0, got -1.0
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import InputError

__all__ = ["Rule", "RULES", "check_param", "is_int", "SCHEDULES", "OPTIMIZERS", "COMPRESSION_SCHEMES", "SOLVER_ALIASES",
           "canonical_solver", "GLM_FAMILIES", "GLM_LINKS", "GLM_FAMILY_LINKS", "GLM_SOLVERS", "check_glm_link"]

#: step-size schedules of the SGD family (see sparkopt.solvers.sgd.scheduled_step); "auto" is each
#: solver's own default
SCHEDULES = ("auto", "constant", "inverse_sqrt", "exponential")
#: update rules of the SGD family (sparkopt.solvers.adaptive)
OPTIMIZERS = ("sgd", "adagrad", "adam")
#: compression schemes of the resident channel (sparkopt.engine.compression)
COMPRESSION_SCHEMES = ("none", "bf16", "int8", "topk", "powersgd")
#: MLlib's spellings of the solvers sparkopt names otherwise (MLlib's "normal" and "auto" are
#: sparkopt's own names too)
SOLVER_ALIASES = {"l-bfgs": "lbfgs"}

#: MLlib's GeneralizedLinearRegression families and, per family (tweedie aside: its link is the
#: power linkPower), the links MLlib allows (supportedFamilyAndLinkPairs), the canonical one first
GLM_FAMILIES = ("gaussian", "binomial", "poisson", "gamma", "tweedie")
GLM_LINKS = ("identity", "log", "logit", "probit", "cloglog", "inverse", "sqrt")
GLM_FAMILY_LINKS = {
    "gaussian": ("identity", "log", "inverse"),
    "binomial": ("logit", "probit", "cloglog"),
    "poisson": ("log", "identity", "sqrt"),
    "gamma": ("inverse", "identity", "log"),
}
#: GeneralizedLinearRegression's solvers: MLlib's "irls"; "auto" (irls up to 4096 features, else
#: sparkopt's choice); sparkopt's Newton and L-BFGS on the fixed penalized deviance
GLM_SOLVERS = ("irls", "auto", "newton", "newton-cg", "lbfgs", "l-bfgs")


def check_glm_link(family: str, link: str) -> str:
    """``link`` if MLlib pairs it with ``family`` (not tweedie, whose link is linkPower);
    InputError naming both params otherwise."""
    allowed = GLM_FAMILY_LINKS[family]
    if link not in allowed:
        raise InputError(f"param link must be one of {allowed} for family={family!r} (MLlib's family/link pairs), "
                         f"got link={link!r}")
    return link


def canonical_solver(name: str) -> str:
    """sparkopt's name of a solver given in either spelling ("l-bfgs" -> "lbfgs")."""
    return SOLVER_ALIASES.get(name, name)


def is_int(value: Any) -> bool:
    """An integer that is not a bool (True is an int in Python, never a valid count here)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _is_number(value) and bool(np.isfinite(value))


@dataclass(frozen=True)
class Rule:
    """``check(value) -> bool`` and the text completing "NAME must be ..."."""

    check: Callable[[Any], bool]
    text: str

    def holds(self, value: Any) -> bool:
        try:
            return bool(self.check(value))
        except (TypeError, ValueError):
            return False


def _one_of(options: tuple) -> Rule:
    return Rule(lambda v: v in options, f"one of {options}")


RULES: dict[str, Rule] = {
    # the objective
    "regParam": Rule(lambda v: _finite(v) and v >= 0, ">= 0"),
    "elasticNetParam": Rule(lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]"),
    "epsilon": Rule(lambda v: _finite(v) and v > 1.0, "> 1.0"),
    # the iteration loop
    "maxIter": Rule(lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "tol": Rule(lambda v: _finite(v) and v > 0, "> 0"),
    "maxPasses": Rule(lambda v: _is_number(v) and v > 0, "> 0"),
    "checkpointInterval": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "checkpointDir": Rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty path"),
    # the SGD family
    "stepSize": Rule(lambda v: _finite(v) and v > 0, "> 0"),
    "miniBatchFraction": Rule(lambda v: _is_number(v) and 0 < v <= 1, "in (0, 1]"),
    "stepSchedule": _one_of(SCHEDULES),
    "optimizer": _one_of(OPTIMIZERS),
    "decay": Rule(lambda v: _is_number(v) and 0 < v <= 1, "in (0, 1]"),
    "momentum": Rule(lambda v: _is_number(v) and 0 <= v < 1, "in [0, 1)"),
    "localSteps": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "localCombination": Rule(lambda v: _finite(v) and v >= 1, "a finite number >= 1"),
    "staleness": Rule(lambda v: v is None or (is_int(v) and v >= 0), "an integer >= 0 or None (unbounded)"),
    "seed": Rule(lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    # quasi-Newton / Newton settings
    "memory": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "maxCG": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    # generalized linear models (MLlib's GeneralizedLinearRegression validators)
    "glmFamily": _one_of(GLM_FAMILIES),
    "glmLink": _one_of(GLM_LINKS),
    "glmSolver": _one_of(GLM_SOLVERS),
    "variancePower": Rule(lambda v: _finite(v) and (v == 0 or v >= 1), "0 or >= 1 (MLlib's Tweedie powers)"),
    "linkPower": Rule(lambda v: _finite(v), "a finite number"),
    # engines
    "aggregationDepth": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "numPartitions": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "maxBlockSizeInMB": Rule(lambda v: _finite(v) and v >= 0, ">= 0 (0 lets the engine choose)"),
    # compressed exchanges of the resident engine (sparkopt.engine.compression)
    "compression": _one_of(COMPRESSION_SCHEMES),
    "compressionRatio": Rule(lambda v: _finite(v) and v >= 1, "a finite number >= 1 (1 sends every value exactly)"),
    # classification (MLlib's ParamValidators for thresholds)
    "thresholds": Rule(lambda v: len(v) >= 1 and all(_finite(t) and t >= 0 for t in v)
                       and sum(t == 0 for t in v) <= 1, "a non-empty list of numbers >= 0, at most one of them 0"),
    # MB of float64 data under which engine="auto" fits on the driver (0: never)
    "maxDriverSizeInMB": Rule(lambda v: _finite(v) and v >= 0, "a finite number >= 0 (MB; 0 never fits on the driver)"),
}


def check_param(name: str, value: Any, rule: Rule | None = None) -> Any:
    """Return ``value`` if it satisfies the rule of ``name`` (or the given ``rule``); otherwise
    raise :class:`~sparkopt.errors.InputError` (a ValueError) naming the parameter and the value."""
    rule = rule or RULES[name]
    if not rule.holds(value):
        raise InputError(f"{name} must be {rule.text}, got {value!r}")
    return value
