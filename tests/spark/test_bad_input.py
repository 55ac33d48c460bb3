"""Bad input through the estimators, as a user meets it: a clear InputError naming the column,
count or parameter, raised by the ingest pass or before any job; and the inputs that look odd
but are valid (d >> n, integer labels and weights, mixed dense / sparse vectors, constant
columns). Ingest-level data errors (nulls, NaN / inf, negative weights, empty DataFrames, 1e300)
are in test_ingest.py's DATA_ERRORS; the README table lists both."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from pyspark.ml.linalg import Vectors
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkopt.errors import InputError
from sparkopt.ml import LinearRegression, LinearSVC, LogisticRegression, PoissonRegression, clear_cache

from conftest import spark_jobs as jobs

pytestmark = pytest.mark.spark




@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()  # every test ingests its own DataFrame (job counts below assume it)
    yield
    clear_cache()


def _frame(spark, X, y, w=None, label_type=T.DoubleType(), weight_type=T.DoubleType(), sparse=False):
    fields = [T.StructField("features", Vectors.dense([0.0]).__UDT__), T.StructField("label", label_type)]
    cast = int if isinstance(label_type, T.IntegralType) else (
        str if isinstance(label_type, T.StringType) else float)
    rows = []
    for i in range(len(y)):
        v = Vectors.sparse(X.shape[1], *_nz(X[i])) if (sparse is True or (sparse == "mixed" and i % 2)) \
            else Vectors.dense(X[i])
        rows.append([v, cast(y[i])])
    if w is not None:
        fields.append(T.StructField("w", weight_type))
        wcast = int if isinstance(weight_type, T.IntegralType) else float
        for r, wi in zip(rows, w):
            r.append(wcast(wi))
    return spark.createDataFrame([tuple(r) for r in rows], T.StructType(fields))


def _nz(row):
    idx = np.flatnonzero(row)
    return idx.tolist(), row[idx].tolist()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(120, 4))
    X[rng.random(X.shape) < 0.3] = 0.0
    y = (X @ [1.0, -2.0, 0.5, 0.0] + rng.normal(size=120) > 0).astype(float)
    w = rng.integers(1, 4, size=120).astype(float)
    return X, y, w


# ------------------------------------------------------------------------- errors, named
@pytest.mark.parametrize("estimator, labels, match", [
    (LinearSVC(), [-1.0, 1.0], r"label column 'label' must contain only 0 and 1 for hinge loss; "
                                r"found values in \[-1, 1\]"),
    (LogisticRegression(family="binomial"), [0.0, 0.5],
     r"label column 'label' must contain only 0 and 1 for logistic loss; found values in \[0, 0.5\] "
     r"\(\d+ non-integer\)"),
    (LogisticRegression(family="binomial"), [0.0, 2.0],
     r"family='binomial' needs labels 0/1 in column 'label'; found class index 2"),
    (LogisticRegression(), [1.0, 1.0], r"label column 'label' has a single class \(1\) in 120 rows"),
    (LinearSVC(), [0.0, 0.0], r"label column 'label' has a single class \(0\) in 120 rows: a hinge "
                              r"model needs both 0 and 1"),
    (LogisticRegression(family="multinomial"), [0.0, -1.0], r"must hold class indices 0, 1, \.\.\., K-1"),
    (PoissonRegression(), [1.0, -3.0], r"label column 'label' must be >= 0 for poisson loss; "
                                       r"found minimum -3"),
])
def test_label_out_of_range_is_named_right_after_the_ingest_pass(spark, data, estimator, labels, match):
    X, y, _ = data
    bad = np.where(y > 0, labels[1], labels[0])
    df = _frame(spark, X, bad)
    with jobs(spark) as job_ids, pytest.raises(InputError, match=match):
        estimator.fit(df)
    assert len(job_ids) == 1  # the single ingest pass; no solver pass ran


@pytest.mark.parametrize("role, make", [
    ("label", lambda s, X, y, w: _frame(s, X, y, label_type=T.StringType())),
    ("weight", lambda s, X, y, w: _frame(s, X, y, w).withColumn("w", F.col("w").cast("string"))),
])
def test_string_label_or_weight_column_fails_before_any_job(spark, data, role, make):
    X, y, w = data
    df = make(spark, X, y, w)
    with jobs(spark) as job_ids, pytest.raises(
            InputError, match=rf"{role} column '{'label' if role == 'label' else 'w'}' must be numeric "
                              r"\(integer or floating point\), got type string"):
        LogisticRegression(weightCol="w" if role == "weight" else None).fit(df)
    assert job_ids == []


def test_zero_partitions_and_only_empty_partitions(spark, data):
    empty = spark.createDataFrame(spark.sparkContext.emptyRDD(), _frame(spark, *data[:2]).schema)
    assert empty.rdd.getNumPartitions() == 0
    for df in (empty, empty.repartition(4)):
        with pytest.raises(InputError, match=r"input DataFrame is empty \(0 rows\) in columns "
                                             r"\['features', 'label'\]; nothing to fit"):
            LinearRegression().fit(df)


def test_feature_values_of_1e300_are_refused_naming_the_index(spark, data):
    X, y, _ = data
    X = X.copy()
    X[3, 2] = 1e300
    with pytest.raises(InputError, match=r"features column 'features' has values too large for float64 "
                                         r"arithmetic \(max \|value\| at feature indices \{2: 1e\+300\}\)"):
        LogisticRegression().fit(_frame(spark, X, y))


# ------------------------------------------------------------------------- valid, must work
def test_integer_labels_and_weights_fit_like_doubles(spark, data):
    X, y, w = data
    ref = LogisticRegression(regParam=0.01, weightCol="w").fit(_frame(spark, X, y, w))
    for label_type, weight_type in ((T.IntegerType(), T.IntegerType()), (T.LongType(), T.ShortType())):
        model = LogisticRegression(regParam=0.01, weightCol="w").fit(
            _frame(spark, X, y, w, label_type=label_type, weight_type=weight_type))
        np.testing.assert_array_equal(model.coefficients.toArray(), ref.coefficients.toArray())
        assert model.intercept == ref.intercept
    # and the weights are used: unit weights give another answer
    unweighted = LogisticRegression(regParam=0.01).fit(_frame(spark, X, y))
    assert np.abs(unweighted.coefficients.toArray() - ref.coefficients.toArray()).max() > 1e-3


def test_mixed_dense_and_sparse_vectors_fit_like_dense(spark, data):
    X, y, _ = data
    dense = LinearRegression(regParam=0.1).fit(_frame(spark, X, X @ [1.0, 2.0, 3.0, 4.0]))
    mixed = LinearRegression(regParam=0.1).fit(_frame(spark, X, X @ [1.0, 2.0, 3.0, 4.0], sparse="mixed"))
    np.testing.assert_allclose(mixed.coefficients.toArray(), dense.coefficients.toArray(), rtol=1e-10)
    assert mixed.intercept == pytest.approx(dense.intercept, abs=1e-10)


@pytest.mark.parametrize("estimator", [
    LogisticRegression(regParam=0.01), LinearSVC(regParam=0.01, loss="squared_hinge"),
    LinearRegression(regParam=0.01), PoissonRegression(regParam=0.01),
], ids=lambda e: type(e).__name__)
def test_constant_columns_with_standardization_get_coefficient_zero(spark, data, estimator):
    """As MLlib: a zero-variance column (constant 3, or all zeros in sparse vectors) gets
    coefficient exactly 0, no division by zero, and the other coefficients are those of the fit
    without it."""
    X, y, _ = data
    Xc = np.column_stack([X[:, :2], np.full(len(y), 3.0), X[:, 2:], np.zeros(len(y))])
    label = np.exp(X @ [0.3, -0.2, 0.1, 0.0]).round() if isinstance(estimator, PoissonRegression) else y
    with_const = estimator.copy().fit(_frame(spark, Xc, label, sparse=True))
    without = estimator.copy().fit(_frame(spark, X, label, sparse=True))
    coef = with_const.coefficients.toArray()
    assert coef[2] == 0.0 and coef[5] == 0.0 and np.all(np.isfinite(coef))
    np.testing.assert_allclose(coef[[0, 1, 3, 4]], without.coefficients.toArray(), rtol=1e-7, atol=1e-9)


def test_many_more_features_than_rows(spark):
    """50 rows x 5000 sparse features with L2 (d >> n; most columns never occur): fits, and equals
    scikit-learn's L2 logistic regression on the same data."""
    from sklearn.linear_model import LogisticRegression as SkLogistic

    rng = np.random.default_rng(3)
    n, d = 50, 5000
    X = sp.random(n, d, density=0.01, random_state=rng, format="csr")
    X.data = rng.normal(size=X.nnz)
    y = (rng.random(n) < 0.5).astype(float)
    y[:2] = [0.0, 1.0]
    rows = [(Vectors.sparse(d, X[i].indices.tolist(), X[i].data.tolist()), float(y[i])) for i in range(n)]
    df = spark.createDataFrame(rows, ["features", "label"]).repartition(3)
    lam = 0.05
    model = LogisticRegression(regParam=lam, standardization=False, tol=1e-10).fit(df)
    assert model.summary.converged and model.numFeatures == d
    sk = SkLogistic(C=1.0 / (lam * n), tol=1e-12, max_iter=10_000).fit(X, y)
    coef = model.coefficients.toArray()
    np.testing.assert_allclose(coef, sk.coef_.ravel(), rtol=1e-5, atol=1e-7)
    assert model.intercept == pytest.approx(sk.intercept_[0], abs=1e-6)
    assert np.count_nonzero(coef) == np.count_nonzero(np.asarray(abs(X).sum(axis=0)).ravel())
