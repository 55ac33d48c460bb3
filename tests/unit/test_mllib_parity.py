"""sparkopt.ml against pyspark.ml, member by member: every public member of MLlib's estimators,
models and summaries (and of pyspark.ml's base classes they derive from) must exist on sparkopt's
counterpart, be of the same kind (a Param, a property, a method) and, for a method, accept MLlib's
argument names. A member sparkopt lacks on purpose is named in ALLOWED_MISSING with the reason;
nothing else may be missing. sparkopt's classes derive from the same pure-Python pyspark.ml bases
as MLlib's (Predictor, ProbabilisticClassificationModel, ...), and from none of its JVM wrappers.

Introspection of the classes only (no SparkSession): pyspark's summaries are JavaWrapper classes
whose members are plain Python properties and methods. The values (metrics, param defaults) need
a JVM: tests/spark/test_ml_vs_mllib.py compares them.
"""
from __future__ import annotations

import inspect

import pytest
from pyspark.ml import Estimator, Model, PredictionModel, Predictor, Transformer
from pyspark.ml import classification as mlc
from pyspark.ml import regression as mlr
from pyspark.ml.param import Param
from pyspark.ml.util import MLReadable, MLWritable

import sparkopt.ml as so
from sparkopt.ml import summary as sos

# (pyspark class, sparkopt class): estimators, models, and the summaries each model's `summary`
# (training) and `evaluate` (any data set) return.
PAIRS = [
    (mlc.LogisticRegression, so.LogisticRegression),
    (mlc.LogisticRegressionModel, so.LogisticRegressionModel),
    (mlc.LinearSVC, so.LinearSVC),
    (mlc.LinearSVCModel, so.LinearSVCModel),
    (mlr.LinearRegression, so.LinearRegression),
    (mlr.LinearRegressionModel, so.LinearRegressionModel),
    (mlc.LogisticRegressionSummary, sos.LogisticRegressionSummary),
    (mlc.LogisticRegressionTrainingSummary, sos.LogisticRegressionTrainingSummary),
    (mlc.BinaryLogisticRegressionSummary, sos.BinaryLogisticRegressionSummary),
    (mlc.BinaryLogisticRegressionTrainingSummary, sos.BinaryLogisticRegressionTrainingSummary),
    (mlc.LinearSVCSummary, sos.LinearSVCSummary),
    (mlc.LinearSVCTrainingSummary, sos.LinearSVCTrainingSummary),
    (mlr.LinearRegressionSummary, sos.LinearRegressionSummary),
    (mlr.LinearRegressionTrainingSummary, sos.LinearRegressionTrainingSummary),
    (mlr.GeneralizedLinearRegression, so.GeneralizedLinearRegression),
    (mlr.GeneralizedLinearRegressionModel, so.GeneralizedLinearRegressionModel),
    (mlr.GeneralizedLinearRegressionSummary, so.GeneralizedLinearRegressionSummary),
    (mlr.GeneralizedLinearRegressionTrainingSummary, so.GeneralizedLinearRegressionTrainingSummary),
    # the cross-validating estimators and their models are MLlib's LogisticRegression /
    # LinearRegression (and models) plus their own params
    (mlc.LogisticRegression, so.LogisticRegressionCV),
    (mlc.LogisticRegressionModel, so.LogisticRegressionCVModel),
    (mlr.LinearRegression, so.LinearRegressionCV),
    (mlr.LinearRegressionModel, so.LinearRegressionCVModel),
    # pyspark.ml's abstract bases, against the sparkopt classes that derive from them
    (Predictor, so.LinearRegression),
    (PredictionModel, so.LinearRegressionModel),
    (mlc.Classifier, so.LinearSVC),
    (mlc.ClassificationModel, so.LinearSVCModel),
    (mlc.ProbabilisticClassifier, so.LogisticRegression),
    (mlc.ProbabilisticClassificationModel, so.LogisticRegressionModel),
    (mlr.Regressor, so.PoissonRegression),
    (mlr.RegressionModel, so.PoissonRegressionModel),
]

#: pyspark.ml's pure-Python bases (Params and abstract methods, no JVM) an MLlib estimator or
#: model derives from; `isinstance` checks in other tools use these
PYTHON_BASES = (Estimator, Model, Transformer, Predictor, PredictionModel, mlc.Classifier, mlc.ClassificationModel,
                mlc.ProbabilisticClassifier, mlc.ProbabilisticClassificationModel, mlr.Regressor, mlr.RegressionModel,
                MLWritable, MLReadable)

#: every sparkopt estimator and model, and the pyspark.ml base each must be an instance of
SPARKOPT_BASES = {
    so.LogisticRegression: mlc.ProbabilisticClassifier, so.LogisticRegressionModel: mlc.ProbabilisticClassificationModel,
    so.LogisticRegressionCV: mlc.ProbabilisticClassifier,
    so.LogisticRegressionCVModel: mlc.ProbabilisticClassificationModel,
    so.LinearSVC: mlc.Classifier, so.LinearSVCModel: mlc.ClassificationModel,
    so.LinearRegression: mlr.Regressor, so.LinearRegressionModel: mlr.RegressionModel,
    so.LinearRegressionCV: mlr.Regressor, so.LinearRegressionCVModel: mlr.RegressionModel,
    so.PoissonRegression: mlr.Regressor, so.PoissonRegressionModel: mlr.RegressionModel,
    so.GeneralizedLinearRegression: mlr.Regressor, so.GeneralizedLinearRegressionModel: mlr.RegressionModel,
}

# Deliberate differences: (pyspark class name, member) -> why sparkopt does not have it.
ALLOWED_MISSING: dict[tuple[str, str], str] = {
    # pyspark's JavaWrapper-era method for reading a Java model's Scala summary object: sparkopt
    # has no JVM-side model (none of these classes expose it publicly either; kept as a guard)
}

# Deliberate differences of kind: (pyspark class name, member) -> why.
ALLOWED_KIND: dict[tuple[str, str], str] = {
    # pyspark 4 declares LinearSVCModel.summary a method (every other model's is a property); sparkopt
    # keeps the property and makes that summary callable (returning itself), so both spellings work
    ("LinearSVCModel", "summary"): "a property whose value is callable, for both spellings",
}

def _public(cls) -> list[str]:
    return sorted(name for name in dir(cls) if not name.startswith("_"))


def _kind(cls, name: str) -> str:
    """'param', 'property' or 'method' (classmethods and staticmethods are methods)."""
    attr = inspect.getattr_static(cls, name)
    if isinstance(attr, Param):
        return "param"
    if isinstance(attr, property) or type(attr).__name__ == "cached_property":
        return "property"
    if callable(attr) or isinstance(attr, (classmethod, staticmethod)):
        return "method"
    return type(attr).__name__


def _argument_names(cls, name: str) -> tuple[set[str], bool]:
    """The named parameters of a method (self excluded) and whether it takes **kwargs."""
    params = inspect.signature(getattr(cls, name)).parameters.values()
    names = {p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


@pytest.mark.parametrize("theirs, ours", PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_no_mllib_member_is_missing(theirs, ours):
    missing = [name for name in _public(theirs)
               if not hasattr(ours, name) and (theirs.__name__, name) not in ALLOWED_MISSING]
    assert missing == [], f"{ours.__module__}.{ours.__name__} lacks MLlib's {missing}"


@pytest.mark.parametrize("theirs, ours", PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_members_have_mllibs_kind_and_arguments(theirs, ours):
    wrong = []
    for name in _public(theirs):
        if not hasattr(ours, name) or (theirs.__name__, name) in ALLOWED_KIND:
            continue
        kind, our_kind = _kind(theirs, name), _kind(ours, name)
        if kind != our_kind:
            wrong.append(f"{name}: MLlib {kind}, sparkopt {our_kind}")
        elif kind == "method":
            needed, _ = _argument_names(theirs, name)
            have, open_ended = _argument_names(ours, name)
            if not open_ended and not needed <= have:
                wrong.append(f"{name}: MLlib takes {sorted(needed)}, sparkopt {sorted(have)}")
    assert wrong == []


@pytest.mark.parametrize("theirs, ours", [p for p in PAIRS if issubclass(p[0], (Estimator, Model))],
                         ids=[p[0].__name__ for p in PAIRS if issubclass(p[0], (Estimator, Model))])
def test_mllibs_python_bases_are_sparkopts(theirs, ours):
    lacking = [base.__name__ for base in PYTHON_BASES if issubclass(theirs, base) and not issubclass(ours, base)]
    assert lacking == [], f"{ours.__name__} is not a {lacking} as MLlib's {theirs.__name__} is"


@pytest.mark.parametrize("ours, base", SPARKOPT_BASES.items(), ids=[c.__name__ for c in SPARKOPT_BASES])
def test_every_estimator_and_model_has_its_base_and_no_jvm_wrapper(ours, base):
    assert issubclass(ours, base)
    jvm = [c.__name__ for c in ours.__mro__ if c.__module__ in ("pyspark.ml.wrapper", "pyspark.ml.common")
           or c.__name__.startswith(("Java", "_Java"))]
    assert jvm == [], f"{ours.__name__} derives from pyspark's JVM wrappers {jvm}"
    # no abstract method of the bases is left: the class can be instantiated (ABCMeta checks)
    instance = ours()
    assert isinstance(instance, base) and not getattr(ours, "__abstractmethods__", None)


def test_every_exported_estimator_and_model_is_covered():
    classes = {getattr(so, name) for name in so.__all__}
    estimators = {c for c in classes if isinstance(c, type) and issubclass(c, (Estimator, Model))}
    assert estimators == set(SPARKOPT_BASES)


def test_allow_lists_name_real_members():
    """An allow-list entry for a member MLlib does not have (or sparkopt now has) is stale."""
    theirs = {cls.__name__: cls for cls, _ in PAIRS}
    ours = {cls.__name__: o for cls, o in PAIRS}
    for (cls_name, member), reason in {**ALLOWED_MISSING, **ALLOWED_KIND}.items():
        assert reason.strip()
        assert hasattr(theirs[cls_name], member), (cls_name, member)
    for cls_name, member in ALLOWED_MISSING:
        assert not hasattr(ours[cls_name], member), f"{cls_name}.{member} exists now: drop it from ALLOWED_MISSING"


def test_the_checker_sees_a_missing_member():
    """The comparison itself must catch a lacking member (else the tests above prove nothing)."""
    class Lacking:
        pass

    with pytest.raises(AssertionError, match="summary"):
        test_no_mllib_member_is_missing(mlc.LinearSVCModel, Lacking)

    class WrongKind:
        def numClasses(self):
            return 2

    with pytest.raises(AssertionError, match="numClasses"):
        test_members_have_mllibs_kind_and_arguments(mlc.LinearSVCModel, WrongKind)
