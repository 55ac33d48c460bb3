"""The params every sparkopt estimator and model shares (pyspark.ml's shared params plus the solver
params), the one table of validation rules they are checked against when set and at fit, and
`add_setters`, which gives a class pyspark.ml-style setters."""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import numpy as np
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasAggregationDepth,
    HasCheckpointInterval,
    HasElasticNetParam,
    HasFeaturesCol,
    HasFitIntercept,
    HasLabelCol,
    HasMaxIter,
    HasPredictionCol,
    HasRegParam,
    HasSeed,
    HasStandardization,
    HasStepSize,
    HasTol,
    HasWeightCol,
)

from ..engine import ENGINES
from ..errors import InputError
from ..solvers import SOLVERS

# param name -> (check, the rule as the error message states it)
VALIDATORS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "maxIter": (lambda v: v >= 0, ">= 0"),
    "tol": (lambda v: np.isfinite(v) and v > 0, "> 0"),
    "regParam": (lambda v: np.isfinite(v) and v >= 0, ">= 0"),
    "elasticNetParam": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "aggregationDepth": (lambda v: v >= 1, ">= 1"),
    "stepSize": (lambda v: np.isfinite(v) and v > 0, "> 0"),
    "miniBatchFraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "solver": (lambda v: v in SOLVERS, f"one of {SOLVERS}"),
    "localSteps": (lambda v: v >= 1, ">= 1"),
    "localCombination": (lambda v: np.isfinite(v) and v >= 1, "a finite number >= 1"),
    "staleness": (lambda v: v >= -1, ">= 0 (or -1 for unbounded)"),
    "stepSchedule": (lambda v: v in ("constant", "inverse_sqrt", "exponential"),
                     "one of ('constant', 'inverse_sqrt', 'exponential')"),
    "threshold": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "family": (lambda v: v in ("auto", "binomial", "multinomial"), "one of ('auto', 'binomial', 'multinomial')"),
    "epsilon": (lambda v: np.isfinite(v) and v > 1.0, "> 1.0"),
    "numPartitions": (lambda v: v >= 1, ">= 1"),
    "engine": (lambda v: v in ENGINES, f"one of {ENGINES}"),
    # pyspark's convention: -1 disables checkpointing
    "checkpointInterval": (lambda v: v == -1 or v >= 1, ">= 1 (or -1 to disable)"),
    "checkpointDir": (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty path"),
}

# Rules for params whose meaning depends on the class (a class adopts its set as
# `_extra_validators`; they override VALIDATORS): an SVM's threshold is a margin, not a probability,
# and `loss` names different losses in LinearSVC and LinearRegression.
LINEAR_SVC_MODEL_VALIDATORS = {"threshold": (lambda v: np.isfinite(v), "finite")}
LINEAR_SVC_VALIDATORS = {"loss": (lambda v: v in ("hinge", "squared_hinge"), "one of ('hinge', 'squared_hinge')"),
                         **LINEAR_SVC_MODEL_VALIDATORS}
LINEAR_REGRESSION_VALIDATORS = {"loss": (lambda v: v in ("squaredError", "huber"), "one of ('squaredError', 'huber')")}
POISSON_REGRESSION_VALIDATORS = {"link": (lambda v: v == "log", "'log'")}


def validate_param(name: str, value: Any, extra: Optional[dict] = None) -> None:
    """Raise InputError naming the param and its rule when `value` breaks it; `extra` rules
    override the shared ones (a model's threshold need not lie in [0, 1])."""
    rules = dict(VALIDATORS)
    rules.update(extra or {})
    if name in rules and value is not None:
        check, text = rules[name]
        try:
            ok = bool(check(value))
        except TypeError:
            ok = False
        if not ok:
            raise InputError(f"param {name} must be {text}, got {value!r}")


class SparkoptParams(HasFeaturesCol, HasLabelCol, HasWeightCol, HasPredictionCol, HasMaxIter, HasTol, HasRegParam,
                     HasElasticNetParam, HasFitIntercept, HasStandardization, HasAggregationDepth, HasSeed,
                     HasStepSize, HasCheckpointInterval):
    """pyspark.ml's shared params plus sparkopt's solver params, validated when set and at fit."""

    solver = Param(Params._dummy(), "solver",
                   "optimizer: auto, gd, sgd, local-sgd, async-sgd (resident engine), lbfgs, owlqn, newton or newton-cg (auto picks exact Newton when "
                   "a Hessian is cheap, else Newton-CG; proximal Newton or OWL-QN under L1)", typeConverter=TypeConverters.toString)
    miniBatchFraction = Param(Params._dummy(), "miniBatchFraction",
                              "fraction of every partition sampled per SGD iteration, in (0, 1]",
                              typeConverter=TypeConverters.toFloat)
    stepSchedule = Param(Params._dummy(), "stepSchedule", "SGD step schedule: constant, inverse_sqrt, exponential",
                         typeConverter=TypeConverters.toString)
    localSteps = Param(Params._dummy(), "localSteps",
                       "local-sgd: SGD steps every shard takes on its own data per communication round (>= 1)",
                       typeConverter=TypeConverters.toInt)
    localCombination = Param(Params._dummy(), "localCombination",
                             "local-sgd: beta >= 1 in x + beta * (weighted mean of the shard deltas); 1 averages "
                             "the shard models, the number of shards adds their deltas (CoCoA+)",
                             typeConverter=TypeConverters.toFloat)
    staleness = Param(Params._dummy(), "staleness",
                      "async-sgd: a worker may run at most this many clocks ahead of the slowest one (0 is "
                      "synchronous SGD, -1 unbounded)", typeConverter=TypeConverters.toInt)
    numPartitions = Param(Params._dummy(), "numPartitions",
                          "repartition the input into this many partitions before ingest (None keeps them)",
                          typeConverter=TypeConverters.toInt)
    initialModel = Param(Params._dummy(), "initialModel", "a fitted model of the same kind to warm-start from")
    engine = Param(Params._dummy(), "engine",
                   "how passes run on Spark: 'resident' keeps the data in the executors' Python workers for the "
                   "whole fit, 'tree' runs one treeAggregate job per pass, 'auto' picks resident when every "
                   "partition can run at once", typeConverter=TypeConverters.toString)
    verbose = Param(Params._dummy(), "verbose",
                    "show per-iteration progress: a live line in a notebook, else a line on stderr",
                    typeConverter=TypeConverters.toBoolean)
    checkpointDir = Param(Params._dummy(), "checkpointDir",
                          "directory (on the driver's filesystem: local or shared) where the solver state is saved "
                          "every checkpointInterval iterations; a fit rerun with the same directory resumes from it "
                          "(None: no checkpoints)", typeConverter=TypeConverters.toString)

    _extra_validators: dict = {}

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(maxIter=100, tol=1e-6, regParam=0.0, elasticNetParam=0.0, fitIntercept=True,
                         standardization=True, aggregationDepth=2, solver="auto", stepSize=1.0,
                         miniBatchFraction=1.0, stepSchedule="inverse_sqrt", seed=0, verbose=False,
                         checkpointInterval=10, engine="auto", localSteps=1, localCombination=1.0,
                         staleness=2)

    def _set(self, **kwargs):
        for name, value in kwargs.items():
            if value is not None and self.hasParam(name):
                param = self.getParam(name)
                if param.typeConverter is not None:
                    try:
                        value = param.typeConverter(value)
                    except TypeError as err:
                        raise InputError(f"param {name}: {err}") from None
                validate_param(name, value, self._extra_validators)
        return super()._set(**kwargs)

    def _validate_all(self) -> None:
        for param in self.params:
            if self.isDefined(param):
                validate_param(param.name, self.getOrDefault(param), self._extra_validators)

    def getSolver(self) -> str:
        return self.getOrDefault(self.solver)

    def getMiniBatchFraction(self) -> float:
        return self.getOrDefault(self.miniBatchFraction)

    def getStepSchedule(self) -> str:
        return self.getOrDefault(self.stepSchedule)

    def getLocalSteps(self) -> int:
        return self.getOrDefault(self.localSteps)

    def getLocalCombination(self) -> float:
        return self.getOrDefault(self.localCombination)

    def getStaleness(self) -> Optional[int]:
        """The async-sgd staleness bound (None when unbounded, i.e. the param is -1)."""
        value = self.getOrDefault(self.staleness)
        return None if value == -1 else value

    def getEngine(self) -> str:
        return self.getOrDefault(self.engine)

    def getInitialModel(self):
        return self.getOrDefault(self.initialModel) if self.isDefined(self.initialModel) else None

    def getCheckpointDir(self) -> Optional[str]:
        return self.getOrDefault(self.checkpointDir) if self.isDefined(self.checkpointDir) else None

    def _checkpoint_kwargs(self, namespace: Optional[str] = None) -> dict:
        """fit_linear_model's checkpoint arguments (none when checkpointDir is unset or the
        interval is -1); `namespace` is a sub-directory, one per fit of a param grid."""
        directory, interval = self.getCheckpointDir(), self.getCheckpointInterval()
        if not directory or interval == -1:
            return {}
        if namespace:
            directory = os.path.join(directory, namespace)
        return {"checkpoint_dir": directory, "checkpoint_interval": interval}


def add_setters(cls, *names):
    """pyspark.ml-style setters (setRegParam, setMaxIter, ...) for the named params of `cls`."""
    for name in names:
        def setter(self, value, _name=name):
            return self._set(**{_name: value})
        setter.__name__ = "set" + name[0].upper() + name[1:]
        setter.__doc__ = f"Sets the value of :py:attr:`{name}` (validated)."
        setattr(cls, setter.__name__, setter)
    return cls


add_setters(SparkoptParams, "featuresCol", "labelCol", "weightCol", "predictionCol", "maxIter", "tol", "regParam",
            "elasticNetParam", "fitIntercept", "standardization", "aggregationDepth", "seed", "stepSize", "solver",
            "miniBatchFraction", "stepSchedule", "numPartitions", "initialModel", "verbose",
            "checkpointInterval", "checkpointDir", "engine", "localSteps", "localCombination", "staleness")
