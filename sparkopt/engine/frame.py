"""The tree engine through DataFrame plans only: what runs on a Spark Connect session, where there
are no RDDs, broadcasts or accumulators.

Ingest (:func:`ingest_frame`, one job): ``mapInArrow`` over the selected columns builds the blocks
with the executors' own code (:func:`~sparkopt.engine.ingest._build_blocks`, the same Arrow
batches, the same block boundaries) and emits one row per block, ``(partition, seq, block)`` with
the block pickled, then one row ``(partition, -1, stats)`` holding the partition's compact
statistics record (None for a partition that saw no batch: every partition is counted, which the
resident engine's barrier job needs); the result is persisted (``DataFrame.persist``, MEMORY_AND_DISK by default) and
the statistics rows are collected, which fills the cache in the same job.

A pass (:meth:`FrameEngine.map_sum`, one job): ``mapInArrow`` over the cached block rows, the
block function and its payload in the task closure (Connect ships it inside the plan); each task
folds its partition's blocks with :func:`~sparkopt.engine.fold.fold_partition` (the same code and
sampling seeds as every other engine, indexed by the ingest partition) and returns one row, its
partial sum pickled; the driver adds them in partition order. Same blocks, same fold, same numbers
as :class:`~sparkopt.engine.tree.TreeEngine` (which adds partition sums in ``treeAggregate``'s order
instead: equal to rounding).

Under a classic session the RDD path (:mod:`sparkopt.engine.tree`) stays the default; this one works
there too (tests compare the two). pyspark is imported inside the functions that need it.
"""
from __future__ import annotations

import itertools
import pickle
from dataclasses import replace
from typing import Any, Iterator, Sequence

from ..blocks import Block
from .contract import EngineBase
from .fold import BlockFn, add_results, check_sampling, fold_partition
from .ingest import _build_blocks, _describe, _start_features, _to_csr, partition_blocks, prepare, refuse_problems
from .session import arrow_batches_by_rows
from .stats import DataStats, merge_partition_records
from .threads import task_threads
from .tree import job_bytes

__all__ = ["BlockFrame", "FrameEngine", "ingest_frame", "block_records"]

_PICKLE_PROTOCOL = 5
_BLOCK_ROWS = "partition int, seq int, block binary, stats binary"
_PARTIAL_SUMS = "partition int, result binary"
_STATS_SEQ = -1     # the seq of a partition's statistics row (its blocks count from 0)


class BlockFrame:
    """The persisted DataFrame of block rows (see the module docstring) and its partition count."""

    def __init__(self, frame: Any, num_partitions: int, name: str = "") -> None:
        self.frame = frame
        self.num_partitions = int(num_partitions)
        self.name = name
        #: partitions of the cached frame (empty ones included), once a resident engine counted them
        self.tasks: int | None = None

    def block_rows(self) -> Any:
        """The rows holding blocks, in their cached order (``partition, seq, block``)."""
        return self.frame.where(f"seq > {_STATS_SEQ}").select("partition", "seq", "block")

    def getNumPartitions(self) -> int:
        """The partitions of the ingest (``RDD``'s name for it: the RDD engines take a BlockFrame)."""
        return self.num_partitions

    def unpersist(self) -> None:
        self.frame.unpersist()


def _row_batch(partition: int, seq: int, block: Any, stats: Any) -> Any:
    import pyarrow as pa

    return pa.RecordBatch.from_arrays(
        [pa.array([partition], pa.int32()), pa.array([seq], pa.int32()),
         pa.array([block], pa.binary()), pa.array([stats], pa.binary())],
        names=["partition", "seq", "block", "stats"])


def _encode_partition(spec: Any, dense: bool | None, max_block_bytes: int):
    """The ingest's mapInArrow function: a partition's record batches in, its block rows and then
    its statistics row out."""
    n_features = _start_features(spec)

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        from pyspark import TaskContext

        index = TaskContext.get().partitionId()
        records: list = []
        built = _build_blocks(batches, spec, dense, max_block_bytes)
        for seq, block in enumerate(partition_blocks(built, n_features, records.append)):
            yield _row_batch(index, seq, pickle.dumps(block, protocol=_PICKLE_PROTOCOL), None)
        for record in records:
            yield _row_batch(index, _STATS_SEQ, None, pickle.dumps(record, protocol=_PICKLE_PROTOCOL))
        if not records:      # a partition without a batch: a row all the same, so the driver counts every partition
            yield _row_batch(index, _STATS_SEQ, None, None)

    return run


def ingest_frame(
    df: Any,
    features_col: str | Sequence[str] = "features",
    label_col: str = "label",
    weight_col: str | None = None,
    *,
    dense: bool | None = None,
    max_block_bytes: int = 64 * 2**20,
    num_partitions: int | None = None,
    storage_level: Any = None,
    offset_col: str | None = None,
    fold_col: str | None = None,
) -> tuple[BlockFrame, DataStats]:
    """:func:`~sparkopt.engine.ingest.ingest` through DataFrame plans only: the same blocks, the
    same statistics, the same checks and :class:`~sparkopt.errors.InputError` messages, held in a
    persisted DataFrame of block rows (:class:`BlockFrame`) instead of an ``RDD[Block]``. The
    caller owns the cache (``unpersist()``; :class:`FrameEngine` does it)."""
    from pyspark import StorageLevel

    spec, selected = prepare(df, features_col, label_col, weight_col, offset_col, dense, max_block_bytes,
                             num_partitions, fold_col)
    encoded = selected.mapInArrow(_encode_partition(spec, dense, int(max_block_bytes)), _BLOCK_ROWS)
    frame = encoded.persist(StorageLevel.MEMORY_AND_DISK if storage_level is None else storage_level)
    try:
        # scanning the persisted plan builds its whole cache: the blocks too, in this same job
        with arrow_batches_by_rows(df.sparkSession):
            rows = frame.where(f"seq = {_STATS_SEQ}").select("partition", "stats").toArrow().to_pydict()
        reported = [(p, pickle.loads(blob)) for p, blob in zip(rows["partition"], rows["stats"]) if blob is not None]
        # every partition sends a statistics row (None when it saw no batch): all of them are counted
        n_parts = max([num_partitions or 0, *(p + 1 for p in rows["partition"])])
        stats = merge_partition_records(reported, n_parts, n_features=_start_features(spec))
        refuse_problems(stats, spec)
        blocks = BlockFrame(frame, n_parts, f"sparkopt blocks ({_describe(spec)})")
        blocks.tasks = len(rows["partition"])            # one statistics row per partition
        if stats.n_dense_blocks and stats.n_sparse_blocks:
            blocks = _as_csr(blocks)
            stats = replace(stats, n_sparse_blocks=stats.n_blocks, n_dense_blocks=0)
    except BaseException:
        frame.unpersist()
        raise
    return blocks, stats


def _as_csr(blocks: BlockFrame) -> BlockFrame:
    """Partitions disagreed (only dense vectors in some, sparse ones in others): the blocks as CSR,
    cached anew from the cache (one extra pass), the old cache released."""

    def convert(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            cols = batch.to_pydict()
            for p, seq, blob, stats in zip(cols["partition"], cols["seq"], cols["block"], cols["stats"]):
                if blob is not None:
                    blob = pickle.dumps(_to_csr(pickle.loads(blob)), protocol=_PICKLE_PROTOCOL)
                yield _row_batch(p, seq, blob, stats)

    converted = blocks.frame.mapInArrow(convert, _BLOCK_ROWS).persist(blocks.frame.storageLevel)
    try:
        converted.where(f"seq = {_STATS_SEQ}").count()
    except BaseException:
        converted.unpersist()
        raise
    blocks.unpersist()
    csr = BlockFrame(converted, blocks.num_partitions, blocks.name)
    csr.tasks = blocks.tasks
    return csr


def block_records(batches: Iterator[Any]) -> Iterator[tuple[int, int, Block]]:
    """(partition, seq, block) of each row of :meth:`BlockFrame.block_rows` record batches, in
    their order (the blocks unpickled: they were pickled by the ingest's own tasks)."""
    for batch in batches:
        blobs = batch.column(2)
        for i, (p, seq) in enumerate(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())):
            yield p, seq, pickle.loads(blobs[i].as_py())


def _partition_sums(fn: BlockFn, payload: Any, fraction: float | None, seed: int | None):
    """A pass's mapInArrow function: one partition's block rows in, one row (partition, pickled
    partial sum) out."""

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        # a task reads one cached partition; grouping keeps the fold right if it ever reads more
        for p, group in itertools.groupby(block_records(batches), key=lambda row: row[0]):
            with task_threads():
                acc = fold_partition(fn, payload, p, (block for _, _, block in group), fraction, seed)
            if acc is not None:
                yield pa.RecordBatch.from_arrays(
                    [pa.array([p], pa.int32()), pa.array([pickle.dumps(acc, protocol=_PICKLE_PROTOCOL)], pa.binary())],
                    names=["partition", "result"])

    return run


class FrameEngine(EngineBase):
    """Sums over the blocks of a :class:`BlockFrame`, one DataFrame job per pass (the tree engine
    of a Spark Connect session). The engine owns the cache: :meth:`unpersist` releases it."""

    kind = "tree"
    # a Spark job per pass (plan analysis on the server, tasks reading the cached rows into Python)
    pass_overhead = 0.1

    def __init__(self, blocks: BlockFrame, stats: DataStats, depth: int = 2) -> None:
        super().__init__()
        # aggregationDepth is accepted for the same params as the RDD engine: partial sums come to
        # the driver in one step here (one row per partition)
        self._hold(stats, depth)
        self._blocks = blocks

    @property
    def blocks(self) -> BlockFrame:
        return self._blocks

    @property
    def num_partitions(self) -> int:
        return self._blocks.num_partitions

    def map_sum(self, fn: BlockFn, payload: Any, *, fraction: float | None = None, seed: int | None = None) -> Any:
        """Sum of ``fn(block, payload)`` over all (optionally row-sampled) blocks; ``fn`` and
        ``payload`` travel in the job's plan (cloudpickled)."""
        fraction, seed = check_sampling(fraction, seed)
        rows = (self._blocks.block_rows().mapInArrow(_partition_sums(fn, payload, fraction, seed), _PARTIAL_SUMS)
                .toArrow().to_pydict())
        result = None
        for _, blob in sorted(zip(rows["partition"], rows["result"]), key=lambda pr: pr[0]):
            result = add_results(result, pickle.loads(blob))
        return self._pass_result(result, fraction, *job_bytes(payload, result, self.num_partitions))

    def collect_blocks(self) -> list[list[Block]]:
        """All blocks, per partition in order (brings the data to the driver: for tests / small data)."""
        rows = self._blocks.block_rows().toArrow().to_pydict()
        parts: list[list[Block]] = [[] for _ in range(self.num_partitions)]
        for p, _, blob in sorted(zip(rows["partition"], rows["seq"], rows["block"]), key=lambda r: (r[0], r[1])):
            parts[p].append(pickle.loads(blob))
        return parts

    def unpersist(self) -> None:
        self._blocks.unpersist()

    def __repr__(self) -> str:
        return (f"FrameEngine(n_rows={self.n_rows}, n_features={self.n_features}, "
                f"num_partitions={self.num_partitions})")
