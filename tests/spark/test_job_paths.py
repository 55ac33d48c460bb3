"""jobs/_files.py on the Hadoop file systems of the shared session's JVM: the output protocol's
scenarios (tests/output_protocol.py) through the local FileSystem by file:// URI and plain path,
and through viewfs://, a FileSystem other than the local one (Hadoop's mount-table file system,
mounted here over the test's directory); a scheme with no FileSystem named; the executors'
environment; the rows a phase's Spark jobs read."""
import sys
import uuid

import pytest

import output_protocol as protocol
from _common import JobError, executor_environment
from _files import HadoopStore, Paths, check_output_target
from conftest import dataset

pytestmark = pytest.mark.spark


def mount(spark, root) -> str:
    """A viewfs mount table of its own (a fresh name: FileSystem instances are cached by it) with
    /root linked to the local directory ``root``; its URI prefix."""
    table = f"t{uuid.uuid4().hex[:10]}"
    spark.sparkContext._jsc.hadoopConfiguration().set(f"fs.viewfs.mounttable.{table}.link./root", f"file://{root}")
    return f"viewfs://{table}/root"


@pytest.fixture(params=["file-uri", "plain", "viewfs"])
def hadoop(request, spark, tmp_path):
    """(store, where) of the local FileSystem (by file:// URI, by plain path: the session's default
    file system) or of viewfs over tmp_path."""
    if request.param == "viewfs":
        prefix = mount(spark, tmp_path)
        def where(p):
            return f"{prefix}/{p.relative_to(tmp_path)}" if p != tmp_path else prefix
    elif request.param == "file-uri":
        def where(p):
            return f"file://{p}"
    else:
        def where(p):
            return str(p)
    store = HadoopStore.of_session(spark, where(tmp_path), "--output")
    assert store.scheme == ("viewfs" if request.param == "viewfs" else "file")
    return store, where, request.param


@pytest.mark.parametrize("scenario", protocol.SCENARIOS, ids=lambda f: f.__name__[len("check_"):])
def test_the_protocol_on_hadoop_file_systems(hadoop, tmp_path, scenario):
    store, where, _ = hadoop
    scenario(store, where, tmp_path)


def test_a_file_or_a_symlink_is_refused(hadoop, tmp_path):
    store, where, kind = hadoop
    # the local FileSystem reports links; viewfs resolves them (a link to a directory is that directory)
    protocol.check_a_file_or_a_symlink_is_refused(store, where, tmp_path, links=kind != "viewfs")


@pytest.mark.parametrize("crash_at", sorted(protocol.CRASHES))
def test_a_kill_between_steps_leaves_an_output_and_a_rerun_cleans_up(hadoop, tmp_path, monkeypatch, crash_at):
    store, where, _ = hadoop
    protocol.check_a_kill_between_steps_leaves_an_output_and_a_rerun_cleans_up(store, where, tmp_path, monkeypatch,
                                                                              crash_at)


def test_the_working_directory_is_refused_on_the_local_file_system(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = HadoopStore.of_session(spark, "file:///", "--output")
    for name in (".", "file:" + str(tmp_path), "file:///", str(tmp_path.parent)):
        with pytest.raises(JobError, match="working directory"):
            check_output_target(name, store)


def test_a_scheme_without_a_file_system_is_named(spark):
    paths = Paths(spark)
    with pytest.raises(JobError, match=r"--output nosuch://host/x: no Hadoop file system for nosuch://"):
        paths.store("nosuch://host/x", "--output", output=True)
    # s3a:// is Hadoop's, but its class (hadoop-aws) is not on pyspark's classpath
    with pytest.raises(JobError, match=r"--input s3a://bucket/data: .*S3AFileSystem"):
        paths.store("s3a://bucket/data", "--input")


def test_paths_before_the_session_ask_the_jvm_spark_submit_started(spark):
    """With a JVM already there (as under spark-submit), every path is looked up before the
    session: its Hadoop configuration answers, without a SparkContext of the job's own."""
    paths = Paths()
    assert isinstance(paths.store("out/x", "--output"), HadoopStore)
    with pytest.raises(JobError, match="nosuch://"):
        paths.store("nosuch://x/y", "--input")


def test_executor_environment_names_the_interpreter_and_sparkopt(spark, monkeypatch):
    import _common
    import sparkopt

    rows = executor_environment(spark)
    assert [r["python"] for r in rows] == [sys.executable]
    assert rows[0]["sparkopt"] == sparkopt.__file__
    monkeypatch.setattr(_common, "EXECUTOR_MODULES", ("sparkopt", "no_such_module_here"))
    with pytest.raises(JobError, match=rf"executors' Python \({sys.executable}\) cannot import no_such_module_here "
                                       r"\(ModuleNotFoundError.*--archives"):
        executor_environment(spark)


def test_a_phase_counts_the_rows_its_jobs_read(spark):
    """Rows read are Spark's input records of the phase's own jobs, final when the phase ends."""
    from _progress import JobProgress

    progress = JobProgress("test", spark, enabled=False)
    spark.read.format("libsvm").load(str(dataset("a9a"))).count()      # another group's job: not counted
    with progress.phase("read"):
        df = spark.read.format("libsvm").option("numFeatures", 123).load(str(dataset("a9a.t")))
        assert df.repartition(3).rdd.map(lambda r: 1).sum() == 16281
    assert progress.summaries[-1]["rows"] == 16281
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None     # the caller's group back
