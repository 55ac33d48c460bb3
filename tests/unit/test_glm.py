"""GLM families and links (sparkopt.objectives.losses), the IRLS fit (sparkopt.glm) and offsets in
blocks: numpy only, no Spark."""

import numpy as np
import pytest
import scipy.optimize as so
from scipy import stats as st

from sparkopt.blocks import Block
from sparkopt.engine.local import LocalEngine
from sparkopt.errors import InputError
from sparkopt.glm import fit_glm
from sparkopt.objectives.glm import SummarySums, family_aic, residuals, summary_sums
from sparkopt.objectives.linear import GLMBlockObjective, make_block_objective
from sparkopt.objectives.losses import GLM_FAMILY_LINKS, check_labels, glm_loss, glm_loss_name

# every pair MLlib allows, plus tweedie with its canonical and a log link
PAIRS = [(f, link, 0.0, None) for f, links in GLM_FAMILY_LINKS.items() for link in links] + [
    ("tweedie", None, 1.5, None), ("tweedie", None, 1.5, 0.0), ("tweedie", None, 3.0, 0.5)]
IDS = [f"{f}-{link or ''}{vp or ''}{'' if lp is None else '-lp' + str(lp)}" for f, link, vp, lp in PAIRS]


def _data(family, n=40, seed=0):
    """Labels in the family's range and moderate margins inside the link's domain."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.2, 0.8, n) if family == "binomial" else rng.uniform(0.5, 3.0, n)
    if family == "binomial":
        y = rng.uniform(0, 1, n).round(1)
    elif family in ("poisson", "tweedie"):
        y = rng.poisson(mu).astype(float)
    elif family == "gamma":
        y = rng.gamma(2.0, mu / 2.0)
    else:
        y = mu + rng.normal(size=n)
    return y, mu


@pytest.mark.parametrize("family,link,vp,lp", PAIRS, ids=IDS)
def test_derivatives_match_finite_differences(family, link, vp, lp):
    loss = glm_loss(family, link, vp, lp)
    y, mu = _data(family)
    if family == "tweedie" and vp >= 2:
        y = np.maximum(y, 0.5)
    m = loss.link.link(mu)
    h = 1e-6
    t = loss.terms(y, m, observed=True)
    up, down = loss.terms(y, m + h, observed=True), loss.terms(y, m - h, observed=True)
    np.testing.assert_allclose(t.d1, (up.value - down.value) / (2 * h), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(t.d2, (up.d1 - down.d1) / (2 * h), rtol=1e-5, atol=1e-7)
    fisher = loss.terms(y, m)
    # the expected curvature is the observed one at y = mu, and equal to it for a canonical link
    np.testing.assert_allclose(fisher.d2, loss.terms(loss.mean(m), m, observed=True).d2, rtol=1e-10)
    assert np.all(fisher.d2 > 0)
    if loss.canonical:
        np.testing.assert_allclose(fisher.d2, t.d2, rtol=1e-10)


def test_non_canonical_observed_curvature_can_be_negative():
    loss = glm_loss("gamma", "identity")
    y, m = np.array([0.1]), np.array([1.0])          # y well below mu: 1/mu^2 + 2 (y - mu) / mu^3 < 0
    assert loss.terms(y, m, observed=True).d2[0] < 0 < loss.terms(y, m).d2[0]


def test_unit_deviance_is_the_textbook_one():
    y = np.array([0.0, 1.0, 2.0, 7.0])
    mu = np.array([0.5, 1.5, 2.0, 4.0])

    def dev(family, vp=0.0):
        return glm_loss(family, None, vp).family.unit_deviance(y, mu)

    np.testing.assert_allclose(dev("gaussian"), (y - mu) ** 2)
    # poisson: 2 (y log(y/mu) - (y - mu)), 0 log 0 = 0; equals -2 (loglik - saturated loglik)
    saturated = st.poisson.logpmf(y, np.where(y > 0, y, 1e-300))
    np.testing.assert_allclose(dev("poisson"), 2 * (saturated - st.poisson.logpmf(y, mu)), rtol=1e-12)
    yp, mup = y[1:], mu[1:]
    gamma = glm_loss("gamma").family.unit_deviance(yp, mup)
    np.testing.assert_allclose(gamma, 2 * (-np.log(yp / mup) + (yp - mup) / mup), rtol=1e-12)
    p = np.array([0.0, 0.3, 1.0])
    q = np.array([0.2, 0.6, 0.9])
    bern = glm_loss("binomial").family.unit_deviance(p, q)
    ref = 2 * (np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0)
               + np.where(p < 1, (1 - p) * np.log(np.where(p < 1, 1 - p, 1) / (1 - q)), 0))
    np.testing.assert_allclose(bern, ref, rtol=1e-12)
    # tweedie 1 < p < 2 at y = 0: 2 mu^(2-p) / (2-p); p = 1.5 elsewhere the closed form
    tw = dev("tweedie", 1.5)
    assert tw[0] == pytest.approx(2 * mu[0] ** 0.5 / 0.5)
    ref = 2 * (y[1:] * (y[1:] ** -0.5 - mu[1:] ** -0.5) / -0.5 - (y[1:] ** 0.5 - mu[1:] ** 0.5) / 0.5)
    np.testing.assert_allclose(tw[1:], ref, rtol=1e-12)
    # tweedie 1 and 2 are poisson and gamma (MLlib's Family.fromParams)
    assert glm_loss("tweedie", None, 1.0).family.name == "poisson"
    assert glm_loss("tweedie", None, 2.0).link.name == "inverse"


def _engine(family, link=None, vp=0.0, lp=None, n=600, offset=True, weights=True, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    off = 0.2 * rng.normal(size=n) if offset else None
    loss = glm_loss(family, link, vp, lp)
    if family == "binomial":
        eta = X @ [0.4, -0.3, 0.2] - 0.2 + (0 if off is None else off)
        y = (rng.random(n) < loss.mean(eta)).astype(float)
    elif family == "gamma" and loss.link.name == "inverse":
        X = np.abs(X)
        mu = 1.0 / (0.5 + X @ [0.2, 0.1, 0.3])
        y, off = rng.gamma(3.0, mu / 3.0), None
    else:
        mu = np.exp(X @ [0.3, -0.2, 0.1] + 0.5 + (0 if off is None else off))
        y = rng.poisson(mu).astype(float) if family in ("poisson", "tweedie") else rng.gamma(2.0, mu / 2.0)
    w = rng.uniform(0.5, 2.0, n) if weights else None
    return LocalEngine.from_arrays(X, y, w, 3, offset=off), loss, X, y, (np.ones(n) if w is None else w), off


@pytest.mark.parametrize("family,link,vp,lp", [
    ("poisson", "log", 0.0, None), ("poisson", "sqrt", 0.0, None), ("gamma", "log", 0.0, None),
    ("gamma", "inverse", 0.0, None), ("binomial", "logit", 0.0, None), ("binomial", "cloglog", 0.0, None),
    ("tweedie", None, 1.5, 0.0)])
def test_irls_equals_the_deviance_minimizer(family, link, vp, lp):
    engine, loss, X, y, w, off = _engine(family, link, vp, lp)
    fit = fit_glm(engine, loss, tol=1e-12, max_iter=200)
    assert fit.converged
    o = 0.0 if off is None else off

    def f(c):
        return float(w @ loss.terms(y, X @ c[:3] + c[3] + o).value) / w.sum()

    def g(c):
        t = loss.terms(y, X @ c[:3] + c[3] + o)
        return np.r_[X.T @ (w * t.d1), np.sum(w * t.d1)] / w.sum()

    start = np.r_[np.zeros(3), fit.coef[3]]
    ref = so.minimize(f, start, jac=g, method="BFGS", options=dict(gtol=1e-13, maxiter=10_000))
    np.testing.assert_allclose(fit.coef, ref.x, rtol=1e-6, atol=1e-7)


def test_gaussian_identity_is_one_weighted_least_squares_solve():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 2))
    off = rng.normal(size=200)
    y = X @ [1.0, -2.0] + 3.0 + off + 0.1 * rng.normal(size=200)
    w = rng.uniform(0.5, 1.5, 200)
    fit = fit_glm(LocalEngine.from_arrays(X, y, w, 2, offset=off), glm_loss("gaussian"))
    A = np.c_[X, np.ones(200)]
    ref = np.linalg.solve(A.T @ (A * w[:, None]), A.T @ (w * (y - off)))
    np.testing.assert_allclose(fit.coef, ref, rtol=1e-10)
    assert fit.n_iter == 1
    # diag of (A'WA)^-1: the standard errors' matrix
    np.testing.assert_allclose(fit.diag_inv, np.diag(np.linalg.inv(A.T @ (A * w[:, None]))), rtol=1e-9)


def test_irls_ridge_is_mllibs_fixed_point():
    """At the IRLS ridge's fixed point, grad(half deviance) = -regParam * (sum of IRLS weights) * b."""
    engine, loss, X, y, w, off = _engine("poisson")
    reg = 0.05
    fit = fit_glm(engine, loss, reg_param=reg, tol=1e-13, max_iter=200)
    m = X @ fit.coef[:3] + fit.coef[3] + off
    t = loss.terms(y, m)
    grad = X.T @ (w * t.d1)
    S = np.sum(w * t.d2)
    np.testing.assert_allclose(grad, -reg * S * fit.coef[:3], rtol=1e-8, atol=1e-9)
    assert abs(np.sum(w * t.d1)) < 1e-8 * S           # the intercept is not penalized


def test_offset_shifts_margins_exactly():
    engine, loss, X, y, w, off = _engine("poisson")
    coef = np.array([0.1, 0.2, -0.1, 0.3])
    objective = GLMBlockObjective(loss, 3, True)
    block = Block(X, y, w, off)
    np.testing.assert_array_equal(objective.block_margins(coef, block), objective.margins(coef, X) + off)
    shifted = Block(X, y, w, off + 1.5)
    np.testing.assert_allclose(objective.block_margins(coef, shifted), objective.block_margins(coef, block) + 1.5,
                               rtol=0, atol=1e-14)
    # the existing Poisson loss sees the offset too, and no offset is no change
    poisson = make_block_objective("poisson", 3, True)
    assert poisson.loss_sum(coef, Block(X, y, w)) == poisson.loss_sum(coef, Block(X, y, w, None))
    assert poisson.loss_sum(coef, block) != poisson.loss_sum(coef, Block(X, y, w))
    # an offset equal to a feature times 1 is that feature with its coefficient fixed at 1
    with_feature = Block(np.c_[X, off], y, w)
    five = make_block_objective("poisson", 4, True)
    assert five.loss_sum(np.r_[coef[:3], 1.0, coef[3]], with_feature) == pytest.approx(poisson.loss_sum(coef, block),
                                                                                          rel=1e-13)


def test_take_and_sample_keep_the_offset():
    rng = np.random.default_rng(0)
    block = Block(rng.normal(size=(50, 2)), rng.normal(size=50), np.ones(50), np.arange(50.0))
    sub = block.take(np.array([3, 7, 11]))
    np.testing.assert_array_equal(sub.offset, [3.0, 7.0, 11.0])
    sampled = block.sample(0.5, np.random.default_rng(1))
    np.testing.assert_array_equal(sampled.offset, sampled.offset.round())
    assert sampled.offset.shape == sampled.y.shape
    assert Block(block.X, block.y, block.w).take(np.array([1])).offset is None


def test_label_rules_name_the_family():
    with pytest.raises(InputError, match="must be > 0 for family='gamma'; found minimum 0"):
        check_labels(glm_loss_name("gamma"), 0.0, 5.0, 0, 10, "y")
    with pytest.raises(InputError, match=r"must lie in \[0, 1\] for family='binomial'"):
        check_labels(glm_loss_name("binomial"), 0.0, 2.0, 0, 10, "y")
    with pytest.raises(InputError, match="must be >= 0 for family='poisson'"):
        check_labels(glm_loss_name("poisson"), -1.0, 2.0, 0, 10, "y")
    with pytest.raises(InputError, match="must be > 0 for family='tweedie'"):
        check_labels(glm_loss_name("tweedie", 2.5), 0.0, 2.0, 0, 10, "y")
    assert check_labels(glm_loss_name("tweedie", 1.5), 0.0, 2.0, 0, 10, "y") == 1
    assert check_labels(glm_loss_name("binomial"), 0.0, 0.5, 3, 10, "y") == 1      # fractions allowed, as MLlib
    with pytest.raises(InputError, match=r"param link must be one of \('logit', 'probit', 'cloglog'\) for "
                                         r"family='binomial'.*link='log'"):
        glm_loss("binomial", "log")


def test_summary_sums_and_aic_against_scipy():
    engine, loss, X, y, w, off = _engine("poisson", weights=False)
    fit = fit_glm(engine, loss)
    sums = SummarySums(*engine.map_sum(summary_sums, (loss, fit.coef, True, False)))
    mu = loss.mean(X @ fit.coef[:3] + fit.coef[3] + off)
    assert sums.deviance == pytest.approx(np.sum(loss.family.unit_deviance(y, mu)), rel=1e-12)
    assert family_aic(loss, sums, 4) == pytest.approx(-2 * st.poisson.logpmf(y, mu).sum() + 8, rel=1e-12)
    gamma_engine, gamma, Xg, yg, wg, offg = _engine("gamma", "log", weights=False)
    gfit = fit_glm(gamma_engine, gamma)
    gsums = SummarySums(*gamma_engine.map_sum(summary_sums, (gamma, gfit.coef, True, False)))
    mug = gamma.mean(Xg @ gfit.coef[:3] + gfit.coef[3] + offg)
    phi = gsums.deviance / len(yg)
    ref = -2 * st.gamma.logpdf(yg, a=1 / phi, scale=mug * phi).sum() + 2 + 8
    assert family_aic(gamma, gsums, 4) == pytest.approx(ref, rel=1e-10)
    assert family_aic(glm_loss("tweedie", None, 1.5), gsums, 4) is None


def test_residual_kinds():
    loss = glm_loss("poisson")
    y, mu, w = np.array([0.0, 3.0, 2.0]), np.array([1.0, 2.0, 2.5]), np.array([1.0, 2.0, 0.5])
    dev = residuals(loss, "deviance", y, mu, w)
    np.testing.assert_allclose(dev ** 2, w * loss.family.unit_deviance(y, mu))
    np.testing.assert_array_equal(np.sign(dev), [-1, 1, -1])
    np.testing.assert_allclose(residuals(loss, "pearson", y, mu, w), (y - mu) * np.sqrt(w / mu))
    np.testing.assert_allclose(residuals(loss, "working", y, mu, w), (y - mu) / mu)
    np.testing.assert_allclose(residuals(loss, "response", y, mu, w), y - mu)


def test_non_finite_offsets_are_refused():
    rng = np.random.default_rng(0)
    off = np.zeros(30)
    off[4] = np.nan
    engine = LocalEngine.from_arrays(rng.normal(size=(30, 2)), rng.poisson(2, 30), None, 2, offset=off)
    with pytest.raises(InputError, match="offset column has 1 NaN or infinite"):
        fit_glm(engine, glm_loss("poisson"))


@pytest.mark.parametrize("family,link,solver", [("poisson", "log", "newton"), ("gamma", "log", "lbfgs"),
                                                ("binomial", "logit", "newton-cg")])
def test_general_solvers_reach_the_irls_optimum(family, link, solver):
    from sparkopt.fit import fit_linear_model

    engine, loss, X, y, w, off = _engine(family, link)
    irls = fit_glm(engine, loss, tol=1e-12, max_iter=100)
    fit = fit_linear_model(engine, "glm", glm=loss, standardization=False, solver=solver, tol=1e-10, max_iter=500)
    assert fit.converged
    np.testing.assert_allclose(fit.coef_vector, irls.coef, rtol=1e-6, atol=1e-7)


def test_general_solvers_minimize_the_fixed_penalized_deviance():
    from sparkopt.fit import fit_linear_model

    engine, loss, X, y, w, off = _engine("poisson")
    reg = 0.05
    fit = fit_linear_model(engine, "glm", glm=loss, reg_param=reg, standardization=False, solver="newton", tol=1e-11)
    c = fit.coef_vector
    t = loss.terms(y, X @ c[:3] + c[3] + off)
    # stationarity of (1/sum w) sum w d/2 + reg/2 |b|^2
    np.testing.assert_allclose(X.T @ (w * t.d1) / w.sum(), -reg * c[:3], atol=1e-9)
    assert abs(np.sum(w * t.d1)) / w.sum() < 1e-9
