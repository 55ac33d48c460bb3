"""k-fold cross-validation of a regularization path over one ingest.

numpy only; never imports pyspark. Every row gets a fold id in 0..k-1 drawn from the seed and its
block's position (partition p, block j) in the one fold order every engine shares
(sparkopt.engine.fold), so the assignment is the same on every engine and in every pass, and no
column is added to the data. Training fold k is the engine seen through the rows whose id is
not k (:class:`FoldView`: the rows are selected inside the pass, on whichever process holds the
block), with its own statistics (standardization, lambda's sd(y), the solver coordinates), so
each fold's fit is exactly the fit of a DataFrame holding those rows.

One pass gives the held-out statistics of every fold; a training fold's are the merge of the
others' (total minus held-out, without a second pass). Each training fold then runs the path
(sparkopt.tuning.path) over the same grid (by default ``n_reg_params`` values from the full
data's lambda_max, glmnet's cv.glmnet), and one pass over its held-out rows scores every point's
model at once. The k paths run one after the other (each over the same cached blocks): the
fits of one grid point do not yet advance together in one pass.

Metrics (held-out, weighted): ``logLoss`` (mean log loss; the loss itself for logistic and
multinomial), ``accuracy``, ``rmse``, ``mae``, ``r2``, and ``loss`` (the mean held-out loss of
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

from ..blocks import Block, sample_rng
from ..engine.stats import DataStats, block_stats, merge_stats
from ..errors import InputError
from ..fit import LinearFit, validate_params
from ..objectives import make_block_objective
from ..objectives.losses import loss_info
from ..rules import check_param
from .columns import EngineView
from .path import PathResult, default_min_ratio, lambda_max, reg_grid, regularization_path

__all__ = ["FoldView", "CVResult", "cross_validate", "fold_ids", "METRICS", "LARGER_IS_BETTER"]

#: metric name -> the losses it applies to (None: any)
METRICS = {"loss": None, "logLoss": ("logistic", "multinomial"), "accuracy": ("logistic", "multinomial"),
           "rmse": ("squared_error", "huber", "poisson"), "mae": ("squared_error", "huber", "poisson"),
           "r2": ("squared_error", "huber", "poisson")}
LARGER_IS_BETTER = ("accuracy", "r2")
#: keeps fold ids apart from the sampling seeds of the same block position
FOLD_SALT = 0x5F01D


def fold_ids(seed: int, n_folds: int, index: tuple[int, int], n_rows: int) -> np.ndarray:
    """(n_rows,) fold ids in 0..n_folds-1 of the rows of block ``index = (partition, block)``."""
    p, j = index
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, FOLD_SALT, int(p), int(j)])
    return rng.integers(0, n_folds, n_rows)


class _OnRows:
    """A block function applied to the rows of one fold (``held_out``) or of all others; samples
    after the selection when ``fraction`` is set (as the engine would have sampled the view)."""

    wants_index = True

    def __init__(self, fn, n_folds: int, seed: int, fold: int, held_out: bool, fraction=None, sample_seed=None):
        self.fn, self.n_folds, self.seed, self.fold, self.held_out = fn, n_folds, seed, fold, held_out
        self.fraction, self.sample_seed = fraction, sample_seed
        self.fn_wants_index = bool(getattr(fn, "wants_index", False))

    def __call__(self, block: Block, payload, index):
        ids = fold_ids(self.seed, self.n_folds, index, block.n_rows)
        rows = np.flatnonzero((ids == self.fold) if self.held_out else (ids != self.fold))
        sub = block.take(rows)
        if self.fraction is not None:
            sub = sub.sample(self.fraction, sample_rng(self.sample_seed, *index))
        return self.fn(sub, payload, index) if self.fn_wants_index else self.fn(sub, payload)


class _FoldStats:
    """Per-fold DataStats that add by merging fold by fold (what map_sum's fold needs)."""

    def __init__(self, stats: list):
        self.stats = stats

    def __add__(self, other: "_FoldStats") -> "_FoldStats":
        return _FoldStats([merge_stats(a, b) for a, b in zip(self.stats, other.stats)])


def _fold_block_stats(n_folds, seed, block, _payload, index):
    ids = fold_ids(seed, n_folds, index, block.n_rows)
    out = []
    for k in range(n_folds):
        sub = block.take(np.flatnonzero(ids == k))
        out.append(block_stats(sub.X, sub.y, sub.w))
    return _FoldStats(out)


def fold_statistics(engine, n_folds: int, seed: int) -> list[DataStats]:
    """One pass: the statistics of each fold's rows (held-out sets), in fold order."""
    fn = partial(_fold_block_stats, n_folds, seed)
    fn.wants_index = True
    result = engine.map_sum(fn, None)
    if result is None:
        raise InputError("the data have no rows to cross-validate")
    return result.stats


class FoldView(EngineView):
    """``parent`` seen through the rows of fold ``fold`` (``held_out``) or of every other fold
    (the training fold), with those rows' statistics ``stats``."""

    def __init__(self, parent, stats: DataStats, n_folds: int, seed: int, fold: int, held_out: bool):
        super().__init__(parent, stats)
        self.n_folds, self.seed, self.fold, self.held_out = n_folds, seed, fold, held_out

    def map_sum(self, fn, payload, *, fraction=None, seed=None):
        # sampling happens on the selected rows (the parent's pass is counted whole)
        wrapped = _OnRows(fn, self.n_folds, self.seed, self.fold, self.held_out, fraction, seed)
        return self.parent.map_sum(wrapped, payload)


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
    ``paths`` of the training folds, the refit ``best`` model on all rows (a LinearFit),
    ``passes`` / ``seconds`` of the whole run."""

    metric_name: str
    reg_params: np.ndarray
    metrics: np.ndarray
    best_reg_param: float
    one_std_err_reg_param: float
    best: LinearFit
    paths: list[PathResult] = field(default_factory=list)
    passes: float = 0.0
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
    """k-fold cross-validation of the ``regParam`` path for one ``elastic_net_param`` (see the
    module docstring), then the refit at the best regParam on all rows."""
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
    kw = dict(elastic_net_param=elastic_net_param, fit_intercept=fit_intercept, standardization=standardization,
              epsilon=epsilon, label_col=label_col)
    with engine.session():
        held = fold_statistics(engine, n_folds, seed)
        if any(s.n_rows == 0 for s in held):
            raise InputError(f"numFolds={n_folds} leaves a fold without rows ({engine.stats.n_rows} rows); "
                             "use fewer folds")
        if loss == "multinomial":
            classes = int(max(engine.stats.label_max, 1)) + 1
        if reg_params is None:
            lam = lambda_max(engine, loss, n_classes=classes, **kw)
            grid = reg_grid(lam, n_reg_params, default_min_ratio(engine.stats) if min_ratio is None else min_ratio)
        else:
            grid = np.sort(np.asarray([float(check_param("regParam", v)) for v in reg_params]))[::-1]
            if grid.size == 0 or len(np.unique(grid)) != len(grid):
                raise InputError(f"regParams must hold distinct values, got {list(reg_params)}")
        bo = None
        metrics = np.empty((n_folds, len(grid)))
        paths = []
        for k in range(n_folds):
            train_stats = _merge_all([s for i, s in enumerate(held) if i != k])
            train = FoldView(engine, train_stats, n_folds, seed, k, held_out=False)
            path = regularization_path(train, loss, reg_params=grid, n_classes=classes, solver=solver, tol=tol,
                                       max_iter=max_iter, **kw)
            paths.append(path)
            if bo is None:
                bo = make_block_objective(loss, engine.stats.n_features, fit_intercept,
                                          n_classes=max(path.n_classes, 2), epsilon=epsilon)
            coefs = np.array([p.fit.coef_vector for p in path.points])
            test = FoldView(engine, held[k], n_folds, seed, k, held_out=True)
            sums = test.map_sum(partial(_heldout_sums, bo), coefs)
            metrics[k] = _metric(metric_name, *sums)
        avg = np.mean(metrics, axis=0)
        sign = -1.0 if metric_name in LARGER_IS_BETTER else 1.0
        best_index = int(np.nanargmin(sign * avg))
        se = np.std(metrics, axis=0) / np.sqrt(n_folds)
        within = sign * avg <= sign * avg[best_index] + se[best_index]
        one_se_index = int(np.flatnonzero(within)[0])            # the grid decreases: the largest regParam
        # the refit on all rows, down the grid to the best value with warm starts
        refit = regularization_path(engine, loss, reg_params=grid[: best_index + 1], n_classes=classes,
                                    solver=solver, tol=tol, max_iter=max_iter, **kw)
        best = refit.points[-1].fit
        best.result.passes = refit.passes          # what the refit cost, down the grid to the best value
    return CVResult(metric_name=metric_name, reg_params=grid, metrics=metrics, best_reg_param=float(grid[best_index]),
                    one_std_err_reg_param=float(grid[one_se_index]), best=best, paths=paths,
                    passes=float(engine.passes - passes0), seconds=time.perf_counter() - started)
