"""What the jobs share: the Spark session, the one-line failure report and exit status, reading a
dataset given on the command line, output directories (marked, replaced safely), and shipping job
code to the executors.

The jobs run as ``python jobs/x.py`` or ``spark-submit jobs/x.py``; either way ``jobs/`` is on
``sys.path`` and ``import _common`` finds this module.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
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


def infer_format(path: str, given: Optional[str]) -> str:
    """``given`` when set, else the format the path's name (or a directory's Parquet parts) implies."""
    if given:
        return given
    lower = path.lower().rstrip("/")
    if lower.endswith(".parquet") or (os.path.isdir(path) and any(Path(path).glob("*.parquet"))):
        return "parquet"
    if lower.endswith(".csv") or lower.endswith(".csv.gz"):
        return "csv"
    return "libsvm"


def read_dataset(spark, path: str, *, fmt: Optional[str] = None, label_col: str = "label",
                 features_col: str = "features", feature_cols: Optional[str] = None,
                 weight_col: Optional[str] = None, num_features: Optional[int] = None,
                 binary_labels: bool = False, num_partitions: Optional[int] = None):
    """(DataFrame, features column, label column) of a LIBSVM file, a Parquet directory or a CSV
    file; ``feature_cols`` (comma-separated) are assembled into a vector column 'features'. With
    ``binary_labels``, LIBSVM labels are mapped to 0/1 (positive -> 1). Raises JobError naming what
    is missing or unreadable."""
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import functions as F

    if not os.path.exists(path) and "://" not in path:
        raise JobError(f"input not found: {path}")
    if os.path.isfile(path) and not os.access(path, os.R_OK):
        raise JobError(f"input not readable: {path}")
    fmt = infer_format(path, fmt)
    try:
        if fmt == "libsvm":
            reader = spark.read.format("libsvm")
            if num_features:
                reader = reader.option("numFeatures", int(num_features))
            df = reader.load(path)
            features, label = "features", "label"
        else:
            df = (spark.read.option("header", True).option("inferSchema", True).csv(path) if fmt == "csv"
                  else spark.read.parquet(path))
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


# ==================================================================== output directories
#: every output a job writes carries this file (JSON); only a directory with it is ever replaced.
#: The leading "_" keeps Spark's readers from taking it for data (as _SUCCESS).
OUTPUT_MARKER = "_SPARKOPT_OUTPUT"
_PENDING_MARKER = OUTPUT_MARKER + ".pending"
OUTPUT_FORMAT = "sparkopt-output"
_MAX_MARKER_BYTES = 2**20


def _read_marker(path: Path) -> Optional[dict]:
    """The marker file's JSON when `path` is a regular file holding sparkopt's marker, else None."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > _MAX_MARKER_BYTES:
            return None
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == OUTPUT_FORMAT else None


def is_sparkopt_output(directory: Path) -> bool:
    """True when `directory` is a real directory (not a symlink) carrying a complete output's marker."""
    return directory.is_dir() and not directory.is_symlink() and _read_marker(directory / OUTPUT_MARKER) is not None


def _leftovers(output: Path) -> dict[str, list[Path]]:
    """This output's staging ('new') and moved-aside ('old') siblings that a killed run left,
    recognised by name and by a marker inside (a directory merely named like one is not ours)."""
    pattern = re.compile(r"^\." + re.escape(output.name) + r"\.sparkopt-(new|old)-[0-9a-f]{12}$")
    found: dict[str, list[Path]] = {"new": [], "old": []}
    try:
        siblings = list(output.parent.iterdir())
    except OSError:
        return found
    for sibling in siblings:
        match = pattern.match(sibling.name)
        if not match or sibling.is_symlink() or not sibling.is_dir():
            continue
        complete = _read_marker(sibling / OUTPUT_MARKER) is not None
        staged = match.group(1) == "new" and (sibling / _PENDING_MARKER).is_file()
        # an empty directory moved aside (empty targets are accepted) holds nothing to lose
        if complete or staged or (match.group(1) == "old" and not any(sibling.iterdir())):
            found[match.group(1)].append(sibling)
    return found


def _newest(directories: list[Path]) -> Path:
    return max(directories, key=lambda d: (_read_marker(d / OUTPUT_MARKER) or {}).get("created", 0.0))


def check_output_target(output) -> Path:
    """The absolute path of `output` once it is safe to replace: absent, an empty directory, or a
    sparkopt output (it carries OUTPUT_MARKER). Refuses (JobError naming the path) the working
    directory or one of its parents (`--output .`), a symbolic link, a file, and any non-empty
    directory without the marker. Then recovers what a killed run left beside it: with the output
    path missing, the newest complete staged or moved-aside output is put back in place; every
    other leftover of this output is deleted."""
    target = Path(os.path.abspath(os.fspath(output) or "."))
    cwd = Path.cwd().resolve()
    resolved = target.resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise JobError(f"--output {target} is the working directory or one of its parents; "
                       f"refusing to replace it: name a new directory")
    if target.is_symlink():
        raise JobError(f"--output {target} is a symbolic link; refusing to replace it: name a directory")
    if target.exists():
        if not target.is_dir():
            raise JobError(f"--output {target} exists and is not a directory; refusing to replace it")
        if not is_sparkopt_output(target) and any(target.iterdir()):
            raise JobError(f"--output {target} is not a sparkopt output (no {OUTPUT_MARKER} file) and is not empty; "
                           f"refusing to replace it: name another directory or remove it yourself")
    left = _leftovers(target)
    if not target.exists():
        complete_new = [d for d in left["new"] if is_sparkopt_output(d)]
        restore = _newest(complete_new) if complete_new else (_newest(left["old"]) if left["old"] else None)
        if restore is not None:
            os.replace(restore, target)
    for directory in left["new"] + left["old"]:
        if directory.exists():
            shutil.rmtree(directory)
    return target


def new_output(output, job: str, metadata: Optional[dict] = None) -> Path:
    """A fresh staging directory beside `output` (same parent, so the swap is a rename) for a run
    of `job` to write into; `metadata` goes into the marker. Checks and recovers the target first
    (check_output_target). Finish with replace_output; until then the staging is unfinished."""
    target = check_output_target(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.sparkopt-new-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    marker = {"format": OUTPUT_FORMAT, "version": 1, "job": job, "created": time.time(), **(metadata or {})}
    (staging / _PENDING_MARKER).write_text(json.dumps(marker, indent=2, default=str))
    return staging


def replace_output(staging: Path, output) -> Path:
    """Put the finished `staging` (from new_output) in place of `output`: mark it complete, move
    the old output aside, rename the new one in, delete the old one. A failure before the new one
    is in moves the old one back; a kill leaves a complete output, old or new, at the path or
    beside it, which the next check_output_target puts back and cleans up."""
    target = Path(os.path.abspath(os.fspath(output)))
    pending = staging / _PENDING_MARKER
    marker = json.loads(pending.read_text())
    with open(staging / OUTPUT_MARKER, "w") as fh:
        json.dump({**marker, "completed": time.time()}, fh, indent=2, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    pending.unlink()
    aside = None
    if target.exists() or target.is_symlink():
        if target.is_symlink() or not (is_sparkopt_output(target) or (target.is_dir() and not any(target.iterdir()))):
            raise JobError(f"--output {target} is not a sparkopt output (no {OUTPUT_MARKER} file); "
                           f"refusing to replace it")
        aside = target.parent / f".{target.name}.sparkopt-old-{uuid.uuid4().hex[:12]}"
        os.replace(target, aside)
    try:
        os.replace(staging, target)
    except BaseException:
        if aside is not None and not target.exists():
            os.replace(aside, target)
        raise
    from sparkopt.solvers.checkpoint import fsync_directory

    fsync_directory(target.parent)
    if aside is not None:
        shutil.rmtree(aside)
    return target
