"""The ingest cache: blocks ingested from a DataFrame, kept for the next fit of the same data (a
regularization path, a grid search), and `clear_cache`, which releases them."""
from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

from ..engine import TreeEngine, ingest, make_engine


class EngineCache:
    """Ingested blocks reused across fits of the same DataFrame (a regularization path, a grid
    search): keyed by the DataFrame's semantic plan hash and the columns, bounded LRU; evicted
    entries are unpersisted. `sparkopt.ml.clear_cache()` releases everything."""

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._entries: "OrderedDict[tuple, tuple[Any, TreeEngine]]" = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(df, features_col, label_col, weight_col, num_partitions):
        try:
            plan = df.semanticHash()
        except Exception:   # Spark Connect or older: fall back to object identity
            plan = ("id", id(df))
        return (plan, df.sparkSession.sparkContext.applicationId, str(features_col), label_col,
                weight_col, num_partitions)

    def get(self, df, features_col, label_col, weight_col, num_partitions, depth,
            engine: str = "auto") -> tuple[TreeEngine, float]:
        """A fresh engine of the requested kind over the (cached) blocks, and the ingest seconds."""
        key = self._key(df, features_col, label_col, weight_col, num_partitions)
        with self._lock:
            for stale in [k for k, (ref, _) in self._entries.items() if ref() is None]:
                self._entries.pop(stale)[1].unpersist()      # its DataFrame is gone: free the blocks
            hit = self._entries.get(key)
            if hit is not None and hit[0]().sameSemantics(df):
                self._entries.move_to_end(key)
                cached = hit[1]
                return make_engine(cached.rdd, cached.stats, depth, engine), 0.0
        start = time.perf_counter()
        rdd, stats = ingest(df, features_col, label_col, weight_col, num_partitions=num_partitions)
        seconds = time.perf_counter() - start
        with self._lock:
            self._entries[key] = (weakref.ref(df), TreeEngine(rdd, stats, depth))
            while len(self._entries) > self.capacity:
                _, (_, old) = self._entries.popitem(last=False)
                old.unpersist()
        return make_engine(rdd, stats, depth, engine), seconds

    def clear(self) -> None:
        with self._lock:
            for _, engine in self._entries.values():
                engine.unpersist()
            self._entries.clear()


ENGINE_CACHE = EngineCache()


def clear_cache() -> None:
    """Unpersist every block set sparkopt keeps for reuse between fits."""
    ENGINE_CACHE.clear()
