"""How blocks are held and combined: ingest a DataFrame, fold blocks on Spark or in the driver.

The engine knows nothing of losses or solvers: it sums ``fn(block, payload)`` over blocks.
Importing this package does not import pyspark (``ingest`` imports it when called).
"""
from __future__ import annotations

from .choose import ENGINES, engine_for, ingest_blocks, make_engine
from .driver import DriverEngine, collect_to_driver, estimate_driver_bytes
from .ingest import ingest
from .local import LocalEngine
from .resident import ResidentEngine, SessionLost, TaskError
from .sharded import ShardedEngine
from .stats import DataStats
from .tree import TreeEngine

__all__ = ["ingest", "ingest_blocks", "make_engine", "engine_for", "ENGINES", "TreeEngine", "ResidentEngine", "ShardedEngine", "LocalEngine",
           "DriverEngine", "collect_to_driver", "estimate_driver_bytes", "DataStats", "SessionLost", "TaskError"]
