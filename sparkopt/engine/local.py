"""The block fold in memory: :class:`LocalEngine`, the reference for :class:`TreeEngine`.

numpy / scipy.sparse only; never imports pyspark. The partition fold (:func:`fold_partition`) and
the sampling seeds are defined here once and used by both engines, so that for the same blocks
they compute the same per-partition sums and draw the same samples.

Engine contract (both engines):

* data are ``list[list[Block]]``: partitions in order, blocks in order within a partition;
* ``map_sum(fn, payload, fraction=None, seed=None)`` returns the element-wise sum over all blocks of
  ``fn(block, payload)`` (a float, an ndarray, or a tuple of those);
* with ``fraction`` set, block ``j`` of partition ``p`` is first replaced by
  ``block.sample(fraction, np.random.default_rng([seed, p, j]))``;
* a ``fn`` with a true attribute ``wants_index`` is called as ``fn(block, payload, (p, j))``:
  block-side code that draws its own samples (local SGD's steps) seeds them from its position,
  which is the same on every engine because every engine folds through :func:`fold_partition`.
"""
from __future__ import annotations

import contextlib
import queue
import secrets
import threading
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from ..blocks import Block, sample_rng
from ..errors import InputError
from .stats import DataStats, block_stats, combine_partitions, data_problems

__all__ = ["LocalEngine", "fold_partition", "fold_partitions", "add_results", "sample_rng"]

BlockFn = Callable[[Block, Any], Any]


# -------------------------------------------------------------------- shared fold pieces
def _own(r: Any) -> Any:
    """A copy of a result that the fold may update in place (fn may return views of data)."""
    if isinstance(r, tuple):
        return tuple(_own(x) for x in r)
    if isinstance(r, np.ndarray):
        return np.array(r, dtype=np.result_type(r.dtype, np.float64), copy=True)
    if isinstance(r, list):
        raise TypeError("map_sum: fn must return a float, an ndarray or a tuple, not a list")
    return r


def add_results(acc: Any, r: Any) -> Any:
    """None-safe element-wise sum of two results (float / ndarray / tuple of those).

    ``acc`` must be owned by the caller (it is updated in place when it is an array); ``r`` is
    never modified. ``None`` is the neutral element on either side."""
    if r is None:
        return acc
    if acc is None:
        return _own(r)
    if isinstance(acc, tuple):
        if not isinstance(r, tuple) or len(r) != len(acc):
            raise TypeError(
                f"map_sum: fn returned results of different shapes: tuple of {len(acc)} and "
                f"{type(r).__name__}{' of ' + str(len(r)) if isinstance(r, tuple) else ''}"
            )
        return tuple(add_results(a, b) for a, b in zip(acc, r))
    if isinstance(acc, np.ndarray):
        acc += r
        return acc
    return acc + r


def fold_partition(
    fn: BlockFn,
    value: Any,
    partition_index: int,
    blocks: Iterable[Block],
    fraction: float | None = None,
    seed: int | None = None,
) -> Any:
    """Sum of ``fn(block, value)`` over one partition's blocks, in order (None if no blocks).

    ``fn(block, value, (partition_index, j))`` when ``fn.wants_index`` is true (see the module
    docstring); ``j`` counts the partition's blocks from 0, before any sampling."""
    with_index = bool(getattr(fn, "wants_index", False))
    acc = None
    for j, block in enumerate(blocks):
        if fraction is not None:
            block = block.sample(fraction, sample_rng(seed, partition_index, j))
        acc = add_results(acc, fn(block, value, (partition_index, j)) if with_index else fn(block, value))
    return acc


def fold_partitions(
    fn: BlockFn,
    value: Any,
    partitions: Iterable[tuple[int, Iterable[Block]]],
    fraction: float | None = None,
    seed: int | None = None,
) -> Any:
    """Sum of :func:`fold_partition` over ``(partition index, blocks)`` pairs, in the order given
    (None if there are no blocks): what one worker holding several partitions computes."""
    acc = None
    for index, blocks in partitions:
        acc = add_results(acc, fold_partition(fn, value, index, blocks, fraction, seed))
    return acc


def check_depth(depth: Any) -> int:
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise InputError(f"aggregationDepth must be an integer >= 1, got {depth!r}")
    return int(depth)


def check_sampling(fraction: Any, seed: Any) -> tuple[float | None, int | None]:
    """Validate (fraction, seed); draws a fresh seed when sampling without one."""
    if fraction is None:
        return None, None
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.number)):
        raise InputError(f"fraction must be a number in (0, 1], got {fraction!r}")
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"fraction must be in (0, 1], got {fraction!r}")
    if seed is None:
        seed = secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return fraction, int(seed)


class EngineBase:
    """Counters and data-description properties shared by the engines."""

    _stats: DataStats
    _depth: int

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

    def run_workers(self, worker_fn: Any, config: Any, server: Any) -> list:
        """Run a worker program on every worker at once, its messages served by ``server`` (see
        :meth:`ResidentEngine.run_workers`). Needs workers that live across messages."""
        raise InputError(f"{type(self).__name__} cannot run worker programs (asynchronous solvers): "
                         "use engine='resident' (or a LocalEngine)")

    def _count(self, fraction: float | None) -> None:
        self.evaluations += 1
        self.passes += 1.0 if fraction is None else fraction

    @property
    def stats(self) -> DataStats:
        return self._stats

    @property
    def n_features(self) -> int:
        return self._stats.n_features

    @property
    def n_rows(self) -> int:
        return self._stats.n_rows

    @property
    def weight_sum(self) -> float:
        return self._stats.weight_sum

    @property
    def depth(self) -> int:
        return self._depth

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.unpersist()

    def unpersist(self) -> None:  # pragma: no cover - overridden
        pass


class _QueueChannel:
    """A worker thread's end of the channel (LocalEngine.run_workers)."""

    def __init__(self, index: int, inbox: "queue.Queue", outbox: "queue.Queue") -> None:
        self._index, self._inbox, self._outbox = index, inbox, outbox

    def send(self, message: Any) -> None:
        self._inbox.put((self._index, message))

    def recv(self) -> Any:
        return self._outbox.get()


# -------------------------------------------------------------------- the local engine
class LocalEngine(EngineBase):
    """Blocks held in memory as ``list[list[Block]]`` (partitions of blocks), folded in order.

    ``stats`` defaults to the fold of :func:`block_stats` over the blocks; ``depth`` is kept only
    for interface parity with :class:`TreeEngine` (the local fold is sequential)."""

    kind = "local"

    def __init__(
        self,
        partitions: Sequence[Sequence[Block]],
        stats: DataStats | None = None,
        depth: int = 2,
    ) -> None:
        super().__init__()
        self._partitions = [list(p) for p in partitions]
        kinds = {b.is_sparse for p in self._partitions for b in p}
        if len(kinds) > 1:
            raise InputError("LocalEngine: blocks mix dense and CSR storage; use one kind")
        if stats is None:
            stats = combine_partitions(
                [[block_stats(b.X, b.y, b.w) for b in p] for p in self._partitions]
            )
        self._stats = stats
        self._depth = check_depth(depth)

    @classmethod
    def from_arrays(
        cls,
        X: Any,
        y: Any,
        w: Any = None,
        num_partitions: int = 1,
        *,
        block_rows: int | None = None,
        depth: int = 2,
        validate: bool = True,
    ) -> "LocalEngine":
        """Split rows into ``num_partitions`` contiguous partitions (sizes differ by at most one
        row; partitions are empty when there are fewer rows than partitions), each cut into blocks
        of at most ``block_rows`` rows (default: one block per non-empty partition).

        ``X`` keeps its storage kind: a dense array becomes a float64 C-ordered ndarray, a scipy
        sparse matrix becomes float64 CSR. With ``validate`` the data are checked like
        :func:`ingest` checks a DataFrame (non-finite values, negative weights, ...)."""
        if sp.issparse(X):
            X = sp.csr_matrix(X, dtype=np.float64)
        else:
            X = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
            if X.ndim != 2:
                raise InputError(f"X must be 2-dimensional, got shape {X.shape}")
        n = X.shape[0]
        y = np.ascontiguousarray(np.asarray(y, dtype=np.float64).ravel())
        if y.shape[0] != n:
            raise InputError(f"y has {y.shape[0]} values but X has {n} rows")
        if w is None:
            w = np.ones(n)
        else:
            w = np.ascontiguousarray(np.asarray(w, dtype=np.float64).ravel())
            if w.shape[0] != n:
                raise InputError(f"w has {w.shape[0]} values but X has {n} rows")
        if isinstance(num_partitions, bool) or not isinstance(num_partitions, (int, np.integer)) \
                or num_partitions < 1:
            raise InputError(f"num_partitions must be an integer >= 1, got {num_partitions!r}")
        if block_rows is not None and (
            not isinstance(block_rows, (int, np.integer)) or block_rows < 1
        ):
            raise InputError(f"block_rows must be an integer >= 1, got {block_rows!r}")
        bounds = np.linspace(0, n, int(num_partitions) + 1).round().astype(np.int64)
        partitions: list[list[Block]] = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            step = block_rows or max(int(hi - lo), 1)
            part = []
            for s in range(int(lo), int(hi), step):
                e = min(s + step, int(hi))
                Xb = X[s:e]
                if not sp.issparse(Xb):
                    Xb = np.ascontiguousarray(Xb)
                part.append(Block(Xb, y[s:e].copy(), w[s:e].copy()))
            partitions.append(part)
        stats = combine_partitions(
            [[block_stats(b.X, b.y, b.w) for b in p] for p in partitions], n_features=X.shape[1]
        )
        engine = cls(partitions, stats=stats, depth=depth)
        if validate:
            problems = data_problems(
                engine.stats, features="X", label="y", weight="w", source="input arrays"
            )
            if problems:
                raise InputError("; ".join(problems))
        return engine

    @property
    def num_partitions(self) -> int:
        return len(self._partitions)

    def map_sum(
        self,
        fn: BlockFn,
        payload: Any,
        *,
        fraction: float | None = None,
        seed: int | None = None,
    ) -> Any:
        """Sum of ``fn(block, payload)`` over all (optionally row-sampled) blocks."""
        fraction, seed = check_sampling(fraction, seed)
        acc = fold_partitions(fn, payload, enumerate(self._partitions), fraction, seed)
        self._count(fraction)
        if acc is None:
            raise RuntimeError("map_sum: every partition is empty; there is no data to sum over")
        return acc

    def collect_blocks(self) -> list[list[Block]]:
        return [list(p) for p in self._partitions]

    def run_workers(self, worker_fn: Any, config: Any, server: Any) -> list:
        """One thread per partition runs ``worker_fn(channel, p, {p: blocks}, config)``; messages
        are routed through ``server`` on the calling thread, as the resident engine does."""
        n = len(self._partitions)
        inbox: queue.Queue = queue.Queue()
        outboxes = [queue.Queue() for _ in range(n)]
        server.start([{"partitions": [p], "rows": sum(b.n_rows for b in blocks),
                       "weight": float(sum(float(b.w.sum()) for b in blocks))}
                      for p, blocks in enumerate(self._partitions)])

        def work(p: int) -> None:
            try:
                summary = worker_fn(_QueueChannel(p, inbox, outboxes[p]), p, {p: self._partitions[p]}, config)
                inbox.put((p, ("done", summary)))
            except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
                inbox.put((p, ("error", exc)))

        threads = [threading.Thread(target=work, args=(p,), name=f"sparkopt-local-worker-{p}", daemon=True)
                   for p in range(n)]
        for t in threads:
            t.start()
        summaries: dict[int, Any] = {}
        try:
            while len(summaries) < n:
                p, message = inbox.get()
                if message[0] == "done":
                    summaries[p] = message[1]
                elif message[0] == "error":
                    raise message[1]
                else:
                    for target, reply in server.handle(p, message):
                        outboxes[target].put(reply)
        finally:
            for box in outboxes:           # unblock any worker still waiting, then let it end
                box.put(("stop",))
            for t in threads:
                t.join(5.0)
        return [summaries[p] for p in range(n)]

    def unpersist(self) -> None:
        """Nothing to release (kept for interface parity)."""
