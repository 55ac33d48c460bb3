"""Load: the same fit (coefficients to 1e-8 relative) whatever the layout of the data on Spark --
1 partition, 200 tiny partitions, one partition 100x larger than the rest, and blocks cut by a
small memory budget (several blocks per partition) -- against the in-memory fold of the same
rows."""
from __future__ import annotations

import time

import pytest
from pyspark.ml.linalg import Vectors

from sparkopt.engine import LocalEngine, ResidentEngine, TreeEngine, ingest
from sparkopt.engine.resident import balanced_groups
from sparkopt.fit import fit_linear_model

from conftest import dataset, max_rel_diff as rel, spark_conf

pytestmark = pytest.mark.spark

N_ROWS = 2000
FIT = dict(reg_param=1e-3, solver="newton", tol=1e-10)


@pytest.fixture(scope="module")
def a9a_head(spark):
    """The first 2000 rows of a9a: (X CSR, y, DataFrame of (features, label, row) in 1 partition)."""
    from sklearn.datasets import load_svmlight_file

    X, y = load_svmlight_file(str(dataset("a9a")), n_features=123)
    X, y = X[:N_ROWS].tocsr(), (y[:N_ROWS] > 0).astype(float)
    rows = [(Vectors.sparse(123, X[i].indices.tolist(), X[i].data.tolist()), float(y[i]), i)
            for i in range(N_ROWS)]
    df = spark.createDataFrame(rows, ["features", "label", "row"]).coalesce(1).cache()
    df.count()
    yield X, y, df
    df.unpersist()


@pytest.fixture(scope="module")
def reference(a9a_head):
    X, y, _ = a9a_head
    fit = fit_linear_model(LocalEngine.from_arrays(X, y), "logistic", **FIT)
    assert fit.converged
    return fit.coef_vector


def _fit_on(df, initial_coef=None, engine_class=TreeEngine, count_blocks=True, **ingest_kwargs):
    rdd, stats = ingest(df, **ingest_kwargs)
    with engine_class(rdd, stats, depth=2) as engine:
        blocks_per_partition = rdd.glom().map(len).collect() if count_blocks else None
        fit = fit_linear_model(engine, "logistic", initial_coef=initial_coef, **FIT)
    assert fit.converged and stats.n_rows == N_ROWS
    return fit, stats, blocks_per_partition


def test_one_partition(a9a_head, reference):
    fit, stats, blocks = _fit_on(a9a_head[2])
    assert stats.num_partitions == 1 and blocks == [1]
    assert rel(fit.coef_vector, reference) < 1e-8


@pytest.mark.slow
def test_hundreds_of_tiny_partitions(a9a_head, reference):
    """A tree-engine pass would be 200 Python tasks (~30 ms each on local[2]: ~3 s a pass), so the
    fit runs on the resident engine, which regroups the 200 partitions onto the 2 task slots once
    (one shuffle) and then folds them in partition order: the same coefficients, cold start.
    (200, not thousands: every partition costs Python tasks in the ingest and the regroup, which
    is the suite's time, not a different code path.)"""
    df = a9a_head[2].repartition(200)
    start = time.perf_counter()
    fit, stats, _ = _fit_on(df, engine_class=ResidentEngine, count_blocks=False)
    seconds = time.perf_counter() - start
    assert stats.num_partitions == 200 and stats.n_nonempty_partitions > 190
    assert fit.result.nit >= 1
    assert rel(fit.coef_vector, reference) < 1e-8
    print(f"200 partitions: ingest + {fit.result.passes:g} passes in {seconds:.1f} s")


@pytest.mark.slow
def test_one_partition_100x_larger_than_the_rest(spark, a9a_head, reference):
    """Tree engine (26 tasks a pass) and resident engine, whose two tasks get balanced loads:
    the big partition alone on one, the 25 small ones on the other (from the ingest's rows per
    partition: no job to count them)."""
    # rows 0..1599 in partition 0 (100x the others), the other 400 rows spread 16 per partition over 1..25
    df = a9a_head[2]
    pairs = df.rdd.map(lambda r: (0 if r["row"] < 1600 else 1 + r["row"] % 25, r))
    skewed = spark.createDataFrame(pairs.partitionBy(26, lambda k: k).values(), df.schema)
    rdd, stats = ingest(skewed)                          # one ingest, both engines
    sizes = [1600] + [16] * 25
    assert stats.num_partitions == 26 and stats.partition_rows == tuple(sizes)
    assignment = balanced_groups(dict(enumerate(stats.partition_rows)), 2)
    assert {assignment[p] for p in range(1, 26)} == {1 - assignment[0]}
    # The tree engine runs 26 tasks a pass: started at the optimum, its fit must stay there in a
    # pass or two (the same numbers as the in-memory fold); the resident engine fits cold.
    with TreeEngine(rdd, stats, depth=2) as tree, ResidentEngine(rdd, stats, depth=2) as resident:
        for engine, start in ((tree, reference), (resident, None)):
            fit = fit_linear_model(engine, "logistic", initial_coef=start, **FIT)
            assert fit.converged and rel(fit.coef_vector, reference) < 1e-8


@pytest.fixture
def small_arrow_batches(spark):
    with spark_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", "100"):
        yield


def test_data_larger_than_one_block_budget(a9a_head, reference, small_arrow_batches):
    """A 4 kB block budget (a partition of 1000 rows of a9a is ~170 kB as CSR): every 100-row Arrow
    batch closes a block, so each partition is held as 10 blocks, folded in order."""
    fit, stats, blocks = _fit_on(a9a_head[2].repartition(2), max_block_bytes=4096)
    assert blocks == [10, 10] and stats.n_blocks == 20
    assert rel(fit.coef_vector, reference) < 1e-8
