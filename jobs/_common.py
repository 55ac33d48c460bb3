"""What the jobs share: the Spark session, the one-line failure report and exit status, reading a
dataset given on the command line, and shipping job code to the executors. Paths, file systems and
output directories are _files.py's.

The jobs run as ``python jobs/x.py`` or ``spark-submit jobs/x.py``; either way ``jobs/`` is on
``sys.path`` and ``import _common`` finds this module.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from types import ModuleType
from typing import Optional, Sequence

FORMATS = ("libsvm", "parquet", "csv")
EXIT_USAGE = 2        # a failure the user can fix (arguments, paths, data): one line on stderr
EXIT_FAILURE = 1      # anything else (a JVM or Python worker failure): one line too


class JobError(Exception):
    """A failure the user can fix; reported as one line."""


# ==================================================================== the Spark session
def choose_master(requested: Optional[str], preset: Optional[str], default: str) -> str:
    """The master a job runs on: ``requested`` (its --master) when given, else ``preset`` (the
    master of a JVM that spark-submit started for this process), else the job's ``default``."""
    return requested or preset or default


def preset_master() -> Optional[str]:
    """spark.master of the JVM this process was started by (spark-submit, the pyspark shell), or
    None when there is none and this process will start its own. The JVM's conf is only visible
    once connected to it: a SparkConf read before that is empty even under spark-submit --master.
    A JVM this process starts itself always reports a master (spark-submit's local[*] default),
    so it is not asked: the job's own default applies."""
    return _jvm_conf().get("spark.master")


def _conf_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--conf takes KEY=VALUE, got {text!r}")
    return key.strip(), value


def add_spark_arguments(parser: argparse.ArgumentParser, default_master: str, remote: bool = True) -> None:
    """--master and --conf KEY=VALUE (repeatable), as every job takes them; --remote for the jobs
    that run on a Spark Connect session."""
    parser.add_argument("--master", default=None,
                        help=f"Spark master; default: the one spark-submit set, else {default_master}")
    if remote:
        parser.add_argument("--remote", default=None, metavar="sc://HOST:PORT",
                            help="run on a Spark Connect server instead of starting a driver (default: the "
                                 "SPARK_REMOTE environment variable when set); not with --master")
    parser.add_argument("--conf", dest="confs", action="append", default=[], type=_conf_pair, metavar="KEY=VALUE",
                        help="a Spark setting for the session the job starts (as spark-submit's --conf; repeatable)")


def _jvm_conf() -> dict:
    """The settings of the JVM spark-submit started for this process (empty when there is none)."""
    from pyspark import SparkConf, SparkContext

    if SparkContext._gateway is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        return {}
    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


#: what every job's session has unless the user's --conf or spark-submit says otherwise: Spark's
#: console progress bar would interleave with the per-iteration log and the one-line reports
JOB_DEFAULTS = {"spark.ui.showConsoleProgress": "false"}


@contextlib.contextmanager
def job_session(app_name: str, master: Optional[str] = None, default_master: str = "local[*]",
                confs: Sequence[tuple[str, str]] = (), defaults: Optional[dict] = None,
                remote: Optional[str] = None, connect: bool = True):
    """The job's SparkSession, stopped on exit only if this call started it.

    A process that already has an active session (a notebook or a test calling ``main()``) lends
    it: its settings are left as they are and it stays running. Otherwise a session starts on
    ``choose_master(master, the spark-submit master, default_master)`` (``--conf
    spark.master=...`` counts as a requested master) with the user's ``confs``; ``defaults`` (the
    benchmark's sizing) and :data:`JOB_DEFAULTS` apply only to keys neither ``confs`` nor
    spark-submit set. Nothing is forced on the user's settings. JVM sizing (spark.driver.memory)
    takes effect only when this call starts the JVM, not under spark-submit.

    ``remote`` (else the ``SPARK_REMOTE`` environment variable, as pyspark reads it) makes the
    job a Spark Connect client of that server: ``confs`` then set the session's runtime settings,
    and nothing starts or stops a driver here. A job that needs the driver's JVM (``connect=False``)
    refuses a Connect URL with JobError."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        if confs:
            raise JobError(f"--conf {confs[0][0]}=... cannot apply: this process already runs a Spark session "
                           f"(set it on that session instead)")
        yield active
        return
    remote = remote or os.environ.get("SPARK_REMOTE") or None
    if remote is not None and not connect:
        raise JobError(f"{app_name} needs a classic Spark driver (it uses the JVM's file system or RDDs), but "
                       f"SPARK_REMOTE={remote} asks for a Spark Connect session: unset it for this job")
    if remote is not None:
        if master is not None:
            raise JobError(f"--master {master} and --remote {remote} name two different drivers: give one")
        with _connect_session(remote, app_name, confs) as spark:
            yield spark
        return
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    given = dict(confs)
    submitted = _jvm_conf()
    builder = SparkSession.builder.master(
        choose_master(master or given.pop("spark.master", None), submitted.get("spark.master"), default_master))
    if "spark.app.name" not in submitted and "spark.app.name" not in given:
        builder = builder.appName(app_name)
    for key, value in {**JOB_DEFAULTS, **(defaults or {})}.items():
        if key not in given and key not in submitted:
            builder = builder.config(key, value)
    for key, value in given.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        yield spark
    finally:
        spark.stop()


@contextlib.contextmanager
def _connect_session(remote: str, app_name: str, confs: Sequence[tuple[str, str]]):
    from pyspark.sql import SparkSession

    if not remote.startswith("sc://"):
        raise JobError(f"--remote must be a Spark Connect URL sc://HOST:PORT, got {remote!r}")
    builder = SparkSession.builder.remote(remote).appName(app_name)
    for key, value in {**JOB_DEFAULTS, **dict(confs)}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        yield spark
    finally:
        spark.stop()     # this client's session; the server and its other sessions keep running


CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


@contextlib.contextmanager
def local_connect_server(settings: Optional[dict] = None, log_path: Optional[str] = None, master: str = "local[2]",
                         start_timeout: float = 180.0):
    """A Spark Connect server from the installed pyspark (``spark-submit --class
    SparkConnectServer``, a JVM of its own) on a free loopback port; yields the port, stops the
    server (its whole process group) on exit. ``settings`` are its ``--conf`` values; its output
    goes to ``log_path`` (else is dropped). Raises JobError, with the log's tail, when it does not
    start within ``start_timeout`` seconds."""
    import signal
    import socket
    import subprocess
    import time

    import pyspark

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
            "spark.connect.grpc.binding.address": "127.0.0.1", "spark.connect.grpc.binding.port": str(port),
            "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
            "spark.pyspark.python": sys.executable, **(settings or {})}
    command = [os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"), "--class",
               CONNECT_SERVER_CLASS, "--master", master]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    env.pop("SPARK_REMOTE", None)
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    try:
        server = subprocess.Popen(command + ["spark-internal"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    finally:
        if log_path:
            out.close()

    def listening() -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        deadline = time.monotonic() + start_timeout
        while not listening():
            if server.poll() is not None or time.monotonic() > deadline:
                tail = open(log_path).read()[-3000:] if log_path else "(no log kept)"
                raise JobError(f"the Spark Connect server did not start (exit status {server.poll()}): {tail}")
            time.sleep(0.25)
        yield port
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def ship_by_value(module: ModuleType) -> None:
    """Make cloudpickle send ``module``'s functions (and its submodules') to the tasks by value:
    ``jobs/`` is on the driver's path but not on the executors', so a reference would not resolve."""
    from pyspark import cloudpickle

    if module.__name__ != "__main__":    # a script's own functions always travel by value
        cloudpickle.register_pickle_by_value(module)


#: what the executors' Python workers import to run a fit (sparkopt's runtime dependencies but
#: pyspark, which Spark puts on their path itself)
EXECUTOR_MODULES = ("sparkopt", "numpy", "scipy", "pyarrow")


def executor_environment(spark, tasks: Optional[int] = None) -> list[dict]:
    """What the executors' Python workers run, from one small job of ``tasks`` tasks (default:
    the default parallelism, at most 64) on a classic session: each distinct interpreter seen,
    with its prefix, version and the file sparkopt was imported from. JobError when a worker
    cannot import sparkopt or one of EXECUTOR_MODULES, naming the module and the interpreter: the
    executors need the environment shipped to them (README: spark-submit, shipping the
    environment)."""
    def probe(_):            # nested: pickled by value (jobs/ is not on the executors' path)
        import importlib
        import sys as worker_sys

        row = {"python": worker_sys.executable, "prefix": worker_sys.prefix,
               "version": ".".join(map(str, worker_sys.version_info[:3])), "sparkopt": None, "missing": None}
        for name in EXECUTOR_MODULES:
            try:
                module = importlib.import_module(name)
            except Exception as err:    # ImportError, or a broken build: either way, named
                row["missing"] = f"{name} ({type(err).__name__}: {err})"
                break
            if name == "sparkopt":
                row["sparkopt"] = module.__file__
        return row

    sc = spark.sparkContext
    n = tasks or max(1, min(sc.defaultParallelism, 64))
    seen: dict[tuple, dict] = {}
    for row in sc.parallelize(range(n), n).map(probe).collect():
        seen.setdefault((row["python"], row["sparkopt"], row["missing"]), row)
    rows = sorted(seen.values(), key=lambda r: (r["python"], str(r["sparkopt"])))
    for row in rows:
        if row["missing"]:
            raise JobError(f"the executors' Python ({row['python']}) cannot import {row['missing']}: ship "
                           f"sparkopt and its dependencies to them (a packed environment with --archives, "
                           f"README: spark-submit)")
    return [{k: v for k, v in row.items() if k != "missing"} for row in rows]


# ==================================================================== failures
def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message ('' when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def report_failure(prog: str, err: BaseException) -> int:
    """Print ``prog: error: <reason>`` on one line of stderr and return the exit status:
    :data:`EXIT_USAGE` for JobError and sparkopt's InputError (they name the problem themselves, as
    argparse's own usage errors, also 2), :data:`EXIT_FAILURE` for anything else (a JVM or Python
    worker failure), whose line also says its type."""
    from sparkopt.errors import InputError

    reason = first_line(err) or type(err).__name__
    usage = isinstance(err, (JobError, InputError))
    kind = "error" if usage else f"error ({type(err).__name__})"
    print(f"{prog}: {kind}: {reason[:500]}", file=sys.stderr)
    return EXIT_USAGE if usage else EXIT_FAILURE


# ==================================================================== datasets named on the command line
def add_dataset_arguments(parser: argparse.ArgumentParser, label_help: str = "label column (CSV / Parquet)") -> None:
    """--format, --label-col and --features-col | --feature-cols, as train.py and predict.py take them."""
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="input format; inferred from the extension when omitted (.parquet, .csv, else libsvm)")
    parser.add_argument("--label-col", default="label", help=label_help)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--features-col", default="features", help="vector features column (Parquet)")
    group.add_argument("--feature-cols", default=None,
                       help="comma-separated numeric columns assembled into the features (CSV / Parquet)")


def dataset_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of read_dataset that add_dataset_arguments' flags give."""
    return dict(fmt=args.format, label_col=args.label_col, features_col=args.features_col,
                feature_cols=args.feature_cols)


def infer_format(path: str, given: Optional[str], store=None, location=None) -> str:
    """``given`` when set, else the format the path's name (or a directory's Parquet parts) implies.
    ``store`` / ``location``: the file system and resolved path to look into (default: the local
    disk for a plain path)."""
    if given:
        return given
    lower = path.lower().rstrip("/")
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".csv") or lower.endswith(".csv.gz"):
        return "csv"
    if store is None and "://" not in path:
        from _files import LocalStore

        store = LocalStore()
    if store is not None:
        location = location if location is not None else store.resolve(path)
        if store.status(location) == "dir" and any(n.endswith(".parquet") for n in store.names(location)):
            return "parquet"
    return "libsvm"


def read_dataset(spark, path: str, *, fmt: Optional[str] = None, label_col: str = "label",
                 features_col: str = "features", feature_cols: Optional[str] = None,
                 weight_col: Optional[str] = None, num_features: Optional[int] = None,
                 binary_labels: bool = False, num_partitions: Optional[int] = None, store=None):
    """(DataFrame, features column, label column) of a LIBSVM file, a Parquet directory or a CSV
    file at ``path`` (plain or a URI) on ``store`` (_files.py; default: the session's file system
    for the path); ``feature_cols`` (comma-separated) are assembled into a vector column
    'features'. With ``binary_labels``, LIBSVM labels are mapped to 0/1 (positive -> 1). Raises
    JobError naming what is missing or unreadable."""
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    from _files import Paths, require_input

    if store is None:
        store = Paths(spark).store(path, "input")
    location = require_input(store, path)
    where = store.spark_path(location) if store is not None else path
    fmt = infer_format(path, fmt, store, location) if store is not None else infer_format(path, fmt)
    try:
        if fmt == "libsvm":
            reader = spark.read.format("libsvm")
            if num_features:
                reader = reader.option("numFeatures", int(num_features))
            df = reader.load(where)
            features, label = "features", "label"
        else:
            df = (spark.read.option("header", True).option("inferSchema", True).csv(where) if fmt == "csv"
                  else spark.read.parquet(where))
            label = label_col
            if feature_cols:
                cols = [c.strip() for c in feature_cols.split(",") if c.strip()]
                missing = [c for c in cols if c not in df.columns]
                if missing:
                    raise JobError(f"feature columns {missing} not found in {path}; columns: {df.columns}")
                df = VectorAssembler(inputCols=cols, outputCol="features", handleInvalid="error").transform(df)
                features = "features"
            else:
                features = features_col
    except JobError:
        raise
    except Exception as err:   # unreadable / malformed input: one line, not a JVM trace
        raise JobError(f"cannot read {path} as {fmt}: {first_line(err)[:300]}") from None
    for role, col in (("label", label), ("features", features), ("weight", weight_col)):
        if col and col not in df.columns:
            raise JobError(f"{role} column {col!r} not found in {path}; columns: {df.columns}")
    if fmt == "libsvm" and binary_labels and label in df.columns:
        # LIBSVM binary sets often use -1/+1; sparkopt's binary models take 0/1 (as MLlib)
        df = df.withColumn(label, F.when(F.col(label) > 0, 1.0).otherwise(0.0))
    if num_partitions:
        df = df.repartition(num_partitions)
    return df, features, label
