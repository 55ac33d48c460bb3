"""GeneralizedLinearRegression, drop-in for pyspark.ml.regression's: MLlib's families, links,
offsets, IRLS and R-style summary (deviance, AIC, dispersion, standard errors)."""
from __future__ import annotations

import time
from dataclasses import replace
from functools import cached_property

import numpy as np
from pyspark import keyword_only
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.regression import Regressor

from ..engine.driver import DEFAULT_DRIVER_BUDGET_MB
from ..errors import InputError
from ..fit import fit_linear_model
from ..glm import IRLS_MAX_FEATURES, GLMFit, fisher_inverse_diagonal, fit_glm
from ..objectives.glm import SummarySums, family_aic, residuals, summary_sums
from ..objectives.losses import GLMLoss, check_labels, glm_loss, glm_loss_name
from ..predictions import LinearPredictor
from ..rules import RULES, Rule, canonical_solver
from .cache import ENGINE_CACHE
from .estimator import SparkoptEstimator, exclusive_engine
from .params import add_setters
from .persistence import register_estimator, register_model
from .regression import _RegressionModel
from .scoring import transform_in_arrow
from .summary import _Summary

__all__ = ["GeneralizedLinearRegression", "GeneralizedLinearRegressionModel", "GeneralizedLinearRegressionSummary",
           "GeneralizedLinearRegressionTrainingSummary"]


def _lowercase(rule: Rule) -> Rule:
    """MLlib compares family and link names case-insensitively."""
    return Rule(lambda v: isinstance(v, str) and rule.holds(v.lower()), rule.text)


GLR_VALIDATORS = {
    "family": _lowercase(RULES["glmFamily"]),
    "link": _lowercase(RULES["glmLink"]),
    "solver": RULES["glmSolver"],
    "variancePower": RULES["variancePower"],
    "linkPower": RULES["linkPower"],
}

#: MLlib's defaults (pyspark's _GeneralizedLinearRegressionParams)
_GLR_DEFAULTS = dict(family="gaussian", maxIter=25, tol=1e-6, regParam=0.0, solver="irls", variancePower=0.0,
                     aggregationDepth=2)

#: sparkopt's solver params that have no meaning for IRLS: refused when set (MLlib's GLR has none)
_NOT_FOR_IRLS = ("stepSize", "miniBatchFraction", "stepSchedule", "optimizer", "localSteps", "localCombination",
                 "staleness", "checkpointDir", "initialModel", "standardization")


class _GeneralizedLinearRegressionParams(Params):
    family = Param(Params._dummy(), "family",
                   "The name of family which is a description of the error distribution to be used in the model. "
                   "Supported options: gaussian (default), binomial, poisson, gamma and tweedie.",
                   typeConverter=TypeConverters.toString)
    link = Param(Params._dummy(), "link",
                 "The name of link function which provides the relationship between the linear predictor and the "
                 "mean of the distribution function. Supported options: identity, log, inverse, logit, probit, "
                 "cloglog and sqrt (per family: gaussian identity/log/inverse, binomial logit/probit/cloglog, "
                 "poisson log/identity/sqrt, gamma inverse/identity/log; unset: the family's canonical link).",
                 typeConverter=TypeConverters.toString)
    variancePower = Param(Params._dummy(), "variancePower",
                          "The power in the variance function of the Tweedie distribution which characterizes the "
                          "relationship between the variance and mean of the distribution. Only applicable for "
                          "the Tweedie family. Supported values: 0 and [1, Inf).",
                          typeConverter=TypeConverters.toFloat)
    linkPower = Param(Params._dummy(), "linkPower",
                      "The index in the power link function. Only applicable to the Tweedie family "
                      "(default 1 - variancePower).", typeConverter=TypeConverters.toFloat)
    linkPredictionCol = Param(Params._dummy(), "linkPredictionCol", "link prediction (linear predictor) column name",
                              typeConverter=TypeConverters.toString)
    offsetCol = Param(Params._dummy(), "offsetCol",
                      "The offset column name. If this is not set or empty, we treat all instance offsets as 0.0",
                      typeConverter=TypeConverters.toString)
    _extra_validators = GLR_VALIDATORS

    def getFamily(self) -> str:
        return self.getOrDefault(self.family)

    def getLink(self) -> str:
        return self.getOrDefault(self.link)

    def getVariancePower(self) -> float:
        return self.getOrDefault(self.variancePower)

    def getLinkPower(self) -> float:
        return self.getOrDefault(self.linkPower)

    def getLinkPredictionCol(self) -> str:
        return self.getOrDefault(self.linkPredictionCol)

    def getOffsetCol(self) -> str:
        return self.getOrDefault(self.offsetCol)

    def _family_name(self) -> str:
        return self.getFamily().lower()

    def _offset_col(self):
        """The offset column, or None when offsetCol is unset or empty (MLlib's hasOffsetCol)."""
        return self.getOffsetCol() if self.isDefined(self.offsetCol) and self.getOffsetCol() else None

    def _weight_col(self):
        return self.getWeightCol() if self.isDefined(self.weightCol) and self.getWeightCol() else None

    def _glm_loss(self) -> GLMLoss:
        """The family and link of the params, as MLlib's FamilyAndLink: tweedie's link is the power
        linkPower (default 1 - variancePower), the others' the link param if set, else canonical."""
        family = self._family_name()
        link = self.getLink().lower() if family != "tweedie" and self.isDefined(self.link) else None
        power = self.getLinkPower() if family == "tweedie" and self.isDefined(self.linkPower) else None
        return glm_loss(family, link, self.getVariancePower(), power)


@register_model("glm")
class GeneralizedLinearRegressionModel(_RegressionModel, _GeneralizedLinearRegressionParams):
    """Fitted GLM: ``linkPrediction = x.beta + c + offset``, ``prediction = g^-1(linkPrediction)``
    (clipped into the family's range as MLlib's). ``predict(features)`` uses offset 0, as MLlib."""

    _extra_validators = GLR_VALIDATORS

    def __init__(self):
        super().__init__()
        self._setDefault(**_GLR_DEFAULTS)

    def _summary_classes(self):
        return GeneralizedLinearRegressionSummary, GeneralizedLinearRegressionTrainingSummary

    def setLinkPredictionCol(self, value):
        return self._set(linkPredictionCol=value)

    def _link_col(self) -> str:
        """The linkPrediction column, "" when unset or empty (then not produced)."""
        return (self.getLinkPredictionCol() if self.isDefined(self.linkPredictionCol) else "") or ""

    def _output_columns(self):
        return [(self._link_col(), "double"), (self.getPredictionCol(), "double")]

    def _predictor(self) -> LinearPredictor:
        return replace(super()._predictor(), kind="glm", glm=self._glm_loss(), link=self._link_col())

    def _output_metadata(self):
        """MLlib's: linkPrediction and prediction numeric attributes without name."""
        return {name: {"ml_attr": {}} for name, _ in self._output_columns() if name}

    def _transform(self, dataset):
        return transform_in_arrow(dataset, self.getFeaturesCol(), self.numFeatures, self._output_columns(),
                                  self._predictor(), offset_col=self._offset_col(),
                                  metadata=self._output_metadata())

    def _repr_sizes(self) -> str:
        """MLlib's toString prints the family and link params as set (its link unset raises
        there; here it is the family's canonical link, the one the model uses)."""
        link = self.getLink() if self.isDefined(self.link) else self._glm_loss().link.name
        return f"family={self.getFamily()}, link={link}, numFeatures={self.numFeatures}"


@register_estimator
class GeneralizedLinearRegression(SparkoptEstimator, _GeneralizedLinearRegressionParams, Regressor):
    """MLlib's GeneralizedLinearRegression: families gaussian, binomial, poisson, gamma and tweedie
    (``variancePower``, power link ``linkPower``), MLlib's family/link pairs, ``offsetCol`` (added
    to the linear predictor with coefficient 1), ``weightCol``, ``linkPredictionCol``.

    ``solver="irls"`` (MLlib's only value, the default) is MLlib's IRLS step for step
    (sparkopt.glm): Fisher scoring, i.e. Newton's method on half the deviance with the *expected*
    Hessian ``X' W X``, ``W = w / (V(mu) g'(mu)^2)``, each step one pass over the data for the
    weighted co-moments and a d x d solve on the driver (up to 4096 features, MLlib's limit). It
    stops when no coefficient (intercept included) moves by ``tol`` or more, after at most
    ``maxIter`` (default 25) iterations; gaussian/identity is one weighted least-squares solve.
    ``"newton"``, ``"newton-cg"``, ``"lbfgs"`` (``"l-bfgs"``) run sparkopt's solvers instead on the
    fixed objective ``(1/sum w) sum_i w_i d(y_i, mu_i)/2 + regParam/2 |b|^2`` (Hessian: the
    expected one), with no feature limit; ``"auto"`` is irls up to 4096 features, else sparkopt's
    choice among those. At regParam 0 all reach MLlib's optimum; at regParam > 0 only irls
    follows MLlib's convention (below).

    regParam (L2), MLlib's IRLS ridge convention: the starting solve (and the gaussian/identity
    fit) minimizes ``1/(2S) sum W (z - x.b - c)^2 + regParam / (2 sd(z)) sum_j sd_j^2 b_j^2``
    (MLlib's standardized features and label; S, sd_j, sd(z) weighted by the row weights), every
    IRLS step ``1/(2S) sum W (z - x.b - c)^2 + regParam/2 |b|^2`` with S the sum of the IRLS
    weights. The result is therefore the fixed point ``gradient of half the deviance =
    -regParam S(b) b`` whose penalty scales with the total IRLS weight at the solution -- not
    the minimizer of a fixed penalized objective (sparkopt.ml.PoissonRegression minimizes one:
    mean half deviance + regParam/2 |b|^2). The intercept is never penalized.

    Differences from MLlib: the sparkopt engine params (``engine``, ``maxDriverSizeInMB``,
    ``numPartitions``) apply; sparkopt's first-order solver params (stepSize, miniBatchFraction,
    ...), ``standardization``, checkpoints and ``initialModel`` do not and are refused when set,
    as is ``elasticNetParam`` > 0 (MLlib's GLR has L2 only). Bad labels (outside [0, 1] for
    binomial, negative for poisson and tweedie 1 <= p < 2, non-positive for gamma and tweedie
    p >= 2) and bad family/link pairs are InputErrors before any IRLS pass.
    """

    _model_class = GeneralizedLinearRegressionModel
    _extra_validators = GLR_VALIDATORS

    @keyword_only
    def __init__(self, *, labelCol="label", featuresCol="features", predictionCol="prediction", family="gaussian",
                 link=None, fitIntercept=True, maxIter=25, tol=1e-6, regParam=0.0, weightCol=None, solver="irls",
                 linkPredictionCol=None, variancePower=0.0, linkPower=None, offsetCol=None, aggregationDepth=2,
                 numPartitions=None, engine="auto", maxDriverSizeInMB=DEFAULT_DRIVER_BUDGET_MB):
        super().__init__()
        self._setDefault(**_GLR_DEFAULTS)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs):
        return self._set(**self._input_kwargs)

    def _loss(self, stats) -> str:
        return "glm"

    def _check_params(self) -> GLMLoss:
        """Every param rule, the family/link pair, and the sparkopt params IRLS has no use for."""
        self._validate_all()
        for name in _NOT_FOR_IRLS:
            if self.isSet(self.getParam(name)):
                raise InputError(f"param {name} does not apply to GeneralizedLinearRegression (IRLS); unset it")
        if self.getElasticNetParam() != 0:
            raise InputError(f"param elasticNetParam must be 0 for GeneralizedLinearRegression (L2 only, as MLlib), "
                             f"got {self.getElasticNetParam()!r}")
        return self._glm_loss()

    def _engine_for(self, dataset):
        self._check_params()
        num_partitions = self.getOrDefault(self.numPartitions) if self.isDefined(self.numPartitions) else None
        return ENGINE_CACHE.get(dataset, self.getFeaturesCol(), self.getLabelCol(), self._weight_col(), num_partitions,
                                self.getAggregationDepth(), self.getEngine(), self.getMaxDriverSizeInMB(),
                                offset_col=self._offset_col())

    def _fit_on_engine(self, engine, ingest_seconds: float, dataset, warm=None, checkpoint_namespace=None):
        glm = self._check_params()
        stats = engine.stats
        family = self._family_name()
        check_labels(glm_loss_name(family, self.getVariancePower()), stats.label_min, stats.label_max,
                     stats.n_label_non_integer, stats.n_rows, self.getLabelCol())
        started = time.perf_counter()
        solver = canonical_solver(self.getSolver())
        with exclusive_engine(engine):
            if solver == "irls" or (solver == "auto" and stats.n_features <= IRLS_MAX_FEATURES):
                fit = fit_glm(engine, glm, fit_intercept=self.getFitIntercept(), reg_param=self.getRegParam(),
                              max_iter=self.getMaxIter(), tol=self.getTol())
            else:
                fit = self._fit_by_minimize(engine, glm, solver)
        model = GeneralizedLinearRegressionModel()
        model._state = {"loss": "glm", "numFeatures": stats.n_features, "numClasses": 1,
                        "fitIntercept": bool(self.getFitIntercept()), "coef_vector": fit.coef, "objective": None,
                        "scale": None}
        self._copyValues(model)
        model._resetUid(self.uid)
        model._fit = fit
        fit_seconds = time.perf_counter() - started
        model._attach_summary(GeneralizedLinearRegressionTrainingSummary(
            model, dataset, fit, dict(fit_seconds=fit_seconds, ingest_seconds=ingest_seconds, engine=engine.kind)))
        return model

    def _fit_by_minimize(self, engine, glm: GLMLoss, solver: str) -> GLMFit:
        """Newton / Newton-CG / L-BFGS (sparkopt.solvers) on the fixed objective
        ``(1/sum w) sum_i w_i d(y_i, mu_i)/2 + regParam/2 |b|^2`` (raw coefficients, intercept
        free): MLlib's optimum at regParam 0, no 4096-feature limit; standard errors from the
        expected Hessian at the solution (one more pass, up to 4096 features)."""
        fit_intercept = self.getFitIntercept()
        linear = fit_linear_model(engine, "glm", glm=glm, reg_param=self.getRegParam(), fit_intercept=fit_intercept,
                                  standardization=False, solver=solver, max_iter=self.getMaxIter(),
                                  tol=self.getTol(), label_col=self.getLabelCol())
        coef = np.asarray(linear.coef_vector, dtype=float)
        diag_inv = fisher_inverse_diagonal(engine, glm, coef, fit_intercept,
                                           ridge=float(engine.stats.weight_sum) * self.getRegParam())
        result = linear.result
        return GLMFit(coef, diag_inv, int(result.nit), bool(result.success), float(result.passes) + 1.0,
                      list(result.history), solver=result.solver)

    #: a grid's maps are fitted one by one, cold, as MLlib's IRLS (each on the shared ingest)
    _grid_warm_starts = False

    def fitMultiple(self, dataset, paramMaps):
        """One fit per param map (MLlib-faithful IRLS, no warm starts), on one ingest of the data
        (the ingest cache) when the maps share the data columns; concurrent as the base's."""
        for pm in paramMaps:
            self.copy(pm)._check_params()
        return super().fitMultiple(dataset, paramMaps)


add_setters(GeneralizedLinearRegression, "family", "link", "variancePower", "linkPower", "linkPredictionCol",
            "offsetCol")


# -- summaries ---------------------------------------------------------------------------------
RESIDUAL_TYPES = ("deviance", "pearson", "working", "response")


class GeneralizedLinearRegressionSummary(_Summary):
    """MLlib's GeneralizedLinearRegressionSummary of a model on a DataFrame. The sums (deviance,
    Pearson chi-square, AIC's log-likelihood) are one pass of numpy over the DataFrame's rows
    ingested as blocks (the ingest cache: no new ingest for the training data); residuals are
    computed per row from ``predictions``."""

    @cached_property
    def _engine(self):
        m = self._model
        engine, _ = ENGINE_CACHE.get(self._dataset, m.getFeaturesCol(), m.getLabelCol(), m._weight_col(), None,
                                     m.getAggregationDepth(), m.getEngine(), m.getMaxDriverSizeInMB(),
                                     offset_col=m._offset_col())
        return engine

    def _coef(self) -> np.ndarray:
        return np.asarray(self._model._state["coef_vector"], dtype=float)

    @cached_property
    def _sums(self) -> SummarySums:
        m = self._model
        return SummarySums(*self._engine.map_sum(summary_sums, (m._glm_loss(), self._coef(), m.getFitIntercept(),
                                                                 False)))

    @property
    def numInstances(self) -> int:
        """Number of instances in DataFrame predictions."""
        return int(self._sums.count)

    @property
    def rank(self) -> int:
        """The numeric rank of the fitted linear model (coefficients plus the intercept)."""
        return self._model.numFeatures + int(self._model.getFitIntercept())

    @property
    def degreesOfFreedom(self) -> int:
        """Degrees of freedom: numInstances - rank."""
        return self.numInstances - self.rank

    @property
    def residualDegreeOfFreedom(self) -> int:
        """The residual degrees of freedom (degreesOfFreedom)."""
        return self.degreesOfFreedom

    @property
    def residualDegreeOfFreedomNull(self) -> int:
        """The residual degrees of freedom for the null model."""
        return self.numInstances - int(self._model.getFitIntercept())

    @property
    def deviance(self) -> float:
        """The deviance for the fitted model: sum_i w_i d(y_i, mu_i)."""
        return float(self._sums.deviance)

    @property
    def dispersion(self) -> float:
        """1 for the binomial and poisson families, otherwise the Pearson chi-square
        sum_i w_i (y_i - mu_i)^2 / V(mu_i) over the residual degrees of freedom."""
        if self._model._family_name() in ("binomial", "poisson"):
            return 1.0
        return float(self._sums.pearson / self.degreesOfFreedom)

    @property
    def aic(self) -> float:
        """Akaike's information criterion (MLlib's per family; none for the tweedie family)."""
        value = family_aic(self._model._glm_loss(), self._sums, self.rank)
        if value is None:
            raise RuntimeError("No AIC available for the tweedie family")
        return value

    @cached_property
    def nullDeviance(self) -> float:
        """The deviance of the intercept-only model (intercept 0 without fitIntercept): its
        intercept is g(weighted mean of y - offset) without an offset (or for gaussian/identity),
        else fitted by IRLS with the model's params, as MLlib."""
        m = self._model
        glm = m._glm_loss()
        if not m.getFitIntercept():
            intercept = 0.0
        elif m._offset_col() is None or (glm.family.name == "gaussian" and glm.link.name == "identity"):
            intercept = float(glm.link.link(self._sums.label_offset / self._sums.weight))
        else:
            fit = fit_glm(self._engine, glm, fit_intercept=True, reg_param=m.getRegParam(), max_iter=m.getMaxIter(),
                          tol=m.getTol(), intercept_only=True)
            intercept = float(fit.coef[0])
        sums = SummarySums(*self._engine.map_sum(summary_sums, (glm, np.array([intercept]), True, True)))
        return float(sums.deviance)

    def residuals(self, residualsType: str = "deviance"):
        """The residuals of the fitted model by type (deviance (default), pearson, working,
        response), as a one-column DataFrame named e.g. devianceResiduals."""
        from pyspark.sql import functions as F

        if residualsType not in RESIDUAL_TYPES:
            raise InputError(f"residualsType must be one of {RESIDUAL_TYPES}, got {residualsType!r}")
        m = self._model
        glm = m._glm_loss()
        name = f"{residualsType}Residuals"
        weight = F.col(m._weight_col()).cast("double") if m._weight_col() else F.lit(1.0)
        frame = self.predictions.select(F.col(self.labelCol).cast("double"),
                                        F.col(self.predictionCol).cast("double"), weight)

        def compute(batches):
            import pyarrow as pa

            for batch in batches:
                y, mu, w = (np.asarray(batch.column(i).to_numpy(zero_copy_only=False), dtype=float) for i in range(3))
                yield pa.RecordBatch.from_arrays([pa.array(residuals(glm, residualsType, y, mu, w))], names=[name])

        return frame.mapInArrow(compute, f"`{name}` double")


class GeneralizedLinearRegressionTrainingSummary(GeneralizedLinearRegressionSummary):
    """GeneralizedLinearRegressionSummary on the training data, plus what IRLS did and MLlib's
    inference: standard errors ``sqrt(diag((A' W A + ridge)^-1) * dispersion)`` from the last
    IRLS least-squares solve (A the features and a column of ones; W its IRLS weights: the
    expected Hessian, as MLlib's), t = estimate / SE, p from the normal distribution for binomial
    and poisson, Student's t with degreesOfFreedom otherwise. Coefficients first, the intercept
    last."""

    def __init__(self, model, dataset, fit: GLMFit, record: dict):
        super().__init__(model, dataset)
        self._glm_fit = fit
        self._record = record

    @property
    def numIterations(self) -> int:
        """Number of IRLS iterations (1 for gaussian/identity, one least-squares solve)."""
        return int(self._glm_fit.n_iter)

    @property
    def solver(self) -> str:
        """The solver that ran: irls (MLlib's), or sparkopt's newton / newton-cg / lbfgs."""
        return self._glm_fit.solver

    @property
    def converged(self) -> bool:
        return bool(self._glm_fit.converged)

    @property
    def totalPasses(self) -> float:
        return float(self._glm_fit.passes)

    @property
    def fitSeconds(self) -> float:
        return float(self._record.get("fit_seconds", float("nan")))

    @property
    def ingestSeconds(self) -> float:
        return float(self._record.get("ingest_seconds", float("nan")))

    @property
    def engine(self) -> str:
        return str(self._record.get("engine", "tree"))

    def _diag_inv(self) -> np.ndarray:
        if self._glm_fit.diag_inv is None:
            raise RuntimeError("No Std. Error of coefficients available for this GeneralizedLinearRegressionModel "
                               "(the last least-squares solve had constant features or was singular)")
        return self._glm_fit.diag_inv

    @property
    def coefficientStandardErrors(self) -> list[float]:
        """Standard errors of the coefficients, then the intercept's (with fitIntercept)."""
        return [float(v) for v in np.sqrt(self._diag_inv() * self.dispersion)]

    @property
    def tValues(self) -> list[float]:
        """Estimate / standard error, coefficients then the intercept."""
        return [float(v) for v in self._coef() / np.asarray(self.coefficientStandardErrors)]

    @property
    def pValues(self) -> list[float]:
        """Two-sided p-values of the t statistics."""
        from scipy.stats import norm, t as student_t

        t = np.abs(np.asarray(self.tValues))
        if self._model._family_name() in ("binomial", "poisson"):
            return [float(v) for v in 2.0 * norm.sf(t)]
        return [float(v) for v in 2.0 * student_t.sf(t, self.degreesOfFreedom)]

    def __repr__(self) -> str:
        """MLlib's R-style table (its toString): coefficients with standard errors, t and p values
        (intercept first), the dispersion, null and residual deviance, and the AIC except for
        tweedie. Numbers rounded half-up to 4 decimals as MLlib's BigDecimal(x).setScale(4)
        (NaN and infinities, where MLlib's toString fails, as NaN / Infinity), cells longer
        than 20 characters cut to 17 and '...'. As MLlib's, the null deviance line names
        degreesOfFreedom (R prints the null model's). Without standard errors (MLlib throws):
        the class name and the reason."""
        if self._glm_fit.diag_inv is None:
            return (f"<{type(self).__name__}: no coefficient statistics for this model (the last "
                    f"least-squares solve had constant features or was singular)>")
        m = self._model
        coef = self._coef()
        names = _feature_names(self._dataset, m.getFeaturesCol(), m.numFeatures)
        stats = list(zip(names + (["(Intercept)"] if m.getFitIntercept() else []), coef,
                         self.coefficientStandardErrors, self.tValues, self.pValues))
        if m.getFitIntercept():
            stats = stats[-1:] + stats[:-1]
        header = ["Feature", "Estimate", "Std Error", "T Value", "P Value"]
        rows = [[_cut(cell if isinstance(cell, str) else _round4(cell)) for cell in row] for row in stats]
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        lines = ["Coefficients:"] + [" ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in [header] + rows]
        glm = m._glm_loss()
        null = f"Null deviance: {_round4(self.nullDeviance)} on {self.degreesOfFreedom} degrees of freedom"
        residual = (f"Residual deviance: {_round4(self.deviance)} on {self.residualDegreeOfFreedom} degrees of "
                    f"freedom")
        width = max(len(null), len(residual))
        lines += ["", f"(Dispersion parameter for {glm.family.name} family taken to be {_round4(self.dispersion)})",
                  null.rjust(width), residual.rjust(width)]
        if glm.family.name != "tweedie":
            lines.append(f"AIC: {_round4(self.aic)}")
        return "\n".join(lines)


def _round4(x: float) -> str:
    """MLlib's BigDecimal(x).setScale(4, HALF_UP).toString: x's shortest decimal rounded half up."""
    import decimal

    if not np.isfinite(x):
        return "NaN" if np.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    with decimal.localcontext() as context:
        context.prec = 400
        value = decimal.Decimal(repr(float(x))).quantize(decimal.Decimal("0.0001"), rounding=decimal.ROUND_HALF_UP)
    if value == 0:
        value = abs(value)        # Java's BigDecimal has no negative zero
    return format(value, "f")


def _cut(cell: str) -> str:
    return cell[:17] + "..." if len(cell) > 20 else cell


def _feature_names(dataset, features_col: str, n: int) -> list[str]:
    """MLlib's featureNames: the names in the features column's ml_attr attributes (e.g. from
    VectorAssembler), else features_0, features_1, ... (also for an attribute without a name)."""
    names = [f"{features_col}_{i}" for i in range(n)]
    try:
        attrs = dataset.schema[features_col].metadata.get("ml_attr", {}).get("attrs", {})
    except (KeyError, AttributeError):
        return names
    for group in attrs.values() if isinstance(attrs, dict) else ():
        for attr in group if isinstance(group, list) else ():
            idx, name = attr.get("idx"), attr.get("name")
            if isinstance(idx, int) and 0 <= idx < n and isinstance(name, str):
                names[idx] = name
    return names
