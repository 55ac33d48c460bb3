"""Regularization paths over the Spark engines equal the local path over the same blocks."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import letter_head, max_rel_diff as rel

from sparkopt.engine import LocalEngine, ResidentEngine, TreeEngine, ingest
from sparkopt.tuning import regularization_path

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def letter_binary(spark):
    df = letter_head(spark, 3)
    rdd, stats = ingest(df, label_col="binary", dense=False)
    yield rdd, stats
    rdd.unpersist()
    df.unpersist()


def test_screened_path_on_tree_and_resident_engines_equals_local(letter_binary):
    """Screened problems run their column slices inside the tasks: same points, passes and
    KKT additions as the in-memory engine over the same blocks."""
    rdd, stats = letter_binary
    tree = TreeEngine(rdd, stats)
    local = LocalEngine(tree.collect_blocks(), stats)
    kw = dict(elastic_net_param=0.5, n_reg_params=8, min_ratio=1e-2, tol=1e-9)
    expected = regularization_path(local, "logistic", **kw)
    assert any(p.screened is not None and p.screened < stats.n_features for p in expected.points[1:])
    resident = ResidentEngine(rdd, stats)
    try:
        for engine in (tree, resident):
            path = regularization_path(engine, "logistic", **kw)
            assert path.passes == expected.passes and len(path.points) == len(expected.points)
            for a, b in zip(path.points, expected.points):
                assert a.reg_param == b.reg_param and a.screened == b.screened and a.kkt_added == b.kkt_added
                assert rel(a.fit.coef_vector, b.fit.coef_vector) < 1e-9
    finally:
        resident.close()


def test_gathered_cross_validation_on_tree_and_resident_engines_equals_local(letter_binary):
    """The folds' passes gathered into one Spark job (tree) or one resident request each: same
    folds, numbers and pass count as the in-memory engine over the same blocks."""
    from sparkopt.tuning import cross_validate

    rdd, stats = letter_binary
    tree = TreeEngine(rdd, stats)
    kw = dict(n_folds=3, seed=4, elastic_net_param=0.5, n_reg_params=4, tol=1e-8, metric_name="accuracy")
    expected = cross_validate(LocalEngine(tree.collect_blocks(), stats), "logistic", **kw)
    assert expected.passes * 3 < expected.fit_passes
    resident = ResidentEngine(rdd, stats)
    try:
        for engine in (tree, resident):
            got = cross_validate(engine, "logistic", **kw)
            assert got.passes == expected.passes and engine.passes == expected.passes
            np.testing.assert_allclose(got.metrics, expected.metrics, rtol=1e-12)
            assert rel(got.best.coef_vector, expected.best.coef_vector) < 1e-12
    finally:
        resident.close()


def test_squared_error_path_costs_one_spark_pass(spark, letter_binary):
    rdd, stats = letter_binary
    engine = TreeEngine(rdd, stats)
    path = regularization_path(engine, "squared_error", elastic_net_param=1.0, n_reg_params=20)
    assert path.passes == 1.0 and engine.passes == 1.0
    local = regularization_path(LocalEngine(engine.collect_blocks(), stats), "squared_error", elastic_net_param=1.0,
                                n_reg_params=20)
    np.testing.assert_allclose(path.coefficients, local.coefficients, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------ fitMultiple
@pytest.fixture(scope="module")
def letter_df(spark):
    df = letter_head(spark, 3)
    yield df
    df.unpersist()


def _grid(estimator, regs):
    from pyspark.ml.tuning import ParamGridBuilder

    return ParamGridBuilder().addGrid(estimator.regParam, regs).build()


def test_fit_multiple_fits_a_regparam_grid_as_one_path(letter_df):
    from sparkopt.ml import LinearRegression, LogisticRegression

    for estimator, label in ((LogisticRegression(elasticNetParam=0.5, tol=1e-10, labelCol="binary"), "binary"),
                             (LinearRegression(elasticNetParam=1.0, tol=1e-10, labelCol="label"), "label")):
        regs = [1e-3, 0.1, 0.0, 1e-2]                  # not in path order: results come back in the caller's
        grid = _grid(estimator, regs)
        results = list(estimator.fitMultiple(letter_df, grid))
        assert [index for index, _ in results] == [0, 1, 2, 3]
        cold_passes = 0.0
        for (index, model), reg in zip(results, regs):
            assert model.getRegParam() == reg
            assert model._fit.params["path_points"] == 4
            cold = estimator.copy(grid[index]).fit(letter_df)
            cold_passes += cold.summary.totalPasses
            assert rel(model.coefficients.toArray(), cold.coefficients.toArray()) < 1e-6
            assert model.intercept == pytest.approx(cold.intercept, rel=1e-6, abs=1e-9)
        path_passes = results[0][1]._fit.params["path_passes"]
        assert path_passes < cold_passes
        if label == "label":
            assert path_passes == 1.0            # squared error: the statistics' one pass


def test_cross_validator_over_the_path_equals_separate_fits(letter_df, monkeypatch):
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator

    from sparkopt.ml import LogisticRegression
    from sparkopt.ml.estimator import SparkoptEstimator

    estimator = LogisticRegression(elasticNetParam=0.5, tol=1e-10, labelCol="binary")
    grid = _grid(estimator, [0.1, 1e-2, 1e-3])
    evaluator = BinaryClassificationEvaluator(labelCol="binary")

    def cross_validate():
        cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, evaluator=evaluator, numFolds=3, seed=7)
        return cv.fit(letter_df)

    on_path = cross_validate()
    monkeypatch.setattr(SparkoptEstimator, "_path_applies", lambda self, estimators: False)
    separate = cross_validate()
    np.testing.assert_allclose(on_path.avgMetrics, separate.avgMetrics, rtol=1e-6)
    assert on_path.bestModel.getRegParam() == separate.bestModel.getRegParam()
    assert rel(on_path.bestModel.coefficients.toArray(), separate.bestModel.coefficients.toArray()) < 1e-6


# ------------------------------------------------------------------------------ CV estimators
def test_logistic_regression_cv_chooses_persists_and_pipelines(letter_df, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    from sparkopt.ml import LogisticRegressionCV, LogisticRegressionCVModel
    from sparkopt.tuning import cross_validate

    estimator = LogisticRegressionCV(labelCol="binary", elasticNetParam=0.5, numFolds=3, numRegParams=5, seed=3,
                                     tol=1e-9)
    model = estimator.fit(letter_df)
    assert isinstance(model, LogisticRegressionCVModel)
    assert len(model.regParams) == 5 and len(model.avgMetrics) == 5 and len(model.stdMetrics) == 5
    assert model.bestRegParam in model.regParams and model.getRegParam() == model.bestRegParam
    assert model.oneStdErrRegParam >= model.bestRegParam
    assert model.avgMetrics[model.regParams.index(model.bestRegParam)] == min(model.avgMetrics)
    # the same folds and numbers as the in-memory cross-validation over the same blocks
    engine, _ = estimator._engine_for(letter_df)
    local = cross_validate(LocalEngine(engine.collect_blocks(), engine.stats), "logistic", n_folds=3, seed=3,
                           metric_name="logLoss", elastic_net_param=0.5, n_reg_params=5, tol=1e-9)
    np.testing.assert_allclose(model.avgMetrics, local.avg_metrics, rtol=1e-9)
    assert rel(model.coefficients.toArray(), local.best.coefficients) < 1e-9
    assert model.transform(letter_df).select("prediction").count() == letter_df.count()
    model.write().overwrite().save(str(tmp_path / "cv"))
    loaded = LogisticRegressionCVModel.load(str(tmp_path / "cv"))
    assert loaded.bestRegParam == model.bestRegParam and loaded.avgMetrics == model.avgMetrics
    assert rel(loaded.coefficients.toArray(), model.coefficients.toArray()) == 0
    pipeline = Pipeline(stages=[LogisticRegressionCV(labelCol="binary", numFolds=2, regParams=[0.1, 0.01],
                                                     metricName="areaUnderROC")])
    fitted = pipeline.fit(letter_df)
    auc = fitted.stages[0]
    assert auc.bestRegParam == auc.regParams[int(np.argmax(auc.avgMetrics))] and 0.5 < max(auc.avgMetrics) < 1
    fitted.write().overwrite().save(str(tmp_path / "pipe"))
    again = PipelineModel.load(str(tmp_path / "pipe"))
    assert again.stages[0].regParams == [0.1, 0.01] and again.stages[0].metricName == "areaUnderROC"
    assert again.transform(letter_df).count() == letter_df.count()


def test_linear_regression_cv_equals_the_exhaustive_choice(letter_df):
    from sparkopt.ml import LinearRegressionCV

    regs = [1.0, 0.1, 0.01, 0.0]
    model = LinearRegressionCV(labelCol="label", elasticNetParam=1.0, numFolds=3, regParams=regs,
                               metricName="r2").fit(letter_df)
    assert model.regParams == regs and model.metricName == "r2"
    assert model.bestRegParam == regs[int(np.argmax(model.avgMetrics))]
    assert model.summary.totalPasses >= 1 and model._fit.params["cv_passes"] >= 3


def test_fold_col_gives_the_users_folds_and_bad_ids_are_named(letter_df):
    """foldCol rides with the rows through the ingest (tree engine) and the driver collect; the
    folds are the column's; ids outside 0..numFolds-1, non-integers, nulls and a non-numeric
    column are refused by name."""
    from pyspark.sql import functions as F

    from sparkopt.errors import InputError
    from sparkopt.ml import LogisticRegressionCV
    from sparkopt.tuning import cross_validate

    df = letter_df.withColumn("myFold", F.expr("pmod(hash(label, features), 3)"))
    expected_sizes = sorted(r["count"] for r in df.groupBy("myFold").count().collect())
    kw = dict(labelCol="binary", foldCol="myFold", numFolds=3, regParams=[0.1, 0.01, 0.001], tol=1e-9)
    for engine_name in ("tree", "driver"):
        estimator = LogisticRegressionCV(engine=engine_name, **kw)
        model = estimator.fit(df)
        assert model.cvResult is not None and len(model.avgMetrics) == 3
        engine, _ = estimator._engine_for(df)
        blocks = engine.collect_blocks()
        held = sorted(int(sum(np.sum(b.fold == k) for part in blocks for b in part)) for k in range(3))
        assert held == expected_sizes
        local = cross_validate(LocalEngine(blocks, engine.stats), "logistic", n_folds=3, fold_col="myFold",
                               metric_name="logLoss", reg_params=kw["regParams"], tol=1e-9)
        np.testing.assert_allclose(model.avgMetrics, local.avg_metrics, rtol=1e-12)
        assert rel(model.coefficients.toArray(), local.best.coefficients) < 1e-12
    for expression, match in (("myFold + 1", r"foldCol 'bad' must hold integer fold ids .*0\.\.2.*3\.0"),
                              ("CASE WHEN label = 1 THEN 0.5 ELSE myFold END", r"0\.\.2.*0\.5"),
                              ("CASE WHEN label = 1 THEN NULL ELSE myFold END", "column 'bad' has .* null"),
                              ("CAST(myFold AS STRING)", "fold column 'bad' must be numeric")):
        with pytest.raises(InputError, match=match):
            LogisticRegressionCV(**{**kw, "foldCol": "bad"}).fit(df.withColumn("bad", F.expr(expression)))
