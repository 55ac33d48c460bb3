"""jobs/_files.py's output directories on the local disk, without a JVM, as plain paths and as
file:// URIs: only a directory carrying sparkopt's marker is ever replaced, and the replacement is
write-beside, move aside, swap, delete, so a kill between any two steps leaves a complete output
(old or new) that a rerun finds. The same scenarios run on Hadoop file systems in
tests/spark/test_job_paths.py."""
from pathlib import Path

import pytest

import output_protocol as protocol
from _common import JobError
from _files import LocalStore, Paths, check_output_target, scheme_of


@pytest.fixture(params=["plain", "file-uri"])
def where(request):
    return (lambda p: p) if request.param == "plain" else (lambda p: "file://" + str(p))


@pytest.mark.parametrize("scenario", protocol.SCENARIOS, ids=lambda f: f.__name__[len("check_"):])
def test_the_protocol_on_the_local_disk(tmp_path, where, scenario):
    scenario(LocalStore(), where, tmp_path)


def test_a_file_or_a_symlink_is_refused(tmp_path, where):
    protocol.check_a_file_or_a_symlink_is_refused(LocalStore(), where, tmp_path)


@pytest.mark.parametrize("crash_at", sorted(protocol.CRASHES))
def test_a_kill_between_steps_leaves_an_output_and_a_rerun_cleans_up(tmp_path, where, monkeypatch, crash_at):
    protocol.check_a_kill_between_steps_leaves_an_output_and_a_rerun_cleans_up(LocalStore(), where, tmp_path,
                                                                              monkeypatch, crash_at)


@pytest.mark.parametrize("name", [".", "..", "", "sub/..", "file:.", "file:///"])
def test_the_working_directory_and_its_parents_are_refused(tmp_path, monkeypatch, name):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub" if name != "sub/.." else tmp_path)
    with pytest.raises(JobError, match="working directory"):
        check_output_target(name or ".")
    with pytest.raises(JobError, match="working directory"):
        check_output_target("/")


@pytest.mark.parametrize("text, scheme", [("data/a9a", None), ("/abs/x", None), ("file:///tmp/x", "file"),
                                          ("file:/tmp/x", "file"), ("HDFS://nn:8020/x", "hdfs"),
                                          ("s3a://bucket/key", "s3a"), ("viewfs://cluster/x", "viewfs"),
                                          ("C:/windows", None)])
def test_scheme_of(text, scheme):
    assert scheme_of(text) == scheme


def test_the_local_store_resolves_plain_paths_and_file_uris_alike(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = LocalStore()
    assert store.resolve("out/x") == store.resolve(f"file://{tmp_path}/out/x") == tmp_path / "out" / "x"
    assert store.resolve(f"file:{tmp_path}/y") == tmp_path / "y"
    with pytest.raises(JobError, match="hdfs://nn/x.*classic Spark driver"):
        store.resolve("hdfs://nn/x")


def test_before_the_session_only_paths_known_to_be_local_are_checked(monkeypatch):
    """With no JVM yet: plain and file:// paths are local unless a Hadoop configuration could
    move plain ones (HADOOP_CONF_DIR, --conf spark.hadoop.fs.defaultFS); other schemes wait."""
    from pyspark import SparkContext

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setattr(SparkContext, "_gateway", None)
    for var in ("HADOOP_CONF_DIR", "YARN_CONF_DIR"):
        monkeypatch.delenv(var, raising=False)
    paths = Paths()
    assert isinstance(paths.store("out/x", "--output"), LocalStore)
    assert isinstance(paths.store("file:///tmp/x", "--output"), LocalStore)
    assert paths.store("hdfs://nn/x", "--output") is None and paths.store("s3a://b/x", "--input") is None
    moved = Paths(confs=[("spark.hadoop.fs.defaultFS", "hdfs://nn:8020")])
    assert moved.store("out/x", "--output") is None and isinstance(moved.store("file:/x", "--output"), LocalStore)
    monkeypatch.setenv("HADOOP_CONF_DIR", "/etc/hadoop/conf")
    assert Paths().store("out/x", "--output") is None


def test_model_class_reads_through_the_store(tmp_path):
    """predict.py's class lookup reads the saved metadata through a store (here the local disk, by
    file:// URI too)."""
    import json

    from predict import model_class
    from sparkopt.ml import LinearSVCModel

    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "part-00000").write_text(json.dumps({"class": "sparkopt.ml.classification.LinearSVCModel"}))
    assert model_class("file://" + str(tmp_path)) is LinearSVCModel
    assert model_class(Path(tmp_path), LocalStore()) is LinearSVCModel
