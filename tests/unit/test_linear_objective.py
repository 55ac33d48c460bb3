"""The driver-side objective of a linear model: the solver coordinates (a linear map T with
virtual centring), the Hessian's diagonal for preconditioning and the curvature estimate for
the SGD family's safe step, all checked against dense linear algebra on the same data."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sparkopt.engine import LocalEngine
from sparkopt.fit import build_objective

RNG = np.random.default_rng(3)
N, D = 400, 5
# raw units on purpose: a mean far from 0 and very different spreads
X_RAW = RNG.normal(size=(N, D)) * [1.0, 30.0, 0.01, 5.0, 2.0] + [0.0, -119.0, 35.0, 1e3, 0.0]
X_RAW[:, 4] = np.where(RNG.random(N) < 0.8, 0.0, X_RAW[:, 4])       # mostly zero, as a sparse column
MARGIN = (X_RAW - X_RAW.mean(0)) / X_RAW.std(0) @ RNG.normal(size=D)

LABELS = {
    "logistic": (RNG.random(N) < 1 / (1 + np.exp(-MARGIN))).astype(float),
    "squared_error": 3.0 * MARGIN + RNG.normal(size=N) + 50.0,
    "poisson": RNG.poisson(np.exp(0.3 * MARGIN + 1.0)).astype(float),
    "huber": 3.0 * MARGIN + RNG.standard_t(3, size=N),
    "multinomial": np.digitize(MARGIN + RNG.normal(size=N), [-1.0, 0.5]).astype(float),
    "squared_hinge": (MARGIN + RNG.normal(size=N) > 0).astype(float),
}
CASES = [(loss, fi, std, sparse) for loss in LABELS for fi in (True, False) for std in (True, False)
         for sparse in (False, True)]


def objective_for(loss, fit_intercept, standardization, sparse, reg=1e-2):
    X = sp.csr_matrix(X_RAW) if sparse else X_RAW
    engine = LocalEngine.from_arrays(X, LABELS[loss], RNG.uniform(0.5, 2.0, size=N), num_partitions=3)
    objective, _, _ = build_objective(engine, loss, reg_param=reg, fit_intercept=fit_intercept,
                                      standardization=standardization)
    return objective


def dense_map(coordinates):
    """T as a dense (n_params, n_z) matrix, column by column."""
    return np.column_stack([coordinates.to_coef(e) for e in np.eye(coordinates.n_z)])


@pytest.mark.parametrize("loss, fit_intercept, standardization, sparse", CASES)
def test_coordinates_are_one_linear_map_and_its_transpose(loss, fit_intercept, standardization, sparse):
    objective = objective_for(loss, fit_intercept, standardization, sparse)
    c = objective.coordinates
    T = dense_map(c)
    z = RNG.normal(size=c.n_z)
    g = RNG.normal(size=c.n_params)
    np.testing.assert_allclose(c.to_coef(z), T @ z, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(c.to_z_grad(g), T.T @ g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c.from_coef(c.to_coef(z)), z, rtol=1e-9, atol=1e-9)
    H = RNG.normal(size=(c.n_params, c.n_params))
    H = H + H.T
    np.testing.assert_allclose(c.hessian(H), T.T @ H @ T, rtol=1e-12, atol=1e-9)
    if fit_intercept:
        assert c.center is not None        # centred virtually: the margin's mean is the intercept


@pytest.mark.parametrize("loss, fit_intercept, standardization, sparse",
                         [case for case in CASES if case[0] != "huber"])
def test_hessian_diagonal_in_one_gradient_pass_matches_the_hessian(loss, fit_intercept, standardization, sparse):
    objective = objective_for(loss, fit_intercept, standardization, sparse)
    assert objective.has_curvature_moments
    z = 0.1 * RNG.normal(size=objective.n_params)
    f, g, diag = objective.loss_grad_diag(z)
    f_ref, g_ref, H = objective.loss_grad_hess(z)
    assert f == pytest.approx(f_ref, rel=1e-13)
    np.testing.assert_allclose(g, g_ref, rtol=1e-11, atol=1e-13)
    # the centred moments A - 2 m B + m^2 C cancel ~log10((mean / sd)^2) digits (column 2: mean
    # 35, sd 0.01: ~7 of 16): ample for a preconditioner
    np.testing.assert_allclose(diag, np.diag(H), rtol=1e-7, atol=1e-12)


def test_huber_offers_no_diagonal_so_newton_cg_runs_unpreconditioned():
    objective = objective_for("huber", True, True, False)
    assert not objective.has_curvature_moments


@pytest.mark.parametrize("loss", ["logistic", "poisson", "squared_error", "multinomial"])
def test_curvature_bound_is_the_largest_eigenvalue(loss):
    objective = objective_for(loss, True, False, False)
    z = objective.coordinates.from_coef(np.zeros(objective.coordinates.n_params))
    _, _, H = objective.loss_grad_hess(z)
    top = float(np.linalg.eigvalsh(H)[-1])
    # 400 rows: the "sample" is the whole data, so only the subspace iteration is approximate
    estimate = objective.curvature_bound(z, seed=0)
    assert 0.8 * top <= estimate <= top * (1 + 1e-9)
