"""The unit of data every objective and engine works on: one block of rows.

numpy / scipy.sparse only; never imports pyspark.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import scipy.sparse as sp

Matrix = Union[np.ndarray, sp.csr_matrix]


@dataclass(frozen=True)
class Block:
    """Rows ``X`` (n, d) float64 dense C-ordered ndarray or CSR matrix, labels ``y`` (n,) float64,
    sample weights ``w`` (n,) float64 (all ones when the user gave no weight column) and an
    optional per-row ``offset`` (n,) float64 added to every margin (a GLM's exposure term, MLlib's
    offsetCol); None means no offset (every margin is ``x_i . beta + c``). ``fold`` (n,) float64,
    optional: each row's cross-validation fold id as read from a ``foldCol`` (checked where it is
    used, sparkopt.tuning.cv); no objective reads it."""

    X: Matrix
    y: np.ndarray
    w: np.ndarray
    offset: Optional[np.ndarray] = None
    fold: Optional[np.ndarray] = None

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.X)

    def take(self, rows: Union[np.ndarray, slice]) -> "Block":
        """Sub-block of the given row indices (sorted int array) or row slice (views of a dense
        block's arrays, no copy), same storage kind."""
        return Block(self.X[rows], self.y[rows], self.w[rows],
                     None if self.offset is None else self.offset[rows],
                     None if self.fold is None else self.fold[rows])

    def sample(self, fraction: float, rng: np.random.Generator) -> "Block":
        """Bernoulli(fraction) sample of rows, as Spark's RDD.sample(False, fraction) does."""
        keep = np.flatnonzero(rng.random(self.n_rows) < fraction)
        return self.take(keep)


def sample_rng(seed: int, partition_index: int, block_index: int) -> np.random.Generator:
    """The generator that samples block ``block_index`` of partition ``partition_index``.

    Defined here (not in the engine) so that block-side code that samples for itself (local SGD's
    steps, sparkopt.objectives.local_sgd) draws from the same generator as the engines' sampling
    and needs no import of the engine package."""
    return np.random.default_rng([seed, partition_index, block_index])


def round_seed(seed: int, k: int) -> int:
    """The sampling seed of iteration (round) k >= 1 of a sampled solver. MiniBatchSGD, local SGD
    and the asynchronous workers all draw from it, so local SGD with H = 1 and async SGD with
    tau = 0 sample exactly the rows MiniBatchSGD does."""
    return (seed * 1_000_003 + k) % (2**63)
