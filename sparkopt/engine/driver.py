"""The driver engine: small data collected once into the driver process and folded there.

When a DataFrame's selected columns (features, label, weight) fit in a memory budget, a fit needs
no Spark job per pass and no resident session: :func:`collect_to_driver` brings the columns to the
driver once through Arrow (``DataFrame.toArrow``), builds the blocks with the very code the
executors run in :func:`~sparkopt.engine.ingest.ingest` (``_build_blocks``, partition by partition,
the same Arrow batches), and returns a :class:`DriverEngine`: a
:class:`~sparkopt.engine.local.LocalEngine` over those blocks. Same blocks, same fold, same
numbers as the tree and resident engines.

:func:`estimate_driver_bytes` says how large the columns would be as float64 rows without a pass
over the data, from the plan statistics Spark keeps for its own choices (broadcast joins; a cached
DataFrame without vector-size metadata: one job reads its first row); ``auto``
compares it with the budget (:data:`DEFAULT_DRIVER_BUDGET_MB`, the estimators' ``maxDriverSizeInMB``).

pyspark is imported inside the functions that need it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from ..blocks import Block
from ..rules import check_param
from .ingest import _build_blocks, _select, _to_csr, _validate_schema, prepare, refuse_problems
from .local import LocalEngine
from .session import is_connect, plan_statistics
from .stats import DataStats, combine_partitions

__all__ = ["DriverEngine", "DriverEstimate", "collect_to_driver", "estimate_driver_bytes", "blocks_to_driver",
           "DEFAULT_DRIVER_BUDGET_MB", "check_budget"]

logger = logging.getLogger("sparkopt")

#: the default budget (MB of float64 data) under which ``engine="auto"`` fits on the driver
DEFAULT_DRIVER_BUDGET_MB = 256.0
_LONG_MAX = 2**63 - 1     # spark.sql.defaultSizeInBytes: what Spark assumes for a plan it cannot size
# the partition of each collected row: a column the blocks never see (appended after the others)
_PARTITION_COLUMN = "__sparkopt_partition"


def check_budget(max_driver_mb: Any) -> float:
    """``max_driver_mb`` as a float, or InputError naming ``maxDriverSizeInMB``."""
    return float(check_param("maxDriverSizeInMB", max_driver_mb))


class DriverEngine(LocalEngine):
    """A :class:`LocalEngine` over blocks collected from Spark into the driver: passes are numpy in
    this process (no Spark job), asynchronous workers are threads (``run_workers``)."""

    kind = "driver"

    def __repr__(self) -> str:
        return (f"DriverEngine(n_rows={self.n_rows}, n_features={self.n_features}, "
                f"num_partitions={self.num_partitions})")


# ==================================================================== the size estimate
@dataclass(frozen=True)
class DriverEstimate:
    """``nbytes``: the selected columns as dense float64 rows (``rows * columns * 8``), None when
    it cannot be estimated without a job (``reason`` says why)."""

    nbytes: int | None
    rows: int | None = None
    columns: int | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.nbytes is None:
            return self.reason
        return (f"{_megabytes(self.nbytes)} ({self.rows} rows x {self.columns} float64 columns, {self.reason})")


def _megabytes(nbytes: float) -> str:
    return f"{nbytes / 2**20:.3g} MB"


def _vector_size(field: Any) -> int | None:
    """The size of a vector column from its ML attribute metadata (LIBSVM reader, VectorAssembler,
    OneHotEncoder set it), None when absent."""
    meta = field.metadata or {}
    attrs = meta.get("ml_attr") or {}
    if isinstance(attrs.get("num_attrs"), int):
        return int(attrs["num_attrs"])
    groups = attrs.get("attrs")
    if isinstance(groups, dict) and groups:
        return sum(len(v) for v in groups.values() if isinstance(v, list))
    if isinstance(meta.get("numFeatures"), int):
        return int(meta["numFeatures"])
    return None


def _first_vector_size(df: Any, column: str) -> int | None:
    """The size of the first vector in ``column`` of ``df`` when ``df`` is cached (one small job
    that reads one row of the cache), else None: without a cache, even one row could cost the
    whole plan (a shuffle below it), which the fit then runs again."""
    level = df.storageLevel
    if not (level.useMemory or level.useDisk):
        return None
    rows = df.select(column).limit(1).collect()
    if not rows or rows[0][0] is None or not hasattr(rows[0][0], "size"):
        return None
    return int(rows[0][0].size)


def _plan_estimate(selected: Any, spec: Any, df: Any = None) -> DriverEstimate:
    """The estimate from ``selected``'s plan statistics; the vector size from the column's ML
    metadata, else (``df`` cached) from its first row."""
    from py4j.protocol import Py4JError

    if spec.is_vector:
        d = _vector_size(selected.schema["features"])
        if d is None and df is not None:
            d = _first_vector_size(df, spec.features)
        if d is None:
            return DriverEstimate(None, reason=f"the size of the vectors in {spec.features!r} is unknown "
                                               "before a pass (no ML attribute metadata, and no cached row "
                                               "to read it from)")
    else:
        d = spec.n_feature_columns
    columns = d + 1 + int(spec.weight is not None)
    unknown = int(selected.sparkSession.conf.get("spark.sql.defaultSizeInBytes", str(_LONG_MAX)))
    if is_connect(selected.sparkSession):
        return _connect_estimate(selected, columns, unknown)
    jdf = selected._jdf
    try:
        stats = jdf.queryExecution().optimizedPlan().stats()
        size = int(str(stats.sizeInBytes()))
        if size >= min(unknown, _LONG_MAX):
            return _unsized()
        row_count = stats.rowCount()
        if row_count.isDefined():
            rows, source = int(str(row_count.get())), "row count from Spark's plan statistics"
        else:
            # Spark sizes a plan as rows x (8 + the columns' default sizes): invert that
            rows = math.ceil(size / (8 + int(jdf.schema().defaultSize())))
            source = "rows implied by Spark's plan size estimate"
    except (Py4JError, ValueError) as err:
        return DriverEstimate(None, reason=f"Spark's plan statistics are unavailable ({type(err).__name__})")
    return DriverEstimate(rows * columns * 8, rows, columns, source)


def _unsized() -> DriverEstimate:
    return DriverEstimate(None, reason="Spark has no size statistics for this plan (e.g. a DataFrame "
                                       "made from an RDD or a list of rows)")


def _connect_estimate(selected: Any, columns: int, unknown: int) -> DriverEstimate:
    """The estimate from the statistics a Connect server prints for ``explain(mode="cost")`` (its
    client has no py4j handle on the plan): the same numbers, sizes rounded to 3 digits."""
    try:
        found = plan_statistics(selected._explain_string(mode="cost"))
    except Exception as err:   # an older server, or a plan it cannot explain
        return DriverEstimate(None, reason=f"the Connect server gave no plan statistics ({type(err).__name__})")
    if found is None:
        return DriverEstimate(None, reason="the Connect server's plan explanation holds no statistics")
    size, rows = found
    if size >= 0.99 * min(unknown, _LONG_MAX):     # printed rounded: 8.0 EiB is Long.MaxValue
        return _unsized()
    if rows is not None:
        return DriverEstimate(rows * columns * 8, rows, columns, "row count from Spark's plan statistics (Connect)")
    rows = math.ceil(size / (8 + _default_row_size(selected.schema)))
    return DriverEstimate(rows * columns * 8, rows, columns, "rows implied by Spark's plan size estimate (Connect)")


def _default_row_size(schema: Any) -> int:
    """Spark's ``StructType.defaultSize`` of the selected columns (what it sizes a row by), for the
    types they can have: doubles, and a vector's struct<byte, int, array<int>, array<double>>."""
    return sum(8 if f.dataType.typeName() == "double" else 1 + 4 + 4 + 8 for f in schema.fields)


def estimate_driver_bytes(df: Any, features_col: str | Sequence[str] = "features", label_col: str = "label",
                          weight_col: str | None = None, *, num_partitions: int | None = None) -> DriverEstimate:
    """The selected columns' size as dense float64 rows, estimated without a pass over the data.

    Rows come from the optimized plan's statistics (Spark's own estimate, the one behind its
    broadcast joins): the exact row count where Spark knows it (a ``limit``, local data, analyzed
    tables), else the rows its size estimate implies (file sources: bytes on disk; a materialized
    cache: its in-memory size, high for vector columns: 7x on a cached letter.scale head). Columns
    are the vector size from the column's ML attribute metadata (without it, from the first row of
    a cached ``df``: one small job; an uncached ``df`` without it is not estimated) or the number
    of assembled columns, plus label and weight; sparse vectors are counted as
    dense, so the estimate errs high for them. It can be off by a small factor either way (e.g.
    ``spark.range`` omits the per-row overhead: 2x low); set the engine explicitly when it matters.
    """
    spec = _validate_schema(df, features_col, label_col, weight_col)
    return _plan_estimate(_select(df, spec, num_partitions), spec, df)


def driver_choice(df: Any, features_col: Any, label_col: str, weight_col: str | None, max_driver_mb: Any, *,
                  num_partitions: int | None = None) -> tuple[bool, str]:
    """(fit on the driver?, the reason) for ``engine="auto"``."""
    budget = check_budget(max_driver_mb)
    estimate = estimate_driver_bytes(df, features_col, label_col, weight_col, num_partitions=num_partitions)
    limit = budget * 2**20
    if estimate.nbytes is None:
        return False, f"the data's size is not known without a pass: {estimate.reason}"
    if estimate.nbytes <= limit:
        return True, (f"the selected columns are estimated at {estimate.describe()}, within "
                      f"maxDriverSizeInMB={budget:g}: collected once, every pass runs in the driver process")
    return False, (f"the selected columns are estimated at {estimate.describe()}, above "
                   f"maxDriverSizeInMB={budget:g}")


# ==================================================================== collecting
def _split_by_partition(table: Any, partition_index: int) -> dict[int, list]:
    """The collected table's record batches per partition (the pid column dropped), in order."""
    parts: dict[int, list] = {}
    for batch in table.to_batches():
        if batch.num_rows == 0:
            continue
        pids = batch.column(partition_index).to_numpy(zero_copy_only=False)
        data = batch.drop_columns([_PARTITION_COLUMN])
        # rows arrive in partition order; a batch normally holds one partition's rows
        cuts = np.flatnonzero(np.diff(pids)) + 1
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(pids)]):
            parts.setdefault(int(pids[start]), []).append(data.slice(int(start), int(stop - start)))
    return parts


def _to_arrow(frame: Any) -> Any:
    if hasattr(frame, "toArrow"):
        return frame.toArrow()
    import pyarrow as pa  # pyspark < 4

    return pa.Table.from_batches(frame._collect_as_arrow())


def collect_to_driver(
    df: Any,
    features_col: str | Sequence[str] = "features",
    label_col: str = "label",
    weight_col: str | None = None,
    *,
    dense: bool | None = None,
    max_block_bytes: int = 64 * 2**20,
    num_partitions: int | None = None,
    depth: int = 2,
    offset_col: str | None = None,
    fold_col: str | None = None,
) -> DriverEngine:
    """Collect the selected columns of ``df`` into the driver (one Spark job: ``toArrow``) and
    return a :class:`DriverEngine` over the same blocks :func:`~sparkopt.engine.ingest.ingest`
    would build (same partitions, same Arrow batches, same block boundaries), with the same checks
    and :class:`~sparkopt.errors.InputError` messages. Parameters as :func:`ingest`'s.

    Memory: the Arrow table and the blocks built from it (about twice the data) at the peak; the
    blocks alone after."""
    from pyspark.sql import functions as F

    spec, selected = prepare(df, features_col, label_col, weight_col, offset_col, dense, max_block_bytes,
                             num_partitions, fold_col)
    table = _to_arrow(selected.withColumn(_PARTITION_COLUMN, F.spark_partition_id()))
    batches = _split_by_partition(table, table.schema.get_field_index(_PARTITION_COLUMN))
    del table
    # the partitions that returned rows; asking the plan for its partition count would run its
    # shuffle stages under adaptive execution (trailing empty partitions hold nothing anyway)
    n_parts = max([num_partitions or 0, *(p + 1 for p in batches)])
    blocks: list[list[Block]] = []
    reported: list[list[DataStats]] = []
    for p in range(n_parts):
        built = list(_build_blocks(iter(batches.pop(p, [])), spec, dense, int(max_block_bytes)))
        blocks.append([b for b, _ in built if b is not None])
        reported.append([s for _, s in built])
    stats = combine_partitions(reported, n_features=0 if spec.is_vector else spec.n_feature_columns)
    refuse_problems(stats, spec)
    if stats.n_dense_blocks and stats.n_sparse_blocks:
        # partitions disagreed (only dense vectors in some): one kind, as ingest converts them
        blocks = [[_to_csr(b) for b in part] for part in blocks]
        stats = replace(stats, n_sparse_blocks=stats.n_blocks, n_dense_blocks=0)
    logger.info("sparkopt: collected %d rows x %d features into the driver (%s in %d partitions)", stats.n_rows,
                stats.n_features, _megabytes(_held_bytes(blocks)), n_parts)
    return DriverEngine(blocks, stats, depth)


def blocks_to_driver(blocks_rdd: Any, stats: DataStats, depth: int = 2) -> DriverEngine:
    """A DriverEngine over blocks already ingested into a Spark cache (one job collects them, in
    partition order)."""
    return DriverEngine(blocks_rdd.glom().collect(), stats, depth)


def _held_bytes(partitions: list[list[Block]]) -> int:
    total = 0
    for part in partitions:
        for b in part:
            X = b.X
            total += (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) if b.is_sparse else X.nbytes
            total += b.y.nbytes + b.w.nbytes + sum(0 if a is None else a.nbytes for a in (b.offset, b.fold))
    return total
