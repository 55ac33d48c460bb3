"""Many fits over one engine with their passes gathered: each pass over the data serves the next
request of every fit still running (the k folds of a cross-validation, the configurations of a
successive-halving rung).

numpy only; never imports pyspark. A *program* is a function that runs sparkopt's ordinary
machinery (``regularization_path``, ``fit_linear_model``, ``minimize``, any solver) on a
:class:`RowView` of the engine: the rows of one fold, of every other fold, or all rows. Solvers
do not take the same number of evaluations per step (a line search tries as many points as it
needs, Newton may fall back to L-BFGS, a path re-solves after a KKT violation), so programs are
not advanced step by step. Each runs in a thread of its own; its view's ``map_sum`` hands the
request (block function, payload, rows, columns, sampling) to the coordinator and waits. The
coordinator (the calling thread, the only one that touches the engine) waits until every running
program is waiting on a request or has finished, then makes ONE engine pass whose block function
(:class:`_Batch`) evaluates every waiting request on its own rows of each block, and hands each
program its sum. A pass thus evaluates whatever each still-running program asks next; the passes
of a run are the most any one program needs, not their sum.

Exactness: a request's block function sees the sub-block a separate engine holding only the
view's rows would give it (rows selected, then the request's columns and sampling; sampling
draws from the block's position as every engine does), and the engine adds the results in its
one (partition, block) order, so each program computes what it computes alone. Which requests
share a pass depends only on the programs (each waits for its answer before it asks again),
never on thread timing, so a run is reproducible bit for bit.

The common case gets one kernel: when several requests of a pass are loss-and-gradient
evaluations of the same pointwise block objective on whole rows (every L-BFGS, OWL-QN and line
search step of the folds), the block computes them together (``loss_grad_rows``: one ``X @ B``
for every fold's margins, one ``X.T @ R`` for every gradient) instead of copying each fold's rows
and reading X twice per fold; the sums then differ from a separate fit's by the rounding of the
other summation order (~1e-16 relative a pass; fits agree to ~1e-12). :data:`FUSE` False
evaluates every request on its own rows, bit for bit as alone.

The rows of a view are named by plain values (the payload of a pass carries them; the resident
engine's channel carries nothing else): ``None`` for every row, or ``(n_folds, seed, fold,
held_out, from_column)``: the rows whose fold id is (``held_out``) or is not ``fold``, the id
being :func:`fold_ids` of the seed and the block's position, or the block's own ``fold`` column
(a DataFrame's ``foldCol``) when ``from_column``. A view may also keep a fixed Bernoulli
``subsample = (fraction, seed)`` of those rows in every pass (successive halving's rows as the
resource): the same seed keeps the same rows, and a larger fraction keeps a superset of them.
"""
from __future__ import annotations

import contextlib
import pickle
import threading
from functools import partial
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..blocks import Block, sample_rng
from ..engine.fold import check_sampling
from ..engine.stats import DataStats
from ..errors import InputError
from ..linear_objective import _loss_grad
from .columns import SLICE_CACHE, EngineView, _OnColumns

__all__ = ["Lockstep", "RowView", "fold_ids", "block_fold_ids", "FOLD_SALT"]

#: keeps fold ids apart from the sampling seeds of the same block position
FOLD_SALT = 0x5F01D
#: keeps a view's fixed subsample apart from the passes' own sampling seeds
SUBSAMPLE_SALT = 0x5AB5
#: evaluate a pass's loss-and-gradient requests of one block objective together (module docstring)
FUSE = True


def fold_ids(seed: int, n_folds: int, index: tuple[int, int], n_rows: int) -> np.ndarray:
    """(n_rows,) fold ids in 0..n_folds-1 of the rows of block ``index = (partition, block)``."""
    p, j = index
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, FOLD_SALT, int(p), int(j)])
    return rng.integers(0, n_folds, n_rows)


def block_fold_ids(block: Block, index: tuple[int, int], n_folds: int, seed: int, from_column: bool) -> np.ndarray:
    """The fold id of every row of ``block``: its ``fold`` column (checked by
    sparkopt.tuning.cv before any fit) or drawn from ``seed`` and the block's position."""
    if from_column:
        if block.fold is None:
            raise InputError("the rows carry no fold column (foldCol) to cross-validate by")
        return block.fold.astype(np.int64)
    return fold_ids(seed, n_folds, index, block.n_rows)


def _row_index(block: Block, index, rows: Optional[tuple], cache: dict) -> Optional[np.ndarray]:
    """The indices of the rows of ``block`` a view names (None: every row; see the module docstring)."""
    if rows is None:
        return None
    n_folds, seed, fold, held_out, from_column = rows
    key = (n_folds, seed, from_column)
    ids = cache.get(key)
    if ids is None:
        ids = cache[key] = block_fold_ids(block, index, n_folds, seed, from_column)
    return np.flatnonzero((ids == fold) if held_out else (ids != fold))


def _fusable(fn) -> bool:
    """A loss-and-gradient request of a block objective that evaluates several at once."""
    return isinstance(fn, partial) and fn.func is _loss_grad and len(fn.args) == 1 and not fn.keywords \
        and hasattr(fn.args[0], "loss_grad_rows")


class _Batch:
    """The block function of a gathered pass: every request on its own rows of the block.

    ``fns`` are the distinct inner block functions; each payload entry is ``(function index,
    rows, subsample or None, columns or None, payload, fraction, seed)``. Returns one result per entry (a tuple,
    which the engines add element-wise)."""

    wants_index = True

    def __init__(self, fns: Sequence[Callable], fuse: bool = False):
        self.fns = tuple(fns)
        self.fn_wants_index = tuple(bool(getattr(fn, "wants_index", False)) for fn in self.fns)
        self.fused = tuple(fuse and _fusable(fn) for fn in self.fns)

    def __call__(self, block: Block, payload, index):
        ids: dict = {}
        out: list = [None] * len(payload)
        groups: dict[int, list[int]] = {}
        for i, (fn_index, _, subsample, columns, _, fraction, _) in enumerate(payload):
            if self.fused[fn_index] and subsample is None and columns is None and fraction is None:
                groups.setdefault(fn_index, []).append(i)
        for fn_index, members in groups.items():
            if len(members) < 2:
                continue
            bo = self.fns[fn_index].args[0]
            coefs = np.array([payload[i][4] for i in members])
            rows = [_row_index(block, index, payload[i][1], ids) for i in members]
            for i, result in zip(members, bo.loss_grad_rows(coefs, block, rows)):
                out[i] = result
        for i, (fn_index, rows, subsample, columns, value, fraction, seed) in enumerate(payload):
            if out[i] is not None:
                continue
            sub = block if columns is None else SLICE_CACHE.get(block, columns)
            picked = _row_index(sub, index, rows, ids)
            sub = sub if picked is None else sub.take(picked)
            if subsample is not None:
                sub = sub.sample(subsample[0], np.random.default_rng([subsample[1], SUBSAMPLE_SALT, *index]))
            if fraction is not None:
                sub = sub.sample(fraction, sample_rng(seed, *index))
            fn = self.fns[fn_index]
            out[i] = fn(sub, value, index) if self.fn_wants_index[fn_index] else fn(sub, value)
        return tuple(out)


def _identity(fn) -> Any:
    """What makes two block functions the same one (their pickle: the folds' objectives build
    equal functions as distinct objects); the object itself if it does not pickle."""
    try:
        return pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - a local function: compare by identity
        return ("id", id(fn))


def _gathered(engine, requests: list) -> list:
    """One engine pass evaluating every request ``(fn, payload, rows, subsample, fraction, seed)``."""
    fns, keys, entries = [], {}, []
    for fn, value, rows, subsample, fraction, seed in requests:
        columns = None
        if isinstance(fn, _OnColumns):            # slice the cached block, then select rows
            fn, columns = fn.fn, fn.columns
        key = _identity(fn)
        if key not in keys:
            keys[key] = len(fns)
            fns.append(fn)
        entries.append((keys[key], rows, subsample, columns, value, fraction, seed))
    result = engine.map_sum(_Batch(fns, FUSE), tuple(entries))
    return list(result)


class RowView(EngineView):
    """``parent`` seen through some of its rows (``rows`` and ``subsample``, see the module
    docstring), with those rows' statistics ``stats``. Inside a :meth:`Lockstep.run` program its passes are gathered
    with the other programs'; elsewhere each is a pass of its own. ``passes`` and
    ``evaluations`` count this view's own requests (what an engine holding only these rows would
    count); the parent's count the passes really made."""

    # this view's own counters (plain attributes in place of the parent's)
    passes = 0.0
    evaluations = 0

    def __init__(self, parent, stats: DataStats, rows: Optional[tuple], coordinator: Optional["Lockstep"] = None,
                 subsample: Optional[tuple[float, int]] = None):
        super().__init__(parent, stats)
        self.rows, self.coordinator, self.subsample = rows, coordinator, subsample

    def session(self):
        # the coordinator (or the caller) holds the engine's session
        return contextlib.nullcontext(self)

    def map_sum(self, fn, payload, *, fraction=None, seed=None):
        fraction, seed = check_sampling(fraction, seed)
        request = (fn, payload, self.rows, self.subsample, fraction, seed)
        coordinator = self.coordinator
        result = coordinator.ask(request) if coordinator is not None and coordinator.running() else \
            _gathered(self.parent, [request])[0]
        self.passes += 1.0 if fraction is None else float(fraction)
        self.evaluations += 1
        if result is None:
            raise RuntimeError("map_sum: every partition is empty; there is no data to sum over")
        return result


class _Aborted(Exception):
    """Raised in a program whose run was abandoned because another program failed."""


class Lockstep:
    """Runs programs whose passes over ``engine`` are gathered (see the module docstring).

    ``view(stats, rows)`` makes a :class:`RowView` bound to this coordinator; ``run(programs)``
    calls each program (no arguments) in a thread of its own and returns their results in order,
    or raises the first program's error (by position) after stopping the others. ``passes``:
    the engine passes ``run`` made; ``requests``: the requests they served."""

    def __init__(self, engine):
        self.engine = engine
        self.passes = 0
        self.requests = 0
        self._cond = threading.Condition()
        self._local = threading.local()
        self._active = False
        self._pending: dict[int, tuple] = {}
        self._answers: dict[int, tuple] = {}
        self._done: set[int] = set()
        self._abort = False

    def view(self, stats: DataStats, rows: Optional[tuple], subsample: Optional[tuple[float, int]] = None) -> RowView:
        return RowView(self.engine, stats, rows, self, subsample)

    def running(self) -> bool:
        """Whether the calling thread is one of this run's programs."""
        return self._active and getattr(self._local, "slot", None) is not None

    def ask(self, request: tuple) -> Any:
        slot = self._local.slot
        with self._cond:
            if self._abort:
                raise _Aborted()
            self._pending[slot] = request
            self._cond.notify_all()
            self._cond.wait_for(lambda: slot in self._answers or self._abort)
            if slot not in self._answers:
                self._pending.pop(slot, None)
                raise _Aborted()
            kind, value = self._answers.pop(slot)
        if kind == "error":
            raise value
        return value

    def run(self, programs: Sequence[Callable[[], Any]]) -> list:
        n = len(programs)
        results: list = [None] * n
        errors: dict[int, BaseException] = {}
        self._pending, self._answers, self._done, self._abort = {}, {}, set(), False

        def work(slot: int) -> None:
            self._local.slot = slot
            try:
                results[slot] = programs[slot]()
            except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
                errors[slot] = exc
                with self._cond:
                    self._abort = self._abort or not isinstance(exc, _Aborted)
            finally:
                with self._cond:
                    self._done.add(slot)
                    self._cond.notify_all()

        threads = [threading.Thread(target=work, args=(s,), name=f"sparkopt-lockstep-{s}", daemon=True)
                   for s in range(n)]
        self._active = True
        try:
            with self.engine.session():
                for t in threads:
                    t.start()
                while True:
                    with self._cond:
                        # after a failure no pass is made: the others end at their next request
                        self._cond.wait_for(lambda: len(self._done) == n or (
                            not self._abort and len(self._done) + len(self._pending) == n))
                        if len(self._done) == n:
                            break
                        slots = sorted(self._pending)
                        requests = [self._pending.pop(s) for s in slots]
                    try:
                        answers = [("ok", r) for r in _gathered(self.engine, requests)]
                    except BaseException as exc:  # noqa: BLE001 - each asking program raises it
                        answers = [("error", exc)] * len(slots)
                    self.passes += 1
                    self.requests += len(slots)
                    with self._cond:
                        self._answers.update(zip(slots, answers))
                        self._cond.notify_all()
        except BaseException:
            with self._cond:
                self._abort = True
                self._cond.notify_all()
            raise
        finally:
            for t in threads:
                if t.ident is not None:
                    t.join()
            self._active = False
        real = {s: e for s, e in errors.items() if not isinstance(e, _Aborted)}
        if real:
            raise real[min(real)]
        return results
