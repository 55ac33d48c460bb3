"""A regularization path (sparkopt.tuning) against the same regParams fitted one by one, cold.

In-memory engine (no Spark: passes are what a Spark run would pay one job each for; seconds are
this machine's driver time). Cases: a9a logistic, elastic net 0.5, 20 values from lambda_max down
to 1e-2 lambda_max, with and without strong rules; california squared error, lasso, the default
grid (normal equations). Every path point is checked against its cold fit's F.

    PYTHONPATH=.:jobs python -m bench.path_vs_fits [--data DIR]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_svmlight_file

from sparkopt.engine import LocalEngine
from sparkopt.fit import fit_linear_model
from sparkopt.tuning import regularization_path


def _a9a(data: Path):
    X, y = load_svmlight_file(str(data / "a9a"), n_features=123)
    return "a9a (32561 x 123, CSR)", "logistic", X.tocsr(), (y > 0).astype(float), 0.5, 20, 1e-2


def _california(data: Path):
    df = pd.read_csv(data / "california_housing.csv")
    X = df.drop(columns=["median_house_value", "ocean_proximity"]).fillna(0).to_numpy(float)
    return "california (20640 x 8, raw units)", "squared_error", X, df["median_house_value"].to_numpy(float), \
        1.0, 100, None


def run_case(name, loss, X, y, alpha, n, min_ratio, partitions: int = 4) -> list[str]:
    kw = dict(elastic_net_param=alpha, n_reg_params=n, min_ratio=min_ratio, early_stop=False)
    rows = []
    results = {}
    for label, screening in (("path, strong rules", True), ("path, no screening", False)):
        engine = LocalEngine.from_arrays(X, y, num_partitions=partitions)
        started = time.perf_counter()
        path = regularization_path(engine, loss, screening=screening, **kw)
        results[label] = (path, time.perf_counter() - started)
    path = results["path, strong rules"][0]
    passes, seconds, worst = 0.0, 0.0, 0.0
    for point in path.points:
        engine = LocalEngine.from_arrays(X, y, num_partitions=partitions)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cold = fit_linear_model(engine, loss, reg_param=point.reg_param, elastic_net_param=alpha)
        seconds += time.perf_counter() - started
        passes += engine.passes
        worst = max(worst, (point.objective - cold.objective) / abs(cold.objective))
    for label, (p, sec) in results.items():
        rows.append(f"| {name} | {loss}, alpha {alpha} | {label} | {len(p.points)} | {p.passes:g} | {sec:.2f} |")
    rows.append(f"| {name} | {loss}, alpha {alpha} | {len(path.points)} cold fits | {len(path.points)} | "
                f"{passes:g} | {seconds:.2f} |")
    rows.append(f"| {name} | | path F - cold F (max, relative) | | {worst:.1e} | |")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "data")
    args = parser.parse_args(argv)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"{platform.processor() or platform.platform()}, {os.cpu_count()} cores, numpy {np.__version__}")
    print("| data | problem | method | points | passes | seconds |")
    print("|---|---|---|---|---|---|")
    for case in (_a9a, _california):
        for row in run_case(*case(args.data)):
            print(row, flush=True)


if __name__ == "__main__":
    main()
