"""The estimators as a pyspark.ml user calls them: columns, persistence, Pipelines, tuning, params."""
import json
import os

import numpy as np
import pytest
from chispa import assert_df_equality
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml import classification as mlc
from pyspark.ml import regression as mlr
from pyspark.ml.evaluation import BinaryClassificationEvaluator, RegressionEvaluator
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.ml.linalg import Vectors
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit
from pyspark.sql import functions as F

from sparkopt.errors import InputError
from sparkopt.ml import (LinearRegression, LinearRegressionModel, LinearSVC, LinearSVCModel, LogisticRegression,
                         LogisticRegressionModel, PoissonRegression, PoissonRegressionModel, clear_cache)

from conftest import dataset

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def binary(spark):
    df = (spark.read.format("libsvm").option("numFeatures", 126)
          .load(str(dataset("angel_agaricus_127d_train.libsvm"))).repartition(3).cache())
    df.count()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def regression(spark):
    df = spark.read.format("libsvm").option("numFeatures", 8).load(str(dataset("angel_abalone_8d_train.libsvm")))
    df = df.repartition(2).cache()
    yield df
    df.unpersist()


def _schema(df):
    return [(f.name, f.dataType.simpleString()) for f in df.schema.fields]


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")   # LinearSVC maxIter=50, as MLlib's
def test_transform_columns_match_mllib(binary, regression):
    ours = LogisticRegression(regParam=0.01).fit(binary).transform(binary)
    theirs = mlc.LogisticRegression(regParam=0.01).fit(binary).transform(binary)
    assert _schema(ours) == _schema(theirs)
    svc_ours = LinearSVC(regParam=0.01, maxIter=50).fit(binary).transform(binary)
    svc_theirs = mlc.LinearSVC(regParam=0.01, maxIter=50).fit(binary).transform(binary)
    assert _schema(svc_ours) == _schema(svc_theirs)
    lin_ours = LinearRegression(regParam=0.1).fit(regression).transform(regression)
    lin_theirs = mlr.LinearRegression(regParam=0.1).fit(regression).transform(regression)
    assert _schema(lin_ours) == _schema(lin_theirs)
    # same predictions as MLlib's model up to the optimizer's tolerance
    agree = (ours.select("prediction").toPandas().to_numpy() == theirs.select("prediction").toPandas().to_numpy())
    assert agree.mean() > 0.999


def test_probability_and_prediction_are_consistent(binary):
    model = LogisticRegression(regParam=0.01, threshold=0.3).fit(binary)
    rows = model.transform(binary).select("rawPrediction", "probability", "prediction").collect()
    for r in rows[:200]:
        m = r.rawPrediction[1]
        assert r.rawPrediction[0] == -m
        assert r.probability[1] == pytest.approx(1 / (1 + np.exp(-m)), rel=1e-12)
        assert r.prediction == float(r.probability[1] > 0.3)
    first = binary.first().features
    assert model.predict(first) == model.transform(binary.limit(1)).first().prediction
    assert model.predictRaw(first)[1] == pytest.approx(model.coefficients.dot(first) + model.intercept)


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")   # LinearSVC capped at maxIter=30
def test_save_load_roundtrip_same_predictions(binary, regression, tmp_path):
    cases = [(LogisticRegression(regParam=0.01), LogisticRegressionModel, binary),
             (LinearSVC(regParam=0.01, maxIter=30), LinearSVCModel, binary),
             (LinearRegression(loss="huber", regParam=0.01), LinearRegressionModel, regression),
             (PoissonRegression(regParam=0.01), PoissonRegressionModel, regression.withColumn("label", F.round("label")))]
    for i, (est, cls, df) in enumerate(cases):
        model = est.fit(df)
        path = str(tmp_path / f"m{i}")
        model.write().overwrite().save(path)
        loaded = cls.load(path)
        assert loaded.uid == model.uid
        assert loaded.numFeatures == model.numFeatures
        assert loaded.extractParamMap() == model.extractParamMap()
        assert_df_equality(loaded.transform(df), model.transform(df), ignore_row_order=False)
        assert not loaded.hasSummary
        # plain JSON on disk, never pickle
        meta_dir = os.path.join(path, "metadata")
        text = "".join(open(os.path.join(meta_dir, f)).read() for f in os.listdir(meta_dir) if f.startswith("part-"))
        assert json.loads(text)["class"].startswith("sparkopt.ml.")
        with pytest.raises(InputError, match="not a"):
            (LinearRegressionModel if cls is not LinearRegressionModel else LogisticRegressionModel).load(path)
    est = LogisticRegression(regParam=0.5, solver="lbfgs")
    est.write().overwrite().save(str(tmp_path / "est"))
    again = LogisticRegression.load(str(tmp_path / "est"))
    assert again.getRegParam() == 0.5 and again.getSolver() == "lbfgs"


def test_pipeline_with_assembler_and_scaler(spark, tmp_path):
    raw = spark.read.option("inferSchema", True).csv(str(dataset("magic04.data")))
    cols = raw.columns[:-1]
    df = raw.withColumn("label", F.when(F.col(raw.columns[-1]) == "g", 1.0).otherwise(0.0))
    pipe = Pipeline(stages=[VectorAssembler(inputCols=cols, outputCol="raw_features"),
                            StandardScaler(inputCol="raw_features", outputCol="features"),
                            LogisticRegression(regParam=1e-3)])
    model = pipe.fit(df)
    auc = BinaryClassificationEvaluator().evaluate(model.transform(df))
    assert auc > 0.8
    model.write().overwrite().save(str(tmp_path / "pipe"))
    loaded = PipelineModel.load(str(tmp_path / "pipe"))
    assert isinstance(loaded.stages[-1], LogisticRegressionModel)
    assert_df_equality(loaded.transform(df), model.transform(df))


def test_cross_validator_over_reg_param(binary):
    lr = LogisticRegression(maxIter=50)
    grid = ParamGridBuilder().addGrid(lr.regParam, [1e-1, 1e-2, 1e-3]).build()
    cv = CrossValidator(estimator=lr, estimatorParamMaps=grid, evaluator=BinaryClassificationEvaluator(),
                        numFolds=3, seed=1, parallelism=1)
    model = cv.fit(binary)
    assert len(model.avgMetrics) == 3
    assert model.bestModel.getRegParam() == grid[int(np.argmax(model.avgMetrics))][lr.regParam]
    tvs = TrainValidationSplit(estimator=LinearRegression(), evaluator=RegressionEvaluator(), trainRatio=0.75,
                               estimatorParamMaps=ParamGridBuilder().addGrid(LinearRegression().regParam, [0.1, 0.0]).build())
    assert tvs.fit(binary).bestModel.numFeatures == 126


def test_fit_multiple_reuses_ingest_and_warm_starts(binary):
    clear_cache()
    # one solver on both sides: iteration counts of different solvers do not compare
    lr = LogisticRegression(tol=1e-8, solver="lbfgs")
    maps = [{lr.regParam: r} for r in (1e-3, 1e-1, 1e-2)]
    models = dict(lr.fitMultiple(binary, maps))
    cold = {i: lr.copy(m).fit(binary) for i, m in enumerate(maps)}
    for i in range(3):
        # agaricus is nearly collinear (one-hot groups): compare the objective, which is well determined
        assert models[i].summary.objective == pytest.approx(cold[i].summary.objective, rel=1e-10)
        assert models[i].summary.converged
        assert models[i].getRegParam() == maps[i][lr.regParam]
    # warm starts along decreasing regParam save iterations on the later fits
    warm_iters = sum(models[i].summary.totalIterations for i in (0, 2))
    cold_iters = sum(cold[i].summary.totalIterations for i in (0, 2))
    assert warm_iters < cold_iters
    # the blocks were ingested once: every fit after the first reports no ingest time
    assert sorted(m.summary.ingestSeconds == 0 for m in cold.values()) == [True, True, True]


def test_fit_multiple_with_auto_costs_fewer_passes_than_cold_fits(binary):
    # auto may pick another solver along a warm-started path than for one cold fit (a warm start
    # favours the cheaper passes of L-BFGS; agaricus: L-BFGS along the path, Newton, whose passes
    # bring Hessians of ~11 gradient passes, cold): the same optima, and the warm starts cost
    # fewer passes than cold fits of the solver the path used
    lr = LogisticRegression(tol=1e-8)
    maps = [{lr.regParam: r} for r in (1e-3, 1e-1, 1e-2)]
    models = dict(lr.fitMultiple(binary, maps))
    cold = {i: lr.copy(m).fit(binary) for i, m in enumerate(maps)}
    for i in range(3):
        assert models[i].summary.objective == pytest.approx(cold[i].summary.objective, rel=1e-10)
    [solver] = {m.summary.solver for m in models.values()}
    cold_same = [lr.copy(m).setSolver(solver).fit(binary) for m in maps]
    assert sum(m.summary.totalPasses for m in models.values()) < sum(m.summary.totalPasses for m in cold_same)


def test_summary_fields(binary, regression):
    model = LogisticRegression(regParam=0.01).fit(binary)
    s = model.summary
    # auto weighs each engine's fixed cost per pass: none on the driver (auto's engine for this small
    # set), where Newton-CG's extra Hessian-vector passes are free; a Spark engine's makes Newton cheaper
    assert s.converged and s.status == "CONVERGED" and s.solver in ("newton", "newton-cg")
    assert s.totalIterations == len(s.objectiveHistory) - 1
    assert s.totalPasses >= s.totalIterations
    assert np.all(np.diff(s.objectiveHistory) <= 1e-12)
    assert 0.9 < s.areaUnderROC <= 1 and 0.9 < s.accuracy <= 1
    hist = s.history
    # every engine counts what crossed its channel (none on the driver: zeros)
    assert hist.columns == ["iteration", "objective", "grad_norm", "step_size", "passes", "seconds",
                            "bytes_sent", "bytes_received"]
    assert hist.count() == len(s.objectiveHistory)
    sent = [r.bytes_sent for r in hist.orderBy("iteration").collect()]
    assert sent == sorted(sent) and sent[0] >= 0       # cumulative
    reg = LinearRegression(regParam=0.1).fit(regression).summary
    assert reg.rootMeanSquaredError > 0 and 0 < reg.r2 < 1


def test_verbose_shows_progress(binary, capsys):
    LogisticRegression(regParam=0.01, verbose=True).fit(binary)
    err = capsys.readouterr().err
    assert "sparkopt: iter 1/100" in err and "objective" in err
    LogisticRegression(regParam=0.01).fit(binary)
    assert "sparkopt: iter" not in capsys.readouterr().err          # quiet by default


def test_initial_model_warm_start(binary):
    first = LogisticRegression(regParam=0.01, tol=1e-10).fit(binary)
    again = LogisticRegression(regParam=0.01, tol=1e-10, initialModel=first).fit(binary)
    assert again.summary.totalIterations <= 1
    np.testing.assert_allclose(again.coefficients.toArray(), first.coefficients.toArray(), atol=1e-8)
    with pytest.raises(InputError, match="initialModel"):
        LinearSVC(initialModel=first, loss="squared_hinge").fit(binary)


@pytest.mark.parametrize("param, value", [
    ("regParam", -1.0), ("elasticNetParam", 1.5), ("maxIter", -1), ("tol", 0.0), ("solver", "adam"),
    ("aggregationDepth", 0), ("miniBatchFraction", 0.0), ("stepSize", -0.1), ("family", "poisson"),
    ("threshold", 1.5),
])
def test_invalid_params_rejected_at_set(param, value):
    with pytest.raises(InputError, match=param):
        LogisticRegression(**{param: value})
    with pytest.raises(InputError, match=param):
        LogisticRegression()._set(**{param: value})


def test_setters_follow_pyspark_ml():
    lr = LogisticRegression().setRegParam(0.5).setMaxIter(7).setFeaturesCol("f").setThreshold(0.2).setFamily("binomial")
    assert (lr.getRegParam(), lr.getMaxIter(), lr.getFeaturesCol(), lr.getThreshold()) == (0.5, 7, "f", 0.2)
    assert LinearRegression().setLoss("huber").setEpsilon(2.0).getEpsilon() == 2.0
    with pytest.raises(InputError, match="regParam"):
        lr.setRegParam(-0.1)


def test_invalid_loss_params_rejected():
    with pytest.raises(InputError, match="loss"):
        LinearRegression(loss="absolute")
    with pytest.raises(InputError, match="epsilon"):
        LinearRegression(loss="huber", epsilon=0.5)
    with pytest.raises(InputError, match="loss"):
        LinearSVC(loss="logistic")


def test_bad_labels_and_columns_are_named(spark, binary):
    with pytest.raises(InputError, match="'nope'"):
        LogisticRegression(featuresCol="nope").fit(binary)
    three = spark.createDataFrame([(float(i % 3), Vectors.dense([i, 1.0 - i])) for i in range(30)], ["label", "features"])
    with pytest.raises(InputError, match="0 and 1"):
        LinearSVC().fit(three)
    with pytest.raises(InputError, match="binomial"):
        LogisticRegression(family="binomial").fit(three)
    assert LogisticRegression(regParam=0.1).fit(three).numClasses == 3
    negative = spark.createDataFrame([(-1.0, Vectors.dense([1.0])), (2.0, Vectors.dense([2.0]))], ["label", "features"])
    with pytest.raises(InputError, match=">= 0"):
        PoissonRegression().fit(negative)


def _resumed_dirs(caplog) -> list[str]:
    """The checkpoint directories the fits logged resuming from."""
    return [str(record.args[1]) for record in caplog.records
            if record.getMessage().startswith("resuming from checkpoint")]


def _recording_fits(monkeypatch, root, crash_at=None):
    """fit_linear_model recording {checkpoint directory relative to `root`: coefficient vector};
    the `crash_at`-th fit stops after 2 iterations and raises, as if the job were killed."""
    import sparkopt.fit
    import sparkopt.ml.estimator as estimator_module

    real_fit = sparkopt.fit.fit_linear_model        # never a recorder set before this one
    coefficients, calls = {}, []

    def fit(*args, **kwargs):
        directory = os.path.relpath(kwargs["checkpoint_dir"], root)
        calls.append(directory)
        if len(calls) == crash_at:
            real_fit(*args, **{**kwargs, "max_iter": 2})
            raise RuntimeError("killed")
        result = real_fit(*args, **kwargs)
        coefficients[directory] = result.coef_vector.copy()
        return result

    monkeypatch.setattr(estimator_module, "fit_linear_model", fit)
    return coefficients, calls


def _assert_same_fits(these: dict, those: dict):
    assert sorted(these) == sorted(those)
    for directory in these:
        np.testing.assert_array_equal(these[directory], those[directory], err_msg=directory)


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")   # maxIter=5
def test_cross_validator_with_checkpoint_dir_resumes_after_a_crash(binary, tmp_path, monkeypatch, caplog):
    """One checkpoint sub-directory per (fold data, param map): fold 1 never meets fold 0's
    checkpoint, and a grid search killed mid-fold resumes where it stopped, each fit ending with
    the coefficients of the uninterrupted search, bit for bit."""
    import logging

    def grid_search(directory):
        # short fits on the tree engine: the test is about directories, not convergence
        lr = LogisticRegression(solver="lbfgs", maxIter=5, tol=1e-12, checkpointInterval=1, engine="tree",
                                checkpointDir=str(directory))
        grid = ParamGridBuilder().addGrid(lr.regParam, [1e-1, 1e-2]).build()
        return CrossValidator(estimator=lr, estimatorParamMaps=grid, evaluator=BinaryClassificationEvaluator(),
                              numFolds=3, seed=7, parallelism=1)

    clean_fits, _ = _recording_fits(monkeypatch, tmp_path / "clean")
    clean = grid_search(tmp_path / "clean").fit(binary)
    fits = sorted(p.relative_to(tmp_path / "clean") for p in (tmp_path / "clean").glob("*/fit-*"))
    assert len(fits) == 6 and len({p.parent for p in fits}) == 3, fits
    assert all(list((tmp_path / "clean" / p).glob("ckpt-*.json")) for p in fits)
    assert len(clean_fits) == 7          # 6 grid fits + the final fit on all the data (the directory itself)

    # the 4th fit (fold 1, second param map) is killed after 2 iterations
    _, calls = _recording_fits(monkeypatch, tmp_path / "crash", crash_at=4)
    with pytest.raises(RuntimeError, match="killed"):
        grid_search(tmp_path / "crash").fit(binary)
    rerun_fits, _ = _recording_fits(monkeypatch, tmp_path / "crash")
    with caplog.at_level(logging.INFO, logger="sparkopt"):
        rerun = grid_search(tmp_path / "crash").fit(binary)
    # the three finished fits and the killed one resume, each from its own directory
    assert len(set(calls)) == 4
    assert sorted(_resumed_dirs(caplog)) == sorted(str(tmp_path / "crash" / d) for d in calls)
    # the same folds find the same sub-directories, and every fit ends where the clean one did
    _assert_same_fits(rerun_fits, clean_fits)
    # BinaryClassificationEvaluator's AUC over the folds varies by ~1e-6 between runs whose
    # coefficients are bit-identical (measured here): the fits above are the claim, this a sanity check
    np.testing.assert_allclose(rerun.avgMetrics, clean.avgMetrics, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")   # maxIter=5
def test_train_validation_split_with_checkpoint_dir(binary, tmp_path, monkeypatch, caplog):
    import logging

    def split(directory):
        lr = LogisticRegression(solver="lbfgs", maxIter=5, checkpointInterval=1, engine="tree",
                                checkpointDir=str(directory))
        grid = ParamGridBuilder().addGrid(lr.regParam, [1e-1, 1e-2]).build()
        return TrainValidationSplit(estimator=lr, estimatorParamMaps=grid, evaluator=BinaryClassificationEvaluator(),
                                    trainRatio=0.75, seed=3)

    first_fits, _ = _recording_fits(monkeypatch, tmp_path / "tvs")
    first = split(tmp_path / "tvs").fit(binary)
    assert len(list((tmp_path / "tvs").glob("*/fit-*"))) == 2
    again_fits, _ = _recording_fits(monkeypatch, tmp_path / "tvs")
    with caplog.at_level(logging.INFO, logger="sparkopt"):
        again = split(tmp_path / "tvs").fit(binary)
    # both grid fits and the final fit on all the data resume from their final checkpoints
    assert len(_resumed_dirs(caplog)) == 3
    _assert_same_fits(again_fits, first_fits)
    np.testing.assert_allclose(again.validationMetrics, first.validationMetrics, rtol=1e-12)


def test_a_malformed_saved_model_is_named(regression, tmp_path):
    """A saved model edited on disk (class, shapes, JSON) or with files missing: an InputError
    naming the metadata file and the field, never an import of what the file names."""
    import shutil

    model = LinearRegression(regParam=0.1).fit(regression)
    saved = tmp_path / "model"
    model.write().overwrite().save(str(saved))

    def edited(name, edit):
        copy = tmp_path / name
        shutil.copytree(saved, copy)
        part = next((copy / "metadata").glob("part-*"))
        for crc in (copy / "metadata").glob(".*.crc"):     # an edit by hand leaves no checksum behind
            crc.unlink()
        part.write_text(edit(part.read_text()))
        return copy

    def json_edit(change):
        def edit(text):
            meta = json.loads(text)
            change(meta)
            return json.dumps(meta)
        return edit

    where = lambda path: f"{path}/metadata"   # noqa: E731
    cases = [
        (edited("cls", json_edit(lambda m: m.update({"class": "subprocess.Popen"}))), "field 'class'"),
        (edited("short", json_edit(lambda m: m["sparkoptModel"].update({"coef_vector": [0.0, 1.0]}))),
         "field 'sparkoptModel.coef_vector' has 2 values; numFeatures=8"),
        (edited("wide", json_edit(lambda m: m["sparkoptModel"].update({"numFeatures": 9}))),
         "field 'sparkoptModel.coef_vector' has 9 values"),
        (edited("json", lambda text: text[: len(text) // 2]), "not valid JSON"),
    ]
    for path, words in cases:
        with pytest.raises(InputError) as info:
            LinearRegressionModel.load(str(path))
        assert where(path) in str(info.value) and words in str(info.value), str(info.value)
    shutil.rmtree(saved / "metadata")
    with pytest.raises(InputError, match=f"no saved sparkopt object at {saved}"):
        LinearRegressionModel.load(str(saved))
    with pytest.raises(InputError, match="no saved sparkopt object"):
        LinearRegressionModel.load(str(tmp_path / "nowhere"))


# ---------------------------------------------------------------- MLlib's params and their values
def test_evaluate_works_on_a_loaded_model(binary, regression, tmp_path):
    model = LogisticRegression(regParam=0.01).fit(binary)
    model.write().overwrite().save(str(tmp_path / "lr"))
    loaded = LogisticRegressionModel.load(str(tmp_path / "lr"))
    assert not loaded.hasSummary and loaded.getFamily() == "auto"
    again = loaded.evaluate(binary)
    assert type(again).__name__ == "BinaryLogisticRegressionSummary"
    assert again.areaUnderROC == pytest.approx(model.summary.areaUnderROC, abs=1e-12)
    assert again.accuracy == pytest.approx(model.summary.accuracy, abs=1e-12)
    lin = LinearRegression(regParam=0.1, loss="squaredError").fit(regression)
    lin.write().overwrite().save(str(tmp_path / "lin"))
    loaded_lin = LinearRegressionModel.load(str(tmp_path / "lin"))
    assert (loaded_lin.getLoss(), loaded_lin.getEpsilon()) == ("squaredError", 1.35)
    evaluated = loaded_lin.evaluate(regression)
    for name in ("r2", "meanSquaredError", "coefficientStandardErrors", "pValues"):
        np.testing.assert_allclose(getattr(evaluated, name), getattr(lin.summary, name), rtol=1e-12, err_msg=name)


def test_models_carry_their_estimators_params(binary, regression):
    lr = LogisticRegression(regParam=0.01, family="binomial", maxBlockSizeInMB=2.0).fit(binary)
    assert lr.getFamily() == "binomial" and lr.getMaxBlockSizeInMB() == 2.0
    huber = LinearRegression(loss="huber", epsilon=1.5, regParam=0.01).fit(regression)
    assert (huber.getLoss(), huber.getEpsilon()) == ("huber", 1.5)
    with pytest.raises(RuntimeError, match="No Std. Error.*huber"):
        huber.summary.coefficientStandardErrors
    svc = LinearSVC(regParam=0.01, loss="squared_hinge").fit(binary)
    assert svc.getLoss() == "squared_hinge"


def test_mllib_solver_names_and_block_size(regression):
    lbfgs = LinearRegression(solver="l-bfgs", regParam=0.1, tol=1e-10).fit(regression)
    normal = LinearRegression(solver="normal", regParam=0.1, maxBlockSizeInMB=0.5).fit(regression)
    assert lbfgs.getSolver() == "l-bfgs" and lbfgs.summary.solver == "lbfgs"
    assert normal.summary.solver == "normal"
    np.testing.assert_allclose(lbfgs.coefficients.toArray(), normal.coefficients.toArray(), rtol=1e-6)
    with pytest.raises(InputError, match="maxBlockSizeInMB"):
        LinearRegression(maxBlockSizeInMB=-1.0)


def test_thresholds_predict_as_mllib(spark, binary):
    from conftest import letter_head

    df = letter_head(spark, 2)
    thresholds = [0.5 + 0.02 * k for k in range(26)]
    thresholds[3] = 0.0                                   # a zero threshold wins outright where p > 0
    theirs = mlc.LogisticRegression(regParam=1e-2, thresholds=thresholds).fit(df)
    ours = LogisticRegression(regParam=1e-2, thresholds=thresholds).fit(df)
    assert ours.getThresholds() == pytest.approx(thresholds)
    B, c = theirs.coefficientMatrix.toArray(), theirs.interceptVector.toArray()
    ours._state["coef_vector"] = np.column_stack([B, c]).ravel()      # the same model: the rule alone differs
    mine = ours.transform(df).select("prediction").toPandas()["prediction"].to_numpy()
    other = theirs.transform(df).select("prediction").toPandas()["prediction"].to_numpy()
    np.testing.assert_array_equal(mine, other)
    assert set(mine) == {3.0}
    ours.setThresholds([1.0] * 25 + [0.02])
    assert ours.transform(df).select("prediction").toPandas()["prediction"].to_numpy().tolist() != mine.tolist()
    with pytest.raises(InputError, match="thresholds has 3 values"):
        ours.setThresholds([0.2, 0.3, 0.5]).transform(df)
    # binary: thresholds [t0, t1] act as threshold 1 / (1 + t0 / t1), as MLlib's
    theirs_b = mlc.LogisticRegression(regParam=0.01, thresholds=[0.3, 0.7]).fit(binary)
    ours_b = LogisticRegression(regParam=0.01, thresholds=[0.3, 0.7]).fit(binary)
    assert ours_b.getThreshold() == pytest.approx(theirs_b.getThreshold(), abs=1e-15)
    ours_b._state["coef_vector"] = np.r_[theirs_b.coefficients.toArray(), theirs_b.intercept]
    np.testing.assert_array_equal(ours_b.transform(binary).select("prediction").toPandas().to_numpy(),
                                  theirs_b.transform(binary).select("prediction").toPandas().to_numpy())


def test_bounds_fit_as_mllibs(spark, binary, tmp_path):
    from pyspark.ml.linalg import Matrices, Vectors as V

    d = 126
    common = dict(regParam=0.01, lowerBoundsOnCoefficients=Matrices.dense(1, d, [-0.2] * d),
                  upperBoundsOnCoefficients=Matrices.dense(1, d, [0.3] * d),
                  lowerBoundsOnIntercepts=V.dense([-0.1]), upperBoundsOnIntercepts=V.dense([0.1]))
    theirs = mlc.LogisticRegression(tol=1e-10, maxIter=500, **common).fit(binary)
    ours = LogisticRegression(tol=1e-8, maxIter=500, **common).fit(binary)
    assert ours.summary.solver == "lbfgs-b" and ours.summary.converged
    coef = ours.coefficients.toArray()
    assert coef.min() >= -0.2 and coef.max() <= 0.3 and -0.1 <= ours.intercept <= 0.1
    # agaricus' one-hot columns make the optimum flat: MLlib's L-BFGS-B stops ~3e-4 away in
    # coefficients, so the fits compare by the pinned objective (both satisfy the bounds)
    from sparkopt.engine import TreeEngine, ingest
    from sparkopt.fit import objective_value

    theirs_coef = theirs.coefficients.toArray()
    assert theirs_coef.min() >= -0.2 - 1e-12 and theirs_coef.max() <= 0.3 + 1e-12
    rdd, stats = ingest(binary)
    with TreeEngine(rdd, stats) as engine:
        f_theirs = objective_value(engine, "logistic", theirs_coef, theirs.intercept, reg_param=0.01)
        f_ours = objective_value(engine, "logistic", coef, ours.intercept, reg_param=0.01)
    assert f_ours <= f_theirs + 1e-12
    assert f_ours == pytest.approx(ours.summary.objective, rel=1e-12)
    ours.write().overwrite().save(str(tmp_path / "bounded"))
    loaded = LogisticRegressionModel.load(str(tmp_path / "bounded"))
    assert loaded.getUpperBoundsOnIntercepts() == V.dense([0.1])
    np.testing.assert_array_equal(loaded.getLowerBoundsOnCoefficients().toArray(), np.full((1, d), -0.2))
    with pytest.raises(InputError, match=r"lowerBoundsOnCoefficients must be a \(1, 126\) matrix"):
        LogisticRegression(lowerBoundsOnCoefficients=Matrices.dense(1, 2, [0.0, 0.0])).fit(binary)
    with pytest.raises(InputError, match="elasticNetParam must be 0"):
        LogisticRegression(elasticNetParam=0.5, **common).fit(binary)
