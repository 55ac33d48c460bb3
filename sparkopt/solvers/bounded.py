"""Box-constrained minimization: scipy's L-BFGS-B driven with the distributed objective.

A bounded fit is not a Solver step loop: scipy owns the iteration (its projected line search
and Cauchy point are what make L-BFGS-B work), so this is a small driver that feeds it the
objective's ``loss_grad`` and turns its answer into sparkopt's OptimizeResult. Objectives with an
L1 term are refused: L-BFGS-B needs a smooth objective (MLlib also bounds L2 fits only).
"""
from __future__ import annotations

import time
import warnings
from typing import Callable, Optional

import numpy as np
from scipy.optimize import minimize as scipy_minimize

from ..errors import InputError
from .result import ConvergenceWarning, OptimizeResult, Status, finish


def projected_gradient_norm(x: np.ndarray, g: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """inf-norm of the gradient with the components that push x out of the box removed: 0
    exactly at a KKT point of min F(x) s.t. lower <= x <= upper."""
    g = np.where((x <= lower) & (g > 0), 0.0, g)
    g = np.where((x >= upper) & (g < 0), 0.0, g)
    return float(np.max(np.abs(g))) if g.size else 0.0


def minimize_bounded(objective, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray, *, tol: float = 1e-6,
                     max_iter: int = 100, memory: int = 10,
                     callback: Optional[Callable[[dict], Optional[bool]]] = None) -> OptimizeResult:
    """min objective(x) subject to lower <= x <= upper (arrays (n,), +-inf for no bound).

    Converged when the projected gradient's inf-norm is <= tol * max(1, that norm at the start),
    the relative test sparkopt's other solvers use. x0 is clipped into the box first.
    """
    if getattr(objective, "l1_weights", None) is not None:
        raise InputError("bound-constrained fits need a smooth objective: set elasticNetParam = 0 (L2 only)")
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    if np.any(lower > upper):
        j = int(np.flatnonzero(lower > upper)[0])
        raise InputError(f"lower bound {lower[j]} exceeds upper bound {upper[j]} at coordinate {j}")
    x0 = np.clip(np.asarray(x0, dtype=float), lower, upper)
    started = time.perf_counter()
    passes0 = objective.passes
    f0, g0 = objective.loss_grad(x0)
    threshold = tol * max(1.0, projected_gradient_norm(x0, g0, lower, upper))
    history = [dict(iteration=0, objective=float(f0), grad_norm=projected_gradient_norm(x0, g0, lower, upper),
                    step_size=0.0, passes=float(objective.passes - passes0), seconds=time.perf_counter() - started)]
    last = {"x": x0, "f": float(f0), "g": g0}
    stopped = {"by_callback": False}

    def fun(x):
        f, g = objective.loss_grad(x)
        last.update(x=np.array(x), f=float(f), g=np.asarray(g))
        return f, g

    class _Done(Exception):
        pass

    def on_iteration(x):
        if not np.array_equal(last["x"], x):
            fun(x)
        norm = projected_gradient_norm(last["x"], last["g"], lower, upper)
        record = dict(iteration=len(history), objective=last["f"], grad_norm=norm,
                      step_size=float(np.max(np.abs(x - history_x[-1]))) if history_x else 0.0,
                      passes=float(objective.passes - passes0), seconds=time.perf_counter() - started)
        history.append(record)
        history_x.append(np.array(x))
        if callback is not None and callback(record):
            stopped["by_callback"] = True
            raise _Done
        if norm <= threshold:
            raise _Done

    history_x = [x0]
    status = Status.MAX_ITER
    if history[0]["grad_norm"] <= threshold:
        status = Status.CONVERGED
    else:
        try:
            answer = scipy_minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=list(zip(lower, upper)),
                                    callback=on_iteration,
                                    options=dict(maxiter=max_iter, maxcor=memory, gtol=0.0, ftol=0.0,
                                                 maxls=40))
            if answer.nit < max_iter:
                # scipy stopped before the gradient test held: F no longer decreasing at all
                # (its relative-reduction test at ftol 0) is float64's limit, else its line search failed
                status = Status.PRECISION_LIMIT if answer.status == 0 else Status.NO_PROGRESS
        except _Done:
            pass
        if stopped["by_callback"]:
            status = Status.CALLBACK_STOP
    x = history_x[-1]
    f, g = objective.loss_grad(x)
    norm = projected_gradient_norm(x, g, lower, upper)
    if status != Status.CALLBACK_STOP and norm <= threshold:
        status = Status.CONVERGED
    result = finish(objective, solver="lbfgs-b", x=x, status=status, nit=len(history) - 1,
                    passes=float(objective.passes - passes0), nfev=int(objective.evaluations), history=history,
                    seconds=time.perf_counter() - started, fun=float(f), jac=g, warn=False)
    result.grad_norm = norm            # the projected gradient's: the unprojected one is not 0 on the bounds
    if status in (Status.PRECISION_LIMIT, Status.NO_PROGRESS):
        result.message += f" (projected gradient norm {norm:.3g}; tol asks for <= {threshold:.3g})"
    if status != Status.CONVERGED and status != Status.CALLBACK_STOP:
        warnings.warn(f"sparkopt lbfgs-b: {result.message} (nit={result.nit})", ConvergenceWarning, stacklevel=3)
    return result
