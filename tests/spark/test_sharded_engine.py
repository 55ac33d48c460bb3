"""The sharded engine on Spark: the sharded fit equals the unsharded one on real data, AllReduce
between the resident tasks equals a plain sum, checkpoints hold the shards and resume bit for
bit, a lost task restarts the session and the fit resumes from its last completed iteration."""
import os
import sys

import numpy as np
import pytest
from pyspark import cloudpickle

from sparkopt.engine import ShardedEngine, TreeEngine, ingest, make_engine
from sparkopt.errors import InputError
from sparkopt.fit import fit_linear_model
from sparkopt.solvers.vectors import shard_bounds

from conftest import dataset, letter_head, max_rel_diff as rel

pytestmark = [pytest.mark.spark, pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")]
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def a9a(spark):
    from pyspark.sql import functions as F

    df = (spark.read.format("libsvm").option("numFeatures", 123).load(str(dataset("a9a")))
          .withColumn("label", (F.col("label") > 0).cast("double")).repartition(2).cache())
    rdd, stats = ingest(df)
    tree, sharded = TreeEngine(rdd, stats), make_engine(rdd, stats, engine="sharded")
    yield tree, sharded
    sharded.close()
    tree.unpersist()
    df.unpersist()


@pytest.fixture(scope="module")
def letter(spark):
    df = letter_head(spark, 2)
    rdd, stats = ingest(df, dense=True)
    tree, sharded = TreeEngine(rdd, stats), ShardedEngine(rdd, stats)
    yield tree, sharded
    sharded.close()
    tree.unpersist()
    df.unpersist()


def test_sharded_logistic_equals_the_unsharded_fit(a9a):
    tree, sharded = a9a
    assert isinstance(sharded, ShardedEngine) and sharded.kind == "sharded"
    kwargs = dict(reg_param=1e-3, tol=1e-12, max_iter=400)
    want = fit_linear_model(tree, "logistic", solver="lbfgs", **kwargs)
    got = fit_linear_model(sharded, "logistic", **kwargs)
    assert got.result.extra["vector_free"] and got.result.extra["shards"] == 2
    assert rel(got.coefficients, want.coefficients) < 1e-8
    assert abs(got.intercept - want.intercept) < 1e-8
    assert abs(got.objective - want.objective) <= 1e-12 * abs(want.objective)
    # per pass the tasks exchange the iterate and the gradient: ~2 x (n-1)/n of 124 values each
    per_pass = got.result.extra["bytes_between_tasks_per_pass"]
    assert len(per_pass) == got.result.passes and all(4 * 124 <= b < 8 * 124 * 8 for b in per_pass)
    assert not sharded.active


def test_sharded_multinomial_elastic_net_equals_the_unsharded_fit(letter):
    """100 OWL-QN iterations each (both stop at max_iter; the vector-free iterates are the
    ordinary ones), 442 coordinates in two shards."""
    tree, sharded = letter
    kwargs = dict(reg_param=1e-3, elastic_net_param=0.3, tol=1e-14, max_iter=100)
    want = fit_linear_model(tree, "multinomial", solver="owlqn", **kwargs)
    got = fit_linear_model(sharded, "multinomial", **kwargs)
    assert got.result.solver == "owlqn" and got.result.status == want.result.status
    assert rel(got.coefficients, want.coefficients) < 1e-8
    assert rel(got.intercept, want.intercept) < 1e-8
    assert np.array_equal(got.coefficients == 0, want.coefficients == 0)


class _SumHandler:
    """A test handler: each task contributes its own vector; the command returns the task's
    reduce-scatter range and the allreduced whole."""

    def setup(self, ctx, config):
        ctx.state["n"] = 1001

    def handle(self, ctx, command):
        n = ctx.state["n"]
        rng = np.random.default_rng(ctx.rank + 10 * command)
        mine = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)
        bounds = shard_bounds(n, ctx.size)
        return ctx.mesh.reduce_scatter(mine, bounds), ctx.mesh.allreduce(mine, bounds)


def test_allreduce_between_resident_tasks_equals_a_plain_sum(a9a):
    _, sharded = a9a
    session = sharded.open_shards(_SumHandler(), {})
    try:
        n, size = 1001, session.size
        assert size == 2
        for command in (1, 2):
            replies = session.call(command)
            vectors = [np.random.default_rng(r + 10 * command) for r in range(size)]
            vectors = [g.standard_normal(n) * 10.0 ** g.integers(-3, 4) for g in vectors]
            expected, scale = np.sum(vectors, axis=0), np.abs(vectors).sum(axis=0)
            for rank, (part, whole) in enumerate(replies):
                lo, hi = shard_bounds(n, size)[rank]
                assert np.all(np.abs(part - expected[lo:hi]) <= 1e-12 * scale[lo:hi])
                assert np.all(np.abs(whole - expected) <= 1e-12 * scale)
        assert session.bytes_between_tasks > 2 * 8 * n
    finally:
        session.close()


def test_checkpoints_hold_the_shards_and_resume_bit_for_bit(letter, tmp_path):
    _, sharded = letter
    kwargs = dict(reg_param=1e-2, tol=1e-12, checkpoint_interval=4)
    whole = fit_linear_model(sharded, "multinomial", max_iter=14, checkpoint_dir=str(tmp_path / "whole"), **kwargs)
    first = fit_linear_model(sharded, "multinomial", max_iter=6, checkpoint_dir=str(tmp_path / "split"), **kwargs)
    names = sorted(p.name for p in (tmp_path / "split").iterdir())
    # each task wrote its own shard; the driver's manifest lists both
    assert "ckpt-000002-shard-00000.npz" in names and "ckpt-000002-shard-00001.npz" in names
    assert first.result.nit == 6
    resumed = fit_linear_model(sharded, "multinomial", max_iter=14, checkpoint_dir=str(tmp_path / "split"), **kwargs)
    assert resumed.result.nit == whole.result.nit == 14
    assert [r["objective"] for r in resumed.result.history] == [r["objective"] for r in whole.result.history]
    assert np.array_equal(resumed.coefficients, whole.coefficients)
    assert np.array_equal(resumed.intercept, whole.intercept)


class _CrashingObjective:
    """A block objective that kills task 0's Python worker at its k-th gradient (an executor loss)."""

    def __init__(self, inner, marker_dir, at_call):
        self.inner, self.marker_dir, self.at_call = inner, marker_dir, at_call

    def __getattr__(self, name):
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def loss_grad(self, coef, block):
        from pyspark import TaskContext

        if TaskContext.get().partitionId() == 0 and not os.path.exists(os.path.join(self.marker_dir, "crashed")):
            counter = os.path.join(self.marker_dir, f"calls-{os.getpid()}")
            with open(counter, "a") as fh:
                fh.write(".")
            if os.path.getsize(counter) >= self.at_call:
                open(os.path.join(self.marker_dir, "crashed"), "w").close()
                os._exit(17)
        return self.inner.loss_grad(coef, block)


def test_a_lost_task_restarts_the_session_and_resumes(a9a, tmp_path, monkeypatch):
    import sparkopt.objectives as objectives

    tree, sharded = a9a
    kwargs = dict(reg_param=1e-3, tol=1e-12, max_iter=25)
    want = fit_linear_model(sharded, "logistic", **kwargs)
    make = objectives.make_block_objective
    monkeypatch.setattr(objectives, "make_block_objective",
                        lambda *a, **k: _CrashingObjective(make(*a, **k), str(tmp_path), at_call=12))
    restarts = sharded.restarts
    got = fit_linear_model(sharded, "logistic", **kwargs)
    assert (tmp_path / "crashed").exists()
    assert got.result.extra["restarts"] == 1 and got.result.extra["sessions"] == 2
    # resumed from the last completed iteration (recovery checkpoints every iteration): the same bits
    assert got.result.nit == want.result.nit
    assert np.array_equal(got.coefficients, want.coefficients)
    assert [r["objective"] for r in got.result.history] == [r["objective"] for r in want.result.history]
    assert sharded.restarts == restarts
    assert not sharded.active


def test_what_the_sharded_engine_refuses(a9a):
    _, sharded = a9a
    with pytest.raises(InputError, match="solver must be one of"):
        fit_linear_model(sharded, "logistic", solver="newton")
    with pytest.raises(InputError, match="initial model"):
        fit_linear_model(sharded, "logistic", initial_coef=np.zeros(124))
    with pytest.raises(InputError, match="bounds"):
        fit_linear_model(sharded, "logistic", bounds=(np.zeros(124), np.ones(124)))


def test_a_model_saved_shard_by_shard_scores_without_collecting(letter, spark, tmp_path):
    """transform joins the rows' features with the coefficient table: the same margins and
    predictions as the gathered fit's coefficients applied on the driver."""
    from pyspark.ml.functions import vector_to_array

    from sparkopt.sharded_model import ShardedLinearModel

    tree, sharded = letter
    fit = fit_linear_model(sharded, "multinomial", reg_param=1e-2, max_iter=20, tol=1e-12)
    from sparkopt.sharded_objective import fit_sharded

    saved = fit_sharded(sharded, "multinomial", reg_param=1e-2, max_iter=20, tol=1e-12, gather=False,
                        model_dir=str(tmp_path / "model"))
    assert saved.coefficients is None and np.allclose(saved.intercept, fit.intercept, atol=1e-12)
    model = ShardedLinearModel.load(tmp_path / "model")
    df = letter_head(spark, 2)
    scored = model.transform(df).select(vector_to_array("features").alias("x"), "rawPrediction", "prediction")
    rows = scored.collect()
    assert len(rows) == 3000
    X = np.array([r["x"] for r in rows])
    margins = X @ fit.coefficients.T + fit.intercept
    np.testing.assert_allclose(np.array([r["rawPrediction"] for r in rows]), margins, rtol=0, atol=1e-10)
    assert np.array_equal(np.array([r["prediction"] for r in rows]), np.argmax(margins, axis=1).astype(float))
    df.unpersist()


def test_estimator_and_auto_choose_the_sharded_engine(a9a, spark):
    from pyspark.sql import functions as F

    from sparkopt.ml import LogisticRegression, clear_cache

    tree, _ = a9a
    df = (spark.read.format("libsvm").option("numFeatures", 123).load(str(dataset("a9a.t")))
          .withColumn("label", (F.col("label") > 0).cast("double")).repartition(2))
    try:
        sharded = LogisticRegression(regParam=1e-2, engine="sharded", tol=1e-10).fit(df)
        resident = LogisticRegression(regParam=1e-2, engine="resident", tol=1e-10, solver="lbfgs").fit(df)
        assert rel(sharded.coefficients.toArray(), resident.coefficients.toArray()) < 1e-7
        assert sharded.summary.totalIterations > 0
        # a grid (CrossValidator's fitMultiple) on the sharded engine: cold fits, the same optimum
        grid = LogisticRegression(engine="sharded", tol=1e-10)
        models = dict(grid.fitMultiple(df, [{grid.regParam: 1e-1}, {grid.regParam: 1e-2}]))
        assert models[1].summary.objective == pytest.approx(sharded.summary.objective, rel=1e-9)
        assert models[0].getRegParam() == 1e-1 and models[0].summary.converged
    finally:
        clear_cache()
    # auto: a model beyond the budget is sharded (no job runs to decide)
    from sparkopt.engine.choose import SHARDED_MODEL_BUDGET_MB

    big = make_engine(tree._rdd, tree.stats, engine="auto", model_values=SHARDED_MODEL_BUDGET_MB * 2**17 + 1)
    small = make_engine(tree._rdd, tree.stats, engine="auto", model_values=124)
    assert big.kind == "sharded" and small.kind == "resident"
