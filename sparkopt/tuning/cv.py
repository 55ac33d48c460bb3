"""k-fold cross-validation of a regularization path over one ingest, the folds' fits advancing
together: one pass over the data serves every fold.

numpy only; never imports pyspark. Every row has a fold id in 0..k-1: drawn from the seed and its
block's position (partition p, block j) in the one fold order every engine shares
(sparkopt.engine.fold), so the assignment is the same on every engine and in every pass and no
column is added to the data; or, with ``fold_col``, the user's own ids, carried by the blocks
from that column (checked in the first pass: integers in 0..k-1, each fold non-empty). Training
fold k is the engine seen through the rows whose id is not k, with its own statistics
(standardization, lambda's sd(y), the solver coordinates), so each fold's fit is exactly the fit
of a DataFrame holding those rows.

One pass gives the held-out statistics of every fold; a training fold's are the merge of the
others' (total minus held-out, without a second pass). Then k + 1 programs run in lockstep
(sparkopt.tuning.lockstep): each training fold's path over the same grid (by default
``n_reg_params`` values from the full data's lambda_max, glmnet's cv.glmnet) followed by one
request scoring every point's model on the fold's held-out rows, and the path on all rows (the
refit: its point at the chosen regParam is the returned model). Each pass over the data
evaluates whatever each still-running program asks next (a fold in a line search, another
computing its Hessian, a third checking KKT conditions), so the run costs about the passes of
its longest path instead of the sum of k + 1 paths; ``CVResult.passes`` is the former,
``fit_passes`` the latter.

Metrics (held-out, weighted): ``logLoss`` (mean log loss; the loss itself for logistic and
multinomial), ``accuracy``, ``areaUnderROC`` (binary; from the held-out weights of each class in
2048 bins of sigmoid(margin), as MLlib's evaluator bins its curve: a pair of rows in one bin
counts one half), ``rmse``, ``mae``, ``r2``, and ``loss`` (the mean held-out loss of
the fitted objective's loss, for any loss). ``avgMetrics`` / ``stdMetrics`` are the mean and the
(population) standard deviation over folds, as pyspark's CrossValidatorModel; the best regParam
optimizes the mean, and ``one_std_err_reg_param`` is the largest regParam whose mean is within
one standard error (std / sqrt(k)) of the best (glmnet's lambda.1se).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Optional, Sequence

import numpy as np

from ..blocks import Block
from ..engine.stats import DataStats, block_stats, merge_stats
from ..errors import InputError
from ..fit import LinearFit, validate_params
from ..objectives import make_block_objective
from ..objectives.losses import loss_info
from ..rules import check_param
from .lockstep import Lockstep, RowView, block_fold_ids, fold_ids
from .path import PathResult, default_min_ratio, lambda_max, reg_grid, regularization_path

__all__ = ["CVResult", "cross_validate", "fold_ids", "fold_statistics", "METRICS", "LARGER_IS_BETTER"]

#: metric name -> the losses it applies to (None: any)
METRICS = {"loss": None, "logLoss": ("logistic", "multinomial"), "accuracy": ("logistic", "multinomial"),
           "areaUnderROC": ("logistic", "squared_hinge"),
           "rmse": ("squared_error", "huber", "poisson"), "mae": ("squared_error", "huber", "poisson"),
           "r2": ("squared_error", "huber", "poisson")}
LARGER_IS_BETTER = ("accuracy", "r2", "areaUnderROC")
#: bins of the held-out ROC curve (MLlib's BinaryClassificationEvaluator down-samples to 1000)
ROC_BINS = 2048


class _FoldStats:
    """Per-fold DataStats that add by merging fold by fold (what map_sum's fold needs), and the
    count and first example of fold ids outside 0..k-1 (a fold column's)."""

    def __init__(self, stats: list, bad: int = 0, example: float = float("nan")):
        self.stats, self.bad, self.example = stats, bad, example

    def __add__(self, other: "_FoldStats") -> "_FoldStats":
        return _FoldStats([merge_stats(a, b) for a, b in zip(self.stats, other.stats)], self.bad + other.bad,
                          self.example if self.bad else other.example)


def _fold_block_stats(n_folds, seed, from_column, block, _payload, index):
    bad, example = 0, float("nan")
    if from_column and block.fold is not None:
        raw = block.fold
        wrong = ~(np.isfinite(raw) & (raw == np.round(raw)) & (raw >= 0) & (raw < n_folds))
        bad = int(wrong.sum())
        if bad:
            example = float(raw[np.flatnonzero(wrong)[0]])
            block = block.take(np.flatnonzero(~wrong))
    ids = block_fold_ids(block, index, n_folds, seed, from_column)
    out = []
    for k in range(n_folds):
        sub = block.take(np.flatnonzero(ids == k))
        out.append(block_stats(sub.X, sub.y, sub.w))
    return _FoldStats(out, bad, example)


def fold_statistics(engine, n_folds: int, seed: int, fold_col: Optional[str] = None) -> list[DataStats]:
    """One pass: the statistics of each fold's rows (held-out sets), in fold order; with
    ``fold_col`` the folds are the blocks' fold column, whose ids must be integers in
    0..n_folds-1 (InputError naming the column and a wrong value otherwise)."""
    fn = partial(_fold_block_stats, n_folds, seed, fold_col is not None)
    fn.wants_index = True
    result = engine.map_sum(fn, None)
    if result is None:
        raise InputError("the data have no rows to cross-validate")
    if result.bad:
        raise InputError(f"foldCol {fold_col!r} must hold integer fold ids in 0..numFolds-1 = 0..{n_folds - 1}: "
                         f"{result.bad} rows do not (e.g. {result.example!r})")
    return result.stats


def _merge_all(stats: Sequence[DataStats]) -> DataStats:
    out = stats[0]
    for s in stats[1:]:
        out = merge_stats(out, s)
    return out


def _heldout_sums(bo, block: Block, coefs: np.ndarray):
    """Per model (rows of ``coefs``): weighted loss, squared and absolute error of the mean
    prediction, correct classifications; plus the rows' weight, sum w y and sum w y^2."""
    m = coefs.shape[0]
    loss, sq, ab, right = np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m)
    y, w = block.y, block.w
    for i in range(m):
        loss[i] = bo.loss_sum(coefs[i], block)
        M = bo.margins(coefs[i], block.X)
        if bo.loss == "multinomial":
            right[i] = float(w[np.argmax(M, axis=1) == y.astype(np.int64)].sum())
        elif bo.loss in ("logistic", "squared_hinge", "hinge"):
            right[i] = float(w[(M > 0) == (y > 0.5)].sum())
        else:
            prediction = np.exp(M) if bo.loss == "poisson" else M
            sq[i] = float(w @ (y - prediction) ** 2)
            ab[i] = float(w @ np.abs(y - prediction))
    return loss, sq, ab, right, np.array([w.sum(), w @ y, w @ (y * y)])


def _heldout_roc(bo, block: Block, coefs: np.ndarray) -> np.ndarray:
    """(models, 2, ROC_BINS): the weight of the negative and of the positive rows in each bin of
    sigmoid(margin) (a monotone map of the margin into [0, 1], cut into equal bins)."""
    out = np.zeros((coefs.shape[0], 2, ROC_BINS))
    positive = (block.y > 0.5).astype(np.int64)
    for i in range(coefs.shape[0]):
        u = 0.5 * (1.0 + np.tanh(0.5 * bo.margins(coefs[i], block.X)))       # sigmoid, no overflow
        bins = np.minimum((u * ROC_BINS).astype(np.int64), ROC_BINS - 1)
        np.add.at(out[i], (positive, bins), block.w)
    return out


def area_under_roc(histogram: np.ndarray) -> np.ndarray:
    """Per model, the area under the ROC curve from :func:`_heldout_roc`'s weights: the weighted
    share of (positive, negative) pairs ranked right, a pair in the same bin counting one half
    (MLlib's binned curve, trapezoids between bins); nan without both classes."""
    negative, positive = histogram[:, 0, :], histogram[:, 1, :]
    below = np.cumsum(negative, axis=1) - negative
    pairs = negative.sum(axis=1) * positive.sum(axis=1)
    right = np.sum(positive * (below + 0.5 * negative), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, right / pairs, np.nan)


def _metric(name: str, loss, sq, ab, right, totals) -> np.ndarray:
    W, wy, wyy = totals
    if not W > 0:
        return np.full(loss.shape, np.nan)
    if name in ("loss", "logLoss"):
        return loss / W
    if name == "accuracy":
        return right / W
    if name == "rmse":
        return np.sqrt(sq / W)
    if name == "mae":
        return ab / W
    tss = wyy - wy * wy / W            # r2
    return 1.0 - sq / tss if tss > 0 else np.full(loss.shape, np.nan)


@dataclass
class CVResult:
    """``reg_params`` (decreasing), ``metrics`` (n_folds, n_reg) held-out values, their
    ``avg_metrics`` / ``std_metrics``, ``best_reg_param``, ``one_std_err_reg_param``, the
    ``paths`` of the training folds, ``full`` (the path on all rows over the whole grid) and its
    ``best`` model (a LinearFit); ``passes``: the passes over the data the whole run made,
    ``fit_passes``: what its fits would have made one after another (the sum of each fit's own
    passes, the statistics' and lambda_max's included); ``seconds``."""

    metric_name: str
    reg_params: np.ndarray
    metrics: np.ndarray
    best_reg_param: float
    one_std_err_reg_param: float
    best: LinearFit
    paths: list[PathResult] = field(default_factory=list)
    full: Optional[PathResult] = None
    passes: float = 0.0
    fit_passes: float = 0.0
    seconds: float = 0.0

    @property
    def avg_metrics(self) -> np.ndarray:
        return np.mean(self.metrics, axis=0)

    @property
    def std_metrics(self) -> np.ndarray:
        return np.std(self.metrics, axis=0)


def check_metric(metric_name: str, loss: str) -> str:
    if metric_name not in METRICS:
        raise InputError(f"metricName must be one of {tuple(METRICS)}, got {metric_name!r}")
    allowed = METRICS[metric_name]
    if allowed is not None and loss not in allowed:
        raise InputError(f"metricName {metric_name!r} does not apply to loss={loss!r} (it applies to {allowed})")
    return metric_name


def cross_validate(
    engine,
    loss: str,
    *,
    n_folds: int = 5,
    seed: int = 0,
    fold_col: Optional[str] = None,
    metric_name: str = "loss",
    elastic_net_param: float = 0.0,
    reg_params: Optional[Sequence[float]] = None,
    n_reg_params: int = 20,
    min_ratio: Optional[float] = None,
    fit_intercept: bool = True,
    standardization: bool = True,
    epsilon: float = 1.35,
    solver: str = "auto",
    tol: float = 1e-6,
    max_iter: int = 100,
    label_col: str = "label",
) -> CVResult:
    """k-fold cross-validation of the ``regParam`` path for one ``elastic_net_param``, the folds'
    paths and the refit on all rows advancing together (see the module docstring). ``fold_col``:
    the name of the column the blocks' fold ids were ingested from (the user's folds), instead of
    folds drawn from ``seed``."""
    validate_params(0.0, elastic_net_param, max_iter, tol, loss, epsilon)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise InputError(f"numFolds must be an integer >= 2, got {n_folds!r}")
    check_metric(metric_name, loss)
    if not loss_info(loss).smooth:
        raise InputError(f"cross-validation runs regularization paths, which need a smooth loss; loss={loss!r} "
                         "is not (use loss='squared_hinge')")
    started = time.perf_counter()
    passes0 = engine.passes
    classes = None
    from_column = fold_col is not None
    kw = dict(elastic_net_param=elastic_net_param, fit_intercept=fit_intercept, standardization=standardization,
              epsilon=epsilon, label_col=label_col)
    with engine.session():
        held = fold_statistics(engine, n_folds, seed, fold_col)
        empty = [k for k, s in enumerate(held) if s.n_rows == 0]
        if empty:
            where = f"foldCol {fold_col!r} has no row with fold id {empty[0]}" if from_column else \
                f"numFolds={n_folds} leaves a fold without rows ({engine.stats.n_rows} rows); use fewer folds"
            raise InputError(f"every fold needs rows: {where}")
        if loss == "multinomial":
            classes = int(max(engine.stats.label_max, 1)) + 1
        setup_passes = engine.passes - passes0
        if reg_params is None:
            before = engine.passes
            lam = lambda_max(engine, loss, n_classes=classes, **kw)
            setup_passes += engine.passes - before
            grid = reg_grid(lam, n_reg_params, default_min_ratio(engine.stats) if min_ratio is None else min_ratio)
        else:
            grid = np.sort(np.asarray([float(check_param("regParam", v)) for v in reg_params]))[::-1]
            if grid.size == 0 or len(np.unique(grid)) != len(grid):
                raise InputError(f"regParams must hold distinct values, got {list(reg_params)}")
        bo = make_block_objective(loss, engine.stats.n_features, fit_intercept, n_classes=max(classes or 2, 2),
                                  epsilon=epsilon)
        path_kw = dict(reg_params=grid, n_classes=classes, solver=solver, tol=tol, max_iter=max_iter, **kw)
        coordinator = Lockstep(engine)
        views: list[RowView] = []

        def fold_program(k: int):
            train = coordinator.view(_merge_all([s for i, s in enumerate(held) if i != k]),
                                     (n_folds, seed, k, False, from_column))
            test = coordinator.view(held[k], (n_folds, seed, k, True, from_column))
            views.extend((train, test))
            path = regularization_path(train, loss, **path_kw)
            coefs = np.array([p.fit.coef_vector for p in path.points])
            if metric_name == "areaUnderROC":
                return path, area_under_roc(test.map_sum(partial(_heldout_roc, bo), coefs))
            return path, _metric(metric_name, *test.map_sum(partial(_heldout_sums, bo), coefs))

        def full_program():
            view = coordinator.view(engine.stats, None)
            views.append(view)
            return regularization_path(view, loss, **path_kw)

        outcomes = coordinator.run([partial(fold_program, k) for k in range(n_folds)] + [full_program])
        paths = [path for path, _ in outcomes[:n_folds]]
        metrics = np.array([m for _, m in outcomes[:n_folds]])
        full = outcomes[n_folds]
        avg = np.mean(metrics, axis=0)
        sign = -1.0 if metric_name in LARGER_IS_BETTER else 1.0
        best_index = int(np.nanargmin(sign * avg))
        se = np.std(metrics, axis=0) / np.sqrt(n_folds)
        within = sign * avg <= sign * avg[best_index] + se[best_index]
        one_se_index = int(np.flatnonzero(within)[0])            # the grid decreases: the largest regParam
        best = full.points[best_index].fit
        # what the refit cost on its own: the path on all rows down to the chosen value
        best.result.passes = float(full.passes - sum(p.passes for p in full.points[best_index + 1:]))
    return CVResult(metric_name=metric_name, reg_params=grid, metrics=metrics, best_reg_param=float(grid[best_index]),
                    one_std_err_reg_param=float(grid[one_se_index]), best=best, paths=paths, full=full,
                    passes=float(engine.passes - passes0),
                    fit_passes=float(setup_passes + sum(v.passes for v in views)),
                    seconds=time.perf_counter() - started)
