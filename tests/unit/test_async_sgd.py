"""Parameter-server SGD on in-memory workers (one thread per partition)."""
import threading
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file

from sparkopt.engine import LocalEngine
from sparkopt.fit import build_objective, fit_linear_model
from sparkopt.solvers import ConvergenceWarning, minimize
from sparkopt.solvers.async_sgd import AsyncSGD

from conftest import dataset


@pytest.fixture(scope="module")
def a9a():
    X, y = load_svmlight_file(str(dataset("a9a")), n_features=123)
    y = (y > 0).astype(float)
    # 3 workers with unequal shares: 40% / 35% / 25% of the rows
    n = X.shape[0]
    cuts = [0, int(0.40 * n), int(0.75 * n), n]
    X = X.tocsr()
    blocks = LocalEngine.from_arrays(X, y, num_partitions=1).collect_blocks()[0][0]
    from sparkopt.blocks import Block
    parts = [[Block(X[a:b], y[a:b].copy(), np.ones(b - a))] for a, b in zip(cuts[:-1], cuts[1:])]
    assert blocks.n_rows == n
    return LocalEngine(parts)


def _objective(engine, reg=1e-3, alpha=0.0, standardization=False):
    return build_objective(engine, "logistic", reg_param=reg, elastic_net_param=alpha,
                           standardization=standardization)[0]


@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("schedule", ["constant", "inverse_sqrt"])
def test_tau_zero_is_synchronous_minibatch_sgd(a9a, alpha, schedule):
    """Same seed, same samples, same order: identical iterates (to round-off)."""
    objective = _objective(a9a, alpha=alpha)
    settings = dict(step_size=0.5, fraction=0.2, schedule=schedule, momentum=0.9, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sync = minimize(objective, None, "sgd", tol=1e-12, max_iter=25, options=settings)
        for deterministic in (False, True):
            asyn = minimize(objective, None, "async-sgd", tol=1e-12, max_iter=25,
                            options=dict(settings, staleness=0, deterministic=deterministic))
            assert asyn.nit == sync.nit == 25
            np.testing.assert_allclose(asyn.x, sync.x, rtol=1e-12, atol=1e-14)
            assert asyn.fun == pytest.approx(sync.fun, rel=1e-12)
            assert asyn.extra["staleness_histogram"] == {0: 25 * 3}
            # the synchronous loop also evaluates F exactly at x0 (one pass); the server does not
            assert asyn.passes == pytest.approx(sync.passes - 1, rel=1e-12)


def test_deterministic_mode_is_reproducible_with_the_staleness_it_promises(a9a):
    objective = _objective(a9a)
    options = dict(step_size=0.5, fraction=0.1, schedule="constant", seed=3, staleness=2, deterministic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = minimize(objective, None, "async-sgd", tol=1e-12, max_iter=20, options=options)
        b = minimize(objective, None, "async-sgd", tol=1e-12, max_iter=20, options=options)
    assert np.array_equal(a.x, b.x) and a.history[-1]["objective"] == b.history[-1]["objective"]
    # worker k's push of clock c is applied as update c*K + k on the model after clock c - 3:
    # staleness (tau + 1) * K + k - K ... capped by how many updates exist at the start
    k, tau = 3, 2
    expected = {}
    for clock in range(20):
        for worker in range(k):
            applied_at = clock * k + worker
            pulled = max(clock - tau, 0) * k
            expected[applied_at - pulled] = expected.get(applied_at - pulled, 0) + 1
    assert a.extra["staleness_histogram"] == dict(sorted(expected.items()))
    assert max(a.extra["staleness_histogram"]) <= (tau + 1) * k - 1


def test_async_reaches_1e3_of_the_optimum_in_a_stated_budget(a9a):
    """Truly asynchronous (arrival order), staleness bound 2, MLlib's default standardization,
    default step settings (the data's safe step, constant, averaged): within 1e-3 relative of F*
    after 300 rounds of 10% mini-batches (31.6 passes with the curvature estimate and the final
    exact pass; measured 5.3e-4; 100 rounds: 3.1e-3, 500: 2.7e-4)."""
    objective = _objective(a9a, standardization=True)
    best = minimize(objective, None, "newton", tol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = minimize(objective, None, "async-sgd", tol=1e-12, max_iter=300,
                       options=dict(fraction=0.1, seed=5, staleness=2))
    gap = (fit.fun - best.fun) / best.fun
    assert 0 <= gap < 1e-3, gap
    assert fit.passes <= 32
    # while a worker computes clock c, every other worker may push its clocks from c - tau to
    # c + tau: staleness <= (K - 1)(2 tau + 1) versions
    assert max(fit.extra["staleness_histogram"]) <= (3 - 1) * (2 * 2 + 1)
    assert sum(fit.extra["staleness_histogram"].values()) == fit.extra["updates"]
    rows = fit.history
    assert [r["iteration"] for r in rows] == list(range(len(rows)))
    assert all(r["rounds"] == r["iteration"] for r in rows)
    assert not [t for t in threading.enumerate() if t.name.startswith("sparkopt-local-worker")]


def test_straggler_waits_only_within_the_bound(a9a):
    """Worker 2 is slow; with tau = 1 the others run at most one clock ahead of it, with
    tau = None they never wait and push many more updates."""
    objective = _objective(a9a)
    common = dict(step_size=0.5, fraction=0.05, schedule="constant", seed=2, delays={2: 0.02})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bounded = minimize(objective, None, "async-sgd", tol=1e-12, max_iter=15, options=dict(common, staleness=1))
        free = minimize(objective, None, "async-sgd", tol=1e-12, max_iter=15, options=dict(common, staleness=None))
    pushes = bounded.extra["pushes_per_worker"]
    assert max(pushes) - min(pushes) <= 1 + 1          # tau clocks ahead, plus the push in flight
    fast, slow = free.extra["pushes_per_worker"][:2], free.extra["pushes_per_worker"][2]
    assert slow < min(fast) / 2                          # nobody waited for the straggler
    assert bounded.nit == free.nit == 15 and free.extra["updates"] == 15 * 3   # the budget is in rounds
    assert np.isfinite(free.fun) and np.isfinite(bounded.fun)


def test_fit_linear_model_and_bad_params(a9a):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = fit_linear_model(a9a, "logistic", reg_param=1e-2, solver="async-sgd", max_iter=5,
                               solver_options=dict(fraction=0.2, staleness=1))
    assert fit.result.solver == "async-sgd" and fit.result.nit == 5
    with pytest.raises(ValueError, match="staleness"):
        AsyncSGD(staleness=-1)
    with pytest.raises(ValueError, match="miniBatchFraction"):
        AsyncSGD(fraction=0.0)
    with pytest.raises(ValueError, match="delays"):
        AsyncSGD(delays={0: -1.0})


def test_divergence_is_reported_not_returned(a9a):
    """A step that multiplies the L2 term's pull by ~1e7 overflows within a few clocks."""
    objective = _objective(a9a, reg=1e-2)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        fit = minimize(objective, None, "async-sgd", tol=1e-12, max_iter=30,
                       options=dict(step_size=1e10, fraction=0.5, schedule="constant", staleness=1))
    assert fit.status.name == "DIVERGED" and np.all(np.isfinite(fit.x))


def test_budget_in_passes_is_honoured(a9a):
    """max_passes reaches the parameter server: the run stops at the first round past it."""
    objective = _objective(a9a)
    with pytest.warns(ConvergenceWarning, match="maximum number of passes"):
        fit = minimize(objective, None, "async-sgd", tol=1e-12, max_iter=1000, max_passes=2.0,
                       options=dict(step_size=1.0, fraction=0.25, staleness=1, deterministic=True))
    assert fit.status.name == "MAX_PASSES"
    # 0.25 of the data per round: the 8th round reaches 2 passes; plus the curvature estimate on
    # a sample and the final exact pass
    from sparkopt.linear_objective import CURVATURE_ITERATIONS, CURVATURE_SAMPLE_ROWS

    estimate = CURVATURE_ITERATIONS * CURVATURE_SAMPLE_ROWS / a9a.n_rows
    assert fit.nit == 8 and fit.passes == pytest.approx(8 * 0.25 + estimate + 1)


class _LosesItsWorkers:
    """The objective, but the first session of workers is lost after `rounds` rounds (as a dead
    resident task would be: the engine raises SessionLost, a WorkersLost)."""

    def __init__(self, objective, rounds):
        self.objective, self.rounds, self.sessions = objective, rounds, 0

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def run_parameter_server(self, server, **kw):
        from sparkopt.errors import WorkersLost

        self.sessions += 1
        if self.sessions > 1:
            return self.objective.run_parameter_server(server, **kw)
        handle = server.handle

        def failing(worker, message):
            if server.completed >= self.rounds:
                raise WorkersLost("resident task 1 closed its channel (injected)")
            return handle(worker, message)

        server.handle = failing
        try:
            return self.objective.run_parameter_server(server, **kw)
        finally:
            del server.handle


def test_lost_workers_start_again_from_the_servers_model(a9a, caplog):
    options = dict(fraction=0.2, seed=3, staleness=0, deterministic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = minimize(_objective(a9a), None, "async-sgd", tol=1e-12, max_iter=12, options=options)
        flaky = _LosesItsWorkers(_objective(a9a), rounds=5)
        with caplog.at_level("WARNING", logger="sparkopt"):
            resumed = minimize(flaky, None, "async-sgd", tol=1e-12, max_iter=12, options=options)
    assert flaky.sessions == 2 and resumed.extra["restarts"] == 1
    assert "starting the workers again from the server's model at round 5" in caplog.text
    assert [row["rounds"] for row in resumed.history] == list(range(13))
    # synchronous (tau = 0): the second session samples the rounds the first would have
    np.testing.assert_allclose(resumed.x, whole.x, rtol=0, atol=1e-12)


def test_async_checkpoints_resume_where_the_fit_stopped(a9a, tmp_path):
    options = dict(fraction=0.2, seed=3, staleness=0, deterministic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = minimize(_objective(a9a), None, "async-sgd", tol=1e-12, max_iter=12, options=options)
        first = minimize(_objective(a9a), None, "async-sgd", tol=1e-12, max_iter=7, options=options,
                         checkpoint_dir=tmp_path, checkpoint_interval=3)
        assert first.nit == 7 and sorted(p.name for p in tmp_path.glob("ckpt-*.json"))
        resumed = minimize(_objective(a9a), None, "async-sgd", tol=1e-12, max_iter=12, options=options,
                           checkpoint_dir=tmp_path, checkpoint_interval=3)
    assert resumed.nit == 12 and [row["rounds"] for row in resumed.history] == list(range(13))
    np.testing.assert_allclose(resumed.x, whole.x, rtol=0, atol=1e-12)
    # rounds 0-7 come from the checkpoint (their rows, timings included), not from new passes; the
    # reported passes are the whole fit's, as for the synchronous solvers
    import json

    assert json.dumps(resumed.history[:8]) == json.dumps(first.history[:8])     # NaN equal to NaN
    assert resumed.passes == pytest.approx(whole.passes)
