"""Property-based tests (hypothesis, no Spark): the block objectives and the ingest statistics over
random shapes, sparsity, value scales and weights.

Hypothesis draws the *shape* of a case (rows, features, density, scale, weights, split points,
seed); numpy draws the numbers from the seed, so every example is cheap and reproducible. The
profile is derandomized with a fixed example budget: CI sees the same examples on every run.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkopt.blocks import Block
from sparkopt.engine import LocalEngine
from sparkopt.engine.stats import block_stats, combine_partitions
from sparkopt.objectives import LOSSES, make_block_objective

K = 3  # classes of the multinomial cases
EPS = 1.35

settings.register_profile(
    "sparkopt-properties",
    max_examples=40,
    deadline=None,
    derandomize=True,  # same examples on every run: CI never flakes on a new draw
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
PROPS = settings.get_profile("sparkopt-properties")


@st.composite
def cases(draw, *, min_rows=1, max_rows=40, max_features=8, scale=(-2, 2), zero_weights=True):
    """A random problem: dict(X dense (n, d), y (n,), w (n,), loss, fit_intercept, coef, seed)."""
    loss = draw(st.sampled_from(LOSSES))
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, max_features))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    log_scale = draw(st.integers(*scale))
    weights = draw(st.sampled_from(["unit", "random", "integer"] + (["some zero"] if zero_weights else [])))
    fit_intercept = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * 10.0**log_scale
    X[rng.random((n, d)) >= density] = 0.0
    m = rng.normal(size=n)
    if loss in ("squared_error", "huber"):
        y = m + rng.standard_t(df=2, size=n)
    elif loss in ("logistic", "hinge", "squared_hinge"):
        y = (rng.random(n) < 0.5).astype(float)
    elif loss == "poisson":
        y = rng.poisson(np.exp(m)).astype(float)
    else:
        y = rng.integers(0, K, size=n).astype(float)
    w = {
        "unit": lambda: np.ones(n),
        "random": lambda: rng.uniform(0.1, 5.0, size=n),
        "integer": lambda: rng.integers(1, 4, size=n).astype(float),
        "some zero": lambda: np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0.1, 5.0, size=n)),
    }[weights]()
    obj = make_block_objective(loss, d, fit_intercept, n_classes=K, epsilon=EPS)
    # margins O(1) whatever the feature scale: coefficients scaled down by it
    coef = rng.normal(scale=0.5, size=obj.n_params)
    per = d + int(fit_intercept)
    for k in range(obj.n_params // per if loss == "multinomial" else 1):
        coef[k * per : k * per + d] /= 10.0**log_scale * np.sqrt(d)
    if loss == "huber":
        coef[-1] = 0.9
    return dict(X=X, y=y, w=w, loss=loss, obj=obj, coef=coef, fit_intercept=fit_intercept, seed=seed)


def _kink_distance(obj, loss, coef, X, y):
    """Per-row distance (in margin units) to a kink of the loss (inf for smooth losses)."""
    if loss in ("hinge", "squared_hinge"):
        return np.abs(1 - (2 * y - 1) * obj.margins(coef, X))
    if loss == "huber":
        sigma = coef[-1]
        return np.abs(np.abs(y - obj.margins(coef, X)) - EPS * sigma)
    return np.full(X.shape[0], np.inf)


def _close(a, b, rtol):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(b), initial=0.0))))


def _blocks(c):
    return Block(np.ascontiguousarray(c["X"]), c["y"], c["w"]), Block(sp.csr_matrix(c["X"]), c["y"], c["w"])


# -------------------------------------------------------------------------------- objectives
@PROPS
@given(cases())
def test_dense_equals_csr(c):
    obj, coef = c["obj"], c["coef"]
    dense, csr = _blocks(c)
    V = np.random.default_rng(c["seed"]).normal(size=(obj.n_params, 2))
    fd, gd = obj.loss_grad(coef, dense)
    fs, gs = obj.loss_grad(coef, csr)
    _close(fs, fd, 1e-12)
    _close(gs, gd, 1e-12)
    _close(obj.hessp(coef, csr, V), obj.hessp(coef, dense, V), 1e-12)
    _close(obj.hess(coef, csr), obj.hess(coef, dense), 1e-12)


@PROPS
@given(cases(scale=(-1, 1)), st.booleans())
def test_gradient_equals_central_differences(c, sparse):
    obj, coef, loss = c["obj"], c["coef"], c["loss"]
    X, y, w = c["X"], c["y"], c["w"]
    # finite differences are only valid away from the kinks of hinge / Huber
    keep = _kink_distance(obj, loss, coef, X, y) > 1e-2
    block = Block(sp.csr_matrix(X[keep]) if sparse else np.ascontiguousarray(X[keep]), y[keep], w[keep])
    f, g = obj.loss_grad(coef, block)
    assert f == pytest.approx(obj.loss_sum(coef, block), rel=1e-13, abs=1e-13)
    h = 1e-6
    g_fd = np.empty_like(coef)
    for j in range(coef.size):
        e = np.zeros_like(coef)
        e[j] = h
        g_fd[j] = (obj.loss_sum(coef + e, block) - obj.loss_sum(coef - e, block)) / (2 * h)
    # tolerant: error ~ h^2 f''' + ulp(f) / h, with f up to ~1e2 here
    _close(g, g_fd, 1e-5)


@PROPS
@given(cases())
def test_hessian_vector_product_equals_hessian_times_v(c):
    obj, coef = c["obj"], c["coef"]
    block = _blocks(c)[c["seed"] % 2]
    V = np.random.default_rng(c["seed"] + 1).normal(size=(obj.n_params, 3))
    H = obj.hess(coef, block)
    assert H.shape == (obj.n_params, obj.n_params)
    _close(obj.hessp(coef, block, V), H @ V, 1e-11)
    _close(obj.hessp(coef, block, V[:, 0]), H @ V[:, 0], 1e-11)


@PROPS
@given(cases(min_rows=2), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4))
def test_sums_are_additive_over_row_splits(c, cuts):
    """Blocks combine by addition, including empty blocks: the engines rely on it."""
    obj, coef = c["obj"], c["coef"]
    block = _blocks(c)[c["seed"] % 2]
    n = block.n_rows
    bounds = [0] + sorted(int(round(t * n)) for t in cuts) + [n]
    parts = [block.take(np.arange(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
    V = np.random.default_rng(c["seed"]).normal(size=(obj.n_params, 2))
    f, g = obj.loss_grad(coef, block)
    pieces = [obj.loss_grad(coef, p) for p in parts]
    _close(sum(p[0] for p in pieces), f, 1e-12)
    _close(sum(p[1] for p in pieces), g, 1e-12)
    _close(sum(obj.hessp(coef, p, V) for p in parts), obj.hessp(coef, block, V), 1e-12)
    _close(sum(obj.hess(coef, p) for p in parts), obj.hess(coef, block), 1e-12)


@PROPS
@given(cases(min_rows=2))
def test_zero_weight_rows_contribute_nothing(c):
    obj, coef = c["obj"], c["coef"]
    rng = np.random.default_rng(c["seed"])
    w = c["w"].copy()
    zero = rng.random(w.size) < 0.5
    w[zero] = 0.0
    # the zero-weight rows get wild values: they must still add exactly nothing
    X = c["X"].copy()
    X[zero] *= 1e3
    full = Block(X, c["y"], w)
    kept = full.take(np.flatnonzero(~zero))
    V = rng.normal(size=(obj.n_params, 2))
    fa, ga = obj.loss_grad(coef, full)
    fb, gb = obj.loss_grad(coef, kept)
    _close(fa, fb, 1e-12)
    _close(ga, gb, 1e-12)
    _close(obj.hessp(coef, full, V), obj.hessp(coef, kept, V), 1e-12)


@PROPS
@given(cases(), st.integers(1, 12), st.one_of(st.none(), st.integers(1, 7)))
def test_local_engine_sum_is_independent_of_partitioning(c, num_partitions, block_rows):
    obj, coef = c["obj"], c["coef"]
    X = c["X"] if c["seed"] % 2 else sp.csr_matrix(c["X"])
    engine = LocalEngine.from_arrays(X, c["y"], c["w"], num_partitions, block_rows=block_rows, validate=False)
    f, g = engine.map_sum(lambda b, x: obj.loss_grad(x, b), coef)
    f0, g0 = obj.loss_grad(coef, Block(X, c["y"], c["w"]))
    _close(f, f0, 1e-12)
    _close(g, g0, 1e-12)
    assert engine.stats.num_partitions == num_partitions


# -------------------------------------------------------------------------------- ingest stats
def _ref_moments(X, w):
    """Weighted mean and Spark's unbiased weighted variance, in extended precision."""
    X = np.asarray(X, dtype=np.longdouble)
    w = np.asarray(w, dtype=np.longdouble)
    W = w.sum()
    mean = (w @ X) / W
    den = W - (w @ w) / W
    var = (w @ (X - mean) ** 2) / den if den > 0 else np.zeros(X.shape[1])
    return mean.astype(float), np.maximum(var, 0).astype(float)


@PROPS
@given(
    cases(zero_weights=True, scale=(-3, 3)),
    st.lists(st.integers(0, 40), min_size=0, max_size=6),
    st.booleans(),
)
def test_stats_over_random_partitions_equal_numpy(c, cut_rows, sparse):
    """block_stats per block + combine_partitions over any partitioning (empty partitions and
    blocks included) == numpy's weighted moments of the whole."""
    X, y, w = c["X"], c["y"], c["w"]
    n, d = X.shape
    bounds = sorted({0, n} | {min(r, n) for r in cut_rows})
    # every second cut starts a new partition, the others a new block in the same partition
    partitions, current = [], []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        Xb = sp.csr_matrix(X[a:b]) if sparse else np.ascontiguousarray(X[a:b])
        current.append(block_stats(Xb, y[a:b], w[a:b]))
        if i % 2:
            partitions.append(current)
            current = []
    partitions.append(current)
    partitions.append([])  # an empty partition
    s = combine_partitions(partitions, n_features=d)

    assert (s.n_rows, s.n_features, s.num_partitions) == (n, d, len(partitions))
    assert s.n_nonempty_partitions == sum(1 for p in partitions if sum(b.n_rows for b in p))
    assert s.weight_sum == pytest.approx(w.sum(), rel=1e-13)
    np.testing.assert_array_equal(s.feature_nonzero, np.count_nonzero(X, axis=0))
    np.testing.assert_array_equal(s.feature_min, X.min(axis=0))
    np.testing.assert_array_equal(s.feature_max, X.max(axis=0))
    assert (s.label_min, s.label_max) == (y.min(), y.max())
    assert s.n_zero_weights == int(np.count_nonzero(w == 0))
    if w.sum() > 0:
        mean, var = _ref_moments(X, w)
        scale = np.abs(X).max(axis=0, initial=0.0)
        # per column: relative to the value, or to the column's magnitude when the moment is ~0
        assert np.all(np.abs(s.feature_mean - mean) <= 1e-12 * np.abs(mean) + 1e-13 * scale)
        assert np.all(np.abs(s.feature_var - var) <= 1e-10 * var + 1e-12 * scale**2)
        lm, lv = _ref_moments(y[:, None], w)
        assert s.label_mean == pytest.approx(lm[0], rel=1e-12, abs=1e-13 * np.abs(y).max())
        assert s.label_var == pytest.approx(lv[0], rel=1e-10, abs=1e-12 * np.abs(y).max() ** 2)
