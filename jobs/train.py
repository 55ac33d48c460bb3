"""Fit a sparkopt model on a dataset and write the model and its report.

    spark-submit jobs/train.py --input data/a9a --model logistic --output out/a9a
    python jobs/train.py --input data/a9a --model logistic --output out/a9a   # embedded local[*]

Output DIR: model/ (loadable with the estimator's Model.load), metrics.json, history.csv,
convergence.png and the _SPARKOPT_OUTPUT marker; with --cv K (regParam chosen by K-fold
cross-validation of a regularization path: LogisticRegressionCV / LinearRegressionCV) also
path.png, the coefficients and the CV metric against log10(regParam). An existing DIR is replaced only when it carries
that marker (never `.` or a foreign directory): everything is written under a sibling staging
directory, the old output is moved aside, the new one renamed in, the old one deleted, so a
failed or killed run leaves a complete output (a rerun tidies up what a kill left).
Exit status 0 on success; 2 with a one-line reason on stderr otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import (JobError, add_dataset_arguments, add_spark_arguments, dataset_options, executor_environment,
                     job_session, read_dataset, report_failure)
from _progress import JobProgress
from _files import (OUTPUT_MARKER, LocalStore, Paths, discard, new_output, prepare_output, read_marker, replace_output,
                    require_input, scheme_of)

MODELS = ("logistic", "multinomial", "linear", "huber", "svm", "poisson")
BINARY_MODELS = ("logistic", "svm")
CV_MODELS = ("logistic", "multinomial", "linear", "huber")


def parse_args(argv=None) -> argparse.Namespace:
    from sparkopt.rules import COMPRESSION_SCHEMES

    p = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input", required=True, help="training data: a LIBSVM file, a Parquet directory or a CSV file")
    add_dataset_arguments(p)
    p.add_argument("--weight-col", default=None, help="optional sample weight column")
    p.add_argument("--num-features", type=int, default=None,
                   help="LIBSVM only: number of features (default: inferred from the data)")
    p.add_argument("--model", choices=MODELS, default="logistic",
                   help="logistic (binary), multinomial, linear (squared error), huber, svm (hinge), poisson")
    p.add_argument("--solver", default="auto",
                   help="auto, newton, newton-cg, lbfgs, owlqn, gd, sgd, local-sgd, async-sgd (needs --engine "
                        "resident) or normal (squared error from sufficient statistics)")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adagrad", "adam"),
                   help="the sgd solver's update rule: momentum SGD, AdaGrad or Adam")
    p.add_argument("--reg-param", type=float, default=0.0, help="regularization strength (MLlib's regParam)")
    p.add_argument("--cv", type=int, default=None, metavar="K",
                   help="choose regParam by K-fold cross-validation of a 20-value path from lambda_max "
                        f"(models {', '.join(CV_MODELS)}; --reg-param is then unused); writes path.png")
    p.add_argument("--elastic-net-param", type=float, default=0.0, help="L1 share of the penalty, in [0, 1]")
    p.add_argument("--max-iter", type=int, default=100, help="maximum iterations")
    p.add_argument("--tol", type=float, default=1e-6, help="convergence tolerance")
    p.add_argument("--standardization", action=argparse.BooleanOptionalAction, default=True,
                   help="penalize coefficients on the standardized scale (MLlib's default)")
    p.add_argument("--fit-intercept", action=argparse.BooleanOptionalAction, default=True,
                   help="fit an unpenalized intercept")
    p.add_argument("--step-size", type=float, default=None,
                   help="gd / SGD family: a multiple of the data's safe step 1/L (default 1; gd line-searches "
                        "when omitted)")
    p.add_argument("--mini-batch-fraction", type=float, default=1.0,
                   help="sgd / local-sgd: fraction of rows per iteration (local-sgd: per local step)")
    p.add_argument("--staleness", type=int, default=2,
                   help="async-sgd: clocks a worker may run ahead of the slowest (0 = synchronous, -1 = unbounded)")
    p.add_argument("--local-steps", type=int, default=1,
                   help="local-sgd: SGD steps per shard between communication rounds (--max-iter counts rounds)")
    p.add_argument("--local-combination", type=float, default=1.0,
                   help="local-sgd: beta >= 1; 1 averages the shard models, the number of shards adds their deltas")
    p.add_argument("--num-partitions", type=int, default=None, help="repartition the input first")
    p.add_argument("--aggregation-depth", type=int, default=2, help="treeAggregate depth")
    p.add_argument("--engine", choices=("auto", "tree", "resident", "driver", "sharded"), default="auto",
                   help="driver: the data are collected into this process once, no Spark job per pass; resident: "
                        "data stay in the executors' Python workers for the fit; tree: one job per pass; sharded: "
                        "resident, and the model's vectors too, in shards (vector-free L-BFGS / OWL-QN: models "
                        "larger than the driver); auto: driver within --max-driver-size-mb, else resident when "
                        "every partition runs at once (sharded when the model takes more than 256 MB)")
    p.add_argument("--max-driver-size-mb", type=float, default=256.0,
                   help="--engine auto fits on the driver when the data are estimated at most this many MB as "
                        "float64 rows (0: never)")
    p.add_argument("--compression", choices=COMPRESSION_SCHEMES, default="none",
                   help="resident engine: how gd / lbfgs / owlqn passes travel between driver and tasks (with error "
                        "feedback; powersgd: multinomial only)")
    p.add_argument("--compression-ratio", type=float, default=None,
                   help="--compression topk / powersgd: the byte reduction asked for (default 16; 1 sends exact values)")
    p.add_argument("--test-input", default=None, help="optional held-out set, same format as --input")
    p.add_argument("--output", required=True, help="output directory (an existing one is replaced only when it is a sparkopt output)")
    p.add_argument("--seed", type=int, default=0, help="random seed (sgd sampling)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="save the solver state here (a path on the driver's filesystem); rerunning the same "
                        "command after a crash resumes the fit from the newest checkpoint")
    p.add_argument("--checkpoint-interval", type=int, default=10,
                   help="iterations between checkpoints (with --checkpoint-dir)")
    p.add_argument("--mlflow", action="store_true",
                   help="log params, per-iteration and final metrics and the model to MLflow (pip install "
                        "'sparkopt[mlflow]')")
    p.add_argument("--mlflow-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a file store in ./mlruns)")
    p.add_argument("--mlflow-experiment", default="sparkopt", help="MLflow experiment name")
    add_spark_arguments(p, "local[*]")
    p.add_argument("--quiet", action="store_true", help="no per-iteration log")
    return p.parse_args(argv)


def make_estimator(args, features, label):
    from sparkopt.ml import (LinearRegression, LinearRegressionCV, LinearSVC, LogisticRegression,
                             LogisticRegressionCV, PoissonRegression)

    common = dict(featuresCol=features, labelCol=label, maxIter=args.max_iter, tol=args.tol,
                  regParam=args.reg_param, elasticNetParam=args.elastic_net_param,
                  fitIntercept=args.fit_intercept, standardization=args.standardization,
                  aggregationDepth=args.aggregation_depth, solver=args.solver, seed=args.seed,
                  optimizer=args.optimizer,
                  miniBatchFraction=args.mini_batch_fraction, engine=args.engine,
                  maxDriverSizeInMB=args.max_driver_size_mb, localSteps=args.local_steps,
                  localCombination=args.local_combination, staleness=args.staleness,
                  compression=args.compression)
    if args.compression_ratio is not None:
        common["compressionRatio"] = args.compression_ratio
    if args.step_size is not None:
        common["stepSize"] = args.step_size
    if args.weight_col:
        common["weightCol"] = args.weight_col
    if args.checkpoint_dir:
        common["checkpointDir"] = str(LocalStore().resolve(args.checkpoint_dir))     # plain or file://
        common["checkpointInterval"] = args.checkpoint_interval
    if args.cv is not None:
        if args.model not in CV_MODELS:
            raise JobError(f"--cv needs --model {', '.join(CV_MODELS)}, not {args.model}")
        common.pop("regParam")
        if args.model in ("logistic", "multinomial"):
            family = "binomial" if args.model == "logistic" else "multinomial"
            return LogisticRegressionCV(family=family, numFolds=args.cv, **common)
        return LinearRegressionCV(loss="squaredError" if args.model == "linear" else "huber", numFolds=args.cv,
                                  **common)
    if args.model == "logistic":
        return LogisticRegression(family="binomial", **common)
    if args.model == "multinomial":
        return LogisticRegression(family="multinomial", **common)
    if args.model == "linear":
        return LinearRegression(loss="squaredError", **common)
    if args.model == "huber":
        return LinearRegression(loss="huber", **common)
    if args.model == "svm":
        return LinearSVC(**common)
    return PoissonRegression(**common)


def evaluate(model, df, args, label) -> dict:
    from pyspark.ml.evaluation import (BinaryClassificationEvaluator, MulticlassClassificationEvaluator,
                                       RegressionEvaluator)

    pred = model.transform(df).cache()
    try:
        if args.model in BINARY_MODELS:
            return {"auc": BinaryClassificationEvaluator(labelCol=label, metricName="areaUnderROC").evaluate(pred),
                    "accuracy": MulticlassClassificationEvaluator(labelCol=label, metricName="accuracy").evaluate(pred)}
        if args.model == "multinomial":
            return {"accuracy": MulticlassClassificationEvaluator(labelCol=label, metricName="accuracy").evaluate(pred)}
        return {"rmse": RegressionEvaluator(labelCol=label, metricName="rmse").evaluate(pred),
                "r2": RegressionEvaluator(labelCol=label, metricName="r2").evaluate(pred)}
    finally:
        pred.unpersist()


def write_history(history, path: Path) -> None:
    keys = ["iteration", "objective", "grad_norm", "step_size", "passes", "seconds"]
    if history and all("rounds" in row for row in history):     # local-sgd: communication rounds
        keys.append("rounds")
    if history and all("bytes_sent" in row for row in history):  # what crossed the engine's channel
        keys += ["bytes_sent", "bytes_received"]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(keys)
        for row in history:
            writer.writerow([row.get(k) for k in keys])


def _pyplot(path: Path):
    """matplotlib's pyplot (Agg), or None with a warning naming the plot that is skipped."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logging.getLogger("sparkopt").warning("matplotlib is not installed: %s skipped", path.name)
        return None
    return plt


def _save(plt, fig, title: str, path: Path) -> bool:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_convergence(history, path: Path) -> bool:
    """Objective gap (to the best value reached) and gradient norm against iteration and seconds."""
    plt = _pyplot(path)
    if plt is None:
        return False
    import numpy as np

    f = np.array([r["objective"] for r in history], dtype=float)
    g = np.array([r["grad_norm"] for r in history], dtype=float)
    it = np.array([r["iteration"] for r in history])
    sec = np.array([r["seconds"] for r in history])
    best = np.nanmin(f)
    gap = (f - best) / max(abs(best), 1e-300)
    gap = np.where(gap > 0, gap, np.nan)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, x, label in ((axes[0], it, "iteration"), (axes[1], sec, "seconds")):
        ax.semilogy(x, gap, "o-", label="relative objective gap")
        ax.semilogy(x, g, "s--", label="gradient norm")
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    return _save(plt, fig, "sparkopt convergence", path)


def plot_path(cv, path: Path) -> bool:
    """The path on all rows (every coefficient) and the held-out metric (mean +- std over the
    folds) against log10(regParam), the chosen and the one-standard-error regParam marked."""
    plt = _pyplot(path)
    if plt is None:
        return False
    import numpy as np

    regs = np.asarray(cv.reg_params, dtype=float)
    shown = regs > 0                      # an explicit grid may hold 0, which has no logarithm
    x = np.log10(regs[shown])
    coefs = cv.full.coefficients.reshape(len(regs), -1)[shown]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(x, coefs, lw=1)
    axes[0].set_ylabel("coefficient")
    avg, std = cv.avg_metrics[shown], cv.std_metrics[shown]
    axes[1].errorbar(x, avg, yerr=std, fmt="o-", ms=3, capsize=2)
    axes[1].set_ylabel(f"held-out {cv.metric_name} ({len(cv.metrics)} folds)")
    for ax in axes:
        for value, style, label in ((cv.best_reg_param, "-", "best"), (cv.one_std_err_reg_param, ":", "1 s.e.")):
            if value > 0:
                ax.axvline(np.log10(value), color="gray", ls=style, label=f"{label} {value:.3g}")
        ax.set_xlabel("log10(regParam)")
        ax.grid(True, alpha=0.3)
    axes[1].legend()
    return _save(plt, fig, "sparkopt regularization path", path)


# ==================================================================== MLflow (optional)
#: per-iteration series logged to MLflow, from the fit's history rows
MLFLOW_SERIES = ("objective", "grad_norm", "step_size", "passes", "seconds")
_NOT_PARAMS = ("mlflow", "mlflow_uri", "mlflow_experiment", "confs", "quiet")


def mlflow_tracking(args) -> dict:
    """Where --mlflow logs: the tracking URI (a plain path becomes a file store there) and the
    experiment. JobError when mlflow is not installed (checked before Spark starts)."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise JobError("--mlflow needs MLflow: pip install 'sparkopt[mlflow]' (or mlflow / mlflow-skinny)") from None
    uri = args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
    if scheme_of(uri) is None:
        uri = Path(os.path.abspath(uri)).as_uri()
    return {"uri": uri, "experiment": args.mlflow_experiment}


@contextlib.contextmanager
def _file_store_allowed(uri: str):
    """MLflow 3 keeps its file store (file:// tracking URIs) in maintenance mode and refuses it
    unless MLFLOW_ALLOW_FILE_STORE is set: set it while --mlflow logs to one, as asked."""
    if not uri.startswith("file:") or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def log_to_mlflow(tracking: dict, args, metrics: dict, history: list, artifacts: Path, output: str) -> str:
    """One MLflow run: the job's arguments as params, MLFLOW_SERIES per iteration (step =
    iteration), the final metrics (objective, iterations, passes, seconds, train_* / test_*), the
    files in ``artifacts`` (model/, metrics.json, history.csv, convergence.png); the run's id."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    with _file_store_allowed(tracking["uri"]):
        client = MlflowClient(tracking_uri=tracking["uri"])
        experiment = client.get_experiment_by_name(tracking["experiment"])
        experiment_id = (experiment.experiment_id if experiment is not None
                         else client.create_experiment(tracking["experiment"]))
        run = client.create_run(experiment_id, run_name=f"train.py {args.model}",
                                tags={"sparkopt.output": output, "sparkopt.input": args.input,
                                      "sparkopt.solver": metrics["solver"]})
        run_id = run.info.run_id
        try:
            params = [Param(k, str(v)[:6000]) for k, v in sorted(vars(args).items())
                      if v is not None and k not in _NOT_PARAMS]
            params += [Param(f"conf.{k}", v) for k, v in args.confs]
            start_ms = int(time.time() * 1000 - metrics["fit_seconds"] * 1000)
            series = [Metric(key, float(row[key]), start_ms + int(1000 * float(row.get("seconds") or 0)),
                             int(row["iteration"]))
                      for row in history for key in MLFLOW_SERIES if _finite(row.get(key))]
            final = {k: metrics[k] for k in ("objective", "iterations", "passes", "fit_seconds", "ingest_seconds")
                     if _finite(metrics.get(k))}
            if "cv" in metrics:
                final["cv_best_reg_param"] = metrics["cv"]["best_reg_param"]
            for split in ("train", "test"):
                final.update({f"{split}_{k}": v for k, v in metrics.get(split, {}).items() if _finite(v)})
            now = int(time.time() * 1000)
            finals = [Metric(f"final_{k}", float(v), now, 0) for k, v in final.items()]
            for i in range(0, len(params), 100):          # MLflow's batch limits
                client.log_batch(run_id, params=params[i:i + 100])
            everything = series + finals
            for i in range(0, len(everything), 1000):
                client.log_batch(run_id, metrics=everything[i:i + 1000])
            client.log_artifacts(run_id, str(artifacts))
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
    return run_id


# ==================================================================== the job
def check_paths(paths: Paths, args) -> None:
    """Every path's file system, the inputs present, the output replaceable and its parent created
    (JobError naming the path otherwise), as far as ``paths`` can tell: before the session for
    local paths (and under spark-submit for all), then again on the session's file systems."""
    for flag, text in (("--input", args.input), ("--test-input", args.test_input)):
        if text:
            require_input(paths.store(text, flag), text, "input")
    store = paths.store(args.output, "--output", output=True)
    if store is not None:
        prepare_output(args.output, store)


def run(args) -> dict:
    if args.checkpoint_dir and scheme_of(args.checkpoint_dir) not in (None, "file"):
        raise JobError(f"--checkpoint-dir {args.checkpoint_dir}: checkpoints are kept on the driver's disk "
                       f"(a plain or file:// path)")
    make_estimator(args, "features", "label")     # every param's rule first (no JVM needed for that)
    tracking = mlflow_tracking(args) if args.mlflow else None     # mlflow missing: said before Spark starts
    check_paths(Paths(confs=args.confs), args)     # a refused path costs no Spark session where it can be told now
    with job_session("sparkopt-train", args.master, "local[*]", args.confs, remote=args.remote) as spark:
        paths = Paths(spark)
        check_paths(paths, args)                  # on the session's file systems, before any Spark work
        handler = None
        if not args.quiet:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            log = logging.getLogger("sparkopt")
            log.addHandler(handler)
            previous_level = log.level
            log.setLevel(logging.INFO)
        try:
            return _train(spark, args, paths, tracking)
        finally:
            from sparkopt.ml import clear_cache
            clear_cache()
            if handler is not None:
                log.removeHandler(handler)
                log.setLevel(previous_level)


def _read_back(model, model_path: str, store, staging, written: dict) -> None:
    """The model and the files just written, read back from the output's file system: JobError
    when what is there is not what was written (it landed elsewhere, or not at all)."""
    import numpy as np

    loaded = type(model).load(model_path)
    if not np.array_equal(loaded._state["coef_vector"], model._state["coef_vector"]):
        raise JobError(f"the model read back from {model_path} differs from the model fitted")
    for name, data in written.items():
        back = store.read(store.child(staging, name), len(data))
        if back != data:
            raise JobError(f"{store.child(staging, name)} read back differs from what was written")


def _train(spark, args, paths: Paths, tracking) -> dict:
    from sparkopt.engine.session import is_connect

    store = paths.store(args.output, "--output", output=True)
    staging = None
    try:
        reading = dict(dataset_options(args), weight_col=args.weight_col, num_partitions=args.num_partitions,
                       binary_labels=args.model in BINARY_MODELS)
        progress = JobProgress("train.py", spark, enabled=not args.quiet)
        with progress.phase("read"):      # a LIBSVM file without --num-features is scanned for its width
            df, features, label = read_dataset(spark, args.input, num_features=args.num_features,
                                               store=paths.store(args.input, "--input"), **reading)
        estimator = make_estimator(args, features, label)
        started = time.perf_counter()
        with progress.phase("ingest", ends_at_first_iteration=True):    # then the per-iteration log
            model = estimator.fit(df)
        fit_seconds = time.perf_counter() - started
        summary = model.summary
        metrics = {
            "objective": summary.objective, "iterations": summary.totalIterations,
            "passes": summary.totalPasses, "fit_seconds": fit_seconds, "ingest_seconds": summary.ingestSeconds,
            "converged": summary.converged, "status": summary.status, "message": summary.message,
            "solver": summary.solver, "num_rows": model._fit.params["num_rows"], "num_features": model.numFeatures,
            "model": args.model, "input": args.input, "reg_param": args.reg_param,
            "elastic_net_param": args.elastic_net_param,
        }
        if args.model == "multinomial":
            metrics["coefficient_matrix"] = model.coefficientMatrix.toArray().tolist()
            metrics["intercept_vector"] = model.interceptVector.toArray().tolist()
        else:
            metrics["coefficients"] = model.coefficients.toArray().tolist()
            metrics["intercept"] = model.intercept
        if args.model == "huber":
            metrics["scale"] = model.scale
        with progress.phase("evaluate"):
            metrics["train"] = evaluate(model, df, args, label)
            if args.test_input:
                test_df, _, _ = read_dataset(spark, args.test_input, num_features=model.numFeatures,
                                             store=paths.store(args.test_input, "--test-input"), **reading)
                metrics["test"] = evaluate(model, test_df, args, label)
        if not is_connect(spark):
            metrics["executors"] = executor_environment(spark)
        history = model._fit.result.history
        staging = new_output(args.output, "train.py", {"input": args.input, "model": args.model}, store)
        model_path = store.spark_path(store.child(staging, "model"))
        with tempfile.TemporaryDirectory(prefix="sparkopt-train-") as scratch:
            scratch = Path(scratch)
            with progress.phase("write"):
                model.write().overwrite().save(model_path)
                write_history(history, scratch / "history.csv")
                plot_convergence(history, scratch / "convergence.png")
                if args.cv is not None:
                    cv = model.cvResult
                    metrics.update(reg_param=model.bestRegParam, cv={
                        "num_folds": args.cv, "metric": cv.metric_name, "best_reg_param": cv.best_reg_param,
                        "one_std_err_reg_param": cv.one_std_err_reg_param, "reg_params": cv.reg_params.tolist(),
                        "avg_metrics": cv.avg_metrics.tolist(), "std_metrics": cv.std_metrics.tolist(),
                        "passes": cv.passes, "fit_passes": cv.fit_passes})
                    plot_path(cv, scratch / "path.png")
                (scratch / "metrics.json").write_text(json.dumps(metrics, indent=2))
                written = {f.name: f.read_bytes() for f in sorted(scratch.iterdir())}
                for name, data in written.items():
                    store.write(store.child(staging, name), data)
                _read_back(model, model_path, store, staging, written)
                target = replace_output(staging, args.output, store)
                staging = None
                if read_marker(target, store) is None:
                    raise JobError(f"the output {target} has no {OUTPUT_MARKER} after the swap")
            if tracking is not None:
                with progress.phase("mlflow"):
                    store.download(store.child(target, "model"), scratch / "model")
                    metrics["mlflow_run_id"] = log_to_mlflow(tracking, args, metrics, history, scratch,
                                                             store.spark_path(target))
        metrics["output"] = str(store.spark_path(target))
        return metrics
    finally:
        discard(staging, store)      # unfinished: never swapped in


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        metrics = run(args)
    except Exception as err:   # JobError, sparkopt's InputError and friends: the message names the problem
        return report_failure("train.py", err)
    print(f"objective {metrics['objective']:.12g}  iterations {metrics['iterations']}  passes {metrics['passes']:g}  "
          f"solver {metrics['solver']}  converged {metrics['converged']}  fit {metrics['fit_seconds']:.2f}s")
    print(f"wrote {metrics['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
