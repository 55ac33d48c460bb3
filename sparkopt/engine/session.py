"""What kind of Spark session a DataFrame belongs to, and the facts sparkopt needs from it that a
Spark Connect client has no ``SparkContext`` for.

A classic session runs the driver in this process (py4j, RDDs, broadcasts); a Spark Connect
session (``SparkSession.builder.remote("sc://...")``) is a client of a remote driver, reachable
through DataFrame plans only. sparkopt decides by the session object, never by a flag. Nothing here
imports pyspark (a Connect session's module imports gRPC, which a classic install may not have).
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, Optional

__all__ = ["is_connect", "application_key", "plan_statistics", "arrow_batches_by_rows"]


def is_connect(spark: Any) -> bool:
    """Whether ``spark`` (a SparkSession, or a DataFrame's) is a Spark Connect client session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def application_key(spark: Any) -> str:
    """A string naming the Spark application (and, under Connect, the server-side session whose
    cache holds what sparkopt persisted): what keeps cached data of one application from being
    taken for another's."""
    if is_connect(spark):
        return f"{spark.conf.get('spark.app.id')}/{spark.session_id}"
    return spark.sparkContext.applicationId


_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50, "EiB": 2**60}
_STATISTICS = re.compile(r"Statistics\(sizeInBytes=([0-9.Ee+-]+)\s*([KMGTPE]?i?B)(?:,\s*rowCount=([0-9.Ee+-]+))?")


def plan_statistics(explained: str) -> Optional[tuple[int, Optional[int]]]:
    """(size in bytes, row count or None) of a plan's root, from the optimized logical plan of an
    ``explain(mode="cost")`` text (what a Connect client can ask the server for; a classic session
    reads the same numbers from ``queryExecution().optimizedPlan().stats()``). None when the text
    holds no statistics. Spark prints sizes rounded to 3 significant digits (``64.5 KiB``)."""
    _, marker, rest = explained.partition("== Optimized Logical Plan ==")
    section = (rest if marker else explained).partition("== Physical Plan ==")[0]
    match = _STATISTICS.search(section)
    if match is None:
        return None
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    rows = None if match.group(3) is None else int(round(float(match.group(3))))
    return size, rows


#: Spark's byte limit of an Arrow batch sent to Python (4.0+; default 64 MB), and the value that turns it off
ARROW_MAX_BYTES = "spark.sql.execution.arrow.maxBytesPerBatch"
_NO_BYTE_LIMIT = str(2**31 - 1)


@contextlib.contextmanager
def arrow_batches_by_rows(spark: Any) -> Iterator[None]:
    """Within the block, the Arrow batches Spark sends a ``mapInArrow`` task are cut by rows only
    (``spark.sql.execution.arrow.maxRecordsPerBatch``, 10,000 by default), not also by bytes.

    Why: with a byte limit (``spark.sql.execution.arrow.maxBytesPerBatch``, 64 MB by default)
    Spark 4 asks the Arrow writer for its size after every row, and for a list column (a
    VectorUDT's values) that walks the whole batch so far: quadratic in the batch's rows. Measured
    on 200k x 100 dense vectors (local[2]): the JVM spent 3.3-4.4 s of CPU on a bare ``mapInArrow``
    pass against 1.4-1.5 s for the same batches through ``toArrowBatchRdd``, most of it in
    ``ListVector.setValueCount`` under ``ArrowWriter.sizeInBytes``; the largest value the setting
    takes (2^31 - 1) skips the check. Done only when the rows bound the batches (a positive
    ``maxRecordsPerBatch``) and the user has not set a byte limit of their own; the session's
    setting is put back afterwards (it is the session's: other threads' jobs meanwhile see it too)."""
    conf = spark.conf
    try:
        rows = int(conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"))
        previous = conf.get(ARROW_MAX_BYTES, None)
    except Exception:  # noqa: BLE001 - a Spark without the setting: nothing to change
        yield
        return
    if rows <= 0 or previous not in (None, "64MB", "64m", str(64 * 2**20)):
        yield
        return
    conf.set(ARROW_MAX_BYTES, _NO_BYTE_LIMIT)
    try:
        yield
    finally:
        if previous is None:
            conf.unset(ARROW_MAX_BYTES)
        else:
            conf.set(ARROW_MAX_BYTES, previous)
