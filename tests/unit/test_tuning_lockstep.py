"""Fits advancing together (sparkopt.tuning.lockstep): each gathered pass serves every running
program's next request, and every program computes bit for bit what it computes alone."""
from __future__ import annotations

import threading
from functools import partial

import numpy as np
import pandas as pd
import pytest

from sparkopt.blocks import Block
from sparkopt.engine import LocalEngine
from sparkopt.errors import InputError
from sparkopt.fit import fit_linear_model
from sparkopt.tuning import cross_validate
from sparkopt.tuning.cv import _merge_all, fold_statistics
from sparkopt.tuning.lockstep import Lockstep, RowView, fold_ids

from sparkopt.tuning import lockstep
from conftest import dataset, max_rel_diff


@pytest.fixture(scope="module")
def magic():
    df = pd.read_csv(dataset("magic04.data"), header=None)
    df = df.iloc[np.random.default_rng(4).choice(len(df), 1200, replace=False)]
    return df.iloc[:, :10].to_numpy(float), (df.iloc[:, 10] == "g").to_numpy(float)


def _engine(magic, fold=None):
    X, y = magic
    return LocalEngine.from_arrays(X, y, np.random.default_rng(3).uniform(0.5, 2, len(y)), num_partitions=3,
                                   block_rows=150)


# solvers whose steps take different numbers of evaluations (line searches, exact Hessians, OWL-QN)
FITS = [dict(solver="lbfgs", reg_param=1e-3), dict(solver="newton", reg_param=1e-2),
        dict(solver="owlqn", reg_param=1e-2, elastic_net_param=0.7), dict(solver="gd", reg_param=0.1, max_iter=30)]


def _programs(engine, coordinator, n_folds=4, seed=9):
    """One fit per training fold, each with another solver; views bound to ``coordinator`` (or none)."""
    held = fold_statistics(engine, n_folds, seed)
    views, programs = [], []
    for k, kw in enumerate(FITS):
        stats = _merge_all([s for i, s in enumerate(held) if i != k])
        rows = (n_folds, seed, k, False, False)
        view = coordinator.view(stats, rows) if coordinator is not None else RowView(engine, stats, rows)
        views.append(view)
        programs.append(partial(fit_linear_model, view, "logistic", tol=1e-9, **kw))
    return views, programs


@pytest.mark.parametrize("fuse", [False, True])
def test_gathered_fits_equal_fits_alone_and_cost_the_longest_ones_passes(magic, fuse, monkeypatch):
    """Each request on its own rows: bit for bit as alone; loss-and-gradient requests fused into
    one X @ B and one X.T @ R per block: equal to 1e-10 (the issue's bound)."""
    monkeypatch.setattr(lockstep, "FUSE", fuse)
    engine = _engine(magic)
    alone_views, alone = _programs(engine, None)
    expected = [program() for program in alone]
    coordinator = Lockstep(engine)
    views, programs = _programs(engine, coordinator)
    passes0 = engine.passes
    results = coordinator.run(programs)
    for got, want in zip(results, expected):
        if fuse:
            assert max_rel_diff(got.coef_vector, want.coef_vector) < 1e-10
        else:
            assert np.array_equal(got.coef_vector, want.coef_vector)       # bit for bit
            assert got.result.nit == want.result.nit and got.result.passes == want.result.passes
    own = [v.passes for v in views]
    if not fuse:
        assert own == [v.passes for v in alone_views]
    assert len(set(own)) > 1                          # the fits asked for different numbers of passes
    assert coordinator.passes == max(own) == engine.passes - passes0
    assert coordinator.requests == sum(own)


def test_sampled_requests_draw_the_same_rows_inside_and_outside_a_run(magic):
    engine = _engine(magic)
    stats = engine.stats

    def fn(block, payload):
        return np.array([block.n_rows, float(block.w @ block.y)])

    outside = RowView(engine, stats, (3, 1, 2, True, False)).map_sum(fn, None, fraction=0.4, seed=17)
    coordinator = Lockstep(engine)
    view = coordinator.view(stats, (3, 1, 2, True, False))
    inside = coordinator.run([lambda: view.map_sum(fn, None, fraction=0.4, seed=17)])[0]
    assert np.array_equal(inside, outside) and 0 < inside[0] < stats.n_rows / 3
    assert view.passes == 0.4


def test_a_failing_program_stops_the_others_and_its_error_is_raised(magic):
    engine = _engine(magic)
    coordinator = Lockstep(engine)
    endless = coordinator.view(engine.stats, None)
    failing = coordinator.view(engine.stats, None)

    def count(block, payload):
        return float(block.n_rows)

    def forever():
        while True:
            endless.map_sum(count, None)

    def fails():
        failing.map_sum(count, None)
        failing.map_sum(count, None)
        raise InputError("fold 1 went wrong")

    with pytest.raises(InputError, match="fold 1 went wrong"):
        coordinator.run([forever, fails])
    assert coordinator.passes == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("sparkopt-lockstep")]


def test_an_error_inside_a_pass_reaches_the_program_that_asked(magic):
    engine = _engine(magic)
    coordinator = Lockstep(engine)
    view = coordinator.view(engine.stats, None)

    def broken(block, payload):
        raise ValueError("bad block function")

    with pytest.raises(ValueError, match="bad block function"):
        coordinator.run([lambda: view.map_sum(broken, None), lambda: view.map_sum(lambda b, p: 1.0, None)])


def test_cross_validation_costs_the_passes_of_its_longest_path(magic):
    engine = _engine(magic)
    result = cross_validate(engine, "logistic", n_folds=5, seed=2, elastic_net_param=0.5, n_reg_params=8, tol=1e-8)
    longest = max(max(p.passes for p in result.paths), result.full.passes)
    setup = 2          # the folds' statistics and lambda_max's null model
    assert result.passes <= longest + setup + 1        # + the held-out scoring
    assert result.fit_passes >= sum(p.passes for p in result.paths) + result.full.passes
    assert result.passes * 4 < result.fit_passes       # 6 paths: about 6x fewer passes
    assert engine.passes == result.passes


def _with_fold_column(engine, fold_of):
    parts = []
    for p, blocks in enumerate(engine.collect_blocks()):
        parts.append([Block(b.X, b.y, b.w, None, fold_of(p, j, b)) for j, b in enumerate(blocks)])
    return LocalEngine(parts, engine.stats)


def test_fold_column_gives_the_folds_it_holds(magic):
    """User fold ids equal to the ones the seed draws give the seed's cross-validation, bit for bit."""
    engine = _engine(magic)
    kw = dict(n_folds=4, elastic_net_param=0.3, n_reg_params=5, tol=1e-9, metric_name="accuracy")
    drawn = cross_validate(engine, "logistic", seed=21, **kw)
    given = _with_fold_column(engine, lambda p, j, b: fold_ids(21, 4, (p, j), b.n_rows).astype(float))
    from_column = cross_validate(given, "logistic", seed=0, fold_col="myFolds", **kw)
    assert np.array_equal(from_column.metrics, drawn.metrics)
    assert np.array_equal(from_column.best.coef_vector, drawn.best.coef_vector)
    for a, b in zip(from_column.paths, drawn.paths):
        assert np.array_equal(a.coefficients, b.coefficients)


@pytest.mark.parametrize("bad, match", [(2.5, r"foldCol 'myFolds' must hold integer fold ids .*0\.\.3.*2\.5"),
                                        (-1.0, r"0\.\.3.*-1\.0"), (4.0, r"0\.\.3.*4\.0"), (np.nan, "nan")])
def test_fold_ids_outside_the_folds_are_named(magic, bad, match):
    engine = _engine(magic)

    def fold_of(p, j, b):
        ids = fold_ids(0, 4, (p, j), b.n_rows).astype(float)
        if (p, j) == (1, 0):
            ids[3] = bad
        return ids

    with pytest.raises(InputError, match=match):
        cross_validate(_with_fold_column(engine, fold_of), "logistic", n_folds=4, fold_col="myFolds")


def test_a_fold_column_missing_a_fold_or_absent_is_named(magic):
    engine = _engine(magic)
    three = _with_fold_column(engine, lambda p, j, b: fold_ids(0, 3, (p, j), b.n_rows).astype(float))
    with pytest.raises(InputError, match="foldCol 'f' has no row with fold id 3"):
        cross_validate(three, "logistic", n_folds=4, fold_col="f")
    with pytest.raises(InputError, match="no fold column"):
        cross_validate(engine, "logistic", n_folds=4, fold_col="f")


@pytest.mark.parametrize("loss", ["logistic", "squared_error", "poisson", "squared_hinge"])
@pytest.mark.parametrize("sparse, intercept", [(False, True), (True, True), (True, False)])
def test_loss_grad_rows_equals_separate_evaluations(magic, loss, sparse, intercept):
    """The fused kernel: every coefficient vector on its own rows equals loss_grad on those rows
    taken out (offsets and weights included, a None for every row)."""
    import scipy.sparse as sp

    from sparkopt.objectives import make_block_objective

    X, y = magic
    X = X[:300] / np.abs(X[:300]).max(axis=0)
    X[X < 0.2] = 0.0
    y = y[:300] if loss in ("logistic", "squared_hinge") else np.abs(X[:, 0]) * 3 + (y[:300] if loss == "poisson" else 0)
    rng = np.random.default_rng(5)
    block = Block(sp.csr_matrix(X) if sparse else X, y.astype(float), rng.uniform(0.5, 2, 300), rng.normal(0, 0.1, 300))
    bo = make_block_objective(loss, X.shape[1], intercept)
    coefs = rng.normal(0, 0.3, (4, bo.n_params))
    rows = [np.flatnonzero(rng.random(300) < 0.7), None, np.arange(0, 300, 3), np.zeros(0, dtype=np.int64)]
    for (f, g), c, r in zip(bo.loss_grad_rows(coefs, block, rows), coefs, rows):
        f0, g0 = bo.loss_grad(c, block if r is None else block.take(r))
        assert f == pytest.approx(f0, rel=1e-13, abs=1e-300)
        np.testing.assert_allclose(g, g0, rtol=1e-12, atol=1e-12 * max(np.abs(g0).max(initial=0), 1e-300))
