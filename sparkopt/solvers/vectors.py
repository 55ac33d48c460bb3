"""Vector programs over shards: the ops a :class:`~sparkopt.solvers.objective.DistributedVectors`
objective runs where its vectors live, and an in-memory implementation of that capability.

numpy only; never imports pyspark or the engines. A shard is a dict ``name -> ndarray`` (one
contiguous range of the coordinates) plus that range's L1 weights (None without an L1 term).
:func:`apply_op` runs one op on one shard and returns its *partial* value (or None);
:func:`reduce_partials` combines the shards' partials in shard order. Every engine that holds
vectors runs these same kernels (the in-memory :class:`ShardedArrays`, the Spark tasks of the
sharded engine), so the same program gives the same numbers wherever it runs, up to the order of
the shard sums.

The ops (``out`` and the other names are vector names; ``t``, ``c`` floats)::

    ("set", out, array)              out = array (the shard's slice of it; small problems, tests)
    ("copy", out, src)               out = src
    ("delete", name, ...)            forget the names
    ("combine", out, [(c, v), ...])  out = c_0 v_0 + c_1 v_1 + ... (added in the order given)
    ("axpy", out, x, t, d)           out = x + t d
    ("sub", out, a, b)               out = a - b
    ("dots", [(a, b), ...])       -> [a . b, ...]                           (sums)
    ("norms", v)                  -> (sum |v|, max |v|, all finite)          (sum, max, and)
    ("l1", x)                     -> sum_j l1_j |x_j|                        (sum)
    ("pseudo", out, g, x)            out = OWL-QN's pseudo-gradient of smooth + l1 at x
    ("descent", d, pg)               d_j = 0 where d_j pg_j >= 0 (OWL-QN's sign projection)
    ("orthant", out, x, pg)          out = sign(x), or -sign(pg) where x == 0
    ("project", out, x, t, d, o)     out = x + t d, zeroed where its sign leaves the orthant o

``("loss_grad", x, g)`` reads the data and is the objective's, not a kernel's.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .result import pseudo_gradient

__all__ = ["apply_op", "reduce_partials", "run_program", "VECTOR_OPS", "shard_bounds", "ShardedArrays",
           "save_vectors", "load_vectors"]

#: ops that return a value, and how their partials combine
_REDUCERS = {"dots": "sums", "norms": "norms", "l1": "sum"}
VECTOR_OPS = ("set", "copy", "delete", "combine", "axpy", "sub", "dots", "norms", "l1", "pseudo", "descent",
              "orthant", "project")


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ranges covering 0..n, sizes differing by at most one (the first
    ``n % shards`` one longer)."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    base, extra = divmod(n, shards)
    out, lo = [], 0
    for s in range(shards):
        hi = lo + base + (1 if s < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def apply_op(store: dict, op: tuple, l1: Optional[np.ndarray], lo: int = 0, hi: Optional[int] = None) -> Any:
    """Run one op on one shard (``store``; the shard covers coordinates lo..hi of the whole
    vector, which "set" needs); the shard's partial value for ops that return one, else None."""
    kind = op[0]
    if kind == "set":
        _, out, array = op
        store[out] = np.array(np.asarray(array, dtype=float)[lo:hi], copy=True)
    elif kind == "copy":
        store[op[1]] = store[op[2]].copy()
    elif kind == "delete":
        for name in op[1:]:
            store.pop(name, None)
    elif kind == "combine":
        _, out, terms = op
        acc = None
        for c, name in terms:
            v = float(c) * store[name]
            acc = v if acc is None else acc.__iadd__(v)
        if acc is None:
            raise ValueError("combine needs at least one term")
        store[out] = acc
    elif kind == "axpy":
        _, out, x, t, d = op
        store[out] = store[x] + float(t) * store[d]
    elif kind == "sub":
        _, out, a, b = op
        store[out] = store[a] - store[b]
    elif kind == "dots":
        return [float(store[a] @ store[b]) for a, b in op[1]]
    elif kind == "norms":
        v = store[op[1]]
        return (float(np.abs(v).sum()), float(np.max(np.abs(v), initial=0.0)), bool(np.all(np.isfinite(v))))
    elif kind == "l1":
        return 0.0 if l1 is None else float(l1 @ np.abs(store[op[1]]))
    elif kind == "pseudo":
        _, out, g, x = op
        store[out] = pseudo_gradient(store[g], store[x], l1)
    elif kind == "descent":
        _, d, pg = op
        store[d] = np.where(store[d] * store[pg] < 0, store[d], 0.0)
    elif kind == "orthant":
        _, out, x, pg = op
        xs = store[x]
        store[out] = np.where(xs != 0, np.sign(xs), -np.sign(store[pg]))
    elif kind == "project":
        _, out, x, t, d, o = op
        xt = store[x] + float(t) * store[d]
        store[out] = np.where(np.sign(xt) == store[o], xt, 0.0)
    else:
        raise ValueError(f"unknown vector op {kind!r}; known: {VECTOR_OPS}")
    return None


def returns_value(op: tuple) -> bool:
    return op[0] in _REDUCERS


def reduce_partials(op: tuple, partials: list) -> Any:
    """The whole vector's value of ``op`` from its shards' partials (in shard order)."""
    how = _REDUCERS[op[0]]
    if how == "sum":
        return float(sum(partials))
    if how == "sums":
        return [float(sum(p[i] for p in partials)) for i in range(len(op[1]))]
    # norms: (sum |v|, max |v|, finite)
    return (float(sum(p[0] for p in partials)), float(max((p[1] for p in partials), default=0.0)),
            all(p[2] for p in partials))


def run_program(shards: list, program: list, l1_parts: list, bounds: list,
                loss_grad: Callable[[str, str], float]) -> list:
    """Run ``program`` on in-memory ``shards`` (a list of stores); ``loss_grad(x, g)`` serves the
    data op. Returns the values of the ops that yield one."""
    out = []
    for op in program:
        if op[0] == "loss_grad":
            out.append(loss_grad(op[1], op[2]))
            continue
        partials = [apply_op(store, op, l1, lo, hi) for store, l1, (lo, hi) in zip(shards, l1_parts, bounds)]
        if returns_value(op):
            out.append(reduce_partials(op, partials))
    return out


class ShardedArrays:
    """The :class:`~sparkopt.solvers.objective.DistributedVectors` capability over an ordinary
    in-memory :class:`~sparkopt.solvers.objective.Objective`: the named vectors are numpy arrays
    split into ``shards`` coordinate ranges (uneven when n_params does not divide), reduced in
    shard order exactly as the sharded engine's tasks do. For solver tests without Spark and for
    problems that fit in memory. ``start`` is the starting point (default zeros)."""

    def __init__(self, objective: Any, shards: int = 1, start: Optional[np.ndarray] = None) -> None:
        self.objective = objective
        self.n_params = int(objective.n_params)
        self.bounds = shard_bounds(self.n_params, shards)
        self.shards: list[dict] = [{} for _ in self.bounds]
        l1 = objective.l1_weights
        self.has_l1 = l1 is not None and bool(np.any(np.asarray(l1) > 0))
        self.l1_parts = [None if not self.has_l1 else np.asarray(l1, dtype=float)[lo:hi] for lo, hi in self.bounds]
        self.smooth = bool(getattr(objective, "smooth", True))
        self._start = np.zeros(self.n_params) if start is None else np.asarray(start, dtype=float)

    @property
    def passes(self) -> float:
        return self.objective.passes

    @property
    def evaluations(self) -> int:
        return self.objective.evaluations

    def _loss_grad(self, x: str, g: str) -> float:
        full = np.concatenate([store[x] for store in self.shards])
        f, grad = self.objective.loss_grad(full)
        grad = np.asarray(grad, dtype=float)
        for store, (lo, hi) in zip(self.shards, self.bounds):
            store[g] = grad[lo:hi].copy()
        return float(f)

    def vec_run(self, program: list) -> list:
        return run_program(self.shards, program, self.l1_parts, self.bounds, self._loss_grad)

    def vec_start(self, name: str) -> None:
        self.vec_run([("set", name, self._start)])

    def vec_gather(self, name: str) -> np.ndarray:
        return np.concatenate([store[name] for store in self.shards])

    def vector_fingerprint(self) -> dict:
        return {"n_params": self.n_params, "shards": [list(b) for b in self.bounds]}

    def vec_save(self, store: Any, iteration: int, names: list, state: dict) -> None:
        from .checkpoint import write_shard

        def write(seq: int, names: list) -> dict:
            return {rank: write_shard(store.directory, seq, rank, {n: shard[n] for n in names})
                    for rank, shard in enumerate(self.shards)}

        save_vectors(store, iteration, names, state, self.vector_fingerprint(), write)

    def vec_load(self, store: Any) -> Optional[dict]:
        from .checkpoint import read_shard

        def read(seq: int, records: dict, names: list) -> None:
            loaded = [read_shard(store.directory, seq, rank, records.get(str(rank)))
                      for rank in range(len(self.shards))]
            for arrays, (lo, hi) in zip(loaded, self.bounds):
                if set(arrays) != set(names) or any(a.shape != (hi - lo,) for a in arrays.values()):
                    raise ValueError("a shard file holds other vectors or shapes than its manifest names")
            for shard, arrays in zip(self.shards, loaded):
                shard.clear()
                shard.update(arrays)

        return load_vectors(store, self.vector_fingerprint(), read)


# ----------------------------------------------------------------------------- checkpoints
def save_vectors(store: Any, iteration: int, names: list, state: dict, layout: dict,
                 write_shards: Callable[[int, list], dict]) -> None:
    """One checkpoint of a vector-free run: ``write_shards(seq, names)`` has every holder write
    its shard of the named vectors (sparkopt.solvers.checkpoint.write_shard) and returns their
    records by rank; then the driver's manifest (the solver's scalars ``state``, the names, the
    shard ``layout``) commits them."""
    seq = store.next_seq()
    records = write_shards(seq, list(names))
    store.save(iteration, {"vector_free": state, "names": list(names), "layout": layout}, {},
               shards=records, seq=seq)


def load_vectors(store: Any, layout: dict, read_shards: Callable[[int, dict, list], None]) -> Optional[dict]:
    """The solver state of the newest usable checkpoint in ``store`` (None: none), after
    ``read_shards(seq, records, names)`` has every holder load (and check) its shard. A layout
    other than ``layout`` (another number of shards or other ranges) makes it unusable: the
    shards would not line up (rerun with the same number of tasks, or start over)."""
    from .checkpoint import fingerprint_differences

    def decode(payload: dict, arrays: dict) -> dict:
        meta = payload["meta"]
        diffs = fingerprint_differences(meta["layout"], layout)
        if diffs:
            raise ValueError("its shards are laid out for another number of tasks: " + "; ".join(diffs))
        read_shards(int(payload["seq"]), payload["shards"], list(meta["names"]))
        return meta["vector_free"]

    return store.load(decode=decode)
