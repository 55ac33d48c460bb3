"""The resident engine: same numbers as the tree engine, survives a lost task, leaves nothing behind."""
import os
import pickle
import socket
import sys
import threading
import time
from functools import partial

import numpy as np
import pytest
from pyspark import cloudpickle

from sparkopt.engine import ResidentEngine, TaskError, TreeEngine, ingest, make_engine
from sparkopt.engine.resident import balanced_groups, task_slots
from sparkopt.fit import build_objective, fit_linear_model

from conftest import LOSS_CASES, letter_head, max_rel_diff as rel

pytestmark = pytest.mark.spark
# the executors cannot import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module", params=[(2, None), (5, False)], ids=["2parts-dense", "5parts-csr"])
def engines(spark, request):
    """(tree, resident) over letter.scale's first 3000 rows (class index and binary labels). With 5
    partitions (more than the 2 task slots of local[2], one of them emptied, CSR storage) the
    resident engine regroups partitions onto the slots."""
    partitions, dense = request.param
    df = letter_head(spark, partitions, empty_partition=2 if partitions > 2 else None)
    pairs = {}
    for label in ("label", "binary"):
        rdd, stats = ingest(df, label_col=label, dense=dense)
        pairs[label] = (TreeEngine(rdd, stats), ResidentEngine(rdd, stats))
    yield pairs
    for tree, resident in pairs.values():
        resident.close()
        tree.unpersist()
    df.unpersist()


@pytest.mark.parametrize("loss, label, kwargs", LOSS_CASES)
def test_resident_equals_tree(engines, loss, label, kwargs):
    tree, resident = engines[label]
    a = build_objective(tree, loss, **kwargs)[0]
    b = build_objective(resident, loss, **kwargs)[0]
    rng = np.random.default_rng(1)
    z = rng.normal(scale=0.1, size=a.n_params)
    if loss == "huber":
        z[-1] = 1.5
    v = rng.normal(size=a.n_params)
    with resident.session():
        fb, gb = b.loss_grad(z)
        hvb = b.hessp(z, v)
        sb = b.stochastic_loss_grad(z, 0.3, 7)
        _, _, Hb = b.loss_grad_hess(z)
    fa, ga = a.loss_grad(z)
    assert abs(fa - fb) <= 1e-10 * abs(fa)
    assert rel(gb, ga) < 1e-10
    assert rel(hvb, a.hessp(z, v)) < 1e-10
    sa = a.stochastic_loss_grad(z, 0.3, 7)     # the same rows are sampled in each task
    assert abs(sa[0] - sb[0]) <= 1e-10 * abs(sa[0]) and rel(sb[1], sa[1]) < 1e-10
    assert rel(Hb, a.loss_grad_hess(z)[2]) < 1e-10
    assert not resident.active


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["gd", "lbfgs", "owlqn", "newton", "newton-cg", "sgd"])
def test_every_solver_same_fit(engines, solver):
    tree, resident = engines["binary"]
    # Newton-CG: 6 outer iterations already hold dozens of Hessian-vector passes (a tree-engine job each)
    kwargs = dict(reg_param=1e-3, elastic_net_param=0.5 if solver == "owlqn" else 0.0, solver=solver,
                  max_iter=6 if solver == "newton-cg" else 15, tol=1e-9,
                  solver_options=dict(fraction=0.25, seed=3, step_size=0.5))
    if solver != "sgd":
        kwargs["solver_options"] = {}
    a = fit_linear_model(tree, "logistic", **kwargs)
    b = fit_linear_model(resident, "logistic", **kwargs)
    assert b.result.nit == a.result.nit and b.result.passes == a.result.passes
    assert rel(b.coefficients, a.coefficients) < 1e-10
    assert abs(b.result.fun - a.result.fun) <= 1e-10 * abs(a.result.fun)
    # one session per fit, and the traffic is in the history
    assert resident.sessions_started >= 1 and not resident.active
    last = b.result.history[-1]
    assert last["bytes_sent"] > 0 and last["bytes_received"] > 0
    # per pass only coefficients go out and partial sums come back: far less than the data
    assert last["bytes_received"] / max(b.result.passes, 1) < 200_000


def test_fn_error_is_raised_and_session_survives(engines):
    _, resident = engines["binary"]

    def bad(block, payload):
        raise ValueError(f"no good: {payload}")

    with resident.session():
        with pytest.raises(TaskError, match="ValueError: no good: 42"):
            resident.map_sum(bad, 42)
        # the tasks are still serving
        assert resident.map_sum(lambda block, p: float(block.w.sum()), None) == resident.weight_sum
        assert resident.sessions_started >= 1
    assert not resident.active


def _crash_once(marker_dir, at_call, block, payload):
    """Kill this Python worker (as an executor loss would) the `at_call`-th time task 0 runs."""
    from pyspark import TaskContext

    if TaskContext.get().partitionId() == 0 and not os.path.exists(os.path.join(marker_dir, "crashed")):
        counter = os.path.join(marker_dir, f"calls-{os.getpid()}")
        with open(counter, "a") as fh:
            fh.write(".")
        if os.path.getsize(counter) >= at_call:
            open(os.path.join(marker_dir, "crashed"), "w").close()
            os._exit(17)
    return float(block.w @ block.y), block.w.sum()


def test_task_loss_mid_fit_restarts_and_gives_same_result(spark, engines, tmp_path):
    tree, resident = engines["binary"]
    # a solver run whose block function kills one task's worker at its 3rd call
    (tmp_path / "unused").mkdir()
    expected = tree.map_sum(partial(_crash_once, str(tmp_path / "unused"), 10**9), None)
    restarts = resident.restarts
    with resident.session():
        for _ in range(5):
            got = resident.map_sum(partial(_crash_once, str(tmp_path), 3), None)
            assert got[0] == pytest.approx(expected[0], rel=1e-12) and got[1] == expected[1]
    assert (tmp_path / "crashed").exists()
    assert resident.restarts == restarts + 1
    assert not resident.active


class _CrashingObjective:
    """A block objective that delegates to the real one, crashing one worker once at call k."""

    def __init__(self, inner, marker_dir, at_call):
        self.inner, self.marker_dir, self.at_call = inner, marker_dir, at_call

    def __getattr__(self, name):
        if name.startswith("__") or name == "inner":     # unpickling looks these up first
            raise AttributeError(name)
        return getattr(self.inner, name)

    def loss_grad(self, coef, block):
        _crash_once(self.marker_dir, self.at_call, block, None)
        return self.inner.loss_grad(coef, block)


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")
def test_fit_survives_injected_failure_at_iteration_k(engines, tmp_path):
    from sparkopt.solvers import minimize

    tree, resident = engines["binary"]
    reference = fit_linear_model(tree, "logistic", reg_param=1e-3, solver="lbfgs", tol=1e-9, max_iter=30)
    objective = build_objective(resident, "logistic", reg_param=1e-3)[0]
    objective.block_objective = _CrashingObjective(objective.block_objective, str(tmp_path), at_call=6)
    reference_objective = build_objective(tree, "logistic", reg_param=1e-3)[0]
    z0 = np.zeros(objective.n_params)
    with resident.session():
        got = minimize(objective, z0, "lbfgs", tol=1e-9, max_iter=30)
    want = minimize(reference_objective, z0, "lbfgs", tol=1e-9, max_iter=30)
    assert (tmp_path / "crashed").exists()
    assert got.nit == want.nit and rel(got.x, want.x) < 1e-10
    assert reference.result.nit > 0


def _count_rows(block, payload):
    return block.n_rows


def test_channel_refuses_unauthenticated_peers(engines, tmp_path):
    from sparkopt.engine.wire import SESSION_ID_BYTES, WireError, client_handshake

    _, resident = engines["binary"]
    evil = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(evil), "w"))

    with resident.session():
        resident.map_sum(_count_rows, None)
        session = resident._session
        host, port = session.address
        assert host == resident._rdd.context.getConf().get("spark.driver.host") == "127.0.0.1"
        # the right session id but not the secret: the driver's proof does not verify, and the
        # driver never accepts the connection
        with socket.create_connection(session.address, timeout=5) as sock:
            with pytest.raises((WireError, EOFError, OSError)):
                client_handshake(sock, b"not the secret".ljust(32), session.id, time.monotonic() + 5)
        # a raw peer that skips the handshake and sends a pickle: dropped, never unpickled
        with socket.create_connection(session.address) as raw:
            blob = pickle.dumps(Payload())
            raw.sendall(len(blob).to_bytes(4, "big") + blob)
            raw.settimeout(15)
            try:
                assert raw.recv(1024) == b""             # closed without a reply
            except ConnectionResetError:
                pass
        assert resident.map_sum(_count_rows, None) == resident.n_rows   # still serving its own tasks
        assert resident.sessions_started >= 1 and len(session.connections) == session.groups
    assert not evil.exists()


def _sparkopt_threads():
    return [t for t in threading.enumerate() if t.name.startswith("sparkopt-resident")]


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")
def test_nothing_left_after_fit_error_or_interrupt(spark, engines):
    _, resident = engines["binary"]
    sc = spark.sparkContext
    fit_linear_model(resident, "logistic", reg_param=1e-2, max_iter=3)
    address = None

    def interrupt(row):
        nonlocal address
        address = resident._session.address
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_linear_model(resident, "logistic", reg_param=1e-2, max_iter=10, solver="lbfgs", callback=interrupt)
    with pytest.raises(TaskError):
        with resident.session():
            resident.map_sum(lambda block, p: 1 / 0, None)
    assert not resident.active
    deadline = time.time() + 10
    while (_sparkopt_threads() or sc.statusTracker().getActiveJobsIds()) and time.time() < deadline:
        time.sleep(0.2)
    assert _sparkopt_threads() == []
    assert sc.statusTracker().getActiveJobsIds() == []
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=2).close()


def test_auto_engine_choice(spark, engines):
    tree, _ = engines["binary"]
    slots = task_slots(spark.sparkContext)
    assert slots == 2
    chosen = make_engine(tree.rdd, tree.stats, engine="auto")
    assert chosen.kind == ("resident" if tree.num_partitions <= slots else "tree")
    assert make_engine(tree.rdd, tree.stats, engine="tree").kind == "tree"
    with pytest.raises(Exception, match="engine must be one of"):
        make_engine(tree.rdd, tree.stats, engine="fast")


def test_balanced_groups_put_largest_partitions_apart():
    assignment = balanced_groups({0: 100, 1: 1, 2: 1, 3: 99, 4: 2}, 2)
    loads = [sum(r for p, r in {0: 100, 1: 1, 2: 1, 3: 99, 4: 2}.items() if assignment[p] == g) for g in range(2)]
    assert assignment[0] != assignment[3] and max(loads) - min(loads) <= 2


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")
def test_async_sgd_on_resident_tasks(engines):
    """tau = 0 is synchronous SGD (equal to the tree engine's sgd); deterministic tau = 2 equals the
    same program on in-memory workers over the same blocks (one worker per partition)."""
    from sparkopt.engine import LocalEngine
    from sparkopt.solvers import minimize

    tree, resident = engines["binary"]
    build = lambda engine: build_objective(engine, "logistic", reg_param=1e-3)[0]     # noqa: E731
    settings = dict(step_size=0.3, fraction=0.2, schedule="constant", momentum=0.9, seed=4)
    sync = minimize(build(tree), None, "sgd", tol=1e-12, max_iter=12, options=settings)
    asyn = minimize(build(resident), None, "async-sgd", tol=1e-12, max_iter=12, options=dict(settings, staleness=0))
    assert asyn.nit == 12 and rel(asyn.x, sync.x) < 1e-10
    assert not resident.active
    free = minimize(build(resident), None, "async-sgd", tol=1e-12, max_iter=12,
                    options=dict(settings, staleness=None))
    assert sum(free.extra["pushes_per_worker"]) >= 12 * len(free.extra["pushes_per_worker"]) - 1
    assert free.history[-1]["updates"] == free.extra["updates"]
    if tree.num_partitions <= 2:
        local = LocalEngine(tree.collect_blocks(), stats=tree.stats)
        options = dict(settings, staleness=2, deterministic=True)
        a = minimize(build(resident), None, "async-sgd", tol=1e-12, max_iter=12, options=options)
        b = minimize(build(local), None, "async-sgd", tol=1e-12, max_iter=12, options=options)
        assert rel(a.x, b.x) < 1e-10 and a.extra["staleness_histogram"] == b.extra["staleness_histogram"]
    with pytest.raises(Exception, match="engine='resident'"):
        minimize(build(tree), None, "async-sgd", max_iter=2)


@pytest.mark.filterwarnings("ignore::sparkopt.solvers.ConvergenceWarning")
def test_passes_the_channel_cannot_carry_run_as_tree_jobs(engines, caplog):
    """The normal solver's co-moments (a GramStats record) and IRLS's payload (a GLMLoss) are not
    channel values (nothing on it is unpickled): those passes run as tree-engine jobs over the
    same blocks, said once in the log, with the tree engine's numbers; other passes stay resident."""
    from sparkopt.glm import fit_glm
    from sparkopt.objectives.losses import glm_loss

    tree, resident = engines["label"]
    with caplog.at_level("INFO", logger="sparkopt"):
        for engine in (tree, resident):
            engine._gram_statistics = None
        normal = [fit_linear_model(e, "squared_error", solver="normal", reg_param=0.1, elastic_net_param=0.5)
                  for e in (tree, resident)]
        glm = glm_loss("poisson", "log")
        irls = [fit_glm(e, glm, reg_param=0.0, max_iter=25, tol=1e-8) for e in (tree, resident)]
    assert normal[1].converged and rel(normal[1].coef_vector, normal[0].coef_vector) < 1e-10
    assert rel(np.asarray(irls[1].coef), np.asarray(irls[0].coef)) < 1e-10
    notes = [r.getMessage() for r in caplog.records if "run as tree-engine jobs" in r.getMessage()]
    assert any("cannot carry" in n for n in notes) and any("payload" in n for n in notes), notes
    assert len(notes) == len(set(notes))                        # once per block function
    restarts, sessions = resident.restarts, resident.sessions_started
    b = build_objective(resident, "multinomial", reg_param=1e-3)[0]
    b.loss_grad(np.zeros(b.n_params))                            # a carriable pass: a session as before
    assert resident.sessions_started == sessions + 1 and resident.restarts == restarts


def test_a_session_reads_the_applications_settings_from_one_copy(spark, monkeypatch):
    """Each SparkContext.getConf() copies every setting through py4j (~20 ms); a resident engine
    takes one copy and answers its dozen setting reads (ports, encryption, timeouts, link,
    allowed hosts, the driver's host) from it."""
    from pyspark import SparkContext

    df = letter_head(spark, 2)
    rdd, stats = ingest(df, label_col="binary")
    copies = []
    real = SparkContext.getConf
    monkeypatch.setattr(SparkContext, "getConf", lambda self: copies.append(1) or real(self))
    engine = ResidentEngine(rdd, stats)
    try:
        fit = fit_linear_model(engine, "logistic", reg_param=1e-3, solver="lbfgs", max_iter=3)
        assert fit.result.nit == 3 and engine.sessions_started == 1
    finally:
        engine.close()
        rdd.unpersist()
        df.unpersist()
    assert len(copies) == 1
