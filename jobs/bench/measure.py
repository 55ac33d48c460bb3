"""What a measurement records (a fit's Outcome and Described, a system's Row, a repeated-fit
experiment's RepeatedRow, a case's CaseResult) and how a system's fits are timed."""
from __future__ import annotations

import statistics
import tracemalloc
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from bench.config import log, now
from bench.memory import PeakMemory

if TYPE_CHECKING:
    from bench.cases import Case


@dataclass
class Outcome:
    """One timed fit."""

    seconds: float
    model: Any
    ingest_seconds: Optional[float] = None
    warm_seconds: Optional[float] = None


@dataclass
class Described:
    """What a finished fit reports besides its time. ``curve``: (seconds, objective or history
    value, passes) points; ``calibrate``: the values are the library's own history, to be scaled to
    the shared objective at the end."""

    coef: np.ndarray
    intercept: Any
    iterations: Optional[int]
    passes: Optional[float]
    solver: str
    status: str = ""
    curve: list = field(default_factory=list)
    calibrate: bool = False


@dataclass
class Row:
    """One system on one case: medians over the timed repeats, plus every repeat."""

    case: str
    system: str
    solver: str
    settings: str
    fit_s: float
    fit_s_all: list
    warm_fit_s: Optional[float]
    warm_fit_s_all: Optional[list]
    ingest_s: Optional[float]
    ingest_s_all: Optional[list]
    iterations: Optional[int]
    passes: Optional[float]
    peak_mem_mb: Optional[float]
    status: str = ""
    # peak resident MB during the memory-measured fit (bench.memory): driver Python, Spark JVM,
    # Python workers (sum of their own peaks), and how many workers there were
    rss_driver_python_mb: Optional[float] = None
    rss_jvm_mb: Optional[float] = None
    rss_workers_mb: Optional[float] = None
    workers: int = 0
    objective: Optional[float] = None
    rel_gap: Optional[float] = None
    t_to_gap_s: Optional[float] = None
    passes_to_gap: Optional[float] = None
    time_vs_mllib: Optional[float] = None
    curve: list = field(default_factory=list)      # (seconds, rel_gap[, passes]) after scoring

    # not serialized
    described: Optional[Described] = field(default=None, repr=False)


def median_or_none(values: list) -> Optional[float]:
    """The median of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def measure(case: "Case", runner: Any, repeats: int, warm_up: bool = True) -> Row:
    """Warm-up fit (untimed, traced for memory), then ``repeats`` timed fits. Without the warm-up
    (--quick, for a library already warmed up by an earlier row) the tracemalloc peak is not
    measured. Peak resident memory of the processes (bench.memory) is measured on the warm-up fit,
    else on the first timed fit (the fit times itself; reading /proc is outside its clock)."""
    peak = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if warm_up:
            tracemalloc.start()
            try:
                with PeakMemory() as rss:
                    runner.fit()
                peak = tracemalloc.get_traced_memory()[1] / 2**20
            finally:
                tracemalloc.stop()
            outcomes = [runner.fit() for _ in range(repeats)]
        else:
            with PeakMemory() as rss:
                outcomes = [runner.fit()]
            outcomes += [runner.fit() for _ in range(repeats - 1)]
    described = runner.describe(outcomes[-1])
    solver = described.solver
    if getattr(runner, "solver", None) == "auto" and runner.system == "sparkopt":
        solver = f"auto->{described.solver}"
    row = Row(case=case.name, system=runner.system, solver=solver, settings=runner.settings,
              fit_s=statistics.median(o.seconds for o in outcomes), fit_s_all=[o.seconds for o in outcomes],
              warm_fit_s=median_or_none([o.warm_seconds for o in outcomes]),
              warm_fit_s_all=[o.warm_seconds for o in outcomes] if outcomes[0].warm_seconds is not None else None,
              ingest_s=median_or_none([o.ingest_seconds for o in outcomes]),
              ingest_s_all=[o.ingest_seconds for o in outcomes] if outcomes[0].ingest_seconds is not None else None,
              iterations=described.iterations, passes=described.passes, peak_mem_mb=peak,
              status=described.status, described=described, rss_driver_python_mb=rss.result.driver_python,
              rss_jvm_mb=rss.result.jvm, rss_workers_mb=rss.result.workers, workers=rss.result.worker_count)
    log(f"{case.name}: {row.system} {row.solver}: fit {row.fit_s:.2f}s"
        + (f" (warm {row.warm_fit_s:.2f}s, ingest {row.ingest_s:.2f}s)" if row.warm_fit_s is not None else "")
        + f", {row.iterations} iterations")
    return row


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        started = now()
        fn()
        times.append(now() - started)
    return times


@dataclass
class CaseResult:
    """Everything one case measured (one entry of results.json's cases); ``error`` when it failed."""

    name: str
    kind: str
    task: str
    note: str
    reg_param: float
    standardization: bool
    n: Optional[int] = None
    d: Optional[int] = None
    rows: list = field(default_factory=list)
    repeated: list = field(default_factory=list)
    reference: dict = field(default_factory=dict)
    ratios: Optional[dict] = None
    scaling_n: Optional[int] = None
    solvers: Optional[dict] = None
    seconds: float = 0.0
    error: Optional[str] = None


@dataclass
class RepeatedRow:
    """A whole repeated-fit experiment for one system: total wall time and the worst gap."""

    case: str
    system: str
    settings: str
    fits: int
    total_s: float
    max_rel_gap: Optional[float] = None
    fits_above_target: Optional[int] = None
    gaps: list = field(default_factory=list)
    time_vs_mllib: Optional[float] = None
    models: Any = field(default=None, repr=False)   # per fit: (train key, regParam, model); not serialized


