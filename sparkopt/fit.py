"""Fit a regularized linear model on an engine: the pinned objective, MLlib's conventions.

F(beta, c) = (1 / sum_i w_i) * sum_i w_i * loss(y_i, x_i.beta + c)
             + lam * (alpha * sum_j s_j |beta_j| + (1 - alpha) / 2 * sum_j (s_j beta_j)^2)

with s_j = sd_j under `standardization` (penalty on the standardized scale), else 1, the
intercept never penalized, and lam = regParam, except squared error where lam = regParam / sd(y)
(MLlib's LinearRegression, glmnet's convention). Coefficients are always returned on the original
scale. Features with sd_j = 0 get coefficient 0, as in MLlib.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Optional, Union

import numpy as np

from .errors import InputError
from .least_squares import NORMAL_MAX_FEATURES, GramObjective, gram_statistics
from .linear_objective import Coordinates, LinearModelObjective
from .objectives import make_block_objective
from .objectives.losses import LOSSES, check_labels as check_label_range, loss_info
from .objectives.penalties import ElasticNet
from .rules import check_param
from .solvers import SOLVERS, ConvergenceWarning, OptimizeResult, Status, explain_solver, minimize
from .solvers.registry import compressed_passes
from .solvers.result import convergence_scale, finish, l1_value

logger = logging.getLogger("sparkopt")

#: what fit_linear_model's `solver` accepts: the minimize solvers, plus MLlib's normal equations
FIT_SOLVERS = SOLVERS + ("normal",)


@dataclass
class LinearFit:
    """What a fit returns. coefficients: (d,) or (K, d) for multinomial; intercept: float or (K,);
    scale: Huber's sigma (None otherwise); objective: F at the solution (pinned objective, L1
    included); result: the solver's OptimizeResult (x in solver coordinates)."""

    loss: str
    coefficients: np.ndarray
    intercept: Any
    objective: float
    result: OptimizeResult
    coef_vector: np.ndarray
    n_classes: int = 2
    scale: Optional[float] = None
    params: dict = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return self.result.success


def validate_params(reg_param, elastic_net_param, max_iter, tol, loss, epsilon: float = 1.35) -> None:
    """InputError naming the first invalid parameter (sparkopt.rules), before any pass."""
    info = loss_info(loss)
    if not info.public and loss != "glm":
        raise InputError(f"loss must be one of {LOSSES}, got {loss!r}")
    check_param("regParam", reg_param)
    check_param("elasticNetParam", elastic_net_param)
    check_param("maxIter", max_iter)
    check_param("tol", tol)
    if info.scale_param is not None:
        check_param("epsilon", epsilon)
        if elastic_net_param != 0:
            raise InputError(f"elasticNetParam must be 0 with loss={loss!r} (L2 only, as MLlib), "
                             f"got {elastic_net_param!r}")


def validate_checkpoint(checkpoint_dir, checkpoint_interval) -> None:
    if checkpoint_dir is not None:
        check_param("checkpointDir", os.fspath(checkpoint_dir) if isinstance(checkpoint_dir, os.PathLike)
                    else checkpoint_dir)
    check_param("checkpointInterval", checkpoint_interval)


def check_labels(stats, loss: str, label_col: str = "label") -> int:
    """Validate the label range for the loss from the ingest statistics; return the class count."""
    return check_label_range(loss, stats.label_min, stats.label_max, stats.n_label_non_integer, stats.n_rows,
                             label_col)


def _initial_coef(block_objective, stats, loss, fit_intercept) -> np.ndarray:
    """Zeros, with the intercept at its optimum for beta = 0 where that is closed-form (as MLlib)
    and a jointly estimated scale (Huber's sigma) at the label's standard deviation."""
    coef = block_objective.initial_coef()
    for index, value in initial_entries(block_objective, stats, loss, fit_intercept).items():
        coef[index] = value
    return coef


def initial_entries(block_objective, stats, loss, fit_intercept) -> dict:
    """The entries of :func:`_initial_coef` set beyond ``block_objective.initial_coef()`` (index ->
    value): what a caller that never forms the whole vector (the sharded engine) needs."""
    out: dict = {}
    if not fit_intercept:
        return out
    start = loss_info(loss).start_intercept
    intercept = start(stats.label_mean) if start is not None else None
    if loss == "glm":           # the link of the mean label (offsets aside), where finite
        glm = block_objective.glm
        with np.errstate(all="ignore"):
            value = float(glm.link.link(glm.family.project(np.array([stats.label_mean])))[0])
        intercept = value if np.isfinite(value) else None
    if intercept is not None:
        out[int(stats.n_features)] = float(intercept)
    if block_objective.scale_index is not None:
        out[int(block_objective.scale_index)] = max(float(stats.label_std), 1e-3)
    return out


def solver_coordinates(stats, loss: str, block_objective, classes: int, reg_param: float, elastic_net_param: float,
                       standardization: bool):
    """The coordinates the solvers move in, and the penalty expressed in them.

    Returns (Coordinates, lam, l1_factor, penalty scale (n_z,)) for ElasticNet(lam, alpha, scale,
    l1_factor). The objective is MLlib's whatever the coordinates; they only decide how well
    conditioned the solvers' problem is (design notes: "which coordinates the solvers move in").

    * Scale: feature j's coordinate is ``z_j = beta_j c_j / v`` with ``c_j = sqrt(m2_j + l2_j /
      kappa)``, ``m2_j`` its variance (its raw second moment without an intercept), ``l2_j`` the L2 weight the penalty puts on beta_j, ``kappa`` the loss's typical
      curvature at the start and ``v`` the label's sd for real labels (else 1). Every coordinate
      then has curvature ~ ``kappa v^2`` from data plus penalty together (Jacobi scaling): a
      feature in raw units (a price, a count) no longer dominates, and a rare sparse feature whose
      penalty outweighs its data is not made stiff (MLlib's pure 1/sd scaling with
      standardization off costs L-BFGS ~10x more passes on a9a at regParam 1e-2).
    * Centre: with an intercept, features are centred virtually (``Coordinates.center``).
    * Penalty: MLlib's, on beta_j (times sd_j with standardization), rewritten per coordinate:
      scale ``w_j v / c_j``. Squared error's L2 part is divided by sd(y) (MLlib, glmnet).
    """
    coords, lam, l1_factor, base = solver_coordinate_parts(stats, loss, block_objective, classes, reg_param,
                                                          elastic_net_param, standardization)
    return coords, lam, l1_factor, penalty_scale_slice(base, coords, 0, coords.n_z)


def penalty_scale_slice(base: np.ndarray, coords: Coordinates, lo: int, hi: int) -> np.ndarray:
    """Entries lo..hi of the penalty's per-coordinate scale: ``base`` (one output's coordinates)
    repeated for each output, then 0 for a jointly estimated scale (sharded tasks build their own
    range without the whole vector)."""
    index = np.arange(lo, hi)
    q = len(base)
    out = np.zeros(hi - lo)
    inside = index < coords.n_outputs * q
    out[inside] = base[index[inside] % q] if q else 0.0
    return out


def solver_coordinate_parts(stats, loss: str, block_objective, classes: int, reg_param: float,
                            elastic_net_param: float, standardization: bool):
    """:func:`solver_coordinates` with the penalty scale of one output only (``base``, the
    active features' scales then 0 for the intercept): (Coordinates, lam, l1_factor, base)."""
    info = loss_info(loss)
    d = stats.n_features
    sd = np.asarray(stats.feature_std, dtype=float)
    active = np.flatnonzero(sd > 0)
    fit_intercept = block_objective.fit_intercept
    # the curvature a coordinate sees is the feature's second moment about the centre: the mean
    # is removed by the virtual centring only when an intercept can absorb it
    moment = sd[active] ** 2 + (0.0 if fit_intercept else np.asarray(stats.feature_mean, dtype=float)[active] ** 2)
    weight = sd[active] if standardization else np.ones(len(active))     # the penalty's per-feature scale
    lam, l1_factor = float(reg_param), 1.0
    label_sd = float(stats.label_std)
    if loss == "squared_error" and reg_param > 0 and label_sd > 0:
        # MLlib solves in units of sd(y): its L2 term ends up divided by sd(y), its L1 term not
        lam, l1_factor = reg_param / label_sd, label_sd
    value_scale = label_sd if (info.label_units and label_sd > 0) else 1.0
    kappa = info.start_curvature(float(stats.label_mean), max(int(classes), 2))
    l2 = lam * (1.0 - elastic_net_param) * weight ** 2
    c = np.sqrt(moment + l2 / kappa)
    coords = Coordinates(
        n_params=block_objective.n_params, n_features=d, n_outputs=classes if loss == "multinomial" else 1,
        fit_intercept=fit_intercept, active=active, inv_scale=value_scale / c,
        center=np.asarray(stats.feature_mean, dtype=float)[active] if fit_intercept else None,
        value_scale=value_scale, scale_index=block_objective.scale_index)
    base = np.concatenate([weight * value_scale / c] + ([np.zeros(1)] if fit_intercept else []))
    return coords, lam, l1_factor, base


def build_objective(engine, loss: str, *, reg_param: float = 0.0, elastic_net_param: float = 0.0,
                    fit_intercept: bool = True, standardization: bool = True, n_classes: Optional[int] = None,
                    epsilon: float = 1.35, label_col: str = "label", smoothing: float = 1.0, glm=None):
    """The driver-side objective (in solver coordinates) for `loss` over `engine`'s data (`glm`:
    the GLMLoss of loss="glm")."""
    stats = engine.stats
    classes = check_labels(stats, loss, label_col) if n_classes is None else n_classes
    d = stats.n_features
    block_objective = make_block_objective(loss, d, fit_intercept, n_classes=max(classes, 2), epsilon=epsilon,
                                           smoothing=smoothing, glm=glm)
    coords, lam, l1_factor, pen_scale = solver_coordinates(stats, loss, block_objective, classes, reg_param,
                                                          elastic_net_param, standardization)
    penalty = ElasticNet(lam, elastic_net_param, pen_scale, l1_factor=l1_factor)
    objective = LinearModelObjective(engine, block_objective, penalty, coords)
    return objective, block_objective, classes


def fit_linear_model(
    engine,
    loss: str,
    *,
    reg_param: float = 0.0,
    elastic_net_param: float = 0.0,
    fit_intercept: bool = True,
    standardization: bool = True,
    n_classes: Optional[int] = None,
    epsilon: float = 1.35,
    solver: str = "auto",
    max_iter: int = 100,
    tol: float = 1e-6,
    initial_coef: Optional[np.ndarray] = None,
    callback: Optional[Callable[[dict], Optional[bool]]] = None,
    solver_options: Optional[dict] = None,
    label_col: str = "label",
    checkpoint_dir: Optional[Union[str, os.PathLike]] = None,
    checkpoint_interval: int = 10,
    bounds: Optional[tuple[np.ndarray, np.ndarray]] = None,
    glm=None,
) -> LinearFit:
    """Minimize the pinned objective for `loss` over the engine's blocks; see the module docstring.

    With `checkpoint_dir` (a path the driver can write; executors never see it) the solver's
    state is saved there every `checkpoint_interval` iterations and a rerun with the same
    directory resumes from it (see `minimize`). The hinge's smoothing continuation keeps one
    sub-directory per stage (stage-0, stage-1, ..., polish): a rerun replays the finished stages
    from their final checkpoints without passes over the data and resumes the interrupted one.

    `bounds` = (lower, upper), each (n_params,) in the coefficient layout (+-inf: unbounded),
    makes it a bound-constrained fit by L-BFGS-B (solver auto or lbfgs; L2 penalty only).

    ``loss="glm"`` with ``glm`` (a GLMLoss): half the deviance of that family and link, offsets
    included, its Hessian the expected (Fisher) one (GeneralizedLinearRegression beyond IRLS).
    """
    if getattr(engine, "kind", None) == "sharded":
        if bounds is not None:
            raise InputError("engine='sharded' does not take bounds (L-BFGS-B holds the model on the driver)")
        from .sharded_objective import fit_sharded

        return fit_sharded(engine, loss, reg_param=reg_param, elastic_net_param=elastic_net_param,
                           fit_intercept=fit_intercept, standardization=standardization, n_classes=n_classes,
                           epsilon=epsilon, solver=solver, max_iter=max_iter, tol=tol, callback=callback,
                           solver_options=solver_options, label_col=label_col, checkpoint_dir=checkpoint_dir,
                           checkpoint_interval=checkpoint_interval, initial_coef=initial_coef,
                           gather=True)     # a LinearFit's callers (the estimators) need the model
    validate_params(reg_param, elastic_net_param, max_iter, tol, loss, epsilon)
    validate_checkpoint(checkpoint_dir, checkpoint_interval)
    objective, block_objective, classes = build_objective(
        engine, loss, reg_param=reg_param, elastic_net_param=elastic_net_param, fit_intercept=fit_intercept,
        standardization=standardization, n_classes=n_classes, epsilon=epsilon, label_col=label_col, glm=glm)
    if bounds is not None:
        return _fit_bounded(engine, loss, objective, block_objective, classes, bounds, solver=solver,
                            reg_param=reg_param, elastic_net_param=elastic_net_param, max_iter=max_iter, tol=tol,
                            initial_coef=initial_coef, callback=callback, checkpoint_dir=checkpoint_dir)
    method, reason = choose_fit_method(objective, loss, solver, checkpoint_dir)
    logger.info("sparkopt: solver=%r -> %s: %s", solver, method, reason)
    choose_compression(engine, objective, method, loss)
    if method != "normal":
        engine.register_functions(objective.block_functions() + [partial(_misclassified_weight, block_objective)])
    with engine.session():       # the resident engine keeps its tasks for the whole fit
        passes0 = engine.passes
        if method == "normal":
            # every evaluation from here on is on the driver: the statistics cost this one pass
            objective = GramObjective(gram_statistics(engine), objective.coordinates, objective.penalty,
                                      fit_intercept)
        gradient_scale = None
        if initial_coef is None:
            coef0 = _initial_coef(block_objective, engine.stats, loss, fit_intercept)
        else:
            # converge relative to the cold start's gradient, not the (small) warm one: one pass
            cold = objective.coordinates.from_coef(_initial_coef(block_objective, engine.stats, loss, fit_intercept))
            with np.errstate(over="ignore", invalid="ignore"):
                _, g_cold = objective.loss_grad(cold)
            gradient_scale = convergence_scale(objective, cold, g_cold)
            coef0 = np.asarray(initial_coef, dtype=float).ravel()
            if coef0.shape != (block_objective.n_params,):
                raise InputError(f"initialModel has {coef0.size} parameters, this problem needs {block_objective.n_params} "
                                 f"({engine.stats.n_features} features, fitIntercept={fit_intercept})")
        z0 = objective.coordinates.from_coef(coef0)
        checkpoint = None
        if checkpoint_dir is not None:
            # in the user's terms, so that a refused checkpoint names the param that differs
            stats = engine.stats
            checkpoint = dict(checkpoint_interval=checkpoint_interval, checkpoint_fingerprint={
                "loss": loss, "regParam": float(reg_param), "elasticNetParam": float(elastic_net_param),
                "fitIntercept": bool(fit_intercept), "standardization": bool(standardization),
                "epsilon": float(epsilon) if loss == "huber" else None, "numClasses": int(classes),
                "solver": solver, "numFeatures": int(stats.n_features), "numRows": int(stats.n_rows)})
        if method == "newton-smoothing":
            result = _hinge_by_smoothing(engine, objective, z0, tol=tol, max_iter=max_iter, callback=callback,
                                         checkpoint_dir=checkpoint_dir, checkpoint=checkpoint,
                                         build=lambda mu: build_objective(
                                             engine, "smoothed_hinge", reg_param=reg_param,
                                             elastic_net_param=elastic_net_param, fit_intercept=fit_intercept,
                                             standardization=standardization, n_classes=2, label_col=label_col,
                                             smoothing=mu)[0])
        else:
            result = minimize(objective, z0, "newton" if method == "normal" else method, tol=tol, max_iter=max_iter,
                              callback=callback, options=solver_options or {}, gradient_scale=gradient_scale,
                              checkpoint_dir=checkpoint_dir, **(checkpoint or {}))
            if method == "normal":
                result.solver = "normal"
                result.passes += float(engine.passes - passes0)      # the statistics' pass, if it was this fit's
        coef = objective.coordinates.to_coef(result.x)
        if reg_param == 0 and loss in ("logistic", "multinomial") and np.all(np.isfinite(coef)):
            _report_separation(engine, block_objective, coef, result)
    return _package(loss, block_objective, objective, result, coef, classes, reg_param)


def choose_fit_method(objective, loss: str, solver: str, checkpoint_dir=None) -> tuple[str, str]:
    """(method, reason): a solver of sparkopt.solvers (chosen by its cost model for ``auto``),
    ``normal`` (squared error from sufficient statistics) or ``newton-smoothing`` (the hinge)."""
    if solver not in FIT_SOLVERS:
        raise InputError(f"solver must be one of {FIT_SOLVERS}, got {solver!r}")
    d = objective.coordinates.n_features
    if solver == "normal":
        if loss != "squared_error":
            raise InputError(f"solver='normal' solves squared error (LinearRegression) only, not loss={loss!r}")
        if d > NORMAL_MAX_FEATURES:
            raise InputError(f"solver='normal' needs at most {NORMAL_MAX_FEATURES} features, the data has {d}; "
                             "use solver='auto'")
        return "normal", "requested: one pass for the sufficient statistics, then the driver"
    if loss == "squared_error" and solver == "auto" and d <= NORMAL_MAX_FEATURES and checkpoint_dir is None:
        return "normal", (f"squared error with {d} <= {NORMAL_MAX_FEATURES} features: one pass computes the "
                          "sufficient statistics, every solve after it runs on the driver")
    if loss == "hinge" and solver in ("auto", "newton"):
        return "newton-smoothing", "the hinge has no curvature: Newton on smoothed hinges, then an L-BFGS polish"
    try:
        choice = explain_solver(objective, solver)
    except ValueError as err:
        raise InputError(str(err)) from None
    return choice.name, choice.reason


def choose_compression(engine, objective: LinearModelObjective, method: str, loss: str) -> bool:
    """Whether this fit's loss and gradient passes travel compressed: the engine compresses
    (``compression`` other than none, ratio other than 1) and the solver tolerates error-feedback
    values (sparkopt.solvers.registry.compressed_passes); otherwise every pass is exact, with the
    reason logged. A scheme that cannot compress this loss's gradient (powersgd on a vector)
    raises InputError."""
    # views of an engine (a fold's rows, some columns: sparkopt.tuning) pass wrapped block
    # functions, which travel exact
    compression = getattr(engine, "compression", None)
    if compression is None or compression.lossless:
        return False
    allowed, why = compressed_passes(method)
    if not allowed:
        logger.info("sparkopt: compression=%r is off for this fit (solver %s): %s; every pass is exact",
                    compression.scheme, method, why)
        return False
    compression.check_shape(objective.gradient_rows, objective.block_objective.n_params, f"loss={loss!r}")
    objective.compress_passes()
    logger.info("sparkopt: loss and gradient passes travel as %s: %s", compression.describe(), why)
    return True


def _misclassified_weight(block_objective, block, coef) -> float:
    """Weight of the rows that ``coef`` does not classify strictly correctly."""
    M = block_objective.margins(coef, block.X)
    if M.ndim == 1:
        right = np.where(block.y > 0.5, M > 0, M < 0)
    else:
        rows = np.arange(M.shape[0])
        labels = block.y.astype(np.int64)
        true = M[rows, labels]
        others = M.copy()
        others[rows, labels] = -np.inf
        right = true > others.max(axis=1)
    return float(block.w[~right].sum())


def _report_separation(engine, block_objective, coef, result: OptimizeResult) -> None:
    """Without a penalty, a model that classifies every (weighted) row correctly is a certificate
    that the data are linearly separable: scaling it up lowers the loss forever, so there is no
    minimizer and the solver stopped only because the gradient became small. Say so (one pass)."""
    wrong = engine.map_sum(partial(_misclassified_weight, block_objective), coef)
    result.extra["separable"] = bool(wrong == 0)
    if wrong == 0:
        norm = float(np.max(np.abs(coef)))
        result.message += (f"; the data are linearly separable and regParam is 0: the loss has no minimizer, "
                           f"coefficients (max |coef| {norm:.3g}) grow as tol shrinks; set regParam > 0")
        warnings.warn(f"sparkopt: training data are linearly separable and regParam=0 (max |coef| {norm:.3g}): "
                      "the loss has no minimizer; set regParam > 0", ConvergenceWarning, stacklevel=3)


# band widths of the smoothing stages: 1, 0.1, 0.01, 0.001 (computed as powers of ten, so that the
# last stage is exactly the one named here; repeated mu *= 0.1 drifts: 0.1**2 > 0.01)
HINGE_SMOOTHING_STAGES = 4


def _hinge_by_smoothing(engine, hinge_objective, z0, *, tol, max_iter, callback, build,
                        checkpoint_dir=None, checkpoint=None) -> OptimizeResult:
    """The hinge is not differentiable; L-BFGS on it (MLlib's way) stalls away from the optimum.
    Solve a sequence of softplus-smoothed hinges (mu = 1, 0.1, 0.01, 0.001; each within mu*log 2
    of the hinge) with Newton, warm-started, then keep the better of that point and an L-BFGS
    polish on the true hinge. Measured on a9a (regParam 1e-3, in-memory fold): these stages plus
    the polish end 1.3e-6 relative above the best value known (continuation down to mu = 1e-6)
    in ~300 passes; 300 L-BFGS iterations on the hinge alone (MLlib's method) stop 1e-4 above it.

    One result over all stages and the polish: ``history`` has every stage's rows and the
    polish's (column ``smoothing``: the band width, 0 for the true hinge), ``nit`` / ``passes`` /
    ``nfev`` add up every stage, the callback sees every iteration, and ``fun`` / ``jac`` belong
    to the returned x."""
    history: list[dict] = []
    z, mu, nit, passes, nfev, seconds = z0, 1.0, 0, 0.0, 0, 0.0
    stage_result = None

    def stage_checkpoint(name):
        if checkpoint_dir is None:
            return {}
        return dict(checkpoint, checkpoint_dir=os.path.join(checkpoint_dir, name))

    def append(result, smoothing):
        """Add a stage's rows after the ones so far (its first row repeats the previous end)."""
        nonlocal nit, passes, nfev, seconds
        base = dict(iteration=nit, passes=passes, seconds=seconds)
        for row in result.history[(1 if history else 0):]:
            history.append(dict(row, smoothing=smoothing, **{k: base[k] + row[k] for k in base}))
        # counted per stage, not from the engine's counter, so a resumed run (whose finished
        # stages replay from checkpoints without passes) still reports the whole fit's passes
        nit, passes, nfev, seconds = nit + result.nit, passes + result.passes, nfev + result.nfev, \
            seconds + result.seconds

    def stage_callback(offset):
        if callback is None:
            return None
        return lambda row: callback(dict(row, iteration=row["iteration"] + offset))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)    # one warning, for the whole fit, below
        stage_index = 0
        while nit < max_iter:
            stage_result = minimize(build(mu), z, "auto", tol=tol, max_iter=max_iter - nit,
                                    callback=stage_callback(nit), warn=False,
                                    **stage_checkpoint(f"stage-{stage_index}"))
            stage_index += 1
            append(stage_result, mu)
            z = stage_result.x
            if stage_result.status == Status.CALLBACK_STOP or stage_index == HINGE_SMOOTHING_STAGES:
                break
            mu = 10.0 ** -stage_index
        status = stage_result.status if stage_result is not None else Status.MAX_ITER
        smooth_f, smooth_g = hinge_objective.loss_grad(z)
        passes, nfev = passes + 1.0, nfev + 1
        smoothed = (z, smooth_f + l1_value(hinge_objective, z), smooth_g)
        best = smoothed
        if status != Status.CALLBACK_STOP:
            polish = minimize(hinge_objective, z, "lbfgs", tol=tol, max_iter=max(0, min(100, max_iter - nit)),
                              callback=stage_callback(nit), warn=False, **stage_checkpoint("polish"))
            append(polish, 0.0)
            if polish.status == Status.CALLBACK_STOP:
                status = Status.CALLBACK_STOP
            if polish.fun < smoothed[1]:
                best = (polish.x, polish.fun, polish.jac)
    if nit >= max_iter and status not in (Status.CONVERGED, Status.CALLBACK_STOP):
        status = Status.MAX_ITER
    x, fun, jac = best
    return finish(hinge_objective, solver="newton-smoothing", x=x, status=status, nit=nit, passes=passes, nfev=nfev,
                  history=history, seconds=seconds, fun=fun, jac=jac,
                  detail=f"smoothed hinge, final band width {mu:g}", stacklevel=4)


def bounds_in_coordinates(coords: Coordinates, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box bounds on the coefficients (n_params,) as box bounds on uncentred solver coordinates
    (coords.center is None: then every coordinate is a positive multiple of one coefficient)."""
    if coords.center is not None:
        raise ValueError("box bounds map to solver coordinates only without the virtual centring")
    na, K, q, qz = len(coords.active), coords.n_outputs, coords._q, coords._qz
    out = []
    for bound in (lower, upper):
        bound = np.asarray(bound, dtype=float)
        z = np.empty(coords.n_z)
        for k in range(K):
            z[k * qz: k * qz + na] = bound[k * q + coords.active] / coords.inv_scale
            if coords.fit_intercept:
                z[k * qz + na] = bound[k * q + coords.n_features] / coords.value_scale
        out.append(z)
    return out[0], out[1]


def _fit_bounded(engine, loss, objective, block_objective, classes, bounds, *, solver, reg_param, elastic_net_param,
                 max_iter, tol, initial_coef, callback, checkpoint_dir) -> LinearFit:
    """The bound-constrained fit: L-BFGS-B (sparkopt.solvers.bounded) in solver coordinates
    without the virtual centring, where the coefficients' box is a box."""
    from .solvers.bounded import minimize_bounded

    if solver not in ("auto", "lbfgs"):
        raise InputError(f"bound-constrained fits run L-BFGS-B: param solver must be auto or lbfgs (l-bfgs), "
                         f"got {solver!r}")
    if reg_param > 0 and elastic_net_param > 0:
        raise InputError(f"bound-constrained fits support L2 regularization only: elasticNetParam must be 0, got "
                         f"{elastic_net_param}")
    if checkpoint_dir is not None:
        raise InputError("bound-constrained fits do not checkpoint: unset checkpointDir")
    lower, upper = (np.asarray(b, dtype=float).ravel() for b in bounds)
    if lower.shape != (block_objective.n_params,) or upper.shape != lower.shape:
        raise InputError(f"bounds must have {block_objective.n_params} entries (the coefficient layout), got "
                         f"{lower.size} and {upper.size}")
    if np.any(lower > upper):
        j = int(np.flatnonzero(lower > upper)[0])
        raise InputError(f"lower bound {lower[j]} exceeds upper bound {upper[j]} at coefficient {j} (layout: "
                         f"per class, the {block_objective.n_features} coefficients then the intercept)")
    inactive = objective.coordinates.inactive()
    if np.any((lower[inactive] > 0) | (upper[inactive] < 0)):
        raise InputError("a bound excludes 0 for a constant feature, whose coefficient is fixed at 0")
    coords = dataclasses.replace(objective.coordinates, center=None)
    objective = LinearModelObjective(engine, block_objective, objective.penalty, coords)
    with engine.session():
        coef0 = (_initial_coef(block_objective, engine.stats, loss, block_objective.fit_intercept)
                 if initial_coef is None else np.asarray(initial_coef, dtype=float).ravel())
        lower_z, upper_z = bounds_in_coordinates(coords, lower, upper)
        result = minimize_bounded(objective, coords.from_coef(np.clip(coef0, lower, upper)), lower_z, upper_z,
                                  tol=tol, max_iter=max_iter, callback=callback)
    coef = np.clip(coords.to_coef(result.x), lower, upper)
    # a coordinate on its bound maps to its coefficient's bound exactly (not one rounding off it)
    for bound_z, bound in ((lower_z, lower), (upper_z, upper)):
        on_bound = coords.to_coef((result.x == bound_z).astype(float)) != 0
        coef[on_bound] = bound[on_bound]
    return _package(loss, block_objective, objective, result, coef, classes, reg_param, centre=False)


def _package(loss, block_objective, objective, result, coef, classes, reg_param, centre: bool = True) -> LinearFit:
    d = block_objective.n_features
    fit_intercept = block_objective.fit_intercept
    scale = None
    if loss == "multinomial":
        M = coef.reshape(classes, d + int(fit_intercept)).copy()
        # softmax is invariant to a shift shared by all classes: report MLlib's centred solution
        # (not under bounds, which the shift could break; MLlib does not centre them either)
        if fit_intercept and centre:
            M[:, d] -= M[:, d].mean()
        if reg_param == 0 and centre:
            M[:, :d] -= M[:, :d].mean(axis=0)
        coef = M.ravel()
        coefficients = M[:, :d]
        intercept = M[:, d] if fit_intercept else np.zeros(classes)
    else:
        coefficients = coef[:d]
        intercept = float(coef[d]) if fit_intercept else 0.0
        if block_objective.scale_index is not None:
            scale = float(coef[block_objective.scale_index])
    return LinearFit(loss=loss, coefficients=coefficients, intercept=intercept, objective=result.fun,
                     result=result, coef_vector=coef, n_classes=classes, scale=scale)


def objective_value(engine, loss: str, coefficients, intercept=0.0, *, scale: Optional[float] = None,
                    reg_param: float = 0.0, elastic_net_param: float = 0.0, fit_intercept: bool = True,
                    standardization: bool = True, epsilon: float = 1.35) -> float:
    """F of the pinned objective at given coefficients ((d,) or (K, d)) and intercept(s), e.g. to
    score another library's solution on the same data (one pass)."""
    objective, block_objective, classes = build_objective(
        engine, loss, reg_param=reg_param, elastic_net_param=elastic_net_param, fit_intercept=fit_intercept,
        standardization=standardization, epsilon=epsilon)
    B = np.asarray(coefficients, dtype=float).reshape(-1, engine.stats.n_features)
    c = np.broadcast_to(np.asarray(intercept, dtype=float), (B.shape[0],))
    rows = [np.r_[B[k], c[k]] if fit_intercept else B[k] for k in range(B.shape[0])]
    coef = np.concatenate(rows)
    if loss == "huber":
        coef = np.r_[coef, 1.0 if scale is None else scale]
    coords = objective.coordinates
    if np.any(coef[coords.inactive()] != 0):
        # coefficients on constant features: not representable in solver coordinates
        return float("nan")
    return objective.total(coords.from_coef(coef))
