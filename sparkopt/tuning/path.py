"""Regularization paths: every regParam of a decreasing grid for one elasticNetParam, for the
price of a few fits (glmnet's recipe on sparkopt's engines and solvers).

The objective at each point is the pinned one (sparkopt.fit, MLlib's conventions):

    F_lam(beta, c) = (1 / sum_i w_i) sum_i w_i loss(y_i, x_i.beta + c)
                     + lam * (alpha * sum_j s_j |beta_j| + (1 - alpha) / 2 * sum_j (s_j beta_j)^2)

with s_j = sd_j under ``standardization`` (else 1) and squared error's L2 part divided by sd(y).
In the coefficients' own units the L1 term is ``lam * alpha * s_j |beta_j|`` for every loss
(squared error's sd(y) cancels there), so the conditions below are the same for all of them.

* lambda_max. At the intercept-only model (beta = 0, intercept at its optimum: the null model)
  the gradient of the mean loss is g_j; beta = 0 is optimal for F_lam iff |g_j| <= lam alpha s_j
  for every feature (the L2 part has zero gradient at 0), so the smallest such lam is
  ``max_j |g_j| / (alpha s_j)`` (max over classes too for multinomial). It is rounded up by
  1e-10 relative so that the rounding of a pass's sums cannot leave a coefficient at 1e-17.
  For alpha = 0 (ridge) no finite lam zeroes beta; the grid then starts where alpha = 1e-3 would
  (glmnet's convention).
* The grid: ``n`` values from lambda_max down to ``min_ratio * lambda_max``, geometric, with
  min_ratio 1e-4 when there are more rows than features, else 1e-2 (glmnet's defaults).
* Warm starts: each point starts from the previous point's coefficients (mapped through
  coefficient space, since the solver coordinates depend on lam through the L2 term).
* Sequential strong rule (Tibshirani et al. 2012): at lam_k, feature j is set aside when
  ``|g_j(lam_{k-1})| < alpha s_j (2 lam_k - lam_{k-1})`` and it was never nonzero before; the
  problem over the kept features is solved (sparkopt.tuning.columns), then one pass computes the
  full gradient and checks the KKT conditions of every set-aside feature. A feature whose
  pseudo-gradient exceeds the solve's own tolerance (tol x the gradient's scale, in solver units)
  is added back and the point solved again, so no returned model violates them. The same pass
  gives the gradient the next point's rule needs. What screening saves is the width of the
  problem the solver sees: on a wide sparse set the kept features are few, so exact (proximal)
  Newton replaces OWL-QN or Newton-CG over every feature.
* Early stop (glmnet): after at least 5 points, stop when the deviance ratio
  ``1 - dev(model) / dev(null)`` grows by less than 1e-5 of itself, or passes 0.999.

Squared error with few features solves every point on the driver from one pass of sufficient
statistics (sparkopt.least_squares: solver 'normal'); no screening is needed there.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..fit import LinearFit, _initial_coef, _package, build_objective, check_labels, choose_fit_method, \
    validate_params
from ..least_squares import GramObjective, gram_statistics
from ..linear_objective import LinearModelObjective
from ..objectives import make_block_objective
from ..objectives.losses import loss_info
from ..objectives.penalties import ElasticNet
from ..rules import check_param
from ..solvers import ConvergenceWarning, Status, minimize
from ..solvers.registry import EXACT_NEWTON_MAX_PARAMS, estimated_cost
from ..solvers.result import finish, pseudo_gradient
from .columns import ColumnSubsetEngine, expand_coef, restrict_coef

__all__ = ["PathPoint", "PathResult", "NullModel", "regularization_path", "lambda_max", "reg_grid",
           "null_model", "RIDGE_ALPHA", "DEVIANCE_TOL", "DEVIANCE_MAX", "EARLY_STOP_MIN_POINTS"]

#: the elasticNetParam a ridge path's grid is computed with (glmnet: lambda_max is infinite at 0)
RIDGE_ALPHA = 1e-3
#: early stop when the deviance ratio grows by less than this fraction of itself (glmnet's fdev)
DEVIANCE_TOL = 1e-5
#: early stop once the deviance ratio exceeds this (glmnet's devmax)
DEVIANCE_MAX = 0.999
#: early stop is never considered before this many points (glmnet's mnlam)
EARLY_STOP_MIN_POINTS = 5
#: lambda_max is rounded up by this relative margin (see the module docstring)
LAMBDA_MAX_MARGIN = 1e-10
#: passes a warm-started point takes (a9a, ridge logistic, 20 points to 1e-4 lambda_max, tol 1e-6:
#: Newton 73 passes in all, L-BFGS 194): what `auto` weighs, with each pass's cost, for a smooth path
WARM_PASSES = {"newton": 3.7, "lbfgs": 9.7}


@dataclass
class NullModel:
    """The intercept-only model (beta = 0, intercept and Huber's sigma at their optimum): coef in
    the block objective's layout; grad the gradient of the mean loss there (coefficient space,
    (n_params,)); loss the mean loss; constant the mean of the loss's coef-free constant (Poisson's
    y log y - y; 0 otherwise), so that ``loss + constant`` is half the mean deviance."""

    coef: np.ndarray
    grad: np.ndarray
    loss: float
    constant: float
    passes: float


@dataclass
class PathPoint:
    """One model of a path. ``fit``: the model as a LinearFit (coefficients on the original
    scale, intercept, F, the last solve's OptimizeResult); ``loss``: its mean data loss (F minus
    the penalty); ``deviance_ratio``: 1 - deviance / null deviance; ``passes`` / ``seconds``:
    what this point cost (solves plus KKT checks); ``screened``: features the solver saw
    (None: no screening); ``kkt_added``: features the KKT check put back; ``kkt_max``: the largest
    KKT violation among the set-aside features at the returned model (solver units, <=
    ``threshold`` by construction; nan when nothing was set aside); ``threshold``: tol times the
    point's gradient scale, the bound every coordinate's pseudo-gradient meets at convergence."""

    reg_param: float
    fit: LinearFit
    loss: float
    deviance_ratio: float
    passes: float
    seconds: float
    nit: int
    status: Status
    solver: str
    n_nonzero: int
    screened: Optional[int]
    kkt_added: int
    kkt_max: float
    threshold: float

    @property
    def objective(self) -> float:
        return self.fit.objective

    @property
    def coefficients(self) -> np.ndarray:
        return self.fit.coefficients

    @property
    def intercept(self):
        return self.fit.intercept

    @property
    def converged(self) -> bool:
        return self.status in (Status.CONVERGED, Status.PRECISION_LIMIT)


@dataclass
class PathResult:
    """A regularization path: ``points`` in decreasing regParam; ``lambda_max`` as in the module
    docstring; ``passes`` / ``seconds`` for the whole path (null model included); ``stopped``:
    why the path ended before the grid did (None if it did not)."""

    loss: str
    elastic_net_param: float
    lambda_max: float
    grid: np.ndarray
    points: list[PathPoint] = field(default_factory=list)
    passes: float = 0.0
    seconds: float = 0.0
    stopped: Optional[str] = None
    n_classes: int = 2

    @property
    def reg_params(self) -> np.ndarray:
        return np.array([p.reg_param for p in self.points])

    @property
    def objectives(self) -> np.ndarray:
        return np.array([p.objective for p in self.points])

    @property
    def coefficients(self) -> np.ndarray:
        """(n_points, d), or (n_points, K, d) for multinomial."""
        return np.array([np.asarray(p.coefficients) for p in self.points])

    @property
    def intercepts(self) -> np.ndarray:
        return np.array([np.asarray(p.intercept, dtype=float) for p in self.points])


class _Problem:
    """What stays fixed along a path: the data, loss, layout and each feature's penalty weight."""

    def __init__(self, engine, loss, elastic_net_param, fit_intercept, standardization, n_classes, epsilon,
                 label_col):
        info = loss_info(loss)
        if not info.smooth:
            raise InputError(f"regularization paths need a smooth loss; loss={loss!r} is not (use "
                             "loss='squared_hinge', or fit a grid of regParam values one by one)")
        stats = engine.stats
        self.engine, self.loss, self.alpha = engine, loss, float(elastic_net_param)
        self.fit_intercept, self.standardization = bool(fit_intercept), bool(standardization)
        self.epsilon, self.label_col = float(epsilon), label_col
        self.classes = check_labels(stats, loss, label_col) if n_classes is None else int(n_classes)
        d = stats.n_features
        self.d = d
        self.bo = make_block_objective(loss, d, fit_intercept, n_classes=max(self.classes, 2), epsilon=epsilon)
        self.n_outputs = self.classes if loss == "multinomial" else 1
        self.has_scale = self.bo.scale_index is not None
        sd = np.asarray(stats.feature_std, dtype=float)
        self.active = np.flatnonzero(sd > 0)
        self.active_mask = sd > 0
        # each feature's L1 weight per unit of regParam * alpha, in the coefficients' units
        self.weights = sd if standardization else np.ones(d)

    def objective(self, reg, engine=None):
        """The driver-side objective at regParam ``reg`` over ``engine`` (default the data). Costs
        no pass: coordinates and penalty come from the statistics."""
        objective, _, _ = build_objective(
            engine if engine is not None else self.engine, self.loss, reg_param=reg,
            elastic_net_param=self.alpha, fit_intercept=self.fit_intercept, standardization=self.standardization,
            n_classes=self.classes, epsilon=self.epsilon, label_col=self.label_col)
        return objective

    def feature_gradient(self, grad: np.ndarray) -> np.ndarray:
        """(d,) max over outputs of |d mean loss / d beta_j| from a coefficient-space gradient."""
        q = self.d + int(self.fit_intercept)
        G = np.asarray(grad, dtype=float)[: self.n_outputs * q].reshape(self.n_outputs, q)[:, : self.d]
        return np.max(np.abs(G), axis=0) if self.d else np.zeros(0)

    def nonzero_features(self, coef) -> np.ndarray:
        q = self.d + int(self.fit_intercept)
        B = np.asarray(coef, dtype=float)[: self.n_outputs * q].reshape(self.n_outputs, q)[:, : self.d]
        return np.any(B != 0, axis=0)


def _null_terms(bo, block, coef):
    f, g = bo.loss_grad(coef, block)
    return f, g, bo.loss_constant_sum(block)


def null_model(engine, problem: _Problem, gram=None) -> NullModel:
    """The intercept-only model and the mean-loss gradient there. With squared error's
    sufficient statistics (``gram``) no pass; else one pass where the intercept has a closed form
    (logistic, squared error, Poisson: the loss's start value), or Newton over the intercept(s)
    and scale alone (multinomial, Huber; a few passes) and then that pass."""
    stats, bo = engine.stats, problem.bo
    passes0 = engine.passes
    coef = _initial_coef(bo, stats, problem.loss, problem.fit_intercept)
    if gram is not None:
        coords = problem.objective(0.0, engine).coordinates
        objective = GramObjective(gram, coords, ElasticNet(0.0, 0.0, np.zeros(coords.n_z)), problem.fit_intercept)
        loss_sum, grad = objective.coef_loss_grad(coef)
        return NullModel(coef=coef, grad=grad / gram.weight, loss=loss_sum / gram.weight, constant=0.0, passes=0.0)
    start = loss_info(problem.loss).start_intercept
    closed = (not problem.fit_intercept or (start is not None and start(float(stats.label_mean)) is not None))
    if not closed or problem.has_scale:
        # the coordinates of the full problem with no active feature: z = intercepts (and sigma)
        full = problem.objective(0.0, engine).coordinates
        coords = dataclasses.replace(full, active=np.zeros(0, dtype=np.int64), inv_scale=np.zeros(0),
                                     center=np.zeros(0) if full.center is not None else None)
        objective = LinearModelObjective(engine, bo, ElasticNet(0.0, 0.0, np.zeros(coords.n_z)), coords)
        result = minimize(objective, coords.from_coef(coef), "newton", tol=1e-12, max_iter=50, warn=False)
        coef = coords.to_coef(result.x)
    f, g, constant = engine.map_sum(partial(_null_terms, bo), coef)
    W = float(engine.weight_sum)
    return NullModel(coef=coef, grad=np.asarray(g, dtype=float) / W, loss=float(f) / W, constant=float(constant) / W,
                     passes=float(engine.passes - passes0))


def _lambda_max(problem: _Problem, null: NullModel) -> float:
    alpha = max(problem.alpha, RIDGE_ALPHA)
    score = problem.feature_gradient(null.grad)[problem.active]
    if score.size == 0:
        return 0.0
    return float(np.max(score / (alpha * problem.weights[problem.active]))) * (1.0 + LAMBDA_MAX_MARGIN)


def lambda_max(engine, loss: str, *, elastic_net_param: float = 1.0, fit_intercept: bool = True,
               standardization: bool = True, n_classes: Optional[int] = None, epsilon: float = 1.35,
               label_col: str = "label") -> float:
    """The smallest regParam at which every coefficient of the pinned objective is 0 (see the
    module docstring; for elasticNetParam 0, the value elasticNetParam 1e-3 would give). One pass
    (a few more for multinomial and Huber); 0.0 when no feature has a nonzero gradient."""
    check_param("elasticNetParam", elastic_net_param)
    problem = _Problem(engine, loss, elastic_net_param, fit_intercept, standardization, n_classes, epsilon,
                       label_col)
    with engine.session():
        return _lambda_max(problem, null_model(engine, problem))


def reg_grid(lam_max: float, n: int, min_ratio: float) -> np.ndarray:
    """``n`` regParam values from ``lam_max`` down to ``min_ratio * lam_max``, geometric."""
    if not (isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1):
        raise InputError(f"numRegParams must be an integer >= 1, got {n!r}")
    if not (np.isfinite(min_ratio) and 0 < min_ratio < 1):
        raise InputError(f"the grid's min_ratio must be in (0, 1), got {min_ratio!r}")
    if not (np.isfinite(lam_max) and lam_max > 0):
        raise InputError(f"lambda_max is {lam_max!r}: no feature moves the loss at the intercept-only model, "
                         "so there is no path to compute; give regParams explicitly")
    if n == 1:
        return np.array([float(lam_max)])
    return float(lam_max) * float(min_ratio) ** (np.arange(n) / (n - 1))


def default_min_ratio(stats) -> float:
    """glmnet's lambda.min.ratio: 1e-4 with more rows than features, else 1e-2."""
    return 1e-4 if stats.n_rows > stats.n_features else 1e-2


def _check_grid(reg_params) -> np.ndarray:
    values = np.asarray([float(check_param("regParam", v)) for v in reg_params], dtype=float)
    if values.size == 0:
        raise InputError("regParams must hold at least one value")
    if len(np.unique(values)) != len(values):
        raise InputError(f"regParams must not repeat a value, got {list(reg_params)}")
    return np.sort(values)[::-1]


def _kkt_pseudo_gradient(objective, coef: np.ndarray, grad_mean: np.ndarray) -> np.ndarray:
    """The full problem's pseudo-gradient (solver coordinates, (n_z,)) at ``coef`` from the
    mean-loss gradient in coefficient space: no pass."""
    c = objective.coordinates
    z = c.from_coef(coef)
    gz = c.to_z_grad(grad_mean) + objective.penalty.smooth_grad(z)
    return pseudo_gradient(gz, z, objective.l1_weights)


def _per_feature(problem: _Problem, objective, values_z: np.ndarray) -> np.ndarray:
    """(d,) max over outputs of |values_z| at each feature's coordinates (0 on inactive ones)."""
    c = objective.coordinates
    na = len(c.active)
    qz = na + int(c.fit_intercept)
    V = np.abs(values_z[: c.n_outputs * qz].reshape(c.n_outputs, qz)[:, :na])
    out = np.zeros(problem.d)
    out[c.active] = V.max(axis=0) if na else 0.0
    return out


def _gradient_scale(objective, null: NullModel) -> float:
    """The convergence scale of a point: the inf-norm of the smooth gradient at the null model in
    this point's solver coordinates (no pass). A solve converges when its pseudo-gradient is below
    tol times this, and so must every set-aside feature. (A cold fit scales by the pseudo-gradient
    there, which vanishes as regParam nears lambda_max and asks for more than float64 holds.)"""
    c = objective.coordinates
    z = c.from_coef(null.coef)
    gz = c.to_z_grad(null.grad) + objective.penalty.smooth_grad(z)
    scale = float(np.max(np.abs(gz), initial=0.0))
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def _loss_grad(bo, block, coef):
    return bo.loss_grad(coef, block)


def _mean_loss_gradient(engine, problem: _Problem, coef: np.ndarray) -> np.ndarray:
    """One pass: the mean loss's gradient at ``coef`` over every feature (coefficient space)."""
    _, grad = engine.map_sum(partial(_loss_grad, problem.bo), coef)
    return np.asarray(grad, dtype=float) / float(engine.weight_sum)


def coef_gradient(coordinates, grad_z: np.ndarray) -> np.ndarray:
    """The coefficient-space gradient g (n_params,) with ``T^T g = grad_z`` on the active
    features and intercepts (0 on inactive features and the scale): T^T inverted entry by entry,
    so a solve's final gradient gives the next strong rule its |g_j| without a pass."""
    c = coordinates
    na, K = len(c.active), c.n_outputs
    qz, q = na + int(c.fit_intercept), c.n_features + int(c.fit_intercept)
    out = np.zeros(c.n_params)
    Z = np.asarray(grad_z, dtype=float)[: K * qz].reshape(K, qz)
    C = out[: K * q].reshape(K, q)
    C[:, c.active] = Z[:, :na] / c.inv_scale
    if c.fit_intercept:
        gc = Z[:, na] / c.value_scale
        C[:, c.n_features] = gc
        C[:, c.active] += c._shift()[None] * gc[:, None]
    return out


class _PathRun:
    """One path's bookkeeping; ``solve`` fits one point on the kept columns."""

    def __init__(self, engine, problem: _Problem, *, solver, tol, max_iter, solver_options, gram):
        self.engine, self.problem = engine, problem
        self.solver, self.tol, self.max_iter = solver, tol, max_iter
        self.solver_options = dict(solver_options or {})
        self.gram = gram
        self.normal = gram is not None

    def solve(self, reg: float, columns: np.ndarray, coef_start: np.ndarray, scale: float):
        p = self.problem
        whole = len(columns) == len(p.active)
        sub = self.engine if whole else ColumnSubsetEngine(self.engine, columns)
        objective = p.objective(reg, sub)
        if self.normal:
            objective = GramObjective(self.gram, objective.coordinates, objective.penalty, p.fit_intercept)
            method = "newton"
        elif self.solver == "auto" and objective.has_hessian and objective.n_params <= EXACT_NEWTON_MAX_PARAMS:
            # warm-started along a path, (proximal) Newton needs a few passes a point (a9a,
            # elastic net, 20 points: 95 passes in all against 1054 for cold `auto` fits,
            # jobs/bench/path_vs_fits.py); the cost model of `auto` assumes a cold start. Without
            # an L1 term L-BFGS is the other candidate: more passes, each without a Hessian
            # (a9a ridge on the driver: 194 passes and 2.0 s against Newton's 73 and 4.5 s),
            # so the pass overhead decides (Newton on the tree engine, L-BFGS in memory)
            method = "newton"
            if objective.l1_weights is None and \
                    estimated_cost(objective, "lbfgs", WARM_PASSES["lbfgs"]) < \
                    estimated_cost(objective, "newton", WARM_PASSES["newton"]):
                method = "lbfgs"
        else:
            method = choose_fit_method(objective, p.loss, self.solver)[0]
        start = coef_start if whole else restrict_coef(coef_start, columns, p.d, p.fit_intercept, p.n_outputs,
                                                       p.has_scale)
        result = minimize(objective, objective.coordinates.from_coef(start), method, tol=self.tol,
                          max_iter=self.max_iter, options=self.solver_options, gradient_scale=scale, warn=False)
        if self.normal:
            result.solver = "normal"
        coef = objective.coordinates.to_coef(result.x)
        if not whole:
            coef = expand_coef(coef, columns, p.d, p.fit_intercept, p.n_outputs, p.has_scale)
        return coef, result, objective


def regularization_path(
    engine,
    loss: str,
    *,
    elastic_net_param: float = 1.0,
    reg_params: Optional[Sequence[float]] = None,
    n_reg_params: int = 100,
    min_ratio: Optional[float] = None,
    fit_intercept: bool = True,
    standardization: bool = True,
    n_classes: Optional[int] = None,
    epsilon: float = 1.35,
    solver: str = "auto",
    tol: float = 1e-6,
    max_iter: int = 100,
    solver_options: Optional[dict] = None,
    screening: bool = True,
    early_stop: bool = True,
    label_col: str = "label",
    callback: Optional[Callable[[PathPoint], Optional[bool]]] = None,
    warn: bool = True,
) -> PathResult:
    """Fit the pinned objective for ``loss`` at every regParam of a decreasing grid, for one
    ``elastic_net_param`` (see the module docstring for the grid, warm starts, screening, the KKT
    check and the early stop).

    ``reg_params``: the grid (any order, solved and returned in decreasing order; no early stop
    then, since every value was asked for); default ``n_reg_params`` values from lambda_max
    (``min_ratio`` as glmnet's lambda.min.ratio, default 1e-4 with more rows than features, else
    1e-2). Every point is solved to ``tol`` (relative to the gradient at the null model, as a
    cold fit) with ``solver`` (``auto``: exact or proximal Newton when the screened problem is
    small enough, else the cost model's choice). ``screening=False`` solves every point over all
    features (the reference the strong rules are measured against). ``callback(point)`` is called
    after each point and may stop the path by returning True. Returns a :class:`PathResult`."""
    validate_params(0.0, elastic_net_param, max_iter, tol, loss, epsilon)
    problem = _Problem(engine, loss, elastic_net_param, fit_intercept, standardization, n_classes, epsilon,
                       label_col)
    alpha = problem.alpha
    explicit = reg_params is not None
    grid = _check_grid(reg_params) if explicit else None
    started = time.perf_counter()
    with engine.session():
        passes0 = engine.passes
        method = choose_fit_method(problem.objective(float(grid[0]) if explicit else 1.0), loss, solver)[0]
        normal = method == "normal"
        # squared error from its sufficient statistics: this is the path's one pass
        gram = gram_statistics(engine) if normal else None
        null = null_model(engine, problem, gram)
        lam_max = _lambda_max(problem, null)
        if not explicit:
            grid = reg_grid(lam_max, n_reg_params, default_min_ratio(engine.stats) if min_ratio is None else min_ratio)
        run = _PathRun(engine, problem, solver=solver, tol=tol, max_iter=max_iter, solver_options=solver_options,
                       gram=gram)
        screen = bool(screening) and alpha > 0 and not normal
        result = PathResult(loss=loss, elastic_net_param=alpha, lambda_max=lam_max, grid=grid,
                            n_classes=problem.classes)
        coef_prev, grad_prev, reg_prev = null.coef, null.grad, lam_max
        ever = np.zeros(problem.d, dtype=bool)
        for reg in grid:
            reg = float(reg)
            point_start, point_passes0 = time.perf_counter(), engine.passes
            full = problem.objective(reg)
            scale = _gradient_scale(full, null)
            threshold = run.tol * scale
            if alpha > 0 and reg >= lam_max:
                # beta = 0 is the exact solution by the definition of lambda_max: the null model
                coef, grad = null.coef, null.grad
                point = _null_point(problem, null, full, reg, threshold)
            else:
                keep = problem.active_mask.copy()
                if screen:
                    # sequential strong rule; a feature once nonzero stays in
                    rule = problem.feature_gradient(grad_prev) >= alpha * problem.weights * (2 * reg - reg_prev)
                    keep &= ever | rule
                added, kkt_max, nit = 0, float("nan"), 0
                while True:
                    columns = np.flatnonzero(keep)
                    coef, res, objective = run.solve(reg, columns, coef_prev, scale)
                    nit += res.nit
                    if len(columns) == len(problem.active):
                        # nothing set aside: the solve's own gradient is the full one (no pass)
                        grad = coef_gradient(objective.coordinates, res.jac - objective.penalty.smooth_grad(res.x))
                        break
                    # one pass: the KKT check of every set-aside feature, and the next rule's gradient
                    grad = _mean_loss_gradient(engine, problem, coef)
                    pg = _per_feature(problem, full, _kkt_pseudo_gradient(full, coef, grad))
                    outside = problem.active_mask & ~keep
                    violated = outside & (pg > threshold)
                    kkt_max = float(np.max(pg[outside], initial=0.0))
                    if not violated.any():
                        break
                    keep |= violated
                    added += int(violated.sum())
                    coef_prev = coef
                point = _point(problem, null, reg, coef, res, objective, threshold,
                               screened=len(columns) if screen else None, added=added, kkt_max=kkt_max, nit=nit)
            point.passes = float(engine.passes - point_passes0)
            point.seconds = time.perf_counter() - point_start
            # the model's own record says what the whole point cost (every solve and KKT pass)
            point.fit.result.passes, point.fit.result.nit = point.passes, point.nit
            point.fit.result.seconds = point.seconds
            result.points.append(point)
            ever |= problem.nonzero_features(coef)
            coef_prev, grad_prev, reg_prev = coef, grad, reg
            if callback is not None and callback(point):
                result.stopped = "stopped by the callback"
                break
            reason = _early_stop(result.points) if early_stop and not explicit else None
            if reason is not None:
                result.stopped = reason
                break
        result.passes = float(engine.passes - passes0)
    result.seconds = time.perf_counter() - started
    if warn:
        failed = [p for p in result.points if not p.converged]
        if failed:
            warnings.warn(f"sparkopt path: {len(failed)} of {len(result.points)} points did not converge "
                          f"(first: regParam {failed[0].reg_param:.4g}, {failed[0].status.name})",
                          ConvergenceWarning, stacklevel=2)
    return result


def _point(problem, null, reg, coef, res, objective, threshold, *, screened, added, kkt_max, nit) -> PathPoint:
    fit = _package(problem.loss, problem.bo, objective, res, coef, problem.classes, reg)
    fit.params.update(reg_param=reg, elastic_net_param=problem.alpha, fit_intercept=problem.fit_intercept)
    loss = float(res.fun - objective.penalty.value(res.x))
    null_deviance = null.loss + null.constant
    ratio = 1.0 - (loss + null.constant) / null_deviance if null_deviance > 0 else float("nan")
    return PathPoint(reg_param=reg, fit=fit, loss=loss, deviance_ratio=float(ratio), passes=0.0, seconds=0.0,
                     nit=int(nit), status=res.status, solver=res.solver,
                     n_nonzero=int(problem.nonzero_features(coef).sum()), screened=screened, kkt_added=int(added),
                     kkt_max=kkt_max, threshold=float(threshold))


def _null_point(problem, null, objective, reg, threshold) -> PathPoint:
    """The point at or above lambda_max: the null model, exact, without a pass."""
    z = objective.coordinates.from_coef(null.coef)
    F = null.loss + objective.penalty.value(z)
    grad_z = objective.coordinates.to_z_grad(null.grad) + objective.penalty.smooth_grad(z)
    res = finish(objective, solver="null-model", x=z, status=Status.CONVERGED, nit=0, passes=0.0, nfev=0, history=[],
                 seconds=0.0, fun=F, jac=grad_z, detail="at or above lambda_max the intercept-only model is exact",
                 warn=False)
    fit = _package(problem.loss, problem.bo, objective, res, null.coef, problem.classes, reg)
    fit.params.update(reg_param=reg, elastic_net_param=problem.alpha, fit_intercept=problem.fit_intercept)
    pg = _per_feature(problem, objective, _kkt_pseudo_gradient(objective, null.coef, null.grad))
    return PathPoint(reg_param=reg, fit=fit, loss=null.loss, deviance_ratio=0.0, passes=0.0, seconds=0.0, nit=0,
                     status=Status.CONVERGED, solver="null-model", n_nonzero=0, screened=0, kkt_added=0,
                     kkt_max=float(np.max(pg, initial=0.0)), threshold=float(threshold))


def _early_stop(points: list[PathPoint]) -> Optional[str]:
    if len(points) < EARLY_STOP_MIN_POINTS:
        return None
    now, before = points[-1].deviance_ratio, points[-2].deviance_ratio
    if not (np.isfinite(now) and np.isfinite(before)):
        return None
    if now > DEVIANCE_MAX:
        return f"deviance ratio {now:.6f} > {DEVIANCE_MAX}"
    if now - before < DEVIANCE_TOL * abs(now):
        return f"deviance ratio grew by {now - before:.3g} < {DEVIANCE_TOL:g} x {now:.6f}"
    return None
