"""Line searches that evaluate loss and gradient together: one pass over the data per trial.

Each trial point comes back with its gradient (and Hessian, for Newton), so an accepted trial
starts the next iteration without another pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .result import rounding_error


@dataclass
class LineSearchResult:
    ok: bool
    step: float
    f: float
    g: Optional[np.ndarray]
    extra: object = None   # e.g. the Hessian at the accepted point
    trials: int = 0
    precision: bool = False  # stopped because no smaller step can show a decrease above rounding


def _finite(f, g=None) -> bool:
    return bool(np.isfinite(f)) and (g is None or bool(np.all(np.isfinite(g))))


def _cubic_min(a, fa, dfa, b, fb, dfb):
    """Minimizer of the cubic through (a, fa, dfa), (b, fb, dfb); None when it does not exist."""
    d1 = dfa + dfb - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - dfa * dfb
    if disc < 0:
        return None
    d2 = np.sign(b - a) * np.sqrt(disc)
    denom = dfb - dfa + 2.0 * d2
    if denom == 0:
        return None
    t = b - (b - a) * (dfb + d2 - d1) / denom
    return t if np.isfinite(t) else None


def strong_wolfe(
    evaluate: Callable[[float], tuple[float, np.ndarray]],
    direction: np.ndarray,
    f0: float,
    g0: np.ndarray,
    step0: float = 1.0,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_trials: int = 25,
    slope: Optional[Callable[[object], float]] = None,
    dphi0: Optional[float] = None,
    holding: Optional[Callable[[list], None]] = None,
) -> LineSearchResult:
    """Strong-Wolfe search along `direction` (Nocedal & Wright, Algorithms 3.5 and 3.6), with
    Hager & Zhang's approximate sufficient-decrease test where F's changes are rounding noise.

    evaluate(t) -> (f, g) at x + t * direction. Non-finite values are treated as "too far".
    With ``slope`` (and ``dphi0``, the slope at t = 0) the gradients stay opaque: ``slope(g)`` is
    the directional derivative ``g . direction`` and ``nan`` when g is not finite (vector-free
    L-BFGS, whose gradients are handles to vectors held elsewhere); ``direction`` is then unused.
    ``holding(gs)``, after every trial, lists the gradients the search may still return (the
    bracket's ends and the current trial): the caller may free the others.
    """
    if slope is None:
        def slope(g):
            return float(g @ direction) if _finite(0.0, g) else float("nan")
        dphi0 = float(g0 @ direction)
    if not dphi0 < 0:
        return LineSearchResult(False, 0.0, f0, g0)
    noise = rounding_error(f0)

    def decreases_enough(t, f, dphi):
        # Armijo, or Hager & Zhang's approximate Wolfe test once F's changes are within its
        # rounding error: the slope, computed from gradients, still tells progress
        return f <= f0 + c1 * t * dphi0 or (f <= f0 + noise and dphi <= (2 * c1 - 1) * dphi0)

    # points are (t, f, dphi, g); `lo` always satisfies sufficient decrease with the lowest f
    prev = (0.0, f0, dphi0, g0)
    t = step0
    trials = 0
    lo = hi = None

    def hold(*points) -> None:
        if holding is not None:
            holding([p[3] for p in points if p is not None and p[3] is not None])
    while trials < max_trials:
        f, g = evaluate(t)
        trials += 1
        dphi = slope(g) if _finite(f) else np.nan
        if not _finite(f, dphi):
            lo, hi = prev, (t, np.inf, np.nan, None)
            break
        point = (t, f, dphi, g)
        if not decreases_enough(t, f, dphi) or (trials > 1 and f >= prev[1] + noise):
            lo, hi = prev, point
            break
        if abs(dphi) <= -c2 * dphi0:
            return LineSearchResult(True, t, f, g, trials=trials)
        if dphi >= 0:
            lo, hi = point, prev
            break
        prev = point
        hold(prev)
        t *= 2.0
    else:
        return LineSearchResult(False, 0.0, f0, g0, trials=trials)

    hold(lo, hi)
    while trials < max_trials and abs(hi[0] - lo[0]) > 1e-16 * max(1.0, abs(lo[0])):
        a, fa, da, _ = lo
        b, fb, db, _ = hi
        t = _cubic_min(a, fa, da, b, fb, db) if np.isfinite(fb) and np.isfinite(db) else None
        width = abs(b - a)
        if t is None or not (min(a, b) + 0.1 * width <= t <= max(a, b) - 0.1 * width):
            t = 0.5 * (a + b)
        f, g = evaluate(t)
        trials += 1
        dphi = slope(g) if _finite(f) else np.nan
        if not _finite(f, dphi):
            hi = (t, np.inf, np.nan, None)
            hold(lo, hi)
            continue
        if not decreases_enough(t, f, dphi) or f >= fa + noise:
            hi = (t, f, dphi, g)
            hold(lo, hi)
            continue
        if abs(dphi) <= -c2 * dphi0:
            return LineSearchResult(True, t, f, g, trials=trials)
        if dphi * (b - a) >= 0:
            hi = lo
        lo = (t, f, dphi, g)
        hold(lo, hi)
    if lo[0] > 0 and lo[1] < f0:
        # sufficient decrease holds but curvature does not: still a usable step
        return LineSearchResult(True, lo[0], lo[1], lo[3], trials=trials)
    return LineSearchResult(False, 0.0, f0, g0, trials=trials)


def backtracking(
    evaluate: Callable[[float], tuple],
    f0: float,
    slope: float,
    step0: float = 1.0,
    shrink: float = 0.5,
    c1: float = 1e-4,
    max_trials: int = 40,
    flat_ok: Optional[Callable[[tuple], bool]] = None,
) -> LineSearchResult:
    """Armijo backtracking: the first t in step0 * shrink^k with f(t) <= f0 + c1 * t * slope.

    evaluate(t) returns a tuple whose first entry is f and second the gradient; any further entries
    (e.g. the Hessian) are passed back in ``extra``.

    Near the optimum F's changes drown in rounding: when f(t) is within F's rounding error of f0,
    ``flat_ok(out)`` (e.g. "the gradient norm dropped") may accept the trial instead, and once
    ``t * |slope|`` falls below the rounding error no smaller step can show a decrease, so the
    search stops with ``precision=True`` instead of spending its remaining trials.
    """
    if not slope < 0:
        return LineSearchResult(False, 0.0, f0, None)
    noise = rounding_error(f0)
    t = step0
    for trial in range(1, max_trials + 1):
        out = evaluate(t)
        f, g = out[0], out[1]
        if _finite(f, g) and (f <= f0 + c1 * t * slope or (flat_ok is not None and f <= f0 + noise and flat_ok(out))):
            return LineSearchResult(True, t, f, g, extra=out[2:] if len(out) > 2 else None, trials=trial)
        t *= shrink
        if t * -slope < noise:
            return LineSearchResult(False, 0.0, f0, None, trials=trial, precision=True)
    return LineSearchResult(False, 0.0, f0, None, trials=max_trials)
