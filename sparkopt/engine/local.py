"""The in-memory engine: :class:`LocalEngine`, the reference every Spark engine must equal.

numpy / scipy.sparse only; never imports pyspark. Blocks are held as ``list[list[Block]]``
(partitions of blocks) and folded by sparkopt.engine.fold, the code the Spark engines' tasks run,
so for the same blocks all engines give the same numbers (see sparkopt.engine.contract).
"""
from __future__ import annotations

import queue
import threading
from functools import partial
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from ..blocks import Block
from ..errors import InputError
from .compression import Compression, DriverExchange, TaskExchange, message_bytes
from .contract import EngineBase
from .fold import BlockFn, add_results, check_depth, check_sampling, fold_over, fold_partition, fold_partitions
from .stats import DataStats, block_stats, combine_partitions, data_problems

__all__ = ["LocalEngine"]


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
    for interface parity with :class:`TreeEngine` (the local fold is sequential).

    ``compression`` (a scheme name or :class:`~sparkopt.engine.compression.Compression`; None: no
    channel at all) simulates the resident engine's channel: every partition plays one resident
    task, with its own error-feedback state, and every pass's payload and partial sums are
    counted in ``bytes_sent`` / ``bytes_received`` at the size the channel would carry them
    (same codecs, so the same numbers as a resident engine with one partition per task)."""

    kind = "local"

    def __init__(
        self,
        partitions: Sequence[Sequence[Block]],
        stats: DataStats | None = None,
        depth: int = 2,
        compression: Any = None,
        compression_ratio: Any = None,
    ) -> None:
        super().__init__()
        self._channel: DriverExchange | None = None
        if compression is not None:
            self.compression = Compression.of(compression, compression_ratio)
            self._channel = DriverExchange(self.compression)
            self._task_ends: dict[int, TaskExchange] = {}
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
        offset: Any = None,
        compression: Any = None,
        compression_ratio: Any = None,
    ) -> "LocalEngine":
        """Split rows into ``num_partitions`` contiguous partitions (sizes differ by at most one
        row; partitions are empty when there are fewer rows than partitions), each cut into blocks
        of at most ``block_rows`` rows (default: one block per non-empty partition).

        ``X`` keeps its storage kind: a dense array becomes a float64 C-ordered ndarray, a scipy
        sparse matrix becomes float64 CSR. With ``validate`` the data are checked like
        :func:`ingest` checks a DataFrame (non-finite values, negative weights, ...). ``offset``
        (n,), if given, is every block's per-row margin offset (a GLM's offsetCol). ``compression``
        simulates the resident channel (see the class)."""
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
        if offset is not None:
            offset = np.ascontiguousarray(np.asarray(offset, dtype=np.float64).ravel())
            if offset.shape[0] != n:
                raise InputError(f"offset has {offset.shape[0]} values but X has {n} rows")
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
                part.append(Block(Xb, y[s:e].copy(), w[s:e].copy(),
                                  None if offset is None else offset[s:e].copy()))
            partitions.append(part)
        stats = combine_partitions(
            [[block_stats(b.X, b.y, b.w) for b in p] for p in partitions], n_features=X.shape[1]
        )
        engine = cls(partitions, stats=stats, depth=depth, compression=compression,
                     compression_ratio=compression_ratio)
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
        if self._channel is not None:
            return self._channel_pass(fn, payload, fraction, seed)
        acc = fold_partitions(fn, payload, enumerate(self._partitions), fraction, seed)
        return self._pass_result(acc, fraction)

    def refresh_exchange(self, reason: str) -> None:
        if self._channel is not None:
            self._channel.reset(reason)

    def _channel_pass(self, fn: BlockFn, payload: Any, fraction: float | None, seed: int | None) -> Any:
        """A pass as the resident engine runs it with one task per partition: the request
        (compressed as the channel's scheme allows) to every task, each task's reply decoded and
        the replies added in partition order; the bytes are the messages' channel sizes."""
        compressed = self._channel.applies(fn, fraction)
        request = self._channel.outgoing(fn, payload) if compressed else payload
        size = message_bytes(request)
        replies, sent, received = [], 0, 0
        for p, blocks in enumerate(self._partitions):
            end = self._task_ends.setdefault(p, TaskExchange(self.compression))
            reply = end.evaluate(fn, request, fraction,
                                 lambda value, p=p, blocks=blocks: fold_partition(fn, value, p, blocks, fraction, seed))
            sent += size
            received += message_bytes(reply)
            replies.append((p, reply))
        if compressed:
            acc = self._channel.combine(fn, replies)
        else:
            acc = None
            for _, reply in replies:
                acc = add_results(acc, reply)
        return self._pass_result(acc, fraction, sent, received)

    def collect_blocks(self) -> list[list[Block]]:
        return [list(p) for p in self._partitions]

    def run_workers(self, worker_fn: Any, config: Any, server: Any) -> list:
        """One thread per partition p runs ``worker_fn(channel, p, fold, config)`` with ``fold``
        summing over partition p's blocks; messages are routed through ``server`` on the calling
        thread, as the resident engine does."""
        n = len(self._partitions)
        inbox: queue.Queue = queue.Queue()
        outboxes = [queue.Queue() for _ in range(n)]
        server.start([{"partitions": [p], "rows": sum(b.n_rows for b in blocks),
                       "weight": float(sum(float(b.w.sum()) for b in blocks))}
                      for p, blocks in enumerate(self._partitions)])

        def work(p: int) -> None:
            try:
                fold = partial(fold_over, [(p, self._partitions[p])])
                summary = worker_fn(_QueueChannel(p, inbox, outboxes[p]), p, fold, config)
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
