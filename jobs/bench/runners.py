"""The systems a case compares, each a runner with fit() -> Outcome and describe(Outcome) ->
Described: sparkopt with one solver, pyspark.ml (tight or default), scikit-learn on the driver's
copy; and which runners a single or a repeated-fit case uses."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import numpy as np

from bench.cases import Case
from bench.config import DRIVER_THREADS, Config, now
from bench.data import DriverData
from bench.measure import Described, Outcome

MLLIB_TIGHT = {"tol": 1e-10, "maxIter": 1000}
GLR_TIGHT = {"tol": 1e-12, "maxIter": 100}
SKLEARN_TIGHT_TOL = 1e-10
QUICK_SOLVERS = ("auto", "lbfgs")


def coefficients_of(model: Any, task: str) -> tuple[np.ndarray, Any]:
    """(coefficients, intercept) of a sparkopt or pyspark.ml model ((K, d), (K,) if multinomial)."""
    if task == "multinomial":
        return model.coefficientMatrix.toArray(), model.interceptVector.toArray()
    return model.coefficients.toArray(), float(model.intercept)


def sparkopt_estimator(task: str, **params):
    """The sparkopt.ml estimator of ``task`` with ``params``."""
    from sparkopt.ml import LinearRegression, LogisticRegression, PoissonRegression

    if task == "logistic":
        return LogisticRegression(family="binomial", **params)
    if task == "multinomial":
        return LogisticRegression(family="multinomial", **params)
    if task == "linear":
        return LinearRegression(**params)
    return PoissonRegression(**params)


def mllib_estimator(task: str, reg_param: float, standardization: bool, tight: bool):
    """The pyspark.ml estimator of ``task``: tight tolerances, or pyspark's defaults."""
    from pyspark.ml import classification as mlc
    from pyspark.ml import regression as mlr

    if task == "poisson":
        # GLR has no standardization param; at regParam 0 it does not matter
        return mlr.GeneralizedLinearRegression(family="poisson", link="log", regParam=reg_param,
                                               **(GLR_TIGHT if tight else {}))
    common = dict(regParam=reg_param, standardization=standardization, **(MLLIB_TIGHT if tight else {}))
    if task == "linear":
        return mlr.LinearRegression(**common)
    return mlc.LogisticRegression(family="binomial" if task == "logistic" else "multinomial", **common)


class SparkoptRunner:
    """A sparkopt estimator with one solver; every measurement is a cold fit then a warm one."""

    system = "sparkopt"

    def __init__(self, case: Case, df, solver: str):
        self.df, self.task, self.solver = df, case.task, solver
        self.estimator = sparkopt_estimator(case.task, regParam=case.reg_param,
                                            standardization=case.standardization, solver=solver)
        self.settings = "tol=1e-6 maxIter=100 (defaults)"

    def fit(self) -> Outcome:
        from sparkopt.ml import clear_cache

        clear_cache()                                   # cold: this fit ingests
        started = now()
        cold = self.estimator.fit(self.df)
        cold_s = now() - started
        started = now()
        self.estimator.fit(self.df)                     # warm: the blocks are cached
        return Outcome(cold_s, cold, ingest_seconds=cold.summary.ingestSeconds, warm_seconds=now() - started)

    def describe(self, outcome: Outcome) -> Described:
        summary = outcome.model.summary
        history = summary.history.collect()
        # history seconds run from the solver's start: end them at the measured wall time, so the
        # curve starts after ingest and setup
        offset = outcome.seconds - history[-1]["seconds"]
        coef, intercept = coefficients_of(outcome.model, self.task)
        return Described(coef, intercept, summary.totalIterations, summary.totalPasses, summary.solver,
                         summary.status, [(offset + r["seconds"], r["objective"], r["passes"]) for r in history])


class MLlibRunner:
    """The pyspark.ml estimator of the case's task, with tight tolerances or with its defaults."""

    def __init__(self, case: Case, df, tight: bool):
        self.df, self.task = df, case.task
        self.system = "mllib-tight" if tight else "mllib-default"
        self.estimator = mllib_estimator(case.task, case.reg_param, case.standardization, tight)
        params = self.estimator.extractParamMap()
        self.settings = " ".join(f"{p.name}={params[p]:g}" for p in params if p.name in ("tol", "maxIter"))
        self.settings += "" if tight else " (defaults)"

    def fit(self) -> Outcome:
        started = now()
        model = self.estimator.fit(self.df)
        return Outcome(now() - started, model)

    def describe(self, outcome: Outcome) -> Described:
        model = outcome.model
        summary = model.summary
        coef, intercept = coefficients_of(model, self.task)
        if self.task == "poisson":
            return Described(coef, intercept, summary.numIterations, None, "irls")
        history = list(summary.objectiveHistory)
        solver = "l-bfgs"                   # LogisticRegression under L2 (OWL-QN only with L1)
        if self.task == "linear":           # auto: normal equations for d <= 4096, else l-bfgs
            solver = self.estimator.getOrDefault("solver")
            if solver == "auto":
                solver = "normal" if len(history) <= 1 else "l-bfgs"
        curve = []
        if len(history) >= 2:    # spread over the fit: MLlib does not time its iterations
            last = len(history) - 1
            curve = [(outcome.seconds * i / last, h, None) for i, h in enumerate(history)]
        return Described(coef, intercept, summary.totalIterations, None, solver, curve=curve, calibrate=True)


class SklearnRunner:
    """scikit-learn on the driver's copy, parameters mapped to the shared objective."""

    def __init__(self, case: Case, data: DriverData, tight: bool):
        from sklearn import linear_model as sk

        self.task, self.system = case.task, ("sklearn-tight" if tight else "sklearn-default")
        stats = data.stats
        n, lam = stats.n_rows, case.reg_param
        # Penalty on the standardized scale = the plain penalty on X / sd; coefficients come back / sd
        sd = np.asarray(stats.feature_std, dtype=float)
        self.scale = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0) if case.standardization else None
        self.X = data.X if self.scale is None else _scale_columns(data.X, self.scale)
        self.y = data.y
        tol = {"tol": SKLEARN_TIGHT_TOL} if tight else {}
        if case.task in ("logistic", "multinomial"):
            extra = dict(solver="newton-cholesky", max_iter=1000, **tol) if tight else {}
            self.estimator = sk.LogisticRegression(C=1.0 / (n * lam) if lam > 0 else np.inf, **extra)
            self.solver = extra.get("solver", "lbfgs")
        elif case.task == "linear":
            self.estimator = sk.Ridge(alpha=n * lam / float(stats.label_std), **tol)
            self.solver = "auto"
        else:
            extra = dict(solver="newton-cholesky", max_iter=1000, **tol) if tight else {}
            self.estimator = sk.PoissonRegressor(alpha=lam, **extra)
            self.solver = extra.get("solver", "lbfgs")
        params = self.estimator.get_params()
        self.settings = " ".join(f"{k}={params[k]:g}" for k in ("tol", "max_iter") if params.get(k) is not None)
        self.settings += "" if tight else " (defaults)"

    def fit(self) -> Outcome:
        from sklearn.base import clone
        from threadpoolctl import threadpool_limits

        estimator = clone(self.estimator)
        with threadpool_limits(limits=DRIVER_THREADS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = now()
            estimator.fit(self.X, self.y)
            seconds = now() - started
        return Outcome(seconds, estimator)

    def describe(self, outcome: Outcome) -> Described:
        est = outcome.model
        coef = np.asarray(est.coef_, dtype=float)
        coef = coef.ravel() if self.task != "multinomial" else coef
        if self.scale is not None:
            coef = coef * self.scale
        intercept = np.asarray(est.intercept_, dtype=float)
        intercept = intercept if self.task == "multinomial" else float(intercept.ravel()[0])
        n_iter = getattr(est, "n_iter_", None)
        iterations = None if n_iter is None else int(np.max(n_iter))
        return Described(coef, intercept, iterations, None, self.solver)


def _scale_columns(X, scale: np.ndarray):
    """X with column j multiplied by scale[j] (CSR stays CSR)."""
    import scipy.sparse as sp

    if sp.issparse(X):
        return sp.csr_matrix(X @ sp.diags(scale))
    return X * scale


def systems_for(case: Case, cfg: Config, df, data: Optional[DriverData]) -> list:
    """The runners of a single case: sparkopt solvers, MLlib tight + default, scikit-learn."""
    solvers = QUICK_SOLVERS if cfg.quick else case.solvers
    runners: list = [SparkoptRunner(case, df, s) for s in solvers]
    mllib = [MLlibRunner(case, df, tight=True), MLlibRunner(case, df, tight=False)]
    # --quick warms a library up on its first row only: the default fit (a9a: 99 iterations) is
    # the cheaper warm-up than the tight one (182)
    runners += mllib[::-1] if cfg.quick else mllib
    if data is not None:
        runners.append(SklearnRunner(case, data, tight=True))
        if not cfg.quick:
            runners.append(SklearnRunner(case, data, tight=False))
    return runners


def repeated_systems(case: Case) -> list[tuple[str, str, Callable[[float], Any]]]:
    """(system, settings, estimator factory) of the repeated-fit experiments."""
    def sparkopt(reg):
        return sparkopt_estimator(case.task, regParam=reg, standardization=case.standardization, solver="auto")

    return [("sparkopt", "solver=auto tol=1e-6 (defaults), warm starts", sparkopt),
            ("mllib-tight", "tol=1e-10 maxIter=1000",
             lambda reg: mllib_estimator(case.task, reg, case.standardization, tight=True)),
            ("mllib-default", "tol=1e-6 maxIter=100 (defaults)",
             lambda reg: mllib_estimator(case.task, reg, case.standardization, tight=False))]

