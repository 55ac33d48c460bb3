"""The DataFrame-only tree engine (sparkopt.engine.frame: what a Spark Connect session runs) on the
classic session, against the RDD ingest and tree engine: the same blocks, statistics, sums and
checks. tests/connect runs it on a real Connect session."""
from __future__ import annotations

import sys
from functools import partial

import numpy as np
import pytest
from conftest import dataset
from pyspark import cloudpickle
from pyspark.ml.linalg import Vectors
from test_ingest import to_sparse, vec_df

from sparkopt.engine import TreeEngine, ingest, make_engine
from sparkopt.engine.frame import BlockFrame, FrameEngine, ingest_frame
from sparkopt.engine.frame_resident import FrameResidentEngine
from sparkopt.engine.session import ARROW_MAX_BYTES
from sparkopt.errors import InputError

pytestmark = pytest.mark.spark
cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the executors cannot import this module


def gradient(block, v):
    return float(block.w @ (block.X @ v)), block.X.T @ (block.w * (block.X @ v - block.y))


def same_blocks(ours, theirs):
    assert [len(p) for p in ours] == [len(p) for p in theirs]
    for a, b in zip(sum(ours, []), sum(theirs, [])):
        assert a.is_sparse == b.is_sparse
        xa, xb = (a.X.toarray(), b.X.toarray()) if a.is_sparse else (a.X, b.X)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.w, b.w)


@pytest.fixture(scope="module")
def a9a_both(spark):
    df = spark.read.format("libsvm").option("numFeatures", 123).load(str(dataset("a9a"))).repartition(3).cache()
    rdd, stats = ingest(df)
    frame, frame_stats = ingest_frame(df)
    yield TreeEngine(rdd, stats), FrameEngine(frame, frame_stats)
    rdd.unpersist()
    frame.unpersist()
    df.unpersist()


def test_same_blocks_statistics_and_sums_as_the_rdd_engine(a9a_both):
    tree, frame = a9a_both
    same_blocks(frame.collect_blocks(), tree.collect_blocks())
    assert frame.stats.n_rows == tree.stats.n_rows == 32561
    np.testing.assert_array_equal(frame.stats.feature_mean, tree.stats.feature_mean)
    assert frame.stats.partition_rows == tree.stats.partition_rows
    v = np.linspace(-1, 1, 123)
    for kwargs in ({}, {"fraction": 0.3, "seed": 11}):
        a, b = frame.map_sum(gradient, v, **kwargs), tree.map_sum(gradient, v, **kwargs)
        assert a[0] == pytest.approx(b[0], rel=1e-12)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-9)
    assert frame.kind == "tree" and frame.num_partitions == 3


def test_make_engine_takes_a_block_frame(a9a_both):
    _, frame = a9a_both
    assert isinstance(make_engine(frame.blocks, frame.stats, 2, "tree"), FrameEngine)
    assert isinstance(make_engine(frame.blocks, frame.stats, 2, "auto"), FrameEngine)
    on_driver = make_engine(frame.blocks, frame.stats, 2, "driver")
    assert on_driver.kind == "driver"
    same_blocks(on_driver.collect_blocks(), frame.collect_blocks())
    resident = make_engine(frame.blocks, frame.stats, 2, "resident")
    assert isinstance(resident, FrameResidentEngine) and not resident.fallback
    # 3 partitions, local[2]: a barrier job could never start; said before any session
    with pytest.raises(InputError, match="3 partitions but the application has 2 task slots"):
        resident.map_sum(gradient, np.zeros(123))
    assert not resident.active and resident.sessions_started == 0


def test_resident_engine_over_block_rows_equals_the_tree_engine_and_recovers_a_lost_task(spark, tmp_path):
    from test_resident_engine import _crash_once

    df = spark.read.format("libsvm").option("numFeatures", 123).load(str(dataset("a9a"))).limit(4000).repartition(2)
    rdd, stats = ingest(df)
    before = spark.conf.get(ARROW_MAX_BYTES, None)
    blocks, frame_stats = ingest_frame(df)      # its batches cut by rows only, the setting put back
    assert spark.conf.get(ARROW_MAX_BYTES, None) == before
    tree = TreeEngine(rdd, stats)
    auto = make_engine(blocks, frame_stats, 2, "auto")        # 2 partitions, local[2]: resident
    try:
        assert isinstance(auto, FrameResidentEngine) and auto.fallback
        v = np.linspace(-1, 1, 123)
        (tmp_path / "unused").mkdir()
        expected = tree.map_sum(partial(_crash_once, str(tmp_path / "unused"), 10**9), None)
        sampling = ({}, {"fraction": 0.3, "seed": 11})
        want = [tree.map_sum(gradient, v, **kwargs) for kwargs in sampling]   # a session holds every slot
        crash = partial(_crash_once, str(tmp_path), 3)
        auto.register_functions([gradient, crash])         # shipped by the first session
        with auto.session():
            for kwargs, b in zip(sampling, want):
                a = auto.map_sum(gradient, v, **kwargs)
                assert a[0] == pytest.approx(b[0], rel=1e-12)
                np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-9)
            # task 0's Python worker dies at its 3rd call: the session is rebuilt from the block rows
            for _ in range(4):
                got = auto.map_sum(crash, None)
                assert got[0] == pytest.approx(expected[0], rel=1e-12) and got[1] == expected[1]
        assert (tmp_path / "crashed").exists() and auto.restarts == 1 and auto.sessions_started == 2
        assert not auto.active and auto.kind == "resident"
    finally:
        auto.unpersist()
        rdd.unpersist()


def test_bad_data_is_refused_with_the_cache_released(spark):
    df = vec_df(spark, [Vectors.dense([1.0, 2.0]), Vectors.dense([3.0, float("nan")])], [0.0, 1.0])
    cached_before = spark.sparkContext._jsc.sc().getPersistentRDDs().size()
    with pytest.raises(InputError, match="features"):
        ingest_frame(df)
    assert spark.sparkContext._jsc.sc().getPersistentRDDs().size() == cached_before
    with pytest.raises(InputError, match="label column 'nope' not found"):
        ingest_frame(df, label_col="nope")


def test_partitions_that_disagree_on_the_kind_end_up_csr(spark):
    rng = np.random.default_rng(5)
    X = np.where(rng.random((400, 6)) < 0.3, rng.normal(size=(400, 6)), 0.0)
    y = rng.integers(0, 2, 400).astype(float)
    vectors = [Vectors.dense(r) if i < 200 else to_sparse(r) for i, r in enumerate(X)]
    df = vec_df(spark, vectors, y)       # 4 partitions: the first two see only dense vectors
    blocks, stats = ingest_frame(df)
    try:
        assert isinstance(blocks, BlockFrame) and stats.n_dense_blocks == 0 and stats.is_sparse
        parts = FrameEngine(blocks, stats).collect_blocks()
        assert all(b.is_sparse for p in parts for b in p)
        np.testing.assert_array_equal(np.vstack([b.X.toarray() for p in parts for b in p]), X)
    finally:
        blocks.unpersist()
