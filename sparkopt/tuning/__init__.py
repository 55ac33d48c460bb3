"""Automatic tuning: regularization paths, fold-vectorized cross-validation, successive halving.

Driver-side numerics over the Objective / engine interfaces; never imports pyspark, so every
piece runs (and is tested) on a LocalEngine.
"""
from .path import PathPoint, PathResult, lambda_max, reg_grid, regularization_path

__all__ = ["PathPoint", "PathResult", "lambda_max", "reg_grid", "regularization_path"]
