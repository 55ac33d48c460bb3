"""Synchronous, local and asynchronous solvers side by side (the benchmark's 'solvers' cases).

On one resident engine over the case's cached DataFrame: gd, lbfgs, newton, mini-batch sgd,
local-sgd and async-sgd, each fit once with a callback that records the iterate, the wall time,
the communication rounds and the passes. Every recorded iterate is then scored with the exact
objective on the same engine, so the curves (relative gap vs seconds, vs rounds) compare like with
like. With ``straggler`` seconds set, worker 1 sleeps that long before every push: synchronous SGD
(async-sgd with staleness 0, which is exactly mini-batch SGD) against async-sgd with unbounded
staleness, time to a 1e-3 gap.

Communication rounds: one driver <-> workers exchange. gd / lbfgs / newton: one per pass;
sgd: one per iteration; local-sgd: one per round of H local steps; async-sgd: K pushes (one per
worker on average) make a round.
"""
from __future__ import annotations

import time
import warnings
from typing import Optional

import numpy as np

from bench.config import LOSS, Config, log
from bench.data import load_cached
from bench.tables import fmt

SOLVER_GAP = 1e-3
MAX_TRACE = 150
SGD = dict(step_size=0.5, fraction=0.1, schedule="exponential", decay=0.997, seed=1)

# (label, solver, solver_options, fit settings)
RUNS = (
    ("newton", "newton", {}, dict(tol=1e-10, max_iter=100)),
    ("lbfgs", "lbfgs", {}, dict(tol=1e-10, max_iter=1000)),
    ("gd", "gd", {}, dict(tol=1e-10, max_iter=500)),
    ("sgd", "sgd", SGD, dict(tol=1e-12, max_iter=2000)),
    ("local-sgd H=10", "local-sgd", dict(SGD, step_size=0.3, decay=0.98, local_steps=10), dict(tol=1e-12, max_iter=100)),
    ("async-sgd tau=2", "async-sgd", dict(SGD, staleness=2), dict(tol=1e-12, max_iter=2000)),
)


def straggler_runs(delay: float) -> tuple:
    """The two straggler RUNS: synchronous SGD and unbounded async-sgd, worker 1 sleeping ``delay`` s per push."""
    slow = {1: delay}
    return (
        ("sync sgd + straggler", "async-sgd", dict(SGD, staleness=0, delays=slow), dict(tol=1e-12, max_iter=2000)),
        ("async-sgd tau=inf + straggler", "async-sgd", dict(SGD, staleness=None, delays=slow),
         dict(tol=1e-12, max_iter=2000)),
    )


def _rounds(solver: str, row: dict) -> float:
    """Communication rounds so far at a history row (see the module docstring)."""
    if "rounds" in row:
        return float(row["rounds"])
    return float(row["iteration"]) if solver == "sgd" else float(row["passes"])


def run_one(engine, loss: str, reg_param: float, standardization: bool, label: str, solver: str,
            options: dict, settings: dict) -> dict:
    from sparkopt.fit import fit_linear_model

    trace: list[tuple] = []
    started = time.perf_counter()

    def record(row: dict) -> None:
        trace.append((time.perf_counter() - started, _rounds(solver, row), float(row["passes"]),
                      np.array(row["x"], copy=True)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_linear_model(engine, loss, reg_param=reg_param, standardization=standardization, solver=solver,
                               solver_options=dict(options), callback=record, **settings)
    seconds = time.perf_counter() - started
    return {"label": label, "solver": solver, "options": {k: v for k, v in options.items() if k != "delays"},
            "delays": options.get("delays"), "seconds": seconds, "nit": fit.result.nit,
            "passes": fit.result.passes, "status": fit.result.status.name, "final_x": fit.result.x,
            "extra": {k: v for k, v in fit.result.extra.items() if k in ("staleness_histogram", "pushes_per_worker")},
            "trace": trace}


def score(run: dict, objective, best: float) -> dict:
    """Exact F of (at most MAX_TRACE of) the recorded iterates and of the returned one."""
    trace = run.pop("trace")
    if len(trace) > MAX_TRACE:
        keep = np.unique(np.linspace(0, len(trace) - 1, MAX_TRACE).round().astype(int))
        trace = [trace[i] for i in keep]
    curve = []
    for seconds, rounds, passes, z in trace:
        f = float(objective.total(z))
        curve.append((seconds, rounds, passes, (f - best) / abs(best) if np.isfinite(f) else None))
    final = float(objective.total(run.pop("final_x")))
    run["final_gap"] = (final - best) / abs(best)
    hit = next((c for c in curve if c[3] is not None and c[3] <= SOLVER_GAP), None)
    run["t_to_gap"], run["rounds_to_gap"], run["passes_to_gap"] = (hit[0], hit[1], hit[2]) if hit else (None,) * 3
    run["curve"] = curve
    return run


def run_solvers(spark, case, cfg: Config) -> dict:
    """All runs of one case; returns {'n', 'd', 'best', 'runs': [...]}."""
    from sparkopt.engine import ResidentEngine, ingest
    from sparkopt.fit import build_objective, fit_linear_model

    spark_df = load_cached(spark, case, cfg)
    rdd, stats = ingest(spark_df)
    engine = ResidentEngine(rdd, stats)
    loss = LOSS[case.task]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = fit_linear_model(engine, loss, reg_param=case.reg_param, standardization=case.standardization,
                                         solver="newton", tol=1e-12, max_iter=100)
        objective = build_objective(engine, loss, reg_param=case.reg_param, standardization=case.standardization)[0]
        with engine.session():
            best = float(objective.total(reference.result.x))
        runs = list(RUNS) + (list(straggler_runs(case.straggler)) if case.straggler else [])
        out = []
        for label, solver, options, settings in runs:
            run = run_one(engine, loss, case.reg_param, case.standardization, label, solver, options, settings)
            with engine.session():
                out.append(score(run, objective, best))
            log(f"{case.name}: {label}: {run['seconds']:.2f}s, final gap {run['final_gap']:.2e}, "
                f"to {SOLVER_GAP:g}: {fmt(run['t_to_gap'], '.2f')}s / {fmt(run['rounds_to_gap'], 'g')} rounds")
        return {"n": int(stats.n_rows), "d": int(stats.n_features), "best": best, "runs": out}
    finally:
        engine.unpersist()
        spark_df.unpersist()


def table(name: str, runs: list[dict]) -> list[tuple]:
    """One TABLE_HEADER row per scored run of case ``name``."""
    return [(name, r["label"], fmt(r["seconds"], ".2f"), fmt(r["nit"], "d"), fmt(r["passes"], ".1f"),
             fmt(r["final_gap"], ".1e"), fmt(r["t_to_gap"], ".2f"), fmt(r["rounds_to_gap"], "g"),
             fmt(r["passes_to_gap"], ".1f"), r["status"]) for r in runs]


TABLE_HEADER = ("case", "solver", "seconds", "iterations/rounds", "passes", "final_gap", "t_to_1e-3_s",
                "rounds_to_1e-3", "passes_to_1e-3", "status")


def straggler_speedup(runs: list[dict]) -> Optional[dict]:
    """Time to the gap of synchronous vs asynchronous SGD under the straggler, and their ratio;
    None when the straggler runs are not among ``runs``."""
    sync = next((r for r in runs if r["label"].startswith("sync sgd + straggler")), None)
    asyn = next((r for r in runs if r["label"].startswith("async-sgd tau=inf")), None)
    if sync is None or asyn is None:
        return None
    ratio = (sync["t_to_gap"] / asyn["t_to_gap"]) if sync["t_to_gap"] and asyn["t_to_gap"] else None
    return {"sync_s": sync["t_to_gap"], "async_s": asyn["t_to_gap"], "speedup": ratio,
            "delay_s": (sync["delays"] or {}).get(1)}


def plot(name: str, info: dict, path) -> None:
    """Writes the PNG at ``path``: relative gap vs wall seconds and vs rounds, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_time, by_rounds) = plt.subplots(1, 2, figsize=(12, 5))
    for run in info["runs"]:
        pts = [(s, r, max(g, 1e-16)) for s, r, _, g in run["curve"] if g is not None]
        if pts:
            by_time.loglog([max(p[0], 1e-3) for p in pts], [p[2] for p in pts], ".-", label=run["label"],
                           markersize=3)
            by_rounds.loglog([max(p[1], 1) for p in pts], [p[2] for p in pts], ".-", label=run["label"],
                             markersize=3)
    for ax, xlabel in ((by_time, "wall seconds"), (by_rounds, "communication rounds")):
        ax.axhline(SOLVER_GAP, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("relative objective gap")
        ax.grid(True, which="both", alpha=0.3)
    by_rounds.legend(fontsize=7)
    fig.suptitle(f"{name}: n={info['n']}, d={info['d']} (resident engine)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
