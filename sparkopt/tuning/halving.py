"""Successive halving over any fit settings (elasticNetParam, regParam, the solver and its
options such as SGD's step size and mini-batch fraction), the survivors of each rung continuing
from where they stopped.

numpy only; never imports pyspark. The rows are split once into training and validation rows
(fold 0 of ``n_folds`` folds drawn from the seed and the block positions, as cross-validation
draws them; one pass gives both sets' statistics). Rung 0 fits every configuration with the
smallest resource and scores it on the validation rows; the best ``ceil(n / factor)`` (by the
validation metric, ties to the earlier configuration) go on to the next rung with ``factor``
times the resource, until one is left or the resource reaches its maximum (Jamieson &
Talwalkar 2016; scikit-learn's HalvingGridSearchCV).

The resource is

* ``"iterations"``: a rung's fits run to ``max_iter = r``. A survivor continues from its whole
  solver state (iterate, L-BFGS pairs, SGD's step counter and sampling seeds, momentum), kept
  between rungs as a checkpoint in a temporary directory (sparkopt.solvers.checkpoint), so its
  fit to ``r`` at a later rung equals bit for bit a fit run to ``r`` without stopping.
* ``"rows"``: a rung's fits see a fixed Bernoulli sample of the training rows of fraction ``r``
  (the same seed for every rung, so a larger rung's rows include the smaller's), to convergence
  or ``max_iter``. A survivor starts from its previous rung's coefficients (its optimizer's other
  state belongs to the objective of fewer rows, so it is not carried over).

All fits of a rung and their validation scores advance together (sparkopt.tuning.lockstep): one
pass over the data serves every configuration still fitting, so a rung costs about the passes of
its longest fit.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Optional, Sequence

import numpy as np

from ..engine.stats import block_stats
from ..errors import InputError
from ..fit import LinearFit, check_labels, fit_linear_model
from ..objectives import make_block_objective
from ..rules import check_param
from .cv import LARGER_IS_BETTER, _FoldStats, _heldout_sums, _merge_all, _metric, check_metric, fold_statistics
from .lockstep import Lockstep

__all__ = ["successive_halving", "HalvingResult", "Rung", "CONFIGURATION_KEYS", "RESOURCES"]

#: what a configuration may set (the other fit settings are common to all of them)
CONFIGURATION_KEYS = ("reg_param", "elastic_net_param", "solver", "solver_options")
RESOURCES = ("iterations", "rows")


@dataclass
class Rung:
    """One rung: its ``resource`` (max_iter, or the fraction of the training rows), the
    ``candidates`` (indices into the configurations) and their validation ``metrics``, the
    ``fits`` (LinearFit, in the candidates' order), the ``kept`` candidates, the ``passes`` the
    rung made and ``fit_passes`` its fits and scores would make one after another."""

    resource: float
    candidates: list[int]
    metrics: np.ndarray
    fits: list[LinearFit]
    kept: list[int]
    passes: float = 0.0
    fit_passes: float = 0.0


@dataclass
class HalvingResult:
    """The ``rungs``; ``best_index`` into ``configurations`` and its ``best`` fit (at the last
    rung's resource); ``passes`` of the whole search (the split's statistics included),
    ``seconds``."""

    resource: str
    metric_name: str
    configurations: list[dict]
    rungs: list[Rung] = field(default_factory=list)
    best_index: int = -1
    best: Optional[LinearFit] = None
    passes: float = 0.0
    seconds: float = 0.0

    @property
    def best_configuration(self) -> dict:
        return self.configurations[self.best_index]

    @property
    def fit_passes(self) -> float:
        """The passes the rungs' fits and scores would make one after another."""
        return float(sum(r.fit_passes for r in self.rungs))


def _check_configurations(configurations) -> list[dict]:
    if not isinstance(configurations, (list, tuple)) or len(configurations) == 0:
        raise InputError("configurations must be a non-empty list of dicts of fit settings")
    out = []
    for i, config in enumerate(configurations):
        if not isinstance(config, dict):
            raise InputError(f"configuration {i} must be a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - set(CONFIGURATION_KEYS))
        if unknown:
            raise InputError(f"configuration {i} sets {unknown}; a configuration may set {CONFIGURATION_KEYS} "
                             "(the other settings are the search's own arguments)")
        if "solver_options" in config and not isinstance(config["solver_options"], dict):
            raise InputError(f"configuration {i}: solver_options must be a dict")
        out.append(dict(config))
    return out


def _schedule(resource: str, n: int, factor: float, min_resource, max_resource) -> list[float]:
    """The rungs' resources, growing by ``factor`` and ending at ``max_resource``: as many rungs
    as halving ``n`` candidates down to one takes, from ``min_resource`` when given (fewer rungs
    when the maximum comes first)."""
    rungs = 1 + (math.ceil(math.log(n) / math.log(factor) - 1e-12) if n > 1 else 0)
    if min_resource is None:
        values = [max_resource / factor ** (rungs - 1 - i) for i in range(rungs)]
    else:
        if resource == "iterations":
            check_param("maxIter", min_resource)
        if not 0 < min_resource <= max_resource:
            raise InputError(f"min_resource must be in (0, max_resource={max_resource}], got {min_resource!r}")
        values = [min(min_resource * factor ** i, max_resource) for i in range(rungs)]
    if resource == "iterations":
        values = [max(1, int(round(v))) for v in values]
    out: list = []
    for v in values:
        if not out or v > out[-1]:
            out.append(v)
    return out


def successive_halving(
    engine,
    loss: str,
    configurations: Sequence[dict],
    *,
    resource: str = "iterations",
    factor: float = 3.0,
    min_resource: Optional[float] = None,
    max_resource: Optional[float] = None,
    metric_name: str = "loss",
    n_folds: int = 5,
    seed: int = 0,
    fit_intercept: bool = True,
    standardization: bool = True,
    epsilon: float = 1.35,
    tol: float = 1e-6,
    max_iter: int = 100,
    label_col: str = "label",
) -> HalvingResult:
    """Successive halving of ``configurations`` (dicts of ``reg_param``, ``elastic_net_param``,
    ``solver``, ``solver_options``) for ``loss`` over one engine; see the module docstring.

    ``resource``: ``"iterations"`` (default ``max_resource = max_iter``) or ``"rows"`` (a fraction
    of the training rows, default ``max_resource = 1``); ``min_resource`` by default gives as many
    rungs as halving the candidates by ``factor`` down to one takes. Validation: fold 0 of
    ``n_folds`` (1 / n_folds of the rows); ``metric_name`` as sparkopt.tuning.cv's."""
    started = time.perf_counter()
    configs = _check_configurations(configurations)
    if resource not in RESOURCES:
        raise InputError(f"resource must be one of {RESOURCES}, got {resource!r}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise InputError(f"factor must be a number > 1, got {factor!r}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise InputError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    check_param("maxIter", max_iter)
    check_metric(metric_name, loss)
    if max_resource is None:
        max_resource = max_iter if resource == "iterations" else 1.0
    if resource == "rows" and not 0 < max_resource <= 1:
        raise InputError(f"with resource='rows' max_resource is a fraction of the rows in (0, 1], got {max_resource!r}")
    schedule = _schedule(resource, len(configs), float(factor), min_resource, max_resource)
    passes0 = engine.passes
    result = HalvingResult(resource=resource, metric_name=metric_name, configurations=configs)
    common = dict(fit_intercept=fit_intercept, standardization=standardization, epsilon=epsilon, tol=tol,
                  label_col=label_col)
    sign = -1.0 if metric_name in LARGER_IS_BETTER else 1.0
    with engine.session(), tempfile.TemporaryDirectory(prefix="sparkopt-halving-") as scratch:
        held = fold_statistics(engine, n_folds, seed)
        if held[0].n_rows == 0 or all(s.n_rows == 0 for s in held[1:]):
            raise InputError(f"n_folds={n_folds} leaves no validation or no training rows "
                             f"({engine.stats.n_rows} rows)")
        train_stats, valid_stats = _merge_all(held[1:]), held[0]
        classes = check_labels(train_stats, loss, label_col)
        bo = make_block_objective(loss, engine.stats.n_features, fit_intercept, n_classes=max(classes, 2),
                                  epsilon=epsilon)
        train_rows, valid_rows = (n_folds, seed, 0, False, False), (n_folds, seed, 0, True, False)
        candidates = list(range(len(configs)))
        coefs: dict[int, np.ndarray] = {}
        for r in schedule:
            coordinator = Lockstep(engine)
            subsample = None if resource == "iterations" or r >= 1.0 else (float(r), int(seed))
            stats = train_stats
            if subsample is not None:
                stats = coordinator.view(train_stats, train_rows, subsample)   # outside run: one pass
                stats = stats.map_sum(_sample_stats, None).stats[0]
            views = []

            def program(i: int, budget: float = r, stats=stats, subsample=subsample):
                train = coordinator.view(stats, train_rows, subsample)
                valid = coordinator.view(valid_stats, valid_rows)
                views.extend((train, valid))
                config = configs[i]
                kw = dict(common, reg_param=config.get("reg_param", 0.0),
                          elastic_net_param=config.get("elastic_net_param", 0.0),
                          solver=config.get("solver", "auto"), solver_options=config.get("solver_options"),
                          n_classes=classes)
                if resource == "iterations":
                    kw.update(max_iter=int(budget), checkpoint_dir=os.path.join(scratch, f"configuration-{i}"))
                else:
                    kw.update(max_iter=max_iter, initial_coef=coefs.get(i))
                fit = fit_linear_model(train, loss, **kw)
                sums = valid.map_sum(partial(_heldout_sums, bo), fit.coef_vector[None, :])
                return fit, float(_metric(metric_name, *sums)[0])

            before = engine.passes
            outcomes = coordinator.run([partial(program, i) for i in candidates])
            metrics = np.array([m for _, m in outcomes])
            fits = [f for f, _ in outcomes]
            for i, fit in zip(candidates, fits):
                coefs[i] = fit.coef_vector
            order = sorted(range(len(candidates)), key=lambda j: (sign * metrics[j] if np.isfinite(metrics[j])
                                                                  else np.inf, j))
            last = r == schedule[-1]
            keep = 1 if last else math.ceil(len(candidates) / factor)
            kept = [candidates[j] for j in order[:keep]]
            result.rungs.append(Rung(resource=r, candidates=list(candidates), metrics=metrics, fits=fits,
                                     kept=kept, passes=float(engine.passes - before),
                                     fit_passes=float(sum(v.passes for v in views))))
            if last:
                result.best_index = kept[0]
                result.best = fits[order[0]]
            candidates = kept
    result.passes = float(engine.passes - passes0)
    result.seconds = time.perf_counter() - started
    return result


def _sample_stats(block, _payload):
    return _FoldStats([block_stats(block.X, block.y, block.w)])
