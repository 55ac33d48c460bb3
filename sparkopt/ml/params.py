"""The params every sparkopt estimator and model shares (pyspark.ml's shared params plus the solver
params), the one table of validation rules they are checked against when set and at fit, and
`add_setters`, which gives a class pyspark.ml-style setters."""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
from pyspark.ml.base import _PredictorParams
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasAggregationDepth,
    HasCheckpointInterval,
    HasElasticNetParam,
    HasFitIntercept,
    HasMaxBlockSizeInMB,
    HasMaxIter,
    HasRegParam,
    HasSeed,
    HasStandardization,
    HasStepSize,
    HasTol,
    HasWeightCol,
)

from ..engine import ENGINES
from ..engine.driver import DEFAULT_DRIVER_BUDGET_MB
from ..errors import InputError
from ..fit import FIT_SOLVERS
from ..rules import OPTIMIZERS, RULES, SOLVER_ALIASES, Rule, is_int

def _one_of(options: tuple) -> Rule:
    return Rule(lambda v: v in options, f"one of {options}")


# Every rule is sparkopt.rules' (one source for the estimators, fit_linear_model and the
# solvers); the ones below exist only at the estimator level, in pyspark.ml's conventions.
VALIDATORS: dict[str, Rule] = {name: RULES[name] for name in (
    "maxIter", "tol", "regParam", "elasticNetParam", "aggregationDepth", "stepSize", "miniBatchFraction",
    "localSteps", "localCombination", "stepSchedule", "optimizer", "epsilon", "numPartitions", "checkpointDir",
    "maxBlockSizeInMB", "thresholds", "maxDriverSizeInMB", "compression", "compressionRatio")}
VALIDATORS.update({
    "solver": _one_of(FIT_SOLVERS + tuple(SOLVER_ALIASES)),
    "engine": _one_of(ENGINES),
    "family": _one_of(("auto", "binomial", "multinomial")),
    "threshold": Rule(lambda v: 0 <= v <= 1, "in [0, 1]"),
    # pyspark's conventions: -1 disables checkpointing, -1 is an unbounded staleness
    "checkpointInterval": Rule(lambda v: is_int(v) and (v == -1 or v >= 1), ">= 1 (or -1 to disable)"),
    "staleness": Rule(lambda v: is_int(v) and v >= -1, ">= 0 (or -1 for unbounded)"),
})

# Rules for params whose meaning depends on the class (a class adopts its set as
# `_extra_validators`; they override VALIDATORS): an SVM's threshold is a margin, not a probability,
# and `loss` names different losses in LinearSVC and LinearRegression.
LINEAR_SVC_MODEL_VALIDATORS = {"threshold": Rule(lambda v: bool(np.isfinite(v)), "finite")}
LINEAR_SVC_VALIDATORS = {"loss": _one_of(("hinge", "squared_hinge")), **LINEAR_SVC_MODEL_VALIDATORS}
LINEAR_REGRESSION_VALIDATORS = {"loss": _one_of(("squaredError", "huber"))}
POISSON_REGRESSION_VALIDATORS = {"link": _one_of(("log",))}


def validate_param(name: str, value: Any, extra: Optional[dict] = None) -> None:
    """Raise InputError naming the param and its rule when `value` breaks it; `extra` rules
    override the shared ones (a model's threshold need not lie in [0, 1])."""
    rule = (extra or {}).get(name) or VALIDATORS.get(name)
    if rule is not None and value is not None and not rule.holds(value):
        raise InputError(f"param {name} must be {rule.text}, got {value!r}")


class SparkoptParams(_PredictorParams, HasWeightCol, HasMaxIter, HasTol, HasRegParam, HasElasticNetParam,
                     HasFitIntercept, HasStandardization, HasAggregationDepth, HasSeed, HasStepSize,
                     HasCheckpointInterval, HasMaxBlockSizeInMB):
    """pyspark.ml's shared params plus sparkopt's solver params, validated when set and at fit.
    Its first base is pyspark's _PredictorParams (labelCol, featuresCol, predictionCol), as in
    every MLlib predictor's params, so the estimators and models can derive from pyspark's
    Predictor / PredictionModel bases with a consistent method resolution order."""

    solver = Param(Params._dummy(), "solver",
                   "auto, newton, newton-cg, lbfgs (or MLlib's spelling l-bfgs), owlqn, gd, sgd, local-sgd, async-sgd "
                   "(resident engine) or normal (squared error from sufficient statistics); auto: the cheapest by "
                   "estimated cost (normal for squared error up to 4096 features; proximal Newton or OWL-QN under L1)",
                   typeConverter=TypeConverters.toString)
    maxBlockSizeInMB = Param(Params._dummy(), "maxBlockSizeInMB",
                             "accepted for MLlib compatibility and has no effect: MLlib stacks rows into blocks of "
                             "this size for its BLAS kernels, sparkopt's ingest keeps Arrow batches as its blocks "
                             "(dense or CSR) whatever the value; >= 0, default 0.0 (MLlib's: choose automatically)",
                             typeConverter=TypeConverters.toFloat)
    optimizer = Param(Params._dummy(), "optimizer",
                      f"the SGD family's update rule: one of {OPTIMIZERS} (sgd: heavy-ball momentum 0.9)",
                      typeConverter=TypeConverters.toString)
    miniBatchFraction = Param(Params._dummy(), "miniBatchFraction",
                              "fraction of every partition sampled per SGD iteration, in (0, 1]",
                              typeConverter=TypeConverters.toFloat)
    stepSchedule = Param(Params._dummy(), "stepSchedule",
                         "SGD step schedule: auto (each solver's own default), constant, inverse_sqrt, exponential",
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
                   "where passes run: 'driver' collects the selected columns into the driver once (Arrow) and "
                   "folds them there, no Spark job per pass; 'resident' keeps the data in the executors' Python "
                   "workers for the whole fit; 'tree' runs one treeAggregate job per pass; 'auto' picks driver when "
                   "the estimated data size is within maxDriverSizeInMB, else resident when every partition can "
                   "run at once, else tree", typeConverter=TypeConverters.toString)
    maxDriverSizeInMB = Param(Params._dummy(), "maxDriverSizeInMB",
                              "engine='auto' fits on the driver when the selected columns (features, label, weight) "
                              "are estimated at most this many MB as float64 rows (rows x columns x 8 bytes, from "
                              "Spark's plan statistics, no job); 0 never does", typeConverter=TypeConverters.toFloat)
    compression = Param(Params._dummy(), "compression",
                        "how the resident engine's channel carries the loss and gradient passes of gd, lbfgs and "
                        "owlqn: none (float64), bf16, int8, topk or powersgd (multinomial), each with error feedback "
                        "(the values trail the exact ones by a fraction of their last change; convergence is "
                        "confirmed with exact values); other solvers and engines pass exactly",
                        typeConverter=TypeConverters.toString)
    compressionRatio = Param(Params._dummy(), "compressionRatio",
                             "the byte reduction topk (k = n / ratio) and powersgd (the rank) aim at; 1 sends every "
                             "value exactly (equals none); unset: 16 (bf16 and int8 are fixed formats, 4x and ~8x)",
                             typeConverter=TypeConverters.toFloat)
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
                         miniBatchFraction=1.0, stepSchedule="auto", seed=0, verbose=False, optimizer="sgd",
                         checkpointInterval=10, engine="auto", localSteps=1, localCombination=1.0,
                         staleness=2, maxBlockSizeInMB=0.0, maxDriverSizeInMB=DEFAULT_DRIVER_BUDGET_MB,
                         compression="none")

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

    def getOptimizer(self) -> str:
        return self.getOrDefault(self.optimizer)

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

    def getMaxDriverSizeInMB(self) -> float:
        return self.getOrDefault(self.maxDriverSizeInMB)

    def getCompression(self) -> str:
        return self.getOrDefault(self.compression)

    def getCompressionRatio(self) -> Optional[float]:
        return self.getOrDefault(self.compressionRatio) if self.isDefined(self.compressionRatio) else None

    def getInitialModel(self):
        return self.getOrDefault(self.initialModel) if self.isDefined(self.initialModel) else None

    def getCheckpointDir(self) -> Optional[str]:
        return self.getOrDefault(self.checkpointDir) if self.isDefined(self.checkpointDir) else None

    def _checkpoint_kwargs(self, namespace: Optional[str] = None) -> dict:
        """fit_linear_model's checkpoint arguments (none when checkpointDir is unset or the
        interval is -1); `namespace` is a sub-directory, one per (training data, param map) of a grid."""
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
            "checkpointInterval", "checkpointDir", "engine", "maxDriverSizeInMB", "compression", "compressionRatio",
            "localSteps", "localCombination",
            "staleness", "optimizer", "maxBlockSizeInMB")
