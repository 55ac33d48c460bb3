"""The sharded objective without Spark: its shard handler runs in one thread per partition of a
LocalEngine, the tasks AllReduce over loopback channels exactly as resident tasks do, and the fit
equals the unsharded one on real data for the smooth losses."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file

from sparkopt.engine import LocalEngine
from sparkopt.errors import InputError
from sparkopt.fit import fit_linear_model
from sparkopt.sharded_objective import fit_sharded
from tests.conftest import dataset


def _rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(np.asarray(b))), 1e-300))


@pytest.fixture(scope="module")
def a9a():
    X, y = load_svmlight_file(str(dataset("a9a.t")), n_features=123)
    return LocalEngine.from_arrays(X, (y > 0).astype(float), num_partitions=3)


@pytest.fixture(scope="module")
def letter():
    X, y = load_svmlight_file(str(dataset("letter.scale")), n_features=16)
    return LocalEngine.from_arrays(X[:3000].toarray(), y[:3000] - 1, num_partitions=2)


@pytest.fixture(scope="module")
def abalone():
    X, y = load_svmlight_file(str(dataset("angel_abalone_8d_train.libsvm")), n_features=8)
    return LocalEngine.from_arrays(X.toarray(), y, num_partitions=4)


pytestmark = pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")


def test_logistic_equals_the_unsharded_fit_on_three_shards(a9a):
    """Both converged (a9a.t, 16281 rows): the same optimum to 1e-8."""
    kwargs = dict(reg_param=1e-3, tol=1e-12, max_iter=400)
    want = fit_linear_model(a9a, "logistic", solver="lbfgs", **kwargs)
    got = fit_sharded(a9a, "logistic", **kwargs)
    assert got.result.extra["shards"] == 3 and got.result.extra["vector_free"]
    assert _rel(got.coefficients, want.coefficients) < 1e-8 and abs(got.intercept - want.intercept) < 1e-8
    assert abs(got.objective - want.objective) <= 1e-12 * abs(want.objective)
    assert got.result.status == want.result.status == 0
    assert got.result.x.shape == got.result.jac.shape == want.result.x.shape


def test_multinomial_with_l1_equals_owlqn(letter):
    kwargs = dict(reg_param=1e-3, elastic_net_param=0.5, tol=1e-14, max_iter=60)
    want = fit_linear_model(letter, "multinomial", solver="owlqn", **kwargs)
    got = fit_sharded(letter, "multinomial", **kwargs)
    assert got.result.solver == "owlqn"
    assert _rel(got.coefficients, want.coefficients) < 1e-8 and _rel(got.intercept, want.intercept) < 1e-8


@pytest.mark.parametrize("loss", ["squared_error", "huber", "poisson"])
def test_the_other_smooth_losses(abalone, loss):
    kwargs = dict(reg_param=1e-2, tol=1e-14, max_iter=60)
    want = fit_linear_model(abalone, loss, solver="lbfgs", **kwargs)
    got = fit_sharded(abalone, loss, **kwargs)
    assert _rel(got.coefficients, want.coefficients) < 1e-8
    assert abs(got.objective - want.objective) <= 1e-12 * abs(want.objective)
    if loss == "huber":
        assert abs(got.scale - want.scale) < 1e-8 * want.scale


def test_the_fit_dispatches_on_a_sharded_engine_kind(a9a, monkeypatch):
    monkeypatch.setattr(a9a, "kind", "sharded", raising=False)
    got = fit_linear_model(a9a, "logistic", reg_param=1e-2, max_iter=5, tol=1e-12)
    assert got.result.extra["vector_free"] and got.result.nit == 5


def test_checkpoint_resume_bit_for_bit(a9a, tmp_path):
    kwargs = dict(reg_param=1e-3, tol=1e-12, checkpoint_interval=3)
    whole = fit_sharded(a9a, "logistic", max_iter=10, checkpoint_dir=tmp_path / "whole", **kwargs)
    fit_sharded(a9a, "logistic", max_iter=4, checkpoint_dir=tmp_path / "split", **kwargs)
    assert (tmp_path / "split" / "ckpt-000002-shard-00002.npz").is_file()     # the third task's shard
    resumed = fit_sharded(a9a, "logistic", max_iter=10, checkpoint_dir=tmp_path / "split", **kwargs)
    assert np.array_equal(resumed.coef_vector, whole.coef_vector)
    assert [r["objective"] for r in resumed.result.history] == [r["objective"] for r in whole.result.history]


def test_bad_requests_name_the_param(a9a):
    with pytest.raises(InputError, match="solver must be one of"):
        fit_sharded(a9a, "logistic", solver="newton-cg")
    with pytest.raises(InputError, match="'memory' only"):
        fit_sharded(a9a, "logistic", solver_options={"step_size": 1.0})
    with pytest.raises(InputError, match="not loss='hinge'"):
        fit_sharded(a9a, "hinge")
    with pytest.raises(InputError, match="regParam"):
        fit_sharded(a9a, "logistic", reg_param=-1.0)


@pytest.mark.parametrize("loss,reg", [("multinomial", 1e-3), ("multinomial", 0.0), ("logistic", 1e-3)])
def test_the_model_written_shard_by_shard_is_the_fit(letter, a9a, tmp_path, loss, reg):
    """Each task writes its range of the coefficients (Parquet); together with the driver's
    intercepts they are the gathered fit's coefficients, centred as MLlib reports them."""
    import pyarrow.parquet as pq

    from sparkopt.sharded_model import ShardedLinearModel, _score

    engine = letter if loss == "multinomial" else a9a
    fit = fit_sharded(engine, loss, reg_param=reg, max_iter=30, tol=1e-12, model_dir=tmp_path / "m")
    parts = sorted((tmp_path / "m" / "coefficients").glob("part-*.parquet"))
    assert len(parts) == fit.result.extra["shards"]
    K = 26 if loss == "multinomial" else 1
    coefficients = np.zeros((K, engine.stats.n_features))
    for p in parts:
        t = pq.read_table(str(p)).to_pydict()
        for k, j, v in zip(t["output"], t["feature"], t["value"]):
            assert coefficients[k, j] == 0
            coefficients[k, j] = v
    np.testing.assert_allclose(coefficients, np.reshape(fit.coefficients, (K, -1)), rtol=0, atol=1e-12)
    model = ShardedLinearModel.load(tmp_path / "m")
    np.testing.assert_allclose(model.intercepts, np.atleast_1d(fit.intercept), rtol=0, atol=1e-12)
    assert fit.params["model_dir"] == str(tmp_path / "m")
    # one row's score from (output, margin) pairs
    x = np.zeros(engine.stats.n_features)
    x[:3] = [0.5, -1.0, 2.0]
    pairs = [(k, float(coefficients[k] @ x)) for k in range(K)]
    raw, prob, prediction = _score(loss, list(model.intercepts), None, pairs)
    margins = coefficients @ x + model.intercepts
    if loss == "multinomial":
        np.testing.assert_allclose(raw, margins, rtol=1e-12)
        assert prediction == np.argmax(margins) and abs(sum(prob) - 1) < 1e-12
    else:
        assert raw[1] == pytest.approx(margins[0]) and prediction == float(margins[0] > 0)


class _Flaky:
    """A shard handler whose command 'bad' raises in every task, 'peer' loses the mesh."""

    def setup(self, ctx, config):
        ctx.state["calls"] = 0

    def handle(self, ctx, command):
        ctx.state["calls"] += 1
        if command == "bad":
            raise ValueError(f"no good on rank {ctx.rank}")
        if command == "peer":
            from sparkopt.engine.allreduce import MeshError

            raise MeshError("rank 1 is gone")
        return ctx.rank, ctx.state["calls"], float(ctx.mesh.allreduce_scalars([ctx.rank + 1.0])[0])


def test_a_failed_command_keeps_the_session_a_lost_peer_loses_it(a9a):
    from sparkopt.engine import SessionLost, TaskError
    from sparkopt.engine.sharded import open_local_shards

    session = open_local_shards(a9a, _Flaky(), {})
    try:
        assert session.size == 3
        assert session.call("ok") == [(r, 1, 6.0) for r in range(3)]
        with pytest.raises(TaskError, match="ValueError: no good on rank 0"):
            session.call("bad")
        assert session.call("ok") == [(r, 3, 6.0) for r in range(3)]      # the shards' state survived
        with pytest.raises(SessionLost, match="lost its peers"):
            session.call("peer")
        with pytest.raises(SessionLost, match="closed"):
            session.call("ok")
    finally:
        session.close()


def test_train_accepts_the_sharded_engine_and_the_model_loader_checks_its_directory(tmp_path):
    import train

    from sparkopt.engine import ENGINES
    from sparkopt.sharded_model import ShardedLinearModel

    args = train.parse_args(["--input", "x", "--output", "y", "--engine", "sharded"])
    assert args.engine == "sharded" and "sharded" in ENGINES
    with pytest.raises(SystemExit):
        train.parse_args(["--input", "x", "--output", "y", "--engine", "shardd"])
    with pytest.raises(InputError, match="not a sparkopt sharded model directory"):
        ShardedLinearModel.load(tmp_path)
    (tmp_path / "model.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="format 'other'"):
        ShardedLinearModel.load(tmp_path)
