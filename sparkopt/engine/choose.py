"""Which engine evaluates a fit: ``tree`` (one Spark job per pass), ``resident`` (blocks held in
long-running barrier tasks) or ``auto``."""
from __future__ import annotations

import logging
from typing import Any, Optional

from ..errors import InputError
from .resident import ResidentEngine, task_slots
from .stats import DataStats
from .tree import TreeEngine

__all__ = ["ENGINES", "make_engine", "resident_unavailable"]

ENGINES = ("auto", "tree", "resident")
logger = logging.getLogger("sparkopt")


def resident_unavailable(blocks_rdd: Any) -> Optional[str]:
    """Why ``auto`` should not use the resident engine for this RDD (None when it can)."""
    sc = blocks_rdd.context
    if sc.getConf().get("spark.dynamicAllocation.enabled", "false").strip().lower() == "true":
        return "dynamic allocation is on, and barrier tasks need a fixed set of executors"
    slots = task_slots(sc)
    partitions = blocks_rdd.getNumPartitions()
    if slots < 1:
        return "no task slot is available yet"
    if partitions > slots:
        return (f"{partitions} partitions but {slots} task slots, so they cannot all run at once "
                f"(numPartitions={slots} makes the data resident; engine='resident' regroups them with one shuffle)")
    return None


def make_engine(blocks_rdd: Any, stats: DataStats, depth: int = 2, engine: str = "auto", **resident_options: Any):
    """A TreeEngine or ResidentEngine over ``blocks_rdd`` (see :func:`~sparkopt.engine.ingest`)."""
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    fallback = engine == "auto"
    if engine == "auto":
        reason = resident_unavailable(blocks_rdd)
        if reason is not None:
            logger.info("sparkopt: engine='auto' uses the tree engine: %s", reason)
            engine = "tree"
        else:
            engine = "resident"
    if engine == "tree":
        return TreeEngine(blocks_rdd, stats, depth)
    # under auto, tasks that cannot reach the driver make the engine run as the tree engine
    return ResidentEngine(blocks_rdd, stats, depth, **{"fallback": fallback, **resident_options})
