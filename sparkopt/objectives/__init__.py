"""Objectives of linear models: pointwise losses, per-block weighted sums, driver-side penalties.

numpy + scipy.sparse only; never imports pyspark.
"""
from .linear import (
    LOSSES,
    BlockObjective,
    HuberBlockObjective,
    MultinomialBlockObjective,
    PointwiseBlockObjective,
    make_block_objective,
)
from .penalties import ElasticNet

__all__ = [
    "LOSSES",
    "BlockObjective",
    "PointwiseBlockObjective",
    "HuberBlockObjective",
    "MultinomialBlockObjective",
    "make_block_objective",
    "ElasticNet",
]
