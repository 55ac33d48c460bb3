"""The ingest cache: data ingested from a DataFrame (blocks in a Spark cache, or collected into the
driver), kept for the next fit of the same data (a regularization path, a grid search), and
`clear_cache`, which releases them."""
from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

from ..engine import DriverEngine, collect_to_driver, make_engine
from ..engine.choose import check_session_engine, fused_load, ingest_blocks, no_channel, use_driver
from ..engine.compression import Compression
from ..engine.fused import fused_source
from ..engine.session import application_key
from ..engine.driver import DEFAULT_DRIVER_BUDGET_MB


class EngineCache:
    """Ingested data reused across fits of the same DataFrame (a regularization path, a grid
    search): keyed by the DataFrame's semantic plan hash, the columns and where the data are held
    (Spark cache or driver), bounded LRU; evicted entries are released (Spark blocks unpersisted,
    driver blocks dropped). `sparkopt.ml.clear_cache()` releases everything. Thread-safe, and
    one ingest per key: threads asking for data another thread is ingesting wait for it.
    Every `get` returns an engine of its own (own counters) over the shared data, so concurrent
    fits never share an engine object."""

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._entries: "OrderedDict[tuple, tuple[Any, Any]]" = OrderedDict()
        self._ingesting: dict[tuple, threading.Event] = {}     # key -> set when its ingest ends
        self._lock = threading.Lock()

    @staticmethod
    def _key(df, features_col, label_col, weight_col, num_partitions, on_driver, offset_col=None, fold_col=None):
        try:
            plan = df.semanticHash()
        except Exception:   # older Spark: fall back to object identity
            plan = ("id", id(df))
        return (plan, application_key(df.sparkSession), str(features_col), label_col,
                weight_col, num_partitions, "driver" if on_driver else "spark", offset_col, fold_col)

    @staticmethod
    def _fresh(cached, depth, engine, model_values=None, compression="none"):
        """A new engine (own counters) over a cache entry's data (``model_values(stats)``: the
        model's size, which ``auto`` compares with the sharding budget; ``compression``: the
        resident engine's channel)."""
        if isinstance(cached, DriverEngine):
            no_channel(Compression.of(compression), "driver")
            return DriverEngine(cached.collect_blocks(), cached.stats, depth)
        size = 0 if model_values is None else int(model_values(cached.stats))
        return make_engine(cached.blocks, cached.stats, depth, engine, model_values=size, compression=compression)

    def get(self, df, features_col, label_col, weight_col, num_partitions, depth,
            engine: str = "auto", max_driver_mb: float = DEFAULT_DRIVER_BUDGET_MB,
            offset_col: str | None = None, fold_col: str | None = None,
            model_values: Any = None, compression: Any = "none") -> tuple[Any, float]:
        """A fresh engine of the requested kind over the (cached) data, and the ingest seconds;
        with `offset_col` the blocks carry that column as their offset (a GLM's offsetCol), with
        `fold_col` as their fold ids (a cross-validation's foldCol); `compression` (a
        Compression) for the resident engine's channel."""
        check_session_engine(df, engine)
        on_driver = use_driver(df, features_col, label_col, weight_col, engine, max_driver_mb, num_partitions)
        key = self._key(df, features_col, label_col, weight_col, num_partitions, on_driver, offset_col, fold_col)
        while True:
            with self._lock:
                for stale in [k for k, (ref, _) in self._entries.items() if ref() is None]:
                    self._entries.pop(stale)[1].unpersist()      # its DataFrame is gone: free the blocks
                hit = self._entries.get(key)
                if hit is not None and hit[0]() is not None and hit[0]().sameSemantics(df):
                    self._entries.move_to_end(key)
                    return self._fresh(hit[1], depth, engine, model_values, compression), 0.0
                running = self._ingesting.get(key)
                if running is None:
                    self._ingesting[key] = threading.Event()
                    break
            # another thread is ingesting these data (concurrent fits of one grid): wait for it,
            # then take its entry (or, if its ingest failed, ingest here)
            running.wait()
        try:
            start = time.perf_counter()
            if on_driver:
                cached = collect_to_driver(df, features_col, label_col, weight_col, num_partitions=num_partitions,
                                           depth=depth, offset_col=offset_col, fold_col=fold_col)
            elif fused_load(df, engine, num_partitions):
                # the resident session's tasks build the blocks themselves: keep the statistics only
                cached = fused_source(df, features_col, label_col, weight_col, num_partitions=num_partitions,
                                      offset_col=offset_col, fold_col=fold_col)
            else:
                cached = make_engine(*ingest_blocks(df, features_col, label_col, weight_col,
                                                    num_partitions=num_partitions, offset_col=offset_col,
                                                    fold_col=fold_col),
                                     depth, "tree")
            seconds = time.perf_counter() - start
            with self._lock:
                self._entries[key] = (weakref.ref(df), cached)
                while len(self._entries) > self.capacity:
                    _, (_, old) = self._entries.popitem(last=False)
                    old.unpersist()
        finally:
            with self._lock:
                self._ingesting.pop(key).set()
        return self._fresh(cached, depth, engine, model_values, compression), seconds

    def clear(self) -> None:
        with self._lock:
            for _, engine in self._entries.values():
                engine.unpersist()
            self._entries.clear()


ENGINE_CACHE = EngineCache()


def clear_cache() -> None:
    """Release every data set sparkopt keeps for reuse between fits (Spark blocks and driver copies)."""
    ENGINE_CACHE.clear()
