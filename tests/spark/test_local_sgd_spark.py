"""local-sgd on Spark: the tree and resident engines give the in-memory fit over the same blocks
(so each shard ran its local steps on the same rows with the same samples), and the estimator
fits a9a."""
import warnings

import numpy as np
import pytest
from pyspark.sql import functions as F

from sparkopt.engine import LocalEngine, ResidentEngine, TreeEngine, ingest
from sparkopt.fit import fit_linear_model
from sparkopt.ml import LogisticRegression
from sparkopt.solvers import ConvergenceWarning

from sparkopt.linear_objective import CURVATURE_ITERATIONS

from conftest import dataset

pytestmark = pytest.mark.spark

FIT = dict(reg_param=1e-3, elastic_net_param=0.3, solver="local-sgd", max_iter=8, tol=1e-12,
           solver_options=dict(step_size=0.3, fraction=0.3, schedule="exponential", decay=0.98, local_steps=4,
                               combination=1.0, seed=11))


def test_local_sgd_on_tree_and_resident_engines_equals_the_local_fold(spark):
    # 3 partitions (more than local[2]'s 2 slots: the resident engine regroups them), one emptied
    df = (spark.read.format("libsvm").option("numFeatures", 123).load(str(dataset("a9a"))).limit(6000)
          .withColumn("label", (F.col("label") > 0).cast("double")).repartition(3))
    df = df.filter(F.spark_partition_id() != 1).cache()
    rdd, stats = ingest(df)
    tree, resident = TreeEngine(rdd, stats), ResidentEngine(rdd, stats)
    try:
        blocks = tree.collect_blocks()
        assert len(blocks) == 3 and sum(len(p) for p in blocks) >= 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            local = fit_linear_model(LocalEngine(blocks, stats=stats), "logistic", **FIT)
            on_tree = fit_linear_model(tree, "logistic", **FIT)
            on_resident = fit_linear_model(resident, "logistic", **FIT)
        scale = np.abs(local.coef_vector).max()
        for fit in (on_tree, on_resident):
            assert np.abs(fit.coef_vector - local.coef_vector).max() <= 1e-10 * scale
            assert fit.result.passes == pytest.approx(local.result.passes)
            assert [r["rounds"] for r in fit.result.history] == list(range(9))
        # the start, the curvature estimate (its sample is all of the ~4000 rows: 4 full passes), 8 rounds of
        # H x fraction, the end
        assert local.result.passes == pytest.approx(1 + CURVATURE_ITERATIONS + 8 * 4 * 0.3 + 1)

        # the estimator (engine auto, default steps) on the same DataFrame, against Newton on the
        # same data: 100 rounds of 5 local steps on 20% samples (measured in memory on these rows:
        # 3.2e-3; outer momentum 0.9 is slow to start on so few rows, 3.7e-2 after 40 rounds)
        newton = fit_linear_model(tree, "logistic", reg_param=1e-3, solver="newton", tol=1e-10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(solver="local-sgd", localSteps=5, miniBatchFraction=0.2, regParam=1e-3,
                                       maxIter=100).fit(df)
        summary = model.summary
        assert summary.solver == "local-sgd" and summary.totalIterations == 100
        assert summary.totalPasses == pytest.approx(1 + CURVATURE_ITERATIONS + 100 * 5 * 0.2 + 1)
        assert (summary.objective - newton.objective) / newton.objective < 1e-2
        assert "rounds" in summary.history.columns
    finally:
        resident.close()
        tree.unpersist()
        df.unpersist()
