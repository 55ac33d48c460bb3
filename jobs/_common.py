"""What the jobs share: the Spark session, the one-line failure report and exit status, reading a
dataset given on the command line, output directories (marked, replaced safely), and shipping job
code to the executors.

The jobs run as ``python jobs/x.py`` or ``spark-submit jobs/x.py``; either way ``jobs/`` is on
``sys.path`` and ``import _common`` finds this module.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Optional

FORMATS = ("libsvm", "parquet", "csv")
EXIT_FAILURE = 2      # every job: 0 on success, 2 with a one-line reason on stderr


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
    from pyspark import SparkConf, SparkContext

    if SparkContext._gateway is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    SparkContext._ensure_initialized()
    return SparkConf().get("spark.master", None)


def spark_session(app_name: str, master: Optional[str] = None, default_master: str = "local[*]",
                  config: Optional[dict] = None):
    """A SparkSession on ``choose_master(master, preset_master(), default_master)`` with ``config``
    set and the log level at ERROR. Settings that size the JVM (spark.driver.memory) take effect
    only when this call starts the JVM, not under spark-submit."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name).master(choose_master(master, preset_master(), default_master))
    for key, value in (config or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


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
    """Print ``prog: error: <reason>`` on one line of stderr and return the failure exit status.
    JobError and sparkopt's InputError name the problem themselves; anything else (a JVM or Python
    worker failure) also says its type."""
    from sparkopt.errors import InputError

    reason = first_line(err) or type(err).__name__
    kind = "error" if isinstance(err, (JobError, InputError)) else f"error ({type(err).__name__})"
    print(f"{prog}: {kind}: {reason[:500]}", file=sys.stderr)
    return EXIT_FAILURE


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
