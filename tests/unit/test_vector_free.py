"""Vector-free L-BFGS / OWL-QN (sparkopt.solvers.vlbfgs) against the ordinary solvers on real
data, the vector programs' kernels, sharded in-memory vectors and shard checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file

from sparkopt.engine import LocalEngine
from sparkopt.fit import _initial_coef, build_objective
from sparkopt.solvers import CheckpointWarning, CountingObjective, Status, minimize
from sparkopt.solvers.checkpoint import CheckpointError, CheckpointStore
from sparkopt.solvers.lbfgs import two_loop
from sparkopt.solvers.vectors import ShardedArrays, apply_op, run_program, shard_bounds
from sparkopt.solvers.vlbfgs import VectorFreeLBFGS, two_loop_coefficients, vector_free_fingerprint
from tests.conftest import dataset


def _problem(name: str, alpha: float, reg: float = 1e-3):
    if name == "a9a":
        X, y = load_svmlight_file(str(dataset("a9a")), n_features=123)
        loss, y = "logistic", (y > 0).astype(float)
    else:
        X, y = load_svmlight_file(str(dataset("letter.scale")), n_features=16)
        loss, X, y = "multinomial", X[:3000].toarray(), y[:3000] - 1      # 26 classes x 17 coefficients
    engine = LocalEngine.from_arrays(X, y, num_partitions=3)
    objective, block_objective, _ = build_objective(engine, loss, reg_param=reg, elastic_net_param=alpha)
    z0 = objective.coordinates.from_coef(_initial_coef(block_objective, engine.stats, loss, True))
    return objective, z0


def _vector_free(objective, z0, shards, **kw):
    vectors = ShardedArrays(objective, shards, start=z0)
    solver = VectorFreeLBFGS(kw.pop("memory", 10))
    iterates = []
    result = solver.run(vectors, callback=lambda row: iterates.append(vectors.vec_gather(solver.x)), **kw)
    return result, iterates, vectors


def test_two_loop_coefficients_are_the_two_loop_recursion():
    rng = np.random.default_rng(3)
    n, m = 40, 6
    S = [rng.standard_normal(n) for _ in range(m)]
    Y = [s + 0.1 * rng.standard_normal(n) for s in S]
    g = rng.standard_normal(n)
    basis = np.array(S + Y + [g])
    delta = two_loop_coefficients(basis @ basis.T, m)
    np.testing.assert_allclose(delta @ basis, two_loop(g, S, Y), rtol=1e-11, atol=1e-12)
    assert np.array_equal(two_loop_coefficients(np.ones((1, 1)), 0), [1.0])


@pytest.mark.parametrize("name,alpha", [("a9a", 0.0), ("a9a", 1.0), ("letter", 0.0), ("letter", 0.5)])
def test_vector_free_iterates_equal_ordinary_lbfgs_and_owlqn(name, alpha):
    """Every iterate of 40 iterations (L-BFGS on L2, OWL-QN under L1) equals the ordinary
    solver's to 1e-9 relative, on uneven shards; F's history to 1e-12."""
    objective, z0 = _problem(name, alpha)
    ordinary = []
    ref = minimize(objective, z0, "owlqn" if alpha else "lbfgs", tol=1e-12, max_iter=40, warn=False,
                   callback=lambda row: ordinary.append(row["x"]))
    res, iterates, _ = _vector_free(objective, z0, 5, tol=1e-12, max_iter=40, warn=False)
    assert res.solver == ("owlqn" if alpha else "lbfgs") and res.nit == ref.nit == 40
    assert objective.n_params % 5 != 0       # uneven shards
    scale = max(1.0, float(np.max(np.abs(ref.x))))
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(ordinary, iterates)) / scale
    assert worst < 1e-9, worst
    f_ref = np.array([r["objective"] for r in ref.history])
    f_vf = np.array([r["objective"] for r in res.history])
    np.testing.assert_allclose(f_vf, f_ref, rtol=1e-12)
    assert res.passes == ref.passes and res.nfev == ref.nfev


@pytest.mark.parametrize("name,alpha", [("a9a", 0.0), ("a9a", 0.5), ("letter", 0.0)])
def test_vector_free_converges_to_the_ordinary_optimum(name, alpha):
    objective, z0 = _problem(name, alpha)
    ref = minimize(objective, z0, "owlqn" if alpha else "lbfgs", tol=1e-7, max_iter=300, warn=False)
    res, _, vectors = _vector_free(objective, z0, 3, tol=1e-7, max_iter=300, warn=False)
    assert ref.status == res.status == Status.CONVERGED
    x = vectors.vec_gather(res.x.name)
    np.testing.assert_allclose(x, ref.x, atol=1e-6 * max(1.0, np.max(np.abs(ref.x))))
    assert abs(res.fun - ref.fun) <= 1e-12 * abs(ref.fun)
    # the answer's gradient is the one at x, and its norm is the reported one
    g = vectors.vec_gather(res.jac.name)
    np.testing.assert_allclose(g, objective.loss_grad(x)[1], atol=1e-12)


def test_shard_count_does_not_change_the_run():
    """1..5 shards of 123 + 1 coordinates (uneven): the same iterates up to the order of the
    shard sums."""
    objective, z0 = _problem("a9a", 0.0)
    runs = [_vector_free(objective, z0, k, tol=1e-12, max_iter=15, warn=False) for k in range(1, 6)]
    for res, iterates, _ in runs[1:]:
        assert res.nit == runs[0][0].nit
        for a, b in zip(iterates, runs[0][1]):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


def test_shard_bounds_cover_and_balance():
    for n in (0, 1, 7, 124):
        for k in range(1, 9):
            b = shard_bounds(n, k)
            assert b[0][0] == 0 and b[-1][1] == n and all(b[i][1] == b[i + 1][0] for i in range(k - 1))
            sizes = [hi - lo for lo, hi in b]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="shards"):
        shard_bounds(3, 0)


def test_kernels_match_numpy_on_uneven_shards():
    rng = np.random.default_rng(0)
    n = 23
    a, b, x = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    x[::4] = 0.0
    l1 = np.abs(rng.standard_normal(n))
    bounds = shard_bounds(n, 4)
    shards = [{} for _ in bounds]
    l1_parts = [l1[lo:hi] for lo, hi in bounds]
    out = run_program(shards, [("set", "a", a), ("set", "b", b), ("set", "x", x), ("axpy", "c", "a", 0.5, "b"),
                               ("dots", [("a", "b"), ("c", "c")]), ("norms", "c"), ("l1", "x"),
                               ("pseudo", "pg", "b", "x"), ("orthant", "o", "x", "pg"),
                               ("project", "p", "x", 0.3, "a", "o"), ("combine", "k", [(2.0, "a"), (-1.0, "b")])],
                      l1_parts, bounds, loss_grad=None)
    c = a + 0.5 * b
    np.testing.assert_allclose(out[0], [a @ b, c @ c], rtol=1e-13)
    assert out[1][0] == pytest.approx(np.abs(c).sum(), rel=1e-13) and out[1][1] == np.max(np.abs(c)) and out[1][2]
    assert out[2] == pytest.approx(l1 @ np.abs(x), rel=1e-13)
    gather = lambda name: np.concatenate([s[name] for s in shards])  # noqa: E731
    from sparkopt.solvers.result import pseudo_gradient
    pg = pseudo_gradient(b, x, l1)
    np.testing.assert_array_equal(gather("pg"), pg)
    o = np.where(x != 0, np.sign(x), -np.sign(pg))
    p = x + 0.3 * a
    np.testing.assert_array_equal(gather("p"), np.where(np.sign(p) == o, p, 0.0))
    np.testing.assert_array_equal(gather("k"), 2.0 * a - b)
    with pytest.raises(ValueError, match="unknown vector op 'nope'"):
        apply_op({}, ("nope",), None)


def test_an_objective_without_named_vectors_is_refused_by_name():
    plain = CountingObjective(lambda x: float(x @ x), lambda x: 2 * x, 3)
    with pytest.raises(ValueError, match="DistributedVectors"):
        VectorFreeLBFGS().run(plain)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_checkpoint_resume_is_bit_for_bit(tmp_path, alpha):
    objective, z0 = _problem("a9a", alpha)
    whole, _, wv = _vector_free(objective, z0, 3, tol=1e-12, max_iter=30, warn=False)
    fp = vector_free_fingerprint(wv, VectorFreeLBFGS())
    # interrupted at iteration 17 (a callback raising), checkpoints every 5 iterations
    store = CheckpointStore(tmp_path, fp)
    vectors = ShardedArrays(objective, 3, start=z0)

    def interrupt(row):
        if row["iteration"] == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        VectorFreeLBFGS().run(vectors, tol=1e-12, max_iter=30, warn=False, store=store, checkpoint_interval=5,
                              callback=interrupt)
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt"))
    assert "ckpt-000003-shard-00002.npz" in files and "ckpt-000001.json" not in files   # rotated, shards too
    fresh = ShardedArrays(objective, 3, start=z0)
    resumed = VectorFreeLBFGS().run(fresh, tol=1e-12, max_iter=30, warn=False, store=CheckpointStore(tmp_path, fp),
                                    checkpoint_interval=5)
    assert resumed.history[15]["iteration"] == 15 and len(resumed.history) == len(whole.history)
    assert [r["objective"] for r in resumed.history] == [r["objective"] for r in whole.history]
    assert np.array_equal(fresh.vec_gather(resumed.x.name), wv.vec_gather(whole.x.name))
    assert resumed.passes == whole.passes and resumed.nit == whole.nit


def test_checkpoint_of_another_layout_or_problem(tmp_path):
    objective, z0 = _problem("a9a", 0.0)
    vectors = ShardedArrays(objective, 2, start=z0)
    fp = vector_free_fingerprint(vectors, VectorFreeLBFGS())
    VectorFreeLBFGS().run(vectors, max_iter=3, warn=False, store=CheckpointStore(tmp_path, fp))
    other = ShardedArrays(objective, 3, start=z0)
    with pytest.warns(CheckpointWarning) as caught:
        res = VectorFreeLBFGS().run(other, max_iter=3, warn=False, store=CheckpointStore(tmp_path, fp))
    assert any("another number of tasks" in str(w.message) for w in caught)
    assert res.history[0]["iteration"] == 0           # started over
    with pytest.raises(CheckpointError, match="memory"):
        VectorFreeLBFGS(memory=4).run(other, max_iter=3, warn=False, store=CheckpointStore(
            tmp_path, vector_free_fingerprint(other, VectorFreeLBFGS(memory=4))))


def test_a_corrupt_shard_falls_back_to_the_previous_checkpoint(tmp_path):
    objective, z0 = _problem("a9a", 0.0)
    vectors = ShardedArrays(objective, 2, start=z0)
    fp = vector_free_fingerprint(vectors, VectorFreeLBFGS())
    VectorFreeLBFGS().run(vectors, tol=1e-12, max_iter=4, warn=False, store=CheckpointStore(tmp_path, fp),
                          checkpoint_interval=2)
    newest = sorted(tmp_path.glob("ckpt-*-shard-00001.npz"))[-1]
    newest.write_bytes(newest.read_bytes()[:-3] + b"xyz")
    with pytest.warns(CheckpointWarning, match="does not match its manifest"):
        res = VectorFreeLBFGS().run(ShardedArrays(objective, 2, start=z0), tol=1e-12, max_iter=4, warn=False,
                                    store=CheckpointStore(tmp_path, fp))
    assert res.nit == 4 and res.history[-1]["iteration"] == 4


def test_vectors_no_longer_needed_are_deleted():
    """The shards hold the state's vectors only: x, g, the best pair, the m pairs (and, under L1,
    the pseudo-gradient), whatever the run's length."""
    for alpha in (0.0, 1.0):
        objective, z0 = _problem("a9a", alpha)
        vectors = ShardedArrays(objective, 2, start=z0)
        peak = [0]
        run = vectors.vec_run

        def counted(program):
            out = run(program)
            peak[0] = max(peak[0], len(vectors.shards[0]))
            return out

        vectors.vec_run = counted
        solver = VectorFreeLBFGS(memory=4)
        solver.run(vectors, tol=1e-12, max_iter=25, warn=False)
        # the pairs, x, g (pg), the direction, the orthant, at most 3 trials of the line search,
        # the new pair and the new iterate before the old ones go
        assert peak[0] <= 2 * 4 + 11, peak[0]
        solver._run([])                     # the queued deletions
        live = set(vectors.shards[0])
        expected = {solver.x, solver.g, solver.best[0], solver.best[2], *solver.S, *solver.Y} | (
            {solver.pg} if alpha else set())
        assert live == expected and len(solver.S) == 4
