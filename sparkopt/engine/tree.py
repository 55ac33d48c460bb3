"""The block fold on Spark: broadcast, mapPartitionsWithIndex, treeAggregate, destroy.

Each partition folds its blocks with :func:`~sparkopt.engine.fold.fold_partition` (the same code
and sampling seeds as :class:`~sparkopt.engine.local.LocalEngine`); partition sums are combined by
``treeAggregate`` at ``depth`` with None-safe addition (an empty partition contributes nothing).
"""
from __future__ import annotations

import pickle
from typing import Any, Iterator

from ..blocks import Block
from .contract import EngineBase
from .fold import BlockFn, add_results, check_sampling, fold_partition
from .stats import DataStats
from .threads import task_threads

__all__ = ["TreeEngine", "estimated_bytes"]


def estimated_bytes(value: Any) -> int:
    """Serialized size of a payload or partial sum (what Spark ships for it)."""
    return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def job_bytes(payload: Any, result: Any, num_partitions: int) -> tuple[int, int]:
    """(sent, received) of one pass as a Spark job: the payload reaches every partition's task and
    each partition sends one partial sum back (an estimate: Spark's own framing and the merges on
    the way are not counted)."""
    received = 0 if result is None else estimated_bytes(result) * num_partitions
    return estimated_bytes(payload) * num_partitions, received


def _partition_sum(
    fn: BlockFn, bc: Any, fraction: float | None, seed: int | None
):
    def run(index: int, blocks: Iterator[Block]) -> Iterator[Any]:
        value = bc.value
        with task_threads():
            acc = fold_partition(fn, value, index, blocks, fraction, seed)
        if acc is not None:
            yield acc

    return run


class TreeEngine(EngineBase):
    """Evaluate sums over the blocks of a persisted ``RDD[Block]`` (see :func:`ingest`).

    The engine owns the cache: :meth:`unpersist` (or leaving a ``with`` block) releases it."""

    kind = "tree"
    # a Spark job per pass, its tasks reading the cached blocks into Python (README: 46 ms - 2.7 s)
    pass_overhead = 0.05

    def __init__(self, blocks_rdd: Any, stats: DataStats, depth: int = 2) -> None:
        super().__init__()
        self._hold(stats, depth)
        self._rdd = blocks_rdd
        self._num_partitions = blocks_rdd.getNumPartitions()

    @property
    def rdd(self) -> Any:
        return self._rdd

    @property
    def blocks(self) -> Any:
        """What holds the cached blocks (:func:`~sparkopt.engine.choose.make_engine` takes it)."""
        return self._rdd

    @property
    def num_partitions(self) -> int:
        return self._num_partitions

    def map_sum(
        self,
        fn: BlockFn,
        payload: Any,
        *,
        fraction: float | None = None,
        seed: int | None = None,
    ) -> Any:
        """Sum of ``fn(block, payload)`` over all (optionally row-sampled) blocks.

        ``payload`` is broadcast for the duration of the call and destroyed afterwards (also when
        ``fn`` raises). ``fn`` must be picklable (cloudpickle) and return a float, an ndarray or a
        tuple of those; results are added element-wise."""
        fraction, seed = check_sampling(fraction, seed)
        sc = self._rdd.context
        bc = sc.broadcast(payload)
        try:
            result = self._rdd.mapPartitionsWithIndex(
                _partition_sum(fn, bc, fraction, seed)
            ).treeAggregate(None, add_results, add_results, depth=self._depth)
        finally:
            bc.destroy()
        return self._pass_result(result, fraction, *job_bytes(payload, result, self.num_partitions))

    def collect_blocks(self) -> list[list[Block]]:
        """All blocks, per partition (brings the data to the driver: for tests / small data)."""
        return self._rdd.glom().collect()

    def unpersist(self) -> None:
        self._rdd.unpersist()

    def __repr__(self) -> str:
        return (
            f"TreeEngine(n_rows={self.n_rows}, n_features={self.n_features}, "
            f"num_partitions={self.num_partitions}, depth={self.depth})"
        )
