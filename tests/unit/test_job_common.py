"""jobs/_common.py without a JVM: which master a job picks, the one-line failure report, the
shared dataset arguments."""
import pytest

from _common import (JobError, add_dataset_arguments, choose_master, dataset_options, infer_format, preset_master,
                     report_failure)
from sparkopt.errors import InputError


@pytest.mark.parametrize("requested, preset, default, expected", [
    ("local[3]", "spark://host:7077", "local[2]", "local[3]"),      # --master beats spark-submit's
    (None, "spark://host:7077", "local[2]", "spark://host:7077"),   # spark-submit's beats the job's default
    (None, "local[1]", "local[*]", "local[1]"),
    (None, None, "local[2]", "local[2]"),                          # nobody set one: the job's default
    ("", None, "local[*]", "local[*]"),                            # an empty --master is no master
])
def test_choose_master(requested, preset, default, expected):
    assert choose_master(requested, preset, default) == expected


def test_no_preset_master_when_this_process_starts_the_jvm(monkeypatch):
    """A JVM the job starts itself reports spark-submit's local[*] default as its master, which
    would override the job's own default (the benchmark's local[2]): it must not be asked."""
    from pyspark import SparkContext

    def must_not_start(*args, **kwargs):
        raise AssertionError("preset_master started a JVM")

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setattr(SparkContext, "_gateway", None)
    monkeypatch.setattr(SparkContext, "_ensure_initialized", must_not_start)
    assert preset_master() is None


def test_preset_master_asks_the_jvm_spark_submit_started(monkeypatch):
    """Under spark-submit (PYSPARK_GATEWAY_PORT set) the master is read only after connecting."""
    import pyspark
    from pyspark import SparkContext

    connected = []

    class ConfOfTheJvm:
        def get(self, key, default=None):
            assert connected, "read the conf before connecting to the JVM"
            return {"spark.master": "local[1]"}.get(key, default)

    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")
    monkeypatch.setattr(SparkContext, "_gateway", None)
    monkeypatch.setattr(SparkContext, "_ensure_initialized", lambda *a, **k: connected.append(True))
    monkeypatch.setattr(pyspark, "SparkConf", ConfOfTheJvm)
    assert preset_master() == "local[1]"


@pytest.mark.parametrize("err, line", [
    (JobError("input not found: x"), "job.py: error: input not found: x"),
    (InputError("regParam must be >= 0, got -1"), "job.py: error: regParam must be >= 0, got -1"),
    (RuntimeError("worker died\nTraceback (most recent call last): ..."), "job.py: error (RuntimeError): worker died"),
    (ValueError(), "job.py: error (ValueError): ValueError"),
])
def test_report_failure_prints_one_line_and_returns_2(capsys, err, line):
    assert report_failure("job.py", err) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == line + "\n"


def test_report_failure_cuts_long_reasons(capsys):
    report_failure("job.py", JobError("x" * 2000))
    assert capsys.readouterr().err == "job.py: error: " + "x" * 500 + "\n"


def test_infer_format(tmp_path):
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "part-0.parquet").write_bytes(b"")
    assert infer_format(str(tmp_path / "table"), None) == "parquet"
    assert infer_format("data/x.parquet/", None) == "parquet"
    assert infer_format("data/x.CSV", None) == "csv" and infer_format("data/x.csv.gz", None) == "csv"
    assert infer_format("data/a9a", None) == "libsvm"
    assert infer_format("data/x.csv", "parquet") == "parquet"        # --format wins


def test_dataset_arguments_map_to_read_dataset_options():
    import argparse

    parser = argparse.ArgumentParser()
    add_dataset_arguments(parser)
    assert dataset_options(parser.parse_args([])) == dict(fmt=None, label_col="label", features_col="features",
                                                          feature_cols=None)
    args = parser.parse_args(["--format", "csv", "--label-col", "y", "--feature-cols", "a,b"])
    assert dataset_options(args) == dict(fmt="csv", label_col="y", features_col="features", feature_cols="a,b")
    with pytest.raises(SystemExit):
        parser.parse_args(["--features-col", "v", "--feature-cols", "a,b"])     # one or the other
    with pytest.raises(SystemExit):
        parser.parse_args(["--format", "json"])
