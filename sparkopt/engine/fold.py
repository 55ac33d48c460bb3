"""The one block fold every engine runs: (partition, block)-ordered sums of a block function.

numpy / scipy.sparse only; never imports pyspark. The in-memory engine, the tree engine's tasks,
the resident engine's tasks and the asynchronous workers all sum ``fn(block, payload)`` through
:func:`fold_partition` / :func:`fold_partitions`, with the same sampling seeds, so for the same
blocks they compute the same per-partition sums and draw the same samples.

The contract of a block function:

* ``fn(block, payload)`` returns a float, an ndarray or a tuple of those (or any picklable
  value with an associative ``+``, such as sparkopt.objectives.gram.GramStats); results are
  added element-wise (:func:`add_results`), so a sum over partitions is plain addition;
* with ``fraction`` set, block ``j`` of partition ``p`` is first replaced by
  ``block.sample(fraction, sample_rng(seed, p, j))``;
* a ``fn`` with a true attribute ``wants_index`` is called as ``fn(block, payload, (p, j))``:
  block-side code that draws its own samples (local SGD's steps) seeds them from its position,
  which is the same on every engine because every engine folds through this module.
"""
from __future__ import annotations

import secrets
import time
from typing import Any, Callable, Iterable

import numpy as np

from ..blocks import Block, sample_rng
from ..errors import InputError
from ..rules import check_param

__all__ = ["BlockFn", "add_results", "fold_partition", "fold_positioned", "fold_partitions", "fold_held",
           "fold_over", "check_depth", "check_sampling"]

BlockFn = Callable[[Block, Any], Any]


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
    return fold_positioned(fn, value, partition_index, enumerate(blocks), fraction, seed)


def fold_positioned(
    fn: BlockFn,
    value: Any,
    partition_index: int,
    blocks: Iterable[tuple[int, Block]],
    fraction: float | None = None,
    seed: int | None = None,
    clock: list | None = None,
) -> Any:
    """:func:`fold_partition` over ``(j, block)`` pairs (in order) that need not be all of the
    partition's blocks: a task that holds some blocks of a partition (the resident engine's
    load balancing) folds them at their own positions, so sampling and block functions that
    read ``(p, j)`` see what every engine sees. ``clock``: a list each block's seconds are
    appended to."""
    with_index = bool(getattr(fn, "wants_index", False))
    acc = None
    for j, block in blocks:
        start = time.perf_counter() if clock is not None else 0.0
        if fraction is not None:
            block = block.sample(fraction, sample_rng(seed, partition_index, j))
        acc = add_results(acc, fn(block, value, (partition_index, j)) if with_index else fn(block, value))
        if clock is not None:
            clock.append(time.perf_counter() - start)
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


def fold_held(
    fn: BlockFn,
    value: Any,
    held: Iterable[tuple[int, Iterable[tuple[int, Block]]]],
    fraction: float | None = None,
    seed: int | None = None,
    clock: list | None = None,
) -> Any:
    """:func:`fold_partitions` over ``(partition index, [(j, block), ...])`` pairs, in the order
    given: what a task holding some blocks of some partitions computes (with whole partitions,
    the very sums of :func:`fold_partitions`). ``clock`` as :func:`fold_positioned`'s."""
    acc = None
    for index, pairs in held:
        acc = add_results(acc, fold_positioned(fn, value, index, pairs, fraction, seed, clock))
    return acc


def fold_over(partitions: list, fn: BlockFn, payload: Any, fraction: float | None = None,
              seed: int | None = None) -> Any:
    """:func:`fold_partitions` with the data first: bound to a worker's own partitions with
    ``functools.partial``, it is the ``fold`` a worker program receives (see
    sparkopt.engine.contract)."""
    return fold_partitions(fn, payload, partitions, fraction, seed)


def check_depth(depth: Any) -> int:
    return int(check_param("aggregationDepth", depth))


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
