"""The issue's targets: each measured figure against its threshold (PASS / MISS), the scaling
series they use, and an n/a line for every target this run did not measure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from bench.config import GAP_TARGET
from bench.measure import CaseResult, Row
from bench.solvers import straggler_speedup
from bench.tables import fmt

NEWTON_FAMILY = ("newton", "newton-cg")


@dataclass
class Target:
    """One target of the issue, as measured in this run."""

    target: str
    case: str
    measured: str
    threshold: str
    status: str          # PASS | MISS | n/a


def mllib_time_to_gap(rows: list[Row]) -> Optional[float]:
    """MLlib's fastest way to a 1e-6 gap: the earliest time-to-gap over its rows (an oracle tol)."""
    times = [r.t_to_gap_s for r in rows if r.system.startswith("mllib") and r.t_to_gap_s is not None]
    return min(times) if times else None


def slope(points: list[tuple[float, float]]) -> Optional[float]:
    """The least-squares slope of log(y) on log(x); None for fewer than two points."""
    if len(points) < 2:
        return None
    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def scaling_series(results: list[CaseResult]) -> dict:
    """Fit seconds per n for the synthetic series, and the log-log slope per system."""
    series: dict[str, list] = {}
    for res in sorted((r for r in results if r.scaling_n and r.rows), key=lambda r: r.scaling_n):
        for row in res.rows:
            if row.system == "sparkopt" and row.solver.startswith("auto"):
                series.setdefault("sparkopt auto (cold)", []).append((res.scaling_n, row.fit_s))
                series.setdefault("sparkopt auto (warm)", []).append((res.scaling_n, row.warm_fit_s))
            elif row.system.startswith("mllib"):
                series.setdefault(row.system, []).append((res.scaling_n, row.fit_s))
    # the slope of the two largest sizes too: fixed per-job costs flatter the full-range slope
    return {name: {"points": pts, "slope": slope(pts), "slope_largest_two": slope(pts[-2:]) if len(pts) > 2 else None}
            for name, pts in series.items()}


T_SINGLE = "single cold fit: sparkopt auto / MLlib time to 1e-6 gap"
T_REPEATED = "repeated fits: sparkopt total / MLlib total"
T_PASSES = "Newton-family passes to 1e-6 gap"
T_PASS_COST = "per-pass cost / single-process numpy"
T_INGEST = "ingest / bare mapInArrow row count"
T_OVERHEAD = "resident engine: per-iteration overhead (empty pass)"
T_STRAGGLER = "straggler: async-sgd time to 1e-3 gap faster than synchronous SGD"
T_SCALING = "scaling: log-log slope of fit time in n"


def single_fit_targets(results: list[CaseResult]) -> list[Target]:
    """sparkopt auto's cold fit (ingest included, default tol) against MLlib's fastest way to a
    1e-6 gap (an oracle tol read off its history: favourable to MLlib)."""
    out = []
    for res in (r for r in results if r.kind == "single" and r.rows):
        auto = next((r for r in res.rows if r.system == "sparkopt" and r.solver.startswith("auto")), None)
        if auto is None:
            continue
        reached = auto.rel_gap is not None and auto.rel_gap <= GAP_TARGET
        mllib = mllib_time_to_gap(res.rows)
        if mllib is None:
            tight = next((r for r in res.rows if r.system == "mllib-tight"), None)
            measured = (f"MLlib never reached 1e-6 (mllib-tight gap {fmt(tight.rel_gap if tight else None, '.1e')} "
                        f"after {fmt(tight.fit_s if tight else None, '.2f')}s); sparkopt {auto.fit_s:.2f}s, "
                        f"gap {fmt(auto.rel_gap, '.1e')}")
            out.append(Target(T_SINGLE, res.name, measured, "<= 0.7", "PASS" if reached else "MISS"))
            continue
        ratio = auto.fit_s / mllib
        measured = (f"{ratio:.2f} ({auto.fit_s:.2f}s incl. ingest vs {mllib:.2f}s; sparkopt gap "
                    f"{fmt(auto.rel_gap, '.1e')})")
        out.append(Target(T_SINGLE, res.name, measured, "<= 0.7", "PASS" if ratio <= 0.7 and reached else "MISS"))
    return out


def repeated_targets(results: list[CaseResult]) -> list[Target]:
    """sparkopt's total against MLlib's fastest setting that kept every fit within 1e-6 (the tight
    one when none did, which is then said)."""
    out = []
    for res in (r for r in results if r.kind in ("path", "cv") and r.repeated):
        ours = next(r for r in res.repeated if r.system == "sparkopt")
        theirs = [r for r in res.repeated if r.system.startswith("mllib")]
        good = [r for r in theirs if r.fits_above_target == 0]
        base = min(good, key=lambda r: r.total_s) if good else next(r for r in theirs if r.system == "mllib-tight")
        ratio = ours.total_s / base.total_s
        measured = (f"{ratio:.2f} ({ours.total_s:.1f}s vs {base.system} {base.total_s:.1f}s; max gap "
                    f"{fmt(ours.max_rel_gap, '.1e')} vs {fmt(base.max_rel_gap, '.1e')}"
                    + ("" if good else "; no MLlib setting kept every fit within 1e-6"))
        # the faster MLlib settings that missed the gap on some fits, for scale
        for other in sorted((r for r in theirs if r not in good and r is not base), key=lambda r: r.total_s):
            measured += (f"; vs {other.system} {ours.total_s / other.total_s:.2f}, which left "
                         f"{other.fits_above_target} fits above 1e-6")
        measured += ")"
        ok = ratio <= 1 / 3 and ours.fits_above_target == 0
        out.append(Target(T_REPEATED, res.name, measured, "<= 0.33", "PASS" if ok else "MISS"))
    return out


def passes_targets(results: list[CaseResult]) -> list[Target]:
    out = []
    for res in (r for r in results if r.kind == "single" and r.rows and r.task in ("logistic", "multinomial")):
        for row in res.rows:
            if row.system != "sparkopt" or row.described is None or row.described.solver not in NEWTON_FAMILY:
                continue
            p = row.passes_to_gap
            measured = fmt(p, "g") if p is not None else f"not reached ({fmt(row.passes, 'g')} passes)"
            out.append(Target(T_PASSES, f"{res.name} ({row.solver})", measured, "<= 15",
                              "PASS" if p is not None and p <= 15 else "MISS"))
    return out


def ratio_targets(results: list[CaseResult]) -> list[Target]:
    out = []
    for x in (r.ratios for r in results if r.ratios):
        for engine, key in (("resident", "resident_pass"), ("tree", "pass")):
            ratio = x[f"{key}_ratio"]
            measured = (f"{ratio:.2f} ({x[f'{key}_s']:.4f}s vs numpy {x['numpy_pass_s']:.4f}s)" if ratio is not None
                        else f"no driver copy for numpy (pass {x[f'{key}_s']:.4f}s)")
            out.append(Target(T_PASS_COST, f"{x['case']} ({engine} engine)", measured, "<= 2",
                              "n/a" if ratio is None else ("PASS" if ratio <= 2 else "MISS")))
        overhead = x["resident_noop_pass_s"]
        out.append(Target(T_OVERHEAD, x["case"], f"{overhead * 1e3:.1f} ms (tree engine {x['noop_pass_s'] * 1e3:.0f} ms)",
                          "<= 20 ms", "PASS" if overhead <= 0.020 else "MISS"))
        ratio = x["ingest_ratio"]
        out.append(Target(T_INGEST, x["case"], f"{ratio:.2f} ({x['ingest_s']:.2f}s vs {x['bare_arrow_s']:.2f}s)",
                          "<= 1.2", "PASS" if ratio <= 1.2 else "MISS"))
    return out


def straggler_targets(results: list[CaseResult]) -> list[Target]:
    out = []
    for res in results:
        info = straggler_speedup(res.solvers["runs"]) if res.solvers else None
        if info is None:
            continue
        measured = (f"{info['speedup']:.1f}x faster ({info['async_s']:.2f}s vs sync {info['sync_s']:.2f}s, "
                    f"worker 1 +{info['delay_s'] * 1e3:.0f} ms per push)" if info["speedup"]
                    else f"1e-3 not reached (sync {info['sync_s']}, async {info['async_s']})")
        out.append(Target(T_STRAGGLER, res.name, measured, "> 1x",
                          "PASS" if info["speedup"] and info["speedup"] > 1 else "MISS"))
    return out


def scaling_targets(results: list[CaseResult]) -> list[Target]:
    out = []
    series = scaling_series(results)
    for name in ("sparkopt auto (cold)", "sparkopt auto (warm)"):
        s = series.get(name)
        if s and s["slope"] is not None:
            ns = ", ".join(f"n={n:g}: {t:.2f}s" for n, t in s["points"])
            top = f"; largest two sizes alone {s['slope_largest_two']:.2f}" if s["slope_largest_two"] else ""
            out.append(Target(T_SCALING, name, f"{s['slope']:.2f} ({ns}{top})", "<= 1.05",
                              "PASS" if s["slope"] <= 1.05 else "MISS"))
    return out


def targets(results: list[CaseResult]) -> list[Target]:
    """Every target of the issue with its measured value; the ones this run did not measure say so."""
    out = (single_fit_targets(results) + repeated_targets(results) + passes_targets(results)
           + ratio_targets(results) + scaling_targets(results) + straggler_targets(results))
    measured = {t.target for t in out}
    for name in (T_SINGLE, T_REPEATED, T_PASSES, T_PASS_COST, T_OVERHEAD, T_INGEST, T_SCALING, T_STRAGGLER):
        if name not in measured:
            out.append(Target(name, "-", "not measured in this run (see --list-cases)", "-", "n/a"))
    return out


