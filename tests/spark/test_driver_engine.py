"""The driver engine: the selected columns collected once into the driver; the same numbers as the
tree and resident engines, no Spark job per pass, chosen by auto within maxDriverSizeInMB."""
import logging
import sys

import numpy as np
import pytest
from pyspark import cloudpickle
from pyspark.sql import functions as F

from sparkopt.engine import (DriverEngine, ResidentEngine, TreeEngine, collect_to_driver, engine_for,
                             estimate_driver_bytes, ingest, make_engine)
from sparkopt.errors import InputError
from sparkopt.fit import build_objective, fit_linear_model
from sparkopt.ml import LinearRegression, LogisticRegression, clear_cache

from conftest import LOSS_CASES, letter_head, max_rel_diff as rel, spark_jobs

pytestmark = pytest.mark.spark
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# every loss of LOSS_CASES, and the (non-smooth) hinge, whose objective has no Hessian
ALL_LOSSES = LOSS_CASES + [("hinge", "binary", dict(reg_param=1e-3))]


def weighted_letters(spark, partitions, empty_partition=None):
    """letter_head with a weight column w in {0.5, 1.5, 2.5} (a function of the row's features)."""
    from pyspark.ml.functions import vector_to_array

    df = letter_head(spark, partitions, empty_partition)
    first = vector_to_array("features")[0]
    return df, df.withColumn("w", F.pmod(F.floor((first + 1) * 10), F.lit(3)) + 0.5)


@pytest.fixture(scope="module", params=[(2, None), (5, False)], ids=["2parts-dense", "5parts-csr"])
def engines(spark, request):
    """{label: (tree, resident, driver)} over the same weighted rows; with 5 partitions (one
    emptied, CSR storage) the resident engine regroups them onto local[2]'s 2 slots."""
    partitions, dense = request.param
    cached, df = weighted_letters(spark, partitions, empty_partition=2 if partitions > 2 else None)
    triples = {}
    for label in ("label", "binary"):
        rdd, stats = ingest(df, label_col=label, weight_col="w", dense=dense)
        driver = collect_to_driver(df, label_col=label, weight_col="w", dense=dense)
        triples[label] = (TreeEngine(rdd, stats), ResidentEngine(rdd, stats), driver)
    yield triples
    for tree, resident, _ in triples.values():
        resident.close()
        tree.unpersist()
    cached.unpersist()


def test_driver_holds_the_blocks_ingest_builds(engines):
    tree, _, driver = engines["label"]
    assert isinstance(driver, DriverEngine) and driver.kind == "driver"
    assert driver.num_partitions == tree.num_partitions
    assert (driver.n_rows, driver.n_features, driver.weight_sum) == (tree.n_rows, tree.n_features, tree.weight_sum)
    assert driver.stats.n_dense_blocks == tree.stats.n_dense_blocks
    for ours, theirs in zip(driver.collect_blocks(), tree.collect_blocks()):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert a.is_sparse == b.is_sparse
            Xa, Xb = (a.X.toarray(), b.X.toarray()) if a.is_sparse else (a.X, b.X)
            assert np.array_equal(Xa, Xb) and np.array_equal(a.y, b.y) and np.array_equal(a.w, b.w)


@pytest.mark.parametrize("loss, label, kwargs", ALL_LOSSES)
def test_driver_equals_tree_and_resident(engines, loss, label, kwargs):
    tree, resident, driver = engines[label]
    a = build_objective(tree, loss, **kwargs)[0]
    b = build_objective(resident, loss, **kwargs)[0]
    c = build_objective(driver, loss, **kwargs)[0]
    rng = np.random.default_rng(2)
    z = rng.normal(scale=0.1, size=a.n_params)
    if loss == "huber":
        z[-1] = 1.5
    v = rng.normal(size=a.n_params)
    fa, ga = a.loss_grad(z)
    with resident.session():
        fb, gb = b.loss_grad(z)
        hvb = b.hessp(z, v) if loss != "hinge" else None
    fc, gc = c.loss_grad(z)
    for f, g in ((fb, gb), (fc, gc)):
        assert abs(f - fa) <= 1e-10 * abs(fa)
        assert rel(g, ga) < 1e-10
    if loss != "hinge":
        hva = a.hessp(z, v)
        assert rel(hvb, hva) < 1e-10 and rel(c.hessp(z, v), hva) < 1e-10
    sa, sc = a.stochastic_loss_grad(z, 0.3, 7), c.stochastic_loss_grad(z, 0.3, 7)  # the same rows sampled
    assert abs(sa[0] - sc[0]) <= 1e-10 * abs(sa[0]) and rel(sc[1], sa[1]) < 1e-10


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")
@pytest.mark.parametrize("loss, label, kwargs", ALL_LOSSES)
def test_driver_fit_equals_tree_and_resident_fits(spark, engines, loss, label, kwargs):
    tree, resident, driver = engines[label]
    # one solver on every engine: auto weighs a pass's fixed cost, which differs between engines
    options = dict(kwargs, solver="lbfgs", max_iter=15, tol=1e-9)
    expected = fit_linear_model(tree, loss, **options)
    on_resident = fit_linear_model(resident, loss, **options)
    with spark_jobs(spark) as jobs:
        ours = fit_linear_model(driver, loss, **options)
    assert jobs == [] and ours.result.passes > 0          # every pass ran in this process
    for other in (expected, on_resident):
        # (pass counters add fractions of passes, in another order on each engine)
        assert ours.result.nit == other.result.nit and ours.result.passes == pytest.approx(other.result.passes)
        assert rel(ours.coefficients, other.coefficients) < 1e-10
        assert abs(ours.result.fun - other.result.fun) <= 1e-10 * abs(other.result.fun)


def test_make_engine_collects_cached_blocks(engines):
    tree, _, driver = engines["binary"]
    collected = make_engine(tree.rdd, tree.stats, engine="driver")
    assert collected.kind == "driver" and collected.num_partitions == tree.num_partitions
    objective = build_objective(collected, "logistic", reg_param=1e-3)[0]
    reference = build_objective(driver, "logistic", reg_param=1e-3)[0]
    z = np.full(objective.n_params, 0.05)
    assert objective.loss_grad(z)[0] == pytest.approx(reference.loss_grad(z)[0], rel=1e-12)


# -------------------------------------------------------------------- auto and the budget
@pytest.fixture(scope="module")
def letters(spark):
    df = letter_head(spark, 2)
    df.count()
    yield df
    df.unpersist()


def test_estimate_counts_rows_and_float64_columns(spark, letters):
    from conftest import dataset

    head = spark.read.format("libsvm").option("numFeatures", 16).load(str(dataset("letter.scale"))).limit(3000)
    estimate = estimate_driver_bytes(head, weight_col="label")
    # Spark's plan statistics know the limit's 3000 rows; the estimate is rows x columns x 8
    assert (estimate.rows, estimate.columns, estimate.nbytes) == (3000, 16 + 2, 3000 * 18 * 8)
    # a materialized cache: rows implied by its in-memory size, which errs high for vectors
    cached = estimate_driver_bytes(letters, label_col="binary", weight_col="label")
    assert cached.columns == 18 and 3000 * 18 * 8 <= cached.nbytes <= 10 * 3000 * 18 * 8


def test_estimate_is_unknown_without_vector_size_or_plan_statistics(spark):
    from pyspark.ml.functions import array_to_vector

    rows = spark.createDataFrame([([1.0, 2.0], 0.0), ([0.5, 1.0], 1.0)], "a array<double>, label double")
    no_metadata = rows.select(array_to_vector("a").alias("features"), "label")
    assert estimate_driver_bytes(no_metadata).nbytes is None
    assert "features" in estimate_driver_bytes(no_metadata).reason


def test_a_cached_frame_without_vector_metadata_is_sized_by_its_first_row(spark):
    """Vectors built from arrays (or read back from Parquet) carry no ML metadata: a cached
    DataFrame's first row gives their size (one small job), so auto judges it as it judges the
    same data with metadata; an uncached one stays unknown (one row could cost its whole plan)."""
    from pyspark.ml.functions import array_to_vector

    rows = spark.createDataFrame([([float(i), 1.0, 2.0], float(i % 2)) for i in range(40)], "a array<double>, label double")
    vectors = rows.select(array_to_vector("a").alias("features"), "label")
    assert estimate_driver_bytes(vectors).nbytes is None
    cached = vectors.cache()
    try:
        cached.count()
        with spark_jobs(spark) as jobs:
            estimate = estimate_driver_bytes(cached)
        assert len(jobs) == 1
        assert estimate.columns == 4 and estimate.rows == 40 and estimate.nbytes == 40 * 4 * 8
    finally:
        cached.unpersist()


def test_auto_picks_the_driver_within_the_budget_and_logs_why(spark, letters, caplog):
    clear_cache()
    with caplog.at_level(logging.INFO, logger="sparkopt"):
        model = LogisticRegression(labelCol="binary", regParam=1e-3, maxIter=10).fit(letters)
    assert model.summary.engine == "driver"
    assert any("uses the driver engine" in r.getMessage() and "maxDriverSizeInMB=256" in r.getMessage()
               for r in caplog.records)
    # the same fit on the resident engine: the same model
    resident = LogisticRegression(labelCol="binary", regParam=1e-3, maxIter=10, engine="resident").fit(letters)
    assert resident.summary.engine == "resident"
    assert rel(model.coefficients.toArray(), resident.coefficients.toArray()) < 1e-10


def test_auto_runs_on_spark_above_the_budget(spark, letters, caplog):
    clear_cache()
    with caplog.at_level(logging.INFO, logger="sparkopt"):
        model = LogisticRegression(labelCol="binary", regParam=1e-3, maxIter=5, maxDriverSizeInMB=0.01).fit(letters)
    assert model.summary.engine in ("resident", "tree")
    assert any("runs on Spark" in r.getMessage() and "above maxDriverSizeInMB=0.01" in r.getMessage()
               for r in caplog.records)
    with engine_for(letters, label_col="binary", max_driver_mb=0) as engine:
        assert engine.kind in ("resident", "tree")
    assert engine_for(letters, label_col="binary").kind == "driver"
    clear_cache()


def test_estimator_fit_on_the_driver_runs_no_job_per_pass(spark, letters):
    clear_cache()
    estimator = LinearRegression(labelCol="label", regParam=0.1, solver="lbfgs", maxIter=30, engine="driver")
    with spark_jobs(spark) as jobs:
        model = estimator.fit(letters)
    assert model.summary.engine == "driver" and model.summary.totalPasses > 10
    assert len(jobs) <= 2             # the collect (and nothing per pass)
    with spark_jobs(spark) as jobs:   # the next fit of the same data reuses the driver's copy
        again = estimator.copy({estimator.regParam: 0.05}).fit(letters)
    assert jobs == [] and again.summary.engine == "driver"
    clear_cache()


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "big"])
def test_bad_budget_names_the_param(spark, letters, value):
    with pytest.raises(InputError, match="maxDriverSizeInMB"):
        LogisticRegression(maxDriverSizeInMB=value)
    with pytest.raises(InputError, match="maxDriverSizeInMB"):
        engine_for(letters, label_col="binary", max_driver_mb=value)


def test_bad_data_on_the_driver_is_refused_like_ingest(spark):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([StructField("features", VectorUDT()), StructField("label", DoubleType())])
    df = spark.createDataFrame([(Vectors.dense([1.0, 2.0]), 1.0), (Vectors.dense([0.0, 1.0]), None)], schema)
    with pytest.raises(InputError, match="column 'label' has 1 null value"):
        collect_to_driver(df)
    with pytest.raises(InputError, match="is empty"):
        collect_to_driver(df.limit(0))
    with pytest.raises(InputError, match="engine must be one of"):
        engine_for(df, engine="laptop")
