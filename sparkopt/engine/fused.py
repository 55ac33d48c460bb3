"""The fused resident load (issue 14): the resident session's barrier tasks read their partitions'
Arrow batches themselves and build their blocks in place; no block RDD, no pickled copy in the JVM.

Today's resident fit on a classic session ingests (Arrow -> blocks pickled into a persisted RDD,
one job), then its session's barrier job reads the RDD back into Python. Here a session is one
barrier job, ``selected.mapInArrow(serve, barrier=True)`` over the DataFrame's selected columns
(:func:`~sparkopt.engine.ingest.prepare`), whose tasks build the very blocks the ingest builds
(:func:`~sparkopt.engine.ingest._build_blocks` over the same Arrow batches, in the same partitions)
and then run the resident task body over them (:func:`~sparkopt.engine.resident._serve`: the same
handshake, frames and fold), so every engine gives the same numbers. A lost task restarts the
session, which reads the DataFrame again (its cache, else its lineage).

The statistics (row counts, moments, the checks of bad input) come before the session, from one
``mapInArrow`` job over the same batches that keeps nothing (:func:`fused_source`): a fit builds its
objective, and so the block functions its session ships in the task closure, from them. A second
fit of the same DataFrame reuses them (the estimators' ingest cache holds the
:class:`FusedSource`) and costs one barrier load. Both jobs cut their Arrow batches by rows only
(:func:`~sparkopt.engine.session.arrow_batches_by_rows`), which is what makes them cheap:
``jobs/bench/load_paths.py`` measured on 200k x 100 dense rows (2026-12-07, this 2-core machine,
cached DataFrame, local[2], medians of 3): the fused load 0.57 s against 1.22 s (ingest) + 0.63 s
(session start) for today's path.

Passes a session cannot serve (the fallback when the tasks cannot reach the driver, payloads the
channel cannot carry) run on the tree engine over blocks ingested then, once (logged).
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import replace
from typing import Any, Iterator, Optional, Sequence

from ..blocks import Block
from .fold import BlockFn
from .frame import FrameEngine, ingest_frame
from .frame_resident import BatchSource, SessionSettings, _FrameSession
from .ingest import _build_blocks, _start_features, _to_csr, ingest, partition_blocks, prepare, refuse_problems
from .resident import ResidentEngine
from .session import arrow_batches_by_rows, is_connect
from .stats import DataStats, merge_partition_records
from .tree import TreeEngine, job_bytes

__all__ = ["FusedSource", "FusedEngine", "ConnectFusedEngine", "fused_source"]

logger = logging.getLogger("sparkopt")
_STATS_ROWS = "partition int, stats binary"


def _statistics(spec: Any, dense: Optional[bool], max_block_bytes: int):
    """mapInArrow function of the statistics job: a partition's batches in, its blocks built and
    dropped as they come, its one compact statistics record out (none for a partition without a
    batch, as in the ingest)."""
    start = _start_features(spec)

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        records: list = []
        for _ in partition_blocks(_build_blocks(batches, spec, dense, max_block_bytes), start, records.append):
            pass
        # one row per task, a null one for a partition without a batch: the rows count the
        # partitions (a Spark Connect client cannot ask for rdd.getNumPartitions())
        for record in records or [None]:
            yield pa.RecordBatch.from_arrays(
                [pa.array([TaskContext.get().partitionId()], pa.int32()),
                 pa.array([None if record is None else pickle.dumps(record)], pa.binary())],
                names=["partition", "stats"])

    return run


def _built_records(spec: Any, dense: Optional[bool], max_block_bytes: int, to_csr: bool):
    """A fused task's records: its partition's blocks built from its batches, (partition, seq,
    block) (dense blocks as CSR when partitions disagreed on the kind, as the ingest converts them)."""
    start = _start_features(spec)

    def records(batches: Iterator[Any]) -> Iterator[tuple[int, int, Block]]:
        from pyspark import TaskContext

        partition = TaskContext.get().partitionId()
        built = _build_blocks(batches, spec, dense, max_block_bytes)
        for seq, block in enumerate(partition_blocks(built, start, lambda record: None)):
            yield partition, seq, (_to_csr(block) if to_csr else block)

    return records


class FusedSource:
    """The data of a fused engine: the selected columns (a DataFrame, not cached by sparkopt),
    how to cut them into blocks, and their statistics; blocks ingested into an RDD only when a
    tree-engine pass needs them (:meth:`rdd`), released by :meth:`unpersist`."""

    def __init__(self, df: Any, selected: Any, spec: Any, stats: DataStats, *, dense: Optional[bool],
                 max_block_bytes: int, num_partitions: Optional[int], partitions: int, to_csr: bool = False) -> None:
        self.df, self.selected, self.spec, self.stats = df, selected, spec, stats
        self.dense, self.max_block_bytes, self.num_partitions = dense, int(max_block_bytes), num_partitions
        self.to_csr = bool(to_csr)      # partitions disagreed on the kind: dense blocks converted, as the ingest does
        self._partitions = int(partitions)
        self._rdd = None
        self.connect = is_connect(selected.sparkSession)
        #: the SparkContext (classic session; what resident_unavailable asks), None on Spark Connect
        self.context = None if self.connect else selected.sparkSession.sparkContext

    def getNumPartitions(self) -> int:
        """The partitions of the selected columns (``RDD``'s name: the RDD engines take a source)."""
        return self._partitions

    @property
    def blocks(self) -> "FusedSource":
        return self

    def records(self) -> Any:
        """The (partition, seq, block) records a session's task builds from its batches."""
        return _built_records(self.spec, self.dense, self.max_block_bytes, to_csr=self.to_csr)

    def rdd(self) -> Any:
        """The blocks as the ingest caches them (one ingest job the first time; logged): an
        ``RDD[Block]``, or on Spark Connect a :class:`~sparkopt.engine.frame.BlockFrame`."""
        if self._rdd is None:
            logger.info("sparkopt: ingesting the data into a block %s for tree-engine passes",
                        "frame" if self.connect else "RDD")
            spec = self.spec
            self._rdd, _ = (ingest_frame if self.connect else ingest)(
                self.df, spec.features if spec.is_vector else list(spec.features), spec.label, spec.weight,
                dense=self.dense, max_block_bytes=self.max_block_bytes, num_partitions=self.num_partitions,
                offset_col=spec.offset, fold_col=spec.fold)
        return self._rdd

    def tree_engine(self, depth: int) -> TreeEngine:
        """The engine of one job per pass over :meth:`rdd` (a frame engine on Spark Connect)."""
        return (FrameEngine if self.connect else TreeEngine)(self.rdd(), self.stats, depth)

    def unpersist(self) -> None:
        if self._rdd is not None:
            self._rdd.unpersist()
            self._rdd = None


def fused_source(df: Any, features_col: str | Sequence[str] = "features", label_col: str = "label",
                 weight_col: Optional[str] = None, *, dense: Optional[bool] = None,
                 max_block_bytes: int = 64 * 2**20, num_partitions: Optional[int] = None,
                 offset_col: Optional[str] = None, fold_col: Optional[str] = None) -> FusedSource:
    """The checks and statistics of :func:`~sparkopt.engine.ingest.ingest` (the same
    :class:`~sparkopt.errors.InputError` messages, before any job for the schema), from one
    ``mapInArrow`` job that keeps no block (one row per partition: they are counted there, on a
    classic or a Spark Connect session alike). The sessions' blocks carry ``offset_col`` and
    ``fold_col`` as the ingest's do."""
    spec, selected = prepare(df, features_col, label_col, weight_col, offset_col, dense, max_block_bytes,
                             num_partitions, fold_col)
    max_bytes = int(max_block_bytes)
    with arrow_batches_by_rows(df.sparkSession):
        rows = selected.mapInArrow(_statistics(spec, dense, max_bytes), _STATS_ROWS).toArrow().to_pydict()
    partitions = len(rows["partition"])
    reported = [(p, pickle.loads(blob)) for p, blob in zip(rows["partition"], rows["stats"]) if blob is not None]
    stats = merge_partition_records(reported, partitions, n_features=_start_features(spec))
    refuse_problems(stats, spec)
    mixed = bool(stats.n_dense_blocks and stats.n_sparse_blocks)
    if mixed:      # the sessions' tasks convert their dense blocks, as the ingest does
        stats = replace(stats, n_sparse_blocks=stats.n_blocks, n_dense_blocks=0)
    return FusedSource(df, selected, spec, stats, dense=dense, max_block_bytes=max_bytes,
                       num_partitions=num_partitions, partitions=partitions, to_csr=mixed)


class FusedEngine(ResidentEngine):
    """:class:`~sparkopt.engine.resident.ResidentEngine` whose sessions load their blocks from the
    DataFrame in their own barrier tasks (see the module docstring): one partition per task, so
    every partition must fit the task slots at once."""

    _session_class = _FrameSession
    _balances = False

    def __init__(self, source: FusedSource, depth: int = 2, **options: Any) -> None:
        self._source = source         # before the base class reads settings
        super().__init__(source, source.stats, depth, **options)

    @property
    def source(self) -> FusedSource:
        return self._source

    def _groups(self) -> int:
        return self.num_partitions

    def _tagged(self, groups: int) -> Any:
        return BatchSource(self._source.selected, self._source.records())

    def _start(self):
        # the barrier job reads its Arrow batches cut by rows only; its plan is taken once all its tasks run
        with arrow_batches_by_rows(self._source.selected.sparkSession):
            return super()._start()

    def _tree_pass(self, fn: BlockFn, payload: Any, fraction: Any, seed: Any) -> Any:
        result = self._source.tree_engine(self.depth).map_sum(fn, payload, fraction=fraction, seed=seed)
        return self._pass_result(result, fraction, *job_bytes(payload, result, self.num_partitions))

    def collect_blocks(self) -> list:
        return self._source.tree_engine(self.depth).collect_blocks()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n_rows={self.n_rows}, n_features={self.n_features}, "
                f"num_partitions={self.num_partitions}, active={self.active})")


class ConnectFusedEngine(SessionSettings, FusedEngine):
    """The fused resident engine on a Spark Connect session: the same barrier job over the
    DataFrame's batches (``mapInArrow(barrier=True)`` is public DataFrame API), its tasks
    connecting to the client's listener, the session's task slots and hosts read from its
    settings (:class:`~sparkopt.engine.frame_resident.SessionSettings`); the passes a session
    cannot serve run on the frame engine."""

    @property
    def spark(self) -> Any:
        return self._source.selected.sparkSession
