"""Unit tests of sparkopt.objectives (no Spark).

Derivatives are checked against central finite differences with tolerances that a wrong
formula cannot pass (see test_fd_tolerance_rejects_small_errors); full objectives are checked
against scikit-learn optima; numerics at huge margins; layout; the penalty and its prox.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse as sp

from sparkopt.blocks import Block
from sparkopt.objectives import LOSSES, ElasticNet, make_block_objective
from sparkopt.objectives import losses as L

K = 3  # classes for multinomial tests
EPS = 1.35

# Central differences: error ~ h^2 f''' + ulp(f)/h. With O(1)-scaled data and h = 1e-6 (on the
# loss) / 1e-5 (on the gradient) both terms stay below ~1e-8 relative; a formula that is wrong by
# even 1e-5 relative fails these tolerances (checked by test_fd_tolerance_rejects_small_errors).
FD_RTOL = 1e-7
H_GRAD = 1e-6
H_HESS = 1e-5


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


def _kink_distance(loss, obj, coef, X, y):
    """Per-row distance of the current point to a loss kink (inf for smooth-everywhere losses)."""
    if loss in ("hinge", "squared_hinge"):
        s = 2 * y - 1
        return np.abs(1 - s * obj.margins(coef, X))
    if loss == "huber":
        _, _, sigma = obj.split(coef)
        return np.abs(np.abs(y - obj.margins(coef, X)) - EPS * sigma)
    return np.full(X.shape[0], np.inf)


def make_problem(loss, fit_intercept, weighted, seed=0, n=60, d=5):
    """(objective, dense Block, CSR Block with the same data, coef) with the test point ``coef``
    at least 1e-2 (in margin units) away from every kink, so finite differences are valid."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[rng.random((n, d)) < 0.4] = 0.0  # real zeros, so CSR actually skips entries
    b = rng.normal(scale=0.5, size=d)
    m = X @ b + 0.3
    if loss == "squared_error":
        y = m + rng.normal(size=n)
    elif loss == "huber":
        y = m + rng.standard_t(df=1.5, size=n)  # heavy tails: both Huber branches occur
    elif loss in ("logistic", "hinge", "squared_hinge"):
        y = (rng.random(n) < 1 / (1 + np.exp(-m))).astype(float)
    elif loss == "poisson":
        y = rng.poisson(np.exp(0.5 * m)).astype(float)
    elif loss == "multinomial":
        y = rng.integers(0, K, size=n).astype(float)
    else:
        raise AssertionError(loss)
    w = rng.uniform(0.2, 3.0, size=n) if weighted else np.ones(n)
    obj = make_block_objective(loss, d, fit_intercept, n_classes=K, epsilon=EPS)
    coef = rng.normal(scale=0.4, size=obj.n_params)
    if loss == "huber":
        coef[-1] = 0.8
    keep = np.flatnonzero(_kink_distance(loss, obj, coef, X, y) > 1e-2)
    X, y, w = np.ascontiguousarray(X[keep]), y[keep], w[keep]
    return obj, Block(X, y, w), Block(sp.csr_matrix(X), y, w), coef


def fd_grad(f, x, h=H_GRAD):
    g = np.empty_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        g[j] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def fd_jac(g, x, h=H_HESS):
    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        cols.append((g(x + e) - g(x - e)) / (2 * h))
    return np.column_stack(cols)


def rel_err(a, b):
    return np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b)))


ALL = pytest.mark.parametrize("loss", LOSSES)
INTERCEPT = pytest.mark.parametrize("fit_intercept", [True, False], ids=["icpt", "noicpt"])
WEIGHTED = pytest.mark.parametrize("weighted", [False, True], ids=["unitw", "randw"])
STORAGE = pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])


# ----------------------------------------------------------------------------------------------
# derivatives vs finite differences
# ----------------------------------------------------------------------------------------------


@ALL
@INTERCEPT
@WEIGHTED
@STORAGE
def test_gradient_matches_finite_differences(loss, fit_intercept, weighted, sparse):
    obj, dense, csr, coef = make_problem(loss, fit_intercept, weighted)
    block = csr if sparse else dense
    f, g = obj.loss_grad(coef, block)
    assert f == pytest.approx(obj.loss_sum(coef, block), rel=1e-14)
    g_fd = fd_grad(lambda x: obj.loss_sum(x, block), coef)
    assert g.shape == (obj.n_params,)
    assert rel_err(g, g_fd) < FD_RTOL, (g, g_fd)


@ALL
@INTERCEPT
@WEIGHTED
@STORAGE
def test_hessian_and_hessp_match_finite_differences(loss, fit_intercept, weighted, sparse):
    obj, dense, csr, coef = make_problem(loss, fit_intercept, weighted)
    block = csr if sparse else dense
    p = obj.n_params
    H = obj.hess(coef, block)
    assert H.shape == (p, p)
    V = np.random.default_rng(1).normal(size=(p, 3))
    if loss == "hinge":  # piecewise linear: generalized Hessian is zero
        assert obj.smooth is False and obj.has_hessian is False
        assert not H.any() and not obj.hessp(coef, block, V).any()
        assert obj.hessp(coef, block, V[:, 0]).shape == (p,)
        return
    H_fd = fd_jac(lambda x: obj.loss_grad(x, block)[1], coef)
    assert rel_err(H, H_fd) < FD_RTOL, np.max(np.abs(H - H_fd))
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-12 * np.abs(H).max())

    # Hessian-vector products: one vector, three at once, against hess and against a
    # directional finite difference of the gradient (independent of hess).
    HV = obj.hessp(coef, block, V)
    assert HV.shape == (p, 3)
    np.testing.assert_allclose(HV, H @ V, rtol=1e-12, atol=1e-12 * np.abs(H @ V).max())
    for j in range(3):
        hv = obj.hessp(coef, block, V[:, j])
        assert hv.shape == (p,)
        np.testing.assert_allclose(hv, HV[:, j], rtol=1e-13, atol=1e-13 * np.abs(hv).max())
        grad = lambda x: obj.loss_grad(x, block)[1]  # noqa: E731
        hv_fd = (grad(coef + H_HESS * V[:, j]) - grad(coef - H_HESS * V[:, j])) / (2 * H_HESS)
        assert rel_err(hv, hv_fd) < FD_RTOL


@ALL
@INTERCEPT
@WEIGHTED
def test_dense_and_csr_agree(loss, fit_intercept, weighted):
    obj, dense, csr, coef = make_problem(loss, fit_intercept, weighted, seed=3)
    V = np.random.default_rng(2).normal(size=(obj.n_params, 3))

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * max(1.0, np.max(np.abs(b))))

    close(obj.margins(coef, dense.X), obj.margins(coef, csr.X))
    fd_, gd = obj.loss_grad(coef, dense)
    fs, gs = obj.loss_grad(coef, csr)
    close(fd_, fs)
    close(gd, gs)
    close(obj.hessp(coef, dense, V), obj.hessp(coef, csr, V))
    close(obj.hessp(coef, dense, V[:, 0]), obj.hessp(coef, csr, V[:, 0]))
    close(obj.hess(coef, dense), obj.hess(coef, csr))


@pytest.mark.parametrize("loss", ["logistic", "squared_error", "multinomial", "huber"])
def test_csr_hessian_with_nearly_full_columns_equals_the_dense_one(loss):
    """A CSR block whose few nearly full columns the Hessian takes as a dense side matrix (and
    the rest as sparse products): the same matrix as the dense block's, on every call (cached
    split), and the split really happens."""
    from sparkopt.objectives.linear import _column_split, dense_columns

    rng = np.random.default_rng(11)
    n, d = 400, 12
    dense_part = rng.normal(size=(n, 3)) * np.array([1e3, 1.0, 5.0])         # counts, flags, ...
    rare = rng.normal(size=(n, d - 3)) * (rng.random((n, d - 3)) < 0.08)      # one-hot-like, rare
    X = np.hstack([rare[:, :4], dense_part, rare[:, 4:]])
    X[rng.random(n) < 0.3, 5] = 0.0                                           # 70% full: still dense
    K_ = K if loss == "multinomial" else 2
    y = rng.integers(0, K_, n).astype(float) if loss in ("logistic", "multinomial") else rng.normal(size=n)
    w = rng.random(n) + 0.5
    obj = make_block_objective(loss, d, True, n_classes=K_)
    dense, csr = Block(X, y, w), Block(sp.csr_matrix(X), y, w)
    coef = obj.initial_coef() + rng.normal(size=obj.n_params) * 1e-3
    assert list(dense_columns(csr.X)) == [4, 5, 6] and _column_split(csr.X) is not None
    want = obj.hess(coef, dense)
    for _ in range(2):
        np.testing.assert_allclose(obj.hess(coef, csr), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_dense_gram_with_negative_weights_is_exact():
    """The symmetric rank-k update needs weights >= 0; other weights take the GEMM."""
    from sparkopt.objectives.linear import _dense_gram

    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 6))
    for D in (rng.random(50), rng.normal(size=50), None):
        want = X.T @ X if D is None else X.T @ (X * D[:, None])
        got = _dense_gram(X, D)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13 * np.abs(want).max())
        if D is None or np.all(D >= 0):
            assert np.array_equal(got, got.T)              # the rank-k update mirrors one triangle


@ALL
@STORAGE
def test_block_sums_are_additive(loss, sparse):
    """Partitions combine by addition: two halves sum to the whole (the engine relies on it)."""
    obj, dense, csr, coef = make_problem(loss, True, True, seed=5)
    block = csr if sparse else dense
    n = block.n_rows
    a, b = block.take(np.arange(n // 3)), block.take(np.arange(n // 3, n))
    V = np.random.default_rng(0).normal(size=(obj.n_params, 2))
    fa, ga = obj.loss_grad(coef, a)
    fb, gb = obj.loss_grad(coef, b)
    f, g = obj.loss_grad(coef, block)
    assert fa + fb == pytest.approx(f, rel=1e-13)
    np.testing.assert_allclose(ga + gb, g, rtol=1e-12, atol=1e-12 * np.abs(g).max())
    np.testing.assert_allclose(
        obj.hessp(coef, a, V) + obj.hessp(coef, b, V), obj.hessp(coef, block, V),
        rtol=1e-12, atol=1e-12 * max(1.0, np.abs(obj.hessp(coef, block, V)).max()),
    )


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge", "huber"])
def test_fd_problems_exercise_both_branches(loss):
    """The derivative checks above cover both sides of every kink, not just one branch."""
    for fit_intercept in (True, False):
        obj, dense, _, coef = make_problem(loss, fit_intercept, True)
        m, y = obj.margins(coef, dense.X), dense.y
        if loss == "huber":
            flat = np.abs(y - m) > EPS * obj.split(coef)[2]
        else:
            flat = (2 * y - 1) * m > 1
        assert 5 <= flat.sum() <= len(y) - 5


def test_fd_tolerance_rejects_small_errors():
    """The FD tolerance resolves a 1e-5 relative error in a gradient or Hessian, so the checks
    above would fail on any wrong factor, sign or missing term."""
    obj, dense, _, coef = make_problem("logistic", True, True)
    f = lambda x: obj.loss_sum(x, dense)  # noqa: E731
    g = obj.loss_grad(coef, dense)[1]
    g_fd = fd_grad(f, coef)
    assert rel_err(g, g_fd) < FD_RTOL
    assert rel_err(g * (1 + 1e-5), g_fd) > FD_RTOL
    H = obj.hess(coef, dense)
    H_fd = fd_jac(lambda x: obj.loss_grad(x, dense)[1], coef)
    assert rel_err(H * (1 + 1e-5), H_fd) > FD_RTOL


def test_multinomial_hessian_is_jacobian_of_gradient_more_classes():
    rng = np.random.default_rng(7)
    n, d, k = 80, 4, 5
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n).astype(float)
    w = rng.uniform(0.5, 2, size=n)
    obj = make_block_objective("multinomial", d, True, n_classes=k)
    coef = rng.normal(scale=0.5, size=obj.n_params)
    for block in (Block(X, y, w), Block(sp.csr_matrix(X), y, w)):
        H = obj.hess(coef, block)
        H_fd = fd_jac(lambda x: obj.loss_grad(x, block)[1], coef)
        assert H.shape == (k * (d + 1), k * (d + 1))
        assert rel_err(H, H_fd) < FD_RTOL
        # Softmax is shift-invariant across classes: adding the same vector to every class's
        # parameters changes nothing, so that direction is in the Hessian's null space.
        shift = np.tile(rng.normal(size=d + 1), k)
        np.testing.assert_allclose(H @ shift, 0, atol=1e-12 * np.abs(H).max())


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_multinomial_csr_with_many_classes_sums_as_the_per_class_products(fit_intercept, monkeypatch):
    """Many classes on CSR: one product with X.T as CSR (TRANSPOSED_PRODUCT_CLASSES) gives the
    per-class products' sums bit for bit, and the dense block's to rounding."""
    from sparkopt.objectives.linear import MultinomialBlockObjective

    rng = np.random.default_rng(9)
    n, d, k = 150, 40, 12
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.15)
    y = rng.integers(0, k, size=n).astype(float)
    w = rng.uniform(0.5, 2, size=n)
    obj = make_block_objective("multinomial", d, fit_intercept, n_classes=k)
    coef = rng.normal(scale=0.3, size=obj.n_params)
    V = rng.normal(size=(obj.n_params, 3))
    csr = Block(sp.csr_matrix(X), y, w)
    assert k >= MultinomialBlockObjective.TRANSPOSED_PRODUCT_CLASSES
    f, g = obj.loss_grad(coef, csr)
    HV = obj.hessp(coef, csr, V)
    monkeypatch.setattr(MultinomialBlockObjective, "TRANSPOSED_PRODUCT_CLASSES", k + 1)   # per-class products
    f_per_class, g_per_class = obj.loss_grad(coef, csr)
    assert f == f_per_class
    np.testing.assert_array_equal(g, g_per_class)
    np.testing.assert_array_equal(HV, obj.hessp(coef, csr, V))
    f_dense, g_dense = obj.loss_grad(coef, Block(X, y, w))
    assert f == pytest.approx(f_dense, rel=1e-13)
    np.testing.assert_allclose(g, g_dense, rtol=1e-12, atol=1e-13 * np.abs(g).max())


def test_huber_matches_spark_reference_loop():
    """Row-by-row transcription of Spark's HuberAggregator.add (loss, coefficient gradient,
    intercept gradient, sigma gradient), against the vectorized objective."""
    obj, dense, _, coef = make_problem("huber", True, True, seed=11)
    X, y, w = dense.X, dense.y, dense.w
    d = obj.n_features
    beta, c, sigma = coef[:d], coef[d], coef[-1]
    loss, grad = 0.0, np.zeros(obj.n_params)
    inside_rows = 0
    for i in range(X.shape[0]):
        r = y[i] - (X[i] @ beta + c)
        if abs(r) <= sigma * EPS:
            inside_rows += 1
            loss += 0.5 * w[i] * (sigma + r**2 / sigma)
            mult = -w[i] * r / sigma
            grad[-1] += 0.5 * w[i] * (1 - (r / sigma) ** 2)
        else:
            loss += 0.5 * w[i] * (sigma + 2 * EPS * abs(r) - sigma * EPS * EPS)
            mult = w[i] * (-1.0 if r >= 0 else 1.0) * EPS
            grad[-1] += 0.5 * w[i] * (1 - EPS * EPS)
        grad[:d] += mult * X[i]
        grad[d] += mult
    assert 0 < inside_rows < X.shape[0]  # both branches exercised
    f, g = obj.loss_grad(coef, dense)
    assert f == pytest.approx(loss, rel=1e-13)
    np.testing.assert_allclose(g, grad, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# layout, construction, empty blocks
# ----------------------------------------------------------------------------------------------


@INTERCEPT
def test_layout(fit_intercept):
    d, fi = 4, int(fit_intercept)
    for loss in ("squared_error", "logistic", "poisson", "hinge", "squared_hinge"):
        obj = make_block_objective(loss, d, fit_intercept)
        assert (obj.loss, obj.n_features, obj.fit_intercept, obj.n_classes) == (
            loss, d, fit_intercept, 1)
        assert obj.n_params == d + fi
        assert obj.penalized_mask().tolist() == [True] * d + [False] * fi
        np.testing.assert_array_equal(obj.initial_coef(), np.zeros(d + fi))
        coef = np.arange(1.0, d + fi + 1)
        beta, c = obj.split(coef)
        np.testing.assert_array_equal(beta, coef[:d])
        assert c == (coef[d] if fit_intercept else 0.0)
        assert obj.smooth == (loss != "hinge") and obj.has_hessian == (loss != "hinge")

    hub = make_block_objective("huber", d, fit_intercept, epsilon=1.5)
    assert hub.epsilon == 1.5 and hub.n_params == d + fi + 1
    assert hub.penalized_mask().tolist() == [True] * d + [False] * (fi + 1)
    np.testing.assert_array_equal(hub.initial_coef(), [0.0] * (d + fi) + [1.0])
    beta, c, sigma = hub.split(np.arange(1.0, d + fi + 2))
    assert sigma == d + fi + 1 and c == (d + 1 if fit_intercept else 0.0)
    assert hub.lower_bounds()[-1] > 0 and np.all(np.isneginf(hub.lower_bounds()[:-1]))

    mn = make_block_objective("multinomial", d, fit_intercept, n_classes=K)
    assert mn.n_classes == K and mn.n_params == K * (d + fi)
    assert mn.penalized_mask().tolist() == ([True] * d + [False] * fi) * K
    coef = np.arange(float(mn.n_params))
    B, c = mn.split(coef)
    np.testing.assert_array_equal(B, coef.reshape(K, d + fi)[:, :d])
    np.testing.assert_array_equal(c, coef.reshape(K, d + fi)[:, d] if fit_intercept else 0.0)
    X = np.random.default_rng(0).normal(size=(6, d))
    np.testing.assert_allclose(mn.margins(coef, X), X @ B.T + c, rtol=1e-15)


def test_construction_errors():
    with pytest.raises(ValueError, match="'absolute'"):
        make_block_objective("absolute", 3, True)
    with pytest.raises(ValueError, match="n_classes"):
        make_block_objective("multinomial", 3, True, n_classes=1)
    with pytest.raises(ValueError, match="epsilon"):
        make_block_objective("huber", 3, True, epsilon=1.0)
    obj = make_block_objective("logistic", 3, True)
    with pytest.raises(ValueError, match="shape"):
        obj.loss_sum(np.zeros(3), Block(np.zeros((2, 3)), np.zeros(2), np.ones(2)))
    with pytest.raises(ValueError, match="features"):
        obj.loss_sum(np.zeros(4), Block(np.zeros((2, 5)), np.zeros(2), np.ones(2)))
    mn = make_block_objective("multinomial", 2, False, n_classes=3)
    for bad in (3.0, -1.0, 0.5):
        with pytest.raises(ValueError, match="labels"):
            mn.loss_sum(np.zeros(6), Block(np.ones((2, 2)), np.array([0.0, bad]), np.ones(2)))


@ALL
@INTERCEPT
@STORAGE
def test_empty_block(loss, fit_intercept, sparse):
    obj = make_block_objective(loss, 4, fit_intercept, n_classes=K)
    X = sp.csr_matrix((0, 4)) if sparse else np.zeros((0, 4))
    block = Block(X, np.zeros(0), np.zeros(0))
    coef = obj.initial_coef() + 0.1
    p = obj.n_params
    assert obj.loss_sum(coef, block) == 0.0
    f, g = obj.loss_grad(coef, block)
    assert f == 0.0 and g.shape == (p,) and not g.any()
    assert obj.hessp(coef, block, np.ones(p)).shape == (p,)
    assert not obj.hessp(coef, block, np.ones((p, 2))).any()
    H = obj.hess(coef, block)
    assert H.shape == (p, p) and not H.any()
    assert obj.loss_constant_sum(block) == 0.0


def test_huber_nonpositive_sigma_is_infinite():
    obj, dense, _, coef = make_problem("huber", True, False)
    coef = coef.copy()
    coef[-1] = 0.0
    assert obj.loss_sum(coef, dense) == np.inf
    f, g = obj.loss_grad(coef, dense)
    assert f == np.inf and np.isnan(g).all()


def test_hessp_huge_sparse_dimension():
    """hessp on d = 2e6 sparse features: O(nnz + d) work, never a d x d matrix."""
    rng = np.random.default_rng(0)
    n, d, per_row = 200, 2_000_000, 5
    # Built from indices directly: sp.random's sampler is slow at this d.
    cols = rng.integers(0, d, size=(n, per_row))
    cols.sort(axis=1)
    X = sp.csr_matrix((rng.normal(size=n * per_row), cols.ravel(),
                       np.arange(0, n * per_row + 1, per_row)), shape=(n, d))
    y = (rng.random(n) < 0.5).astype(float)
    block = Block(X, y, np.ones(n))
    for loss in ("logistic", "huber", "multinomial"):
        obj = make_block_objective(loss, d, True, n_classes=K)
        coef = obj.initial_coef()
        V = rng.normal(size=(obj.n_params, 2))
        HV = obj.hessp(coef, block, V)
        assert HV.shape == V.shape and np.isfinite(HV).all()


# ----------------------------------------------------------------------------------------------
# numerics at huge margins
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [1e3, -1e3, 1e300, -1e300])
@pytest.mark.parametrize("fn", [L.logistic, L.poisson, L.hinge], ids=lambda f: f.__name__)
def test_pointwise_finite_at_huge_margins(fn, m):
    y = np.array([0.0, 1.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        t = fn(y, np.full(2, m))
    for a in t:
        assert np.isfinite(a).all()


def test_logistic_asymptotics():
    y0, y1 = np.array([0.0]), np.array([1.0])
    for m in (1e3, 1e300):
        assert L.logistic(y0, [m]).value[0] == m  # log(1 + e^m) -> m
        assert L.logistic(y1, [-m]).value[0] == m
        assert L.logistic(y1, [m]).value[0] == 0.0
        assert L.logistic(y0, [m]).d1[0] == 1.0 and L.logistic(y1, [-m]).d1[0] == -1.0
        assert L.logistic(y0, [m]).d2[0] == 0.0
    # A well-classified row keeps its small loss to full relative precision (no 1 + tiny).
    t = L.logistic(y1, [40.0])
    assert t.value[0] == pytest.approx(np.exp(-40.0), rel=1e-14)
    assert t.d1[0] == pytest.approx(-np.exp(-40.0), rel=1e-14)
    assert t.d2[0] == pytest.approx(np.exp(-40.0), rel=1e-14)
    assert L.softplus([-50.0])[0] == pytest.approx(np.exp(-50.0), rel=1e-14)
    assert L.softplus([1e300])[0] == 1e300
    # Fractional labels: log(1+e^m) - y m.
    yy, mm = np.array([0.3, 0.7]), np.array([2.0, -1.5])
    np.testing.assert_allclose(L.logistic(yy, mm).value, np.log1p(np.exp(mm)) - yy * mm,
                               rtol=1e-15)


def test_poisson_numerics_and_constant():
    y = np.array([0.0, 3.0])
    t = L.poisson(y, np.array([1e3, 1e3]))
    assert np.all(np.isfinite(t.value)) and t.value[0] > 1e300
    t = L.poisson(y, np.array([-1e3, -1e3]))
    np.testing.assert_allclose(t.value, [0.0, 3e3])
    np.testing.assert_allclose(L.poisson_constant(np.array([0.0, 1.0, 2.0])),
                               [0.0, -1.0, 2 * np.log(2) - 2], rtol=1e-15)
    # loss + constant is half the unit deviance; its minimum over m (at mu = y) is 0.
    yy = np.array([0.0, 1.0, 4.0])
    mm = np.log(np.maximum(yy, 1e-300))
    half_dev = L.poisson(yy, mm).value + L.poisson_constant(yy)
    np.testing.assert_allclose(half_dev, 0.0, atol=1e-12)


def test_poisson_deviance_matches_sklearn():
    from sklearn.metrics import mean_poisson_deviance

    obj, dense, _, coef = make_problem("poisson", True, True, seed=4)
    mu = np.exp(obj.margins(coef, dense.X))
    dev = 2 * (obj.loss_sum(coef, dense) + obj.loss_constant_sum(dense)) / dense.w.sum()
    ref = mean_poisson_deviance(dense.y, mu, sample_weight=dense.w)
    assert dev == pytest.approx(ref, rel=1e-12)


def test_squared_losses_and_huber_at_huge_margins():
    y = np.array([0.0, 1.0])
    t = L.squared_error(y, np.full(2, 1e3))
    np.testing.assert_allclose(t.value, [5e5, 0.5 * 999.0**2])
    # The true value 5e599 is beyond float range: +inf, never NaN.
    with np.errstate(over="ignore"):
        assert np.isposinf(L.squared_error(y, np.full(2, 1e300)).value).all()
        assert np.isposinf(L.squared_hinge(y, np.array([1e300, -1e300])).value).all()
    np.testing.assert_allclose(L.squared_hinge(y, np.array([1e3, 1e3])).value, [1001.0**2, 0.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        h = L.huber(y, np.array([1e300, -1e3]), sigma=1e-3, epsilon=EPS)
    assert all(np.isfinite(a).all() for a in h)
    assert h.value[0] == pytest.approx(EPS * 1e300)  # 0.5 * 2 * eps * |r|
    assert h.d_m.tolist() == [EPS, -EPS]


def test_multinomial_huge_margins():
    M = np.array([[1e3, -1e3, 0.0], [1e300, -1e300, 0.0], [5.0, 5.0, 5.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        t = L.multinomial(np.array([1, 0, 2]), M)
    assert np.isfinite(t.value).all() and np.isfinite(t.grad).all()
    np.testing.assert_allclose(t.value, [2e3, 0.0, np.log(3)], rtol=1e-15)
    np.testing.assert_allclose(t.prob.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(t.grad[2], [1 / 3, 1 / 3, -2 / 3], rtol=1e-15)


def test_block_objective_finite_at_huge_coefficients():
    obj, dense, csr, coef = make_problem("logistic", True, False)
    big = coef * 1e300 / np.abs(coef).max()
    f, g = obj.loss_grad(big, csr)
    assert np.isfinite(f) and np.isfinite(g).all()
    assert np.isfinite(obj.hess(big, dense)).all()


# ----------------------------------------------------------------------------------------------
# penalties
# ----------------------------------------------------------------------------------------------


def _penalty(alpha=0.3, lam=0.7, seed=0, p=6):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 2.0, size=p)
    scale[-1] = 0.0  # an unpenalized coordinate (intercept)
    return ElasticNet(lam, alpha, scale), scale, rng.normal(size=p)


def test_elastic_net_values():
    pen, s, x = _penalty()
    lam, a = 0.7, 0.3
    assert pen.l1_value(x) == pytest.approx(lam * a * np.sum(s * np.abs(x)), rel=1e-15)
    assert pen.smooth_value(x) == pytest.approx(lam * (1 - a) / 2 * np.sum((s * x) ** 2),
                                                rel=1e-15)
    assert pen.value(x) == pytest.approx(pen.l1_value(x) + pen.smooth_value(x), rel=1e-15)
    np.testing.assert_allclose(pen.l1_weights(), lam * a * s, rtol=1e-15)
    np.testing.assert_allclose(pen.smooth_hess_diag(), lam * (1 - a) * s**2, rtol=1e-15)
    assert pen.l1_weights()[-1] == 0 and pen.smooth_grad(x)[-1] == 0
    # Hand-computed: lam=2, alpha=0.5, s=(1,2): 2*(0.5*(1*1 + 2*3) + 0.25*(1 + 36)) = 25.5
    assert ElasticNet(2.0, 0.5, [1.0, 2.0]).value([-1.0, 3.0]) == pytest.approx(25.5)
    assert ElasticNet(0.0, 0.5, np.ones(3)).is_zero
    assert not ElasticNet(1.0, 0.0, np.ones(3)).has_l1


def test_elastic_net_smooth_derivatives():
    pen, _, x = _penalty()
    g_fd = fd_grad(pen.smooth_value, x)
    assert rel_err(pen.smooth_grad(x), g_fd) < FD_RTOL
    H_fd = fd_jac(pen.smooth_grad, x)
    np.testing.assert_allclose(np.diag(pen.smooth_hess_diag()), H_fd, atol=1e-8)
    V = np.random.default_rng(1).normal(size=(x.size, 3))
    np.testing.assert_allclose(pen.smooth_hessp(x, V), H_fd @ V, atol=1e-8)
    np.testing.assert_allclose(pen.smooth_hessp(x, V[:, 0]), pen.smooth_hessp(x, V)[:, 0],
                               rtol=1e-15)


@pytest.mark.parametrize("step", [0.05, 0.5, 3.0])
def test_prox_matches_brute_force(step):
    pen, _, x = _penalty(seed=2)
    x = x * 2
    z = pen.prox_l1(x, step)
    t = step * pen.l1_weights()
    z_full = pen.prox(x, step)
    d = pen.smooth_hess_diag()
    for j in range(x.size):
        # Separable problems solved numerically, one coordinate at a time.
        obj_l1 = lambda u: 0.5 * (u - x[j]) ** 2 + t[j] * abs(u)  # noqa: E731
        obj_full = lambda u: obj_l1(u) + step * 0.5 * d[j] * u**2  # noqa: E731
        for fun, ours in ((obj_l1, z[j]), (obj_full, z_full[j])):
            ref = so.minimize_scalar(fun, bounds=(-10, 10), method="bounded",
                                     options={"xatol": 1e-12}).x
            assert ours == pytest.approx(ref, abs=1e-7)
            assert fun(ours) <= fun(ref) + 1e-14
        # Exact optimality: zero iff |x| <= t, else the subgradient condition holds exactly.
        if abs(x[j]) <= t[j]:
            assert z[j] == 0.0
        else:
            assert z[j] - x[j] + t[j] * np.sign(z[j]) == pytest.approx(0.0, abs=1e-15)
    # Per-coordinate step sizes.
    steps = np.linspace(0.1, 1.0, x.size)
    np.testing.assert_allclose(
        pen.prox_l1(x, steps), np.sign(x) * np.maximum(np.abs(x) - steps * pen.l1_weights(), 0)
    )


def test_elastic_net_validation():
    for bad in (-0.1, np.nan, np.inf):
        with pytest.raises(ValueError, match="regParam"):
            ElasticNet(bad, 0.5, np.ones(2))
    for bad in (-0.01, 1.01, np.nan):
        with pytest.raises(ValueError, match="elasticNetParam"):
            ElasticNet(0.1, bad, np.ones(2))
    with pytest.raises(ValueError, match="scale"):
        ElasticNet(0.1, 0.5, np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="shape"):
        ElasticNet(0.1, 0.5, np.ones(2)).value(np.ones(3))
    ElasticNet(0.0, 0.0, np.ones(2))  # boundaries are valid
    ElasticNet(1.0, 1.0, np.ones(2))


# ----------------------------------------------------------------------------------------------
# full objective against independent references (scikit-learn)
# ----------------------------------------------------------------------------------------------


def _fit(obj, pen, block, bounds=None):
    """argmin of loss_sum / sum(w) + pen.value (smooth penalties only)."""
    W = block.w.sum()

    def fg(x):
        f, g = obj.loss_grad(x, block)
        return f / W + pen.value(x), g / W + pen.smooth_grad(x)

    if bounds is None and obj.has_hessian:
        # Newton with the exact Hessian: converges to machine precision.
        res = so.minimize(fg, obj.initial_coef(), jac=True, method="trust-exact",
                          hess=lambda x: obj.hess(x, block) / W + np.diag(pen.smooth_hess_diag()),
                          options={"gtol": 1e-13})
    else:
        res = so.minimize(fg, obj.initial_coef(), jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 10_000,
                                   "maxcor": 30})
        if obj.has_hessian:
            # L-BFGS-B can stop with gradients ~1e-8 (seen with scipy 1.17 on the Huber case);
            # the bounds are inactive at an interior optimum, so a few exact-Hessian
            # trust-region steps finish the job to machine precision.
            res = so.minimize(fg, res.x, jac=True, method="trust-exact",
                              hess=lambda x: obj.hess(x, block) / W + np.diag(pen.smooth_hess_diag()),
                              options={"gtol": 1e-13})
    return res.x


def _real_like(n=300, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d)
    X[rng.random((n, d)) < 0.3] = 0.0
    return rng, np.ascontiguousarray(X)


def test_logistic_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng, X = _real_like()
    n, d = X.shape
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ rng.normal(size=d) + 0.5)))).astype(float)
    w = rng.uniform(0.5, 2.0, size=n)
    lam = 0.05
    obj = make_block_objective("logistic", d, True)
    pen = ElasticNet(lam, 0.0, obj.penalized_mask().astype(float))
    ours = _fit(obj, pen, Block(sp.csr_matrix(X), y, w))
    # sklearn: C * sum_i w_i loss_i + |b|^2 / 2  ==  (W C) * [our objective] with C = 1/(W lam).
    ref = LogisticRegression(C=1 / (w.sum() * lam), solver="newton-cholesky", tol=1e-14,
                             max_iter=1000).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(ours, np.r_[ref.coef_.ravel(), ref.intercept_], rtol=0, atol=1e-7)


def test_multinomial_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng, X = _real_like(seed=1)
    n, d = X.shape
    y = np.argmax(X @ rng.normal(size=(d, K)) + rng.gumbel(size=(n, K)), axis=1).astype(float)
    w = rng.uniform(0.5, 2.0, size=n)
    lam = 0.02
    obj = make_block_objective("multinomial", d, True, n_classes=K)
    pen = ElasticNet(lam, 0.0, obj.penalized_mask().astype(float))
    ours = _fit(obj, pen, Block(X, y, w))
    ref = LogisticRegression(C=1 / (w.sum() * lam), solver="newton-cholesky", tol=1e-14,
                             max_iter=1000).fit(X, y, sample_weight=w)
    B, c = obj.split(ours)
    # The L2 penalty pins the class-shift freedom of the betas; intercepts are unpenalized, so
    # both fits center them only up to a common shift: compare centered intercepts.
    np.testing.assert_allclose(B, ref.coef_, rtol=0, atol=1e-7)
    np.testing.assert_allclose(c - c.mean(), ref.intercept_ - ref.intercept_.mean(), atol=1e-7)


def test_poisson_matches_sklearn():
    from sklearn.linear_model import PoissonRegressor

    rng, X = _real_like(seed=2)
    n, d = X.shape
    y = rng.poisson(np.exp(0.15 * X @ rng.normal(size=d) + 0.2)).astype(float)
    w = rng.uniform(0.5, 2.0, size=n)
    lam = 0.03
    obj = make_block_objective("poisson", d, True)
    pen = ElasticNet(lam, 0.0, obj.penalized_mask().astype(float))
    ours = _fit(obj, pen, Block(X, y, w))
    ref = PoissonRegressor(alpha=lam, solver="newton-cholesky", tol=1e-14,
                           max_iter=1000).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(ours, np.r_[ref.coef_, ref.intercept_], rtol=0, atol=1e-7)


def test_huber_matches_sklearn():
    """sklearn's HuberRegressor minimizes sum_i w_i (sigma + H(r_i/sigma) sigma) + a |b|^2, which
    is 2 W times ours (0.5 * (...) per row, / W, + lam/2 |b|^2) when a = W lam."""
    from sklearn.linear_model import HuberRegressor

    rng, X = _real_like(seed=3)
    n, d = X.shape
    y = X @ rng.normal(size=d) + 1.0 + rng.standard_t(df=2, size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    lam = 0.01
    obj = make_block_objective("huber", d, True, epsilon=EPS)
    pen = ElasticNet(lam, 0.0, obj.penalized_mask().astype(float))
    bounds = list(zip(obj.lower_bounds(), np.full(obj.n_params, np.inf)))
    ours = _fit(obj, pen, Block(sp.csr_matrix(X), y, w), bounds=bounds)
    ref = HuberRegressor(epsilon=EPS, alpha=w.sum() * lam, tol=1e-13,
                         max_iter=10_000).fit(X, y, sample_weight=w)
    ref_x = np.r_[ref.coef_, ref.intercept_, ref.scale_]
    # sklearn's L-BFGS-B keeps scipy's default ftol (~2e-9 relative change in f), so it stops
    # with x accurate to ~sqrt(ftol) ~ 1e-5, whatever `tol`; ours is converged to ~1e-10. So:
    # agreement to 1e-4, and ours is at least as good on the shared objective.
    np.testing.assert_allclose(ours, ref_x, rtol=0, atol=1e-4)
    block = Block(X, y, w)
    total = lambda x: obj.loss_sum(x, block) / w.sum() + pen.value(x)  # noqa: E731
    assert total(ours) <= total(ref_x) + 1e-15
    g = obj.loss_grad(ours, block)[1] / w.sum() + pen.smooth_grad(ours)
    assert np.abs(g).max() < 1e-8


@ALL
@pytest.mark.parametrize("offset", [False, True])
def test_a_large_dense_block_is_summed_in_row_slices_equal_to_the_whole(loss, offset, monkeypatch):
    """loss_grad over row slices (here 7 rows, as a large block's of ROW_SLICE_BYTES) equals the
    whole block's evaluation, offsets sliced with their rows; CSR blocks are taken whole."""
    obj, dense, csr, coef = make_problem(loss, True, True, seed=7)
    if offset:
        dense = Block(dense.X, dense.y, dense.w, np.random.default_rng(1).normal(scale=0.1, size=dense.n_rows))
    whole = obj._block_loss_grad(coef, dense)
    per_row = 8 * (obj.n_features + 4 * (obj.n_classes if obj.loss == "multinomial" else 1) + 4)
    monkeypatch.setattr(type(obj), "ROW_SLICE_BYTES", 7 * per_row)
    monkeypatch.setattr(type(obj), "MIN_SLICE_ROWS", 1)
    assert obj._slice_rows(dense) == 7 and obj._slice_rows(csr) is None
    sliced = obj.loss_grad(coef, dense)
    assert sliced[0] == pytest.approx(whole[0], rel=1e-13)
    np.testing.assert_allclose(sliced[1], whole[1], rtol=1e-12, atol=1e-12 * np.abs(whole[1]).max())
    total, grad = 0.0, np.zeros(obj.n_params)
    for start in range(0, dense.n_rows, 7):                 # the slices' sum, in row order
        value, g = obj._block_loss_grad(coef, dense.take(slice(start, start + 7)))
        total, grad = total + value, grad + g
    assert sliced[0] == total and np.array_equal(sliced[1], grad)
