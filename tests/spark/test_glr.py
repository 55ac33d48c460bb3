"""sparkopt.ml.GeneralizedLinearRegression against pyspark.ml's on real data from data/: the same
IRLS, so the same coefficients, summary statistics and residuals to 1e-6."""

import numpy as np
import pytest
from pyspark.ml import regression as mlr
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import functions as F

from sparkopt.errors import InputError
from sparkopt.ml import GeneralizedLinearRegression, GeneralizedLinearRegressionModel

from conftest import dataset

pytestmark = pytest.mark.spark

RTOL = 1e-6


def close(ours, theirs, rtol=RTOL, atol=1e-9):
    """Element-wise relative agreement, absolute for values near zero."""
    np.testing.assert_allclose(np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def bike(spark):
    """Every 8th hour of the bike-sharing data (2173 rows), counts `cnt`, a weight and an offset."""
    cols = ["season", "hr", "workingday", "weathersit", "temp", "hum", "windspeed"]
    raw = spark.read.option("header", True).option("inferSchema", True).csv(str(dataset("bike_sharing_hour.csv")))
    df = (VectorAssembler(inputCols=cols, outputCol="features").transform(raw.filter(F.col("instant") % 8 == 0))
          .select("features", F.col("cnt").cast("double").alias("label"),
                  ((F.col("instant") % 5) * 0.25 + 0.5).alias("w"),
                  F.log(F.col("atemp") + 1.0).alias("exposure"),
                  F.when(F.col("cnt") > 150, 1.0).otherwise(0.0).alias("busy"))
          .repartition(2).cache())
    df.count()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def california(spark):
    """Every 10th district of California housing (2064 rows), house values in units of 100k."""
    cols = ["housing_median_age", "median_income", "households"]
    raw = spark.read.option("header", True).option("inferSchema", True).csv(str(dataset("california_housing.csv")))
    raw = raw.withColumn("row", F.monotonically_increasing_id()).filter(F.col("row") % 10 == 0)
    df = (VectorAssembler(inputCols=cols, outputCol="features")
          .transform(raw.withColumn("households", F.col("households") / 1000.0))
          .select("features", (F.col("median_house_value") / 1e5).alias("label"))
          .repartition(2).cache())
    df.count()
    yield df
    df.unpersist()


def both(df, **params):
    ours = GeneralizedLinearRegression(**params).fit(df)
    theirs = mlr.GeneralizedLinearRegression(**params).fit(df)
    return ours, theirs


def same_coefficients(ours, theirs):
    close(ours.coefficients.toArray(), theirs.coefficients.toArray())
    close(ours.intercept, theirs.intercept)


def same_table(ours: str, theirs: str):
    """The training summary's repr is MLlib's R-style table: the same lines, words and layout,
    the numbers (4 decimals) equal up to the fits' 1e-6 agreement and rounding of the last digit."""
    assert [len(line.split()) for line in ours.splitlines()] == [len(line.split()) for line in theirs.splitlines()]
    for a, b in zip(ours.split(), theirs.split()):
        try:
            x, y = float(a.rstrip(")")), float(b.rstrip(")"))
        except ValueError:
            assert a == b
            continue
        assert abs(x - y) <= 1.5e-4 + 1e-6 * abs(y), (a, b)
        assert len(a.split(".")[-1]) == len(b.split(".")[-1])         # 4 decimals (or none: a count)


def same_summary(ours, theirs, aic=True, inference=True):
    a, b = ours.summary, theirs.summary
    assert a.numIterations == b.numIterations
    assert a.numInstances == b.numInstances
    assert (a.rank, a.degreesOfFreedom, a.residualDegreeOfFreedom, a.residualDegreeOfFreedomNull) == \
        (b.rank, b.degreesOfFreedom, b.residualDegreeOfFreedom, b.residualDegreeOfFreedomNull)
    close(a.deviance, b.deviance)
    close(a.nullDeviance, b.nullDeviance)
    close(a.dispersion, b.dispersion)
    if aic:
        close(a.aic, b.aic)
    if inference:
        close(a.coefficientStandardErrors, b.coefficientStandardErrors)
        close(a.tValues, b.tValues)
        same_table(repr(a), repr(b))
        close(a.pValues, b.pValues, atol=1e-9)


@pytest.mark.parametrize("params", [
    dict(family="poisson"),
    dict(family="poisson", link="sqrt"),
    dict(family="poisson", weightCol="w", offsetCol="exposure"),
    dict(family="poisson", regParam=0.1),
    dict(family="binomial", link="probit", weightCol="w"),
], ids=["poisson-log", "poisson-sqrt", "poisson-weight-offset", "poisson-ridge", "binomial-probit-weighted"])
def test_bike_counts_match_mllib(bike, params):
    df = bike.drop("label").withColumnRenamed("busy", "label") if params["family"] == "binomial" else bike
    ours, theirs = both(df, **params)
    same_coefficients(ours, theirs)
    same_summary(ours, theirs)


def test_binomial_logit_matches_mllib(bike):
    df = bike.drop("label").withColumnRenamed("busy", "label")
    ours, theirs = both(df, family="binomial")
    same_coefficients(ours, theirs)
    same_summary(ours, theirs)
    assert ours.summary.dispersion == 1.0


def test_tweedie_matches_mllib_and_has_no_aic(bike):
    ours, theirs = both(bike, family="tweedie", variancePower=1.5, linkPower=0.0)
    same_coefficients(ours, theirs)
    same_summary(ours, theirs, aic=False)
    with pytest.raises(RuntimeError, match="tweedie"):
        ours.summary.aic


@pytest.mark.parametrize("params", [
    dict(family="gamma", link="log"),
    dict(family="gamma"),                       # the canonical inverse link
    dict(family="gaussian"),
    dict(family="gaussian", regParam=0.3),
    dict(family="gaussian", link="log"),
], ids=["gamma-log", "gamma-inverse", "gaussian-identity", "gaussian-ridge", "gaussian-log"])
def test_positive_target_matches_mllib(california, params):
    ours, theirs = both(california, **params)
    same_coefficients(ours, theirs)
    same_summary(ours, theirs)


def test_predictions_and_residuals_match_mllib(bike):
    params = dict(family="poisson", weightCol="w", offsetCol="exposure", linkPredictionCol="eta")
    ours, theirs = both(bike, **params)
    a = ours.transform(bike).select("prediction", "eta").toPandas()
    b = theirs.transform(bike).select("prediction", "eta").toPandas()
    close(a["prediction"], b["prediction"])
    close(a["eta"], b["eta"])
    for kind in ("deviance", "pearson", "working", "response"):
        ra = ours.summary.residuals(kind).toPandas()
        rb = theirs.summary.residuals(kind).toPandas()
        assert list(ra.columns) == list(rb.columns) == [f"{kind}Residuals"]
        close(ra.iloc[:, 0], rb.iloc[:, 0], atol=1e-8)
    evaluated = ours.evaluate(bike)
    close(evaluated.deviance, theirs.evaluate(bike).deviance)
    close(evaluated.nullDeviance, theirs.summary.nullDeviance)


def test_offset_shifts_the_linear_predictor_exactly(bike):
    model = GeneralizedLinearRegression(family="poisson", offsetCol="exposure", linkPredictionCol="eta").fit(bike)
    shifted = bike.withColumn("exposure", F.col("exposure") + 0.5)
    a = model.transform(bike).select("eta", "prediction").toPandas()
    b = model.transform(shifted).select("eta", "prediction").toPandas()
    np.testing.assert_allclose(b["eta"], a["eta"] + 0.5, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b["prediction"], a["prediction"] * np.exp(0.5), rtol=1e-12)


def test_save_load_round_trip(bike, tmp_path):
    model = GeneralizedLinearRegression(family="tweedie", variancePower=1.5, linkPower=0.0, offsetCol="exposure",
                                        linkPredictionCol="eta").fit(bike)
    path = str(tmp_path / "glr")
    model.write().overwrite().save(path)
    loaded = GeneralizedLinearRegressionModel.load(path)
    assert (loaded.getFamily(), loaded.getVariancePower(), loaded.getLinkPower(), loaded.getOffsetCol()) == \
        ("tweedie", 1.5, 0.0, "exposure")
    assert not loaded.hasSummary
    a = model.transform(bike).select("prediction", "eta").toPandas()
    b = loaded.transform(bike).select("prediction", "eta").toPandas()
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    close(loaded.evaluate(bike).deviance, model.summary.deviance, rtol=1e-12)
    estimator = GeneralizedLinearRegression(family="gamma", link="log", maxIter=7)
    estimator.write().overwrite().save(str(tmp_path / "est"))
    again = GeneralizedLinearRegression.load(str(tmp_path / "est"))
    assert (again.getFamily(), again.getLink(), again.getMaxIter()) == ("gamma", "log", 7)


def test_bad_input_is_named(bike):
    with pytest.raises(InputError, match="link.*binomial.*'log'|family='binomial'.*log"):
        GeneralizedLinearRegression(family="binomial", link="log").fit(bike)
    with pytest.raises(InputError, match="label column 'label' must be > 0 for family='gamma'"):
        GeneralizedLinearRegression(family="gamma").fit(bike.withColumn("label", F.col("label") - 1.0))
    with pytest.raises(InputError, match=r"label column 'label' must lie in \[0, 1\] for family='binomial'"):
        GeneralizedLinearRegression(family="binomial").fit(bike)
    with pytest.raises(InputError, match="label column 'label' must be >= 0 for family='poisson'"):
        GeneralizedLinearRegression(family="poisson").fit(bike.withColumn("label", F.col("label") - 5.0))
    with pytest.raises(InputError, match="param family must be one of"):
        GeneralizedLinearRegression(family="gausian")
    with pytest.raises(InputError, match="variancePower"):
        GeneralizedLinearRegression(family="tweedie", variancePower=0.5)
    with pytest.raises(InputError, match="offset column 'nope' not found"):
        GeneralizedLinearRegression(family="poisson", offsetCol="nope").fit(bike)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_sparkopt_solvers_reach_mllibs_optimum(bike, solver):
    params = dict(family="poisson", weightCol="w", offsetCol="exposure", tol=1e-10)
    ours = GeneralizedLinearRegression(solver=solver, maxIter=200, **params).fit(bike)
    theirs = mlr.GeneralizedLinearRegression(maxIter=100, **params).fit(bike)
    assert ours.summary.solver == solver and ours.summary.converged
    same_coefficients(ours, theirs)
    close(ours.summary.deviance, theirs.summary.deviance)
    close(ours.summary.coefficientStandardErrors, theirs.summary.coefficientStandardErrors)
