"""How every system is scored: ONE objective (sparkopt.fit.objective_value on one engine), the
reference optimum F*, relative gaps, and the gap curves with their time to the 1e-6 target."""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Optional

import numpy as np

from bench.config import GAP_TARGET, LOSS, REFERENCE_TOL, now
from bench.measure import Row


def fold_constant_features(coef: np.ndarray, intercept: Any, stats) -> tuple[np.ndarray, Any]:
    """Move the contribution of constant features (sd = 0; MLlib and sparkopt fix their coefficient
    at 0) into the intercept: margins, hence the loss, are unchanged and the penalty can only drop.
    Without it objective_value rejects such coefficients (scikit-learn may leave them nonzero)."""
    coef = np.array(coef, dtype=float, copy=True)
    constant = np.asarray(stats.feature_std) == 0
    if not constant.any():
        return coef, intercept
    rows = coef.reshape(-1, coef.shape[-1])
    shift = rows[:, constant] @ np.asarray(stats.feature_mean)[constant]
    rows[:, constant] = 0.0
    intercept = np.asarray(intercept, dtype=float) + shift
    return rows.reshape(coef.shape), (float(intercept[0]) if coef.ndim == 1 else intercept)


class Scorer:
    """The ONE objective every system is scored with (sparkopt.fit.objective_value on one engine)."""

    def __init__(self, engine, task: str, standardization: bool):
        self.engine, self.task, self.standardization = engine, task, standardization

    def value(self, coef, intercept, reg_param: float) -> float:
        from sparkopt.fit import objective_value

        coef, intercept = fold_constant_features(coef, intercept, self.engine.stats)
        return float(objective_value(self.engine, LOSS[self.task], coef, intercept, reg_param=reg_param,
                                     standardization=self.standardization))

    def reference(self, reg_param: float) -> dict:
        """High-precision optimum: exact Newton to tol 1e-12. Below the attainable precision of the
        gradient Newton would keep taking null steps until maxIter, so it is also stopped once F has
        not moved by more than 1e-15 relative for two iterations (status CALLBACK_STOP)."""
        from sparkopt.fit import fit_linear_model

        started = now()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_linear_model(self.engine, LOSS[self.task], reg_param=reg_param,
                                   standardization=self.standardization, solver="newton", tol=REFERENCE_TOL,
                                   max_iter=200, callback=stall_stopper())
        return {"objective": self.value(fit.coefficients, fit.intercept, reg_param), "iterations": fit.result.nit,
                "status": fit.result.status.name, "grad_norm": fit.result.grad_norm, "seconds": now() - started,
                "engine": type(self.engine).__name__}


def stall_stopper(rel: float = 1e-15, patience: int = 2) -> Callable[[dict], bool]:
    """A minimize() callback that stops once F changed by <= rel (relative) ``patience`` times running."""
    state = {"previous": None, "still": 0}

    def callback(record: dict) -> bool:
        f, previous = record["objective"], state["previous"]
        still = previous is not None and abs(previous - f) <= rel * max(abs(f), 1e-300)
        state["still"] = state["still"] + 1 if still else 0
        state["previous"] = f
        return state["still"] >= patience

    return callback


def relative_gap(value: Optional[float], best: float) -> Optional[float]:
    """(value - best) / |best|; None for a missing or non-finite value."""
    if value is None or not math.isfinite(value):
        return None
    return (value - best) / max(abs(best), 1e-300)


def score_rows(rows: list[Row], scorer: Scorer, reg_param: float, reference: dict) -> float:
    """Objective of every row with the shared function; gaps, curves and time-to-gap; returns F*."""
    for row in rows:
        d = row.described
        row.objective = scorer.value(d.coef, d.intercept, reg_param)
    finite = [r.objective for r in rows if r.objective is not None and math.isfinite(r.objective)]
    best = min([reference["objective"], *finite])
    reference["best_objective"] = best
    reference["beaten_by"] = relative_gap(reference["objective"], best)
    for row in rows:
        row.rel_gap = relative_gap(row.objective, best)
        row.curve, row.t_to_gap_s, row.passes_to_gap = gap_curve(row, best)
    return best


def gap_curve(row: Row, best: float) -> tuple[list, Optional[float], Optional[float]]:
    """(seconds, gap, passes) points, and the time / passes at which the gap first reached 1e-6."""
    d = row.described
    points = list(d.curve)
    if d.calibrate and points:
        last = points[-1][1]
        if last and math.isfinite(last) and row.objective is not None:
            factor = row.objective / last     # the history is F times a constant: pin its end to F
            points = [(t, v * factor, p) for t, v, p in points]
        else:
            points = []
    if not points and row.objective is not None:
        points = [(row.fit_s, row.objective, row.passes)]
    curve = [(t, relative_gap(v, best), p) for t, v, p in points]
    hit = next(((t, p) for t, g, p in curve if g is not None and g <= GAP_TARGET), (None, None))
    return curve, hit[0], hit[1]


def set_time_vs_mllib(rows: list, attribute: str = "fit_s") -> None:
    """Set each row's time_vs_mllib: its ``attribute`` over that of the mllib-tight row."""
    base = next((getattr(r, attribute) for r in rows if r.system == "mllib-tight"), None)
    for r in rows:
        r.time_vs_mllib = getattr(r, attribute) / base if base else None

