"""The benchmark's cases: which data, which task and regParam, which experiment, and which runs
(--quick, the full run) each belongs to."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Optional

from _common import JobError
from bench.config import Config
from bench.data import CSV, LibSVM, Synthetic

ALL_SOLVERS = ("auto", "newton", "lbfgs", "gd")


@dataclass(frozen=True)
class Case:
    """One benchmark case. ``kind``: 'single' (every system fits once per repeat), 'path' (a
    10-value regParam path), 'cv' (3-fold x 4-value CrossValidator), 'ratios' (per-pass and
    ingest ratios only) or 'solvers' (synchronous, local and asynchronous solvers on the resident
    engine, see bench/solvers.py; ``straggler``: seconds worker 1 sleeps per push in the extra
    straggler runs). ``driver_copy``: the rows fit on the driver, so the reference, scikit-learn
    and the numpy per-pass baseline use an in-memory copy."""

    name: str
    task: str
    source: Any
    reg_param: float
    standardization: bool = False
    kind: str = "single"
    solvers: tuple[str, ...] = ALL_SOLVERS
    driver_copy: bool = True
    quick: bool = False
    full: bool = True
    scaling_n: Optional[int] = None
    straggler: float = 0.0
    note: str = ""


A9A = LibSVM("a9a", 123)
KDD_NUMERIC = tuple(f"_c{i}" for i in range(41) if i not in (1, 2, 3))
CASES = (
    Case("a9a-1e-3", "logistic", A9A, 1e-3, quick=True, note="Adult, 32561 x 123 sparse"),
    Case("a9a-1e-5", "logistic", A9A, 1e-5),
    Case("w8a-1e-4", "logistic", LibSVM("w8a", 300), 1e-4, note="49749 x 300 sparse"),
    Case("letter-1e-3", "multinomial", LibSVM("letter.scale", 16, labels="shift"), 1e-3,
         note="26 classes, labels 1..26 -> 0..25"),
    Case("california-ridge-1e-3", "linear",
         CSV("california_housing.csv", "median_house_value",
             ("longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms", "population",
              "households", "median_income"), ("ocean_proximity",)),
         1e-3, standardization=True, note="rows with nulls dropped, ocean_proximity one-hot"),
    Case("bike-poisson", "poisson",
         CSV("bike_sharing_hour.csv", "cnt",
             ("season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit", "temp", "atemp",
              "hum", "windspeed")),
         0.0, standardization=True, note="regParam 0: MLlib's GLR (IRLS) objective equals ours only there"),
    Case("kddcup-1e-4", "logistic",
         CSV("kddcup.data_10_percent.gz", "CASE WHEN _c41 = 'normal.' THEN 0.0 ELSE 1.0 END", KDD_NUMERIC,
             ("_c1", "_c2", "_c3"), header=False),
         1e-4, standardization=True, note="normal vs attack; protocol, service, flag one-hot"),
    Case("synthetic-1e5", "logistic", Synthetic(100_000, 100), 1e-4, solvers=("auto",), scaling_n=100_000),
    Case("synthetic-1e6", "logistic", Synthetic(1_000_000, 100), 1e-4, solvers=("auto",), scaling_n=1_000_000),
    Case("synthetic-4e6", "logistic", Synthetic(4_000_000, 100), 1e-4, solvers=("auto",), scaling_n=4_000_000,
         driver_copy=False, note="too big for the driver copy: scored on a TreeEngine, no scikit-learn"),
    Case("a9a-path", "logistic", A9A, 0.0, kind="path", note="regParam 1e-1 .. 1e-5, 10 values"),
    Case("a9a-cv", "logistic", A9A, 0.0, kind="cv", note="3 folds x regParam 1e-1 .. 1e-4"),
    Case("a9a-solvers", "logistic", A9A, 1e-3, standardization=True, kind="solvers", straggler=0.01,
         note="gd/lbfgs/newton/sgd/local-sgd/async-sgd; straggler: worker 1 +10 ms per push"),
    Case("synthetic-1e6-solvers", "logistic", Synthetic(1_000_000, 100), 1e-4, standardization=True,
         kind="solvers", note="gd/lbfgs/newton/sgd/local-sgd/async-sgd on 1e6 x 100 dense"),
    Case("synthetic-ratios", "logistic", Synthetic(100_000, 100, persist=False), 1e-3, kind="ratios", quick=True,
         full=False, note="generated in memory by jobs/generate.py"),
)


def select_cases(cfg: Config) -> list[Case]:
    """The cases --cases names (globs allowed), else the quick or the full set; raises JobError
    for a name that matches no case."""
    if cfg.cases:
        chosen = [c for c in CASES if any(fnmatch.fnmatch(c.name, pattern) for pattern in cfg.cases)]
        unknown = [p for p in cfg.cases if not any(fnmatch.fnmatch(c.name, p) for c in CASES)]
        if unknown:
            raise JobError(f"unknown case(s) {unknown}; --list-cases shows the names")
        return chosen
    return [c for c in CASES if (c.quick if cfg.quick else c.full)]


def listing() -> str:
    """One line per case: name, kind, task, regParam, the runs it belongs to, note."""
    lines = []
    for c in CASES:
        flags = ", ".join(x for x, on in (("quick", c.quick), ("full", c.full)) if on)
        lines.append(f"{c.name:24s} {c.kind:7s} {c.task:12s} regParam={c.reg_param:g}  [{flags}]  {c.note}")
    return "\n".join(lines)
