"""Benchmark sparkopt against Spark MLlib and scikit-learn on the same cached data.

    python jobs/benchmark.py --quick                      # a9a + the per-pass / ingest ratios, ~1-2 min
    python jobs/benchmark.py                              # every case (real data, synthetic scaling, path, CV)
    python jobs/benchmark.py --cases a9a-1e-3,a9a-path    # some cases (--list-cases names them)
    spark-submit --master spark://host:7077 jobs/benchmark.py --output bench-results/cluster

Everything runs in ONE process and ONE SparkSession (local[2] unless --master or spark-submit sets
one); every system of a case fits the SAME cached DataFrame. Per system: one untimed warm-up fit
(JVM / Python-worker warm-up; its driver memory is what ``peak_mem_mb`` reports), then ``--repeats``
timed fits whose median is reported. --quick warms up once per library and case (the later rows of
a library reuse its warm JVM code and Python workers; their peak_mem_mb is then n/a). The repeated-
fit experiments (path, cv) run once each.

What each figure means
----------------------
* ``fit_s``: wall seconds of ``estimator.fit(df)`` only. For sparkopt it is the COLD fit: the
  ingest cache is cleared first (``sparkopt.ml.clear_cache()``), so it includes ingest
  (``ingest_s``, also reported on its own); ``warm_fit_s`` is a second fit on the cached blocks.
  MLlib converts the DataFrame to its own instance blocks inside every fit, so its fit_s is cold too.
* ``objective``: ONE function scores every system: ``sparkopt.fit.objective_value`` on the returned
  coefficients, over a LocalEngine holding the same rows on the driver (a TreeEngine when the data
  are too big for the driver), never a library's own report. Coefficients on constant features
  (which MLlib and sparkopt fix at 0) are first folded into the intercept (the loss is unchanged).
* ``rel_gap``: (F - F*) / |F*|, F* the reference optimum: sparkopt exact Newton with tol 1e-12 on
  that engine (cross-checked against scikit-learn's tight fit, see ``reference`` in results.json),
  lowered to the best objective any system reached if one went below it.
* ``t_to_1e-6_s``: when the fit first reached a 1e-6 gap. sparkopt: from its per-iteration history
  (seconds and objective), shifted so the history ends at fit_s; MLlib: its objectiveHistory spread
  linearly over fit_s and calibrated multiplicatively to the shared objective at the end (its
  history is F up to a constant factor: 1 for logistic, 1/sd(y)^2 for squared error); GLR/IRLS and
  the normal-equation solver have no history, so only their final point counts.
* ``passes``: sparkopt's passes over the data (``summary.totalPasses``). MLlib does not expose its
  line-search evaluations, so its passes are n/a (its iterations are reported).
* ``peak_mem_mb``: tracemalloc peak of the driver's PYTHON allocations during the warm-up fit
  (numpy / scipy register with tracemalloc). The JVM is not included: MLlib's driver work happens
  there, so its figure is only its Python-side overhead.
* ``time_vs_mllib``: fit_s / fit_s of the mllib-tight row of the same case.
* Ratios: per-pass = one sparkopt loss+gradient pass (``LinearModelObjective.loss_grad`` ->
  ``TreeEngine.map_sum``) / the same loss and gradient in single-process numpy on the same arrays
  in the driver (BLAS threads = cores); ``noop_pass_s`` is a map_sum whose block function returns
  0 (the cost of a pass itself: job, broadcast, reading the cached blocks into Python); ingest =
  ``sparkopt.engine.ingest`` / a bare ``mapInArrow`` over the same columns that only counts rows.
  Full runs measure them on every single-fit case; --quick on a 1e5 x 100 dense synthetic set.

Rows: ``sparkopt`` (solver auto, and each other relevant solver at its defaults: tol 1e-6, maxIter
100); ``mllib-tight`` (tol 1e-10, maxIter 1000: meant to reach a 1e-6 gap) and ``mllib-default``
(pyspark.ml's defaults, what users run); ``sklearn-tight`` / ``sklearn-default`` on the driver's
copy of the data with the parameters mapped to the same objective (LogisticRegression C = 1/(n
regParam); Ridge alpha = n regParam / sd(y); PoissonRegressor alpha = regParam; features divided by
their sd when the case penalizes on the standardized scale).

Outputs in --output (default bench-results/): results.md (the tables printed at the end),
results.json (every figure, per repeat), <case>.png (objective gap vs wall seconds per system).
Exit status 0 when every selected case ran (targets may still be MISSed: that is a result), 1 when
a case failed (its error is in results.json), 2 for a bad invocation.

The parts live in jobs/bench/ (cases, data, runners, measure, scoring, ratios, experiments,
solvers, targets, report); this file parses the command line and runs the selected cases.
"""
from __future__ import annotations

import argparse
import os
import sys

# Before numpy or the JVM start: Spark's Python workers (one per core) each get one BLAS thread,
# inherited through the JVM's environment. The driver's numpy / scikit-learn baselines raise their
# own limit to all cores with threadpoolctl (bench.config.DRIVER_THREADS).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

from _common import JobError, add_spark_arguments, job_session, report_failure  # noqa: E402
from bench import cases, report  # noqa: E402
from bench.cases import CASES  # noqa: E402,F401  (the benchmark's cases, for --list-cases and tests)
from bench.config import DEFAULT_MASTER, Config, log, now  # noqa: E402
from bench.data import DATASETS, dataset_path  # noqa: E402,F401
from bench.experiments import run_case  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmark.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a9a regParam 1e-3 (sparkopt auto + lbfgs, MLlib, scikit-learn; 1 repeat) and the ratios")
    p.add_argument("--cases", default=None, help="comma-separated case names or globs (see --list-cases)")
    p.add_argument("--list-cases", action="store_true", help="print the cases and exit")
    p.add_argument("--repeats", type=int, default=None, help="timed fits per system (median); default 3, quick 1")
    p.add_argument("--output", default="bench-results", help="output directory")
    p.add_argument("--data-dir", default=None, help="where generated synthetic data are kept (default OUTPUT/data)")
    p.add_argument("--datasets", default=str(DATASETS),
                   help="directory of the real datasets the cases read (default: the repository's data/)")
    add_spark_arguments(p, DEFAULT_MASTER, remote=False)
    p.add_argument("--num-partitions", type=int, default=2,
                   help="partitions of every cached DataFrame (default: the 2 task slots of local[2], so that "
                        "engine='auto' keeps the data resident)")
    p.add_argument("--driver-memory", default="8g", help="spark.driver.memory when this script starts the JVM")
    p.add_argument("--seed", type=int, default=7, help="CrossValidator fold seed")
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.num_partitions < 1:
        p.error("--num-partitions must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_cases:
        print(cases.listing())
        return 0
    cfg = Config.from_args(args)
    try:
        selected = cases.select_cases(cfg)
    except JobError as err:
        return report_failure("benchmark.py", err)
    started = now()
    results = []
    with job_session("sparkopt-benchmark", cfg.master, DEFAULT_MASTER, args.confs, defaults=cfg.spark_settings(),
                     connect=False) as spark:
        try:
            env = report.environment(spark)
            log(f"{len(selected)} case(s) on {env['master']}, {cfg.repeats} repeat(s): "
                f"{', '.join(c.name for c in selected)}")
            text = ""
            for i, case in enumerate(selected):
                results.append(run_case(spark, case, cfg))
                report.plot(results[-1], cfg.output)
                text = report.write_outputs(results, cfg, env, now() - started, pending=len(selected) - i - 1)
        finally:
            from sparkopt.ml import clear_cache

            clear_cache()
    print(text)
    print(f"wrote {cfg.output} in {now() - started:.0f} s")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
