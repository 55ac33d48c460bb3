"""ingest(): DataFrame -> persisted RDD[Block] + DataStats, on the shared local[2] session."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import dataset, spark_conf, spark_jobs as jobs
from pyspark import StorageLevel
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkopt.engine import DataStats, ingest
from sparkopt.errors import InputError

pytestmark = pytest.mark.spark



# ---------------------------------------------------------------- helpers
def persistent(spark) -> int:
    return spark.sparkContext._jsc.getPersistentRDDs().size()




def stack(rdd):
    """(X, y, w, per-partition blocks) from a blocks RDD, rows in partition order."""
    parts = rdd.glom().collect()
    blocks = [b for p in parts for b in p]
    if blocks[0].is_sparse:
        X = sp.vstack([b.X for b in blocks]).tocsr()
    else:
        X = np.vstack([b.X for b in blocks])
    y = np.concatenate([b.y for b in blocks])
    w = np.concatenate([b.w for b in blocks])
    return X, y, w, parts


def ref_moments(X, w):
    """Spark Summarizer's weighted mean and unbiased variance, in extended precision."""
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.longdouble)
    w = np.asarray(w, dtype=np.longdouble)
    W = w.sum()
    mean = (w[:, None] * X).sum(0) / W
    var = (w[:, None] * (X - mean) ** 2).sum(0) / (W - (w * w).sum() / W)
    return mean.astype(float), var.astype(float)


def assert_stats_match(stats: DataStats, X, y, w, rtol=1e-12):
    mean, var = ref_moments(X, w)
    np.testing.assert_allclose(stats.feature_mean, mean, rtol=rtol, atol=1e-15)
    np.testing.assert_allclose(stats.feature_var, var, rtol=rtol, atol=1e-300)
    lm, lv = ref_moments(y[:, None], w)
    assert stats.label_mean == pytest.approx(lm[0], rel=rtol, abs=1e-15)
    assert stats.label_var == pytest.approx(lv[0], rel=rtol)
    assert stats.n_rows == X.shape[0] and stats.n_features == X.shape[1]
    assert stats.weight_sum == pytest.approx(float(np.sum(w)), rel=1e-14)
    dense = X.toarray() if sp.issparse(X) else X
    np.testing.assert_array_equal(stats.feature_nonzero, (dense != 0).sum(0))
    assert (stats.label_min, stats.label_max) == (y.min(), y.max())


VEC_SCHEMA = T.StructType(
    [
        T.StructField("features", VectorUDT()),
        T.StructField("label", T.DoubleType()),
        T.StructField("w", T.DoubleType()),
    ]
)


def vec_df(spark, vectors, y, w=None):
    w = np.ones(len(y)) if w is None else w
    rows = [
        (v, None if yi is None else float(yi), None if wi is None else float(wi))
        for v, yi, wi in zip(vectors, y, w)
    ]
    return spark.createDataFrame(rows, VEC_SCHEMA)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(42)
    n, d = 400, 7
    X = rng.normal(size=(n, d)) * np.arange(1, d + 1) + np.arange(d)
    X[rng.random((n, d)) < 0.7] = 0.0      # 30% full: sparse vectors of it stay CSR
    y = rng.integers(0, 2, size=n).astype(float)
    w = rng.uniform(0.5, 2.0, size=n)
    return X, y, w


# ---------------------------------------------------------------- a9a (sparse, real data)
@pytest.fixture(scope="module")
def a9a(spark):
    from sklearn.datasets import load_svmlight_file

    path = str(dataset("a9a"))
    df = spark.read.format("libsvm").option("numFeatures", 123).load(path)
    Xs, ys = load_svmlight_file(path, n_features=123)
    return df, Xs.tocsr(), ys


@pytest.fixture(scope="module")
def a9a_ingested(spark, a9a):
    rdd, stats = ingest(a9a[0].repartition(3))
    yield rdd, stats
    rdd.unpersist()


def test_a9a_equals_sklearn_and_stays_sparse(a9a, a9a_ingested):
    _, Xs, ys = a9a
    rdd, stats = a9a_ingested
    X, y, w, parts = stack(rdd)
    # repartition(3) shuffles rows: compare the multisets of rows (sorted by their content)
    def order(X, y):
        return np.lexsort(np.vstack([X.toarray().T, y]))

    i, j = order(X, y), order(Xs, ys)
    assert X.shape == (32561, 123)
    assert all(b.is_sparse for p in parts for b in p) and stats.is_sparse
    assert abs(X[i] - Xs[j]).max() == 0.0
    np.testing.assert_array_equal(y[i], ys[j])
    np.testing.assert_array_equal(w, 1.0)
    assert_stats_match(stats, Xs, ys, np.ones(len(ys)))
    assert stats.nnz == Xs.nnz == 451592
    assert stats.num_partitions == 3 and stats.n_nonempty_partitions == 3
    assert stats.n_label_non_integer == 0 and stats.null_counts == {}


def test_a9a_in_original_order_and_partitioning(spark, a9a):
    df, Xs, ys = a9a
    with jobs(spark) as job_ids:
        rdd, stats = ingest(df)
    try:
        # one job fills the cache and returns the statistics
        assert len(job_ids) == 1
        assert rdd.is_cached and rdd.getStorageLevel() == StorageLevel.MEMORY_AND_DISK
        X, y, _, parts = stack(rdd)
        assert rdd.getNumPartitions() == df.rdd.getNumPartitions() == len(parts)
        assert abs(X - Xs).max() == 0.0
        np.testing.assert_array_equal(y, ys)
        assert_stats_match(stats, Xs, ys, np.ones(len(ys)))
    finally:
        rdd.unpersist()


def test_map_in_arrow_transfer_gives_the_same_blocks_and_stats(spark, a9a, a9a_ingested):
    df = a9a[0].repartition(3)
    rdd1, stats1 = a9a_ingested
    rdd2, stats2 = ingest(df, transfer="map_in_arrow")
    try:
        X1, y1, _, _ = stack(rdd1)
        X2, y2, _, _ = stack(rdd2)
        # the same shuffle output: same partitions, same blocks, bit-identical statistics
        assert abs(X1 - X2).max() == 0.0 and np.array_equal(y1, y2)
        assert stats1 == stats2
    finally:
        rdd2.unpersist()


@pytest.fixture
def small_arrow_batches(spark):
    with spark_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", "1000"):
        yield


@pytest.mark.parametrize("transfer", ["arrow_batches", "map_in_arrow"])
def test_batches_accumulate_into_blocks(spark, a9a, small_arrow_batches, transfer):
    df = a9a[0]
    # 1000-row Arrow batches of a9a take ~180 kB each: two per 300 kB block
    rdd, stats = ingest(df, max_block_bytes=300_000, transfer=transfer)
    try:
        X, y, _, parts = stack(rdd)
        sizes = [b.n_rows for p in parts for b in p]
        assert len(parts) == 1 and sizes == [2000] * 16 + [561]
        assert stats.n_blocks == sum(len(p) for p in parts)
        assert abs(X - a9a[1]).max() == 0.0
        assert_stats_match(stats, a9a[1], a9a[2], np.ones(len(y)))
    finally:
        rdd.unpersist()


# ---------------------------------------------------------------- dense / mixed / columns
def test_dense_vectors_with_weights(spark, small):
    X, y, w = small
    df = vec_df(spark, [Vectors.dense(r) for r in X], y, w)
    rdd, stats = ingest(df, weight_col="w")
    try:
        Xb, yb, wb, parts = stack(rdd)
        assert isinstance(Xb, np.ndarray) and not stats.is_sparse
        for b in (b for p in parts for b in p):
            assert b.X.dtype == np.float64 and b.X.flags.c_contiguous
        np.testing.assert_array_equal(Xb, X)
        np.testing.assert_array_equal(yb, y)
        np.testing.assert_array_equal(wb, w)
        assert_stats_match(stats, X, y, w)
        assert stats.num_partitions == rdd.getNumPartitions() == df.rdd.getNumPartitions()
    finally:
        rdd.unpersist()


@pytest.mark.parametrize("transfer", ["arrow_batches", "map_in_arrow"])
def test_offset_column_rides_with_its_rows(spark, small, small_arrow_batches, transfer):
    """offset_col (a GLM's offsetCol): every block carries its rows' offsets through both transfers
    and the driver collect; a null offset is refused like any null, naming the column; without
    offset_col blocks have none."""
    from sparkopt.engine import collect_to_driver

    X, y, w = small
    offset = np.arange(len(y), dtype=float)           # a row's offset names the row
    rows = [(Vectors.dense(x), float(a), float(b), float(o)) for x, a, b, o in zip(X, y, w, offset)]
    schema = T.StructType([T.StructField("features", VectorUDT()), T.StructField("label", T.DoubleType()),
                           T.StructField("w", T.DoubleType()), T.StructField("o", T.DoubleType())])
    df = spark.createDataFrame(rows, schema).repartition(3)
    rdd, stats = ingest(df, weight_col="w", offset_col="o", transfer=transfer)
    try:
        blocks = [b for p in rdd.glom().collect() for b in p]
        assert all(b.offset is not None and b.offset.shape == b.y.shape for b in blocks)
        got = np.concatenate([b.offset for b in blocks])
        index = got.astype(int)
        assert stats.n_rows == len(y) and sorted(index) == list(range(len(y)))
        np.testing.assert_array_equal(np.concatenate([b.y for b in blocks]), y[index])
        np.testing.assert_array_equal(np.concatenate([b.w for b in blocks]), w[index])
        np.testing.assert_array_equal(np.vstack([b.X for b in blocks]), X[index])
    finally:
        rdd.unpersist()
    driver = collect_to_driver(df, weight_col="w", offset_col="o")
    held = [b for p in driver.collect_blocks() for b in p]
    np.testing.assert_array_equal(np.sort(np.concatenate([b.offset for b in held])), np.sort(got))
    plain, _ = ingest(df, weight_col="w")
    try:
        assert all(b.offset is None for p in plain.glom().collect() for b in p)
    finally:
        plain.unpersist()
    with_null = df.withColumn("o", F.when(F.col("o") == 7.0, F.lit(None)).otherwise(F.col("o")))
    with pytest.raises(InputError, match="column 'o' has 1 null value"):
        ingest(with_null, weight_col="w", offset_col="o", transfer=transfer)


def test_dense_vectors_forced_to_csr(spark, small):
    X, y, w = small
    df = vec_df(spark, [Vectors.dense(r) for r in X], y, w)
    rdd, stats = ingest(df, weight_col="w", dense=False)
    try:
        Xb, _, _, _ = stack(rdd)
        assert sp.issparse(Xb) and stats.is_sparse
        assert Xb.nnz == np.count_nonzero(X)  # zeros of dense vectors are not stored
        np.testing.assert_array_equal(Xb.toarray(), X)
        assert_stats_match(stats, X, y, w)
    finally:
        rdd.unpersist()


def to_sparse(r):
    nz = np.flatnonzero(r)
    return Vectors.sparse(len(r), nz.tolist(), r[nz].tolist())


def test_mixed_dense_and_sparse_vectors(spark, small):
    X, y, w = small
    vectors = [Vectors.dense(r) if i % 3 else to_sparse(r) for i, r in enumerate(X)]
    df = vec_df(spark, vectors, y, w)
    for dense, kind in ((None, sp.csr_matrix), (True, np.ndarray)):
        rdd, stats = ingest(df, weight_col="w", dense=dense)
        try:
            Xb, yb, _, parts = stack(rdd)
            assert all(isinstance(b.X, kind) for p in parts for b in p)
            np.testing.assert_array_equal(Xb.toarray() if sp.issparse(Xb) else Xb, X)
            np.testing.assert_array_equal(yb, y)
            assert_stats_match(stats, X, y, w)
        finally:
            rdd.unpersist()


def test_sparse_vectors_dense_in_fact_are_stored_dense(spark, small):
    """Sparse vectors with at least half of their entries stored become dense blocks (unless
    dense=False); the numbers are the same."""
    X, y, w = small
    full = np.where(X == 0, 1.5, X)                     # 100% stored
    df = vec_df(spark, [to_sparse(r) for r in full], y, w)
    for dense, kind in ((None, np.ndarray), (False, sp.csr_matrix)):
        rdd, stats = ingest(df, weight_col="w", dense=dense)
        try:
            Xb, _, _, parts = stack(rdd)
            assert all(isinstance(b.X, kind) for p in parts for b in p)
            np.testing.assert_array_equal(Xb.toarray() if sp.issparse(Xb) else Xb, full)
            assert_stats_match(stats, full, y, w)
        finally:
            rdd.unpersist()


def test_partitions_that_disagree_on_the_kind_end_up_csr(spark, small):
    X, y, w = small
    # rows 0..199 dense vectors, 200..399 sparse: whole partitions see only one kind
    vectors = [Vectors.dense(r) if i < 200 else to_sparse(r) for i, r in enumerate(X)]
    df = vec_df(spark, vectors, y, w)
    assert df.rdd.getNumPartitions() >= 2
    before = persistent(spark)
    rdd, stats = ingest(df, weight_col="w")
    try:
        assert persistent(spark) == before + 1  # the dense-kind cache was released
        Xb, _, _, parts = stack(rdd)
        assert all(b.is_sparse for p in parts for b in p)
        assert stats.is_sparse and stats.n_dense_blocks == 0
        np.testing.assert_array_equal(Xb.toarray(), X)
        assert_stats_match(stats, X, y, w)
    finally:
        rdd.unpersist()


def test_numeric_columns_of_mixed_types(spark, small):
    X, y, w = small
    Xi = np.round(X * 3)
    pdf_rows = [
        (int(a), int(b), float(c), float(d), int(e), int(lab), int(wt))
        for a, b, c, d, e, lab, wt in zip(
            Xi[:, 0], Xi[:, 1], X[:, 2], X[:, 3], Xi[:, 4], y, np.round(w * 2)
        )
    ]
    schema = T.StructType(
        [
            T.StructField("i32", T.IntegerType()),
            T.StructField("i64", T.LongType()),
            T.StructField("dbl", T.DoubleType()),
            T.StructField("flt", T.FloatType()),
            T.StructField("i16", T.ShortType()),
            T.StructField("y", T.IntegerType()),
            T.StructField("wt", T.IntegerType()),
        ]
    )
    df = spark.createDataFrame(pdf_rows, schema)
    cols = ["i32", "i64", "dbl", "flt", "i16"]
    rdd, stats = ingest(df, cols, "y", "wt")
    try:
        Xb, yb, wb, _ = stack(rdd)
        expected = np.column_stack(
            [Xi[:, 0], Xi[:, 1], X[:, 2], X[:, 3].astype(np.float32).astype(float), Xi[:, 4]]
        )
        assert isinstance(Xb, np.ndarray) and Xb.flags.c_contiguous
        np.testing.assert_array_equal(Xb, expected)
        np.testing.assert_array_equal(yb, y)
        np.testing.assert_array_equal(wb, np.round(w * 2))
        assert_stats_match(stats, expected, y, np.round(w * 2))
    finally:
        rdd.unpersist()


def test_column_names_needing_quotes(spark):
    df = spark.createDataFrame([(1.0, 2.0, 0.0), (3.0, 5.0, 1.0)], ["a.b", "c`d", "l a"])
    rdd, stats = ingest(df, ["a.b", "c`d"], "l a")
    try:
        Xb, yb, _, _ = stack(rdd)
        np.testing.assert_array_equal(Xb, [[1.0, 2.0], [3.0, 5.0]])
        np.testing.assert_array_equal(yb, [0.0, 1.0])
    finally:
        rdd.unpersist()


# ---------------------------------------------------------------- partitions
def test_num_partitions_and_empty_partitions(spark, small):
    X, y, w = small
    df = vec_df(spark, [Vectors.dense(r) for r in X[:8]], y[:8], w[:8])
    rdd, stats = ingest(df, num_partitions=16)
    try:
        parts = rdd.glom().collect()
        assert len(parts) == 16 == stats.num_partitions
        nonempty = sum(1 for p in parts if p)
        assert nonempty == stats.n_nonempty_partitions <= 8
        assert stats.n_rows == 8
    finally:
        rdd.unpersist()


def test_blocks_keep_the_dataframe_partitions(spark, a9a):
    df = a9a[0].repartition(4)
    counts = dict(
        df.select(F.spark_partition_id().alias("p")).groupBy("p").count().collect()
    )
    rdd, _ = ingest(df)
    try:
        per_part = rdd.mapPartitionsWithIndex(
            lambda i, it: [(i, sum(b.n_rows for b in it))]
        ).collect()
        assert {i: n for i, n in per_part if n} == counts
    finally:
        rdd.unpersist()


# ---------------------------------------------------------------- errors before any job
@pytest.mark.parametrize(
    "args, match",
    [
        (dict(features_col="nope"), r"features column 'nope' not found in the DataFrame; "
         r"available columns: \['features', 'label', 'w', 's', 'x'\]"),
        (dict(label_col="lbl"), r"label column 'lbl' not found.*available columns"),
        (dict(weight_col="ww"), r"weight column 'ww' not found.*available columns"),
        (dict(label_col="s"), r"label column 's' must be numeric .*got type string"),
        (dict(weight_col="s"), r"weight column 's' must be numeric .*got type string"),
        (dict(features_col="x"), r"features column 'x' must be a vector column .*got type double"),
        (dict(features_col=["x", "s"]), r"feature column 's' must be numeric .*got type string"),
        (dict(features_col=["x", "zz"]), r"feature column 'zz' not found.*available columns"),
        (dict(features_col=["x", "x"]), r"feature column 'x' is listed more than once"),
        (dict(features_col=[]), r"features_col is an empty list"),
        (dict(features_col=3), r"features_col must be a vector column name or a list"),
        (dict(max_block_bytes=0), r"max_block_bytes must be an integer in \[1, \d+\], got 0"),
        (dict(num_partitions=0), r"num_partitions must be None or an integer >= 1, got 0"),
        (dict(dense="yes"), r"dense must be None, True or False, got 'yes'"),
        (dict(transfer="rows"), r"transfer must be 'auto', 'arrow_batches' or 'map_in_arrow'"),
    ],
)
def test_schema_and_parameter_errors_before_any_job(spark, args, match):
    df = vec_df(spark, [Vectors.dense([1.0, 2.0])], [1.0]).select(
        "*", F.lit("a").alias("s"), F.lit(1.5).alias("x")
    )
    with jobs(spark) as job_ids:
        with pytest.raises(InputError, match=match):
            ingest(df, **args)
    assert job_ids == []


# ---------------------------------------------------------------- data errors after the pass
def _nan_vec():
    return Vectors.dense([1.0, float("nan"), 0.0])


DATA_ERRORS = {
    "empty": (
        lambda s: vec_df(s, [Vectors.dense([1.0])], [1.0]).filter("label > 5"),
        {},
        r"input DataFrame is empty \(0 rows\) in columns \['features', 'label'\]",
    ),
    "zero partitions": (
        # an RDD without partitions at all (emptyRDD): no task runs, no statistics arrive
        lambda s: s.createDataFrame(s.sparkContext.emptyRDD(), VEC_SCHEMA),
        {},
        r"input DataFrame is empty \(0 rows\) in columns \['features', 'label'\]",
    ),
    "only empty partitions": (
        lambda s: s.createDataFrame(s.sparkContext.emptyRDD(), VEC_SCHEMA).repartition(3),
        dict(weight_col="w"),
        r"input DataFrame is empty \(0 rows\) in columns \['features', 'label', 'w'\]",
    ),
    "null label": (
        lambda s: vec_df(s, [Vectors.dense([1.0, 2.0])] * 5, [1.0, None, 0.0, None, 1.0]),
        {},
        r"column 'label' has 2 null values",
    ),
    "null features": (
        lambda s: vec_df(s, [Vectors.dense([1.0, 2.0]), None, Vectors.dense([1.0, 0.0])],
                         [1.0, 0.0, 1.0]),
        {},
        r"column 'features' has 1 null value",
    ),
    "null weight": (
        lambda s: vec_df(s, [Vectors.dense([1.0, 2.0])] * 3, [1.0, 0.0, 1.0], [1.0, None, 2.0]),
        dict(weight_col="w"),
        r"column 'w' has 1 null value",
    ),
    "sizes in one batch": (
        lambda s: vec_df(s, [Vectors.dense([1.0, 2.0, 3.0]), Vectors.sparse(4, [1], [2.0]),
                             Vectors.dense([1.0, 2.0, 3.0])], [1.0, 0.0, 1.0]).coalesce(1),
        {},
        r"features column 'features' has vectors of different sizes \[3, 4\]",
    ),
    "sizes across partitions": (
        # 8 local rows in 4 slices: partitions 0-1 hold size 3, partitions 2-3 size 2
        lambda s: vec_df(s, [Vectors.dense([1.0, 2.0, 3.0])] * 4 + [Vectors.dense([1.0, 2.0])] * 4,
                         [1.0] * 8),
        {},
        r"features column 'features' has vectors of different sizes \[2, 3\]",
    ),
    "non-finite features": (
        lambda s: vec_df(s, [_nan_vec(), Vectors.sparse(3, [2], [float("inf")]),
                             Vectors.dense([1.0, 2.0, 3.0])], [1.0, 0.0, 1.0]),
        {},
        r"features column 'features' has 2 non-finite values \(NaN or infinity\) at feature "
        r"indices \[1, 2\]",
    ),
    "non-finite labels": (
        lambda s: vec_df(s, [Vectors.dense([1.0])] * 3, [1.0, float("inf"), float("nan")]),
        {},
        r"label column 'label' has 2 non-finite values",
    ),
    "negative weights": (
        lambda s: vec_df(s, [Vectors.dense([1.0])] * 4, [1.0] * 4, [1.0, -2.0, -0.5, 1.0]),
        dict(weight_col="w"),
        r"weight column 'w' has 2 negative values in 4 rows; weights must be >= 0",
    ),
    "non-finite weights": (
        lambda s: vec_df(s, [Vectors.dense([1.0])] * 4, [1.0] * 4, [1.0, float("nan"), 1, 1]),
        dict(weight_col="w"),
        r"weight column 'w' has 1 non-finite values",
    ),
    "all weights zero": (
        lambda s: vec_df(s, [Vectors.dense([1.0])] * 4, [1.0] * 4, [0.0] * 4),
        dict(weight_col="w"),
        r"weight column 'w': all 4 weights are zero",
    ),
    "feature values too large (1e300)": (
        lambda s: vec_df(s, [Vectors.dense([1.0, 1e300]), Vectors.sparse(2, [0], [2.0]),
                             Vectors.dense([3.0, -1e300])], [1.0, 0.0, 1.0]),
        {},
        r"features column 'features' has values too large for float64 arithmetic \(max \|value\| "
        r"at feature indices \{1: 1e\+300\}\): their variance overflows",
    ),
    "feature column too large (1e300)": (
        lambda s: s.createDataFrame([(1.0, 1e300, 1.0), (2.0, 3.0, 0.0)],
                                    "a double, b double, y double"),
        dict(features_col=["a", "b"], label_col="y"),
        r"features columns \['a', 'b'\] has values too large .*'b': 1e\+300",
    ),
    "labels too large (1e300)": (
        lambda s: vec_df(s, [Vectors.dense([1.0])] * 3, [1e300, -1e300, 0.0]),
        {},
        r"label column 'label' has values too large for float64 arithmetic \(max \|value\| 1e\+300\)",
    ),
    "weights too large (1e300)": (
        lambda s: vec_df(s, [Vectors.dense([1.0])] * 3, [1.0] * 3, [1e300, 1.0, 1e300]),
        dict(weight_col="w"),
        r"weight column 'w' has values too large for float64 arithmetic .*divide them by a constant",
    ),
    "null in a numeric feature column": (
        lambda s: s.createDataFrame([(1.0, None, 1.0), (2.0, 3.0, 0.0)],
                                    "a double, b double, y double"),
        dict(features_col=["a", "b"], label_col="y"),
        r"column 'b' has 1 null value",
    ),
    "nan in a numeric feature column": (
        lambda s: s.createDataFrame([(1.0, float("nan"), 1.0), (2.0, 3.0, 0.0)],
                                    "a double, b double, y double"),
        dict(features_col=["a", "b"], label_col="y"),
        r"features columns \['a', 'b'\] has 1 non-finite values .*'b': 1",
    ),
}


@pytest.mark.parametrize("case", list(DATA_ERRORS))
@pytest.mark.parametrize("transfer", ["arrow_batches", "map_in_arrow"])
def test_data_errors_release_the_cache(spark, case, transfer):
    make, kwargs, match = DATA_ERRORS[case]
    df = make(spark)
    before = persistent(spark)
    with pytest.raises(InputError, match=match):
        ingest(df, transfer=transfer, **kwargs)
    assert persistent(spark) == before


def test_auto_transfer_falls_back_to_map_in_arrow(spark, small, monkeypatch):
    module = importlib.import_module("sparkopt.engine.ingest")
    monkeypatch.setattr(module, "_arrow_batch_rdd", lambda selected: None)
    X, y, w = small
    df = vec_df(spark, [Vectors.dense(r) for r in X[:50]], y[:50], w[:50])
    with pytest.raises(InputError, match="transfer='arrow_batches' is not available"):
        ingest(df, transfer="arrow_batches")
    rdd, stats = ingest(df)  # auto
    try:
        np.testing.assert_array_equal(stack(rdd)[0], X[:50])
        assert stats.n_rows == 50
    finally:
        rdd.unpersist()


@pytest.mark.parametrize("case", ["dense", "csr", "wide"])
@pytest.mark.parametrize("transfer", ["arrow_batches", "map_in_arrow"])
def test_statistics_reach_the_driver_one_compact_record_per_partition(spark, a9a, small, monkeypatch, case,
                                                                       transfer):
    """The tasks merge their blocks' statistics: the driver gets one record per partition (a
    sparse partition's holds only the features it touches) and merges them into exactly the
    statistics of the per-block merge (stats.combine_partitions over every block)."""
    from sparkopt.engine.stats import block_stats, combine_partitions

    ingest_module = importlib.import_module("sparkopt.engine.ingest")
    reported = []
    real_merge = ingest_module._merge_reported

    def capture(records, num_partitions, spec):
        reported.extend(records)
        return real_merge(records, num_partitions, spec)

    monkeypatch.setattr(ingest_module, "_merge_reported", capture)
    if case == "csr":
        df, batch_rows, block_bytes = a9a[0].repartition(3), "1000", 300_000
    elif case == "wide":       # 2^16 features, 3 stored per row: each partition touches a few thousand
        rng = np.random.default_rng(5)
        d_wide = 2**16
        vectors = [Vectors.sparse(d_wide, sorted(rng.choice(d_wide, 3, replace=False).tolist()),
                                  rng.standard_normal(3).tolist()) for _ in range(2000)]
        df, batch_rows, block_bytes = vec_df(spark, vectors, rng.integers(0, 2, 2000)).repartition(4), "100", 1
    else:
        X, y, w = small
        df, batch_rows, block_bytes = vec_df(spark, [Vectors.dense(r) for r in X], y, w).repartition(4), "50", 1
    with spark_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", batch_rows):
        rdd, stats = ingest(df, weight_col="w" if case == "dense" else None, max_block_bytes=block_bytes,
                            transfer=transfer)
    try:
        _, _, _, parts = stack(rdd)
        assert sum(len(p) for p in parts) >= 2 * len(parts)            # several blocks per partition
        assert sorted(p for p, _ in reported) == [i for i, p in enumerate(parts) if p]
        per_block = combine_partitions([[block_stats(b.X, b.y, b.w) for b in p] for p in parts])
        assert stats == per_block
        for name in ("feature_mean", "feature_m2", "feature_min", "feature_max"):
            assert getattr(stats, name).tobytes() == getattr(per_block, name).tobytes()
        d = stats.n_features
        for p, record in reported:
            touched = np.unique(np.concatenate([b.X.indices for b in parts[p]])) if case != "dense" else None
            if case == "wide":
                # only the features the partition stores: far from the six (d,) arrays of a dense record
                assert record["index"] is not None and set(record["index"].tolist()) <= set(touched.tolist())
                assert sum(a.nbytes for a in record.values() if isinstance(a, np.ndarray)) < 60 * touched.size
                assert touched.size < d // 8
            elif case == "dense":
                assert record["index"] is None and record["feature_mean"].shape == (d,)
    finally:
        rdd.unpersist()
