"""Sufficient statistics of least squares: one pass gives every squared-error fit of the data.

numpy / scipy.sparse only; never imports pyspark. For rows (x_i, y_i, w_i) a block returns its
weighted co-moments about its own means::

    W = sum w,  xbar = sum w x / W,  ybar = sum w y / W,
    Mxx = sum w (x - xbar)(x - xbar)^T (d, d),  Mxy = sum w (x - xbar)(y - ybar) (d,),
    Myy = sum w (y - ybar)^2

and blocks merge by the parallel update of co-moments (Chan, Golub & LeVeque; the same rule as
sparkopt.engine.stats uses for variances), so a sum over partitions stays as accurate as one pass
over centred data: the squared-error loss of any (beta, c) is then

    sum_i w_i (y_i - x_i.beta - c)^2 / 2
        = (Myy - 2 beta.Mxy + beta' Mxx beta) / 2 + W (ybar - xbar.beta - c)^2 / 2

with no catastrophic cancellation for features or labels far from 0 (raw moments X'WX, X'Wy
would lose ~log10((mean / sd)^2) digits there). Memory is O(d^2) per partition; MLlib's normal
solver goes to d = 4096.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..blocks import Block

__all__ = ["GramStats", "block_gram", "merge_gram"]


@dataclass(frozen=True)
class GramStats:
    """Weighted co-moments of one block, a partition or the whole data (see the module docstring)."""

    weight: float
    xbar: np.ndarray      # (d,)
    ybar: float
    Mxx: np.ndarray       # (d, d)
    Mxy: np.ndarray       # (d,)
    Myy: float

    def __add__(self, other: "GramStats") -> "GramStats":     # the fold combines results with +
        return merge_gram(self, other)

    @property
    def n_features(self) -> int:
        return self.xbar.shape[0]


def block_gram(block: Block) -> GramStats:
    """The co-moments of one block (dense or CSR). Dense rows are centred before their Gram
    matrix is formed; CSR blocks are never densified: their X'WX (a sparse product) is corrected
    by the rank-one W m m', exact in exact arithmetic and only losing digits on columns whose mean
    is large against their spread, which sparse (mostly zero) columns are not."""
    X, y, w = block.X, block.y, block.w
    W = float(w.sum())
    d = X.shape[1]
    if not W > 0:
        return GramStats(0.0, np.zeros(d), 0.0, np.zeros((d, d)), np.zeros(d), 0.0)
    xbar = np.asarray(X.T @ w).ravel() / W
    ybar = float(w @ y) / W
    ry = y - ybar
    if sp.issparse(X):
        Xc = sp.csr_matrix(X)
        WX = sp.csr_matrix((Xc.data * np.repeat(w, np.diff(Xc.indptr)), Xc.indices, Xc.indptr), shape=Xc.shape)
        raw = np.asarray((Xc.T @ WX).toarray())
        # sum w (x - m)(x - m)' = X'WX - W m m' (m is the weighted mean: the cross terms collapse)
        Mxx = raw - W * np.outer(xbar, xbar)
        Mxy = np.asarray(Xc.T @ (w * ry)).ravel()        # sum w (x - m) ry = X' w ry (sum w ry = 0)
    else:
        Xm = X - xbar
        Mxx = Xm.T @ (Xm * w[:, None])
        Mxy = Xm.T @ (w * ry)
    return GramStats(W, xbar, ybar, Mxx, Mxy, float(w @ (ry * ry)))


def merge_gram(a: GramStats, b: GramStats) -> GramStats:
    """Pure merge of two co-moment summaries (parallel update)."""
    if a.weight == 0.0:
        return b
    if b.weight == 0.0:
        return a
    W = a.weight + b.weight
    dx, dy = b.xbar - a.xbar, b.ybar - a.ybar
    f = a.weight * b.weight / W
    return GramStats(
        weight=W,
        xbar=a.xbar + dx * (b.weight / W),
        ybar=a.ybar + dy * (b.weight / W),
        Mxx=a.Mxx + b.Mxx + f * np.outer(dx, dx),
        Mxy=a.Mxy + b.Mxy + f * dx * dy,
        Myy=a.Myy + b.Myy + f * dy * dy,
    )
