"""jobs/train.py and jobs/predict.py with ``main()`` called in this process (as from a notebook),
where the job borrows the running session, changes none of its settings and leaves it running.
The same jobs as subprocesses with an embedded Spark (as from a shell) are
tests/spark/test_jobs_cli.py's."""
import contextlib
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from sparkopt.ml import LogisticRegression, LogisticRegressionModel

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[2]


class InProcess:
    """What a subprocess run returns (tests/spark/test_jobs_cli.py), for ``main()`` called in this process."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def call_main(script, *args) -> InProcess:
    """A job's ``main(argv)`` called here from the repository root (relative paths as the
    subprocess runs of tests/spark/test_jobs_cli.py see them), its stdout and stderr captured."""
    import predict
    import train

    module = {"train.py": train, "predict.py": predict}[script]
    stdout, stderr = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = module.main([str(a) for a in args])
            except SystemExit as exit_:         # argparse's usage errors
                code = exit_.code
    finally:
        os.chdir(cwd)
    return InProcess(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def run_main(spark):
    """:func:`call_main`; the shared session must come back running and unchanged."""
    settings = sorted(spark.sparkContext.getConf().getAll())
    sql_settings = {k: spark.conf.get(k) for k in ("spark.sql.shuffle.partitions",)}
    yield call_main
    assert spark.sparkContext._jsc is not None and spark.range(3).count() == 3       # still running
    assert sorted(spark.sparkContext.getConf().getAll()) == settings
    assert {k: spark.conf.get(k) for k in sql_settings} == sql_settings


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """a9a trained by train.py's ``main()`` on the shared session (the same run as a subprocess is
    tests/spark/test_jobs_cli.py's)."""
    out = tmp_path_factory.mktemp("train") / "a9a"
    proc = call_main("train.py", "--input", ROOT / "data" / "a9a", "--test-input", ROOT / "data" / "a9a.t",
                     "--model", "logistic", "--solver", "newton", "--reg-param", "1e-4", "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_train_writes_every_output(spark, trained):
    """As tests/spark/test_jobs_cli.py checks the subprocess's files, plus the saved model loaded
    by the estimator API."""
    out, proc = trained
    assert "iter    1" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["converged"] and metrics["solver"] == "newton" and metrics["num_rows"] == 32561
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == metrics["iterations"] + 1
    model = LogisticRegressionModel.load(str(out / "model"))
    np.testing.assert_array_equal(model.coefficients.toArray(), metrics["coefficients"])
    assert model.intercept == metrics["intercept"]


def test_train_objective_matches_estimator_api(spark, trained):
    out, _ = trained
    df = (spark.read.format("libsvm").load(str(ROOT / "data" / "a9a"))
          .withColumn("label", F.when(F.col("label") > 0, 1.0).otherwise(0.0)))
    model = LogisticRegression(regParam=1e-4, solver="newton").fit(df)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["objective"] == pytest.approx(model.summary.objective, rel=1e-12)


def test_predict_scores_with_saved_model(trained, tmp_path, spark, run_main):
    out, _ = trained
    assert json.loads((out / "_SPARKOPT_OUTPUT").read_text())["job"] == "train.py"
    # the second run replaces the first run's output
    for data in ("a9a.t", "a9a"):
        proc = run_main("predict.py", "--model", out / "model", "--input", ROOT / "data" / data,
                        "--output", tmp_path / "scores")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads((tmp_path / "scores" / "_SPARKOPT_OUTPUT").read_text())["input"].endswith(data)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["scores"]
    scores = spark.read.parquet(str(tmp_path / "scores"))
    assert {"rawPrediction", "probability", "prediction", "label"} <= set(scores.columns)
    assert scores.count() == 32561     # a9a's rows, none of a9a.t's left
    assert scores.filter("label not in (0.0, 1.0)").count() == 0


@pytest.mark.parametrize("args, reason", [
    (["--input", "nowhere/a9a", "--output", "{tmp}/o"], "input not found"),
    (["--input", "data/a9a", "--model", "tree", "--output", "{tmp}/o"], "invalid choice"),
    (["--input", "{tmp}/garbage.txt", "--output", "{tmp}/o"], "cannot read"),
    (["--input", "{tmp}/table.csv", "--feature-cols", "a,b", "--label-col", "y", "--output", "{tmp}/o"],
     "label column 'y' not found"),
    (["--input", "data/a9a", "--output", "{tmp}/afile/o"], "cannot create output directory"),
    (["--input", "data/a9a", "--reg-param", "-1", "--output", "{tmp}/o"], "regParam"),
])
def test_bad_invocations_fail_cleanly(tmp_path, args, reason, run_main):
    """In this process (the two that reach Spark would cost a JVM each as subprocesses); the
    CLI's own exit path is tests/spark/test_jobs_cli.py's test_bad_params_are_refused_before_spark_starts."""
    (tmp_path / "garbage.txt").write_bytes(b"\x00\x01 this is not libsvm\nnor this: 1:x:y\n")
    (tmp_path / "table.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    (tmp_path / "afile").write_text("a file, not a directory")
    proc = run_main("train.py", *[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert reason in last, proc.stderr[-2000:]
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]


def test_train_cv_chooses_the_reg_param_and_plots_the_path(tmp_path, run_main):
    from sparkopt.ml import LinearRegressionCVModel

    out = tmp_path / "cv"
    proc = run_main("train.py", "--input", ROOT / "data" / "angel_abalone_8d_train.libsvm", "--model", "linear",
                    "--elastic-net-param", "1", "--cv", "3", "--quiet", "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    cv = metrics["cv"]
    assert cv["num_folds"] == 3 and cv["metric"] == "rmse" and len(cv["reg_params"]) == 20
    assert metrics["reg_param"] == cv["best_reg_param"] == cv["reg_params"][int(np.argmin(cv["avg_metrics"]))]
    assert cv["passes"] < cv["fit_passes"]
    for name in ("path.png", "convergence.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    model = LinearRegressionCVModel.load(str(out / "model"))
    assert model.bestRegParam == cv["best_reg_param"] and model.avgMetrics == cv["avg_metrics"]


def test_train_resumes_from_checkpoint_dir(trained, tmp_path, run_main):
    """A job stopped after 2 iterations (as if killed: the checkpoint is all that survives) and
    rerun with the same --checkpoint-dir ends where the uninterrupted job (`trained`) ended.
    Both runs here call main() in this process."""
    ckpt = tmp_path / "ckpt"
    common = ["--input", ROOT / "data" / "a9a", "--model", "logistic", "--solver", "newton", "--reg-param", "1e-4",
              "--checkpoint-dir", ckpt, "--checkpoint-interval", "1"]
    first = run_main("train.py", *common, "--max-iter", "2", "--output", tmp_path / "first")
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((tmp_path / "first" / "metrics.json").read_text())["iterations"] == 2
    assert sorted(p.name for p in ckpt.iterdir()) == ["ckpt-000001.json", "ckpt-000001.npz",
                                                      "ckpt-000002.json", "ckpt-000002.npz", "ckpt.lock"]
    resumed = run_main("train.py", *common, "--output", tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint at iteration 2" in resumed.stdout
    assert "iter    1 " not in resumed.stdout                 # iterations 1-2 were not redone
    got = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    ref = json.loads((trained[0] / "metrics.json").read_text())
    assert got["converged"] and got["iterations"] == ref["iterations"] and got["passes"] == ref["passes"]
    assert got["objective"] == pytest.approx(ref["objective"], rel=1e-13)
    np.testing.assert_allclose(got["coefficients"], ref["coefficients"], rtol=1e-10, atol=1e-13)
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "history.csv")))
    assert [int(r["iteration"]) for r in rows] == list(range(ref["iterations"] + 1))    # the full history


def test_train_and_predict_on_uris_and_another_file_system_with_progress_and_mlflow(trained, tmp_path, spark,
                                                                                      run_main, monkeypatch):
    """train.py reads a file:// input and writes through viewfs:// (Hadoop's mount-table file
    system, mounted over tmp_path/mnt), reads its model back and logs the run to MLflow's local
    file store; predict.py reads that model by its viewfs:// URI and writes file://. Both show
    their phases on stderr: the ingest's rows are a9a.t's."""
    from mlflow.tracking import MlflowClient

    from test_job_paths import mount

    (tmp_path / "mnt").mkdir()
    prefix = mount(spark, tmp_path / "mnt")
    test_data = ROOT / "data" / "a9a.t"
    proc = run_main("train.py", "--input", f"file://{test_data}", "--model", "logistic", "--solver", "newton",
                    "--reg-param", "1e-4", "--output", f"{prefix}/model-run", "--mlflow",
                    "--mlflow-uri", tmp_path / "mlruns", "--mlflow-experiment", "paths")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {prefix}/model-run" in proc.stdout
    out = tmp_path / "mnt" / "model-run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "_SPARKOPT_OUTPUT").read_text())["input"] == f"file://{test_data}"
    assert metrics["converged"] and metrics["num_rows"] == 16281
    assert [e["python"] for e in metrics["executors"]] == [sys.executable]
    model = LogisticRegressionModel.load(f"{prefix}/model-run/model")
    np.testing.assert_array_equal(model.coefficients.toArray(), metrics["coefficients"])
    assert sorted(p.name for p in (tmp_path / "mnt").iterdir()) == ["model-run"]      # nothing staged left
    # progress: one summary line per phase, the ingest's rows those of the input
    phases = summaries(proc.stderr, "train.py")
    assert list(phases) == ["read", "ingest", "evaluate", "write", "mlflow"]
    assert "16,281 rows read" in phases["ingest"]

    # the MLflow run, read back with MLflow's client
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("paths")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["sparkopt.output"] == f"{prefix}/model-run"
    assert run.data.params["model"] == "logistic" and run.data.params["reg_param"] == "0.0001"
    history = client.get_metric_history(run.info.run_id, "objective")
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
        [(int(r["iteration"]), float(r["objective"])) for r in rows]
    assert run.data.metrics["final_objective"] == metrics["objective"]
    assert run.data.metrics["final_train_auc"] == metrics["train"]["auc"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "metrics.json", "history.csv", "convergence.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} == {"model/metadata"}

    # predict.py: the model by its viewfs:// URI, the scores to a file:// URI
    scores = tmp_path / "scores"
    proc = run_main("predict.py", "--model", f"{prefix}/model-run/model", "--input", test_data,
                    "--output", f"file://{scores}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote 16281 rows to file:{scores}" in proc.stdout
    assert json.loads((scores / "_SPARKOPT_OUTPUT").read_text())["rows"] == 16281
    assert spark.read.parquet(str(scores)).count() == 16281
    assert list(summaries(proc.stderr, "predict.py")) == ["read", "score"]


def summaries(stderr: str, prog: str) -> dict:
    """Each phase's last progress line (off a terminal a long phase writes a line every 10 s), in order."""
    phases = {}
    for line in stderr.splitlines():
        if line.startswith(f"{prog}: "):
            phases[line.split()[1]] = line
    return phases


def test_paths_on_a_file_system_the_driver_lacks_are_refused_before_any_spark_work(tmp_path, run_main):
    for args, named in ((["--input", "nosuch://host/a9a", "--output", tmp_path / "o"], "--input nosuch://host/a9a"),
                        (["--input", ROOT / "data" / "a9a.t", "--output", "s3a://bucket/o"], "--output s3a://bucket/o")):
        proc = run_main("train.py", *args)
        assert proc.returncode == 2
        last = proc.stderr.strip().splitlines()[-1]
        assert named in last and "no Hadoop file system" in last, proc.stderr[-2000:]
        assert "train.py: read" not in proc.stderr          # no phase started
    assert not list(tmp_path.iterdir())



def test_only_short_lived_jvms_run_without_c2(spark):
    """tests/conftest.py: the subprocesses' JVMs get SHORT_LIVED_JVM_OPTIONS, the shared session's
    JVM (hundreds of fits, MLlib's among them) keeps the default compilers."""
    from conftest import SHORT_LIVED_JVM_OPTIONS, long_lived_jvm_env

    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    arguments = list(runtime.getInputArguments())
    assert not any("TieredStopAtLevel" in a for a in arguments), arguments
    if SHORT_LIVED_JVM_OPTIONS:
        assert SHORT_LIVED_JVM_OPTIONS in os.environ["SPARK_SUBMIT_OPTS"]
        assert SHORT_LIVED_JVM_OPTIONS not in long_lived_jvm_env(dict(os.environ)).get("SPARK_SUBMIT_OPTS", "")
