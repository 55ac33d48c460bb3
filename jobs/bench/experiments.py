"""The experiments, one per kind of case: single fits, per-pass / ingest ratios, a regParam path,
CrossValidator, the solver comparison; run_case runs a case's experiment into its CaseResult."""
from __future__ import annotations

import math
import traceback
from typing import Any, Callable, Optional

import numpy as np

from _common import first_line
from bench import solvers as solver_comparison
from bench.cases import Case
from bench.config import GAP_TARGET, Config, log, now
from bench.data import DriverData, load_cached
from bench.measure import CaseResult, RepeatedRow, Row, measure
from bench.ratios import measure_ratios
from bench.runners import coefficients_of, repeated_systems, systems_for
from bench.scoring import Scorer, relative_gap, score_rows, set_time_vs_mllib

PATH_REGS = tuple(float(r) for r in np.logspace(-1, -5, 10))
CV_REGS = (1e-1, 1e-2, 1e-3, 1e-4)
CV_FOLDS = 3


def reference_scorer(case: Case, df, data: Optional[DriverData]) -> tuple[Scorer, Callable[[], None]]:
    """A Scorer on the driver copy, else on a TreeEngine over a fresh ingest (and its release)."""
    if data is not None:
        return Scorer(data.engine, case.task, case.standardization), lambda: None
    from sparkopt.engine import TreeEngine, ingest

    engine = TreeEngine(*ingest(df))
    return Scorer(engine, case.task, case.standardization), engine.unpersist


def load_case_data(spark, case: Case, cfg: Config) -> tuple[Any, Optional[DriverData]]:
    """The cached DataFrame and (when the case allows) the driver's copy of the same rows."""
    started = now()
    df = load_cached(spark, case, cfg)
    loaded = now()
    data = DriverData.collect(df) if case.driver_copy else None
    log(f"{case.name}: loaded and cached in {loaded - started:.1f}s"
        + (f", driver copy in {now() - loaded:.1f}s" if data is not None else ""))
    return df, data


def run_single(spark, case: Case, cfg: Config, result: CaseResult) -> None:
    """Every system fits the case once per repeat; each row is scored against the reference F*
    (full runs also measure the case's per-pass and ingest ratios)."""
    from sparkopt.ml import clear_cache

    df, data = load_case_data(spark, case, cfg)
    try:
        rows: list[Row] = []
        for runner in systems_for(case, cfg, df, data):
            if runner.system == "sparkopt" and any(r.system == "sparkopt" and r.described.solver == runner.solver
                                                   for r in rows):
                log(f"{case.name}: sparkopt {runner.solver}: same solver as auto, skipped")
                continue
            # --quick: one warm-up per library (JVM code paths and Python workers are shared)
            library = runner.system.split("-")[0]
            warm_up = not cfg.quick or not any(r.system.split("-")[0] == library for r in rows)
            rows.append(measure(case, runner, cfg.repeats, warm_up=warm_up))
            clear_cache()     # no sparkopt blocks left in the block manager while others are timed
        # Scored after the timings, so a big case never holds the scoring copy while it is timed
        scorer, release = reference_scorer(case, df, data)
        try:
            result.reference = scorer.reference(case.reg_param)
            log(f"{case.name}: reference F* = {result.reference['objective']:.12g} ({result.reference['status']}, "
                f"{result.reference['seconds']:.1f}s on a {result.reference['engine']})")
            score_rows(rows, scorer, case.reg_param, result.reference)
            stats = scorer.engine.stats
            result.n, result.d = int(stats.n_rows), int(stats.n_features)
        finally:
            release()
        sk = next((r for r in rows if r.system == "sklearn-tight"), None)
        result.reference["sklearn_tight_vs_reference"] = (
            relative_gap(sk.objective, result.reference["objective"]) if sk else None)
        set_time_vs_mllib(rows)
        result.rows = rows
        if not cfg.quick:
            result.ratios = measure_ratios(case, df, data, cfg.repeats)
    finally:
        df.unpersist()


def run_ratios(spark, case: Case, cfg: Config, result: CaseResult) -> None:
    """The per-pass and ingest ratios alone."""
    df, data = load_case_data(spark, case, cfg)
    try:
        result.ratios = measure_ratios(case, df, data, cfg.repeats)
        result.n, result.d = result.ratios["n"], result.ratios["d"]
    finally:
        df.unpersist()


def run_path(spark, case: Case, cfg: Config, result: CaseResult) -> None:
    """A 10-value regParam path. sparkopt: one fitMultiple call (one ingest, warm starts along the
    decreasing path); MLlib: one fit per value (it has no warm start in pyspark.ml)."""
    from sparkopt.ml import clear_cache

    df = load_cached(spark, case, cfg)
    try:
        for system, settings, make in repeated_systems(case):
            clear_cache()
            started = now()
            if system == "sparkopt":
                est = make(PATH_REGS[0])
                fitted = dict(est.fitMultiple(df, [{est.regParam: r} for r in PATH_REGS]))
                models = [(0, r, fitted[i]) for i, r in enumerate(PATH_REGS)]
            else:
                models = [(0, r, make(r).fit(df)) for r in PATH_REGS]
            total = now() - started
            log(f"{case.name}: {system}: {len(models)} fits in {total:.2f}s")
            result.repeated.append(RepeatedRow(case.name, system, settings, len(models), total, models=models))
        clear_cache()
        score_repeated(case, result, {0: df})
    finally:
        df.unpersist()


def run_cv(spark, case: Case, cfg: Config, result: CaseResult) -> None:
    """CrossValidator(3 folds x 4 regParams, areaUnderROC, parallelism 1) with each estimator; the
    sub-models are kept so that every fit's gap is scored on its own training fold."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    from sparkopt.ml import clear_cache

    df = load_cached(spark, case, cfg)
    try:
        cv = None
        for system, settings, make in repeated_systems(case):
            est = make(CV_REGS[0])
            grid = ParamGridBuilder().addGrid(est.regParam, list(CV_REGS)).build()
            cv = CrossValidator(estimator=est, estimatorParamMaps=grid, evaluator=BinaryClassificationEvaluator(),
                                numFolds=CV_FOLDS, seed=cfg.seed, parallelism=1, collectSubModels=True)
            clear_cache()
            started = now()
            cv_model = cv.fit(df)
            total = now() - started
            models = [(fold, CV_REGS[j], cv_model.subModels[fold][j])
                      for fold in range(CV_FOLDS) for j in range(len(CV_REGS))]
            log(f"{case.name}: {system}: CrossValidator ({len(models)} fits + final refit) in {total:.2f}s")
            # the final refit on all the data is part of the total but not of the scored fits
            result.repeated.append(RepeatedRow(case.name, system, settings, len(models) + 1, total, models=models))
        clear_cache()
        # same seed and cached input: the same folds CrossValidator used
        folds = {i: train for i, (train, _) in enumerate(cv._kFold(df))}
        score_repeated(case, result, folds)
    finally:
        df.unpersist()


def score_repeated(case: Case, result: CaseResult, trains: dict) -> None:
    """Gap of every fit of every system against the reference of its (training set, regParam)."""
    for key, train in trains.items():
        data = DriverData.collect(train)
        scorer = Scorer(data.engine, case.task, case.standardization)
        if key == 0:
            result.n, result.d = int(data.stats.n_rows), int(data.stats.n_features)
        regs = sorted({reg for row in result.repeated for k, reg, _ in row.models if k == key}, reverse=True)
        for reg in regs:
            ref = scorer.reference(reg)
            values = {}
            for row in result.repeated:
                for k, r, model in row.models:
                    if k == key and r == reg:
                        values[row.system] = scorer.value(*coefficients_of(model, case.task), reg)
            best = min([ref["objective"], *[v for v in values.values() if math.isfinite(v)]])
            result.reference[f"train{key}-reg{reg:g}"] = dict(ref, best_objective=best)
            for row in result.repeated:
                if row.system in values:
                    row.gaps.append({"train": key, "reg_param": reg, "objective": values[row.system],
                                     "rel_gap": relative_gap(values[row.system], best)})
    for row in result.repeated:
        gaps = [g["rel_gap"] for g in row.gaps if g["rel_gap"] is not None]
        row.max_rel_gap = max(gaps) if gaps else None
        row.fits_above_target = sum(g > GAP_TARGET for g in gaps)
    set_time_vs_mllib(result.repeated, "total_s")


def run_solvers(spark, case: Case, cfg: Config, result: CaseResult) -> None:
    """Synchronous, local and asynchronous solvers side by side (bench/solvers.py)."""
    result.solvers = solver_comparison.run_solvers(spark, case, cfg)
    result.n, result.d = result.solvers["n"], result.solvers["d"]


EXPERIMENTS = {"single": run_single, "ratios": run_ratios, "path": run_path, "cv": run_cv, "solvers": run_solvers}


def run_case(spark, case: Case, cfg: Config) -> CaseResult:
    """The case's experiment; a failure is recorded in the result (``error``) rather than raised."""
    result = CaseResult(case.name, case.kind, case.task, case.note, case.reg_param, case.standardization,
                        scaling_n=case.scaling_n)
    started = now()
    log(f"case {case.name} ({case.kind}, {case.task})")
    try:
        EXPERIMENTS[case.kind](spark, case, cfg, result)
    except Exception as err:   # keep going: the other cases still produce results
        result.error = f"{type(err).__name__}: {first_line(err)}"
        log(f"case {case.name} FAILED: {result.error}\n{traceback.format_exc()}")
        from sparkopt.ml import clear_cache

        clear_cache()
    result.seconds = now() - started
    return result

