"""Driver-side solvers. They see only the `Objective` protocol and never import pyspark."""
from .base import ConvergenceWarning, CountingObjective, Objective, OptimizeResult, Status
from .checkpoint import CheckpointError, CheckpointWarning
from .minimize import SOLVERS, choose_solver, minimize

__all__ = ["CheckpointError", "CheckpointWarning", "ConvergenceWarning", "CountingObjective", "Objective", "OptimizeResult", "SOLVERS", "Status",
           "choose_solver", "minimize"]
