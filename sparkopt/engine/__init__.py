"""How blocks are held and combined: ingest a DataFrame, fold blocks on Spark or in memory.

The engine knows nothing of losses or solvers: it sums ``fn(block, payload)`` over blocks.
Importing this package does not import pyspark (``ingest`` imports it when called).
"""
from __future__ import annotations

from .ingest import ingest
from .local import LocalEngine
from .stats import DataStats
from .tree import TreeEngine

__all__ = ["ingest", "TreeEngine", "LocalEngine", "DataStats"]
