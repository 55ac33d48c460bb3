"""Linear-model objective on one block of rows: weighted sums of loss, gradient and Hessian.

numpy / scipy.sparse only; never imports pyspark.

What a block returns
--------------------
For a block ``(X, y, w)`` and coefficient vector ``coef`` every method returns a *weighted sum
over the block's rows* (not a mean)::

    loss_sum(coef)  = sum_i w_i * loss(y_i, m_i)
    gradient        = d loss_sum / d coef
    hessp(coef, V)  = (d^2 loss_sum / d coef^2) @ V

so partitions combine by plain addition and the driver divides by ``sum_i w_i`` (Spark's
``RDDLossFunction`` with its block aggregators works the same way). Penalties are not applied
here (see ``penalties.py``).

Coefficient layout (pinned; solvers, engines and estimators rely on it)
-----------------------------------------------------------------------
``d = n_features``, ``fi = 1 if fit_intercept else 0``.

- Single-output losses (``squared_error``, ``logistic``, ``poisson``, ``hinge``,
  ``squared_hinge``): ``coef = [beta (d), intercept (only if fit_intercept)]``,
  ``n_params = d + fi``; margins ``m_i = x_i . beta + c``.
- ``huber``: ``coef = [beta (d), intercept (only if fit_intercept), sigma]``, sigma LAST,
  ``n_params = d + fi + 1``. The loss is only defined for ``sigma > 0``
  (:meth:`HuberBlockObjective.lower_bounds` gives the box a bounded solver should use).
- ``multinomial`` with ``K = n_classes``: K rows ``[beta_k (d), intercept_k (if fit_intercept)]``
  flattened row-major, ``n_params = K * (d + fi)``; margins ``M_ik = x_i . beta_k + c_k``.
  Labels are integers ``0..K-1`` (stored as float64 in the block).

The intercept(s) and sigma are never penalized: :meth:`penalized_mask` is True on beta entries
only.

Cost. Every pass is a few BLAS calls (``X @ beta``, ``X.T @ r``) for dense X or sparse
mat-vecs for CSR, O(n d) or O(nnz); no Python loop over rows. ``hessp`` never forms a
``d x d`` matrix, so it serves any ``d``; ``hess`` returns the dense ``n_params`` square matrix
and is meant for small ``n_params`` only.
"""
from __future__ import annotations

import functools
import weakref
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp

from sparkopt.blocks import Block

from . import losses as _losses
from .losses import LOSSES, loss_info

__all__ = [
    "LOSSES",
    "BlockObjective",
    "PointwiseBlockObjective",
    "HuberBlockObjective",
    "MultinomialBlockObjective",
    "GLMBlockObjective",
    "make_block_objective",
]

Matrix = Union[np.ndarray, sp.spmatrix, sp.sparray]


# --------------------------------------------------------------------------------------------
# Dense / CSR kernels. Each is one BLAS call or one sparse product; they accept 1-D or 2-D
# right-hand sides so several Hessian-vector products share a single pass over X.
# --------------------------------------------------------------------------------------------


def _xv(X: Matrix, v: np.ndarray) -> np.ndarray:
    """``X @ v``: (n,) for v (d,), (n, m) for v (d, m)."""
    out = X @ v
    return np.asarray(out)


def _xtr(X: Matrix, r: np.ndarray) -> np.ndarray:
    """``X.T @ r``: (d,) for r (n,), (d, m) for r (n, m)."""
    return np.asarray(X.T @ r)


#: a CSR block's columns with at least this share of stored entries go into a dense side
#: matrix for the Hessian: the sparse product's cost grows with the square of each row's stored
#: entries, and a few nearly full columns (counts, flags) dominate it. kddcup (118 columns, 12.5
#: stored per row, 9 columns >= 50% full): the Gram in 0.10 s instead of 0.20 s
DENSE_COLUMN_SHARE = 0.5


class _ColumnSplit:
    """A CSR matrix's nearly full columns as a dense (n, nd) array and the rest as CSR."""

    def __init__(self, X: sp.csr_matrix, dense: np.ndarray) -> None:
        d = X.shape[1]
        self.dense = dense
        self.sparse = np.setdiff1d(np.arange(d), dense)
        columns = X.tocsc()
        self.Xd = np.ascontiguousarray(columns[:, dense].toarray())
        self.Xs = columns[:, self.sparse].tocsr()


# id(X) -> (weak reference to X, its split or None); entries leave with their matrix
_SPLITS: dict = {}


def dense_columns(X: sp.csr_matrix, share: float = DENSE_COLUMN_SHARE) -> np.ndarray:
    """Indices of the columns of CSR ``X`` whose stored entries are at least ``share`` of its rows."""
    counts = np.bincount(X.indices, minlength=X.shape[1])
    return np.flatnonzero(counts >= share * max(X.shape[0], 1))


def _column_split(X: sp.csr_matrix) -> Optional[_ColumnSplit]:
    """The (cached) dense/sparse column split of a CSR block, None when no column is nearly full
    or every one is. Cached per matrix object: blocks that stay in memory across passes (resident,
    driver and in-memory engines) split once."""
    entry = _SPLITS.get(id(X))
    if entry is not None and entry[0]() is X:
        return entry[1]
    dense = dense_columns(X)
    split = _ColumnSplit(X, dense) if 0 < len(dense) < X.shape[1] else None
    key = id(X)
    _SPLITS[key] = (weakref.ref(X, lambda _ref, key=key: _SPLITS.pop(key, None)), split)
    return split


def _sparse_gram(X: sp.csr_matrix, D: np.ndarray) -> np.ndarray:
    Xc = sp.csr_matrix(X)
    # Scale each stored entry by its row's D: stays CSR, no coo round trip.
    DX = sp.csr_matrix((Xc.data * np.repeat(D, np.diff(Xc.indptr)), Xc.indices, Xc.indptr), shape=Xc.shape)
    return np.asarray((Xc.T @ DX).toarray())


def _dense_gram(X: np.ndarray, D: Optional[np.ndarray] = None) -> np.ndarray:
    """``X.T @ diag(D) @ X`` (``X.T @ X`` for D None) for dense X. With every weight >= 0 (convex
    losses) as ``R.T @ R`` for ``R = sqrt(D) X``, which numpy computes as one symmetric rank-k
    update (half a GEMM's flops: 1.5-2x faster at 1e5 x 100), else a GEMM."""
    if D is None:
        return X.T @ X
    if np.all(D >= 0):
        R = X * np.sqrt(D)[:, None]
        return R.T @ R
    return X.T @ (X * D[:, None])


def _gram(X: Matrix, D: np.ndarray) -> np.ndarray:
    """Dense ``X.T @ diag(D) @ X`` of shape (d, d)."""
    if not sp.issparse(X):
        return _dense_gram(X, D)
    X = sp.csr_matrix(X) if not isinstance(X, sp.csr_matrix) else X
    split = _column_split(X)
    if split is None:
        return _sparse_gram(X, D)
    a, b = split.dense, split.sparse
    DXd = split.Xd * D[:, None]
    H = np.empty((X.shape[1], X.shape[1]))
    H[np.ix_(a, a)] = _dense_gram(split.Xd, D)
    cross = np.asarray(split.Xs.T @ DXd)
    H[np.ix_(b, a)] = cross
    H[np.ix_(a, b)] = cross.T
    H[np.ix_(b, b)] = _sparse_gram(split.Xs, D)
    return H


def _curvature_moments(X: Matrix, H: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For row weights H (n, K): ``(X^2)^T H`` (d, K), ``X^T H`` (d, K), ``sum_i H_i`` (K,): the
    sums from which any affine change of coordinates gets its Hessian diagonal."""
    if sp.issparse(X):
        Xc = sp.csr_matrix(X)
        squared = sp.csr_matrix((Xc.data * Xc.data, Xc.indices, Xc.indptr), shape=Xc.shape)
    else:
        squared = X * X
    return np.asarray(squared.T @ H), np.asarray(X.T @ H), H.sum(axis=0)


def _as_columns(V: np.ndarray, p: int) -> Tuple[np.ndarray, bool]:
    """V (p,) or (p, m) as a (p, m) float64 array, plus whether the input was 1-D."""
    V = np.asarray(V, dtype=np.float64)
    if V.ndim == 1 and V.shape[0] == p:
        return V[:, None], True
    if V.ndim == 2 and V.shape[0] == p:
        return V, False
    raise ValueError(f"V must have shape ({p},) or ({p}, m); got {V.shape}")


class BlockObjective:
    """Per-block weighted-sum objective of a linear model; see the module docstring for layout.

    Attributes
    ----------
    loss : str
        One of :data:`LOSSES`.
    n_features : int
        ``d``, the number of columns of every block's ``X``.
    fit_intercept : bool
    n_classes : int
        ``K`` for ``multinomial``, else 1.
    epsilon : float
        Huber threshold (stored for every loss; used by ``huber`` only).
    n_params : int
        Length of the coefficient vector.
    smooth : bool
        False when the loss is not differentiable everywhere (``hinge``).
    has_hessian : bool
        False when :meth:`hess` / :meth:`hessp` carry no curvature (``hinge``: zero a.e.).
    """

    loss: str
    n_features: int
    fit_intercept: bool
    n_classes: int
    epsilon: float
    n_params: int
    smooth: bool = True
    has_hessian: bool = True

    def __init__(self, loss: str, n_features: int, fit_intercept: bool, epsilon: float = 1.35):
        if int(n_features) != n_features or n_features < 0:
            raise ValueError(f"n_features must be a nonnegative integer; got {n_features!r}")
        self.loss = loss
        self.n_features = int(n_features)
        self.fit_intercept = bool(fit_intercept)
        self.epsilon = float(epsilon)
        self.n_classes = 1

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(loss={self.loss!r}, n_features={self.n_features}, "
            f"fit_intercept={self.fit_intercept}, n_classes={self.n_classes}, "
            f"n_params={self.n_params})"
        )

    # --- layout ------------------------------------------------------------------------------

    def penalized_mask(self) -> np.ndarray:
        """(n_params,) bool: True on beta entries, False on intercept(s) and sigma."""
        raise NotImplementedError

    def initial_coef(self) -> np.ndarray:
        """(n_params,) starting point: zeros (Huber: sigma = 1)."""
        return np.zeros(self.n_params)

    def _check_coef(self, coef) -> np.ndarray:
        coef = np.asarray(coef, dtype=np.float64)
        if coef.shape != (self.n_params,):
            raise ValueError(f"coef must have shape ({self.n_params},); got {coef.shape}")
        return coef

    def _check_block(self, block: Block) -> None:
        if block.X.shape[1] != self.n_features:
            raise ValueError(
                f"block has {block.X.shape[1]} features; objective expects {self.n_features}"
            )

    @property
    def scale_index(self) -> Optional[int]:
        """Index of a jointly estimated scale in ``coef`` (Huber's sigma, last), else None."""
        return None

    def feasible(self, coef) -> bool:
        """False when ``coef`` lies outside the loss's domain (Huber: sigma <= 0), so that a
        caller can report +inf without a pass over the data."""
        return True

    def loss_grad_weight(self, coef, block: Block) -> Tuple[float, np.ndarray, float]:
        """``(loss_sum, gradient, sum_i w_i)``: the sums a sampled pass needs to form means."""
        f, g = self.loss_grad(coef, block)
        return f, g, float(block.w.sum())

    def loss_constant_sum(self, block: Block) -> float:
        """``sum_i w_i * const_i``, the coef-free term dropped from the loss (Poisson:
        ``y log y - y``; 0 for the other losses). ``loss_sum + loss_constant_sum`` is half
        the weighted Poisson deviance."""
        return 0.0

    # --- evaluation (implemented by subclasses) ----------------------------------------------

    def margins(self, coef, X: Matrix) -> np.ndarray:
        """Linear predictor: (n,) for single-output losses, (n, K) for multinomial."""
        raise NotImplementedError

    def loss_sum(self, coef, block: Block) -> float:
        """``sum_i w_i * loss_i`` over the block's rows (0.0 for an empty block)."""
        raise NotImplementedError

    #: a dense block's loss and gradient are summed over row slices of about this many bytes of
    #: rows and their per-row temporaries (margins, probabilities): a slice stays in cache between
    #: the margins ``X b`` and the gradient ``X^T r``, which otherwise read the whole block from
    #: memory twice. One block of 15,000 x 16 x 26 classes (letter): 2.4x faster; 1e5 x 100
    #: binary: 1.1x (jobs/bench/block_passes.py); CSR blocks gain nothing and are not sliced
    ROW_SLICE_BYTES = 4 * 2**20
    MIN_SLICE_ROWS = 256

    def loss_grad(self, coef, block: Block) -> Tuple[float, np.ndarray]:
        """``(loss_sum, gradient (n_params,))`` in one pass over the block (a large dense block
        in row slices of :attr:`ROW_SLICE_BYTES`, summed in order)."""
        rows = self._slice_rows(block)
        if rows is None:
            return self._block_loss_grad(coef, block)
        total, grad = 0.0, None
        for start in range(0, block.n_rows, rows):
            value, g = self._block_loss_grad(coef, block.take(slice(start, start + rows)))
            total += value
            grad = g if grad is None else grad + g
        return total, grad

    def _slice_rows(self, block: Block) -> Optional[int]:
        """Rows per slice for :meth:`loss_grad`, None to take the block whole."""
        if sp.issparse(block.X):
            return None
        outputs = self.n_classes if self.loss == "multinomial" else 1
        rows = max(self.MIN_SLICE_ROWS, self.ROW_SLICE_BYTES // (8 * (self.n_features + 4 * outputs + 4)))
        return rows if block.n_rows > rows else None

    def _block_loss_grad(self, coef, block: Block) -> Tuple[float, np.ndarray]:
        raise NotImplementedError

    def hessp(self, coef, block: Block, V) -> np.ndarray:
        """``sum_i w_i H_i @ V`` for V (n_params,) or (n_params, m); same shape as V.

        All m products share one pass over X; memory O(n m + n_params m), never d x d.
        """
        raise NotImplementedError

    def hess(self, coef, block: Block) -> np.ndarray:
        """Dense (n_params, n_params) summed Hessian; for small n_params only."""
        raise NotImplementedError


class PointwiseBlockObjective(BlockObjective):
    """Single-output losses ``squared_error``, ``logistic``, ``poisson``, ``hinge``,
    ``squared_hinge`` on margins ``m = X @ beta + c``, ``coef = [beta (d), c (if fit_intercept)]``.

    With per-row derivatives ``l'_i, l''_i`` from :mod:`.losses`::

        grad = [X.T @ (w * l'),  sum(w * l')]
        H    = [[X.T diag(w l'') X,  X.T (w l'')], [(w l'').T X,  sum(w l'')]]
    """

    def __init__(self, loss: str, n_features: int, fit_intercept: bool, epsilon: float = 1.35):
        super().__init__(loss, n_features, fit_intercept, epsilon)
        info = loss_info(loss)
        if info.terms is None:
            raise ValueError(f"{loss!r} is not a pointwise loss")
        self._fn = info.terms
        self.n_params = self.n_features + int(self.fit_intercept)
        self.smooth = info.smooth
        self.has_hessian = info.has_hessian

    def penalized_mask(self) -> np.ndarray:
        mask = np.zeros(self.n_params, dtype=bool)
        mask[: self.n_features] = True
        return mask

    def split(self, coef) -> Tuple[np.ndarray, float]:
        """``(beta (d,), intercept float)``; intercept is 0.0 without fit_intercept."""
        coef = self._check_coef(coef)
        d = self.n_features
        return coef[:d], (float(coef[d]) if self.fit_intercept else 0.0)

    def margins(self, coef, X: Matrix) -> np.ndarray:
        beta, c = self.split(coef)
        m = _xv(X, beta)
        return m + c if self.fit_intercept else m

    def block_margins(self, coef, block: Block) -> np.ndarray:
        """The block's margins, its offset (if any) added: ``X @ beta + c + offset``."""
        m = self.margins(coef, block.X)
        return m if block.offset is None else m + block.offset

    def _terms(self, coef, block: Block) -> _losses.LossTerms:
        self._check_block(block)
        return self._fn(block.y, self.block_margins(coef, block))

    def loss_constant_sum(self, block: Block) -> float:
        if self.loss != "poisson":
            return 0.0
        return float(np.dot(block.w, _losses.poisson_constant(block.y)))

    def loss_sum(self, coef, block: Block) -> float:
        return float(np.dot(block.w, self._terms(coef, block).value))

    def _assemble(self, row_grad: np.ndarray, X: Matrix) -> np.ndarray:
        """``[X.T @ r, sum(r)]`` for r (n,) or (n, m) -> (n_params,) or (n_params, m)."""
        gb = _xtr(X, row_grad)
        if not self.fit_intercept:
            return gb
        return np.concatenate([gb, row_grad.sum(axis=0, keepdims=True)], axis=0)

    def _block_loss_grad(self, coef, block: Block) -> Tuple[float, np.ndarray]:
        t = self._terms(coef, block)
        return float(np.dot(block.w, t.value)), self._assemble(block.w * t.d1, block.X)

    def loss_grad_rows(self, coefs: np.ndarray, block: Block, rows: Sequence[Optional[np.ndarray]]) -> list:
        """``[loss_grad(coefs[i], block.take(rows[i]))]`` (None: every row) with X read twice in
        all: the margins of every coefficient vector from one product ``X @ B`` and the gradients
        from one ``X.T @ R`` (R: each evaluation's row weights, 0 off its rows), instead of twice
        per evaluation (the folds of a cross-validation asking at once). Equal to the separate
        evaluations up to the rounding of the products' other summation order."""
        self._check_block(block)
        B = np.asarray(coefs, dtype=float)
        d = self.n_features
        M = _xv(block.X, B[:, :d].T)                       # (n, m)
        if self.fit_intercept:
            M = M + B[:, d]
        if block.offset is not None:
            M = M + block.offset[:, None]
        R = np.zeros(M.shape)
        values = []
        for i, r in enumerate(rows):
            r = slice(None) if r is None else r
            t = self._fn(block.y[r], M[r, i])
            w = block.w[r]
            values.append(float(np.dot(w, t.value)))
            R[r, i] = w * t.d1
        G = self._assemble(R, block.X)                       # (n_params, m)
        return [(values[i], G[:, i].copy()) for i in range(len(rows))]

    def loss_grad_moments(self, coef, block: Block):
        """``(loss_sum, gradient, (X^2)^T h, X^T h, sum h)`` with h = w l'' the row curvatures:
        one pass gives the gradient and what the Hessian's diagonal needs (a preconditioner)."""
        t = self._terms(coef, block)
        h = (block.w * t.d2)[:, None]
        return (float(np.dot(block.w, t.value)), self._assemble(block.w * t.d1, block.X),
                *_curvature_moments(block.X, h))

    def hessp(self, coef, block: Block, V) -> np.ndarray:
        Vc, was_1d = _as_columns(V, self.n_params)
        if not self.has_hessian:
            self._check_coef(coef)
            self._check_block(block)
            return np.zeros(Vc.shape[0]) if was_1d else np.zeros(Vc.shape)
        t = self._terms(coef, block)
        d = self.n_features
        dm = _xv(block.X, Vc[:d])  # (n, m): directional change of the margins
        if self.fit_intercept:
            dm = dm + Vc[d]
        out = self._assemble((block.w * t.d2)[:, None] * dm, block.X)
        return out[:, 0] if was_1d else out

    def hess(self, coef, block: Block) -> np.ndarray:
        p, d = self.n_params, self.n_features
        if not self.has_hessian:
            self._check_coef(coef)
            self._check_block(block)
            return np.zeros((p, p))
        t = self._terms(coef, block)
        h = block.w * t.d2
        H = np.empty((p, p))
        H[:d, :d] = _gram(block.X, h)
        if self.fit_intercept:
            xh = _xtr(block.X, h)
            H[:d, d] = xh
            H[d, :d] = xh
            H[d, d] = h.sum()
        return H


class HuberBlockObjective(BlockObjective):
    """MLlib robust regression (``LinearRegression(loss="huber")``) with the scale sigma estimated
    jointly: ``coef = [beta (d), c (if fit_intercept), sigma]``.

    Per row, ``r = y - m``, ``m = x . beta + c`` (Spark ``HuberAggregator``)::

        |r| <= eps*sigma:  0.5 * (sigma + r^2 / sigma)
        otherwise:         0.5 * (sigma + 2*eps*|r| - eps^2*sigma)

    Gradient: ``[X.T (w l_m), sum(w l_m), sum(w l_s)]``; Hessian, with ``a = w l_mm``,
    ``b = w l_ms``, ``e = w l_ss`` (see :func:`.losses.huber`)::

        [[X.T diag(a) X,  X.T a,   X.T b ],
         [a.T X,          sum a,   sum b ],
         [b.T X,          sum b,   sum e ]]

    For ``sigma <= 0`` (or non-finite) the loss is undefined: a non-empty block returns
    ``+inf`` and NaN derivatives, so a line search backs off; bounded solvers should use
    :meth:`lower_bounds`.
    """

    def __init__(self, n_features: int, fit_intercept: bool, epsilon: float = 1.35):
        super().__init__("huber", n_features, fit_intercept, epsilon)
        if not (np.isfinite(self.epsilon) and self.epsilon > 1.0):
            # Spark's LinearRegression requires epsilon > 1.0.
            raise ValueError(f"epsilon must be > 1.0 for the huber loss; got {epsilon!r}")
        self.n_params = self.n_features + int(self.fit_intercept) + 1

    def penalized_mask(self) -> np.ndarray:
        mask = np.zeros(self.n_params, dtype=bool)
        mask[: self.n_features] = True
        return mask

    def initial_coef(self) -> np.ndarray:
        coef = np.zeros(self.n_params)
        coef[-1] = 1.0
        return coef

    @property
    def scale_index(self) -> int:
        return self.n_params - 1

    def feasible(self, coef) -> bool:
        sigma = float(np.asarray(coef)[-1])
        return sigma > 0.0 and np.isfinite(sigma)

    def lower_bounds(self) -> np.ndarray:
        """(n_params,) box lower bounds: -inf, except sigma > 0 (smallest positive double, as
        Spark's L-BFGS-B bound)."""
        lb = np.full(self.n_params, -np.inf)
        lb[-1] = np.nextafter(0.0, 1.0)
        return lb

    def split(self, coef) -> Tuple[np.ndarray, float, float]:
        """``(beta (d,), intercept float (0.0 without fit_intercept), sigma float)``."""
        coef = self._check_coef(coef)
        d = self.n_features
        return coef[:d], (float(coef[d]) if self.fit_intercept else 0.0), float(coef[-1])

    def margins(self, coef, X: Matrix) -> np.ndarray:
        beta, c, _ = self.split(coef)
        m = _xv(X, beta)
        return m + c if self.fit_intercept else m

    def _terms(self, coef, block: Block):
        self._check_block(block)
        if not self.feasible(self._check_coef(coef)):
            return None
        _, _, sigma = self.split(coef)
        return _losses.huber(block.y, self.margins(coef, block.X), sigma, self.epsilon)

    def _nonempty(self, block: Block) -> bool:
        return block.X.shape[0] > 0

    def loss_sum(self, coef, block: Block) -> float:
        t = self._terms(coef, block)
        if t is None:
            return np.inf if self._nonempty(block) else 0.0
        return float(np.dot(block.w, t.value))

    def _block_loss_grad(self, coef, block: Block) -> Tuple[float, np.ndarray]:
        t = self._terms(coef, block)
        if t is None:
            if self._nonempty(block):
                return np.inf, np.full(self.n_params, np.nan)
            return 0.0, np.zeros(self.n_params)
        w = block.w
        g = np.empty(self.n_params)
        gm = w * t.d_m
        d = self.n_features
        g[:d] = _xtr(block.X, gm)
        if self.fit_intercept:
            g[d] = gm.sum()
        g[-1] = np.dot(w, t.d_s)
        return float(np.dot(w, t.value)), g

    def hessp(self, coef, block: Block, V) -> np.ndarray:
        Vc, was_1d = _as_columns(V, self.n_params)
        t = self._terms(coef, block)
        if t is None:
            fill = np.nan if self._nonempty(block) else 0.0
            return np.full(Vc.shape[0] if was_1d else Vc.shape, fill)
        w, d, X = block.w, self.n_features, block.X
        vs = Vc[-1]  # (m,) sigma components
        dm = _xv(X, Vc[:d])
        if self.fit_intercept:
            dm = dm + Vc[d]
        a, b = w * t.d_mm, w * t.d_ms
        rm = a[:, None] * dm + b[:, None] * vs  # d/dm row terms
        out = np.empty_like(Vc)
        out[:d] = _xtr(X, rm)
        if self.fit_intercept:
            out[d] = rm.sum(axis=0)
        out[-1] = b @ dm + (w @ t.d_ss) * vs
        return out[:, 0] if was_1d else out

    def hess(self, coef, block: Block) -> np.ndarray:
        t = self._terms(coef, block)
        p, d, X, w = self.n_params, self.n_features, block.X, block.w
        if t is None:
            return np.full((p, p), np.nan if self._nonempty(block) else 0.0)
        a, b = w * t.d_mm, w * t.d_ms
        H = np.empty((p, p))
        H[:d, :d] = _gram(X, a)
        xb = _xtr(X, b)
        H[:d, -1] = xb
        H[-1, :d] = xb
        if self.fit_intercept:
            xa = _xtr(X, a)
            H[:d, d] = xa
            H[d, :d] = xa
            H[d, d] = a.sum()
            H[d, -1] = H[-1, d] = b.sum()
        H[-1, -1] = np.dot(w, t.d_ss)
        return H


class MultinomialBlockObjective(BlockObjective):
    """Softmax regression with K classes, ``coef`` = K rows ``[beta_k (d), c_k (if fit_intercept)]``
    flattened row-major; margins ``M = X @ B.T + c`` (n, K).

    Per row, ``loss_i = logsumexp(M_i) - M_i[y_i]``, gradient in ``M_i`` ``g_i = p_i - e_{y_i}``,
    Hessian in ``M_i`` ``diag(p_i) - p_i p_i^T``. With ``x~_i = [x_i, 1]`` (or ``x_i`` without
    intercept), gradient block k ``= sum_i w_i g_ik x~_i`` and Hessian block (k, l)
    ``= sum_i w_i (delta_kl p_ik - p_ik p_il) x~_i x~_i^T``.

    Labels must be integers in ``0..K-1``; anything else raises ValueError (they are used as
    indices, and a negative index would otherwise wrap silently).
    """

    def __init__(self, n_features: int, fit_intercept: bool, n_classes: int):
        super().__init__("multinomial", n_features, fit_intercept)
        if int(n_classes) != n_classes or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2; got {n_classes!r}")
        self.n_classes = int(n_classes)
        self._q = self.n_features + int(self.fit_intercept)  # parameters per class
        self.n_params = self.n_classes * self._q

    def penalized_mask(self) -> np.ndarray:
        mask = np.zeros((self.n_classes, self._q), dtype=bool)
        mask[:, : self.n_features] = True
        return mask.ravel()

    def split(self, coef) -> Tuple[np.ndarray, np.ndarray]:
        """``(B (K, d), intercepts (K,))``; intercepts are zeros without fit_intercept."""
        W = self._check_coef(coef).reshape(self.n_classes, self._q)
        d = self.n_features
        c = W[:, d].copy() if self.fit_intercept else np.zeros(self.n_classes)
        return W[:, :d], c

    def margins(self, coef, X: Matrix) -> np.ndarray:
        B, c = self.split(coef)
        M = _xv(X, B.T)
        return M + c if self.fit_intercept else M

    def _labels(self, y: np.ndarray) -> np.ndarray:
        ok = np.isfinite(y) & (y >= 0) & (y < self.n_classes) & (y == np.floor(y))
        if not ok.all():
            bad = y[~ok][0]
            raise ValueError(
                f"multinomial labels must be integers in 0..{self.n_classes - 1}; got {bad!r}"
            )
        return y.astype(np.intp)

    def _terms(self, coef, block: Block) -> _losses.MultinomialTerms:
        self._check_block(block)
        labels = self._labels(block.y)
        return _losses.multinomial(labels, self.margins(coef, block.X))

    def loss_sum(self, coef, block: Block) -> float:
        return float(np.dot(block.w, self._terms(coef, block).value))

    # Dense X: one GEMM over all K*m columns reads X once; the (d, K, m) <-> (K, d, m) reorder
    # is small next to the n*d product. CSR X, few classes: one sparse product per class writes
    # each class's d-block contiguously. CSR X, many classes: X.T as CSR once (O(nnz)) and one
    # product with K*m-wide rows, then the reorder; per-class products each rescan X through a
    # CSC view. sector (1M stored entries, 105 classes): 0.09 s instead of 0.25 s, same sums
    # in the same order (bit for bit); dna (3 classes): 0.9 ms instead of 0.7 ms, hence the cut.
    TRANSPOSED_PRODUCT_CLASSES = 6

    def _direction_margins(self, X: Matrix, Vb: np.ndarray) -> np.ndarray:
        """``X @ Vb[k]`` for every class: Vb (K, d, m) -> (n, K, m)."""
        K, d, m = Vb.shape
        if sp.issparse(X):
            return np.stack([_xv(X, Vb[k]) for k in range(K)], axis=1)
        return _xv(X, Vb.transpose(1, 0, 2).reshape(d, K * m)).reshape(X.shape[0], K, m)

    def _assemble(self, R: np.ndarray, X: Matrix) -> np.ndarray:
        """Row terms R (n, K, m) -> per-class parameter terms (K * q, m):
        ``[X.T @ R[:, k], sum_i R[i, k]]`` for each class k."""
        n, K, m = R.shape
        d = self.n_features
        out = np.empty((K, self._q, m))
        if sp.issparse(X) and K >= self.TRANSPOSED_PRODUCT_CLASSES:
            XT = sp.csr_matrix(X.T)
            out[:, :d, :] = np.asarray(XT @ R.reshape(n, K * m)).reshape(d, K, m).transpose(1, 0, 2)
        elif sp.issparse(X):
            for k in range(K):
                out[k, :d, :] = _xtr(X, R[:, k, :])
        else:
            out[:, :d, :] = _xtr(X, R.reshape(n, K * m)).reshape(d, K, m).transpose(1, 0, 2)
        if self.fit_intercept:
            out[:, d, :] = R.sum(axis=0)
        return out.reshape(K * self._q, m)

    def _block_loss_grad(self, coef, block: Block) -> Tuple[float, np.ndarray]:
        t = self._terms(coef, block)
        G = block.w[:, None] * t.grad
        return float(np.dot(block.w, t.value)), self._assemble(G[:, :, None], block.X)[:, 0]

    def loss_grad_moments(self, coef, block: Block):
        """As the single-output losses' (there): row curvatures w p_k (1 - p_k), one column per
        class, the diagonal of each class's block of the Hessian."""
        t = self._terms(coef, block)
        G = block.w[:, None] * t.grad
        h = block.w[:, None] * t.prob * (1.0 - t.prob)
        return (float(np.dot(block.w, t.value)), self._assemble(G[:, :, None], block.X)[:, 0],
                *_curvature_moments(block.X, h))

    def hessp(self, coef, block: Block, V) -> np.ndarray:
        Vc, was_1d = _as_columns(V, self.n_params)
        t = self._terms(coef, block)
        K, d, q, m = self.n_classes, self.n_features, self._q, Vc.shape[1]
        X = block.X
        Vr = Vc.reshape(K, q, m)
        # Directional change of all margins for all m vectors: (n, K, m).
        dM = self._direction_margins(X, Vr[:, :d, :])
        if self.fit_intercept:
            dM = dM + Vr[:, d, :][None]
        P = t.prob[:, :, None]
        # (diag(p) - p p^T) dM = p * (dM - p . dM)
        R = P * (dM - (P * dM).sum(axis=1, keepdims=True))
        R *= block.w[:, None, None]
        out = self._assemble(R, X)
        return out[:, 0] if was_1d else out

    #: rows per chunk of the dense Hessian's (rows, K * q) work matrix: ~16 MB of float64 at a time
    HESS_CHUNK_BYTES = 16 * 2**20

    def hess(self, coef, block: Block) -> np.ndarray:
        t = self._terms(coef, block)
        K, d, q, X, w = self.n_classes, self.n_features, self._q, block.X, block.w
        P = t.prob
        if not sp.issparse(X):
            return self._dense_hess(X, w, P)
        H = np.empty((self.n_params, self.n_params))
        for k in range(K):
            for l in range(k, K):
                # Curvature of class pair (k, l); the (l, k) block is its transpose.
                D = w * (P[:, k] * ((k == l) - P[:, l]))
                blk = np.empty((q, q))
                blk[:d, :d] = _gram(X, D)
                if self.fit_intercept:
                    xd = _xtr(X, D)
                    blk[:d, d] = xd
                    blk[d, :d] = xd
                    blk[d, d] = D.sum()
                H[k * q : (k + 1) * q, l * q : (l + 1) * q] = blk
                if l != k:
                    H[l * q : (l + 1) * q, k * q : (k + 1) * q] = blk.T
        return H

    def _dense_hess(self, X: np.ndarray, w: np.ndarray, P: np.ndarray) -> np.ndarray:
        """``sum_i w_i (diag(p_i) - p_i p_i^T) (x) x~_i x~_i^T`` for dense X with few large BLAS
        calls instead of K(K+1)/2 small ones: the outer part is ``B^T B`` with B the rows
        ``sqrt(w_i) p_ik x~_i`` side by side (one GEMM per chunk of rows), the diagonal part K
        weighted Gram matrices. letter (26 classes x 17): ~10x faster than the pairwise loop."""
        K, q, n = self.n_classes, self._q, X.shape[0]
        H = np.zeros((self.n_params, self.n_params))
        step = max(1, self.HESS_CHUNK_BYTES // (8 * K * q))
        root = np.sqrt(w)
        for s in range(0, n, step):
            Xc = X[s : s + step]
            if self.fit_intercept:
                Xc = np.hstack([Xc, np.ones((Xc.shape[0], 1))])
            Pc, wc = P[s : s + step], w[s : s + step]
            B = ((Pc * root[s : s + step, None])[:, :, None] * Xc[:, None, :]).reshape(Xc.shape[0], K * q)
            H -= _dense_gram(B)
            for k in range(K):
                H[k * q : (k + 1) * q, k * q : (k + 1) * q] += _dense_gram(Xc, wc * Pc[:, k])
        return H


class GLMBlockObjective(PointwiseBlockObjective):
    """A generalized linear model's half deviance (:class:`.losses.GLMLoss`) on margins
    ``m = X @ beta + c + offset``; same layout as the other single-output losses (``loss`` is
    ``"glm"``). :meth:`hess` / :meth:`hessp` use the loss's ``d2``: the expected (Fisher)
    curvature ``w / (V g'^2)``, IRLS's, unless built with ``observed=True`` (the exact Hessian,
    which for a non-canonical link can be indefinite away from the optimum)."""

    def __init__(self, glm: _losses.GLMLoss, n_features: int, fit_intercept: bool, observed: bool = False):
        BlockObjective.__init__(self, "glm", n_features, fit_intercept)
        self.glm = glm
        self.observed = bool(observed)
        self._fn = functools.partial(glm.terms, observed=self.observed)
        self.n_params = self.n_features + int(self.fit_intercept)

    def __repr__(self) -> str:
        return (f"GLMBlockObjective(family={self.glm.family.name!r}, link={self.glm.link.name!r}, "
                f"n_features={self.n_features}, fit_intercept={self.fit_intercept})")


class SmoothedHingeBlockObjective(PointwiseBlockObjective):
    """``hinge`` smoothed over a band of width ``smoothing`` (see :func:`.losses.smoothed_hinge`);
    same layout as the other single-output losses."""

    def __init__(self, n_features: int, fit_intercept: bool, smoothing: float):
        if not (np.isfinite(smoothing) and smoothing > 0):
            raise ValueError(f"smoothing must be > 0; got {smoothing!r}")
        super().__init__("hinge", n_features, fit_intercept)
        self.loss = "smoothed_hinge"
        self.smoothing = float(smoothing)
        self._fn = functools.partial(_losses.smoothed_hinge, mu=self.smoothing)
        self.smooth = True
        self.has_hessian = True


def make_block_objective(
    loss: str,
    n_features: int,
    fit_intercept: bool,
    n_classes: int = 2,
    epsilon: float = 1.35,
    smoothing: float = 1.0,
    glm: Optional[_losses.GLMLoss] = None,
) -> BlockObjective:
    """Build the per-block objective for ``loss`` (one of :data:`LOSSES`, or the internal
    ``smoothed_hinge`` with band width ``smoothing``).

    ``n_classes`` is used by ``multinomial`` only (K >= 2), ``epsilon`` by ``huber`` only
    (> 1, MLlib default 1.35), ``glm`` (a :class:`.losses.GLMLoss`) by ``loss="glm"`` only.
    Raises InputError (a ValueError) naming an unknown ``loss``.
    """
    info = loss_info(loss)
    if loss == "glm":
        if glm is None:
            raise ValueError("loss='glm' needs its GLMLoss (glm=...)")
        return GLMBlockObjective(glm, n_features, fit_intercept)
    if loss == "huber":
        return HuberBlockObjective(n_features, fit_intercept, epsilon)
    if loss == "smoothed_hinge":
        return SmoothedHingeBlockObjective(n_features, fit_intercept, smoothing)
    if loss == "multinomial":
        return MultinomialBlockObjective(n_features, fit_intercept, n_classes)
    assert info.terms is not None, loss
    return PointwiseBlockObjective(loss, n_features, fit_intercept, epsilon)
