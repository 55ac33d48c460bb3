"""Loading a saved model's metadata without a JVM: the class must be a registered sparkopt model
class (never a module path to import), the state's shapes must match numFeatures / numClasses,
and every malformed field is an InputError naming the file and the field."""
import copy

import numpy as np
import pytest

from sparkopt.errors import InputError
from sparkopt.ml import (GeneralizedLinearRegressionModel, LinearRegression, LinearRegressionModel, LinearSVCModel,
                         LogisticRegressionModel, PoissonRegressionModel)
from sparkopt.ml.persistence import MODEL_CLASSES, metadata_of, model_from_metadata

WHERE = "/models/m/metadata"


def _model(cls, loss, d, classes=None, fit_intercept=True, scale=None):
    model = cls()
    if classes is None:     # what a fit stores: 2 for a binary classifier, 1 for a regression
        classes = 1 if loss in ("squared_error", "huber", "poisson", "glm") else 2
    rows = classes if loss == "multinomial" else 1
    n = rows * (d + int(fit_intercept)) + (loss == "huber")
    model._state = {"loss": loss, "numFeatures": d, "numClasses": classes, "fitIntercept": fit_intercept,
                    "coef_vector": np.linspace(-1, 1, n), "objective": 0.25, "scale": scale}
    return model


CASES = [(LogisticRegressionModel, "logistic", {}), (LogisticRegressionModel, "multinomial", {"classes": 4}),
         (LinearSVCModel, "hinge", {}), (LinearSVCModel, "squared_hinge", {"fit_intercept": False}),
         (LinearRegressionModel, "squared_error", {}), (LinearRegressionModel, "huber", {"scale": 1.5}),
         (PoissonRegressionModel, "poisson", {}), (GeneralizedLinearRegressionModel, "glm", {})]


@pytest.mark.parametrize("cls, loss, kwargs", CASES)
def test_a_saved_model_round_trips(cls, loss, kwargs):
    model = _model(cls, loss, 5, **kwargs)
    loaded = model_from_metadata(cls, metadata_of(model, "4.0.0"), WHERE)
    assert type(loaded) is cls and loaded.uid == model.uid
    np.testing.assert_array_equal(loaded._state["coef_vector"], model._state["coef_vector"])
    assert {k: v for k, v in loaded._state.items() if k != "coef_vector"} == \
        {k: v for k, v in model._state.items() if k != "coef_vector"}


def test_every_model_class_is_registered_and_nothing_else():
    from sparkopt.ml.tuning import LinearRegressionCVModel, LogisticRegressionCVModel

    assert set(MODEL_CLASSES.values()) == {LogisticRegressionModel, LinearSVCModel, LinearRegressionModel,
                                           PoissonRegressionModel, LogisticRegressionCVModel, LinearRegressionCVModel,
                                           GeneralizedLinearRegressionModel}
    assert all(name == f"{cls.__module__}.{cls.__name__}" for name, cls in MODEL_CLASSES.items())


def _edited(edit, cls=LogisticRegressionModel, loss="logistic", **kwargs):
    meta = copy.deepcopy(metadata_of(_model(cls, loss, 5, **kwargs), "4.0.0"))
    edit(meta)
    return meta


def _set(path, value):
    def edit(meta):
        *parents, last = path.split(".")
        node = meta
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return edit


# (edit, field the message names, words in the message)
MALFORMED = [
    (_set("class", "os.system"), "class", "not a sparkopt model class"),
    (_set("class", "sparkopt.ml.estimator.SparkoptModel"), "class", "not a sparkopt model class"),
    (_set("class", "sparkopt.ml.classification.LogisticRegression"), "class", "not a sparkopt model class"),
    (_set("class", "sparkopt.ml.regression.LinearRegressionModel"), "class", "not a"),
    (_set("class", KeyError), "class", "missing"),
    (_set("uid", 7), "uid", "string"),
    (_set("sparkoptModel", KeyError), "sparkoptModel", "missing"),
    (_set("sparkoptModel", [1, 2]), "sparkoptModel", "object"),
    (_set("sparkoptModel.loss", "huber"), "sparkoptModel.loss", "'logistic', 'multinomial'"),
    (_set("sparkoptModel.numFeatures", 4), "sparkoptModel.coef_vector", "6 values"),
    (_set("sparkoptModel.numFeatures", "5"), "sparkoptModel.numFeatures", "integer"),
    (_set("sparkoptModel.numFeatures", 0), "sparkoptModel.numFeatures", ">= 1"),
    (_set("sparkoptModel.numFeatures", True), "sparkoptModel.numFeatures", "integer"),
    (_set("sparkoptModel.numClasses", 3), "sparkoptModel.numClasses", "2"),
    (_set("sparkoptModel.fitIntercept", "yes"), "sparkoptModel.fitIntercept", "true or false"),
    (_set("sparkoptModel.fitIntercept", False), "sparkoptModel.coef_vector", "6 values"),
    (_set("sparkoptModel.coef_vector", [1.0, 2.0]), "sparkoptModel.coef_vector", "2 values"),
    (_set("sparkoptModel.coef_vector", [[1.0] * 6]), "sparkoptModel.coef_vector", "list of numbers"),
    (_set("sparkoptModel.coef_vector", ["a"] * 6), "sparkoptModel.coef_vector", "list of numbers"),
    (_set("sparkoptModel.coef_vector", [1.0, float("nan"), 0, 0, 0, 0]), "sparkoptModel.coef_vector", "finite"),
    (_set("sparkoptModel.coef_vector", KeyError), "sparkoptModel.coef_vector", "missing"),
    (_set("paramMap.regParam", -1.0), "paramMap.regParam", ">= 0"),
    (_set("paramMap.threshold", "high"), "paramMap.threshold", "threshold"),
    (_set("paramMap", [1]), "paramMap", "object"),
]


@pytest.mark.parametrize("edit, field, words", MALFORMED)
def test_a_malformed_model_is_named(edit, field, words):
    with pytest.raises(InputError) as info:
        model_from_metadata(LogisticRegressionModel, _edited(edit), WHERE)
    message = str(info.value)
    assert WHERE in message and f"field '{field}'" in message and words in message, message


def test_multinomial_shapes_follow_num_classes():
    meta = _edited(_set("sparkoptModel.numClasses", 3), loss="multinomial", classes=4)
    with pytest.raises(InputError, match=r"field 'sparkoptModel.coef_vector'.*24 values.*numClasses=3.*18"):
        model_from_metadata(LogisticRegressionModel, meta, WHERE)
    meta = _edited(_set("sparkoptModel.numClasses", 1), loss="multinomial", classes=4)
    with pytest.raises(InputError, match="field 'sparkoptModel.numClasses'"):
        model_from_metadata(LogisticRegressionModel, meta, WHERE)


def test_huber_needs_a_positive_scale():
    for scale in (None, -1.0, float("inf"), "1"):
        meta = _edited(_set("sparkoptModel.scale", scale), cls=LinearRegressionModel, loss="huber", scale=1.0)
        with pytest.raises(InputError, match="field 'sparkoptModel.scale'"):
            model_from_metadata(LinearRegressionModel, meta, WHERE)


def test_an_estimator_is_not_loaded_as_a_model_nor_a_model_as_an_estimator():
    from sparkopt.ml.persistence import params_instance_from_metadata

    meta = metadata_of(LinearRegression(regParam=0.5), "4.0.0")
    with pytest.raises(InputError, match="field 'class'"):
        model_from_metadata(LinearRegressionModel, meta, WHERE)
    assert params_instance_from_metadata(LinearRegression, meta, WHERE).getRegParam() == 0.5
    with pytest.raises(InputError, match="field 'class'"):
        params_instance_from_metadata(LinearRegression, metadata_of(_model(LinearRegressionModel, "squared_error", 3),
                                                                    "4.0.0"), WHERE)


def test_predict_job_finds_the_class_in_the_registry_only(tmp_path):
    import json

    from _common import JobError
    from predict import model_class

    (tmp_path / "metadata").mkdir()
    part = tmp_path / "metadata" / "part-00000"
    for name in ("os.system", "sparkopt.ml.estimator.SparkoptModel", "sparkopt.ml.regression.LinearRegression"):
        part.write_text(json.dumps({"class": name}))
        with pytest.raises(JobError, match="not a sparkopt model"):
            model_class(tmp_path)
    part.write_text("{not json")
    with pytest.raises(JobError, match="not a saved model"):
        model_class(tmp_path)
    part.write_text(json.dumps({"class": "sparkopt.ml.classification.LinearSVCModel"}))
    assert model_class(tmp_path) is LinearSVCModel


def test_the_penalty_hessian_and_a_cv_models_results_survive_the_checks():
    """What the summary's standard errors need (l2Hessian) and what a CV model reports (its grid,
    metrics and choices) load back exactly; malformed, they are named."""
    from sparkopt.ml.tuning import LogisticRegressionCVModel

    model = _model(LogisticRegressionCVModel, "logistic", 5)
    model._state.update(l2Hessian=np.full(5, 0.01), cvRegParams=[0.1, 0.01], cvAvgMetrics=[0.5, 0.4],
                        cvStdMetrics=[0.01, 0.02], cvBestRegParam=0.01, cvOneStdErrRegParam=0.1,
                        cvMetricName="logLoss")
    meta = metadata_of(model, "4.0.0")
    loaded = model_from_metadata(LogisticRegressionCVModel, meta, WHERE)
    np.testing.assert_array_equal(loaded._state["l2Hessian"], np.full(5, 0.01))
    assert loaded.regParams == [0.1, 0.01] and loaded.bestRegParam == 0.01 and loaded.metricName == "logLoss"
    for field, value, words in (("l2Hessian", [0.01] * 4, "must be a list of 5"),
                                ("l2Hessian", [-1.0] * 5, "must be a list of 5"),
                                ("cvAvgMetrics", [0.5], "one value per regParam"),
                                ("cvBestRegParam", "x", "must be a number"),
                                ("cvMetricName", 3, "must be a string")):
        bad = copy.deepcopy(meta)
        bad["sparkoptModel"][field] = value
        with pytest.raises(InputError, match=words) as info:
            model_from_metadata(LogisticRegressionCVModel, bad, WHERE)
        assert WHERE in str(info.value) and f"sparkoptModel.{field}" in str(info.value)
