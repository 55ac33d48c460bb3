"""What kind of Spark session a DataFrame belongs to, and the facts sparkopt needs from it that a
Spark Connect client has no ``SparkContext`` for.

A classic session runs the driver in this process (py4j, RDDs, broadcasts); a Spark Connect
session (``SparkSession.builder.remote("sc://...")``) is a client of a remote driver, reachable
through DataFrame plans only. sparkopt decides by the session object, never by a flag. Nothing here
imports pyspark (a Connect session's module imports gRPC, which a classic install may not have).
"""
from __future__ import annotations

import re
from typing import Any, Optional

__all__ = ["is_connect", "application_key", "plan_statistics"]


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
