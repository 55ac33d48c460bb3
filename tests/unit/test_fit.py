"""The pinned objective solved on real data (in-memory fold) against scikit-learn optima."""

import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.linear_model import PoissonRegressor, Ridge

from sparkopt.engine import LocalEngine
from sparkopt.errors import InputError
from sparkopt.fit import build_objective, fit_linear_model, objective_value
from sparkopt.solvers import ConvergenceWarning

from conftest import dataset


@pytest.fixture(scope="module")
def a9a():
    X, y = load_svmlight_file(str(dataset("a9a")), n_features=123)
    y = (y > 0).astype(float)
    return X.tocsr(), y, LocalEngine.from_arrays(X.tocsr(), y, num_partitions=4)


@pytest.fixture(scope="module")
def abalone():
    X, y = load_svmlight_file(str(dataset("angel_abalone_8d_train.libsvm")), n_features=8)
    X = X.toarray()
    return X, y, LocalEngine.from_arrays(X, y, num_partitions=3)


def _ref_logistic(X, y, reg):
    n = X.shape[0]
    sk = SkLogistic(C=1 / (n * reg), tol=1e-12, max_iter=20000).fit(X, y)
    return sk.coef_.ravel(), sk.intercept_[0]


@pytest.mark.parametrize("reg", [1e-4, 1e-2])
@pytest.mark.parametrize("solver", ["gd", "lbfgs", "newton", "newton-cg"])
def test_a9a_logistic_reaches_sklearn_optimum(a9a, reg, solver):
    X, y, engine = a9a
    coef, icpt = _ref_logistic(X, y, reg)
    f_ref = objective_value(engine, "logistic", coef, icpt, reg_param=reg, standardization=False)
    fit = fit_linear_model(engine, "logistic", reg_param=reg, standardization=False, solver=solver,
                           tol=1e-8, max_iter=3000)
    assert fit.converged, fit.result
    assert (fit.objective - f_ref) / f_ref < 1e-6
    if solver == "newton":
        assert fit.result.passes <= 15


def test_a9a_sgd_within_13_passes_with_default_steps(a9a):
    """100 steps on 10% samples (10 epochs) with the default step settings (the data's safe step,
    momentum, averaging), plus the initial exact pass, the curvature estimate on a 5000-row sample
    (4 x 0.15 passes) and the final exact pass: within 1e-3 of the optimum (measured 2.0e-4)."""
    X, y, engine = a9a
    ref = fit_linear_model(engine, "logistic", reg_param=1e-2, standardization=False, solver="newton", tol=1e-10)
    engine.reset_counters()
    kwargs = dict(reg_param=1e-2, standardization=False, solver="sgd", tol=1e-12, max_iter=100,
                  solver_options=dict(fraction=0.1, seed=1))
    with pytest.warns(ConvergenceWarning):
        fit = fit_linear_model(engine, "logistic", **kwargs)
    assert fit.result.passes <= 13
    assert (fit.objective - ref.objective) / ref.objective < 1e-3
    with pytest.warns(ConvergenceWarning):
        again = fit_linear_model(engine, "logistic", **kwargs)
    assert np.array_equal(fit.coef_vector, again.coef_vector)


@pytest.mark.parametrize("solver", ["gd", "lbfgs", "newton"])
def test_regression_matches_ridge(abalone, solver):
    X, y, engine = abalone
    reg = 0.1
    lam = reg / np.std(y, ddof=1)           # MLlib's squared-error convention
    ridge = Ridge(alpha=len(y) * lam, tol=1e-12, solver="cholesky").fit(X, y)
    f_ref = objective_value(engine, "squared_error", ridge.coef_, ridge.intercept_, reg_param=reg, standardization=False)
    fit = fit_linear_model(engine, "squared_error", reg_param=reg, standardization=False, solver=solver,
                           tol=1e-8, max_iter=5000)
    assert fit.converged
    assert (fit.objective - f_ref) / f_ref < 1e-6
    np.testing.assert_allclose(fit.coefficients, ridge.coef_, rtol=1e-4)


def test_multinomial_letter_matches_sklearn():
    X, y = load_svmlight_file(str(dataset("letter.scale")), n_features=16)
    X, y = X.toarray(), y - 1
    engine = LocalEngine.from_arrays(X, y, num_partitions=2)
    reg = 1e-3
    sk = SkLogistic(C=1 / (len(y) * reg), tol=1e-12, max_iter=20000).fit(X, y)
    f_ref = objective_value(engine, "multinomial", sk.coef_, sk.intercept_, reg_param=reg, standardization=False)
    fit = fit_linear_model(engine, "multinomial", reg_param=reg, standardization=False, tol=1e-9)
    # a Hessian pass costs ~12-16 gradient passes here (26 classes x 17 dense: one symmetric
    # rank-k update per chunk of rows) and Newton, reusing them, brings ~5, where Newton-CG
    # spends ~130 Hessian-vector products: auto -> exact Newton (issue 13's measured miss)
    assert fit.converged and fit.result.solver == "newton"
    assert abs(fit.objective - f_ref) / f_ref < 1e-6
    np.testing.assert_allclose(fit.coefficients, sk.coef_, atol=1e-4 * np.abs(sk.coef_).max())


def test_newton_reuses_a_dear_hessian_while_its_steps_contract(monkeypatch):
    """letter: the same optimum with about half the Hessians (each 12-16 gradient passes), a
    few more passes, all within 15 to tol 1e-6; each reused one's step cut the gradient norm
    to at most REUSE_CONTRACTION of its value."""
    from sparkopt.linear_objective import LinearModelObjective
    from sparkopt.solvers.newton import Newton

    X, y = load_svmlight_file(str(dataset("letter.scale")), n_features=16)
    engine = LocalEngine.from_arrays(X.toarray(), y - 1, num_partitions=2)
    hessians = []
    real = LinearModelObjective.loss_grad_hess

    def counted(self, x):
        hessians.append(1)
        return real(self, x)

    monkeypatch.setattr(LinearModelObjective, "loss_grad_hess", counted)
    fits = {}
    for reuse in (False, True):
        hessians.clear()
        fits[reuse] = fit_linear_model(engine, "multinomial", reg_param=1e-3, standardization=False,
                                       solver="newton", solver_options={"reuse_hessian": reuse})
        fits[reuse].hessians = len(hessians)
    plain, reused = fits[False].result, fits[True].result
    assert plain.success and reused.success
    assert abs(reused.fun - plain.fun) <= 1e-9 * abs(plain.fun)
    assert fits[True].hessians <= 0.75 * fits[False].hessians, (fits[True].hessians, fits[False].hessians)
    assert reused.passes <= 15 and reused.nit > plain.nit
    rows = reused.history
    flagged = [i for i, row in enumerate(rows) if row.get("hessian_reused")]
    assert flagged
    for i in flagged:
        assert rows[i]["step_size"] == 1.0
        assert rows[i]["grad_norm"] <= Newton.REUSE_CONTRACTION * rows[i - 1]["grad_norm"] * (1 + 1e-12)


def test_poisson_matches_sklearn(abalone):
    X, y, _ = abalone
    engine = LocalEngine.from_arrays(X, y, num_partitions=2)
    sk = PoissonRegressor(alpha=1e-3, tol=1e-12, max_iter=10000).fit(X, y)
    fit = fit_linear_model(engine, "poisson", reg_param=1e-3, standardization=False, tol=1e-10)
    assert fit.converged
    f_sk = objective_value(engine, "poisson", sk.coef_, sk.intercept_, reg_param=1e-3, standardization=False)
    assert fit.objective <= f_sk and (f_sk - fit.objective) / fit.objective < 1e-9
    np.testing.assert_allclose(fit.coefficients, sk.coef_, rtol=1e-4)
    assert fit.intercept == pytest.approx(sk.intercept_, rel=1e-5)


def test_convergence_test_is_invariant_to_label_scale(abalone):
    """tol is relative to the starting gradient: labels in the 1e5 range (house prices) must not
    let first-order solvers stop early and call it converged."""
    X, y, _ = abalone
    big = LocalEngine.from_arrays(X, y * 1e5, num_partitions=2)
    exact = fit_linear_model(big, "squared_error", reg_param=1e-3, solver="newton", tol=1e-10)
    for solver in ("lbfgs", "gd"):
        fit = fit_linear_model(big, "squared_error", reg_param=1e-3, solver=solver, tol=1e-6, max_iter=5000)
        assert fit.converged
        assert (fit.objective - exact.objective) / exact.objective < 1e-6


def test_constant_feature_gets_zero_coefficient():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=200), np.full(200, 3.0), rng.normal(size=200)])
    y = (X[:, 0] + rng.normal(size=200) > 0).astype(float)
    engine = LocalEngine.from_arrays(X, y)
    for standardization in (True, False):
        fit = fit_linear_model(engine, "logistic", reg_param=0.01, standardization=standardization)
        assert fit.converged and fit.coefficients[1] == 0.0 and np.all(np.isfinite(fit.coefficients))


def test_sparse_and_dense_give_the_same_fit(a9a):
    X, y, engine = a9a
    dense = LocalEngine.from_arrays(X[:5000].toarray(), y[:5000], num_partitions=3)
    sparse = LocalEngine.from_arrays(X[:5000], y[:5000], num_partitions=3)
    # one solver for both (auto weighs dense and CSR passes differently and may pick another)
    a = fit_linear_model(dense, "logistic", reg_param=1e-3, solver="newton")
    b = fit_linear_model(sparse, "logistic", reg_param=1e-3, solver="newton")
    np.testing.assert_allclose(a.coef_vector, b.coef_vector, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(reg_param=-1.0), "regParam"),
    (dict(elastic_net_param=1.5), "elasticNetParam"),
    (dict(max_iter=-1), "maxIter"),
    (dict(tol=0.0), "tol"),
    (dict(solver="adam"), "solver"),
])
def test_bad_parameters(a9a, kwargs, match):
    with pytest.raises(InputError, match=match):
        fit_linear_model(a9a[2], "logistic", **kwargs)


def test_label_checks():
    X = np.eye(4)
    with pytest.raises(InputError, match="only 0 and 1"):
        build_objective(LocalEngine.from_arrays(X, [0, 1, 2, 1]), "logistic")
    with pytest.raises(InputError, match="single class"):
        build_objective(LocalEngine.from_arrays(X, [1, 1, 1, 1]), "logistic")
    with pytest.raises(InputError, match="class indices"):
        build_objective(LocalEngine.from_arrays(X, [0, 1.5, 2, 1]), "multinomial")
    with pytest.raises(InputError, match=">= 0"):
        build_objective(LocalEngine.from_arrays(X, [0, -1, 2, 1]), "poisson")
    with pytest.raises(InputError, match="huber"):
        fit_linear_model(LocalEngine.from_arrays(X, [0, 1, 2, 1]), "huber", elastic_net_param=0.5)


def test_hinge_continuation_reports_one_consistent_run(a9a):
    """The smoothing stages and the L-BFGS polish end as one result: every iteration in the history
    and seen by the callback, nfev = the evaluations made, and fun / jac / grad_norm of the returned x."""
    from sparkopt.solvers.result import optimality_norm

    X, y, _ = a9a
    engine = LocalEngine.from_arrays(X[:6000], y[:6000], num_partitions=2)
    seen = []
    fit = fit_linear_model(engine, "hinge", reg_param=1e-3, tol=1e-6, max_iter=200,
                           callback=lambda row: seen.append(row["iteration"]))
    res = fit.result
    assert res.solver == "newton-smoothing"
    assert [row["iteration"] for row in res.history] == list(range(res.nit + 1))
    assert seen == list(range(1, res.nit + 1))
    assert res.nfev == engine.evaluations and res.passes == pytest.approx(engine.passes)
    assert {row["smoothing"] for row in res.history} == {1.0, 0.1, 0.01, 0.001, 0.0}
    objective, _, _ = build_objective(engine, "hinge", reg_param=1e-3)
    f, g = objective.loss_grad(res.x)
    assert res.fun == pytest.approx(f + objective.penalty.l1_value(res.x), rel=1e-12)
    assert res.grad_norm == pytest.approx(optimality_norm(objective, res.x, g), rel=1e-9)
