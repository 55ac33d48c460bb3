"""The run's outputs: results.md (the tables), results.json (every figure, per repeat), a PNG per
case; rewritten after every case so an interrupted run keeps what it measured."""
from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import solvers as solver_comparison
from bench.config import DRIVER_THREADS, GAP_TARGET, REFERENCE_TOL, Config
from bench.measure import CaseResult
from bench.tables import fmt, markdown_table
from bench.targets import Target, scaling_series, targets

GAP_FLOOR = 1e-16                     # plotted instead of a gap <= 0 (log scale)


MAIN_COLUMNS = ("case", "system", "solver", "settings", "fit_s", "warm_fit_s", "ingest_s", "iterations", "passes",
                "objective", "rel_gap", "t_to_1e-6_s", "passes_to_1e-6", "peak_mem_mb", "time_vs_mllib")


def main_table(results: list[CaseResult]) -> str:
    """The single fits: one row per system and case."""
    rows = []
    for res in results:
        for r in res.rows:
            rows.append((r.case, r.system, r.solver, r.settings, fmt(r.fit_s, ".2f"), fmt(r.warm_fit_s, ".2f"),
                         fmt(r.ingest_s, ".2f"), fmt(r.iterations, "d"), fmt(r.passes, "g"),
                         fmt(r.objective, ".10g"), fmt(r.rel_gap, ".1e"), fmt(r.t_to_gap_s, ".2f"),
                         fmt(r.passes_to_gap, "g"), fmt(r.peak_mem_mb, ".1f"), fmt(r.time_vs_mllib, ".2f")))
    return markdown_table(MAIN_COLUMNS, rows)


MEMORY_COLUMNS = ("case", "system", "solver", "driver_python_peak_mb", "jvm_peak_mb", "python_workers_peak_mb",
                  "workers", "data_float64_mb")


def memory_table(results: list[CaseResult]) -> str:
    """Peak resident memory per system and case (bench.memory): the driver's Python, the Spark JVM
    (local mode: driver and executor in one), the Python workers; beside the data's float64 size."""
    rows = []
    for res in results:
        raw = res.n * (res.d + 2) * 8 / 2**20 if res.n and res.d else None
        for r in res.rows:
            rows.append((r.case, r.system, r.solver, fmt(r.rss_driver_python_mb, ".0f"), fmt(r.rss_jvm_mb, ".0f"),
                         fmt(r.rss_workers_mb, ".0f"), r.workers, fmt(raw, ".1f")))
    return markdown_table(MEMORY_COLUMNS, rows)


def repeated_table(results: list[CaseResult]) -> str:
    """The repeated-fit experiments: one row per system and case."""
    rows = [(r.case, r.system, r.settings, r.fits, fmt(r.total_s, ".2f"), fmt(r.max_rel_gap, ".1e"),
             fmt(r.fits_above_target, "d"), fmt(r.time_vs_mllib, ".2f"))
            for res in results for r in res.repeated]
    return markdown_table(("case", "system", "settings", "fits", "total_s", "max_rel_gap", "fits_above_1e-6",
                           "time_vs_mllib"), rows)


def ratios_table(results: list[CaseResult]) -> str:
    """The per-pass and ingest ratios: one row per measured case."""
    rows = [(x["case"], x["n"], x["d"], "sparse" if x["sparse"] else "dense", fmt(x["ingest_s"], ".2f"),
             fmt(x["bare_arrow_s"], ".2f"), fmt(x["ingest_ratio"], ".2f"), fmt(x["pass_s"], ".4f"),
             fmt(x["noop_pass_s"], ".4f"), fmt(x["resident_start_s"], ".2f"), fmt(x["resident_pass_s"], ".4f"),
             fmt(x["resident_noop_pass_s"], ".4f"), fmt(x["numpy_pass_s"], ".4f"), fmt(x["pass_ratio"], ".2f"),
             fmt(x["resident_pass_ratio"], ".2f"), x["numpy_threads"])
            for x in (r.ratios for r in results if r.ratios)]
    return markdown_table(("case", "n", "d", "storage", "ingest_s", "bare_arrow_s", "ingest_ratio", "tree_pass_s",
                           "tree_empty_pass_s", "resident_start_s", "resident_pass_s", "resident_empty_pass_s",
                           "numpy_pass_s", "tree_pass_ratio", "resident_pass_ratio", "numpy_threads"), rows)


def scaling_table(results: list[CaseResult]) -> str:
    """Fit seconds per n and the log-log slope, one row per system."""
    series = scaling_series(results)
    sizes = sorted({n for s in series.values() for n, _ in s["points"]})
    rows = []
    for name, s in series.items():
        times = dict(s["points"])
        rows.append((name, *[fmt(times.get(n), ".2f") for n in sizes], fmt(s["slope"], ".2f"),
                     fmt(s["slope_largest_two"], ".2f")))
    return markdown_table(("system", *[f"n={n:g} fit_s" for n in sizes], "log-log slope",
                           "slope, largest two"), rows)


def reference_table(results: list[CaseResult]) -> str:
    """How each single case's F* was obtained, and how far scikit-learn's tight fit is from it."""
    rows = [(r.name, fmt(r.reference.get("objective"), ".12g"), r.reference.get("status", "n/a"),
             fmt(r.reference.get("iterations"), "d"), r.reference.get("engine", "n/a"),
             fmt(r.reference.get("sklearn_tight_vs_reference"), ".1e"), fmt(r.reference.get("beaten_by"), ".1e"))
            for r in results if r.kind == "single" and r.reference]
    return markdown_table(("case", "reference F*", "status", "newton iterations", "engine",
                           "sklearn-tight vs F*", "F* above best system"), rows)


def targets_table(found: list[Target]) -> str:
    """Every target with its measured value and status."""
    return markdown_table(("target", "case", "measured", "threshold", "status"),
                          [(t.target, t.case, t.measured, t.threshold, t.status) for t in found])


def report(results: list[CaseResult], found: list[Target], cfg: Config, seconds: float) -> str:
    """results.md: the run's tables under their headings."""
    parts = [f"# sparkopt benchmark ({'quick' if cfg.quick else 'selected cases' if cfg.cases else 'full'} run, "
             f"{seconds:.0f} s)", "",
             "fit_s: median wall seconds of fit() (sparkopt: cold, ingest included); rel_gap against a "
             "Newton tol-1e-12 reference, every objective from sparkopt.fit.objective_value on the same "
             "driver-side data; peak_mem_mb: tracemalloc peak of driver Python allocations in the warm-up fit "
             "(JVM excluded). mllib-tight: tol 1e-10, maxIter 1000; mllib-default / sklearn-default: library "
             "defaults.", ""]
    if any(r.rows for r in results):
        parts += ["## Single fits", "", main_table(results), "",
                  "### Peak memory (resident set, per process kind; Linux /proc VmHWM, reset before the fit)", "",
                  "Measured on each system's warm-up fit (else its first timed fit). The JVM is shared by every "
                  "system (local mode: driver and executor), so its peak includes the cached DataFrame; "
                  "python_workers_peak_mb adds each worker's own peak; data_float64_mb is n x (d + 2) x 8.", "",
                  memory_table(results), "",
                  "### References (exact Newton, tol 1e-12)", "", reference_table(results), ""]
    if any(r.repeated for r in results):
        parts += ["## Repeated fits", "", repeated_table(results), ""]
    if any(r.ratios for r in results):
        parts += ["## Per-pass and ingest ratios", "", ratios_table(results), ""]
    if any(r.solvers for r in results):
        rows = [row for r in results if r.solvers for row in solver_comparison.table(r.name, r.solvers["runs"])]
        parts += ["## Solvers: synchronous, local, asynchronous (resident engine, gap to 1e-3)", "",
                  markdown_table(solver_comparison.TABLE_HEADER, rows), ""]
    if scaling_series(results):
        parts += ["## Scaling (synthetic dense logistic, d=100)", "", scaling_table(results), ""]
    failed = [r for r in results if r.error]
    if failed:
        parts += ["## Failed cases", ""] + [f"- {r.name}: {r.error}" for r in failed] + [""]
    parts += ["## Targets", "", targets_table(found), ""]
    return "\n".join(parts)


def plot_case(res: CaseResult, path: Path) -> bool:
    """Objective gap vs wall seconds, one line per system (scikit-learn: its final point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for row in res.rows:
        pts = [(t, max(g, GAP_FLOOR)) for t, g, _ in row.curve if g is not None]
        if not pts:
            continue
        label = f"{row.system} {row.solver}"
        style = "o" if len(pts) == 1 else ".-"
        ax.semilogy([p[0] for p in pts], [p[1] for p in pts], style, label=label, markersize=4 if len(pts) > 1 else 8)
    ax.axhline(GAP_TARGET, color="grey", linestyle="--", linewidth=1, label="1e-6 gap")
    ax.set_xlabel("wall seconds (sparkopt: cold fit incl. ingest; MLlib: history spread over the fit)")
    ax.set_ylabel(f"relative objective gap (floored at {GAP_FLOOR:g})")
    ax.set_title(f"{res.name}: {res.task}, n={res.n}, d={res.d}, regParam={res.reg_param:g}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot(res: CaseResult, output: Path) -> None:
    """OUTPUT/<case>.png: a single case's gap per system, a solver case's gap per solver."""
    if res.rows:
        output.mkdir(parents=True, exist_ok=True)
        plot_case(res, output / f"{res.name}.png")
    if res.solvers:
        output.mkdir(parents=True, exist_ok=True)
        solver_comparison.plot(res.name, res.solvers, output / f"{res.name}.png")


def jsonable(value: Any) -> Any:
    """Plain JSON: non-finite floats become null (strict parsers reject NaN / Infinity)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def result_dict(res: CaseResult) -> dict:
    """A CaseResult as results.json holds it (no models, no Described)."""
    out = {k: v for k, v in asdict(replace(res, rows=[], repeated=[])).items() if k not in ("rows", "repeated")}
    out["rows"] = [{k: v for k, v in asdict(replace(r, described=None)).items() if k != "described"}
                   for r in res.rows]
    for row, original in zip(out["rows"], res.rows):
        row["resolved_solver"] = original.described.solver if original.described else None
    out["repeated"] = [{k: v for k, v in asdict(replace(r, models=None)).items() if k != "models"}
                       for r in res.repeated]
    return out


def environment(spark) -> dict:
    """Versions, machine and master of the run (results.json's environment)."""
    import pyspark
    import scipy
    import sklearn

    return {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count(),
            "spark": spark.version, "pyspark": pyspark.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "sklearn": sklearn.__version__, "master": spark.sparkContext.master,
            "driver_threads": DRIVER_THREADS, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_outputs(results: list[CaseResult], cfg: Config, env: dict, seconds: float, pending: int = 0) -> str:
    """results.md and results.json for the cases run so far (rewritten after every case, so that an
    interrupted full run keeps what it measured; ``pending`` cases are still to come)."""
    cfg.output.mkdir(parents=True, exist_ok=True)
    found = targets(results)
    text = report(results, found, cfg, seconds)
    if pending:
        text = text.replace("\n", f"\n\n**Partial results: {pending} case(s) still running.**\n", 1)
    _write_atomically(cfg.output / "results.md", text)
    payload = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
               "environment": env, "seconds": seconds, "complete": not pending, "gap_target": GAP_TARGET,
               "reference_tol": REFERENCE_TOL, "cases": [result_dict(r) for r in results],
               "scaling": scaling_series(results), "targets": [asdict(t) for t in found]}
    _write_atomically(cfg.output / "results.json", json.dumps(jsonable(payload), indent=1, allow_nan=False))
    return text


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling and rename it onto ``path`` (readers never see half a file)."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text)
    os.replace(staging, path)


