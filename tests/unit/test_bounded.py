"""Bound-constrained fits (L-BFGS-B on the distributed objective) against scipy's L-BFGS-B run
directly on the same objective written out in numpy, on real data."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_softmax, softmax
from sklearn.datasets import load_svmlight_file

from sparkopt.engine import LocalEngine
from sparkopt.errors import InputError
from sparkopt.fit import fit_linear_model
from sparkopt.solvers.bounded import projected_gradient_norm

from conftest import dataset


def _scipy_optimum(fun, n, lower, upper):
    answer = minimize(fun, np.clip(np.zeros(n), lower, upper), jac=True, method="L-BFGS-B",
                      bounds=list(zip(lower, upper)), options=dict(maxiter=20000, ftol=1e-16, gtol=1e-12, maxcor=30))
    return answer.x


def test_binomial_bounds_equal_scipys_optimum():
    X, y = load_svmlight_file(str(dataset("a9a")), n_features=123)
    X, y = X.tocsr()[:5000], (y[:5000] > 0).astype(float)
    n, d, reg = X.shape[0], X.shape[1], 1e-2
    engine = LocalEngine.from_arrays(X, y, num_partitions=3)
    lower, upper = np.full(d + 1, -np.inf), np.full(d + 1, np.inf)
    upper[:d:2] = 0.0                 # every other coefficient <= 0
    lower[1:d:4] = 0.05               # every fourth of the others >= 0.05
    lower[d], upper[d] = -0.5, 0.5    # the intercept in [-0.5, 0.5]
    active = np.asarray(X.power(2).mean(axis=0)).ravel() - np.asarray(X.mean(axis=0)).ravel() ** 2 > 0
    lower[:d][~active], upper[:d][~active] = 0.0, 0.0   # constant features: coefficient 0

    def fun(coef):
        m = X @ coef[:d] + coef[d]
        f = np.mean(np.logaddexp(0, m) - y * m) + reg / 2 * coef[:d] @ coef[:d]
        r = (expit(m) - y) / n
        return f, np.r_[X.T @ r + reg * coef[:d], r.sum()]

    reference = _scipy_optimum(fun, d + 1, lower, upper)
    fit = fit_linear_model(engine, "logistic", reg_param=reg, standardization=False, tol=1e-8, max_iter=2000,
                           bounds=(lower, upper))
    assert fit.converged, fit.result
    assert fit.result.solver == "lbfgs-b"
    coef = fit.coef_vector
    assert np.all(coef >= lower) and np.all(coef <= upper)
    assert np.max(np.abs(coef - reference)) / np.max(np.abs(reference)) < 1e-6
    f, g = fun(coef)
    assert projected_gradient_norm(coef, g, lower, upper) < 1e-7
    assert f <= fun(reference)[0] + 1e-12
    assert np.any(coef[:d:2][active[::2]] == 0.0)     # some upper bounds are active


def test_multinomial_bounds_equal_scipys_optimum():
    X, y = load_svmlight_file(str(dataset("letter.scale")), n_features=16)
    X, y = X.toarray()[:2000], y[:2000] - 1
    K, (n, d), reg = 26, X.shape, 1e-3
    engine = LocalEngine.from_arrays(X, y, num_partitions=2)
    q = d + 1
    lower, upper = np.full((K, q), -np.inf), np.full((K, q), np.inf)
    lower[:, :d] = 0.0                # non-negative coefficients (MLlib's documented use)
    upper[:, d] = 1.0
    lower, upper = lower.ravel(), upper.ravel()
    Y = np.eye(K)[y.astype(int)]

    def fun(theta):
        M = theta.reshape(K, q)
        margins = X @ M[:, :d].T + M[:, d]
        f = -np.mean(np.sum(Y * log_softmax(margins, axis=1), axis=1)) + reg / 2 * np.sum(M[:, :d] ** 2)
        R = (softmax(margins, axis=1) - Y) / n
        G = np.column_stack([R.T @ X + reg * M[:, :d], R.sum(axis=0)])
        return f, G.ravel()

    reference = _scipy_optimum(fun, K * q, lower, upper)
    fit = fit_linear_model(engine, "multinomial", reg_param=reg, standardization=False, tol=1e-8, max_iter=3000,
                           bounds=(lower, upper))
    assert fit.converged, fit.result
    coef = fit.coef_vector
    assert np.all(coef >= lower) and np.all(coef <= upper)     # not re-centred under bounds
    # the penalized coefficients are unique; the intercepts only up to a shift shared by all classes
    B, B_ref = coef.reshape(K, q)[:, :d], reference.reshape(K, q)[:, :d]
    assert np.max(np.abs(B - B_ref)) / np.max(np.abs(B_ref)) < 1e-6
    c, c_ref = coef.reshape(K, q)[:, d], reference.reshape(K, q)[:, d]
    assert np.max(np.abs((c - c.mean()) - (c_ref - c_ref.mean()))) < 1e-5
    assert fun(coef)[0] <= fun(reference)[0] + 1e-12


def test_bounds_refuse_what_they_cannot_fit():
    X, y = load_svmlight_file(str(dataset("angel_abalone_8d_train.libsvm")), n_features=8)
    engine = LocalEngine.from_arrays(X.toarray(), (y > 9).astype(float), num_partitions=2)
    bounds = (np.full(9, -1.0), np.full(9, 1.0))
    with pytest.raises(InputError, match="elasticNetParam must be 0"):
        fit_linear_model(engine, "logistic", reg_param=0.1, elastic_net_param=0.5, bounds=bounds)
    with pytest.raises(InputError, match="solver must be auto or lbfgs"):
        fit_linear_model(engine, "logistic", solver="newton", bounds=bounds)
    with pytest.raises(InputError, match="lower bound 1.0 exceeds upper bound -1.0"):
        fit_linear_model(engine, "logistic", bounds=(bounds[1], bounds[0]))
    with pytest.raises(InputError, match="9 entries"):
        fit_linear_model(engine, "logistic", bounds=(np.zeros(3), np.ones(3)))
