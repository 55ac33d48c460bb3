"""Automatic tuning: regularization paths, their k-fold cross-validation with the folds advancing
together (one pass serves every fold), and successive halving over the other settings.

Driver-side numerics over the Objective / engine interfaces; never imports pyspark, so every
piece runs (and is tested) on a LocalEngine.
"""
from .cv import CVResult, cross_validate
from .halving import HalvingResult, Rung, successive_halving
from .path import PathPoint, PathResult, lambda_max, reg_grid, regularization_path

__all__ = ["PathPoint", "PathResult", "lambda_max", "reg_grid", "regularization_path", "CVResult",
           "cross_validate", "HalvingResult", "Rung", "successive_halving"]
