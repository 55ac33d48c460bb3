"""The fused resident load (sparkopt.engine.fused): sessions whose barrier tasks build their blocks
from the DataFrame's Arrow batches, against the ingest and the tree engine: the same statistics,
the same sums and fits for every loss, dense and CSR; a task killed during the load; the
estimators' path (statistics cached, no block RDD); nothing left running."""
from __future__ import annotations

import os
import sys
import threading
import time
from functools import partial

import numpy as np
import pytest
from conftest import LOSS_CASES, letter_head, max_rel_diff as rel
from pyspark import cloudpickle

from sparkopt.engine import ResidentEngine, TreeEngine, ingest, make_engine
from sparkopt.engine.fused import FusedEngine, FusedSource, fused_source
from sparkopt.fit import build_objective

pytestmark = pytest.mark.spark
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module", params=[None, False], ids=["dense", "csr"])
def engines(spark, request):
    """{label: (tree, fused)} over letter.scale's first 3000 rows in 2 partitions (the 2 slots)."""
    df = letter_head(spark, 2)
    pairs = {}
    for label in ("label", "binary"):
        rdd, stats = ingest(df, label_col=label, dense=request.param)
        source = fused_source(df, label_col=label, dense=request.param)
        pairs[label] = (TreeEngine(rdd, stats), FusedEngine(source))
    yield pairs
    for tree, fused in pairs.values():
        fused.unpersist()
        tree.unpersist()
    df.unpersist()


def test_the_statistics_equal_the_ingests_without_a_block_cache(engines):
    for tree, fused in engines.values():
        assert fused.stats == tree.stats and fused.stats.partition_rows == tree.stats.partition_rows
        assert fused.source._rdd is None and fused.num_partitions == 2


@pytest.mark.parametrize("loss, label, kwargs", LOSS_CASES)
def test_fused_equals_tree(engines, loss, label, kwargs):
    tree, fused = engines[label]
    a = build_objective(tree, loss, **kwargs)[0]
    b = build_objective(fused, loss, **kwargs)[0]
    rng = np.random.default_rng(1)
    z = rng.normal(scale=0.1, size=a.n_params)
    if loss == "huber":
        z[-1] = 1.5
    v = rng.normal(size=a.n_params)
    fa, ga = a.loss_grad(z)
    hva, sa = a.hessp(z, v), a.stochastic_loss_grad(z, 0.3, 7)
    with fused.session():
        fb, gb = b.loss_grad(z)
        hvb, sb = b.hessp(z, v), b.stochastic_loss_grad(z, 0.3, 7)
    assert abs(fa - fb) <= 1e-10 * abs(fa) and rel(gb, ga) < 1e-10 and rel(hvb, hva) < 1e-10
    assert abs(sa[0] - sb[0]) <= 1e-10 * abs(sa[0]) and rel(sb[1], sa[1]) < 1e-10
    assert not fused.active and fused.kind == "resident" and fused.source._rdd is None


def _crash_in_load(marker_dir, batches):
    """mapInArrow pass-through that kills its Python worker once, in partition 0, once armed."""
    from pyspark import TaskContext

    if (TaskContext.get().partitionId() == 0 and os.path.exists(os.path.join(marker_dir, "armed"))
            and not os.path.exists(os.path.join(marker_dir, "crashed"))):
        open(os.path.join(marker_dir, "crashed"), "w").close()
        os._exit(17)
    yield from batches


def _sums(block, payload):
    return float(block.w @ block.y), block.X.T @ block.y


def _sparkopt_threads():
    return [t for t in threading.enumerate() if t.name.startswith("sparkopt-resident")]


def test_a_task_killed_during_the_load_rebuilds_the_session_from_the_lineage(spark, tmp_path):
    base = letter_head(spark, 2)
    # not cached: each session computes its rows from this lineage, inside its barrier tasks
    df = base.mapInArrow(partial(_crash_in_load, str(tmp_path)), base.schema)
    rdd, stats = ingest(base, label_col="binary")
    want = TreeEngine(rdd, stats).map_sum(_sums, None)
    source = fused_source(df, label_col="binary")
    fused = FusedEngine(source)
    (tmp_path / "armed").touch()
    try:
        got = fused.map_sum(_sums, None)
        assert (tmp_path / "crashed").exists()
        assert fused.restarts == 1 and fused.sessions_started == 1     # the first never had its tasks connect
        assert got[0] == pytest.approx(want[0], rel=1e-12) and rel(got[1], want[1]) < 1e-12
    finally:
        fused.unpersist()
        rdd.unpersist()
        base.unpersist()
    deadline = time.time() + 10
    while (_sparkopt_threads() or spark.sparkContext.statusTracker().getActiveJobsIds()) and time.time() < deadline:
        time.sleep(0.2)
    assert _sparkopt_threads() == [] and spark.sparkContext.statusTracker().getActiveJobsIds() == []


def test_make_engine_over_a_source(spark, engines):
    tree, fused = engines["binary"]
    source = fused.source
    assert isinstance(make_engine(source, source.stats, 2, "auto"), FusedEngine)     # 2 partitions, 2 slots
    assert isinstance(make_engine(source, source.stats, 2, "resident"), FusedEngine)
    assert source._rdd is None
    on_tree = make_engine(source, source.stats, 2, "tree")       # the block RDD, ingested once
    assert isinstance(on_tree, TreeEngine) and not isinstance(on_tree, ResidentEngine)
    assert isinstance(source, FusedSource) and source._rdd is not None
    assert rel(on_tree.map_sum(_sums, None)[1], tree.map_sum(_sums, None)[1]) < 1e-12
    source.unpersist()
    assert source._rdd is None


def test_estimators_load_in_the_session_and_a_second_fit_reuses_the_statistics(spark, caplog):
    from sparkopt.ml import LogisticRegression, clear_cache

    df = letter_head(spark, 2)
    clear_cache()
    try:
        tree = LogisticRegression(regParam=1e-2, labelCol="binary", solver="newton", tol=1e-10,
                                  engine="tree").fit(df)
        clear_cache()
        first = LogisticRegression(regParam=1e-2, labelCol="binary", solver="newton", tol=1e-10,
                                   engine="resident").fit(df)
        second = LogisticRegression(regParam=1e-3, labelCol="binary", solver="newton", tol=1e-10,
                                    engine="resident").fit(df)
        from sparkopt.ml.cache import ENGINE_CACHE

        held = [entry for _, entry in ENGINE_CACHE._entries.values()]
        assert len(held) == 1 and isinstance(held[0], FusedSource) and held[0]._rdd is None
    finally:
        clear_cache()
        df.unpersist()
    assert first._fit.params["engine"] == second._fit.params["engine"] == "resident"
    assert first.summary.ingestSeconds > 0 and second.summary.ingestSeconds == 0.0
    assert rel(first.coefficients.toArray(), tree.coefficients.toArray()) < 1e-10
    assert abs(first.intercept - tree.intercept) < 1e-10 * max(1.0, abs(tree.intercept))


def test_partitions_that_disagree_on_the_kind_are_held_as_csr_as_the_ingest_holds_them(spark):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType
    from test_ingest import to_sparse

    rng = np.random.default_rng(3)
    X = np.where(rng.random((400, 7)) < 0.8, 0.0, rng.normal(size=(400, 7)))   # sparse in fact too
    y = (rng.random(400) < 0.5).astype(float)
    # rows 0..199 dense vectors, 200..399 sparse: each of the 2 partitions sees one kind (a shuffle: a
    # barrier stage refuses a coalesce in its own chain of RDDs)
    vectors = [Vectors.dense(r) if i < 200 else to_sparse(r) for i, r in enumerate(X)]
    schema = StructType([StructField("i", IntegerType()), StructField("features", VectorUDT()),
                         StructField("label", DoubleType())])
    df = spark.createDataFrame([(i, v, float(y[i])) for i, v in enumerate(vectors)], schema)
    df = df.repartitionByRange(2, "i").cache()
    rdd, stats = ingest(df)
    source = fused_source(df)
    fused = FusedEngine(source)
    try:
        assert source.to_csr and source.stats == stats and stats.n_dense_blocks == 0
        with fused.session():
            kinds = fused.map_sum(_kinds, None)
            got = fused.map_sum(_sums, None)
        assert tuple(kinds) == (0.0, float(stats.n_blocks))      # (dense blocks, sparse blocks) held
        want = TreeEngine(rdd, stats).map_sum(_sums, None)
        assert got[0] == pytest.approx(want[0], rel=1e-12) and rel(got[1], want[1]) < 1e-12
    finally:
        fused.unpersist()
        rdd.unpersist()
        df.unpersist()


def _kinds(block, payload):
    return np.array([0.0 if block.is_sparse else 1.0, 1.0 if block.is_sparse else 0.0])


def _fold_sums(block, payload):
    """Per fold id 0..2: rows, sum of w*y; and the offsets' sum (the columns the blocks carry)."""
    out = np.zeros(7)
    for k in range(3):
        held = block.fold == k
        out[2 * k], out[2 * k + 1] = held.sum(), float(block.w[held] @ block.y[held])
    out[6] = float(block.offset.sum())
    return out


def test_the_session_blocks_carry_the_fold_and_offset_columns_as_the_ingests(spark):
    from pyspark.sql import functions as F

    base = letter_head(spark, 2)
    df = base.withColumn("myFold", F.col("label") % 3).withColumn("off", F.col("label") / 100.0)
    rdd, stats = ingest(df, label_col="binary", offset_col="off", fold_col="myFold")
    source = fused_source(df, label_col="binary", offset_col="off", fold_col="myFold")
    fused = FusedEngine(source)
    try:
        assert source.spec.fold == "myFold" and source.stats == stats
        got = fused.map_sum(_fold_sums, None)
        want = TreeEngine(rdd, stats).map_sum(_fold_sums, None)
        assert source._rdd is None and min(got[0:6:2]) > 0 and got[0:6:2].sum() == stats.n_rows
        assert rel(got, want) < 1e-12
        with_rdd = make_engine(source, source.stats, 2, "tree")      # the on-demand ingest keeps them too
        assert rel(with_rdd.map_sum(_fold_sums, None), want) < 1e-12
    finally:
        fused.unpersist()
        rdd.unpersist()
        base.unpersist()
