"""Regularization paths (sparkopt.tuning): lambda_max, the grid, warm starts, strong rules with
the KKT check, glmnet's early stop; every point against scikit-learn and against a cold fit."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_svmlight_file
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.linear_model import enet_path, lasso_path

from sparkopt.engine import LocalEngine
from sparkopt.errors import InputError
from sparkopt.fit import build_objective, fit_linear_model
from sparkopt.solvers import ConvergenceWarning, Status
from sparkopt.solvers.result import pseudo_gradient
from sparkopt.tuning import lambda_max, reg_grid, regularization_path
from sparkopt.tuning.path import DEVIANCE_MAX, DEVIANCE_TOL, EARLY_STOP_MIN_POINTS

from conftest import dataset


@pytest.fixture(scope="module")
def abalone():
    X, y = load_svmlight_file(str(dataset("angel_abalone_8d_train.libsvm")), n_features=8)
    return X.toarray(), y


@pytest.fixture(scope="module")
def a9a_head():
    X, y = load_svmlight_file(str(dataset("a9a")), n_features=123)
    return X[:3000].tocsr(), (y[:3000] > 0).astype(float)


@pytest.fixture(scope="module")
def magic_head():
    """2000 random rows of magic04 (the file is sorted by class), z-scored (scikit-learn's saga
    needs comparable scales to converge)."""
    df = pd.read_csv(dataset("magic04.data"), header=None)
    df = df.iloc[np.random.default_rng(0).choice(len(df), 2000, replace=False)]
    X = df.iloc[:, :10].to_numpy(float)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, (df.iloc[:, 10] == "g").to_numpy(float)


def _engine(X, y, w=None, partitions=3):
    return LocalEngine.from_arrays(X, y, w, num_partitions=partitions)


def _solved(fit) -> bool:
    """Converged, or (a cold start at the null model, whose gradient is ~0) at float64's limit."""
    return fit.result.status in (Status.CONVERGED, Status.PRECISION_LIMIT)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# ------------------------------------------------------------------------------ against sklearn
@pytest.mark.parametrize("standardization", [False, True])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_squared_error_path_equals_sklearn_lasso_and_enet_path(abalone, alpha, standardization):
    """sklearn: 1/(2n) |y - Xw|^2 + a l1 |w|_1 + a (1 - l1)/2 |w|^2 on centred data. Ours with
    standardization penalizes sd_j beta_j and divides the L2 part by sd(y): sklearn on X / sd_j
    with a l1 = reg alpha and a (1 - l1) = reg (1 - alpha) / sd(y)."""
    X, y = abalone
    engine = _engine(X, y)
    path = regularization_path(engine, "squared_error", elastic_net_param=alpha, standardization=standardization,
                               n_reg_params=30, tol=1e-12)
    assert path.passes == 1.0 and engine.passes == 1.0        # one pass of statistics for the whole path
    assert len(path.points) >= EARLY_STOP_MIN_POINTS
    regs = path.reg_params
    sd = X.std(axis=0, ddof=1) if standardization else np.ones(X.shape[1])
    Xs = (X - X.mean(axis=0)) / sd
    yc = y - y.mean()
    l1 = alpha / (alpha + (1 - alpha) / y.std(ddof=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # sklearn's duality-gap warnings at tol 1e-14
        if alpha == 1.0:
            _, coefs, _ = lasso_path(Xs, yc, alphas=regs, tol=1e-14, max_iter=200000)
        else:
            _, coefs, _ = enet_path(Xs, yc, l1_ratio=l1, alphas=regs * alpha / l1, tol=1e-14, max_iter=200000)
    expected = coefs.T / sd
    for point, beta in zip(path.points, expected):
        assert _rel(point.coefficients, beta) < 1e-6 if np.any(beta) else not np.any(point.coefficients)
        assert point.intercept == pytest.approx(y.mean() - X.mean(axis=0) @ beta, rel=1e-8, abs=1e-8)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_logistic_path_equals_sklearn_at_every_lambda(magic_head, alpha):
    """sklearn: C sum loss + l1 |w|_1 + (1 - l1)/2 |w|^2 = (n C) * ours at C = 1 / (n reg)."""
    X, y = magic_head
    n = len(y)
    path = regularization_path(_engine(X, y), "logistic", elastic_net_param=alpha, standardization=False,
                               n_reg_params=8, min_ratio=1e-3, tol=1e-10)
    assert len(path.points) == 8 and all(p.converged for p in path.points)
    for point in path.points:
        if not np.any(point.coefficients):
            assert alpha > 0 and point.reg_param >= path.lambda_max
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if alpha == 0.0:
                sk = SkLogistic(C=1 / (n * point.reg_param), tol=1e-12, max_iter=20000).fit(X, y)
            else:
                sk = SkLogistic(C=1 / (n * point.reg_param), l1_ratio=alpha, solver="saga", tol=1e-13,
                                max_iter=200000).fit(X, y)
        ours = np.r_[point.coefficients, point.intercept]
        assert _rel(ours, np.r_[sk.coef_.ravel(), sk.intercept_]) < 1e-6, point.reg_param


# ------------------------------------------------------------------------------ lambda_max and the grid
@pytest.mark.parametrize("loss, standardization, alpha", [
    ("logistic", True, 1.0), ("logistic", False, 0.5), ("squared_error", True, 1.0),
    ("squared_error", False, 0.3), ("poisson", True, 0.7)])
def test_lambda_max_is_the_smallest_penalty_with_all_coefficients_zero(abalone, magic_head, loss, standardization,
                                                                       alpha):
    if loss == "logistic":
        X, y = magic_head
    else:
        X, y = abalone
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    engine = _engine(X, y, w)
    lam = lambda_max(engine, loss, elastic_net_param=alpha, standardization=standardization)
    kw = dict(elastic_net_param=alpha, standardization=standardization, tol=1e-10, max_iter=500)
    with warnings.catch_warnings():
        # a cold fit at lambda_max is optimal where it starts: converged, not at float64's limit
        # (its tolerance is relative to the smooth gradient there, not the vanishing pseudo-gradient)
        warnings.simplefilter("error", ConvergenceWarning)
        at = fit_linear_model(engine, loss, reg_param=lam, **kw)
    assert at.result.status == Status.CONVERGED and not np.any(at.coefficients)
    below = fit_linear_model(engine, loss, reg_param=lam * (1 - 1e-3), **kw)
    assert _solved(below) and np.count_nonzero(below.coefficients) >= 1


def test_lambda_max_of_multinomial_zeroes_every_class():
    X, y = load_svmlight_file(str(dataset("letter.scale")), n_features=16)
    X, y = X[:1500].toarray(), y[:1500] - 1
    engine = _engine(X, y)
    lam = lambda_max(engine, "multinomial", elastic_net_param=1.0)
    kw = dict(elastic_net_param=1.0, tol=1e-9, max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # the cold start at the null model is at float64's limit
        assert not np.any(fit_linear_model(engine, "multinomial", reg_param=lam, **kw).coefficients)
    assert np.any(fit_linear_model(engine, "multinomial", reg_param=lam * 0.99, **kw).coefficients)


def test_default_grid_is_glmnets(abalone, a9a_head):
    X, y = abalone
    path = regularization_path(_engine(X, y), "squared_error", early_stop=False)
    assert len(path.points) == 100 and path.stopped is None
    expected = path.lambda_max * 1e-4 ** (np.arange(100) / 99)          # n > p: ratio 1e-4
    np.testing.assert_allclose(path.reg_params, expected, rtol=1e-12)
    assert not np.any(path.points[0].coefficients) and np.any(path.points[1].coefficients)
    Xw, yw = a9a_head
    wide = regularization_path(_engine(Xw[:100], yw[:100]), "logistic", n_reg_params=7, early_stop=False)
    np.testing.assert_allclose(wide.reg_params, reg_grid(wide.lambda_max, 7, 1e-2), rtol=1e-12)  # n <= p
    assert wide.reg_params[-1] == pytest.approx(1e-2 * wide.lambda_max, rel=1e-12)
    custom = regularization_path(_engine(X, y), "squared_error", n_reg_params=5, min_ratio=0.1)
    np.testing.assert_allclose(custom.reg_params, custom.lambda_max * 0.1 ** (np.arange(5) / 4), rtol=1e-12)


def test_ridge_path_starts_where_elastic_net_1e_3_would(magic_head):
    X, y = magic_head
    engine = _engine(X, y)
    path = regularization_path(engine, "logistic", elastic_net_param=0.0, n_reg_params=4, tol=1e-10)
    assert path.lambda_max == pytest.approx(lambda_max(engine, "logistic", elastic_net_param=1e-3), rel=1e-12)
    assert all(np.count_nonzero(p.coefficients) == X.shape[1] for p in path.points)  # ridge: nothing is zero


def test_explicit_reg_params_are_solved_in_decreasing_order_without_early_stop(abalone):
    X, y = abalone
    path = regularization_path(_engine(X, y), "squared_error", reg_params=[1e-3, 0.1, 1e-2, 0.0])
    assert list(path.reg_params) == [0.1, 1e-2, 1e-3, 0.0] and path.stopped is None


# ------------------------------------------------------------------------------ warm starts, screening, KKT
def _kkt_norm(engine, loss, point, alpha, standardization=True) -> np.ndarray:
    """Each coordinate's pseudo-gradient of the full problem at the point, computed afresh."""
    objective, _, _ = build_objective(engine, loss, reg_param=point.reg_param, elastic_net_param=alpha,
                                      standardization=standardization)
    z = objective.coordinates.from_coef(point.fit.coef_vector)
    _, g = objective.loss_grad(z)
    return np.abs(pseudo_gradient(g, z, objective.l1_weights))


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_no_path_model_violates_kkt_and_violators_are_resolved(a9a_head, alpha):
    """A coarse grid makes the strong rule fail at some point on this data (found, not assumed:
    asserted below), so the re-solve with the violators added is exercised; every returned model,
    set-aside features included, meets the KKT conditions to the solve's own threshold."""
    X, y = a9a_head
    engine = _engine(X, y, partitions=2)
    # lasso's tail on a9a (collinear one-hot columns) is slow on the driver: a shorter grid for it
    path = regularization_path(engine, "logistic", elastic_net_param=alpha, n_reg_params=20,
                               min_ratio=1e-3 if alpha < 1 else 3e-3)
    assert all(p.converged for p in path.points)
    if alpha == 0.5:
        assert sum(p.kkt_added for p in path.points) >= 1
    assert any(p.screened is not None and p.screened < 100 for p in path.points[1:])
    check = _engine(X, y, partitions=1)
    for point in path.points:
        assert _kkt_norm(check, "logistic", point, alpha).max() <= point.threshold * (1 + 1e-9), point.reg_param


def test_path_points_equal_independent_cold_fits(a9a_head, abalone):
    X, y = a9a_head
    engine = _engine(X, y, partitions=2)
    path = regularization_path(engine, "logistic", elastic_net_param=0.5, n_reg_params=10, min_ratio=1e-2,
                               tol=1e-14)
    cold_passes = 0.0
    for point in path.points:
        cold = fit_linear_model(_engine(X, y, partitions=2), "logistic", reg_param=point.reg_param,
                                elastic_net_param=0.5, solver="newton", tol=1e-14, max_iter=200)
        cold_passes += cold.result.passes
        assert _solved(cold)
        # the returned iterate is the converged one, not an earlier one F cannot tell from it
        assert cold.result.grad_norm <= max(h["grad_norm"] for h in cold.result.history[-1:])
        assert _rel(point.fit.coef_vector, cold.coef_vector) < 1e-8
        assert point.objective == pytest.approx(cold.objective, rel=1e-12)
    assert path.passes < cold_passes           # what the warm starts buy
    Xr, yr = abalone
    ls = regularization_path(_engine(Xr, yr), "squared_error", elastic_net_param=0.8, n_reg_params=6, tol=1e-12)
    for point in ls.points:
        cold = fit_linear_model(_engine(Xr, yr), "squared_error", reg_param=point.reg_param, elastic_net_param=0.8,
                                solver="newton", tol=1e-12, max_iter=200)
        assert _rel(point.fit.coef_vector, cold.coef_vector) < 1e-8


def test_smooth_path_solver_follows_the_pass_costs_and_equals_cold_fits(a9a_head):
    """A ridge path under auto: L-BFGS in memory (a Hessian pass costs ~16 gradient passes on
    sparse a9a), Newton where each pass pays a Spark job; either way every point is the cold fit's."""

    class JobPerPass(LocalEngine):
        pass_overhead = 0.05          # the tree engine's

    X, y = a9a_head
    for engine, solver in ((_engine(X, y), "lbfgs"), (JobPerPass(_engine(X, y).collect_blocks()), "newton")):
        path = regularization_path(engine, "logistic", elastic_net_param=0.0, n_reg_params=6, tol=1e-12)
        assert {p.solver for p in path.points} == {solver}
        for point in path.points[::2]:
            cold = fit_linear_model(_engine(X, y), "logistic", reg_param=point.reg_param, solver="newton",
                                    tol=1e-12, max_iter=200)
            assert _rel(point.fit.coef_vector, cold.coef_vector) < 1e-8


def test_screened_and_unscreened_paths_agree(a9a_head):
    X, y = a9a_head
    kw = dict(elastic_net_param=0.5, n_reg_params=15, min_ratio=1e-2, tol=1e-10)
    screened = regularization_path(_engine(X, y), "logistic", **kw)
    full = regularization_path(_engine(X, y), "logistic", screening=False, **kw)
    assert all(p.screened is None for p in full.points[1:])
    assert len(screened.points) == len(full.points)
    for a, b in zip(screened.points, full.points):
        assert a.objective == pytest.approx(b.objective, rel=1e-12)
        assert _rel(a.fit.coef_vector, b.fit.coef_vector) < 1e-7


def test_every_point_reports_its_cost(a9a_head):
    X, y = a9a_head
    engine = _engine(X, y)
    path = regularization_path(engine, "logistic", n_reg_params=6, min_ratio=1e-2)
    assert path.passes == engine.passes
    assert sum(p.passes for p in path.points) <= path.passes      # plus the null model's pass
    assert all(p.seconds >= 0 and np.isfinite(p.objective) for p in path.points)
    assert path.points[0].passes == 0 and path.points[0].solver == "null-model"
    assert all(p.passes >= 1 and p.nit >= 1 for p in path.points[1:])
    assert path.coefficients.shape == (6, 123) and path.objectives.shape == (6,)


# ------------------------------------------------------------------------------ early stop
def test_early_stop_is_glmnets_deviance_rule(abalone):
    X, y = abalone
    w = np.random.default_rng(5).uniform(0.5, 2.0, len(y))
    path = regularization_path(_engine(X, y, w), "squared_error", elastic_net_param=1.0)
    assert path.stopped is not None and len(path.points) < 100
    ybar = np.average(y, weights=w)
    tss = np.sum(w * (y - ybar) ** 2)
    ratios = [1 - np.sum(w * (y - X @ p.coefficients - p.intercept) ** 2) / tss for p in path.points]
    np.testing.assert_allclose([p.deviance_ratio for p in path.points], ratios, rtol=1e-9, atol=1e-12)

    def stops(k):
        return k + 1 >= EARLY_STOP_MIN_POINTS and (ratios[k] > DEVIANCE_MAX or
                                                   ratios[k] - ratios[k - 1] < DEVIANCE_TOL * abs(ratios[k]))
    assert stops(len(ratios) - 1) and not any(stops(k) for k in range(1, len(ratios) - 1))


def test_logistic_deviance_ratio_is_one_minus_the_mean_log_loss_ratio(magic_head):
    X, y = magic_head
    path = regularization_path(_engine(X, y), "logistic", n_reg_params=5, early_stop=False)
    p0 = y.mean()
    null = -np.mean(y * np.log(p0) + (1 - y) * np.log(1 - p0))
    for point in path.points:
        m = X @ point.coefficients + point.intercept
        logloss = np.mean(np.logaddexp(0, m) - y * m)
        assert point.deviance_ratio == pytest.approx(1 - logloss / null, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(loss="hinge"), "smooth loss"),
    (dict(n_reg_params=0), "numRegParams"),
    (dict(min_ratio=1.0), "min_ratio"),
    (dict(reg_params=[0.1, 0.1]), "repeat"),
    (dict(reg_params=[-1.0]), "regParam"),
    (dict(reg_params=[]), "at least one"),
    (dict(elastic_net_param=1.5), "elasticNetParam"),
])
def test_bad_path_parameters_are_named(magic_head, kwargs, match):
    X, y = magic_head
    kwargs = dict(kwargs)
    loss = kwargs.pop("loss", "logistic")
    with pytest.raises(InputError, match=match):
        regularization_path(_engine(X, y), loss, **kwargs)
