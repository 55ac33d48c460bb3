"""Successive halving (sparkopt.tuning.halving): the survivors of every rung are its best
configurations by the validation metric, computed here independently; a survivor's resumed fit
equals the fit run to the same budget without stopping; rows as the resource."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sparkopt.engine import LocalEngine
from sparkopt.errors import InputError
from sparkopt.fit import fit_linear_model
from sparkopt.tuning import successive_halving
from sparkopt.tuning.cv import _merge_all, fold_statistics
from sparkopt.tuning.halving import _schedule
from sparkopt.tuning.lockstep import RowView, fold_ids

from sparkopt.tuning import lockstep
from conftest import dataset, max_rel_diff

# a rung stops fits at its budget: their max-iterations warnings are the point, not news
pytestmark = pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")


@pytest.fixture(scope="module")
def magic():
    df = pd.read_csv(dataset("magic04.data"), header=None)
    df = df.iloc[np.random.default_rng(6).choice(len(df), 1500, replace=False)]
    return df.iloc[:, :10].to_numpy(float), (df.iloc[:, 10] == "g").to_numpy(float)


CONFIGS = [
    dict(solver="sgd", reg_param=1e-3, solver_options=dict(step_size=0.05, fraction=0.2, seed=1)),
    dict(solver="sgd", reg_param=1e-3, solver_options=dict(step_size=0.5, fraction=0.2, seed=1)),
    dict(solver="sgd", reg_param=1e-3, solver_options=dict(step_size=2.0, fraction=0.5, seed=1)),
    dict(solver="sgd", reg_param=1e-3, solver_options=dict(step_size=0.5, fraction=1.0, seed=1)),
    dict(solver="lbfgs", reg_param=1e-3, elastic_net_param=0.0),
    dict(solver="owlqn", reg_param=1e-2, elastic_net_param=1.0),
    dict(solver="owlqn", reg_param=1e-1, elastic_net_param=0.5),
    dict(solver="gd", reg_param=1e-3),
    dict(solver="lbfgs", reg_param=1.0),
]


def _split(engine, n_folds=5, seed=0):
    """Training and validation rows materialized from the engine's blocks, as the search splits them."""
    X, y, w, ids = [], [], [], []
    for p, blocks in enumerate(engine.collect_blocks()):
        for j, b in enumerate(blocks):
            X.append(b.X), y.append(b.y), w.append(b.w), ids.append(fold_ids(seed, n_folds, (p, j), b.n_rows))
    X, y, w, ids = np.vstack(X), np.concatenate(y), np.concatenate(w), np.concatenate(ids)
    return (X[ids != 0], y[ids != 0], w[ids != 0]), (X[ids == 0], y[ids == 0], w[ids == 0])


def _log_loss(fit, X, y, w):
    m = X @ fit.coefficients + fit.intercept
    return float(np.sum(w * (np.logaddexp(0, m) - y * m)) / w.sum())


def test_iteration_rungs_keep_their_best_and_resumed_fits_equal_uninterrupted_ones(magic, monkeypatch):
    """Requests unfused (lockstep.FUSE off: each fit computes bit for bit what it computes alone),
    so a resumed fit can be compared bit for bit with the uninterrupted one; fused, the same
    search keeps the same configurations with fits equal to 1e-9."""
    X, y = magic
    w = np.random.default_rng(1).uniform(0.5, 2, len(y))
    engine = LocalEngine.from_arrays(X, y, w, num_partitions=2, block_rows=400)
    kw = dict(resource="iterations", max_iter=54, factor=3, metric_name="logLoss", tol=1e-12)
    fused = successive_halving(engine, "logistic", CONFIGS, **kw)
    monkeypatch.setattr(lockstep, "FUSE", False)
    result = successive_halving(engine, "logistic", CONFIGS, **kw)
    for a, b in zip(fused.rungs, result.rungs):
        assert a.kept == b.kept
        for fa, fb in zip(a.fits, b.fits):
            assert max_rel_diff(fa.coef_vector, fb.coef_vector) < 1e-9
    assert [r.resource for r in result.rungs] == [6, 18, 54]
    assert [len(r.candidates) for r in result.rungs] == [9, 3, 1]
    held = fold_statistics(engine, 5, 0)
    train = RowView(engine, _merge_all(held[1:]), (5, 0, 0, False, False))    # the training rows, alone
    _, valid = _split(engine)
    for rung in result.rungs:
        table = []
        for i, fit in zip(rung.candidates, rung.fits):
            config = CONFIGS[i]
            alone = fit_linear_model(train, "logistic", max_iter=rung.resource, tol=1e-12,
                                     reg_param=config["reg_param"], elastic_net_param=config.get("elastic_net_param", 0.0),
                                     solver=config["solver"], solver_options=config.get("solver_options"))
            assert np.array_equal(fit.coef_vector, alone.coef_vector)          # resumed == uninterrupted
            assert fit.result.nit == alone.result.nit
            table.append(_log_loss(alone, *valid))
        np.testing.assert_allclose(rung.metrics, table, rtol=1e-12)
        best = sorted(range(len(table)), key=lambda j: (table[j], j))[: math.ceil(len(table) / 3)]
        expected = [rung.candidates[j] for j in best][: len(rung.kept)]
        assert rung.kept == expected
    assert result.best_index == result.rungs[-1].kept[0]
    assert result.best_configuration == CONFIGS[result.best_index]
    # each rung's fits advanced together: its passes are its longest fit's, not their sum
    for rung in result.rungs[:-1]:
        assert rung.passes < rung.fit_passes / 2


def test_rows_as_the_resource_grow_a_nested_sample_and_survivors_start_where_they_were(magic, monkeypatch):
    monkeypatch.setattr(lockstep, "FUSE", False)        # each fit bit for bit as alone
    X, y = magic
    engine = LocalEngine.from_arrays(X, y, num_partitions=2, block_rows=500)
    configs = [dict(reg_param=r, elastic_net_param=a) for r in (1e-4, 1e-2, 1.0) for a in (0.0, 1.0)]
    result = successive_halving(engine, "logistic", configs, resource="rows", factor=2, tol=1e-10,
                                metric_name="accuracy", seed=3)
    fractions = [r.resource for r in result.rungs]
    assert fractions[-1] == 1.0 and all(b == 2 * a for a, b in zip(fractions, fractions[1:]))
    held = fold_statistics(engine, 5, 3)
    _, (Xv, yv, wv) = _split(engine, seed=3)
    previous = {}
    sizes = []
    for rung in result.rungs:
        subsample = None if rung.resource >= 1 else (rung.resource, 3)
        view = RowView(engine, _merge_all(held[1:]), (5, 3, 0, False, False), subsample=subsample)
        if subsample is not None:
            from sparkopt.tuning.halving import _sample_stats

            view = RowView(engine, view.map_sum(_sample_stats, None).stats[0], view.rows, subsample=subsample)
        sizes.append(view.stats.n_rows)
        accuracy = []
        for i, fit in zip(rung.candidates, rung.fits):
            alone = fit_linear_model(view, "logistic", tol=1e-10, initial_coef=previous.get(i), **configs[i])
            assert np.array_equal(fit.coef_vector, alone.coef_vector)
            m = Xv @ alone.coefficients + alone.intercept
            accuracy.append(float(np.sum(wv * ((m > 0) == (yv > 0.5))) / wv.sum()))
            previous[i] = alone.coef_vector
        np.testing.assert_allclose(rung.metrics, accuracy, rtol=1e-12)
        order = sorted(range(len(accuracy)), key=lambda j: (-accuracy[j], j))
        assert rung.kept == [rung.candidates[j] for j in order[: len(rung.kept)]]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_schedules():
    assert _schedule("iterations", 9, 3.0, None, 100) == [11, 33, 100]
    assert _schedule("iterations", 10, 3.0, 5, 100) == [5, 15, 45, 100]
    assert _schedule("iterations", 27, 3.0, 50, 100) == [50, 100]
    assert _schedule("rows", 4, 2.0, None, 1.0) == [0.25, 0.5, 1.0]
    assert _schedule("rows", 1, 2.0, None, 1.0) == [1.0]


@pytest.mark.parametrize("kwargs, match", [
    (dict(configurations=[dict(regParam=0.1)]), r"configuration 0 sets \['regParam'\]"),
    (dict(configurations=[]), "non-empty list"),
    (dict(resource="seconds"), "resource must be one of"),
    (dict(factor=1), "factor must be a number > 1"),
    (dict(resource="rows", max_resource=2.0), r"fraction of the rows in \(0, 1\]"),
    (dict(min_resource=500), "min_resource must be in"),
    (dict(metric_name="rmse"), "does not apply"),
])
def test_bad_halving_settings_are_named(magic, kwargs, match):
    X, y = magic
    kwargs = {"configurations": [dict(reg_param=0.1), dict(reg_param=0.01)], **kwargs}
    with pytest.raises(InputError, match=match):
        successive_halving(LocalEngine.from_arrays(X, y), "logistic", **kwargs)
