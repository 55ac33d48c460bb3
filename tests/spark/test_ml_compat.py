"""sparkopt.ml as a drop-in for pyspark.ml 4.3 on a live session: pyspark's base classes, the
models' repr, transform's output metadata and untouched pass-through columns, Spark's column
pruning through transform, and CrossValidator / TrainValidationSplit with parallelism > 1
giving the models of parallelism 1."""
import re

import numpy as np
import pytest
from pyspark.ml import Pipeline, PredictionModel, Predictor
from pyspark.ml import classification as mlc
from pyspark.ml import regression as mlr
from pyspark.ml.classification import ProbabilisticClassificationModel, ProbabilisticClassifier
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.evaluation import BinaryClassificationEvaluator, RegressionEvaluator
from pyspark.ml.regression import RegressionModel
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit
from pyspark.sql import functions as F

from sparkopt.errors import InputError
from sparkopt.ml import (GeneralizedLinearRegression, LinearRegression, LinearSVC, LogisticRegression,
                         LogisticRegressionModel)
from sparkopt.ml.estimator import SparkoptEstimator

from conftest import letter_head

pytestmark = [pytest.mark.spark, pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")]


@pytest.fixture(scope="module")
def letters(spark):
    """letter.scale's first 3000 rows: 'label' the class 0..25, 'binary' A-M vs N-Z, 'three' the
    first three letters' rows (classes 0, 1, 2)."""
    df = letter_head(spark, 3)
    df.count()
    yield df
    df.unpersist()


def _metadata(df):
    return {f.name: f.metadata for f in df.schema.fields}


def test_models_repr_and_output_metadata_are_mllibs(letters):
    """Each model's repr is MLlib's toString (its uid replaced by ours) and transform writes
    MLlib's ml_attr metadata on rawPrediction / probability / prediction / linkPrediction."""
    three = letters.filter("label < 3")
    cases = [
        (LogisticRegression(labelCol="binary", maxIter=5), mlc.LogisticRegression(labelCol="binary", maxIter=5),
         letters),
        (LogisticRegression(maxIter=5), mlc.LogisticRegression(maxIter=5), three),
        (LinearSVC(labelCol="binary", maxIter=5), mlc.LinearSVC(labelCol="binary", maxIter=5), letters),
        (LinearRegression(), mlr.LinearRegression(), letters),
        (GeneralizedLinearRegression(family="poisson", link="log", linkPredictionCol="eta"),
         mlr.GeneralizedLinearRegression(family="poisson", link="log", linkPredictionCol="eta"), letters),
    ]
    for ours, theirs, df in cases:
        a, b = ours.fit(df), theirs.fit(df)
        assert repr(a) == repr(b).replace(b.uid, a.uid)
        assert str(a) == repr(a) and repr(a).startswith(f"{type(b).__name__}: uid={a.uid}, ")
        got, want = _metadata(a.transform(df)), _metadata(b.transform(df))
        assert got == want, type(a).__name__
    assert "numClasses=3" in repr(LogisticRegression(maxIter=5).fit(three))
    # before it has coefficients a model's repr is its uid, as any pyspark.ml object's
    bare = LogisticRegressionModel()
    assert repr(bare) == bare.uid


def test_fitted_objects_are_pyspark_ml_predictors(letters):
    lr = LogisticRegression(labelCol="binary", maxIter=5)
    model = lr.fit(letters)
    assert isinstance(lr, (ProbabilisticClassifier, Predictor)) and isinstance(model, ProbabilisticClassificationModel)
    assert isinstance(model, PredictionModel) and model.predictProbability(letters.first().features).size == 2
    regression = GeneralizedLinearRegression(family="gaussian").fit(letters)
    assert isinstance(regression, RegressionModel)
    # a Pipeline of them fits, transforms and keeps MLlib's output metadata
    fitted = Pipeline(stages=[lr]).fit(letters)
    assert _metadata(fitted.transform(letters))["probability"] == {"ml_attr": {"num_attrs": 2}}


def test_transform_leaves_other_columns_untouched(letters):
    """Columns Arrow cannot carry (a CalendarInterval) and maps pass through transform unread."""
    model = LogisticRegression(labelCol="binary", maxIter=5).fit(letters)
    df = (letters.withColumn("id", F.monotonically_increasing_id())
          .withColumn("interval", F.expr("make_interval(1, 2, 0, 3, 4, 5, 6.5)") * F.col("label").cast("int"))
          .withColumn("tags", F.create_map(F.lit("label"), F.col("label"), F.lit("binary"), F.col("binary"))))
    out = model.transform(df)
    assert out.columns == df.columns + ["rawPrediction", "probability", "prediction"]
    assert [f.dataType for f in out.schema.fields][:len(df.columns)] == [f.dataType for f in df.schema.fields]

    def passed(frame):
        return sorted(frame.select("id", F.col("interval").cast("string"), F.to_json("tags")).collect())

    assert passed(out) == passed(df)
    expected = sorted((r.id, r.prediction) for r in model.transform(letters.withColumn(
        "id", F.monotonically_increasing_id())).select("id", "prediction").collect())
    assert sorted((r.id, r.prediction) for r in out.select("id", "prediction").collect()) == expected
    # bad input is named: a clashing output column, a missing features column, vectors of another size
    with pytest.raises(InputError, match="output column 'prediction' already exists"):
        model.transform(out.drop("rawPrediction", "probability"))
    with pytest.raises(InputError, match="features column 'features' not found"):
        model.transform(df.drop("features"))
    short = letters.select(vector_to_array("features").alias("a")).select(
        array_to_vector(F.slice("a", 1, 5)).alias("features"))
    with pytest.raises(Exception, match="vectors of size 5, the model expects 16"):
        model.transform(short).collect()


def test_column_pruning_survives_transform(spark, letters, tmp_path):
    """Selecting an output column after transform reads the features only: a column whose
    evaluation fails is never computed, and a Parquet scan reads the features column alone."""
    model = LinearRegression(maxIter=5).fit(letters)
    explode = F.udf(lambda v: 1.0 / 0.0, "double")
    df = letters.withColumn("never", explode("label"))
    assert model.transform(df).select("prediction").count() == letters.count()
    assert len(model.transform(df).select("features", "prediction").collect()) == letters.count()
    with pytest.raises(Exception, match="ZeroDivisionError"):
        model.transform(df).select("never").collect()
    path = str(tmp_path / "letters.parquet")
    letters.select("features", "label", "binary").write.parquet(path)
    selected = model.transform(spark.read.parquet(path)).select("prediction")
    plan = selected._jdf.queryExecution().executedPlan().toString()
    assert re.findall(r"ReadSchema: (\S+)", plan) == [
        "struct<features:struct<type:tinyint,size:int,indices:array<int>,values:array<double>>>"]
    # the scoring UDF runs once per row whichever outputs are selected
    both = model.transform(spark.read.parquet(path)).select("prediction", "label")
    assert both._jdf.queryExecution().executedPlan().toString().count("ArrowEvalPython") == 1


def _sub_model_coefficients(cv_model):
    return [[m._fit.coef_vector for m in fold] for fold in cv_model.subModels]


@pytest.mark.parametrize("engine, paths", [("tree", True), ("driver", False)])
def test_cross_validator_parallelism_gives_the_serial_models(letters, monkeypatch, engine, paths):
    """A regParam x elasticNetParam grid (two groups: two paths, or two chains of warm-started
    fits) with parallelism 1 and 2: the same sub-models bit for bit, the same best model."""
    if not paths:
        monkeypatch.setattr(SparkoptEstimator, "_path_applies", lambda self, estimators: False)
    lr = LogisticRegression(labelCol="binary", tol=1e-8, engine=engine)
    grid = ParamGridBuilder().addGrid(lr.regParam, [0.1, 1e-3]).addGrid(lr.elasticNetParam, [0.0, 0.5]).build()
    runs = {}
    for parallelism in (1, 2):
        cv = CrossValidator(estimator=lr, estimatorParamMaps=grid, numFolds=2, seed=5, parallelism=parallelism,
                            evaluator=BinaryClassificationEvaluator(labelCol="binary"), collectSubModels=True)
        runs[parallelism] = cv.fit(letters)
    serial, parallel = runs[1], runs[2]
    for fold_a, fold_b in zip(_sub_model_coefficients(serial), _sub_model_coefficients(parallel)):
        for a, b in zip(fold_a, fold_b):
            np.testing.assert_array_equal(a, b)
    assert all(("path_points" in m._fit.params) == paths for fold in parallel.subModels for m in fold)
    np.testing.assert_array_equal(serial.bestModel._fit.coef_vector, parallel.bestModel._fit.coef_vector)
    # BinaryClassificationEvaluator's AUC varies by ~1e-6 between runs of the same coefficients
    np.testing.assert_allclose(serial.avgMetrics, parallel.avgMetrics, rtol=1e-5)


def test_glr_and_resident_grids_in_parallel(letters):
    """TrainValidationSplit(parallelism=2) over GLR (IRLS, cold fits) and over resident-engine
    fits, which take turns (a resident session holds every task slot): the serial models."""
    glr = GeneralizedLinearRegression(family="poisson")
    lr = LogisticRegression(labelCol="binary", engine="resident", numPartitions=2, tol=1e-8)
    cases = [(glr, ParamGridBuilder().addGrid(glr.regParam, [0.0, 0.1]).addGrid(glr.fitIntercept, [True, False])
              .build(), RegressionEvaluator()),
             (lr, ParamGridBuilder().addGrid(lr.elasticNetParam, [0.0, 0.5]).build(),
              BinaryClassificationEvaluator(labelCol="binary"))]
    for estimator, grid, evaluator in cases:
        runs = [TrainValidationSplit(estimator=estimator, estimatorParamMaps=grid, evaluator=evaluator, seed=2,
                                     parallelism=p, collectSubModels=True).fit(letters) for p in (1, 2)]
        for a, b in zip(runs[0].subModels, runs[1].subModels):
            np.testing.assert_array_equal(a.coefficients.toArray(), b.coefficients.toArray())
            assert a.intercept == b.intercept
        if estimator is lr:
            assert {m.summary.engine for m in runs[1].subModels} == {"resident"}
