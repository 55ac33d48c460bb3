"""Automatic tuning: regularization paths and their k-fold cross-validation.

Driver-side numerics over the Objective / engine interfaces; never imports pyspark, so every
piece runs (and is tested) on a LocalEngine.
"""
from .cv import CVResult, cross_validate
from .path import PathPoint, PathResult, lambda_max, reg_grid, regularization_path

__all__ = ["PathPoint", "PathResult", "lambda_max", "reg_grid", "regularization_path", "CVResult",
           "cross_validate"]
