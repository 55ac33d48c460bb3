"""The solver-comparison part of the benchmark on in-memory workers (no Spark)."""
import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file

from bench import solvers as bench_solvers
from sparkopt.engine import LocalEngine
from sparkopt.fit import build_objective, fit_linear_model

from conftest import dataset


def test_runs_are_scored_with_the_exact_objective_and_tabulated():
    X, y = load_svmlight_file(str(dataset("a9a")), n_features=123)
    X, y = X.tocsr()[:6000], (y[:6000] > 0).astype(float)
    engine = LocalEngine.from_arrays(X, y, num_partitions=2)
    best_fit = fit_linear_model(engine, "logistic", reg_param=1e-2, solver="newton", tol=1e-12)
    objective = build_objective(engine, "logistic", reg_param=1e-2)[0]
    best = float(objective.total(best_fit.result.x))
    options = dict(bench_solvers.SGD, staleness=0, delays={1: 0.001})
    runs = [bench_solvers.score(bench_solvers.run_one(engine, "logistic", 1e-2, True, label, solver, opts, settings),
                                objective, best)
            for label, solver, opts, settings in (
                ("newton", "newton", {}, dict(tol=1e-10, max_iter=50)),
                ("sync sgd + straggler", "async-sgd", options, dict(tol=1e-12, max_iter=300)),
                ("async-sgd tau=inf + straggler", "async-sgd", dict(options, staleness=None),
                 dict(tol=1e-12, max_iter=300)))]
    newton = runs[0]
    assert newton["final_gap"] == pytest.approx(0.0, abs=1e-12)
    assert newton["rounds_to_gap"] is not None and newton["rounds_to_gap"] <= newton["passes"]
    gaps = [g for _, _, _, g in newton["curve"]]
    assert gaps[0] > 1e-3 and gaps[-1] < 1e-10          # the curve is the real objective, not an estimate
    rows = bench_solvers.table("a9a-6000", runs)
    assert len(rows) == 3 and all(len(r) == len(bench_solvers.TABLE_HEADER) for r in rows)
    info = bench_solvers.straggler_speedup(runs)
    assert info["delay_s"] == 0.001
    assert info["sync_s"] is None or info["sync_s"] > 0
    assert np.isfinite(runs[2]["final_gap"])
