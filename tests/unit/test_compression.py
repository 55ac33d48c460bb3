"""Compressed exchanges (sparkopt.engine.compression): the codecs' error bounds, error feedback,
the LocalEngine's simulation of the resident channel, and fits with every scheme."""
from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file

from conftest import dataset
from sparkopt.engine import LocalEngine
from sparkopt.engine.compression import (CHUNK, Compression, DriverExchange, Exchange, TaskExchange, _Stream,
                                         message_bytes, powersgd_rank)
from sparkopt.errors import InputError
from sparkopt.fit import fit_linear_model

RNG = np.random.default_rng(7)


def _stream_round(scheme, value, ratio=None, rows=1, reference=None):
    """(message, the receiver's value) after one pass of ``value`` on a stream that holds ``reference``."""
    compression = Compression.of(scheme, ratio)
    sender, receiver = _Stream(), _Stream()
    if reference is not None:
        receiver.decode(sender.encode(reference, compression, rows, key=True))
    sender.passes = receiver.passes = 10          # past any warm-up
    message = sender.encode(value, compression, rows, key=False)
    received = receiver.decode(message)
    np.testing.assert_array_equal(sender.reference, received)     # both ends hold the same reference
    return message, received


def test_bf16_keeps_eight_significant_bits():
    v = RNG.standard_normal(1000) * 10.0 ** RNG.integers(-8, 8, 1000)
    message, got = _stream_round("bf16", v, reference=np.zeros(1000))
    assert message[0] == "bf16" and message[1].dtype == np.uint16
    assert np.all(np.abs(got - v) <= 2.0 ** -8 * np.abs(v))


def test_int8_error_is_within_half_a_step_of_each_chunk_and_zero_chunks_are_skipped():
    v = RNG.standard_normal(5 * CHUNK + 7) * 10.0 ** RNG.integers(-6, 6, 5 * CHUNK + 7)
    v[CHUNK:3 * CHUNK] = 0.0                      # two all-zero chunks: no int8 values sent for them
    message, got = _stream_round("int8", v, reference=np.zeros(v.size))
    kind, n, top, below, q = message
    assert kind == "int8" and n == v.size and q.dtype == np.int8 and q.size == v.size - 2 * CHUNK
    assert below.dtype == np.uint8 and below.size == 6
    chunks = np.zeros(6 * CHUNK)
    chunks[:v.size] = np.abs(v)
    bound = chunks.reshape(6, CHUNK).max(axis=1) / 107.0 / 2 * (1 + 1e-9)      # half a step, a step <= max / 107
    err = np.zeros(6 * CHUNK)
    err[:v.size] = np.abs(got - v)
    assert np.all(err.reshape(6, CHUNK).max(axis=1) <= bound)
    assert np.all(got[CHUNK:3 * CHUNK] == 0.0)


def test_topk_sends_the_largest_differences():
    v = RNG.standard_normal(400)
    message, got = _stream_round("topk", v, ratio=8, reference=np.zeros(400))
    kind, n, index, values = message
    assert kind == "topk" and index.size == 50
    largest = np.argsort(-np.abs(v))[:50]
    assert set(index.tolist()) == set(largest.tolist())
    np.testing.assert_allclose(got[index], v[index], rtol=1e-7)
    assert np.all(got[np.setdiff1d(np.arange(400), index)] == 0.0)


def test_powersgd_is_exact_on_a_matrix_of_its_rank():
    rows, cols = 20, 300
    rank = powersgd_rank(rows, cols, 8.0)
    assert 1 <= rank < rows
    M = RNG.standard_normal((rows, rank)) @ RNG.standard_normal((rank, cols))
    message, got = _stream_round("powersgd", M.ravel(), ratio=8, rows=rows, reference=np.zeros(M.size))
    assert message[0] == "lowrank" and message[2].shape == (rows, rank) and message[3].shape == (cols, rank)
    np.testing.assert_allclose(got, M.ravel(), atol=1e-5 * np.abs(M).max())


@pytest.mark.parametrize("scheme,ratio,rows", [("bf16", None, 1), ("int8", None, 1), ("topk", 10, 1),
                                               ("powersgd", 16, 12)])
def test_error_feedback_carries_what_a_message_left_out(scheme, ratio, rows):
    """Sending the same value again and again, the reference converges to it: each message
    compresses what the previous ones missed (EF21's Markov compressor)."""
    v = RNG.standard_normal(12 * 240)
    compression = Compression.of(scheme, ratio)
    sender, receiver = _Stream(), _Stream()
    receiver.decode(sender.encode(np.zeros_like(v), compression, rows, key=True))
    errors = []
    for _ in range(60):
        receiver.decode(sender.encode(v, compression, rows, key=False))
        errors.append(np.linalg.norm(receiver.reference - v) / np.linalg.norm(v))
    assert errors[-1] < 1e-6 * errors[0] or errors[-1] < 1e-12
    assert all(b <= a * (1 + 1e-9) for a, b in zip(errors, errors[1:]))


def test_nonfinite_differences_go_as_key_frames():
    v = np.array([1.0, np.inf, 3.0])
    message, got = _stream_round("bf16", v, reference=np.zeros(3))
    assert message[0] == "key"
    np.testing.assert_array_equal(got, v)


def test_a_difference_before_any_key_frame_is_refused():
    sender, receiver = _Stream(), _Stream()
    compression = Compression.of("int8")
    sender.encode(np.ones(10), compression, 1, key=True)            # the receiver missed it
    with pytest.raises(ValueError, match="before any key frame"):
        receiver.decode(sender.encode(2 * np.ones(10), compression, 1, key=False))


def test_compression_params_are_checked_by_name():
    with pytest.raises(InputError, match="compression must be one of"):
        Compression.of("zstd")
    with pytest.raises(InputError, match="compressionRatio must be a finite number >= 1"):
        Compression.of("topk", 0.5)
    with pytest.raises(InputError, match="powersgd"):
        Compression.of("powersgd").check_shape(1, 124)
    Compression.of("powersgd", 1).check_shape(1, 124)               # ratio 1: exact, any shape


def _gradient_pass(block, coef):
    r = block.X @ coef - block.y
    return float(block.w @ r ** 2) / 2, block.X.T @ (block.w * r)


def _marked(fn, rows=1):
    bound = partial(fn)
    bound.exchange = Exchange(model=True, sums=(1,), rows=rows)
    return bound


def test_the_driver_and_the_tasks_stay_in_step_and_a_reset_sends_key_frames(caplog):
    X = RNG.standard_normal((300, 40))
    y = RNG.standard_normal(300)
    exact = LocalEngine.from_arrays(X, y, num_partitions=3)
    engine = LocalEngine.from_arrays(X, y, num_partitions=3, compression="int8")
    fn = _marked(_gradient_pass)
    coef = np.zeros(40)
    for step in range(30):
        f, g = engine.map_sum(fn, coef)
        f_exact, g_exact = exact.map_sum(_gradient_pass, coef)
        if step == 0:                   # key frames: exact
            assert f == f_exact and np.array_equal(g, g_exact)
        coef = coef - 1e-3 * g
    # the tasks evaluate at the model they hold, which trails coef by a fraction of the last step,
    # and their sums trail by a fraction of the last change
    g_exact = exact.map_sum(_gradient_pass, coef)[1]
    change = np.linalg.norm(g_exact - g)
    f, g = engine.map_sum(fn, coef)
    assert np.linalg.norm(g - g_exact) < 0.05 * change
    with caplog.at_level(logging.INFO, logger="sparkopt"):
        engine._channel.reset("a test")
    assert "error-feedback state reset (a test)" in caplog.text
    f, g = engine.map_sum(fn, coef)
    assert np.array_equal(g, exact.map_sum(_gradient_pass, coef)[1])   # after a reset: key frames, exact
    assert engine._channel.key_frames == 2


def test_bytes_are_the_channel_sizes_of_the_messages():
    X = RNG.standard_normal((200, 3000))
    y = RNG.standard_normal(200)
    plain = LocalEngine.from_arrays(X, y, num_partitions=2, compression="none")
    squeezed = LocalEngine.from_arrays(X, y, num_partitions=2, compression="int8")
    fn = _marked(_gradient_pass)
    coef = np.zeros(3000)
    for engine in (plain, squeezed):
        for step in range(3):
            engine.map_sum(fn, coef + step)
    assert plain.bytes_sent == 3 * 2 * message_bytes(coef)
    # two passes of int8 after the key frames: ~1/8 of the float64 bytes each
    later_sent = squeezed.bytes_sent - plain.bytes_sent / 3
    assert later_sent < 2 * plain.bytes_sent / 3 / 7
    assert LocalEngine.from_arrays(X, y).bytes_sent == 0      # no channel: nothing counted


# ---------------------------------------------------------------------------- fits
def _data(name, n_features, rows, labels):
    X, y = load_svmlight_file(str(dataset(name)), n_features=n_features)
    X = X[:rows]
    y = y[:rows]
    return X, (y > 0).astype(float) if labels == "binary" else y - 1


@pytest.fixture(scope="module")
def a9a():
    return _data("a9a", 123, 6000, "binary")


@pytest.fixture(scope="module")
def letter():
    X, y = _data("letter.scale", 16, 4000, "shift")
    return X.toarray(), y


@pytest.fixture(scope="module")
def abalone():
    X, y = load_svmlight_file(str(dataset("angel_abalone_8d_train.libsvm")), n_features=8)
    return X.toarray(), y


def _fit(data, loss, scheme, ratio=None, solver="lbfgs", reg=1e-3, partitions=2, max_iter=500, **kw):
    X, y = data
    engine = LocalEngine.from_arrays(X, y, num_partitions=partitions, compression=scheme, compression_ratio=ratio)
    return fit_linear_model(engine, loss, reg_param=reg, solver=solver, max_iter=max_iter, tol=1e-8, **kw), engine


_EXACT: dict = {}
CASES = [("a9a", "logistic"), ("letter", "multinomial"), ("abalone", "squared_error"), ("abalone", "huber"),
         ("abalone", "poisson"), ("a9a", "squared_hinge")]


@pytest.mark.parametrize("scheme", ["bf16", "int8", "topk", "powersgd"])
@pytest.mark.parametrize("data_name,loss", CASES)
def test_every_scheme_converges_on_every_loss_it_supports(scheme, data_name, loss, request):
    if scheme == "powersgd" and loss != "multinomial":
        with pytest.raises(InputError, match="powersgd"):
            _fit(request.getfixturevalue(data_name), loss, scheme)
        return
    data = request.getfixturevalue(data_name)
    if (data_name, loss) not in _EXACT:           # one exact fit per case, for the four schemes
        _EXACT[data_name, loss] = _fit(data, loss, "none")[0]
    exact = _EXACT[data_name, loss]
    squeezed, engine = _fit(data, loss, scheme, ratio=8)
    assert squeezed.result.status.name in ("CONVERGED", "PRECISION_LIMIT")
    gap = (squeezed.result.fun - exact.result.fun) / abs(exact.result.fun)
    assert abs(gap) < 1e-7, (gap, squeezed.result.nit, exact.result.nit)
    assert squeezed.result.history[-1]["bytes_received"] > 0


def test_the_hinge_fits_exactly_with_a_logged_reason(a9a, caplog):
    # the hinge's solver (Newton on smoothed hinges, then an L-BFGS polish) needs exact passes:
    # a compressed engine runs it exactly and says why
    exact, _ = _fit(a9a, "hinge", "none", solver="auto")
    with caplog.at_level(logging.INFO, logger="sparkopt"):
        same, _ = _fit(a9a, "hinge", "int8", ratio=8, solver="auto")
    assert "compression='int8' is off for this fit (solver newton-smoothing)" in caplog.text
    assert np.array_equal(exact.coef_vector, same.coef_vector)


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")
@pytest.mark.parametrize("scheme", ["bf16", "int8", "topk", "powersgd"])
def test_a_ratio_of_one_equals_none_bit_for_bit(scheme, letter):
    exact, _ = _fit(letter, "multinomial", "none", solver="gd", max_iter=60)
    same, _ = _fit(letter, "multinomial", scheme, ratio=1, solver="gd", max_iter=60)
    assert np.array_equal(exact.coef_vector, same.coef_vector)
    assert [h["bytes_received"] for h in exact.result.history] == [h["bytes_received"] for h in same.result.history]


# ---------------------------------------------------------------------------- the loop
class _Inexact:
    """A quadratic whose gradient carries a 5% error while ``inexact`` (an InexactObjective)."""

    def __init__(self, n=30):
        from sparkopt.solvers.objective import CountingObjective

        rng = np.random.default_rng(3)
        A = rng.standard_normal((n, n))
        self.H = A @ A.T / n + np.eye(n)
        self.b = rng.standard_normal(n)
        self.exact = CountingObjective(lambda x: 0.5 * x @ self.H @ x - self.b @ x, lambda x: self.H @ x - self.b, n)
        self.n_params, self.has_hessian, self.smooth, self.l1_weights = n, False, True, None
        self.inexact, self.refreshes, self.reasons = True, 0, []
        self._rng = np.random.default_rng(4)

    passes = property(lambda self: self.exact.passes)
    evaluations = property(lambda self: self.exact.evaluations)

    def refresh(self, reason):
        self.refreshes += 1

    def make_exact(self, reason):
        self.inexact = False
        self.reasons.append(reason)

    def loss(self, x):
        return self.exact.loss(x)

    def loss_grad(self, x):
        f, g = self.exact.loss_grad(x)
        if self.inexact:
            g = g * (1.0 + 0.05 * self._rng.standard_normal(g.size))
        return f, g

    def loss_grad_hess(self, x):
        raise NotImplementedError

    def hessp(self, x, v):
        raise NotImplementedError


def test_the_loop_confirms_an_inexact_run_with_exact_values():
    from sparkopt.solvers import minimize

    problem = _Inexact()
    result = minimize(problem, np.zeros(problem.n_params), "lbfgs", tol=1e-10, max_iter=500)
    assert result.status.name == "CONVERGED"
    assert not problem.inexact and "CONVERGED" in problem.reasons[0]
    x_star = np.linalg.solve(problem.H, problem.b)
    np.testing.assert_allclose(result.x, x_star, rtol=1e-7, atol=1e-9)
    # the answer's F and gradient are exact
    assert result.fun == pytest.approx(problem.exact.loss(result.x), rel=1e-15)


def test_a_budget_end_on_inexact_values_is_evaluated_exactly():
    from sparkopt.solvers import minimize

    problem = _Inexact()
    result = minimize(problem, np.zeros(problem.n_params), "gd", tol=1e-12, max_iter=3, warn=False)
    assert result.status.name == "MAX_ITER" and not problem.inexact
    np.testing.assert_allclose(result.jac, problem.H @ result.x - problem.b, rtol=1e-12)
