"""TreeEngine on the shared local[2] session, against LocalEngine on the same blocks."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import dataset
from pyspark import cloudpickle
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import types as T

from sparkopt.engine import DataStats, LocalEngine, TreeEngine, ingest
from sparkopt.errors import InputError

pytestmark = pytest.mark.spark

# Test modules are not importable on the Python workers: ship this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fn(b, v):
    """Test function: weighted sum of margins and the weighted column sums."""
    return float(b.w @ (b.X @ v)), b.X.T @ b.w


def n_rows(b, _):
    return float(b.n_rows)


def persistent(spark) -> int:
    return spark.sparkContext._jsc.getPersistentRDDs().size()


def assert_same(a, b, rtol=1e-10):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=0)


@pytest.fixture(scope="module")
def a9a_df(spark):
    return spark.read.format("libsvm").option("numFeatures", 123).load(str(dataset("a9a")))


@pytest.fixture(scope="module")
def a9a_16(a9a_df):
    rdd, stats = ingest(a9a_df, num_partitions=16)
    yield rdd, stats
    rdd.unpersist()


@pytest.fixture(scope="module")
def a9a_1(a9a_df):
    rdd, stats = ingest(a9a_df.coalesce(1))
    yield rdd, stats
    rdd.unpersist()


@pytest.fixture(scope="module")
def tiny(spark):
    """8 dense rows in 16 partitions: at least 8 empty partitions."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(8, 5))
    y = rng.integers(0, 2, 8).astype(float)
    w = rng.uniform(0.5, 2, 8)
    schema = T.StructType(
        [
            T.StructField("features", VectorUDT()),
            T.StructField("label", T.DoubleType()),
            T.StructField("w", T.DoubleType()),
        ]
    )
    df = spark.createDataFrame(
        [(Vectors.dense(r), float(a), float(b)) for r, a, b in zip(X, y, w)], schema
    )
    rdd, stats = ingest(df, weight_col="w", num_partitions=16)
    yield rdd, stats, (X, w)
    rdd.unpersist()


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("data", ["a9a_1", "a9a_16", "tiny"])
def test_map_sum_equals_local_engine(request, data, depth):
    rdd, stats = request.getfixturevalue(data)[:2]
    engine = TreeEngine(rdd, stats, depth=depth)
    local = LocalEngine(engine.collect_blocks(), stats=stats, depth=depth)
    v = np.linspace(-1.0, 1.0, stats.n_features)
    got = engine.map_sum(fn, v)
    assert_same(got, local.map_sum(fn, v))
    assert engine.map_sum(n_rows, None) == stats.n_rows
    if data == "tiny":
        X, w = request.getfixturevalue("tiny")[2]
        assert sum(1 for p in engine.collect_blocks() if not p) >= 8
        assert_same(got, (float(w @ (X @ v)), X.T @ w))


def test_engine_properties_and_counters(a9a_16):
    rdd, stats = a9a_16
    engine = TreeEngine(rdd, stats)
    assert engine.stats is stats
    assert (engine.n_rows, engine.n_features) == (32561, 123)
    assert engine.weight_sum == 32561.0
    assert engine.num_partitions == 16 and engine.depth == 2
    assert engine.evaluations == 0 and engine.passes == 0.0
    engine.map_sum(n_rows, None)
    engine.map_sum(n_rows, None, fraction=0.25, seed=1)
    assert engine.evaluations == 2 and engine.passes == pytest.approx(1.25)
    engine.reset_counters()
    assert engine.evaluations == 0 and engine.passes == 0.0


def test_sampled_map_sum_matches_local_engine(a9a_16):
    rdd, stats = a9a_16
    engine = TreeEngine(rdd, stats, depth=2)
    local = LocalEngine(engine.collect_blocks(), stats=stats)
    v = np.linspace(-1.0, 1.0, 123)

    def sampled(b, v):
        return fn(b, v) + (float(b.n_rows), float(b.y @ np.arange(b.n_rows)))

    a = engine.map_sum(sampled, v, fraction=0.1, seed=11)
    assert_same(a, local.map_sum(sampled, v, fraction=0.1, seed=11), rtol=1e-12)
    assert_same(a, engine.map_sum(sampled, v, fraction=0.1, seed=11), rtol=1e-12)
    other = engine.map_sum(sampled, v, fraction=0.1, seed=12)
    assert not np.allclose(a[1], other[1])
    # ~10% of rows (binomial: sd ~ 54 rows)
    assert abs(a[2] - 0.1 * 32561) < 5 * np.sqrt(32561 * 0.1 * 0.9)


def test_broadcasts_are_destroyed(spark, a9a_16, monkeypatch):
    rdd, stats = a9a_16
    sc = spark.sparkContext
    made = []
    original = type(sc).broadcast

    def recording(self, value):
        bc = original(self, value)
        made.append(bc)
        return bc

    monkeypatch.setattr(type(sc), "broadcast", recording)
    engine = TreeEngine(rdd, stats)
    engine.map_sum(fn, np.ones(123))

    def boom(b, v):
        raise ValueError("boom in fn")

    with pytest.raises(Exception, match="boom in fn"):
        engine.map_sum(boom, np.ones(123))
    assert len(made) == 2
    assert all(not bc._jbroadcast.isValid() for bc in made)
    assert engine.evaluations == 1


def test_all_partitions_empty_raises(spark):
    engine = TreeEngine(spark.sparkContext.parallelize([], 3), DataStats.empty(2))
    with pytest.raises(RuntimeError, match="every partition is empty"):
        engine.map_sum(fn, np.ones(2))


@pytest.mark.parametrize("depth", [0, -1, 1.5, "2"])
def test_depth_is_validated(spark, depth):
    with pytest.raises(InputError, match="aggregationDepth must be an integer >= 1"):
        TreeEngine(spark.sparkContext.parallelize([], 1), DataStats.empty(2), depth=depth)


def test_sampling_parameters_are_validated(a9a_16):
    engine = TreeEngine(*a9a_16)
    with pytest.raises(InputError, match=r"fraction must be in \(0, 1\], got 2.0"):
        engine.map_sum(fn, np.ones(123), fraction=2.0)


def test_context_manager_unpersists(spark, a9a_df):
    before = persistent(spark)
    rdd, stats = ingest(a9a_df)
    assert persistent(spark) == before + 1
    with TreeEngine(rdd, stats) as engine:
        assert engine.map_sum(n_rows, None) == 32561
    assert persistent(spark) == before
    assert not rdd.is_cached
