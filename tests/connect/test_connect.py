"""sparkopt on a Spark Connect session (no SparkContext, RDDs, broadcasts or py4j on the client):
the estimators on the DataFrame tree engine and the driver engine, Pipeline / CrossValidator /
TrainValidationSplit, save and load, and train.py with --remote. Runs in its own process (see
conftest.py); tests/spark/test_connect_suite.py compares the recorded fits with a classic session's."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from cases import CASES, ROOT, a9a_head, coefficients_of, fit_case

pytestmark = pytest.mark.spark


def max_rel_diff(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


@pytest.fixture(scope="module")
def a9a(connect_spark):
    df = a9a_head(connect_spark).cache()
    yield df
    df.unpersist()


def test_the_session_is_a_connect_client(connect_spark):
    from sparkopt.engine.session import application_key, is_connect

    assert is_connect(connect_spark)
    assert connect_spark.session_id in application_key(connect_spark)


@pytest.mark.parametrize("case", CASES)
def test_fits_on_every_engine_agree_and_are_recorded_for_the_classic_comparison(connect_spark, case):
    by_engine = fit_case(connect_spark, case)
    tree = by_engine["tree"]
    assert [by_engine[e]["engine"] for e in ("tree", "driver", "resident")] == ["tree", "driver", "resident"]
    for other in ("driver", "resident"):
        assert max_rel_diff(tree["coefficients"], by_engine[other]["coefficients"]) < 1e-10
        assert max_rel_diff(tree["intercept"], by_engine[other]["intercept"]) < 1e-10
    target = os.environ.get("SPARKOPT_CONNECT_RESULTS")
    if target:
        with open(os.path.join(target, f"{case}.json"), "w") as fh:
            json.dump(by_engine, fh)


def test_the_frame_engine_holds_the_blocks_the_driver_engine_collects(a9a):
    from sparkopt.engine import collect_to_driver, engine_for
    from sparkopt.engine.frame import FrameEngine

    engine = engine_for(a9a, engine="tree")
    try:
        assert isinstance(engine, FrameEngine)
        local = collect_to_driver(a9a)
        ours, theirs = engine.collect_blocks(), local.collect_blocks()
        assert [len(p) for p in ours] == [len(p) for p in theirs]
        for mine, other in zip(sum(ours, []), sum(theirs, [])):
            assert (mine.X != other.X).nnz == 0 and np.array_equal(mine.y, other.y)
        w = np.linspace(-1, 1, engine.n_features)

        def gradient(block, v):
            return block.X.T @ (block.X @ v - block.y)

        assert max_rel_diff(engine.map_sum(gradient, w), local.map_sum(gradient, w)) < 1e-12
        sampled = engine.map_sum(gradient, w, fraction=0.5, seed=3)
        assert max_rel_diff(sampled, local.map_sum(gradient, w, fraction=0.5, seed=3)) < 1e-12
        assert engine.passes > 0 and engine.bytes_sent > 0
    finally:
        engine.unpersist()


def test_the_resident_engine_serves_passes_from_barrier_tasks_connected_to_the_client(a9a):
    from sparkopt.engine import collect_to_driver, engine_for
    from sparkopt.engine.frame_resident import FrameResidentEngine

    engine = engine_for(a9a, engine="resident")
    local = collect_to_driver(a9a)
    try:
        assert isinstance(engine, FrameResidentEngine) and engine.kind == "resident"
        w = np.linspace(-1, 1, engine.n_features)

        def _gradient(block, v):      # nested: shipped by value (the executors cannot import this module)
            return block.X.T @ (block.X @ v - block.y)
        with engine.session():
            for kwargs in ({}, {"fraction": 0.5, "seed": 3}):
                got, want = engine.map_sum(_gradient, w, **kwargs), local.map_sum(_gradient, w, **kwargs)
                assert max_rel_diff(got, want) < 1e-12 and engine.active
        assert not engine.active and engine.sessions_started == 1 and engine.restarts == 0
        assert engine.passes == 1.5 and engine.bytes_sent > 0 and engine.bytes_received > 0

        def _blas(block, v):     # see tests/connect/conftest.py: no thread count in these workers' environment
            import os

            from threadpoolctl import threadpool_info
            unset = not any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
            threads = max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")
            return np.array([1.0, float(unset), float(threads)])
        blocks, unset, threads = engine.map_sum(_blas, w)
        # every task folded with one BLAS thread (its spark.task.cpus), its environment saying nothing
        assert unset == blocks and threads == blocks
    finally:
        engine.unpersist()


def test_a_resident_fit_loads_its_blocks_in_its_own_barrier_tasks(a9a, monkeypatch):
    """The fused load on Connect: one statistics job, then the session's barrier tasks build the
    blocks from the DataFrame's batches (no block frame is cached); the same fit as the resident
    engine over the frame ingest's blocks, and the estimators take this path. The engine reads
    its settings from one listing (spark.conf.getAll), not one round trip per key."""
    from pyspark.sql.connect.conf import RuntimeConf

    from sparkopt.engine import ingest_blocks, make_engine
    from sparkopt.engine.resident import SPARK_NETWORK_ENCRYPTION
    from sparkopt.engine.frame_resident import FrameResidentEngine
    from sparkopt.engine.fused import ConnectFusedEngine, FusedSource, fused_source
    from sparkopt.fit import fit_linear_model
    from sparkopt.ml import LogisticRegression, clear_cache
    from sparkopt.ml.cache import ENGINE_CACHE

    source = fused_source(a9a)
    blocks, stats = ingest_blocks(a9a)
    try:
        assert source.connect and source.getNumPartitions() == 2 == blocks.num_partitions
        assert source.stats.n_rows == stats.n_rows == 3000 and source.stats.partition_rows == stats.partition_rows
        asked, listings = [], []
        get, get_all = RuntimeConf.get, RuntimeConf.getAll
        monkeypatch.setattr(RuntimeConf, "get", lambda self, key, *default: asked.append(key) or get(self, key, *default))
        monkeypatch.setattr(RuntimeConf, "getAll", property(lambda self: listings.append(1) or get_all.fget(self)))
        engine = make_engine(source, source.stats, engine="resident")
        assert isinstance(engine, ConnectFusedEngine) and engine.kind == "resident"
        got = fit_linear_model(engine, "logistic", reg_param=1e-2, solver="newton", tol=1e-10)
        monkeypatch.undo()
        assert listings == [1]
        assert not [k for k in asked if k.startswith("spark.sparkopt.resident.") or k in SPARK_NETWORK_ENCRYPTION], asked
        assert source._rdd is None and engine.sessions_started == 1       # nothing ingested
        want = fit_linear_model(FrameResidentEngine(blocks, stats), "logistic", reg_param=1e-2, solver="newton",
                                tol=1e-10)
        assert max_rel_diff(got.coefficients, want.coefficients) < 1e-12
        # what a session cannot serve runs on the frame engine over blocks ingested then (once)
        held = engine.collect_blocks()
        assert source._rdd is not None and [len(p) for p in held] == [len(p) for p in FrameResidentEngine(
            blocks, stats).collect_blocks()]
    finally:
        source.unpersist()
        blocks.unpersist()
    clear_cache()
    model = LogisticRegression(regParam=1e-2, solver="newton", tol=1e-10, engine="resident").fit(a9a)
    [(_, cached)] = ENGINE_CACHE._entries.values()
    assert isinstance(cached, FusedSource) and cached._rdd is None
    clear_cache()
    assert max_rel_diff(model.coefficients.toArray(), got.coefficients) < 1e-10


def test_tasks_that_cannot_reach_the_client_fall_back_under_auto_within_seconds(a9a, caplog):
    import time

    from sparkopt.engine import ingest_blocks
    from sparkopt.engine.frame import FrameEngine
    from sparkopt.engine.frame_resident import FrameResidentEngine
    from sparkopt.engine.resident import DriverUnreachable
    from sparkopt.fit import fit_linear_model

    blocks, stats = ingest_blocks(a9a)
    try:
        want = fit_linear_model(FrameEngine(blocks, stats), "logistic", reg_param=1e-2, solver="newton", tol=1e-10)
        # the listener binds 127.0.0.1; the tasks are told 127.0.0.2, where nothing listens (a
        # client behind a NAT): every connection is refused
        started = time.monotonic()
        auto = FrameResidentEngine(blocks, stats, host="127.0.0.2", bind_host="127.0.0.1", connect_timeout=2.0,
                                   fallback=True)
        with caplog.at_level(logging.WARNING, logger="sparkopt"):
            got = fit_linear_model(auto, "logistic", reg_param=1e-2, solver="newton", tol=1e-10)
        assert auto.kind == "tree" and "cannot reach the driver at 127.0.0.2" in auto.fallback_reason
        assert auto.restarts == 0 and not auto.active
        assert "falls back to the tree engine" in caplog.text
        assert max_rel_diff(got.coefficients, want.coefficients) < 1e-12
        decided = time.monotonic() - started
        strict = FrameResidentEngine(blocks, stats, host="127.0.0.2", bind_host="127.0.0.1", connect_timeout=2.0)
        started = time.monotonic()
        with pytest.raises(DriverUnreachable, match="cannot reach the driver at 127.0.0.2"):
            strict.map_sum(lambda block, v: block.X.T @ v, np.zeros(stats.n_features))
        assert time.monotonic() - started < 30 and decided < 60      # the 2 s connect timeout, a job's start
        assert strict.restarts == 0 and not strict.active
    finally:
        blocks.unpersist()


def test_rdd_only_transfer_is_refused_by_name(a9a):
    from sparkopt.engine import ingest_blocks
    from sparkopt.errors import InputError

    with pytest.raises(InputError, match=r"transfer='arrow_batches'.*Spark Connect"):
        ingest_blocks(a9a, transfer="arrow_batches")
    with pytest.raises(InputError, match=r"transfer must be.*got 'bogus'"):
        ingest_blocks(a9a, transfer="bogus")


def test_auto_says_what_it_chose_and_why(a9a, caplog):
    from sparkopt.ml import LogisticRegression, clear_cache

    with caplog.at_level(logging.INFO, logger="sparkopt"):
        small = LogisticRegression(regParam=0.01).fit(a9a)
        spark_side = LogisticRegression(regParam=0.01, maxDriverSizeInMB=0.0).fit(a9a)
    clear_cache()
    assert small._fit.params["engine"] == "driver"
    assert spark_side._fit.params["engine"] == "resident"     # 2 partitions, local[2]: 2 task slots
    text = caplog.text
    assert "uses the driver engine" in text and "rowCount" not in text
    assert "runs on Spark" in text and "resident engine: 2 tasks hold 2 partitions" in text
    # different solvers (auto weighs each engine's pass cost), both to the default tol
    assert max_rel_diff(small.coefficients.toArray(), spark_side.coefficients.toArray()) < 1e-4


def test_pipeline_cross_validation_and_persistence(connect_spark, a9a, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.feature import StandardScaler
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit

    from sparkopt.ml import LogisticRegression, LogisticRegressionModel

    lr = LogisticRegression(regParam=0.01, engine="tree")
    pipeline = Pipeline(stages=[StandardScaler(inputCol="features", outputCol="scaled", withMean=False),
                                lr.copy().setFeaturesCol("scaled")])
    fitted = pipeline.fit(a9a)
    where = str(tmp_path / "pipeline")
    fitted.write().overwrite().save(where)
    fitted.write().overwrite().save(where)          # a second save replaces the first
    loaded = PipelineModel.load(where)
    before = [r.probability[1] for r in fitted.transform(a9a).select("probability").collect()]
    after = [r.probability[1] for r in loaded.transform(a9a).select("probability").collect()]
    assert max_rel_diff(after, before) < 1e-12

    model = lr.fit(a9a)
    model.write().overwrite().save(str(tmp_path / "model"))
    again = LogisticRegressionModel.load(str(tmp_path / "model"))
    assert coefficients_of(again) == coefficients_of(model)
    assert again.evaluate(a9a).areaUnderROC == pytest.approx(model.summary.areaUnderROC, abs=1e-12)

    grid = ParamGridBuilder().addGrid(lr.regParam, [0.1, 0.01]).build()
    evaluator = BinaryClassificationEvaluator()
    cv = CrossValidator(estimator=lr, estimatorParamMaps=grid, evaluator=evaluator, numFolds=2, seed=1).fit(a9a)
    best = max(range(2), key=lambda i: cv.avgMetrics[i])
    assert len(cv.avgMetrics) == 2 and cv.bestModel.getRegParam() == grid[best][lr.regParam]
    tvs = TrainValidationSplit(estimator=lr, estimatorParamMaps=grid, evaluator=evaluator, seed=1).fit(a9a)
    assert len(tvs.validationMetrics) == 2 and 0.5 < max(tvs.validationMetrics) <= 1.0


def test_train_with_remote_then_predict_with_spark_remote(connect_spark, connect_port, a9a, tmp_path):
    from sparkopt.ml import LogisticRegression, clear_cache

    out = tmp_path / "out"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)     # carries the server's token to the client
    env.pop("SPARK_REMOTE", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "train.py"), "--remote", f"sc://127.0.0.1:{connect_port}",
         "--input", str(ROOT / "data" / "a9a.t"), "--model", "logistic", "--reg-param", "0.01",
         "--engine", "tree", "--output", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["converged"] and (out / "model" / "metadata").is_dir()
    # the same fit in this client, the data read as the job reads them, through the same server
    from _common import read_dataset

    test, features, label = read_dataset(connect_spark, str(ROOT / "data" / "a9a.t"), binary_labels=True)
    ours = LogisticRegression(regParam=0.01, engine="tree", featuresCol=features, labelCol=label).fit(test)
    clear_cache()
    assert max_rel_diff(metrics["coefficients"], ours.coefficients.toArray()) < 1e-8

    # predict.py as a Connect client through the environment variable pyspark reads
    scored = tmp_path / "scored"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "predict.py"), "--model", str(out / "model"),
         "--input", str(ROOT / "data" / "a9a.t"), "--output", str(scored)],
        capture_output=True, text=True, timeout=300, env=dict(env, SPARK_REMOTE=f"sc://127.0.0.1:{connect_port}"),
        cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = connect_spark.read.parquet(str(scored)).select("probability").toPandas()
    expected = ours.transform(test).select("probability").toPandas()
    assert len(predictions) == len(expected) == test.count()
    got = np.array([v[1] for v in predictions["probability"]])
    want = np.array([v[1] for v in expected["probability"]])
    assert max_rel_diff(np.sort(got), np.sort(want)) < 1e-6


def test_a_second_fit_of_the_same_data_reuses_the_ingest(a9a):
    from sparkopt.ml import LogisticRegression, clear_cache

    clear_cache()
    first = LogisticRegression(regParam=0.1, engine="tree").fit(a9a)
    second = LogisticRegression(regParam=0.01, engine="tree").fit(a9a)
    clear_cache()
    assert first.summary.ingestSeconds > 0 and second.summary.ingestSeconds == 0.0
