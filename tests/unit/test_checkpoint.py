"""Checkpoint / resume: an interrupted fit rerun with the same checkpoint directory ends with the
uninterrupted fit's result (bit for bit), corrupt checkpoints fall back, foreign ones are refused,
files are plain data, writes are atomic, and a SIGKILLed process resumes. No Spark."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file

from sparkopt.engine import LocalEngine
from sparkopt.errors import InputError
from sparkopt.fit import fit_linear_model
from sparkopt.solvers import CheckpointError, CheckpointWarning, ConvergenceWarning, CountingObjective, minimize
from sparkopt.solvers.checkpoint import CheckpointStore, decode_memory, encode_memory

from conftest import dataset

ROOT = Path(__file__).resolve().parents[2]
N_ROWS = 8000


@pytest.fixture(scope="module")
def a9a():
    # the first 8000 rows: the real data's conditioning, a quarter of the time per pass
    X, y = load_svmlight_file(str(dataset("a9a")), n_features=123)
    return X.tocsr()[:N_ROWS], (y[:N_ROWS] > 0).astype(float)


def engine_of(a9a):
    """A fresh engine per run: its pass counter starts at 0 like a new process's."""
    X, y = a9a
    return LocalEngine.from_arrays(X, y, num_partitions=4)


# (solver, fit_linear_model kwargs): every solver minimize knows, plus proximal Newton (newton + L1)
CASES = {
    "gd": dict(solver="gd", reg_param=1e-3, max_iter=40),
    "sgd": dict(solver="sgd", reg_param=1e-3, max_iter=30,
                solver_options=dict(step_size=0.5, fraction=0.2, schedule="constant", momentum=0.5, seed=7)),
    "local-sgd": dict(solver="local-sgd", reg_param=1e-3, max_iter=30,
                      solver_options=dict(step_size=0.3, fraction=0.2, schedule="constant", local_steps=3, seed=7)),
    "lbfgs": dict(solver="lbfgs", reg_param=1e-3, max_iter=40),
    "owlqn": dict(solver="owlqn", reg_param=1e-3, elastic_net_param=0.5, max_iter=40),
    "newton": dict(solver="newton", reg_param=1e-3),
    "newton-cg": dict(solver="newton-cg", reg_param=1e-3),
    "proximal-newton": dict(solver="newton", reg_param=1e-3, elastic_net_param=0.5),
    "hinge-continuation": dict(solver="auto", reg_param=1e-3, max_iter=60),
}


def fit(a9a, case, **kwargs):
    kw = dict(CASES[case], tol=1e-9)
    kw.update(kwargs)
    loss = "hinge" if case == "hinge-continuation" else "logistic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_linear_model(engine_of(a9a), loss, **kw)


def interrupt_at(k):
    def callback(row):
        if row["iteration"] == k:
            raise KeyboardInterrupt
    return callback


def assert_same_fit(a, b):
    """Same x bit for bit, same objective, iterations, status and history (except wall time)."""
    np.testing.assert_array_equal(a.coef_vector, b.coef_vector)
    ra, rb = a.result, b.result
    assert (ra.fun, ra.nit, ra.status, ra.solver) == (rb.fun, rb.nit, rb.status, rb.solver)
    assert ra.passes == pytest.approx(rb.passes, rel=1e-12)
    assert len(ra.history) == len(rb.history)
    for row_a, row_b in zip(ra.history, rb.history):
        assert row_a.keys() == row_b.keys()
        for key in row_a:
            if key == "seconds":
                continue
            if key == "passes":     # fractional (SGD) pass counts are sums in a different order
                assert row_a[key] == pytest.approx(row_b[key], rel=1e-12)
            else:
                assert row_a[key] == row_b[key] or (row_a[key] != row_a[key] and row_b[key] != row_b[key]), key


@pytest.fixture(scope="module")
def references(a9a):
    return {case: fit(a9a, case) for case in CASES}


# ------------------------------------------------------------------------ (1) resume == uninterrupted
@pytest.mark.parametrize("case", list(CASES))
def test_interrupted_and_resumed_equals_uninterrupted(a9a, references, case, tmp_path):
    ref = references[case]
    assert ref.result.nit >= 3, ref.result
    k = min(7, ref.result.nit - 1)
    with pytest.raises(KeyboardInterrupt):
        fit(a9a, case, checkpoint_dir=tmp_path, checkpoint_interval=2, callback=interrupt_at(k))
    assert list(tmp_path.rglob("ckpt-*.json")), "no checkpoint written before the interrupt"
    seen = []
    resumed = fit(a9a, case, checkpoint_dir=tmp_path, checkpoint_interval=2, callback=seen.append)
    assert_same_fit(resumed, ref)
    # the resumed run did only the iterations after the last checkpoint (the hinge's callback
    # rows count the whole fit's iterations, stages and polish included)
    assert seen and seen[0]["iteration"] > 1
    assert seen[-1]["iteration"] == ref.result.nit


def test_max_iter_then_resume_with_more_iterations(a9a, references, tmp_path):
    ref = references["lbfgs"]
    first = fit(a9a, "lbfgs", max_iter=5, checkpoint_dir=tmp_path, checkpoint_interval=100)
    assert first.result.nit == 5               # the clean end wrote a checkpoint at 5
    resumed = fit(a9a, "lbfgs", checkpoint_dir=tmp_path, checkpoint_interval=100)
    assert_same_fit(resumed, ref)


def test_rerun_of_a_finished_fit_costs_no_pass(a9a, references, tmp_path):
    fit(a9a, "newton", checkpoint_dir=tmp_path)
    engine = engine_of(a9a)
    again = fit_linear_model(engine, "logistic", **dict(CASES["newton"], tol=1e-9), checkpoint_dir=tmp_path)
    assert engine.passes == 0
    assert_same_fit(again, references["newton"])


def test_hinge_continuation_keeps_one_directory_per_stage(a9a, references, tmp_path):
    fit(a9a, "hinge-continuation", checkpoint_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[:2] == ["polish", "stage-0"] and all(n.startswith(("stage-", "polish")) for n in names)


# ------------------------------------------------------------------------ (2)(3) corrupt checkpoints
def _interrupted(a9a, tmp_path, case="lbfgs", k=6):
    with pytest.raises(KeyboardInterrupt):
        fit(a9a, case, checkpoint_dir=tmp_path, checkpoint_interval=1, callback=interrupt_at(k))
    manifests = sorted(tmp_path.glob("ckpt-*.json"))
    assert len(manifests) == 2                   # rotation keeps the newest two
    return manifests


@pytest.mark.parametrize("damage", ["flip-array-byte", "truncate-manifest", "edit-manifest", "delete-arrays"])
def test_corrupt_newest_checkpoint_falls_back_to_previous(a9a, references, tmp_path, damage):
    older, newest = _interrupted(a9a, tmp_path)
    npz = newest.with_suffix(".npz")
    if damage == "flip-array-byte":
        blob = bytearray(npz.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        npz.write_bytes(bytes(blob))
    elif damage == "truncate-manifest":
        newest.write_bytes(newest.read_bytes()[:100])
    elif damage == "edit-manifest":
        doc = json.loads(newest.read_text())
        doc["payload"]["iteration"] += 1       # valid JSON, wrong checksum
        newest.write_text(json.dumps(doc))
    else:
        npz.unlink()
    seen = []
    with pytest.warns(CheckpointWarning, match=newest.name):
        resumed = fit(a9a, "lbfgs", checkpoint_dir=tmp_path, checkpoint_interval=1, callback=seen.append)
    assert seen[0]["iteration"] == 6             # resumed from the older one (iteration 5)
    assert_same_fit(resumed, references["lbfgs"])


def test_all_checkpoints_corrupt_warns_and_starts_fresh(a9a, references, tmp_path):
    for manifest in _interrupted(a9a, tmp_path):
        manifest.write_text("{not json")
    seen = []
    with pytest.warns(CheckpointWarning) as caught:
        resumed = fit(a9a, "lbfgs", checkpoint_dir=tmp_path, checkpoint_interval=1, callback=seen.append)
    assert any("starting from the beginning" in str(w.message) for w in caught)
    assert seen[0]["iteration"] == 1
    assert_same_fit(resumed, references["lbfgs"])
    # the fresh run's checkpoints replaced the corrupt ones
    for manifest in tmp_path.glob("ckpt-*.json"):
        json.loads(manifest.read_text())


# ------------------------------------------------------------------------ (4) another problem
@pytest.mark.parametrize("change, named", [
    (dict(reg_param=1e-2), "regParam: checkpoint 0.001, this run 0.01"),
    (dict(solver="gd"), "solver"),
    (dict(fit_intercept=False), "fitIntercept"),
    (dict(solver_options=dict(memory=5)), "solver_config.m: checkpoint 10, this run 5"),
])
def test_checkpoint_of_another_problem_is_refused(a9a, tmp_path, change, named):
    _interrupted(a9a, tmp_path)
    with pytest.raises(CheckpointError, match="different problem") as err:
        fit(a9a, "lbfgs", checkpoint_dir=tmp_path, **change)
    assert named in str(err.value)


def test_checkpoint_of_other_data_is_refused(a9a, tmp_path):
    _interrupted(a9a, tmp_path)
    X, y = a9a
    other = LocalEngine.from_arrays(X[:5000], y[:5000], num_partitions=4)
    with pytest.raises(CheckpointError, match="numRows: checkpoint 8000, this run 5000"):
        fit_linear_model(other, "logistic", **dict(CASES["lbfgs"], tol=1e-9), checkpoint_dir=tmp_path)


def test_same_data_repartitioned_is_the_same_problem(a9a, references, tmp_path):
    """Data-derived floats differ in the last bits with another partitioning: not another problem."""
    _interrupted(a9a, tmp_path)
    X, y = a9a
    engine = LocalEngine.from_arrays(X, y, num_partitions=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        resumed = fit_linear_model(engine, "logistic", **dict(CASES["lbfgs"], tol=1e-9), checkpoint_dir=tmp_path)
    assert resumed.result.nit == references["lbfgs"].result.nit
    np.testing.assert_allclose(resumed.coef_vector, references["lbfgs"].coef_vector, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------ (5) plain data
@pytest.mark.parametrize("case", ["lbfgs", "newton", "sgd", "local-sgd", "gd"])
def test_checkpoints_are_plain_json_and_npz_without_pickle(a9a, tmp_path, case):
    fit(a9a, case, checkpoint_dir=tmp_path, checkpoint_interval=3, max_iter=8)
    files = sorted(p.name for p in tmp_path.iterdir() if p.name != "ckpt.lock")   # the one-writer lock
    assert files and all(n.startswith("ckpt-") and n.endswith((".json", ".npz")) for n in files), files
    for manifest in tmp_path.glob("ckpt-*.json"):
        doc = json.loads(manifest.read_text())
        assert doc["payload"]["format"] == "sparkopt-checkpoint"
        with np.load(manifest.with_suffix(".npz"), allow_pickle=False) as npz:
            for name in npz.files:
                assert npz[name].dtype.kind in "biufc", name
            assert "state/x" in npz.files


# ------------------------------------------------------------------------ (6) atomic writes
def test_crash_during_a_checkpoint_write_keeps_the_previous_one(a9a, references, tmp_path, monkeypatch):
    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 7:            # 4th checkpoint's .npz; then 8th would be its manifest
            raise OSError(28, "No space left on device (injected)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="injected"):
        fit(a9a, "lbfgs", checkpoint_dir=tmp_path, checkpoint_interval=1)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]     # no temp file left
    store = CheckpointStore(tmp_path, {})
    assert [json.loads(m.read_text())["payload"]["iteration"] for m in store.manifests()] == [3, 2]
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)            # nothing corrupt
        resumed = fit(a9a, "lbfgs", checkpoint_dir=tmp_path, checkpoint_interval=1, callback=seen.append)
    assert seen[0]["iteration"] == 4
    assert_same_fit(resumed, references["lbfgs"])


def test_manifest_write_crash_leaves_an_orphan_that_is_ignored(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path, {"p": 1})
    store.save(1, {"a": 1}, {"x": np.arange(3.0)})
    real_replace = os.replace

    def fail_on_manifest(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("injected")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_manifest)
    with pytest.raises(OSError):
        store.save(2, {"a": 2}, {"x": np.arange(4.0)})
    monkeypatch.setattr(os, "replace", real_replace)
    payload, arrays = store.load()
    assert payload["iteration"] == 1 and payload["meta"] == {"a": 1}
    np.testing.assert_array_equal(arrays["x"], np.arange(3.0))
    for i in range(3, 6):
        store.save(i, {"a": i}, {"x": np.arange(float(i))})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000004.json", "ckpt-000004.npz",
                                                          "ckpt-000005.json", "ckpt-000005.npz"]


# ------------------------------------------------------------------------ (7) a real kill
KILLED_RUN = textwrap.dedent("""
    import sys, time
    import numpy as np
    from sklearn.datasets import load_svmlight_file
    from sparkopt.engine import LocalEngine
    from sparkopt.fit import fit_linear_model

    X, y = load_svmlight_file(sys.argv[1], n_features=123)
    n = int(sys.argv[3])
    engine = LocalEngine.from_arrays(X.tocsr()[:n], (y[:n] > 0).astype(float), num_partitions=4)
    # slow iterations so that the parent kills it mid-fit, not after the end
    fit_linear_model(engine, "logistic", solver="gd", reg_param=1e-3, max_iter=40, tol=1e-9,
                     checkpoint_dir=sys.argv[2], checkpoint_interval=2, callback=lambda row: time.sleep(0.2))
    print("finished")
""")


def test_sigkilled_fit_resumes_to_the_uninterrupted_result(a9a, references, tmp_path):
    ckpt = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(dataset("a9a")), str(ckpt), str(N_ROWS)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            manifests = list(ckpt.glob("ckpt-*.json")) if ckpt.exists() else []
            if any(json.loads(m.read_text())["payload"]["iteration"] >= 6 for m in manifests):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and b"finished" not in out
    seen = []
    resumed = fit(a9a, "gd", checkpoint_dir=ckpt, checkpoint_interval=2, callback=seen.append)
    assert 6 < seen[0]["iteration"] < 40
    assert_same_fit(resumed, references["gd"])


# ------------------------------------------------------------------------ the codec and the store
def test_memory_codec_round_trips_every_supported_type():
    gen = np.random.default_rng(42)
    gen.normal(size=3)
    memory = {"a": np.arange(6.0).reshape(2, 3), "pairs": [np.ones(3), np.zeros(3)], "empty": [],
              "floats": [1.5, np.float64(np.inf), 3], "mode": "lbfgs", "radius": np.float64(0.1), "n": np.int64(4),
              "none": None, "flag": True, "nan": float("nan"), "rng": gen, "ints": np.arange(3)}
    spec, arrays = encode_memory(memory)
    back = decode_memory(json.loads(json.dumps(spec)), arrays)
    assert back.keys() == memory.keys()
    np.testing.assert_array_equal(back["a"], memory["a"])
    assert [list(v) for v in back["pairs"]] == [[1, 1, 1], [0, 0, 0]] and back["empty"] == []
    assert back["floats"] == [1.5, np.inf, 3] and back["mode"] == "lbfgs" and back["radius"] == 0.1
    assert back["n"] == 4 and back["none"] is None and back["flag"] is True and np.isnan(back["nan"])
    assert back["ints"].dtype == memory["ints"].dtype
    assert back["rng"].normal() == gen.normal()          # the generator continues where it was


@pytest.mark.parametrize("value, named", [
    ({"k": 1}, "state.memory['bad'] has unsupported type dict"),
    ([np.ones(2), np.ones(3)], "different shapes"),
    (np.array(["a"], dtype=object), "dtype object"),
    ([object()], "list holding a object"),
])
def test_unsupported_memory_is_refused_by_name(value, named):
    with pytest.raises(CheckpointError, match=named.replace("[", r"\[").replace("]", r"\]")):
        encode_memory({"bad": value})


def test_newton_fallback_state_round_trips(tmp_path):
    """Newton switched to L-BFGS (memory: mode string + pair lists) resumes identically."""
    A = np.array([[1.0, 2.0], [2.0, 4.0]])         # singular: Newton cannot factor, falls back

    def objective():
        return CountingObjective(lambda x: float(np.sum(np.logaddexp(0, A @ x - 1)) + 0.5 * x @ x * 1e-3),
                                 lambda x: A.T @ (1 / (1 + np.exp(-(A @ x - 1)))) + 1e-3 * x, 2,
                                 hess=lambda x: np.full((2, 2), np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = minimize(objective(), method="newton", tol=1e-10, max_iter=30)
        minimize(objective(), method="newton", tol=1e-10, max_iter=4, checkpoint_dir=tmp_path, checkpoint_interval=1)
        resumed = minimize(objective(), method="newton", tol=1e-10, max_iter=30, checkpoint_dir=tmp_path)
    assert any("fallback" in row for row in ref.history)
    np.testing.assert_array_equal(resumed.x, ref.x)
    assert resumed.nit == ref.nit and resumed.passes == ref.passes


# ------------------------------------------------------------------------ parameters
@pytest.mark.parametrize("interval", [0, -1, 1.5, True])
def test_bad_checkpoint_interval_is_rejected_by_name(a9a, tmp_path, interval):
    with pytest.raises(InputError, match="checkpointInterval"):
        fit_linear_model(engine_of(a9a), "logistic", checkpoint_dir=tmp_path, checkpoint_interval=interval)
    objective = CountingObjective(lambda x: float(x @ x), lambda x: 2 * x, 2)
    with pytest.raises(ValueError, match="checkpointInterval"):
        minimize(objective, checkpoint_dir=tmp_path, checkpoint_interval=interval)


def test_bad_checkpoint_dir_is_rejected_by_name(a9a, tmp_path):
    with pytest.raises(InputError, match="checkpointDir"):
        fit_linear_model(engine_of(a9a), "logistic", checkpoint_dir=3)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match="checkpointDir .* cannot be created"):
        fit_linear_model(engine_of(a9a), "logistic", checkpoint_dir=blocker / "sub")


def test_estimator_checkpoint_params_without_spark():
    from sparkopt.ml import LinearRegression, LinearSVC, LogisticRegression, PoissonRegression

    for cls in (LogisticRegression, LinearSVC, LinearRegression, PoissonRegression):
        est = cls()
        assert est.getCheckpointInterval() == 10 and est.getCheckpointDir() is None
        assert est._checkpoint_kwargs() == {}
        est = cls(checkpointDir="/ckpt", checkpointInterval=3)
        assert est._checkpoint_kwargs() == {"checkpoint_dir": "/ckpt", "checkpoint_interval": 3}
        assert est._checkpoint_kwargs("fit-2")["checkpoint_dir"] == os.path.join("/ckpt", "fit-2")
        assert est.setCheckpointInterval(-1)._checkpoint_kwargs() == {}         # pyspark's "disabled"
        for bad in (dict(checkpointInterval=0), dict(checkpointInterval=-5), dict(checkpointDir="")):
            with pytest.raises(InputError, match=f"param {next(iter(bad))} must be"):
                cls(**bad)
        with pytest.raises(InputError, match="checkpointInterval"):
            cls().setCheckpointInterval(0)


# ------------------------------------------------------------------------ (8) hostile directories
def _resign(manifest: Path, edit) -> None:
    """Apply edit(payload) and write the manifest back with a valid checksum (the attacker's
    best case: the file passes its integrity check)."""
    import hashlib

    doc = json.loads(manifest.read_text())
    edit(doc["payload"])
    doc["sha256"] = hashlib.sha256(json.dumps(doc["payload"], sort_keys=True).encode()).hexdigest()
    manifest.write_text(json.dumps(doc))


def _arrays_named(name):
    def edit(payload):
        payload["arrays"]["file"] = name
    return edit


@pytest.mark.parametrize("target", ["../secret.npz", "ABSOLUTE", "ckpt-000001.npz"])
def test_a_manifest_cannot_point_outside_its_own_arrays_file(a9a, references, tmp_path, target):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    secret = tmp_path / "secret.npz"
    secret.write_bytes(b"x" * 12345)
    older, newest = _interrupted(a9a, directory)
    _resign(newest, _arrays_named(str(secret) if target == "ABSOLUTE" else target))
    seen = []
    with pytest.warns(CheckpointWarning, match=newest.name) as caught:
        resumed = fit(a9a, "lbfgs", checkpoint_dir=directory, checkpoint_interval=1, callback=seen.append)
    assert seen[0]["iteration"] == 6 and not any("12345" in str(w.message) for w in caught)
    assert_same_fit(resumed, references["lbfgs"])


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dev-zero", "oversized-size"])
def test_special_files_are_never_read(a9a, references, tmp_path, kind):
    import threading

    older, newest = _interrupted(a9a, tmp_path)
    if kind == "fifo":
        os.mkfifo(tmp_path / "ckpt-000099.json")
    elif kind == "symlink-to-dev-zero":
        (tmp_path / "ckpt-000099.json").symlink_to("/dev/zero")
    else:
        _resign(newest, lambda payload: payload["arrays"].update(size=1 << 40))
    out = {}
    worker = threading.Thread(target=lambda: out.update(fit=fit(a9a, "lbfgs", checkpoint_dir=tmp_path,
                                                              checkpoint_interval=1)), daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        worker.start()
        worker.join(120)
    assert not worker.is_alive(), "the fit blocked on a special file"
    assert_same_fit(out["fit"], references["lbfgs"])


def test_an_unknown_bit_generator_is_refused_not_called(a9a, tmp_path):
    store = CheckpointStore(tmp_path, {"p": 1})
    spec, arrays = encode_memory({"rng": np.random.default_rng(0)})
    spec["rng"]["state"]["bit_generator"] = "seed"         # np.random.seed would reseed the global RNG
    before = np.random.get_state()[1].copy()
    with pytest.raises(CheckpointError, match="bit generator 'seed'"):
        decode_memory(spec, arrays)
    assert np.array_equal(np.random.get_state()[1], before)
    assert store.load() is None


def test_wrong_shapes_in_a_checksummed_manifest_fall_back(a9a, references, tmp_path):
    older, newest = _interrupted(a9a, tmp_path)
    npz = newest.with_suffix(".npz")
    with np.load(npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["state/x"] = np.zeros(3)
    import hashlib
    import io as _io

    buffer = _io.BytesIO()
    np.savez(buffer, **arrays)
    blob = buffer.getvalue()
    npz.write_bytes(blob)
    _resign(newest, lambda payload: payload["arrays"].update(size=len(blob), sha256=hashlib.sha256(blob).hexdigest()))
    seen = []
    with pytest.warns(CheckpointWarning, match="shape"):
        resumed = fit(a9a, "lbfgs", checkpoint_dir=tmp_path, checkpoint_interval=1, callback=seen.append)
    assert seen[0]["iteration"] == 6
    assert_same_fit(resumed, references["lbfgs"])


def test_a_second_writer_is_refused_threads_and_processes(a9a, tmp_path):
    import threading

    started, release = threading.Event(), threading.Event()

    def hold(row):
        started.set()
        release.wait(60)

    first = threading.Thread(target=lambda: fit(a9a, "lbfgs", checkpoint_dir=tmp_path, max_iter=2, callback=hold),
                             daemon=True)
    first.start()
    assert started.wait(60)
    try:
        with pytest.raises(CheckpointError, match="in use by another running fit"):
            fit(a9a, "lbfgs", checkpoint_dir=tmp_path, max_iter=2)
    finally:
        release.set()
        first.join(60)
    # another process holding the directory's lock
    code = textwrap.dedent(f"""
        import sys, time
        from sparkopt.solvers.checkpoint import CheckpointStore
        store = CheckpointStore({str(tmp_path)!r}, {{}}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError, match="in use"):
            fit(a9a, "lbfgs", checkpoint_dir=tmp_path, max_iter=2)
    finally:
        holder.kill()
        holder.wait(10)
    # the lock dies with its holder: the directory is usable again
    assert fit(a9a, "lbfgs", checkpoint_dir=tmp_path, max_iter=2).result.nit >= 1
