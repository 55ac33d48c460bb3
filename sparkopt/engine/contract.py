"""What every engine promises, and the counters and properties they share (:class:`EngineBase`).

numpy only; never imports pyspark. An engine holds the data as ``list[list[Block]]`` in effect
(partitions in order, blocks in order within a partition) and offers:

* ``map_sum(fn, payload, fraction=None, seed=None)``: the element-wise sum over all blocks of
  ``fn(block, payload)``, folded by sparkopt.engine.fold (same numbers on every engine);
* ``session()``: a context that holds whatever the engine needs for a series of passes (the
  resident engine's tasks);
* ``run_workers(worker_fn, config, server)``: run ``worker_fn(channel, worker_index, fold,
  config)`` on every worker at once, where ``fold(fn, payload, fraction, seed)`` sums over that
  worker's own partitions and ``channel.send / recv`` talk to ``server`` on the driver (engines
  whose workers live across messages only);
* ``register_functions(fns)``: a hint naming the block functions a fit will use;
* ``stats`` (sparkopt.engine.stats.DataStats), ``passes``, ``evaluations``, ``bytes_sent``,
  ``bytes_received``.

The engine knows nothing of losses or solvers.
"""
from __future__ import annotations

import contextlib
from typing import Any

from ..errors import InputError
from .compression import Compression
from .fold import check_depth
from .stats import DataFacts, DataStats

__all__ = ["EngineBase"]


class EngineBase(DataFacts):
    """Counters and data-description properties shared by the engines."""

    _stats: DataStats
    _depth: int
    #: fixed seconds a pass costs beyond its arithmetic (the cost model of ``solver="auto"``)
    pass_overhead = 0.0
    #: how full passes of block functions marked with an Exchange travel (only the resident
    #: engine, and a LocalEngine simulating it, have a channel to compress; see
    #: sparkopt.engine.compression)
    compression = Compression()

    def __init__(self) -> None:
        self.reset_counters()

    def reset_counters(self) -> None:
        self.evaluations = 0
        self.passes = 0.0
        # payload bytes sent to the workers and partial-sum bytes sent back (0 for LocalEngine)
        self.bytes_sent = 0
        self.bytes_received = 0

    @contextlib.contextmanager
    def session(self):
        """Hold whatever the engine needs for a series of passes (a fit); nothing by default."""
        yield self

    def refresh_exchange(self, reason: str) -> None:
        """The next compressed pass sends exact values both ways (key frames; the reason is
        logged); nothing to do for an engine without a compressed channel."""

    def register_functions(self, fns: Any) -> None:
        """Block functions later passes will use (a hint: engines that ship code to their workers
        once per session ship these too); nothing by default."""

    def run_workers(self, worker_fn: Any, config: Any, server: Any) -> list:
        """Run a worker program on every worker at once, its messages served by ``server`` (see
        :meth:`ResidentEngine.run_workers`). Needs workers that live across messages."""
        raise InputError(f"{type(self).__name__} cannot run worker programs (asynchronous solvers): "
                         "use engine='resident' (or a LocalEngine)")

    def _hold(self, stats: Any, depth: Any) -> None:
        """Keep the data's ``stats`` and the validated ``depth`` (aggregationDepth)."""
        self._depth = check_depth(depth)
        if not isinstance(stats, DataStats):
            raise InputError(f"stats must be a DataStats, got {type(stats).__name__}")
        self._stats = stats

    def _count(self, fraction: float | None) -> None:
        self.evaluations += 1
        self.passes += 1.0 if fraction is None else fraction

    def _pass_result(self, result: Any, fraction: float | None, sent: int = 0, received: int = 0) -> Any:
        """Count a finished pass and its bytes (payload out, partial sums back); its ``result``,
        or RuntimeError when no block contributed."""
        self._count(fraction)
        self.bytes_sent += sent
        self.bytes_received += received
        if result is None:
            raise RuntimeError("map_sum: every partition is empty; there is no data to sum over")
        return result

    @property
    def depth(self) -> int:
        return self._depth

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.unpersist()

    def unpersist(self) -> None:  # pragma: no cover - overridden
        pass
