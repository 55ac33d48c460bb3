"""fitMultiple's scheduler (sparkopt.ml.estimator._GridFits) and the ingest cache under concurrent
callers, without Spark: CrossValidator(parallelism=p) calls next() on one iterator from p
threads. Groups of maps (equal but for regParam) must run side by side, a group's own steps in
order, so every model equals the one-thread run's; errors reach the callers; one ingest per data
set however many threads ask at once."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sparkopt.engine import LocalEngine
from sparkopt.ml import LogisticRegression
from sparkopt.ml import cache as cache_module
from sparkopt.ml.estimator import SparkoptEstimator, _GridFits, _GridGroup, exclusive_engine

from conftest import dataset


def _drain(iterator, threads: int) -> dict:
    """Call next() from `threads` threads until StopIteration; {index: model} (errors re-raised)."""
    out, errors = {}, []
    lock = threading.Lock()

    def work():
        while True:
            try:
                index, model = next(iterator)
            except StopIteration:
                return
            except Exception as exc:          # noqa: BLE001 - collected, asserted by the caller
                with lock:
                    errors.append(exc)
                continue
            with lock:
                assert index not in out, f"map {index} returned twice"
                out[index] = model

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
        assert not t.is_alive(), "a caller of next() hangs"
    if errors:
        raise errors[0]
    return out


# ---------------------------------------------------------------------------------- the scheduler
class _Fake:
    """A grid map: fits record (index, warm start, thread) and can wait at a barrier or fail."""

    def __init__(self, log, reg, group, barrier=None, fail=False, path_result="models"):
        self.log, self.reg, self.group, self.barrier, self.fail = log, reg, group, barrier, fail
        self.path_result = path_result

    def getRegParam(self):
        return self.reg

    def _model(self, index, warm):
        coef = np.array([index, 0.0 if warm is None else warm[0]])
        return SimpleNamespace(index=index, warm=warm, _fit=SimpleNamespace(result=SimpleNamespace(success=True),
                                                                             coef_vector=coef))

    def _fit_in_grid(self, dataset, index, warm):
        self.log.append(("start", self.group, index, warm if warm is None else float(warm[0])))
        if self.barrier is not None:
            self.barrier.wait()          # the other group's first fit must be running now
        time.sleep(0.01)
        self.log.append(("end", self.group, index))
        if self.fail:
            raise RuntimeError(f"fit {index} failed")
        return self._model(index, warm)

    def _fit_path(self, dataset, estimators):
        indices = [e.index for e in estimators]
        self.log.append(("path", self.group, tuple(indices)))
        if self.path_result == "error":
            raise RuntimeError("path failed")
        if self.path_result == "none":
            return None
        return [self._model(i, None) for i in indices]


def _fakes(log, regs_by_group, options=None):
    estimators, groups = [], []
    for g, regs in enumerate(regs_by_group):
        members = []
        for reg in regs:
            fake = _Fake(log, reg, g, **(options or {}).get(g, {}))
            fake.index = len(estimators)
            members.append(fake.index)
            estimators.append(fake)
        groups.append(members)
    return estimators, groups


def test_groups_run_side_by_side_and_chains_in_order():
    log = []
    barrier = threading.Barrier(2, timeout=20)      # breaks (fails the fits) unless both groups run at once
    estimators, members = _fakes(log, [[0.01, 1.0, 0.1], [0.5, 0.05]],
                                 {0: {"barrier": barrier}, 1: {"barrier": barrier}})
    # the barrier is for the first fit of each group only
    first = {0: 1, 1: 3}                              # regParam order: the largest first
    for est in estimators:
        if est.index not in first.values():
            est.barrier = None
    groups = [_GridGroup(estimators, m, False) for m in members]
    models = _drain(_GridFits(None, estimators, groups), threads=3)
    assert sorted(models) == [0, 1, 2, 3, 4]
    # each chain: decreasing regParam, each fit warm-started from the previous one's coefficients
    for group, chain in ((0, [1, 2, 0]), (1, [3, 4])):
        starts = [e for e in log if e[0] == "start" and e[1] == group]
        assert [e[2] for e in starts] == chain
        assert [e[3] for e in starts] == [None] + [float(i) for i in chain[:-1]]
        # never two fits of one chain at once
        events = [e for e in log if e[1] == group and e[0] in ("start", "end")]
        assert [e[0] for e in events] == ["start", "end"] * len(chain)


def test_threads_get_the_one_thread_models():
    log1, log2 = [], []
    one = _drain(_GridFits(None, *(lambda e, m: (e, [_GridGroup(e, g, False) for g in m]))(
        *_fakes(log1, [[0.3, 0.2, 0.1], [1.0, 0.1]]))), threads=1)
    many = _drain(_GridFits(None, *(lambda e, m: (e, [_GridGroup(e, g, False) for g in m]))(
        *_fakes(log2, [[0.3, 0.2, 0.1], [1.0, 0.1]]))), threads=4)
    assert {i: (m.warm if m.warm is None else m.warm.tolist()) for i, m in one.items()} == \
           {i: (m.warm if m.warm is None else m.warm.tolist()) for i, m in many.items()}


def test_a_path_gives_all_its_models_and_falls_back_to_a_chain():
    log = []
    estimators, members = _fakes(log, [[0.1, 0.01, 0.001], [0.2, 0.02]], {1: {"path_result": "none"}})
    groups = [_GridGroup(estimators, m, True) for m in members]
    models = _drain(_GridFits(None, estimators, groups), threads=2)
    assert sorted(models) == [0, 1, 2, 3, 4]
    assert ("path", 0, (0, 1, 2)) in log and ("path", 1, (3, 4)) in log
    # group 1 was not a path after all: fitted as a chain, warm-started
    assert [e[2:] for e in log if e[0] == "start"] == [(3, None), (4, 3.0)]
    # one thread: a path's models come back in the grid's order
    log = []
    estimators, members = _fakes(log, [[0.001, 0.1, 0.01]])
    results = list(_GridFits(None, estimators, [_GridGroup(estimators, members[0], True)]))
    assert [index for index, _ in results] == [0, 1, 2]


def test_errors_reach_every_caller_they_concern_and_nothing_hangs():
    log = []
    estimators, members = _fakes(log, [[0.3, 0.2, 0.1]])
    estimators[1].fail = True                           # the chain's second fit
    fits = _GridFits(None, estimators, [_GridGroup(estimators, members[0], False)])
    got, raised = [], []
    for _ in range(3):
        try:
            got.append(next(fits))
        except RuntimeError as exc:
            raised.append(str(exc))
    assert [i for i, _ in got] == [0, 2] and raised == ["fit 1 failed"]
    # after a failed fit the chain goes on from the last converged one (fit 0's coefficients)
    assert got[1][1].warm.tolist() == [0.0, 0.0]
    with pytest.raises(StopIteration):
        next(fits)
    # a failed path: its error in each of its maps' calls, then the end
    estimators, members = _fakes([], [[0.1, 0.01, 0.001]], {0: {"path_result": "error"}})
    fits = _GridFits(None, estimators, [_GridGroup(estimators, members[0], True)])
    for _ in range(3):
        with pytest.raises(RuntimeError, match="path failed"):
            next(fits)
    with pytest.raises(StopIteration):
        next(fits)


def test_a_fit_without_a_solver_result_warm_starts_nothing():
    """A GLR model's fit (IRLS: no solver result) or a failed fit leaves the chain's next fit cold."""
    estimators, members = _fakes([], [[0.3, 0.2]])
    glr_like = SimpleNamespace(_fit=SimpleNamespace(coef=np.zeros(2)))
    estimators[0]._model = lambda index, warm: glr_like if index == 0 else _Fake._model(estimators[1], index, warm)
    models = _drain(_GridFits(None, estimators, [_GridGroup(estimators, members[0], False)]), threads=1)
    assert models[1].warm is None


def test_resident_fits_take_turns():
    """exclusive_engine: fits on resident engines never overlap, others do."""
    inside, overlap = [0], []
    lock = threading.Lock()

    def fit(kind):
        with exclusive_engine(SimpleNamespace(kind=kind)):
            with lock:
                inside[0] += 1
                overlap.append(inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    for kind, most in (("resident", 1), ("tree", 3)):
        overlap.clear()
        threads = [threading.Thread(target=fit, args=(kind,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert max(overlap) == most, kind


# --------------------------------------------------------------- real fits, concurrent callers
@pytest.fixture(scope="module")
def magic_engine():
    df = pd.read_csv(dataset("magic04.data"), header=None)
    df = df.iloc[np.random.default_rng(3).choice(len(df), 1200, replace=False)]
    X, y = df.iloc[:, :10].to_numpy(float), (df.iloc[:, 10] == "g").to_numpy(float)
    base = LocalEngine.from_arrays(X, y, num_partitions=3, block_rows=150)
    # each fit its own engine (own counters) over the same blocks, as the ingest cache gives
    return lambda: LocalEngine(base._partitions, base.stats)


@pytest.mark.parametrize("as_paths", [True, False])
def test_concurrent_fit_multiple_equals_one_thread(magic_engine, monkeypatch, as_paths):
    """A regParam x elasticNetParam grid (two groups) with 1 and 3 threads: identical models."""
    monkeypatch.setattr(SparkoptEstimator, "_engine_for", lambda self, dataset: (magic_engine(), 0.0))
    if not as_paths:
        monkeypatch.setattr(SparkoptEstimator, "_path_applies", lambda self, estimators: False)
    lr = LogisticRegression(tol=1e-9)
    grid = [{lr.regParam: r, lr.elasticNetParam: a} for a in (0.0, 0.5) for r in (0.1, 1e-3, 1e-2)]
    one = _drain(lr.fitMultiple(None, grid), threads=1)
    many = _drain(lr.fitMultiple(None, grid), threads=3)
    assert sorted(one) == sorted(many) == list(range(6))
    for i in range(6):
        assert one[i].getRegParam() == many[i].getRegParam() == grid[i][lr.regParam]
        np.testing.assert_array_equal(one[i]._fit.coef_vector, many[i]._fit.coef_vector)
        assert ("path_points" in one[i]._fit.params) == as_paths


# ------------------------------------------------------------------------------- the ingest cache
def test_one_ingest_per_data_set_under_concurrent_gets(monkeypatch):
    calls, gate = [], threading.Event()

    def collect(df, *args, **kwargs):
        calls.append(df)
        gate.wait(10)                  # every thread asks while this ingest runs
        if df.fail_first and len(calls) == 1:
            raise RuntimeError("ingest failed")
        return LocalEngine.from_arrays(np.eye(3), np.array([0.0, 1.0, 1.0]))

    class Frame:
        sparkSession = None

        def __init__(self, fail_first=False):
            self.fail_first = fail_first

        def semanticHash(self):
            return id(self)

        def sameSemantics(self, other):
            return other is self

    monkeypatch.setattr(cache_module, "check_session_engine", lambda df, engine: engine)
    monkeypatch.setattr(cache_module, "use_driver", lambda *args: True)
    monkeypatch.setattr(cache_module, "application_key", lambda session: "app")
    monkeypatch.setattr(cache_module, "collect_to_driver", collect)
    monkeypatch.setattr(cache_module, "DriverEngine", LocalEngine)
    for fail_first in (False, True):
        calls.clear()
        gate.clear()
        cache, frame = cache_module.EngineCache(), Frame(fail_first)
        got, errors = [], []

        def get():
            try:
                got.append(cache.get(frame, "features", "label", None, None, 2, "driver"))
            except RuntimeError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=get) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        gate.set()
        for t in threads:
            t.join(20)
        if fail_first:
            # the failed ingest raises in its caller; a waiting thread ingests again, the rest reuse it
            assert len(errors) == 1 and len(calls) == 2 and len(got) == 3
        else:
            assert len(calls) == 1 and len(got) == 4
        assert sorted(seconds == 0.0 for _, seconds in got) == [False] + [True] * (len(got) - 1)
        assert len({id(engine) for engine, _ in got}) == len(got)     # an engine of its own each
