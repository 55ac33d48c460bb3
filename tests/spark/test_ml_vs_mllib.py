"""sparkopt.ml estimators against pyspark.ml's on real data: same objective, same optimum."""

import numpy as np
import pytest
from pyspark.ml import classification as mlc
from pyspark.ml import regression as mlr
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import functions as F

from sparkopt.engine import TreeEngine, ingest
from sparkopt.fit import objective_value
from sparkopt.ml import LinearRegression, LinearSVC, LogisticRegression, PoissonRegression

from conftest import dataset

pytestmark = pytest.mark.spark


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.fixture(scope="module")
def a9a(spark):
    df = (spark.read.format("libsvm").option("numFeatures", 123).load(str(dataset("a9a")))
          .withColumn("label", F.when(F.col("label") > 0, 1.0).otherwise(0.0)).repartition(4).cache())
    df.count()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def a9a_engine(a9a):
    rdd, stats = ingest(a9a)
    engine = TreeEngine(rdd, stats)
    yield engine
    engine.unpersist()


@pytest.fixture(scope="module")
def abalone(spark):
    df = spark.read.format("libsvm").option("numFeatures", 8).load(str(dataset("angel_abalone_8d_train.libsvm")))
    df = df.repartition(3).cache()
    df.count()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def abalone_engine(abalone):
    rdd, stats = ingest(abalone)
    engine = TreeEngine(rdd, stats)
    yield engine
    engine.unpersist()


@pytest.mark.parametrize("standardization", [True, False])
@pytest.mark.parametrize("reg, alpha", [(1e-3, 0.0), (1e-2, 0.5)])
def test_logistic_matches_mllib(a9a, a9a_engine, standardization, reg, alpha):
    common = dict(regParam=reg, elasticNetParam=alpha, standardization=standardization)
    # on Spark (the driver engine would take these 32561 rows, and its passes cost no job, so
    # auto's cost model picks differently there): the solver and pass claims below are Spark's
    ours = LogisticRegression(tol=1e-9, maxIter=500, maxDriverSizeInMB=0, **common).fit(a9a)
    theirs = mlc.LogisticRegression(tol=1e-10, maxIter=300, **common).fit(a9a)
    assert ours.summary.converged and ours._fit.params["engine"] != "driver"
    assert rel(ours.coefficients.toArray(), theirs.coefficients.toArray()) < 1e-4
    assert abs(ours.intercept - theirs.intercept) < 1e-4 * max(1, abs(theirs.intercept))
    f_theirs = objective_value(a9a_engine, "logistic", theirs.coefficients.toArray(), theirs.intercept, **_obj(common))
    assert ours.summary.objective <= f_theirs + 1e-12
    assert ours.summary.objective == pytest.approx(
        objective_value(a9a_engine, "logistic", ours.coefficients.toArray(), ours.intercept, **_obj(common)), rel=1e-12)
    assert ours.summary.solver == "newton"        # proximal Newton under L1: the model is small
    # at tol 1e-9 (far below the 1e-6 of the pass target) elastic net with standardization takes
    # ~74 passes: the driver-side coordinate descent is inexact on a9a's collinear one-hot groups
    assert ours.summary.totalPasses <= (100 if alpha > 0 else 15)


def _obj(common):
    return dict(reg_param=common["regParam"], elastic_net_param=common.get("elasticNetParam", 0.0),
                standardization=common.get("standardization", True))


@pytest.mark.parametrize("standardization", [True, False])
@pytest.mark.parametrize("reg, alpha", [(0.1, 0.0), (0.05, 0.5)])
def test_linear_regression_matches_mllib(abalone, abalone_engine, standardization, reg, alpha):
    common = dict(regParam=reg, elasticNetParam=alpha, standardization=standardization)
    ours = LinearRegression(tol=1e-8, maxIter=500, **common).fit(abalone)
    # MLlib's own default path for 8 features ("auto": normal equations, OWL-QN on them under L1):
    # its optimum in one pass, where its distributed L-BFGS takes ~180 Spark jobs to the same point
    theirs = mlr.LinearRegression(tol=1e-10, maxIter=300, solver="normal", **common).fit(abalone)
    assert ours.summary.converged
    assert rel(ours.coefficients.toArray(), theirs.coefficients.toArray()) < 1e-4
    assert ours.intercept == pytest.approx(theirs.intercept, rel=1e-4)
    f_theirs = objective_value(abalone_engine, "squared_error", theirs.coefficients.toArray(), theirs.intercept,
                               **_obj(common))
    assert ours.summary.objective <= f_theirs + 1e-12


def test_huber_matches_mllib(abalone, abalone_engine):
    ours = LinearRegression(loss="huber", regParam=0.01, tol=1e-10, maxIter=500).fit(abalone)
    theirs = mlr.LinearRegression(loss="huber", regParam=0.01, tol=1e-10, maxIter=300).fit(abalone)
    assert ours.summary.converged
    assert rel(ours.coefficients.toArray(), theirs.coefficients.toArray()) < 1e-4
    assert ours.scale == pytest.approx(theirs.scale, rel=1e-4)
    f_theirs = objective_value(abalone_engine, "huber", theirs.coefficients.toArray(), theirs.intercept,
                               scale=theirs.scale, reg_param=0.01)
    assert ours.summary.objective <= f_theirs + 1e-12


def test_linear_svc_objective_at_least_as_low_as_mllib(spark):
    df = (spark.read.format("libsvm").option("numFeatures", 126)
          .load(str(dataset("angel_agaricus_127d_train.libsvm"))).repartition(2).cache())
    rdd, stats = ingest(df)
    with TreeEngine(rdd, stats) as engine:
        ours = LinearSVC(regParam=1e-3).fit(df)
        theirs = mlc.LinearSVC(regParam=1e-3).fit(df)          # MLlib's defaults: maxIter 100, tol 1e-6
        f_theirs = objective_value(engine, "hinge", theirs.coefficients.toArray(), theirs.intercept, reg_param=1e-3)
    assert ours.summary.solver == "newton-smoothing"
    assert ours.summary.objective <= f_theirs
    agree = ours.transform(df).select("prediction").toPandas()["prediction"].to_numpy() == \
        theirs.transform(df).select("prediction").toPandas()["prediction"].to_numpy()
    assert agree.mean() > 0.99
    df.unpersist()


def test_poisson_matches_glm_at_zero_reg(spark):
    cols = ["season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit", "temp", "atemp", "hum",
            "windspeed"]
    raw = spark.read.option("header", True).option("inferSchema", True).csv(str(dataset("bike_sharing_hour.csv")))
    df = VectorAssembler(inputCols=cols, outputCol="features").transform(raw).withColumnRenamed("cnt", "label")
    df = df.select("features", "label").repartition(3).cache()
    ours = PoissonRegression(tol=1e-10).fit(df)
    theirs = mlr.GeneralizedLinearRegression(family="poisson", link="log", tol=1e-12, maxIter=100).fit(df)
    assert ours.summary.converged
    assert rel(ours.coefficients.toArray(), theirs.coefficients.toArray()) < 1e-4
    assert ours.intercept == pytest.approx(theirs.intercept, rel=1e-4)
    pred_ours = ours.transform(df).select("prediction").toPandas()["prediction"].to_numpy()
    pred_theirs = theirs.transform(df).select("prediction").toPandas()["prediction"].to_numpy()
    np.testing.assert_allclose(pred_ours, pred_theirs, rtol=1e-4)
    df.unpersist()


def test_multinomial_matches_mllib(spark):
    df = (spark.read.format("libsvm").option("numFeatures", 16).load(str(dataset("letter.scale")))
          .withColumn("label", F.col("label") - 1).repartition(4).cache())
    ours = LogisticRegression(regParam=1e-3, tol=1e-9, maxIter=300).fit(df)
    theirs = mlc.LogisticRegression(regParam=1e-3, tol=1e-10, maxIter=300).fit(df)
    assert ours.numClasses == theirs.numClasses == 26
    assert ours.summary.converged
    assert rel(ours.coefficientMatrix.toArray(), theirs.coefficientMatrix.toArray()) < 1e-4
    assert rel(ours.interceptVector.toArray(), theirs.interceptVector.toArray()) < 1e-4
    with pytest.raises(RuntimeError, match="coefficientMatrix"):
        ours.coefficients
    df.unpersist()


# ---------------------------------------------------------------- summaries against MLlib's
def _weighted(df):
    """`df` with a weight column w in {0.5, 0.75, ..., 1.5}, fixed by the row's position."""
    return df.withColumn("w", (F.monotonically_increasing_id() % 5) * 0.25 + 0.5)


@pytest.fixture(scope="module")
def a9a_head(spark):
    # under 2000 distinct scores: MLlib's 1000-bin curves are then exact, as sparkopt's
    df = (spark.read.format("libsvm").option("numFeatures", 123).load(str(dataset("a9a"))).limit(1500)
          .withColumn("label", F.when(F.col("label") > 0, 1.0).otherwise(0.0)))
    df = _weighted(df).repartition(3).cache()
    df.count()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def california(spark):
    cols = ["longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms", "population",
            "households", "median_income"]
    raw = (spark.read.option("header", True).option("inferSchema", True).csv(str(dataset("california_housing.csv")))
           .dropna().limit(4000))
    df = VectorAssembler(inputCols=cols, outputCol="features").transform(raw)
    df = _weighted(df.select("features", (F.col("median_house_value") / 1e5).alias("label"))).repartition(3).cache()
    df.count()
    yield df
    df.unpersist()


def _rows(frame):
    return np.array([tuple(r) for r in frame.collect()], dtype=float)


def _same_coefficients(ours, theirs):
    """`ours` scoring with MLlib's coefficients: the metrics then see the same predictions."""
    if hasattr(theirs, "coefficientMatrix") and ours._state["loss"] == "multinomial":
        B, c = theirs.coefficientMatrix.toArray(), theirs.interceptVector.toArray()
        coef = np.column_stack([B, c]).ravel()
    else:
        coef = theirs.coefficients.toArray()
        if ours.getFitIntercept():
            coef = np.r_[coef, theirs.intercept]
    ours._state["coef_vector"] = coef
    return ours


CLASSIFICATION_MEMBERS = ["labels", "accuracy", "weightedTruePositiveRate", "weightedFalsePositiveRate",
                          "weightedRecall", "weightedPrecision", "truePositiveRateByLabel",
                          "falsePositiveRateByLabel", "precisionByLabel", "recallByLabel"]
CURVES = ["roc", "pr", "fMeasureByThreshold", "precisionByThreshold", "recallByThreshold"]


def _assert_classification_summaries_equal(ours, theirs, tol):
    for name in CLASSIFICATION_MEMBERS:
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=tol, atol=tol, err_msg=name)
    for beta in (1.0, 0.5):
        np.testing.assert_allclose(ours.fMeasureByLabel(beta), theirs.fMeasureByLabel(beta), rtol=tol, atol=tol)
        assert ours.weightedFMeasure(beta) == pytest.approx(theirs.weightedFMeasure(beta), rel=tol, abs=tol)
    for name in ("labelCol", "predictionCol", "weightCol"):
        assert getattr(ours, name) == getattr(theirs, name), name


def _assert_curves_equal(ours, theirs, tol):
    assert ours.scoreCol == theirs.scoreCol
    assert ours.areaUnderROC == pytest.approx(theirs.areaUnderROC, rel=tol, abs=tol)
    for name in CURVES:
        mine, other = getattr(ours, name), getattr(theirs, name)
        assert mine.columns == other.columns, name
        np.testing.assert_allclose(_rows(mine), _rows(other), rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("weight", [None, "w"])
def test_binary_logistic_summary_equals_mllibs(a9a_head, weight):
    common = dict(regParam=0.01, **({"weightCol": weight} if weight else {}))
    theirs = mlc.LogisticRegression(tol=1e-10, maxIter=200, **common).fit(a9a_head)
    ours = LogisticRegression(tol=1e-10, maxIter=200, **common).fit(a9a_head)
    assert type(ours.summary).__name__ == type(theirs.summary).__name__ == "BinaryLogisticRegressionTrainingSummary"
    # the fits agree to ~1e-8: so do the training summaries' ranking metrics
    assert ours.summary.areaUnderROC == pytest.approx(theirs.summary.areaUnderROC, abs=1e-6)
    assert ours.summary.probabilityCol == theirs.summary.probabilityCol
    assert ours.summary.featuresCol == theirs.summary.featuresCol
    # on the same predictions every metric equals MLlib's
    same = _same_coefficients(ours, theirs).evaluate(a9a_head)
    assert type(same).__name__ == "BinaryLogisticRegressionSummary"
    _assert_classification_summaries_equal(same, theirs.summary, 1e-10)
    _assert_curves_equal(same, theirs.summary, 1e-10)


@pytest.mark.parametrize("weight", [None, "w"])
def test_multinomial_summary_equals_mllibs(spark, weight):
    from conftest import letter_head

    df = _weighted(letter_head(spark, 3))
    common = dict(regParam=1e-2, **({"weightCol": weight} if weight else {}))
    theirs = mlc.LogisticRegression(tol=1e-10, maxIter=300, **common).fit(df)
    ours = LogisticRegression(tol=1e-10, maxIter=300, **common).fit(df)
    assert type(ours.summary).__name__ == type(theirs.summary).__name__ == "LogisticRegressionTrainingSummary"
    same = _same_coefficients(ours, theirs).evaluate(df)
    _assert_classification_summaries_equal(same, theirs.summary, 1e-10)
    assert len(same.labels) == 26


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")
@pytest.mark.parametrize("weight", [None, "w"])
def test_linear_svc_summary_equals_mllibs(a9a_head, weight):
    common = dict(regParam=0.01, **({"weightCol": weight} if weight else {}))
    theirs = mlc.LinearSVC(maxIter=50, **common).fit(a9a_head)
    ours = LinearSVC(**common).fit(a9a_head)
    assert ours.summary() is ours.summary          # pyspark's LinearSVCModel.summary is a method
    assert ours.summary.totalIterations >= 1
    same = _same_coefficients(ours, theirs).evaluate(a9a_head)
    theirs_summary = theirs.summary()
    _assert_classification_summaries_equal(same, theirs_summary, 1e-10)
    _assert_curves_equal(same, theirs_summary, 1e-10)


REGRESSION_MEMBERS = ["meanSquaredError", "rootMeanSquaredError", "meanAbsoluteError", "r2", "r2adj",
                      "explainedVariance", "numInstances", "degreesOfFreedom", "devianceResiduals"]
INFERENCE = ["coefficientStandardErrors", "tValues", "pValues"]


@pytest.mark.parametrize("weight", [None, "w"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_linear_regression_summary_equals_mllibs_normal_solver(california, weight, fit_intercept):
    common = dict(fitIntercept=fit_intercept, **({"weightCol": weight} if weight else {}))
    theirs = mlr.LinearRegression(solver="normal", **common).fit(california)
    ours = LinearRegression(solver="lbfgs", tol=1e-12, maxIter=1000, **common).fit(california)
    assert ours.summary.solver == "lbfgs"
    # inference from the exact Hessian whatever the solver: MLlib's normal-solver values
    for name in INFERENCE:
        np.testing.assert_allclose(getattr(ours.summary, name), getattr(theirs.summary, name), rtol=1e-6,
                                   atol=1e-9, err_msg=name)
    same = _same_coefficients(ours, theirs).evaluate(california)
    for name in REGRESSION_MEMBERS + INFERENCE:
        np.testing.assert_allclose(getattr(same, name), getattr(theirs.summary, name), rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    np.testing.assert_allclose(_rows(same.residuals), _rows(theirs.summary.residuals), rtol=1e-10, atol=1e-12)
    assert same.residuals.columns == ["residuals"]
    for name in ("labelCol", "predictionCol", "featuresCol"):
        assert getattr(same, name) == getattr(theirs.summary, name)


def test_linear_regression_ridge_standard_errors_equal_mllibs(abalone):
    """At regParam > 0 the covariance uses the penalized Hessian, as MLlib's normal solver. That
    solver standardizes with population sds (label and features; its l-bfgs, and sparkopt, with
    sample sds), so its penalty lam sd_j^2 is sparkopt's times sqrt((n - 1) / n): with regParam
    scaled by that factor both penalties are the same, and so are the errors."""
    n = abalone.count()
    theirs = mlr.LinearRegression(solver="normal", regParam=0.1).fit(abalone).summary
    mine = LinearRegression(tol=1e-12, regParam=0.1 * np.sqrt((n - 1) / n)).fit(abalone).summary
    np.testing.assert_allclose(mine.coefficientStandardErrors, theirs.coefficientStandardErrors, rtol=1e-6)
    with pytest.raises(RuntimeError, match="No Std. Error.*L1"):
        LinearRegression(regParam=0.1, elasticNetParam=0.5).fit(abalone).summary.coefficientStandardErrors


@pytest.mark.parametrize("weighted", [False, True])
def test_linear_regression_standard_errors_equal_the_closed_form(abalone, weighted):
    """sigma^2 (A'WA)^-1 on the collected data (QR of sqrt(W) A), t and p values from it."""
    from scipy.stats import t as student_t

    data = abalone.withColumn("w", 0.5 + (F.col("label") % 3) * 0.25 if weighted else F.lit(1.0))
    ours = LinearRegression(weightCol="w", tol=1e-12, solver="newton").fit(data).summary
    rows = data.select("features", "label", "w").collect()
    X = np.array([r["features"].toArray() for r in rows])
    y, w = np.array([r["label"] for r in rows]), np.array([r["w"] for r in rows])
    A = np.column_stack([X, np.ones(len(y))])
    Q, R = np.linalg.qr(np.sqrt(w)[:, None] * A)
    beta = np.linalg.solve(R, Q.T @ (np.sqrt(w) * y))
    dof = len(y) - A.shape[1]
    sigma2 = np.sum(w * (y - A @ beta) ** 2) / dof
    se = np.sqrt(np.sum(np.linalg.inv(R) ** 2, axis=1) * sigma2)   # diag((A'WA)^-1): rows of R^-1 squared
    np.testing.assert_allclose(ours.coefficientStandardErrors, se, rtol=1e-7)
    np.testing.assert_allclose(ours.tValues, beta / se, rtol=1e-6)
    np.testing.assert_allclose(ours.pValues, 2 * student_t.sf(np.abs(beta / se), dof), rtol=1e-5, atol=1e-12)
