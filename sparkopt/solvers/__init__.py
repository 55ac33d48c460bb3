"""Driver-side solvers behind one ``minimize`` loop and one result record.

They see the problem only through the Objective protocol (sparkopt.solvers.objective) and never
import pyspark or the engines.

    objective.py   the Objective protocol, its optional capabilities, CountingObjective
    solver.py      the Solver protocol (init / step / terminate) and its state
    loop.py        minimize(): budgets, history, callbacks, checkpoints, the best iterate
    result.py      Status, OptimizeResult and finish(), the one way a run ends
    registry.py    solver names, the auto choice, make_solver with checked options
    gd.py sgd.py local_sgd.py async_sgd.py lbfgs.py newton.py linesearch.py   the methods
    checkpoint.py  atomic, checksummed solver-state files
"""
from .checkpoint import CheckpointError, CheckpointWarning
from .loop import minimize
from .objective import CountingObjective, Objective
from .registry import SOLVERS, SolverOptionWarning, choose_solver, explain_solver, make_solver
from .result import ConvergenceWarning, OptimizeResult, Status

__all__ = ["CheckpointError", "CheckpointWarning", "ConvergenceWarning", "CountingObjective", "Objective",
           "OptimizeResult", "SOLVERS", "SolverOptionWarning", "Status", "choose_solver", "explain_solver",
           "make_solver", "minimize"]
