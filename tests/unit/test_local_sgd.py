"""solver="local-sgd" on the in-memory engine (no Spark): H = 1 is mini-batch SGD with the same
samples, the shard combination is the weighted average it claims, it reaches 1e-3 of the a9a
optimum in a stated number of rounds, more local steps need fewer rounds for the same passes,
L1 by proximal steps, the history's rounds/passes, and bad params named."""
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file

from sparkopt.blocks import Block
from sparkopt.engine import LocalEngine
from sparkopt.fit import build_objective, fit_linear_model
from sparkopt.linear_objective import LinearModelObjective
from sparkopt.solvers import ConvergenceWarning, CountingObjective, minimize
from sparkopt.solvers.local_sgd import LocalSGD

from conftest import dataset

REG = 1e-3
# partitions of unequal size, one empty, two blocks (shards) of unequal size in each non-empty one
CUTS = [0.0, 0.09, 0.34, 0.34, 0.61, 1.0]


@pytest.fixture(scope="module")
def a9a():
    X, y = load_svmlight_file(str(dataset("a9a")), n_features=123)
    return X.tocsr(), (y > 0).astype(float)


def engine_of(a9a, rows=None):
    """A fresh LocalEngine (pass counter at 0) over CUTS; `rows` keeps only the first rows."""
    X, y = a9a
    n = X.shape[0] if rows is None else rows
    cuts = [int(round(c * n)) for c in CUTS]
    parts = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        mid = lo + (hi - lo) // 3
        parts.append([Block(X[a:b], y[a:b], np.ones(b - a)) for a, b in ((lo, mid), (mid, hi)) if b > a])
    return LocalEngine(parts)


def fit(a9a, solver, rows=None, **kw):
    kw = dict(dict(reg_param=REG, tol=1e-12), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_linear_model(engine_of(a9a, rows), "logistic", solver=solver, **kw)


@pytest.fixture(scope="module")
def optimum(a9a):
    return {alpha: fit(a9a, "newton", elastic_net_param=alpha, tol=1e-10).objective for alpha in (0.0, 1.0)}


# ------------------------------------------------------------------ H = 1 is mini-batch SGD
@pytest.mark.parametrize("fraction", [0.1, 1.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_one_local_step_with_averaging_is_minibatch_sgd(a9a, fraction, alpha):
    """Same samples: local-sgd round k draws block (p, j)'s rows from sample_rng(round_seed(seed, k),
    p, j), the generator MiniBatchSGD's iteration k gives that block, and weights each shard by
    the weight it sampled, so the weighted mean of the shard steps is the step on the union."""
    opts = dict(step_size=0.3, fraction=fraction, schedule="inverse_sqrt", seed=5)
    # under L1, a penalty strong enough for exact zeros within 15 steps
    penalty = dict(reg_param=1e-2 if alpha else REG, elastic_net_param=alpha)
    sgd = fit(a9a, "sgd", rows=6000, max_iter=15, solver_options=opts, **penalty)
    local = fit(a9a, "local-sgd", rows=6000, max_iter=15, solver_options=dict(opts, local_steps=1, combination=1.0),
                **penalty)
    assert local.result.nit == sgd.result.nit == 15
    np.testing.assert_allclose(local.result.x, sgd.result.x, rtol=0, atol=1e-12 * max(1, np.abs(sgd.result.x).max()))
    if fraction < 1:      # the agreement is the samples', not the maths': another seed differs
        other = fit(a9a, "local-sgd", rows=6000, max_iter=15, solver_options=dict(opts, seed=6, local_steps=1),
                    **penalty)
        assert np.abs(other.result.x - sgd.result.x).max() > 1e-4
    for a, b in zip(local.result.history, sgd.result.history):
        assert a["objective"] == pytest.approx(b["objective"], rel=1e-12)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-9)
        assert a["passes"] == pytest.approx(b["passes"], rel=1e-12)
    if alpha > 0:
        assert np.array_equal(local.result.x == 0, sgd.result.x == 0) and np.any(local.result.x == 0)


def test_combination_scales_the_averaged_step(a9a):
    """beta multiplies the mean shard delta (and the L1 threshold): with H = 1, beta = 2 at step t
    is proximal SGD at step 2t."""
    opts = dict(fraction=0.2, schedule="constant", seed=1)
    sgd = fit(a9a, "sgd", rows=6000, elastic_net_param=0.5, max_iter=10, solver_options=dict(opts, step_size=0.2))
    local = fit(a9a, "local-sgd", rows=6000, elastic_net_param=0.5, max_iter=10,
                solver_options=dict(opts, step_size=0.1, local_steps=1, combination=2.0))
    np.testing.assert_allclose(local.result.x, sgd.result.x, rtol=0, atol=1e-12)


def test_round_is_the_weight_averaged_shard_models(a9a):
    """fraction 1, H = 3: the new iterate is sum_b W_b z_b / sum_b W_b with z_b three gradient
    steps on shard b alone (its own mean loss + penalty), computed here shard by shard. Shards
    differ in size, so an unweighted mean would differ."""
    engine = engine_of(a9a, rows=6000)
    objective, _, _ = build_objective(engine, "logistic", reg_param=REG)
    z0 = np.random.default_rng(0).normal(scale=0.1, size=objective.n_params)
    t = 0.2
    delta, _, weight = objective.local_sgd_round(z0, [t, t, t], 1.0, 0)
    shards = [b for p in engine.collect_blocks() for b in p]
    models, weights = [], []
    for block in shards:
        alone = LinearModelObjective(LocalEngine([[block]]), objective.block_objective, objective.penalty,
                                     objective.coordinates)
        z = z0.copy()
        for _ in range(3):
            z = z - t * alone.loss_grad(z)[1]
        models.append(z)
        weights.append(block.w.sum())
    weights = np.array(weights)
    assert len(set(weights)) > 2 and weight == pytest.approx(3 * weights.sum())
    expected = np.average(models, axis=0, weights=weights)
    np.testing.assert_allclose(z0 + delta, expected, rtol=0, atol=1e-12)
    assert np.abs(np.mean(models, axis=0) - expected).max() > 1e-6
    assert objective.passes == pytest.approx(3.0)          # H * fraction, not the one engine call


# ------------------------------------------------------------------ convergence on a9a
# Default step settings (step = the data's safe step, inverse_sqrt schedule, outer momentum 0.9,
# averaged answer). H = 10 local steps on 10% samples = 1 pass per round. Measured (full a9a,
# regParam 1e-3, 8 shards of 2.9k-8.8k rows, 100 rounds, 102.6 passes with the start, the
# curvature estimate and the final exact pass): gap 1.5e-4 (seed 1), 2.0e-4 (seed 0); the same
# settings with H = 1 on the whole data (also 1 pass per round) end 6.6e-3 away.
CONVERGE = dict(seed=1)


def rounds_to(a9a, optimum_value, target, rounds, **opts):
    """(first round whose iterate is within `target` relative of the optimum or None, result);
    the gap is evaluated exactly in the callback on a separate engine (not counted)."""
    reference, _, _ = build_objective(engine_of(a9a), "logistic", reg_param=REG,
                                      elastic_net_param=opts.pop("alpha", 0.0))
    first = []

    def callback(row):
        if not first and (reference.total(row["x"]) - optimum_value) / optimum_value < target:
            first.append(row)

    result = fit(a9a, "local-sgd", max_iter=rounds, callback=callback, solver_options=opts,
                 elastic_net_param=reference.penalty.elastic_net_param)
    return (first[0] if first else None), result


@pytest.fixture(scope="module")
def local10(a9a, optimum):
    return rounds_to(a9a, optimum[0.0], 1e-3, 100, local_steps=10, fraction=0.1, **CONVERGE)


def test_reaches_1e3_of_the_a9a_optimum_within_100_rounds_with_default_steps(a9a, optimum, local10):
    from sparkopt.linear_objective import CURVATURE_ITERATIONS, CURVATURE_SAMPLE_ROWS

    _, result = local10
    assert (result.objective - optimum[0.0]) / optimum[0.0] < 1e-3      # measured 1.5e-4
    # the starting point, the curvature estimate on a sample, H * fraction = 1 per round, the end
    estimate = CURVATURE_ITERATIONS * CURVATURE_SAMPLE_ROWS / a9a[0].shape[0]
    assert result.result.passes == pytest.approx(1 + estimate + 100 + 1)
    history = result.result.history
    assert [r["rounds"] for r in history] == list(range(len(history)))
    assert result.result.solver == "local-sgd" and result.result.nit == 100


def test_more_local_steps_need_fewer_rounds_for_the_same_passes(a9a, optimum, local10):
    _, result10 = local10
    _, result1 = rounds_to(a9a, optimum[0.0], 1e-3, 100, local_steps=1, fraction=1.0, **CONVERGE)
    assert result1.result.passes == pytest.approx(result10.result.passes)
    gap1 = result1.objective - optimum[0.0]
    assert gap1 / optimum[0.0] > 1e-3                 # measured 6.6e-3
    assert gap1 > 5 * (result10.objective - optimum[0.0])


def test_l1_by_proximal_steps(a9a, optimum):
    """Lasso (elasticNetParam 1), same settings: measured gap 1.6e-3 after 100 rounds (seed 0:
    1.7e-3). Exact zeros at a noisy iterate are luck here (seed 1 has 5, seed 0 none; the optimum
    37), so sparsity and the proximal maths are pinned by the H = 1 test against MiniBatchSGD."""
    _, result = rounds_to(a9a, optimum[1.0], 1e-3, 100, alpha=1.0, local_steps=10, fraction=0.1, **CONVERGE)
    gap = (result.objective - optimum[1.0]) / optimum[1.0]
    assert gap < 5e-3, gap


# ------------------------------------------------------------------ params and errors
@pytest.mark.parametrize("options, named", [
    (dict(local_steps=0), "localSteps"), (dict(local_steps=2.5), "localSteps"), (dict(local_steps=True), "localSteps"),
    (dict(combination=0.5), "localCombination"), (dict(combination=float("nan")), "localCombination"),
    (dict(combination=float("inf")), "localCombination"), (dict(fraction=0.0), "miniBatchFraction"),
    (dict(step_size=-1.0), "stepSize"),
])
def test_bad_params_are_named(a9a, options, named):
    with pytest.raises(ValueError, match=named):
        LocalSGD(**options)
    with pytest.raises(ValueError, match=named):
        fit(a9a, "local-sgd", rows=1000, max_iter=1, solver_options=options)


def test_needs_an_objective_that_runs_rounds():
    objective = CountingObjective(lambda x: float(x @ x), lambda x: 2 * x, 3)
    with pytest.raises(ValueError, match="local-sgd.*LocalRoundObjective"):
        minimize(objective, np.ones(3), "local-sgd")


# ------------------------------------------------------------------ wiring (no SparkSession needed)
def test_estimator_params_and_train_job_arguments():
    from sparkopt.errors import InputError
    from sparkopt.ml import LinearRegression, LogisticRegression

    lr = LogisticRegression(solver="local-sgd", localSteps=5, localCombination=2.0)
    assert (lr.getSolver(), lr.getLocalSteps(), lr.getLocalCombination()) == ("local-sgd", 5, 2.0)
    assert LinearRegression().getLocalSteps() == 1 and LinearRegression().getLocalCombination() == 1.0
    assert lr.setLocalSteps(3).getLocalSteps() == 3
    for bad, named in ((dict(localSteps=0), "localSteps"), (dict(localCombination=0.5), "localCombination"),
                       (dict(localCombination=float("nan")), "localCombination")):
        with pytest.raises(InputError, match=named):
            LogisticRegression(**bad)
    with pytest.raises(InputError, match="localSteps"):
        lr.setLocalSteps(-2)

    import train
    args = train.parse_args(["--input", "x", "--output", "y", "--solver", "local-sgd", "--local-steps", "7",
                             "--local-combination", "1.5", "--mini-batch-fraction", "0.2"])
    estimator = train.make_estimator(args, "features", "label")
    assert (estimator.getSolver(), estimator.getLocalSteps(), estimator.getLocalCombination(),
            estimator.getMiniBatchFraction()) == ("local-sgd", 7, 1.5, 0.2)
