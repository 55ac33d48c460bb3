"""Least squares from sufficient statistics (solver="normal"): the same optimum as Newton on the
blocks, along a regularization path, with and without L1, for one pass over the data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sparkopt.blocks import Block
from sparkopt.engine import LocalEngine
from sparkopt.errors import InputError
from sparkopt.fit import fit_linear_model
from sparkopt.objectives.gram import block_gram, merge_gram

from conftest import dataset

PATH = (1e-1, 1e-2, 1e-3, 0.0)


@pytest.fixture(scope="module")
def california():
    """Raw units: longitude ~ -119, population ~ 1e3, label in dollars (~2e5)."""
    df = pd.read_csv(dataset("california_housing.csv"))
    X = df.drop(columns=["median_house_value", "ocean_proximity"]).fillna(0).to_numpy(float)
    y = df["median_house_value"].to_numpy(float)
    return LocalEngine.from_arrays(X, y, np.random.default_rng(0).uniform(0.5, 2, len(y)), num_partitions=3)


def test_merged_statistics_equal_one_pass_over_all_rows():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4)) * [1, 10, 0.1, 3] + [0, -119, 35, 1e3]
    y, w = X @ [1.0, 0.1, -2.0, 0.01] + rng.normal(size=300), rng.uniform(0.5, 2, 300)
    whole = block_gram(Block(X, y, w))
    for storage in (np.asarray, sp.csr_matrix):
        parts = [block_gram(Block(storage(X[a:b]), y[a:b], w[a:b])) for a, b in ((0, 50), (50, 51), (51, 300))]
        merged = merge_gram(merge_gram(parts[0], parts[1]), parts[2])
        for name in ("weight", "xbar", "ybar", "Mxx", "Mxy", "Myy"):
            np.testing.assert_allclose(getattr(merged, name), getattr(whole, name), rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("standardization", [True, False])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_normal_equals_newton_along_a_path(california, standardization, fit_intercept, alpha):
    california.reset_counters()
    california._gram_statistics = None
    kw = dict(elastic_net_param=alpha, standardization=standardization, fit_intercept=fit_intercept, tol=1e-12,
              max_iter=200)
    passes = 0.0
    for reg in PATH:
        normal = fit_linear_model(california, "squared_error", reg_param=reg, solver="normal", **kw)
        passes += normal.result.passes
        newton = fit_linear_model(LocalEngine(california.collect_blocks(), california.stats), "squared_error",
                                  reg_param=reg, solver="newton", **kw)
        assert normal.result.solver == "normal" and normal.converged, normal.result
        scale = max(np.abs(newton.coef_vector).max(), 1e-300)
        assert np.abs(normal.coef_vector - newton.coef_vector).max() / scale < 1e-10
        assert normal.objective == pytest.approx(newton.objective, rel=1e-12)
    assert passes == 1.0 and california.passes == 1.0      # the whole path: one pass, the statistics


def test_auto_takes_the_normal_equations_for_squared_error(california):
    fit = fit_linear_model(california, "squared_error", reg_param=1e-3)
    assert fit.result.solver == "normal"
    assert fit_linear_model(california, "huber", reg_param=1e-3).result.solver != "normal"


def test_normal_is_refused_where_it_does_not_apply(california):
    with pytest.raises(InputError, match="squared error"):
        fit_linear_model(california, "huber", solver="normal")
    wide = LocalEngine.from_arrays(sp.random(20, 5000, density=0.01, format="csr", random_state=0), np.arange(20.0))
    with pytest.raises(InputError, match="at most 4096 features"):
        fit_linear_model(wide, "squared_error", solver="normal")
