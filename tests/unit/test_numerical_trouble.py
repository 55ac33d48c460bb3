"""Divergence and extreme data: never NaN/inf coefficients; the result and a warning say what happened."""
import numpy as np
import pytest

from sparkopt.engine import LocalEngine
from sparkopt.fit import fit_linear_model
from sparkopt.solvers import ConvergenceWarning, Status

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 3))


def test_sgd_backs_off_a_step_that_blows_up():
    """A step 1e6 times the safe one: every blow-up sends the run back to its last healthy iterate
    with a quarter of the step, until the step is safe; no NaN, no divergence, F below its start."""
    engine = LocalEngine.from_arrays(X, (X[:, 0] > 0).astype(float), num_partitions=2)
    with pytest.warns(ConvergenceWarning, match="maximum number of iterations"):
        fit = fit_linear_model(engine, "logistic", reg_param=0.1, solver="sgd", max_iter=50,
                               solver_options=dict(step_size=1e6, schedule="constant"))
    backoffs = [row["backoff"] for row in fit.result.history if "backoff" in row]
    assert 5 <= len(backoffs) <= 12 and backoffs == sorted(backoffs, reverse=True)
    assert fit.result.status == Status.MAX_ITER
    assert np.all(np.isfinite(fit.coef_vector)) and np.isfinite(fit.objective)
    with pytest.warns(ConvergenceWarning, match="maximum number of iterations"):
        start = fit_linear_model(engine, "logistic", reg_param=0.1, max_iter=0).objective
    assert fit.objective < start


def test_diverging_fixed_step_gd_returns_best_finite_iterate():
    y = X @ [1.0, 2.0, 3.0] + 0.5
    engine = LocalEngine.from_arrays(X, y)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        fit = fit_linear_model(engine, "squared_error", reg_param=0.1, solver="gd", max_iter=500,
                               solver_options=dict(step_size=1e3))
    assert fit.result.status == Status.DIVERGED and np.all(np.isfinite(fit.coef_vector))


def test_poisson_with_huge_counts_stays_finite():
    y = np.round(np.exp(X @ [3.0, 2.0, 1.0] + 15))
    fit = fit_linear_model(LocalEngine.from_arrays(X, y, num_partitions=2), "poisson", max_iter=100)
    assert fit.converged and np.all(np.isfinite(fit.coef_vector))
    np.testing.assert_allclose(fit.coefficients, [3.0, 2.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("solver", ["auto", "lbfgs", "newton-cg"])
def test_separable_data_without_regularization_gives_finite_coefficients(solver):
    engine = LocalEngine.from_arrays(X, (X[:, 0] > 0).astype(float))
    with pytest.warns(ConvergenceWarning, match="linearly separable"):
        fit = fit_linear_model(engine, "logistic", solver=solver, max_iter=200)
    assert np.all(np.isfinite(fit.coef_vector)) and 0 <= fit.objective < 1e-3
    assert fit.result.extra["separable"] and "no minimizer" in fit.result.message


def test_separable_multinomial_is_reported_and_overlapping_data_are_not():
    labels = np.digitize(X[:, 0], [-0.5, 0.5]).astype(float)          # 3 classes cut along one axis
    engine = LocalEngine.from_arrays(X, labels, num_partitions=2)
    with pytest.warns(ConvergenceWarning, match="linearly separable"):
        fit = fit_linear_model(engine, "multinomial", solver="lbfgs", max_iter=300)
    assert fit.result.extra["separable"]
    noisy = (X[:, 0] + RNG.normal(scale=1.0, size=len(X)) > 0).astype(float)
    fit = fit_linear_model(LocalEngine.from_arrays(X, noisy), "logistic")
    assert fit.converged and fit.result.extra["separable"] is False and "separable" not in fit.result.message
    regularized = fit_linear_model(engine, "multinomial", reg_param=1e-2)
    assert "separable" not in regularized.result.extra
