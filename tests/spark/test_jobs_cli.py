"""jobs/train.py and jobs/predict.py exactly as a user runs them from a shell: subprocesses with
an embedded Spark each (``python jobs/train.py ...``), exit codes, stdout, and what they write.
Nothing here uses the shared SparkSession (the outputs are read back as files: JSON, CSV,
Parquet through pyarrow), so tests/run.sh runs these beside the shared session's tests; the
jobs' ``main()`` in a running session is tests/spark/test_jobs.py's."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.spark, pytest.mark.spark_subprocess]

ROOT = Path(__file__).resolve().parents[2]


def run_job(script, *args, timeout=300, cwd=ROOT):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.run([sys.executable, str(ROOT / "jobs" / script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "a9a"
    proc = run_job("train.py", "--input", ROOT / "data" / "a9a", "--test-input", ROOT / "data" / "a9a.t",
                   "--model", "logistic", "--solver", "newton", "--reg-param", "1e-4", "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_train_writes_every_output(trained):
    out, proc = trained
    assert "iter    1" in proc.stdout and "objective" in proc.stdout          # per-iteration log
    assert f"wrote {out}" in proc.stdout or f"wrote file:{out}" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("objective", "iterations", "passes", "fit_seconds", "converged", "status", "message", "solver",
                "num_rows", "num_features", "coefficients", "intercept"):
        assert key in metrics, key
    assert metrics["converged"] and metrics["solver"] == "newton" and metrics["num_rows"] == 32561
    assert 0.89 < metrics["train"]["auc"] < 0.92 and 0.89 < metrics["test"]["auc"] < 0.92
    assert 0.8 < metrics["test"]["accuracy"] < 0.9
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == metrics["iterations"] + 1
    assert float(rows[-1]["objective"]) == pytest.approx(metrics["objective"], rel=1e-14)
    assert (out / "convergence.png").read_bytes()[:4] == b"\x89PNG"
    # the model as saved (train.py loaded it back before exit 0): the coefficients of metrics.json
    [part] = (out / "model" / "metadata").glob("part-*")
    saved = json.loads(part.read_text())["sparkoptModel"]["coef_vector"]
    assert saved == metrics["coefficients"] + [metrics["intercept"]]
    assert json.loads((out / "_SPARKOPT_OUTPUT").read_text())["job"] == "train.py"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]          # no staging left


def test_predict_scores_with_the_saved_model(trained, tmp_path):
    out, _ = trained
    scores = tmp_path / "scores"
    proc = run_job("predict.py", "--model", out / "model", "--input", ROOT / "data" / "a9a.t", "--output", scores)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 16281 rows to" in proc.stdout
    assert json.loads((scores / "_SPARKOPT_OUTPUT").read_text())["input"].endswith("a9a.t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores"]
    table = pq.read_table(scores)
    assert {"rawPrediction", "probability", "prediction", "label"} <= set(table.column_names)
    assert table.num_rows == 16281
    assert set(table.column("label").to_pylist()) == {0.0, 1.0}
    # a9a.t scored with the saved coefficients: predictions agree with the margins' signs
    prediction = np.asarray(table.column("prediction").to_pylist())
    assert set(np.unique(prediction)) <= {0.0, 1.0}
    accuracy = float(np.mean(prediction == np.asarray(table.column("label").to_pylist())))
    metrics = json.loads((out / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=1e-12)


def test_output_refuses_foreign_directories_and_the_working_directory(trained, tmp_path):
    """Refused before Spark starts, with the path named, nothing touched."""
    out, _ = trained
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("years of work")
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    cases = [("train.py", ["--input", ROOT / "data" / "a9a", "--output", foreign], ROOT, "not a sparkopt output"),
             ("predict.py", ["--model", out / "model", "--input", ROOT / "data" / "a9a.t", "--output", foreign], ROOT,
              "not a sparkopt output"),
             ("train.py", ["--input", ROOT / "data" / "a9a", "--output", "."], work, "working directory"),
             ("predict.py", ["--model", out / "model", "--input", ROOT / "data" / "a9a.t", "--output", "."], work,
              "working directory")]
    for script, args, cwd, reason in cases:
        proc = run_job(script, *args, cwd=cwd, timeout=60)
        assert proc.returncode == 2
        last = proc.stderr.strip().splitlines()[-1]
        assert reason in last and str(foreign if cwd == ROOT else work) in last, proc.stderr[-2000:]
    assert [p.name for p in foreign.iterdir()] == ["chapter1.tex"]
    assert (foreign / "chapter1.tex").read_text() == "years of work"
    assert [p.name for p in work.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis", "work"]


@pytest.mark.parametrize("args, reason", [(["--reg-param", "-1"], "regParam"),
                                          (["--elastic-net-param", "2"], "elasticNetParam"),
                                          (["--max-iter", "-3"], "maxIter"),
                                          (["--model", "svm", "--cv", "3"], "--cv needs --model"),
                                          (["--cv", "1"], "numFolds")])
def test_bad_params_are_refused_before_spark_starts(tmp_path, args, reason):
    """A master nobody listens on: had the job started Spark first, the error would be about it."""
    proc = run_job("train.py", "--input", ROOT / "data" / "a9a", "--master", "spark://127.0.0.1:9", *args,
                   "--output", tmp_path / "o", timeout=60)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert reason in last and "spark://" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "o").exists()
