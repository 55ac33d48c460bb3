"""A view of an engine restricted to some feature columns: the screened problems of a path.

numpy only; never imports pyspark. A regularization path with strong rules solves, at each
penalty, the problem over the features that survived screening, with every other coefficient
held at 0. :class:`ColumnSubsetEngine` gives the fit machinery (sparkopt.fit.build_objective,
any solver) exactly that problem: its blocks are the parent's with only those columns, its
statistics the parent's sliced to them, and its passes are the parent's passes (one pass over
the subset is one pass over the data). Because the per-feature statistics are the parent's, the
solver coordinates and the penalty of a kept feature are the ones the full problem gives it, so
the screened problem is the full problem restricted to ``beta[~columns] = 0``, not an
approximation of it.

The slice is taken block by block inside the pass that needs it (CSR column indexing is O(nnz), a
dense slice copies n x |columns|) and kept beside the block for the next passes of the same
columns (:data:`SLICE_CACHE`, on whichever process holds the block: the driver for a LocalEngine,
the resident engine's tasks), at most as many bytes as the block itself holds, least recently used
first out: a screened solve makes many passes over the same columns, and a path's columns change
only from point to point. (A TreeEngine's tasks see freshly deserialized blocks each pass, so
there the slice is taken every pass.)
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import numpy as np

from ..blocks import Block
from ..engine.stats import DataFacts, DataStats
from ..errors import InputError

__all__ = ["EngineView", "ColumnSubsetEngine", "slice_stats", "expand_coef", "restrict_coef"]


def slice_stats(stats: DataStats, columns: np.ndarray) -> DataStats:
    """``stats`` of the data with only ``columns`` (sorted feature indices) kept: per-feature
    arrays sliced, label and weight statistics unchanged."""
    columns = np.asarray(columns, dtype=np.int64)
    nonzero = np.asarray(stats.feature_nonzero)[columns]
    return replace(
        stats, n_features=int(len(columns)),
        feature_mean=np.asarray(stats.feature_mean)[columns], feature_m2=np.asarray(stats.feature_m2)[columns],
        feature_min=np.asarray(stats.feature_min)[columns], feature_max=np.asarray(stats.feature_max)[columns],
        feature_nonzero=nonzero, feature_nonfinite=np.asarray(stats.feature_nonfinite)[columns],
        nnz=int(nonzero.sum()), feature_sizes=(int(len(columns)),) if stats.feature_sizes else ())


def _nbytes(X) -> int:
    if hasattr(X, "data") and hasattr(X, "indices"):
        return int(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes)
    return int(np.asarray(X).nbytes)


class _SliceCache:
    """Column slices of live blocks: per block (by identity, dropped when the block is collected)
    an LRU of ``columns -> Block``, holding at most the block's own size in bytes."""

    def __init__(self):
        self._entries: dict[int, tuple[weakref.ref, OrderedDict]] = {}
        self._lock = threading.Lock()

    def _forget(self, key: int) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def get(self, block: Block, columns: np.ndarray) -> Block:
        key, ckey = id(block), columns.tobytes()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is block and ckey in entry[1]:
                entry[1].move_to_end(ckey)
                return entry[1][ckey]
        sub = replace(block, X=block.X[:, columns])
        budget = _nbytes(block.X)
        size = _nbytes(sub.X)
        if size > budget:
            return sub
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0]() is not block:
                try:
                    ref = weakref.ref(block, lambda _, k=key: self._forget(k))
                except TypeError:           # an object that cannot be referenced weakly: no cache
                    return sub
                entry = (ref, OrderedDict())
                self._entries[key] = entry
            slices = entry[1]
            slices[ckey] = sub
            while sum(_nbytes(b.X) for b in slices.values()) > budget:
                slices.popitem(last=False)
        return sub

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: the column slices kept between passes (see the module docstring)
SLICE_CACHE = _SliceCache()


class _OnColumns:
    """A block function applied to the block's ``columns`` only (picklable: shipped to tasks)."""

    def __init__(self, fn, columns: np.ndarray):
        self.fn, self.columns = fn, columns
        self.wants_index = bool(getattr(fn, "wants_index", False))

    def __call__(self, block: Block, payload: Any, index=None):
        sub = SLICE_CACHE.get(block, self.columns)
        return self.fn(sub, payload, index) if self.wants_index else self.fn(sub, payload)


class EngineView(DataFacts):
    """What sparkopt.fit and the solvers use of an engine, delegated to ``parent`` except the
    statistics (the view's own) and ``map_sum`` (subclasses wrap the block function): the pass,
    evaluation and traffic counters are the parent's, so a pass over a view counts as a pass
    over the data. Asynchronous worker programs do not run on a view."""

    def __init__(self, parent, stats: DataStats):
        self.parent, self._stats = parent, stats

    @property
    def kind(self) -> str:
        return getattr(self.parent, "kind", "local")

    @property
    def pass_overhead(self) -> float:
        return float(getattr(self.parent, "pass_overhead", 0.0))

    @property
    def passes(self) -> float:
        return self.parent.passes

    @property
    def evaluations(self) -> int:
        return self.parent.evaluations

    @property
    def bytes_sent(self) -> int:
        return self.parent.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self.parent.bytes_received

    def session(self):
        return self.parent.session()

    def register_functions(self, fns) -> None:
        """Nothing: a view's passes reach the parent wrapped, not as the functions named here."""

    def run_workers(self, worker_fn, config, server):
        raise InputError("a path's or a fold's view of the data cannot run worker programs (asynchronous "
                         "solvers); use a synchronous solver")


class ColumnSubsetEngine(EngineView):
    """``parent`` seen through feature ``columns`` (sorted, unique indices into its features)."""

    def __init__(self, parent, columns):
        columns = np.asarray(columns, dtype=np.int64)
        d = parent.stats.n_features
        if columns.ndim != 1 or np.any(columns < 0) or np.any(columns >= d) or np.any(np.diff(columns) <= 0):
            raise InputError(f"columns must be sorted unique feature indices in 0..{d - 1}")
        super().__init__(parent, slice_stats(parent.stats, columns))
        self.columns = columns

    def map_sum(self, fn, payload, *, fraction=None, seed=None):
        return self.parent.map_sum(_OnColumns(fn, self.columns), payload, fraction=fraction, seed=seed)


def _layout(n_features: int, fit_intercept: bool, n_outputs: int, has_scale: bool) -> tuple[int, int]:
    return n_features + int(fit_intercept), n_outputs * (n_features + int(fit_intercept)) + int(has_scale)


def restrict_coef(coef: np.ndarray, columns: np.ndarray, n_features: int, fit_intercept: bool, n_outputs: int,
                  has_scale: bool) -> np.ndarray:
    """The coefficient vector of the ``columns``-only problem from a full one (the block
    objectives' layout: K rows of [beta, c], then a scale)."""
    q, _ = _layout(n_features, fit_intercept, n_outputs, has_scale)
    coef = np.asarray(coef, dtype=float)
    rows = coef[: n_outputs * q].reshape(n_outputs, q)
    keep = np.concatenate([columns, [n_features]]) if fit_intercept else columns
    out = rows[:, keep].ravel()
    return np.concatenate([out, coef[-1:]]) if has_scale else out


def expand_coef(sub: np.ndarray, columns: np.ndarray, n_features: int, fit_intercept: bool, n_outputs: int,
                has_scale: bool) -> np.ndarray:
    """The full coefficient vector (zeros off ``columns``) from the ``columns``-only problem's."""
    q, n_params = _layout(n_features, fit_intercept, n_outputs, has_scale)
    qs = len(columns) + int(fit_intercept)
    sub = np.asarray(sub, dtype=float)
    out = np.zeros(n_params)
    rows = out[: n_outputs * q].reshape(n_outputs, q)
    sub_rows = sub[: n_outputs * qs].reshape(n_outputs, qs)
    rows[:, columns] = sub_rows[:, : len(columns)]
    if fit_intercept:
        rows[:, n_features] = sub_rows[:, len(columns)]
    if has_scale:
        out[-1] = sub[-1]
    return out
