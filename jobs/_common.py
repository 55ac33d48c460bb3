"""What the jobs share: the Spark session, the one-line failure report and exit status, reading a
dataset given on the command line, and shipping job code to the executors.

The jobs run as ``python jobs/x.py`` or ``spark-submit jobs/x.py``; either way ``jobs/`` is on
``sys.path`` and ``import _common`` finds this module.
"""
from __future__ import annotations

import argparse
import os
import sys
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
