"""jobs/pack_env.py's choices and train.py's --mlflow without a JVM (packing for real:
tests/cluster/test_standalone.py; an MLflow run read back: tests/spark/test_jobs.py)."""
import sys
from pathlib import Path

import pytest

import pack_env
import train
from _common import JobError

ROOT = Path(__file__).resolve().parents[2]


def test_the_executors_get_sparkopts_requirements_but_pyspark():
    requires = ["pyspark==4.3.0", "numpy<2.6,>=1.26", "PySpark[connect]==4.3.0", "scipy>=1.11", "py_spark_x>=1",
                "pyarrow>=15"]
    assert pack_env.executor_requirements(requires) == ["numpy<2.6,>=1.26", "scipy>=1.11", "py_spark_x>=1",
                                                        "pyarrow>=15"]


def test_requires_reads_the_unconditional_requirements(tmp_path):
    meta = tmp_path / "sparkopt-0.1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: sparkopt\nRequires-Dist: pyspark==4.3.0\n"
                                   "Requires-Dist: numpy<2.6,>=1.26\n"
                                   "Requires-Dist: pytest>=8; extra == \"test\"\n\nREADME text\n")
    assert pack_env._requires(tmp_path) == ["pyspark==4.3.0", "numpy<2.6,>=1.26"]
    with pytest.raises(JobError, match="no other metadata"):
        pack_env._requires(tmp_path, "other")


@pytest.mark.parametrize("name, fmt", [("env.tar.gz", "tar.gz"), ("a/ENV.TGZ", "tgz")])
def test_archive_format_follows_the_extension(name, fmt):
    assert pack_env.archive_format(name) == fmt


@pytest.mark.parametrize("name, reason", [("env.tar", "Spark unpacks a .tar in Java"),
                                          ("env.zip", "unzip restores no symlinks"),
                                          ("env.tar.bz2", "name an archive Spark unpacks")])
def test_archives_spark_cannot_unpack_into_a_runnable_environment_are_refused(name, reason):
    with pytest.raises(JobError, match=f"--output {name}: .*{reason}"):
        pack_env.archive_format(name)


def test_pack_refuses_what_spark_cannot_unpack_and_an_existing_output(tmp_path, monkeypatch):
    with pytest.raises(JobError, match="env.rar: name an archive Spark unpacks"):
        pack_env.pack(str(tmp_path / "env.rar"))
    (tmp_path / "env.tar.gz").write_bytes(b"")
    with pytest.raises(JobError, match="exists"):
        pack_env.pack(str(tmp_path / "env.tar.gz"))
    monkeypatch.setitem(sys.modules, "venv_pack", None)
    with pytest.raises(JobError, match=r"needs venv-pack: pip install 'sparkopt\[pack\]'"):
        pack_env.pack(str(tmp_path / "new.tgz"))


def test_train_refuses_mlflow_when_it_is_not_installed(tmp_path, monkeypatch):
    """Said before Spark starts (no JVM in this process)."""
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(JobError, match=r"--mlflow needs MLflow: pip install 'sparkopt\[mlflow\]'"):
        train.run(train.parse_args(["--input", str(ROOT / "data" / "a9a.t"), "--output", str(tmp_path / "o"),
                                    "--mlflow"]))
    assert not list(tmp_path.iterdir())


def test_the_mlflow_uri_defaults_to_a_local_file_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = train.parse_args(["--input", "x", "--output", "o", "--mlflow"])
    assert train.mlflow_tracking(args) == {"uri": (tmp_path / "mlruns").as_uri(), "experiment": "sparkopt"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///db.sqlite")
    assert train.mlflow_tracking(args)["uri"] == "sqlite:///db.sqlite"
    args = train.parse_args(["--input", "x", "--output", "o", "--mlflow", "--mlflow-uri", "runs"])
    assert train.mlflow_tracking(args)["uri"] == (tmp_path / "runs").as_uri()


def test_checkpoints_stay_on_the_drivers_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = train.parse_args(["--input", "x", "--output", "o", "--checkpoint-dir", f"file://{tmp_path}/ckpt"])
    assert train.make_estimator(args, "features", "label").getCheckpointDir() == str(tmp_path / "ckpt")
    args = train.parse_args(["--input", "x", "--output", "o", "--checkpoint-dir", "hdfs://nn/ckpt"])
    with pytest.raises(JobError, match="--checkpoint-dir hdfs://nn/ckpt: checkpoints are kept on the driver's disk"):
        train.run(args)
