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
        def getAll(self):
            assert connected, "read the conf before connecting to the JVM"
            return [("spark.master", "local[1]"), ("spark.app.name", "train.py")]

    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")
    monkeypatch.setattr(SparkContext, "_gateway", None)
    monkeypatch.setattr(SparkContext, "_ensure_initialized", lambda *a, **k: connected.append(True))
    monkeypatch.setattr(pyspark, "SparkConf", ConfOfTheJvm)
    assert preset_master() == "local[1]"


@pytest.mark.parametrize("err, line, status", [
    (JobError("input not found: x"), "job.py: error: input not found: x", 2),
    (InputError("regParam must be >= 0, got -1"), "job.py: error: regParam must be >= 0, got -1", 2),
    (RuntimeError("worker died\nTraceback (most recent call last): ..."), "job.py: error (RuntimeError): worker died", 1),
    (ValueError(), "job.py: error (ValueError): ValueError", 1),
])
def test_report_failure_prints_one_line_usage_errors_exit_2_failures_1(capsys, err, line, status):
    """2 for what the user can fix (as argparse's own usage errors), 1 for a runtime failure."""
    assert report_failure("job.py", err) == status
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


def test_conf_arguments_are_key_value_pairs_in_order(capsys):
    import argparse

    from _common import add_spark_arguments

    parser = argparse.ArgumentParser(prog="job.py")
    add_spark_arguments(parser, "local[*]")
    args = parser.parse_args(["--conf", "spark.sql.shuffle.partitions=3", "--conf", "spark.x= a=b ",
                              "--master", "local[1]"])
    assert args.confs == [("spark.sql.shuffle.partitions", "3"), ("spark.x", " a=b ")] and args.master == "local[1]"
    assert parser.parse_args([]).confs == []
    for bad in ("novalue", "=3"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--conf", bad])
        assert exit_info.value.code == 2
        assert f"--conf takes KEY=VALUE, got {bad!r}" in capsys.readouterr().err


class _RecordingBuilder:
    """Stands in for SparkSession.builder: records what the job asks of it."""

    def __init__(self):
        self.settings, self.stopped = {}, False

    def master(self, value):
        self.settings["spark.master"] = value
        return self

    def remote(self, value):
        self.settings["spark.remote"] = value
        return self

    def appName(self, value):
        self.settings["spark.app.name"] = value
        return self

    def config(self, key, value):
        self.settings[key] = value
        return self

    def getOrCreate(self):
        builder = self

        class Session:
            class sparkContext:
                @staticmethod
                def setLogLevel(level):
                    pass

            @staticmethod
            def stop():
                builder.stopped = True

        return Session()


@pytest.mark.parametrize("submitted, confs, expected", [
    # plain python: the job's defaults, the user's --conf over them, --conf spark.master as a master
    ({}, [], {"spark.master": "local[*]", "spark.app.name": "sparkopt-x", "spark.ui.showConsoleProgress": "false",
              "spark.driver.memory": "8g"}),
    ({}, [("spark.ui.showConsoleProgress", "true"), ("spark.master", "local[1]"), ("spark.driver.memory", "2g")],
     {"spark.master": "local[1]", "spark.app.name": "sparkopt-x", "spark.ui.showConsoleProgress": "true",
      "spark.driver.memory": "2g"}),
    # spark-submit: its master and name and every setting it has stay as they are
    ({"spark.master": "spark://h:7077", "spark.app.name": "mine", "spark.driver.memory": "1g"}, [],
     {"spark.master": "spark://h:7077", "spark.ui.showConsoleProgress": "false"}),
])
def test_job_session_never_overrides_the_users_settings(monkeypatch, submitted, confs, expected):
    import _common
    from pyspark.sql import SparkSession

    builder = _RecordingBuilder()
    monkeypatch.setattr(SparkSession, "builder", builder)
    monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: None))
    monkeypatch.setattr(_common, "_jvm_conf", lambda: dict(submitted))
    with _common.job_session("sparkopt-x", None, "local[*]", confs, defaults={"spark.driver.memory": "8g"}):
        assert not builder.stopped
    assert builder.settings == expected and builder.stopped


def test_job_session_lends_an_active_session_and_leaves_it_running(monkeypatch):
    import _common
    from pyspark.sql import SparkSession

    class Active:
        stopped = False

        def stop(self):
            self.stopped = True

    active = Active()
    monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: active))
    with _common.job_session("sparkopt-x") as spark:
        assert spark is active
    assert not active.stopped
    with pytest.raises(JobError, match="--conf spark.x=... cannot apply"):
        with _common.job_session("sparkopt-x", confs=[("spark.x", "1")]):
            pass


@pytest.mark.parametrize("flag, env", [("sc://127.0.0.1:15002", None), (None, "sc://127.0.0.1:15002")])
def test_job_session_is_a_connect_client_with_remote_or_spark_remote(monkeypatch, flag, env):
    import _common
    from pyspark.sql import SparkSession

    builder = _RecordingBuilder()
    monkeypatch.setattr(SparkSession, "builder", builder)
    monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: None))
    monkeypatch.setattr(_common, "_jvm_conf", lambda: pytest.fail("a Connect client starts no JVM"))
    if env is None:
        monkeypatch.delenv("SPARK_REMOTE", raising=False)
    else:
        monkeypatch.setenv("SPARK_REMOTE", env)
    with _common.job_session("sparkopt-x", None, "local[*]", [("spark.sql.shuffle.partitions", "3")], remote=flag):
        pass
    assert builder.settings == {"spark.remote": "sc://127.0.0.1:15002", "spark.app.name": "sparkopt-x",
                                "spark.ui.showConsoleProgress": "false", "spark.sql.shuffle.partitions": "3"}
    assert builder.stopped      # this client's session, not the server


@pytest.mark.parametrize("kwargs, env, message", [
    ({"master": "local[2]", "remote": "sc://h:1"}, None, "--master local.2. and --remote sc://h:1 name two"),
    ({"remote": "localhost:15002"}, None, "--remote must be a Spark Connect URL sc://HOST:PORT"),
    ({"connect": False}, "sc://h:1", "sparkopt-x needs a classic Spark driver .* SPARK_REMOTE=sc://h:1"),
])
def test_job_session_refuses_remote_settings_it_cannot_honour(monkeypatch, kwargs, env, message):
    import _common
    from pyspark.sql import SparkSession

    monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: None))
    monkeypatch.setattr(SparkSession, "builder", _RecordingBuilder())
    if env is None:
        monkeypatch.delenv("SPARK_REMOTE", raising=False)
    else:
        monkeypatch.setenv("SPARK_REMOTE", env)
    with pytest.raises(JobError, match=message):
        with _common.job_session("sparkopt-x", **kwargs):
            pass


def test_jobs_that_need_the_driver_jvm_have_no_remote_flag():
    import argparse

    import _common

    parser = argparse.ArgumentParser()
    _common.add_spark_arguments(parser, "local[*]", remote=False)
    assert "--remote" not in parser.format_help()
    _common.add_spark_arguments(with_remote := argparse.ArgumentParser(), "local[*]")
    assert with_remote.parse_args(["--remote", "sc://h:1"]).remote == "sc://h:1"
