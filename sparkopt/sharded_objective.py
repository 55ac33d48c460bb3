"""A linear model's objective with its vectors sharded across the tasks that hold the data.

Joins a block objective, the solver coordinates and the penalty (as sparkopt.linear_objective
does) with an engine that runs *shard sessions* (sparkopt.engine.sharded, or a LocalEngine's
threads): :class:`ShardedLinearObjective` is the driver's side, a
:class:`~sparkopt.solvers.objective.DistributedVectors` objective that never forms an
n_params-long vector; :class:`ShardHandler` is the tasks' side, shipped in the task closure.

In a task of rank r (of n), every named vector is its range ``shard_bounds(n_z, n)[r]`` of the
solver coordinates. A ``loss_grad`` pass: ring all-gather of the iterate, coef = T z, the fold over
the task's own blocks (the same block function as every other engine), T^T of the partial
gradient, ring reduce-scatter (each task keeps the sum of its own range), the penalty's part on
the task's range, and the loss and penalty sums allreduced as scalars (the same on every task).
The tasks hold the gathered iterate and their partial gradient in full during a pass; only the
shards (x, g, the m correction pairs, ...) stay between passes.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from functools import partial
from typing import Any, Optional

import numpy as np

from .engine.resident import TaskError
from .linear_objective import Coordinates, _loss_grad
from .objectives.penalties import ElasticNet
from .solvers.checkpoint import approx_scalar, array_digest, read_shard, write_shard
from .solvers.vectors import apply_op, load_vectors, reduce_partials, returns_value, save_vectors, shard_bounds

__all__ = ["ShardedLinearObjective", "ShardHandler"]

logger = logging.getLogger("sparkopt")


class ShardHandler:
    """The task side of a sharded linear objective (see the module docstring). Picklable: it
    travels in the task closure with the block objective, the coordinate map (d-sized arrays) and
    the penalty's per-output scale; each task builds its own range of everything n_z-sized."""

    def __init__(self, block_objective: Any, coordinates: Coordinates, lam: float, alpha: float, l1_factor: float,
                 penalty_base: np.ndarray, start_entries: dict, weight_sum: float) -> None:
        self.block_objective = block_objective
        self.coordinates = coordinates
        self.lam, self.alpha, self.l1_factor = float(lam), float(alpha), float(l1_factor)
        self.penalty_base = np.asarray(penalty_base, dtype=float)
        self.start_entries = {int(k): float(v) for k, v in start_entries.items()}
        self.weight_sum = float(weight_sum)

    def setup(self, ctx: Any, config: dict) -> None:
        from .fit import penalty_scale_slice

        n_z = self.coordinates.n_z
        bounds = shard_bounds(n_z, ctx.size)
        lo, hi = bounds[ctx.rank]
        penalty = ElasticNet(self.lam, self.alpha, penalty_scale_slice(self.penalty_base, self.coordinates, lo, hi),
                             l1_factor=self.l1_factor)
        l1 = penalty.l1_weights() if penalty.has_l1 else None
        ctx.state.update(store={}, bounds=bounds, lo=lo, hi=hi, penalty=penalty, l1=l1, passes=0)

    # -- commands
    def handle(self, ctx: Any, command: tuple) -> Any:
        kind = command[0]
        st = ctx.state
        if kind == "program":
            out = []
            for op in command[1]:
                if op[0] == "loss_grad":
                    out.append(self._loss_grad(ctx, op[1], op[2]))
                else:
                    value = apply_op(st["store"], op, st["l1"], st["lo"], st["hi"])
                    if returns_value(op):
                        out.append(value)
            return out
        if kind == "start":
            coef = self.block_objective.initial_coef()
            for index, value in self.start_entries.items():
                coef[index] = value
            st["store"][command[1]] = self.coordinates.from_coef(coef)[st["lo"]:st["hi"]]
            return None
        if kind == "gather":
            return st["store"][command[1]]
        if kind == "save":
            _, directory, seq, names = command
            return write_shard(directory, seq, ctx.rank, {n: st["store"][n] for n in names})
        if kind == "load":
            _, directory, seq, records, names = command
            arrays = read_shard(directory, seq, ctx.rank, records.get(str(ctx.rank)))
            if set(arrays) != set(names) or any(a.shape != (st["hi"] - st["lo"],) for a in arrays.values()):
                raise ValueError("a shard file holds other vectors or shapes than its manifest names")
            st["store"] = {n: np.array(a, copy=True) for n, a in arrays.items()}
            return None
        if kind == "save_model":
            _, directory, x, centre_features = command
            return self._save_model(ctx, directory, x, bool(centre_features))
        raise ValueError(f"unknown sharded command {kind!r}")

    def _save_model(self, ctx: Any, directory: str, x: str, centre_features: bool) -> dict:
        """Write this task's range of the coefficients (coefficient layout, nonzeros only) as
        ``part-RRRRR.parquet`` (columns ``output``, ``feature``, ``value``) in ``directory``; the
        intercepts and the scale (summed over the tasks: an intercept's centring term spans every
        shard) come back to the driver, the same on every task. Multinomial models are centred as
        MLlib reports them (intercepts always; coefficients per feature without a penalty)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        st = ctx.state
        c, bo = self.coordinates, self.block_objective
        lo, hi = st["lo"], st["hi"]
        z = st["store"][x]
        na, K = len(c.active), c.n_outputs
        qz = na + int(c.fit_intercept)
        index = np.arange(lo, hi)
        inside = index < K * qz
        k, j, values = index[inside] // qz, index[inside] % qz, z[inside]
        is_feature = j < na
        output, feature = k[is_feature], c.active[j[is_feature]]
        beta = values[is_feature] * c.inv_scale[j[is_feature]]
        partial_c = np.zeros(K)
        if c.fit_intercept:
            np.add.at(partial_c, output, -c._shift()[j[is_feature]] * beta)
            np.add.at(partial_c, k[~is_feature], c.value_scale * values[~is_feature])
        sigma = 0.0
        if c.scale_index is not None and lo <= c.n_z - 1 < hi:
            sigma = c.value_scale * float(z[c.n_z - 1 - lo])
        totals = ctx.mesh.allreduce_scalars(np.concatenate([partial_c, [sigma]]))
        intercepts, sigma = totals[:K], float(totals[K])
        if bo.loss == "multinomial":
            if c.fit_intercept:
                intercepts = intercepts - intercepts.mean()
            if centre_features:
                sums = np.zeros(c.n_features)
                np.add.at(sums, feature, beta)
                sums = ctx.mesh.allreduce(sums, shard_bounds(c.n_features, ctx.size))
                beta = beta - sums[feature] / K
        keep = beta != 0
        table = pa.table({"output": pa.array(output[keep], pa.int32()), "feature": pa.array(feature[keep], pa.int32()),
                          "value": pa.array(beta[keep], pa.float64())})
        os.makedirs(directory, exist_ok=True)
        pq.write_table(table, os.path.join(directory, f"part-{ctx.rank:05d}.parquet"))
        return {"intercepts": intercepts, "scale": sigma, "rows": int(keep.sum())}

    def _loss_grad(self, ctx: Any, x: str, g: str) -> float:
        """F's smooth part at the named iterate (the same value on every task) and this task's
        range of its gradient into ``g``."""
        st = ctx.state
        bounds, lo, hi = st["bounds"], st["lo"], st["hi"]
        coef = self.coordinates.to_coef(ctx.mesh.all_gather(st["store"][x], bounds))
        feasible = bool(self.block_objective.feasible(coef))
        if feasible:
            out = ctx.fold(partial(_loss_grad, self.block_objective), coef)
            f_data, g_coef = (0.0, np.zeros_like(coef)) if out is None else out
            del coef, out
            gz = self.coordinates.to_z_grad(g_coef)
            del g_coef
            gz /= self.weight_sum
        else:
            f_data, gz = np.inf, np.full(self.coordinates.n_z, np.nan)
        mine = ctx.mesh.reduce_scatter(gz, bounds, overwrite=True)
        del gz
        penalty = st["penalty"]
        xs = st["store"][x]
        f_data, f_pen = ctx.mesh.allreduce_scalars(np.array([f_data, penalty.smooth_value(xs)]))
        st["store"][g] = mine + penalty.smooth_grad(xs)
        st["passes"] += 1
        return float(f_data / self.weight_sum + f_pen)


class ShardedLinearObjective:
    """The driver's side: a :class:`~sparkopt.solvers.objective.DistributedVectors` objective over
    an engine with shard sessions (``engine.open_shards``: the sharded engine; a LocalEngine runs
    the same handler in threads). A session opens on the first program and lasts until
    :meth:`close`; :meth:`restart` drops a lost one (the next program opens another, whose shards
    a checkpoint must restore: sparkopt.fit resumes the solver from it)."""

    def __init__(self, engine: Any, block_objective: Any, coordinates: Coordinates, lam: float, alpha: float,
                 l1_factor: float, penalty_base: np.ndarray, start_entries: dict, fingerprint: dict) -> None:
        self.engine = engine
        self.block_objective = block_objective
        self.coordinates = coordinates
        self.n_params = coordinates.n_z
        self.smooth = bool(block_objective.smooth)
        self.has_hessian = False
        self.has_l1 = bool(lam * alpha > 0 and np.any(np.asarray(penalty_base) > 0))
        self.weight_sum = float(engine.weight_sum)
        self.handler = ShardHandler(block_objective, coordinates, lam, alpha, l1_factor, penalty_base, start_entries,
                                    self.weight_sum)
        self._fingerprint = fingerprint
        self._session = None
        self._passes = 0
        self._evaluations = 0
        self.sessions = 0
        self.pass_bytes: list[int] = []        # bytes between tasks of each pass (all tasks)

    # -- counters
    @property
    def passes(self) -> float:
        return float(self._passes)

    @property
    def evaluations(self) -> int:
        return self._evaluations

    @property
    def bytes_between_tasks(self) -> int:
        return 0 if self._session is None else self._session.bytes_between_tasks

    # -- the session
    def _open(self):
        if self._session is None:
            if hasattr(self.engine, "open_shards"):
                self._session = self.engine.open_shards(self.handler, {})
            else:
                from .engine.sharded import open_local_shards

                self._session = open_local_shards(self.engine, self.handler, {})
            self.sessions += 1
            logger.info("sparkopt sharded objective: %d coordinates in %d shards", self.n_params,
                        self._session.size)
        return self._session

    @property
    def size(self) -> int:
        return self._open().size

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def restart(self) -> None:
        """Forget a lost session (its shards are gone with it)."""
        session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: BLE001 - already lost
                pass

    def _call(self, command: tuple) -> list:
        return self._open().call(command)

    # -- DistributedVectors
    def vec_run(self, program: list) -> list:
        before = self.bytes_between_tasks
        replies = self._call(("program", list(program)))
        out, slot = [], 0
        for op in program:
            if op[0] == "loss_grad":
                values = [reply[slot] for reply in replies]
                out.append(values[0])
                self._passes += 1
                self._evaluations += 1
                slot += 1
            elif returns_value(op):
                out.append(reduce_partials(op, [reply[slot] for reply in replies]))
                slot += 1
        if any(op[0] == "loss_grad" for op in program):
            self.pass_bytes.append(self.bytes_between_tasks - before)
        return out

    def vec_start(self, name: str) -> None:
        self._call(("start", name))

    def vec_gather(self, name: str) -> np.ndarray:
        return np.concatenate([np.asarray(part, dtype=float) for part in self._call(("gather", name))])

    def vector_fingerprint(self) -> dict:
        bounds = shard_bounds(self.n_params, self.size)
        return {"n_params": self.n_params, "shards": [list(b) for b in bounds]}

    def vec_save(self, store: Any, iteration: int, names: list, state: dict) -> None:
        directory = os.fspath(store.directory)

        def write(seq: int, names: list) -> dict:
            return dict(enumerate(self._call(("save", directory, int(seq), list(names)))))

        save_vectors(store, iteration, names, state, self.vector_fingerprint(), write)

    def vec_load(self, store: Any) -> Optional[dict]:
        directory = os.fspath(store.directory)
        size = self.size

        def read(seq: int, records: dict, names: list) -> None:
            if set(records) != {str(r) for r in range(size)}:
                raise ValueError(f"the manifest lists shards {sorted(records)}, this session has {size}")
            # every task loads its own shard and checks it against the manifest's record of it
            try:
                self._call(("load", directory, int(seq), dict(records), list(names)))
            except TaskError as exc:
                raise ValueError(str(exc)) from None

        return load_vectors(store, self.vector_fingerprint(), read)

    def fingerprint(self) -> dict:
        return dict(self._fingerprint)

    def save_model(self, directory: str, x: str, centre_features: bool) -> dict:
        """Every task writes its range of the coefficients to ``directory`` (storage every task
        reaches); the intercepts and scale, which the driver keeps (K + 1 values)."""
        replies = self._call(("save_model", os.fspath(directory), x, bool(centre_features)))
        return {"intercepts": np.asarray(replies[0]["intercepts"], dtype=float), "scale": replies[0]["scale"],
                "rows": int(sum(r["rows"] for r in replies)), "parts": len(replies)}


def recovery_directory(engine: Any, checkpoint_dir: Any) -> tuple[Optional[str], bool, Optional[int]]:
    """Where a sharded fit keeps the checkpoints a lost task resumes from, whether it is a
    temporary directory (removed after the fit), and how often they are written (None: the fit's
    checkpointInterval): the fit's ``checkpoint_dir``; else ``spark.sparkopt.sharded.recoveryDir``
    (storage every task reaches); else, when the tasks share the driver's filesystem (a local
    master, a LocalEngine), a temporary directory; else None (a lost task restarts the fit from
    its start). ``spark.sparkopt.sharded.recoveryInterval`` (default 1: every iteration; 0: no
    recovery checkpoints) sets the interval of the last two."""
    if checkpoint_dir is not None:
        return os.fspath(checkpoint_dir), False, None
    rdd = getattr(engine, "_rdd", None)
    configured, interval = None, 1
    if rdd is not None:
        conf = rdd.context.getConf()
        configured = conf.get("spark.sparkopt.sharded.recoveryDir", None)
        raw = conf.get("spark.sparkopt.sharded.recoveryInterval", "1")
        try:
            interval = int(raw)
        except ValueError:
            interval = -1
        if interval < 0:
            from .errors import InputError

            raise InputError(f"spark.sparkopt.sharded.recoveryInterval must be an integer >= 0, got {raw!r}")
        if interval == 0:
            return None, False, None
        if configured:
            return configured, False, interval
        if not str(conf.get("spark.master", "")).startswith("local"):
            logger.warning("sparkopt sharded fit: no recovery directory (set checkpointDir or "
                           "spark.sparkopt.sharded.recoveryDir to storage every executor reaches): a lost task "
                           "restarts the fit from its start")
            return None, False, None
    return tempfile.mkdtemp(prefix="sparkopt-sharded-"), True, interval


def remove_directory(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def digest_fingerprint(block_objective: Any, coordinates: Coordinates, lam: float, alpha: float,
                       penalty_base: np.ndarray, weight_sum: float, stats: Any) -> dict:
    """What identifies a sharded problem for its checkpoints (the analogue of
    LinearModelObjective.fingerprint, from d-sized parts)."""
    bo = block_objective
    return {"loss": bo.loss, "n_features": int(bo.n_features), "fit_intercept": bool(bo.fit_intercept),
            "n_classes": int(bo.n_classes), "n_coef": int(bo.n_params), "n_active": int(coordinates.n_z),
            "coordinates": coordinates.digest(), "reg_param": float(lam), "elastic_net_param": float(alpha),
            "penalty_base": array_digest(penalty_base),
            "data": {"n_rows": int(stats.n_rows), "weight_sum": approx_scalar(weight_sum)}}


#: solvers a sharded fit runs (vector-free); the others need the model on the driver
SHARDED_SOLVERS = ("auto", "lbfgs", "owlqn")
#: a sharded fit returns its coefficients to the driver up to this many values (beyond: use
#: ``gather=False`` and the shards' own output)
GATHER_MAX_VALUES = 2**24


def fit_sharded(engine: Any, loss: str, *, reg_param: float = 0.0, elastic_net_param: float = 0.0,
                fit_intercept: bool = True, standardization: bool = True, n_classes: Optional[int] = None,
                epsilon: float = 1.35, solver: str = "auto", max_iter: int = 100, tol: float = 1e-6,
                callback: Any = None, solver_options: Optional[dict] = None, label_col: str = "label",
                checkpoint_dir: Any = None, checkpoint_interval: int = 10, initial_coef: Any = None,
                max_restarts: int = 3, gather: Optional[bool] = None, model_dir: Any = None):
    """fit_linear_model on a sharded engine: vector-free L-BFGS (OWL-QN under L1) with every
    model-sized vector in the tasks' shards; the same objective, coordinates and answer as the
    unsharded fit. A lost session (a task or executor gone) starts a new one and resumes from the
    last checkpoint: ``checkpoint_dir`` (every ``checkpoint_interval`` iterations) or else a
    recovery directory (:func:`recovery_directory`; by default every iteration), at most
    ``max_restarts`` times. ``gather``: return the coefficients to the driver (default: when
    there are at most :data:`GATHER_MAX_VALUES`); without, the LinearFit carries the run's record
    only (``coefficients`` None: the shards end with the session; write them out with a
    checkpointDir, whose shard files hold the final iterate). ``model_dir``: the tasks also write
    the coefficients there shard by shard (:func:`write_sharded_model`), the model
    :class:`~sparkopt.sharded_model.ShardedLinearModel` reads and scores without collecting them;
    ``fit.params["model_dir"]`` names it."""
    from .errors import InputError
    from .fit import (_package, check_labels, initial_entries, solver_coordinate_parts, validate_checkpoint,
                      validate_params)
    from .objectives import make_block_objective
    from .engine.resident import SessionLost
    from .solvers.checkpoint import CheckpointStore
    from .solvers.vlbfgs import VectorFreeLBFGS, vector_free_fingerprint
    from .rules import check_param

    validate_params(reg_param, elastic_net_param, max_iter, tol, loss, epsilon)
    validate_checkpoint(checkpoint_dir, checkpoint_interval)
    if solver not in SHARDED_SOLVERS:
        raise InputError(f"engine='sharded' runs vector-free L-BFGS (OWL-QN under L1): solver must be one of "
                         f"{SHARDED_SOLVERS}, got {solver!r} (other solvers hold the model on the driver)")
    if initial_coef is not None:
        raise InputError("engine='sharded' does not take an initial model (it would have to pass through the "
                         "driver); use checkpointDir to continue a fit")
    options = dict(solver_options or {})
    unknown = sorted(set(options) - {"memory"})
    if unknown:
        raise InputError(f"engine='sharded' takes the solver option 'memory' only, got {unknown}")
    memory = int(check_param("memory", options.get("memory", 10)))
    stats = engine.stats
    classes = check_labels(stats, loss, label_col) if n_classes is None else n_classes
    if loss in ("hinge", "glm"):
        raise InputError(f"engine='sharded' fits smooth losses (logistic, multinomial, squared_error, huber, "
                         f"poisson), not loss={loss!r}")
    bo = make_block_objective(loss, stats.n_features, fit_intercept, n_classes=max(classes, 2), epsilon=epsilon)
    coords, lam, l1_factor, base = solver_coordinate_parts(stats, loss, bo, classes, reg_param, elastic_net_param,
                                                           standardization)
    objective = ShardedLinearObjective(
        engine, bo, coords, lam, elastic_net_param, l1_factor, base, initial_entries(bo, stats, loss, fit_intercept),
        digest_fingerprint(bo, coords, lam, elastic_net_param, base, float(engine.weight_sum), stats))
    vf = VectorFreeLBFGS(memory)
    directory, temporary, every = recovery_directory(engine, checkpoint_dir)
    interval = checkpoint_interval if every is None else every
    store = None
    lost: list[str] = []
    try:
        with engine.session():
            try:
                if directory is not None:
                    fp = vector_free_fingerprint(objective, vf, {
                        "loss": loss, "regParam": float(reg_param), "elasticNetParam": float(elastic_net_param),
                        "fitIntercept": bool(fit_intercept), "standardization": bool(standardization),
                        "numClasses": int(classes), "numFeatures": int(stats.n_features), "numRows": int(stats.n_rows)})
                    store = CheckpointStore(directory, fp).acquire()
                while True:
                    try:
                        result = VectorFreeLBFGS(memory).run(objective, tol=tol, max_iter=max_iter, callback=callback,
                                                             store=store, checkpoint_interval=interval)
                        break
                    except SessionLost as exc:
                        lost.append(str(exc))
                        objective.restart()
                        if len(lost) > max_restarts:
                            raise SessionLost(f"sharded fit gave up after {len(lost)} lost sessions: "
                                              + " | ".join(lost)) from exc
                        logger.warning("sparkopt sharded fit: %s; a new session resumes from %s", exc,
                                       "the last checkpoint" if store is not None else "the start (no recovery directory)")
                result.extra.update(sessions=objective.sessions, restarts=len(lost), shards=objective.size,
                                    n_params=objective.n_params,
                                    bytes_between_tasks_per_pass=list(objective.pass_bytes))
                saved = None
                if model_dir is not None:
                    saved = write_sharded_model(objective, result, model_dir, loss=loss, classes=classes,
                                                centre_features=reg_param == 0)
                take = gather if gather is not None else objective.n_params <= GATHER_MAX_VALUES
                if not take:
                    # the shards end with the session: what the driver keeps is the run's record
                    from .fit import LinearFit

                    result.extra["coefficients"] = (f"not gathered: {objective.n_params} values are more than the "
                                                    f"driver takes (GATHER_MAX_VALUES = {GATHER_MAX_VALUES})")
                    fit = LinearFit(loss=loss, coefficients=None, intercept=None, objective=result.fun, result=result,
                                    coef_vector=None, n_classes=classes)
                    if saved is not None:
                        fit.intercept = saved["intercepts"] if loss == "multinomial" else float(saved["intercepts"][0])
                        fit.params["model_dir"] = os.fspath(model_dir)
                    return fit
                z = objective.vec_gather(result.x.name)
                result.jac = objective.vec_gather(result.jac.name)
                result.x = z
            finally:
                objective.close()      # inside: the session holds the engine until it ends
    finally:
        if store is not None:
            store.release()
        if temporary:
            remove_directory(directory)
    coef = coords.to_coef(z)
    fit = _package(loss, bo, objective, result, coef, classes, reg_param)
    if model_dir is not None:
        fit.params["model_dir"] = os.fspath(model_dir)
    return fit


def write_sharded_model(objective: ShardedLinearObjective, result: Any, model_dir: Any, *, loss: str, classes: int,
                        centre_features: bool) -> dict:
    """Write a sharded fit's answer as a model directory without the driver holding it:
    ``coefficients/part-RRRRR.parquet`` from each task (``output``, ``feature``, ``value``; zeros
    left out) and ``model.json`` from the driver (loss, sizes, intercepts, scale)."""
    import json

    bo = objective.block_objective
    directory = os.fspath(model_dir)
    os.makedirs(directory, exist_ok=True)
    saved = objective.save_model(os.path.join(directory, "coefficients"), result.x.name, centre_features)
    meta = {"format": "sparkopt-sharded-model", "version": 1, "loss": loss, "n_features": int(bo.n_features),
            "n_outputs": int(objective.coordinates.n_outputs), "n_classes": int(classes),
            "fit_intercept": bool(bo.fit_intercept), "intercepts": [float(v) for v in saved["intercepts"]],
            "scale": float(saved["scale"]) if bo.scale_index is not None else None,
            "parts": saved["parts"], "nonzeros": saved["rows"], "objective": float(result.fun),
            "iterations": int(result.nit), "status": result.status.name}
    with open(os.path.join(directory, "model.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    return saved
