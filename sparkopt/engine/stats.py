"""What one pass over the data learns: :class:`DataStats`.

numpy / scipy.sparse only; never imports pyspark.

Statistics are computed per block by :func:`block_stats` and combined by the pure function
:func:`merge_stats` (Chan et al.'s parallel update of weighted means and sums of squared
deviations, M2), so the local fold (:class:`~sparkopt.engine.local.LocalEngine`) and the
distributed pass (:func:`~sparkopt.engine.ingest.ingest`) run the very same code and, when the data
are split into the same blocks, give bit-identical numbers.

Weighted moments follow Spark's ``Summarizer`` (``SummarizerBuffer``) exactly:

* ``mean_j = sum_i w_i x_ij / sum_i w_i``;
* ``var_j  = M2_j / (W - sum_i w_i^2 / W)`` with ``M2_j = sum_i w_i (x_ij - mean_j)^2`` and
  ``W = sum_i w_i`` (the unbiased, "reliability weights" estimate; with unit weights it is the usual
  n - 1 sample variance); the variance is 0 when that denominator is not positive, and is clipped
  at 0 against rounding.

Rows of weight 0 contribute nothing to the moments (as in Spark, which skips them) but do count in
``n_rows``, ``nnz``, the min / max and the data-quality counters, which describe every row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from functools import reduce
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

__all__ = [
    "DataStats",
    "DataFacts",
    "block_stats",
    "merge_stats",
    "combine_partitions",
    "partition_stats",
    "finish_partition",
    "compact_stats",
    "expand_stats",
    "merge_partition_records",
    "data_problems",
]

_ARRAY_FIELDS = (
    "feature_mean",
    "feature_m2",
    "feature_min",
    "feature_max",
    "feature_nonzero",
    "feature_nonfinite",
)
_INT_ARRAY_FIELDS = ("feature_nonzero", "feature_nonfinite")


def _empty_arrays(d: int) -> dict[str, np.ndarray]:
    return {
        "feature_mean": np.zeros(d),
        "feature_m2": np.zeros(d),
        "feature_min": np.full(d, np.inf),
        "feature_max": np.full(d, -np.inf),
        "feature_nonzero": np.zeros(d, dtype=np.int64),
        "feature_nonfinite": np.zeros(d, dtype=np.int64),
    }


@dataclass(frozen=True, eq=False)
class DataStats:
    """Plain-data summary of a set of rows (one block, one partition or the whole data set).

    Combine two summaries with :meth:`merge` (or :func:`merge_stats`); the merge is associative
    and commutative up to rounding. Arrays have length ``n_features``.
    """

    n_rows: int = 0
    n_features: int = 0
    weight_sum: float = 0.0
    weight_sq_sum: float = 0.0
    # features (all arrays (d,)); M2 = weighted sum of squared deviations from the mean
    feature_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    feature_m2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    feature_min: np.ndarray = field(default_factory=lambda: np.zeros(0))
    feature_max: np.ndarray = field(default_factory=lambda: np.zeros(0))
    feature_nonzero: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    feature_nonfinite: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    nnz: int = 0
    # labels
    label_mean: float = 0.0
    label_m2: float = 0.0
    label_min: float = math.inf
    label_max: float = -math.inf
    n_label_non_integer: int = 0
    n_nonfinite_labels: int = 0
    # weights
    n_negative_weights: int = 0
    n_nonfinite_weights: int = 0
    n_zero_weights: int = 0
    # input quality: nulls per input column (rows with a null are left out of the blocks) and
    # the distinct feature-vector sizes seen (more than one is an input error)
    null_counts: Mapping[str, int] = field(default_factory=dict)
    feature_sizes: tuple[int, ...] = ()
    # layout
    n_dense_blocks: int = 0
    n_sparse_blocks: int = 0
    num_partitions: int = 0
    n_nonempty_partitions: int = 0
    # rows of each partition, in partition order: set by combine_partitions only (a pairwise merge
    # does not know the order, so it leaves () and equality ignores the field). The resident engine
    # balances its tasks with it instead of running a job to count rows.
    partition_rows: tuple[int, ...] = ()

    # ---------------------------------------------------------------- derived quantities
    @property
    def n_blocks(self) -> int:
        return self.n_dense_blocks + self.n_sparse_blocks

    @property
    def is_sparse(self) -> bool:
        """True when the blocks hold CSR matrices (every block of a data set has one kind)."""
        return self.n_sparse_blocks > 0 and self.n_dense_blocks == 0

    @property
    def variance_denominator(self) -> float:
        """``W - sum w^2 / W``: Spark's denominator of the unbiased weighted variance."""
        if not self.weight_sum > 0:
            return 0.0
        return self.weight_sum - self.weight_sq_sum / self.weight_sum

    @property
    def feature_var(self) -> np.ndarray:
        den = self.variance_denominator
        if not den > 0:
            return np.zeros(self.n_features)
        return np.maximum(self.feature_m2 / den, 0.0)

    @property
    def feature_std(self) -> np.ndarray:
        return np.sqrt(self.feature_var)

    @property
    def label_var(self) -> float:
        den = self.variance_denominator
        if not den > 0:
            return 0.0
        return max(self.label_m2 / den, 0.0)

    @property
    def label_std(self) -> float:
        return math.sqrt(self.label_var)

    @property
    def n_nonfinite_features(self) -> int:
        return int(self.feature_nonfinite.sum())

    @property
    def density(self) -> float:
        cells = self.n_rows * self.n_features
        return self.nnz / cells if cells else 0.0

    # ---------------------------------------------------------------- combination
    def merge(self, other: "DataStats") -> "DataStats":
        return merge_stats(self, other)

    @classmethod
    def empty(cls, n_features: int = 0) -> "DataStats":
        return cls(n_features=n_features, **_empty_arrays(n_features))

    # ---------------------------------------------------------------- (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (arrays as lists; non-finite floats stay float('nan') / inf, which
        ``json.dumps`` writes as NaN / Infinity). Derived variances are included for readers."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = {str(k): int(c) for k, c in v.items()}
            elif isinstance(v, (np.integer, np.floating)):
                v = v.item()
            out[f.name] = v
        out["feature_var"] = self.feature_var.tolist()
        out["label_var"] = self.label_var
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DataStats":
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k not in names:
                continue  # derived values (feature_var, label_var)
            if k in _ARRAY_FIELDS:
                v = np.asarray(v, dtype=np.int64 if k in _INT_ARRAY_FIELDS else np.float64)
            elif k in ("feature_sizes", "partition_rows"):
                v = tuple(int(s) for s in v)
            elif k == "null_counts":
                v = {str(c): int(n) for c, n in v.items()}
            kw[k] = v
        return cls(**kw)

    def __eq__(self, other: object) -> bool:  # exact equality, arrays included (NaN == NaN)
        if not isinstance(other, DataStats):
            return NotImplemented
        for f in fields(self):
            if f.name == "partition_rows":
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray):
                if not np.array_equal(a, b, equal_nan=True):
                    return False
            elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
                continue
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"DataStats(n_rows={self.n_rows}, n_features={self.n_features}, "
            f"weight_sum={self.weight_sum:g}, nnz={self.nnz}, is_sparse={self.is_sparse}, "
            f"label_mean={self.label_mean:g}, label_std={self.label_std:g}, "
            f"num_partitions={self.num_partitions}, n_blocks={self.n_blocks})"
        )


# -------------------------------------------------------------------- per block
def _wbincount(indices: np.ndarray, weights: np.ndarray, d: int) -> np.ndarray:
    # np.bincount returns int64 zeros (not float) when there are no indices at all
    return np.bincount(indices, weights=weights, minlength=d).astype(np.float64, copy=False)


class DataFacts:
    """``stats`` and the counts engines report from it, for an object that holds its
    :class:`DataStats` in ``_stats`` (the engines, and the views of one that tuning fits on)."""

    _stats: DataStats

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


def block_stats(
    X: np.ndarray | sp.csr_matrix,
    y: np.ndarray,
    w: np.ndarray,
    *,
    null_counts: Mapping[str, int] | None = None,
) -> DataStats:
    """Statistics of one block of rows (X dense (n, d) or CSR, labels y (n,), weights w (n,)).

    ``null_counts`` carries the per-column null counts seen while building the block (rows with
    nulls are not in the block)."""
    n, d = X.shape
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    nulls = {k: int(v) for k, v in (null_counts or {}).items() if v}
    is_sparse = sp.issparse(X)
    base = dict(
        n_features=d,
        null_counts=nulls,
        feature_sizes=(d,) if n else (),
        n_dense_blocks=0 if is_sparse else 1,
        n_sparse_blocks=1 if is_sparse else 0,
    )
    if n == 0:
        return DataStats(**base, **_empty_arrays(d))

    with np.errstate(all="ignore"):
        W = float(w.sum())
        W2 = float(w @ w)

        # ---- labels
        fin_y = np.isfinite(y)
        n_nonfinite_labels = int(n - np.count_nonzero(fin_y))
        yf = y[fin_y] if n_nonfinite_labels else y
        if yf.size:
            label_min, label_max = float(yf.min()), float(yf.max())
        else:
            label_min, label_max = math.inf, -math.inf
        n_label_non_integer = int(np.count_nonzero(yf != np.floor(yf)))
        if W != 0.0:
            label_mean = float(w @ y) / W
            r = y - label_mean
            label_m2 = float(w @ (r * r))
        else:
            label_mean, label_m2 = 0.0, 0.0

        # ---- features
        if is_sparse:
            X = X.tocsr() if not sp.isspmatrix_csr(X) else X
            data, indices = X.data, X.indices
            row_nnz = np.diff(X.indptr)
            if W != 0.0:
                mean = (X.T @ w) / W
                # M2_j = sum_i w_i (x_ij - mu_j)^2: stored entries, plus the rows where x_ij is
                # an implicit zero, each adding w_i mu_j^2 (all terms >= 0: no cancellation).
                w_e = np.repeat(w, row_nnz)
                dev = data - mean[indices]
                m2 = _wbincount(indices, w_e * dev * dev, d)
                w_implicit = W - _wbincount(indices, w_e, d)
                m2 += w_implicit * mean * mean
            else:
                mean, m2 = np.zeros(d), np.zeros(d)
            fmin = np.full(d, np.inf)
            fmax = np.full(d, -np.inf)
            np.fmin.at(fmin, indices, data)
            np.fmax.at(fmax, indices, data)
            stored = np.bincount(indices, minlength=d)
            implicit = stored < n  # columns with implicit zeros
            fmin[implicit] = np.fmin(fmin[implicit], 0.0)
            fmax[implicit] = np.fmax(fmax[implicit], 0.0)
            nonzero = np.bincount(indices[data != 0], minlength=d).astype(np.int64)
            bad = ~np.isfinite(data)
            nonfinite = (
                np.bincount(indices[bad], minlength=d).astype(np.int64)
                if bad.any()
                else np.zeros(d, dtype=np.int64)
            )
        else:
            X = np.asarray(X, dtype=np.float64)
            if W != 0.0:
                mean = (w @ X) / W
                # Two-pass M2 over row chunks (~2 MB): cache-friendly, and partial sums per chunk
                # keep the rounding error of long sums small.
                m2 = np.zeros(d)
                step = max(1, (1 << 18) // max(d, 1))
                for s in range(0, n, step):
                    dev = X[s : s + step] - mean
                    dev *= dev
                    m2 += w[s : s + step] @ dev
            else:
                mean, m2 = np.zeros(d), np.zeros(d)
            fmin = np.fmin.reduce(X, axis=0)
            fmax = np.fmax.reduce(X, axis=0)
            nonzero = np.count_nonzero(X, axis=0).astype(np.int64)
            fin = np.isfinite(X)
            nonfinite = (n - np.count_nonzero(fin, axis=0)).astype(np.int64)

        fin_w = np.isfinite(w)
        return DataStats(
            n_rows=int(n),
            weight_sum=W,
            weight_sq_sum=W2,
            feature_mean=np.asarray(mean, dtype=np.float64),
            feature_m2=np.asarray(m2, dtype=np.float64),
            feature_min=np.asarray(fmin, dtype=np.float64),
            feature_max=np.asarray(fmax, dtype=np.float64),
            feature_nonzero=nonzero,
            feature_nonfinite=nonfinite,
            nnz=int(nonzero.sum()),
            label_mean=label_mean,
            label_m2=label_m2,
            label_min=label_min,
            label_max=label_max,
            n_label_non_integer=n_label_non_integer,
            n_nonfinite_labels=n_nonfinite_labels,
            n_negative_weights=int(np.count_nonzero(w < 0)),
            n_nonfinite_weights=int(n - np.count_nonzero(fin_w)),
            n_zero_weights=int(np.count_nonzero(w == 0)),
            **base,
        )


# -------------------------------------------------------------------- merging
def _chan(mean_a, m2_a, wa, mean_b, m2_b, wb):
    """Chan et al. weighted merge of (mean, M2) pairs with weight sums wa, wb."""
    W = wa + wb
    if W == 0.0 or wb == 0.0:
        return mean_a, m2_a + m2_b
    if wa == 0.0:
        return mean_b, m2_a + m2_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (wb / W)
    m2 = m2_a + m2_b + delta * delta * (wa * wb / W)
    return mean, m2


def merge_stats(a: DataStats, b: DataStats) -> DataStats:
    """Pure merge of two summaries (neither argument is modified)."""
    sizes = tuple(sorted(set(a.feature_sizes) | set(b.feature_sizes)))
    with np.errstate(all="ignore"):
        wa, wb = a.weight_sum, b.weight_sum
        if b.n_rows == 0 and b.n_features in (0, a.n_features):
            feats = {k: getattr(a, k) for k in _ARRAY_FIELDS}
            d = a.n_features
        elif a.n_rows == 0 and a.n_features in (0, b.n_features):
            feats = {k: getattr(b, k) for k in _ARRAY_FIELDS}
            d = b.n_features
        elif a.n_features == b.n_features:
            d = a.n_features
            mean, m2 = _chan(a.feature_mean, a.feature_m2, wa, b.feature_mean, b.feature_m2, wb)
            feats = dict(
                feature_mean=mean,
                feature_m2=m2,
                feature_min=np.fmin(a.feature_min, b.feature_min),
                feature_max=np.fmax(a.feature_max, b.feature_max),
                feature_nonzero=a.feature_nonzero + b.feature_nonzero,
                feature_nonfinite=a.feature_nonfinite + b.feature_nonfinite,
            )
        else:
            # Different vector sizes: an input error reported through feature_sizes. Keep the
            # counters, give up on per-feature numbers.
            d = max(a.n_features, b.n_features)
            feats = _empty_arrays(d)
            feats["feature_mean"] = np.full(d, np.nan)
            feats["feature_m2"] = np.full(d, np.nan)
        label_mean, label_m2 = _chan(a.label_mean, a.label_m2, wa, b.label_mean, b.label_m2, wb)
    nulls = dict(a.null_counts)
    for k, v in b.null_counts.items():
        nulls[k] = nulls.get(k, 0) + v
    return DataStats(
        n_rows=a.n_rows + b.n_rows,
        n_features=d,
        weight_sum=wa + wb,
        weight_sq_sum=a.weight_sq_sum + b.weight_sq_sum,
        nnz=a.nnz + b.nnz,
        label_mean=float(label_mean),
        label_m2=float(label_m2),
        label_min=min(a.label_min, b.label_min),
        label_max=max(a.label_max, b.label_max),
        n_label_non_integer=a.n_label_non_integer + b.n_label_non_integer,
        n_nonfinite_labels=a.n_nonfinite_labels + b.n_nonfinite_labels,
        n_negative_weights=a.n_negative_weights + b.n_negative_weights,
        n_nonfinite_weights=a.n_nonfinite_weights + b.n_nonfinite_weights,
        n_zero_weights=a.n_zero_weights + b.n_zero_weights,
        null_counts=nulls,
        feature_sizes=sizes,
        n_dense_blocks=a.n_dense_blocks + b.n_dense_blocks,
        n_sparse_blocks=a.n_sparse_blocks + b.n_sparse_blocks,
        num_partitions=a.num_partitions + b.num_partitions,
        n_nonempty_partitions=a.n_nonempty_partitions + b.n_nonempty_partitions,
        **feats,
    )


def finish_partition(merged: DataStats) -> DataStats:
    """A partition's merged block statistics, counted as one partition (non-empty if it has rows)."""
    return replace(merged, num_partitions=1, n_nonempty_partitions=int(merged.n_rows > 0))


def partition_stats(blocks: Iterable[DataStats], n_features: int = 0) -> DataStats:
    """The statistics of one partition: its blocks' folded in order from ``empty(n_features)``
    (the ingest tasks run this very fold as the blocks are built, see engine/ingest.py)."""
    return finish_partition(reduce(merge_stats, blocks, DataStats.empty(n_features)))


def combine_partitions(
    per_partition: Iterable[Iterable[DataStats]], n_features: int = 0
) -> DataStats:
    """Fold block statistics partition by partition, in order: the one fold order shared by the
    local engine and the distributed pass. Sets ``num_partitions`` (one per inner iterable, empty
    ones included), ``n_nonempty_partitions`` and ``partition_rows``."""
    total = DataStats.empty(n_features)
    rows = []
    for blocks in per_partition:
        part = partition_stats(blocks, n_features)
        total = merge_stats(total, part)
        rows.append(part.n_rows)
    return replace(total, partition_rows=tuple(rows))


# -------------------------------------------------------------------- one record per partition
# What a feature no row of a partition stores looks like in its statistics (CSR data: mean, M2,
# min and max 0 from the implicit zeros, no counts); a compact record lists only the features
# whose entries differ from it, bit for bit.
_ABSENT = {"feature_mean": 0.0, "feature_m2": 0.0, "feature_min": 0.0, "feature_max": 0.0,
           "feature_nonzero": 0, "feature_nonfinite": 0}


def _differs_from_absent(stats: DataStats) -> np.ndarray:
    differs = np.zeros(stats.n_features, dtype=bool)
    for name in _ARRAY_FIELDS:
        values = np.ascontiguousarray(getattr(stats, name))
        # compare bits, so -0.0 and NaN payloads are kept exactly
        differs |= (values.view(np.uint64) != 0) if values.dtype == np.float64 else (values != _ABSENT[name])
    return differs


def compact_stats(stats: DataStats) -> dict[str, Any]:
    """A partition's statistics as the record its ingest task sends the driver: the scalars,
    and the per-feature arrays either whole or, when fewer than half the features differ from
    an absent feature's entries (sparse data), as ``index`` plus those entries only. O(features
    the partition touches) for sparse data instead of O(d); :func:`expand_stats` inverts it exactly."""
    d = stats.n_features
    arrays = {name: getattr(stats, name) for name in _ARRAY_FIELDS}
    index = None
    if all(a.shape == (d,) for a in arrays.values()):
        touched = np.flatnonzero(_differs_from_absent(stats))
        if touched.size < d // 2:
            index = touched.astype(np.int64 if d > np.iinfo(np.int32).max else np.int32)
            arrays = {name: a[index] for name, a in arrays.items()}
    empty = {name: np.zeros(0, dtype=getattr(stats, name).dtype) for name in _ARRAY_FIELDS}
    return {"scalars": replace(stats, **empty), "n_features": d, "index": index, **arrays}


def expand_stats(record: Mapping[str, Any]) -> DataStats:
    """The DataStats a :func:`compact_stats` record holds (exactly the one compacted)."""
    d, index = record["n_features"], record["index"]
    arrays = {}
    for name in _ARRAY_FIELDS:
        values = record[name]
        if index is not None:
            full = np.full(d, _ABSENT[name], dtype=values.dtype)
            full[index] = values
            values = full
        arrays[name] = values
    return replace(record["scalars"], **arrays)


def merge_partition_records(
    records: Iterable[tuple[int, Mapping[str, Any]]], num_partitions: int, n_features: int = 0
) -> DataStats:
    """The data's statistics from (partition index, :func:`compact_stats` record) pairs: the
    ordered fold of :func:`combine_partitions`, one partition expanded at a time (driver memory
    O(d) plus the compact records). A partition without a record is empty; a second record for
    one partition (a task Spark ran again) is ignored."""
    by_partition: dict[int, Mapping[str, Any]] = {}
    for p, record in records:
        by_partition.setdefault(int(p), record)
    total = DataStats.empty(n_features)
    rows = []
    for p in range(num_partitions):
        record = by_partition.get(p)
        part = expand_stats(record) if record is not None else partition_stats([], n_features)
        total = merge_stats(total, part)
        rows.append(part.n_rows)
    return replace(total, partition_rows=tuple(rows))


# -------------------------------------------------------------------- validation
def _fmt_names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def data_problems(
    stats: DataStats,
    *,
    features: str | Sequence[str] = "features",
    label: str = "label",
    weight: str | None = None,
    source: str = "input DataFrame",
) -> list[str]:
    """Human-readable descriptions of everything in ``stats`` that makes the data unusable for
    fitting (empty list when the data are fine). Each message names the column and the counts.

    ``features`` is the features column name, or the list of assembled numeric columns."""
    problems: list[str] = []
    if isinstance(features, str):
        feat_desc = f"features column {features!r}"
        feat_cols: list[str] | None = None
    else:
        feat_cols = list(features)
        feat_desc = f"features columns [{_fmt_names(feat_cols)}]"

    if len(stats.feature_sizes) > 1:
        problems.append(
            f"{feat_desc} has vectors of different sizes {list(stats.feature_sizes)}; "
            "all feature vectors must have the same size"
        )
    elif stats.n_rows and stats.n_features == 0:
        problems.append(f"{feat_desc} has vectors of size 0; at least one feature is needed")

    nulls = dict(stats.null_counts)
    if nulls:
        parts = [
            f"column {c!r} has {n} null value{'s' if n != 1 else ''}" for c, n in nulls.items()
        ]
        problems.append("null values are not allowed: " + "; ".join(parts))

    if stats.n_rows == 0 and not nulls and len(stats.feature_sizes) <= 1:
        cols = [features] if isinstance(features, str) else list(features)
        cols = cols + [label] + ([weight] if weight else [])
        problems.append(
            f"{source} is empty (0 rows) in columns [{_fmt_names(cols)}]; nothing to fit"
        )
        return problems

    if stats.n_nonfinite_features and len(stats.feature_sizes) <= 1:
        bad = np.flatnonzero(stats.feature_nonfinite)
        if feat_cols is not None and len(feat_cols) == stats.n_features:
            counts = stats.feature_nonfinite
            where = ", ".join(f"{feat_cols[j]!r}: {int(counts[j])}" for j in bad[:10])
            where = f"per column {{{where}{', ...' if len(bad) > 10 else ''}}}"
        else:
            idx = ", ".join(str(int(j)) for j in bad[:10])
            where = f"at feature indices [{idx}{', ...' if len(bad) > 10 else ''}]"
        problems.append(
            f"{feat_desc} has {stats.n_nonfinite_features} non-finite values (NaN or infinity) "
            f"{where}"
        )
    # Finite values can still be too large for float64 arithmetic: when a column's weighted
    # moments overflow (|x| above ~1e154 / sqrt(n)), its standard deviation is inf, the solver
    # coordinates z = beta * sd turn into inf * 0 = NaN, and loss / gradient sums overflow as
    # well. MLlib silently zeroes such a feature and scikit-learn warns and returns NaN; neither is
    # what an unattended job wants, so the data are refused here, naming the column.
    if len(stats.feature_sizes) <= 1 and stats.n_features:
        with np.errstate(invalid="ignore"):
            huge = (~np.isfinite(stats.feature_m2) | ~np.isfinite(stats.feature_mean)) & (
                stats.feature_nonfinite == 0
            )
        if huge.any():
            bad = np.flatnonzero(huge)
            top = np.fmax(np.abs(stats.feature_min[bad]), np.abs(stats.feature_max[bad]))
            if feat_cols is not None and len(feat_cols) == stats.n_features:
                where = ", ".join(f"{feat_cols[j]!r}: {t:.3g}" for j, t in zip(bad[:10], top))
                where = f"max |value| per column {{{where}{', ...' if len(bad) > 10 else ''}}}"
            else:
                where = ", ".join(f"{int(j)}: {t:.3g}" for j, t in zip(bad[:10], top))
                where = f"max |value| at feature indices {{{where}{', ...' if len(bad) > 10 else ''}}}"
            problems.append(
                f"{feat_desc} has values too large for float64 arithmetic ({where}): their "
                "variance overflows; rescale these features (divide by a constant or take logs)"
            )
    if stats.n_nonfinite_labels:
        problems.append(
            f"label column {label!r} has {stats.n_nonfinite_labels} non-finite values "
            f"(NaN or infinity) in {stats.n_rows} rows"
        )
    if (
        not stats.n_nonfinite_labels
        and not stats.n_nonfinite_weights
        and not (math.isfinite(stats.label_mean) and math.isfinite(stats.label_m2))
    ):
        top = max(abs(stats.label_min), abs(stats.label_max))
        problems.append(
            f"label column {label!r} has values too large for float64 arithmetic (max |value| "
            f"{top:.3g}): their variance overflows; rescale the label"
        )
    wdesc = f"weight column {weight!r}" if weight else "weights"
    if stats.n_nonfinite_weights:
        problems.append(
            f"{wdesc} has {stats.n_nonfinite_weights} non-finite values (NaN or infinity) "
            f"in {stats.n_rows} rows"
        )
    if stats.n_negative_weights:
        problems.append(
            f"{wdesc} has {stats.n_negative_weights} negative values in {stats.n_rows} rows; "
            "weights must be >= 0"
        )
    if (
        not stats.n_nonfinite_weights
        and not stats.n_negative_weights
        and not (math.isfinite(stats.weight_sum) and math.isfinite(stats.weight_sq_sum))
    ):
        # the objective divides by sum w and the variances by W - sum w^2 / W: both must exist
        problems.append(
            f"{wdesc} has values too large for float64 arithmetic (sum of weights "
            f"{stats.weight_sum:.3g}, sum of squared weights {stats.weight_sq_sum:.3g}); "
            "weights only matter relative to each other: divide them by a constant"
        )
    elif (
        stats.n_rows
        and not stats.n_nonfinite_weights
        and not stats.n_negative_weights
        and not stats.weight_sum > 0
    ):
        problems.append(
            f"{wdesc}: all {stats.n_rows} weights are zero (weight sum {stats.weight_sum:g}); "
            "the weight sum must be > 0"
        )
    return problems
