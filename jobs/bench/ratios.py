"""Per-pass and ingest ratios: sparkopt's ingest against a bare mapInArrow over the same columns,
one loss+gradient pass on the tree and resident engines against the same pass in single-process
numpy, and the empty pass that is each engine's per-iteration overhead."""
from __future__ import annotations

import statistics
import sys
from typing import Optional

import numpy as np

from _common import ship_by_value
from bench.cases import Case
from bench.config import DRIVER_THREADS, LOSS, log, now
from bench.data import DriverData
from bench.measure import timed


def _count_rows(batches):
    """mapInArrow function of the bare Arrow baseline: touch every batch, emit its row count."""
    import pyarrow as pa

    rows = 0
    for batch in batches:
        rows += batch.num_rows
    yield pa.RecordBatch.from_arrays([pa.array([rows], type=pa.int64())], names=["rows"])


def _noop_block(block, payload) -> float:
    """A block function that computes nothing (isolates the cost of a pass itself)."""
    return 0.0


def bare_arrow_pass(df) -> int:
    """The same columns as sparkopt's ingest selects, through mapInArrow, only counted."""
    selected = df.selectExpr("features", "CAST(label AS DOUBLE) AS label")
    return sum(r["rows"] for r in selected.mapInArrow(_count_rows, "rows long").collect())


def numpy_loss_grad(task: str, X, y: np.ndarray, coef: np.ndarray):
    """One loss + gradient pass in plain numpy (what sparkopt computes per block)."""
    from scipy.special import expit, logsumexp

    d = X.shape[1]
    if task == "multinomial":
        W = coef.reshape(-1, d + 1)
        M = np.asarray(X @ W[:, :d].T) + W[:, d]
        lse = logsumexp(M, axis=1)
        labels = y.astype(np.int64)
        rows = np.arange(len(y))
        f = float(np.sum(lse - M[rows, labels]))
        P = np.exp(M - lse[:, None])
        P[rows, labels] -= 1.0
        return f, np.asarray(X.T @ P), P.sum(axis=0)
    m = np.asarray(X @ coef[:d]).ravel() + coef[d]
    if task == "logistic":
        f, r = np.sum(np.logaddexp(0.0, m) - y * m), expit(m) - y
    elif task == "linear":
        r = m - y
        f = 0.5 * float(r @ r)
    else:
        e = np.exp(m)
        f, r = np.sum(e - y * m), e - y
    return float(f), np.asarray(X.T @ r), float(r.sum())



def measure_ratios(case: Case, df, data: Optional[DriverData], repeats: int) -> dict:
    """ingest vs bare mapInArrow; one loss+gradient pass on the tree and resident engines vs numpy
    on the driver; the resident engine's empty pass is its per-iteration overhead."""
    from threadpoolctl import threadpool_limits

    from sparkopt.engine import ResidentEngine, TreeEngine, ingest
    from sparkopt.fit import build_objective

    ship_by_value(sys.modules[__name__])     # _count_rows and _noop_block run in the tasks
    repeats = max(repeats, 3)
    bare_arrow_pass(df)                                           # warm-up (Python workers, JIT)
    bare = timed(lambda: bare_arrow_pass(df), repeats)
    ingest_times, engine = [], None
    for i in range(repeats):
        started = now()
        rdd, stats = ingest(df)
        ingest_times.append(now() - started)
        if i < repeats - 1:
            rdd.unpersist()
    engine = TreeEngine(rdd, stats)
    try:
        objective = build_objective(engine, LOSS[case.task], reg_param=case.reg_param,
                                    standardization=case.standardization)[0]
        z = np.full(objective.n_params, 0.01)
        objective.loss_grad(z)                                    # warm-up
        tree = timed(lambda: objective.loss_grad(z), repeats)
        # the same pass with nothing computed: what reading the cached blocks and running a job costs
        noop = timed(lambda: engine.map_sum(_noop_block, None), repeats)
        coef = objective.coordinates.to_coef(z)
        resident = ResidentEngine(rdd, stats)
        resident_objective = build_objective(resident, LOSS[case.task], reg_param=case.reg_param,
                                             standardization=case.standardization)[0]
        with resident.session():
            started = now()
            resident_objective.loss_grad(z)                       # starts the session: loads the blocks
            resident_start = now() - started
            resident_pass = timed(lambda: resident_objective.loss_grad(z), 5 * repeats)
            resident_noop = timed(lambda: resident.map_sum(_noop_block, None), 5 * repeats)
    finally:
        engine.unpersist()
    out = {"case": case.name, "n": int(stats.n_rows), "d": int(stats.n_features), "nnz": int(stats.nnz),
           "sparse": bool(stats.is_sparse), "ingest_s": statistics.median(ingest_times), "ingest_s_all": ingest_times,
           "bare_arrow_s": statistics.median(bare), "bare_arrow_s_all": bare,
           "pass_s": statistics.median(tree), "pass_s_all": tree, "noop_pass_s": statistics.median(noop),
           "noop_pass_s_all": noop, "numpy_pass_s": None, "numpy_pass_s_all": None,
           "numpy_threads": DRIVER_THREADS, "resident_start_s": resident_start,
           "resident_pass_s": statistics.median(resident_pass), "resident_pass_s_all": resident_pass,
           "resident_noop_pass_s": statistics.median(resident_noop), "resident_noop_pass_s_all": resident_noop}
    out["ingest_ratio"] = out["ingest_s"] / out["bare_arrow_s"]
    if data is not None:
        with threadpool_limits(limits=DRIVER_THREADS):
            numpy_loss_grad(case.task, data.X, data.y, coef)
            local = timed(lambda: numpy_loss_grad(case.task, data.X, data.y, coef), repeats)
        out.update(numpy_pass_s=statistics.median(local), numpy_pass_s_all=local)
    out["pass_ratio"] = out["pass_s"] / out["numpy_pass_s"] if out["numpy_pass_s"] else None
    out["resident_pass_ratio"] = out["resident_pass_s"] / out["numpy_pass_s"] if out["numpy_pass_s"] else None
    log(f"{case.name}: ingest {out['ingest_s']:.2f}s vs bare Arrow {out['bare_arrow_s']:.2f}s; pass tree "
        f"{out['pass_s']:.3f}s, resident {out['resident_pass_s']:.4f}s"
        + (f" vs numpy {out['numpy_pass_s']:.4f}s" if out["numpy_pass_s"] else ""))
    return out


