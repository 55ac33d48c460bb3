"""Generate a synthetic regression / classification data set on the executors and write it as Parquet.

    python jobs/generate.py --n 1000000 --d 100 --task logistic --output data/synth-1e6
    spark-submit jobs/generate.py --n 4e6 --d 100 --density 0.05 --task poisson --output hdfs:///synth

Columns: ``features`` (pyspark.ml VectorUDT: DenseVector when ``--density`` is 1.0, SparseVector
otherwise) and ``label`` (double: 0/1 for logistic, 0..K-1 for multinomial, a count for poisson, a
real number for linear). The ground-truth coefficients, the arguments and the Spark master the
rows were generated on are written next to the data as ``_generate.json`` (Spark's Parquet reader
skips files starting with ``_``).

How the rows are made, and why it is deterministic: ``spark.range(n, numPartitions=P)`` gives every
partition a fixed slice of row ids; the task only counts its ids and then builds its rows in chunks
of ``CHUNK_ROWS`` from ``numpy.random.default_rng([seed, partition, chunk])`` inside ``mapInArrow``.
Nothing is collected to the driver, and the rows depend only on (seed, n, P) -- not on Arrow batch
sizes or on the order in which tasks run. The ground truth depends on the seed alone.
The data are written under a temporary sibling path and renamed into place at the end, so a failed
job never leaves something that looks complete. Exit status 0 on success; 2 with a one-line reason.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator

import numpy as np

from _common import JobError, add_spark_arguments, job_session, report_failure, ship_by_value
from _files import HadoopStore, discard

TASKS = ("logistic", "linear", "poisson", "multinomial")
CHUNK_ROWS = 4096            # rows drawn from one generator (and emitted as one Arrow batch)
METADATA_FILE = "_generate.json"

# Margin scales: the ground truth is drawn so that the margin x.beta has this standard deviation,
# which keeps logistic problems noisy (not separable) and Poisson counts moderate.
SIGNAL = {"logistic": 2.0, "multinomial": 2.0, "linear": 1.0, "poisson": 0.5}
INTERCEPT = {"logistic": 0.25, "multinomial": 0.0, "linear": 1.0, "poisson": 1.0}


@dataclass(frozen=True)
class Spec:
    """Everything that determines the data (plain values: it is shipped to the executors)."""

    n: int
    d: int
    density: float
    task: str
    classes: int
    seed: int
    num_partitions: int
    noise: float = 1.0       # linear: standard deviation of the Gaussian noise

    @property
    def dense(self) -> bool:
        return self.density >= 1.0

    @property
    def n_outputs(self) -> int:
        return self.classes if self.task == "multinomial" else 1


def check_spec(spec: Spec) -> None:
    if spec.task not in TASKS:
        raise JobError(f"--task must be one of {TASKS}, got {spec.task!r}")
    if spec.n < 1:
        raise JobError(f"--n must be >= 1, got {spec.n}")
    if spec.d < 1:
        raise JobError(f"--d must be >= 1, got {spec.d}")
    if not 0.0 < spec.density <= 1.0:
        raise JobError(f"--density must be in (0, 1], got {spec.density}")
    if spec.task == "multinomial" and spec.classes < 2:
        raise JobError(f"--classes must be >= 2 for multinomial, got {spec.classes}")
    if spec.num_partitions < 1:
        raise JobError(f"--num-partitions must be >= 1, got {spec.num_partitions}")
    if spec.seed < 0:
        raise JobError(f"--seed must be >= 0, got {spec.seed}")


# ==================================================================== numpy: the rows themselves
def ground_truth(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients (K, d), intercepts (K,)) fixed by the seed (K = 1 except multinomial)."""
    rng = np.random.default_rng([spec.seed])   # a different stream from every [seed, p, chunk]
    nnz_per_row = max(spec.d * spec.density, 1.0)
    beta = rng.standard_normal((spec.n_outputs, spec.d)) * (SIGNAL[spec.task] / np.sqrt(nnz_per_row))
    intercept = np.full(spec.n_outputs, INTERCEPT[spec.task])
    if spec.task == "multinomial":
        intercept = 0.5 * rng.standard_normal(spec.n_outputs)
    return beta, intercept


def draw_features(rng: np.random.Generator, m: int, spec: Spec):
    """(m, d) standard normal features: a dense array, or CSR-like (indptr, indices, values) where
    every entry is nonzero with probability ``density``."""
    if spec.dense:
        return rng.standard_normal((m, spec.d))
    # O(nnz) instead of an (m, d) mask: row lengths ~ Binomial(d, density), column indices drawn
    # with replacement and de-duplicated within the row (so a row may end up slightly shorter).
    lengths = rng.binomial(spec.d, spec.density, size=m)
    rows = np.repeat(np.arange(m), lengths)
    cols = rng.integers(0, spec.d, size=rows.size)
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    keep = np.ones(rows.size, dtype=bool)
    keep[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    rows, cols = rows[keep], cols[keep]
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=m), out=indptr[1:])
    values = rng.standard_normal(cols.size)
    return indptr, cols.astype(np.int32), values


def margins(X: Any, spec: Spec, beta: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """(m, K) margins x.beta_k + c_k for dense X or an (indptr, indices, values) triple."""
    if spec.dense:
        return X @ beta.T + intercept
    import scipy.sparse as sp

    indptr, indices, values = X
    csr = sp.csr_matrix((values, indices, indptr), shape=(len(indptr) - 1, spec.d))
    return np.asarray(csr @ beta.T) + intercept


def draw_labels(rng: np.random.Generator, M: np.ndarray, spec: Spec) -> np.ndarray:
    if spec.task == "logistic":
        return (rng.random(M.shape[0]) < 1.0 / (1.0 + np.exp(-M[:, 0]))).astype(np.float64)
    if spec.task == "linear":
        return M[:, 0] + spec.noise * rng.standard_normal(M.shape[0])
    if spec.task == "poisson":
        return rng.poisson(np.exp(np.minimum(M[:, 0], 20.0))).astype(np.float64)
    # multinomial: argmax of margins + Gumbel noise is a draw from the softmax
    return np.argmax(M + rng.gumbel(size=M.shape), axis=1).astype(np.float64)


def chunk_rows(spec: Spec, partition: int, chunk: int, m: int, beta, intercept):
    """The m rows of chunk ``chunk`` of partition ``partition``: (features, labels)."""
    rng = np.random.default_rng([spec.seed, partition, chunk])
    X = draw_features(rng, m, spec)
    y = draw_labels(rng, margins(X, spec, beta, intercept), spec)
    return X, y


def local_rows(spec: Spec, partition_sizes: list[int]):
    """The whole data set in the driver (dense X or CSR, y), identical to what the executors write:
    for tests and for numpy baselines on data that fit in memory."""
    import scipy.sparse as sp

    beta, intercept = ground_truth(spec)
    Xs, ys = [], []
    for p, size in enumerate(partition_sizes):
        for c, start in enumerate(range(0, size, CHUNK_ROWS)):
            X, y = chunk_rows(spec, p, c, min(CHUNK_ROWS, size - start), beta, intercept)
            if not spec.dense:
                indptr, indices, values = X
                X = sp.csr_matrix((values, indices, indptr), shape=(len(indptr) - 1, spec.d))
            Xs.append(X)
            ys.append(y)
    X = np.concatenate(Xs) if spec.dense else sp.vstack(Xs, format="csr")
    return X, np.concatenate(ys)


# ==================================================================== Arrow: rows -> VectorUDT
def _list_array(offsets: np.ndarray, values: Any, element: Any):
    import pyarrow as pa

    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values,
                                    type=pa.list_(pa.field("element", element, False)))


def vector_column(X: Any, spec: Spec):
    """VectorUDT's Arrow layout ``struct<type int8, size int32, indices list<int32>, values
    list<double>>``: type 1 with null size/indices for dense vectors, type 0 for sparse ones."""
    import pyarrow as pa

    fields = [pa.field("type", pa.int8(), False), pa.field("size", pa.int32()),
              pa.field("indices", pa.list_(pa.field("element", pa.int32(), False))),
              pa.field("values", pa.list_(pa.field("element", pa.float64(), False)))]
    if spec.dense:
        m = X.shape[0]
        offsets = np.arange(0, m * spec.d + 1, spec.d, dtype=np.int64)
        children = [pa.array(np.ones(m, dtype=np.int8)), pa.nulls(m, pa.int32()),
                    pa.nulls(m, fields[2].type),
                    _list_array(offsets, pa.array(np.ascontiguousarray(X).ravel()), pa.float64())]
    else:
        indptr, indices, values = X
        m = len(indptr) - 1
        children = [pa.array(np.zeros(m, dtype=np.int8)), pa.array(np.full(m, spec.d, dtype=np.int32)),
                    _list_array(indptr, pa.array(indices), pa.int32()),
                    _list_array(indptr, pa.array(values), pa.float64())]
    return pa.StructArray.from_arrays(children, fields=fields)


def _partition_rows(spec: Spec, beta: np.ndarray, intercept: np.ndarray, batches: Iterator[Any]) -> Iterator[Any]:
    """mapInArrow function: the ids of one partition in, its generated rows out (one batch per chunk)."""
    import pyarrow as pa
    from pyspark import TaskContext

    partition = TaskContext.get().partitionId()
    size = sum(batch.num_rows for batch in batches)   # only the count matters (see module docstring)
    for c, start in enumerate(range(0, size, CHUNK_ROWS)):
        X, y = chunk_rows(spec, partition, c, min(CHUNK_ROWS, size - start), beta, intercept)
        yield pa.RecordBatch.from_arrays([vector_column(X, spec), pa.array(y)], names=["features", "label"])


def output_schema():
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T

    return T.StructType([T.StructField("features", VectorUDT(), False),
                         T.StructField("label", T.DoubleType(), False)])


def synthetic_frame(spark, spec: Spec):
    """The (lazy) DataFrame of ``spec``'s rows, generated on the executors."""
    check_spec(spec)
    ship_by_value(sys.modules[__name__])     # the rows are made in the tasks
    beta, intercept = ground_truth(spec)

    def rows(batches):
        return _partition_rows(spec, beta, intercept, batches)

    return spark.range(0, spec.n, 1, spec.num_partitions).mapInArrow(rows, output_schema())


def partition_sizes(n: int, num_partitions: int) -> list[int]:
    """Rows per partition of ``spark.range(0, n, 1, num_partitions)`` (Spark's RangeExec split)."""
    bounds = [(i * n) // num_partitions for i in range(num_partitions + 1)]
    return [hi - lo for lo, hi in zip(bounds[:-1], bounds[1:])]


# ==================================================================== writing
def metadata(spec: Spec, master: str) -> dict:
    """The record written next to the data: the spec, the ground truth and the Spark master the
    rows were generated on."""
    beta, intercept = ground_truth(spec)
    return {"spec": asdict(spec), "coefficients": beta.tolist(), "intercepts": intercept.tolist(),
            "chunk_rows": CHUNK_ROWS, "generator": "jobs/generate.py", "master": master}


def write_dataset(spark, spec: Spec, output: str, overwrite: bool = False) -> str:
    """Generate ``spec``'s rows and write them to ``output`` (Parquet) through a temporary sibling
    path renamed into place; returns the qualified output path."""
    check_spec(spec)
    fs = HadoopStore.of_session(spark, output, "--output")
    target = fs.resolve(output)
    if fs.status(target) is not None and not overwrite:
        raise JobError(f"output {output} exists (pass --overwrite to replace it)")
    staging = fs.child(fs.parent(target), f".{fs.name(target)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        synthetic_frame(spark, spec).write.parquet(staging)
        fs.write(fs.child(staging, METADATA_FILE), json.dumps(metadata(spec, spark.sparkContext.master)).encode())
        if fs.status(target) is not None:
            fs.delete(target)
        fs.rename(staging, target)
    finally:
        discard(staging, fs)
    return target


def read_metadata(path: str) -> dict | None:
    """The generator's record next to local data (None when absent): lets callers reuse data."""
    try:
        with open(os.path.join(path, METADATA_FILE)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


# ==================================================================== command line
def _count(text: str) -> int:
    """Row / feature counts also as 1e6 or 4_000_000."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(value)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="generate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=_count, required=True, help="number of rows (1e6 notation accepted)")
    p.add_argument("--d", type=_count, required=True, help="number of features")
    p.add_argument("--density", type=float, default=1.0,
                   help="share of nonzero features per row: 1.0 writes dense vectors, < 1 sparse vectors")
    p.add_argument("--task", choices=TASKS, default="logistic", help="label model")
    p.add_argument("--classes", type=int, default=3, help="number of classes (multinomial)")
    p.add_argument("--noise", type=float, default=1.0, help="linear: standard deviation of the label noise")
    p.add_argument("--seed", type=int, default=0, help="fixes the ground truth and (with the partition count) the rows")
    p.add_argument("--num-partitions", type=int, default=None,
                   help="partitions to generate (and files to write); default: spark.default.parallelism")
    p.add_argument("--output", required=True, help="output Parquet directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_spark_arguments(p, "local[*]", remote=False)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        spec = Spec(n=args.n, d=args.d, density=args.density, task=args.task, classes=args.classes,
                    seed=args.seed, num_partitions=args.num_partitions or 1, noise=args.noise)
        check_spec(spec)                      # bad arguments fail before a JVM starts
        with job_session("sparkopt-generate", args.master, "local[*]", args.confs, connect=False) as spark:
            if args.num_partitions is None:
                spec = replace(spec, num_partitions=spark.sparkContext.defaultParallelism)
            target = write_dataset(spark, spec, args.output, overwrite=args.overwrite)
    except Exception as err:   # bad arguments, or a JVM / Python worker failure: one line, not a trace
        return report_failure("generate.py", err)
    kind = "dense" if spec.dense else f"sparse (density {spec.density:g})"
    print(f"wrote {spec.n} rows x {spec.d} {kind} features, task {spec.task}, {spec.num_partitions} partitions "
          f"to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
