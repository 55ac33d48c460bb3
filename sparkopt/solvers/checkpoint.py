"""Checkpoint files for the minimize() loop: atomic, checksummed, rotated, plain data.

numpy only; never imports pyspark. Checkpoints are written by the driver to a directory only the
driver needs to reach (a local disk or a shared filesystem for a restarted driver); executors
never read them.

Layout of a directory (one run per directory; `seq` increases with every write):

    ckpt-000007.npz    arrays (x, g, best iterate, solver memory), np.savez, no pickled objects
    ckpt-000007.json   the manifest: format/version, seq, iteration, problem fingerprint,
                       scalars and history (JSON), sha256 and size of the .npz, and a sha256
                       over the manifest's own payload

A checkpoint exists once its manifest exists: the .npz is written first (temp file in the same
directory, fsync, os.replace), then the manifest the same way, then the directory is fsynced.
A crash at any point leaves either the previous checkpoints only, or a complete new one. The
newest `keep` (2) manifests are kept so a corrupt newest one falls back to the one before.

Public API: :class:`CheckpointStore` (save / load / latest), :func:`encode_memory` /
:func:`decode_memory` (solver memory <-> JSON + arrays), :func:`fingerprint_differences`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from .objective import Fingerprinted
from .solver import Solver, SolverState

#: the numpy bit generators a checkpoint may name (an allow-list, see decode_memory)
BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "MT19937": np.random.MT19937,
                  "Philox": np.random.Philox, "SFC64": np.random.SFC64}
#: the largest manifest / arrays file read (a hostile "checkpoint" may be /dev/zero or huge)
MAX_MANIFEST_BYTES = 64 * 2**20
MAX_ARRAYS_BYTES = 8 * 2**30
LOCK_NAME = "ckpt.lock"

FORMAT = "sparkopt-checkpoint"
VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{6,})\.(json|npz)$")
#: a shard of a vector-free run's vectors, written by the task that holds it
_SHARD_NAME = re.compile(r"^ckpt-(\d{6,})-shard-(\d{5})\.npz$")


class CheckpointError(ValueError):
    """A checkpoint cannot be written, or belongs to a different problem (names what differs)."""


class CheckpointWarning(UserWarning):
    """A checkpoint was unreadable (corrupt, partial, wrong format) and was skipped."""


# ------------------------------------------------------------------------ solver memory codec
def _scalar(value: Any) -> Any:
    """A JSON scalar for a Python / NumPy scalar, or raise TypeError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)    # exact: json writes repr(float), which round-trips
    raise TypeError(type(value).__name__)


def encode_memory(memory: dict[str, Any], prefix: str = "memory/") -> tuple[dict, dict[str, np.ndarray]]:
    """Split a solver's `state.memory` into (JSON-able description, arrays for the .npz).

    Supported values:
      - scalars: None, bool, int, float (inf / nan included), str, and their NumPy types;
      - np.ndarray of a numeric or bool dtype (any shape);
      - lists of scalars (stored in the JSON) and lists of equally shaped arrays (stored stacked,
        shape (len, ...), with the length; an empty list restores as []);
      - np.random.Generator (its bit generator's state, a dict of ints, restored exactly).
    Anything else raises CheckpointError naming the key and the type.
    """
    spec: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for key, value in memory.items():
        if not isinstance(key, str):
            raise CheckpointError(f"state.memory keys must be strings to checkpoint, got {key!r}")
        where = f"state.memory[{key!r}]"
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biufc":
                raise CheckpointError(f"{where} has dtype {value.dtype}: only numeric arrays can be checkpointed")
            arrays[prefix + key] = value
            spec[key] = {"kind": "array"}
        elif isinstance(value, np.random.Generator):
            spec[key] = {"kind": "generator", "state": value.bit_generator.state}
        elif isinstance(value, list):
            if value and all(isinstance(v, np.ndarray) for v in value):
                shapes = {v.shape for v in value}
                if len(shapes) != 1 or any(v.dtype.kind not in "biufc" for v in value):
                    raise CheckpointError(f"{where} is a list of arrays of different shapes or non-numeric "
                                          f"dtypes ({sorted(shapes)}): cannot stack it")
                arrays[prefix + key] = np.stack(value)
                spec[key] = {"kind": "array_list", "length": len(value)}
            else:
                try:
                    spec[key] = {"kind": "scalar_list", "values": [_scalar(v) for v in value]}
                except TypeError as err:
                    raise CheckpointError(f"{where} is a list holding a {err}: supported are lists of scalars "
                                          "or of equally shaped arrays") from None
        else:
            try:
                spec[key] = {"kind": "scalar", "value": _scalar(value)}
            except TypeError:
                raise CheckpointError(
                    f"{where} has unsupported type {type(value).__name__}: a checkpoint stores scalars, numeric "
                    "arrays, lists of those and np.random.Generator") from None
    return spec, arrays


def decode_memory(spec: dict, arrays: dict[str, np.ndarray], prefix: str = "memory/") -> dict[str, Any]:
    """Inverse of :func:`encode_memory` (fresh objects: nothing is shared with the arrays dict)."""
    memory: dict[str, Any] = {}
    for key, item in spec.items():
        kind = item["kind"]
        if kind == "array":
            memory[key] = np.array(arrays[prefix + key], copy=True)
        elif kind == "array_list":
            stacked = arrays.get(prefix + key)
            memory[key] = [] if item["length"] == 0 else [np.array(row, copy=True) for row in stacked]
        elif kind == "scalar_list":
            memory[key] = list(item["values"])
        elif kind == "scalar":
            memory[key] = item["value"]
        elif kind == "generator":
            state = item["state"]
            name = state.get("bit_generator") if isinstance(state, dict) else None
            if name not in BIT_GENERATORS:
                # never getattr(np.random, <text from a file>): any zero-argument function of
                # np.random would be reachable (np.random.seed reseeds the global generator)
                raise CheckpointError(f"memory {key!r}: bit generator {name!r} is not one of {sorted(BIT_GENERATORS)}")
            bit_generator = BIT_GENERATORS[name]()
            bit_generator.state = state
            memory[key] = np.random.Generator(bit_generator)
        else:
            raise CheckpointError(f"unknown memory kind {kind!r} for key {key!r}")
    return memory


# ------------------------------------------------------------------------ fingerprints
def _canonical(obj: Any) -> Any:
    """JSON round trip: what a fingerprint looks like after it was stored."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def fingerprint_differences(stored: dict, current: dict) -> list[str]:
    """'name: checkpoint A, this run B' for every (dotted) key whose values differ."""
    a, b = _flatten(_canonical(stored)), _flatten(_canonical(current))
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if va != vb and not (isinstance(va, float) and isinstance(vb, float) and np.isnan(va) and np.isnan(vb)):
            out.append(f"{key}: checkpoint {va!r}, this run {vb!r}")
    return out


def array_digest(a: np.ndarray, approx: bool = True) -> str:
    """A short sha256 of an array's values (for fingerprints: x0, scales). With `approx` the
    values are rounded to float32 first: quantities computed from data sums (feature sd, the
    intercept's start) differ in the last bits when the same data are partitioned differently,
    which must not make a checkpoint look like another problem's."""
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float32 if approx else np.float64))
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()[:16]


def approx_scalar(v: float) -> str:
    """A float to 10 significant digits, for fingerprints (see :func:`array_digest`)."""
    return f"{float(v):.10g}"


def solver_config(solver: Any) -> dict:
    """A solver's settings (scalar attributes, nested solvers) for the problem fingerprint."""
    out: dict[str, Any] = {"class": type(solver).__name__}
    for key, value in sorted(vars(solver).items()):
        if isinstance(value, Solver):
            out[key] = solver_config(value)
        elif value is None or isinstance(value, (bool, int, float, str, np.number)):
            out[key] = value
    return out


def problem_fingerprint(objective: Any, solver: Any, x0: np.ndarray, extra: Optional[dict] = None) -> dict:
    """What a checkpoint must agree on to be resumed: parameters, solver and its settings, x0,
    the L1 weights, the objective's own description (a Fingerprinted objective's
    ``fingerprint()``) and whatever the caller adds (``extra``)."""
    l1 = objective.l1_weights
    fp: dict[str, Any] = {
        "n_params": int(objective.n_params), "solver": solver.name, "solver_config": solver_config(solver),
        "x0": array_digest(x0), "l1_weights": None if l1 is None else array_digest(l1),
    }
    if isinstance(objective, Fingerprinted):
        fp["objective"] = objective.fingerprint()
    if extra:
        fp["caller"] = dict(extra)
    return fp


# ------------------------------------------------------------------------ the store
def fsync_directory(path: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk, where the platform allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:          # e.g. platforms without directory fds: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a symlink, FIFO or device) of at most
    ``limit`` bytes; ValueError otherwise. Opened without following links, checked on the open
    descriptor, so the file cannot be swapped between the check and the read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ValueError(f"{path.name} cannot be opened ({err.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{path.name} is larger than {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit + 1)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a reader sees either the old file or all of the new one."""
    # unique per writer (process, thread, call): two writers never share a temporary file
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class CheckpointStore:
    """The checkpoints of one run in `directory` (created if missing).

    `fingerprint` describes the problem (plain JSON-able values, nested dicts allowed); a
    checkpoint whose fingerprint differs is refused by :meth:`load` with a CheckpointError naming
    every differing entry. `keep` newest checkpoints are kept (>= 2, so that a corrupt newest one
    has a fallback).
    """

    def __init__(self, directory: Union[str, os.PathLike], fingerprint: dict, keep: int = 2):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"checkpointDir {str(self.directory)!r} cannot be created: {err.strerror}") from None
        if not os.access(self.directory, os.W_OK):
            raise CheckpointError(f"checkpointDir {str(self.directory)!r} is not writable")
        self.fingerprint = _canonical(fingerprint)
        self.keep = keep
        self._lock: Optional[int] = None

    # -- listing -----------------------------------------------------------------------------
    def _files(self) -> dict[int, dict[str, Path]]:
        """Checkpoint files by sequence number: exactly ``ckpt-NNNNNN.json|npz`` (and the shard
        files ``ckpt-NNNNNN-shard-RRRRR.npz``, keyed ``shard-R``), regular files only (a symlink
        or FIFO of that name is ignored, never opened)."""
        found: dict[int, dict[str, Path]] = {}
        for entry in self.directory.iterdir():
            m = _NAME.match(entry.name)
            shard = None if m else _SHARD_NAME.match(entry.name)
            if (m or shard) and entry.is_file() and not entry.is_symlink():
                key = m.group(2) if m else f"shard-{int(shard.group(2))}"
                found.setdefault(int((m or shard).group(1)), {})[key] = entry
        return found

    def next_seq(self) -> int:
        """The sequence number the next :meth:`save` gets (shards are written under it first)."""
        return max(self._files(), default=0) + 1

    def manifests(self) -> list[Path]:
        """Manifest paths, newest first."""
        files = self._files()
        return [files[s]["json"] for s in sorted(files, reverse=True) if "json" in files[s]]

    # -- writing -----------------------------------------------------------------------------
    def save(self, iteration: int, meta: dict, arrays: dict[str, np.ndarray], shards: Optional[dict] = None,
             seq: Optional[int] = None) -> Path:
        """Write one checkpoint atomically and drop the ones older than the newest `keep`.
        `meta`: JSON-able scalars/lists/dicts; `arrays`: name -> numeric ndarray. Returns the
        manifest path. Errors of the filesystem propagate (the previous checkpoints stay valid).
        ``shards`` (rank -> :func:`write_shard`'s record) lists shard files already written under
        ``seq`` (:meth:`next_seq`) by the holders of the shards: the manifest, written last, makes
        them part of the checkpoint."""
        files = self._files()
        seq = max(files, default=0) + 1 if seq is None else int(seq)
        buffer = io.BytesIO()
        for name, a in arrays.items():
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "biufc":
                raise CheckpointError(f"checkpoint array {name!r} must be a numeric ndarray, got "
                                      f"{getattr(a, 'dtype', type(a).__name__)}")
        np.savez(buffer, **arrays)     # numeric arrays only: nothing is pickled
        blob = buffer.getvalue()
        npz_path = self.directory / f"ckpt-{seq:06d}.npz"
        payload = {
            "format": FORMAT, "version": VERSION, "seq": seq, "iteration": int(iteration),
            "fingerprint": self.fingerprint, "meta": meta,
            "arrays": {"file": npz_path.name, "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)},
        }
        if shards is not None:
            payload["shards"] = {str(rank): dict(info) for rank, info in sorted(shards.items())}
        text = json.dumps(payload, sort_keys=True, default=_json_default)
        manifest = {"sha256": hashlib.sha256(text.encode()).hexdigest(), "payload": payload}
        _write_atomic(npz_path, blob)
        json_path = self.directory / f"ckpt-{seq:06d}.json"
        # written in insertion order (history rows keep their column order); the checksum is over
        # the sorted form, which the reader recomputes from the parsed payload
        _write_atomic(json_path, json.dumps(manifest, default=_json_default).encode())
        fsync_directory(self.directory)
        self._rotate()
        return json_path

    def _rotate(self) -> None:
        files = self._files()
        kept = [s for s in sorted(files, reverse=True) if "json" in files[s]][: self.keep]
        oldest_kept = min(kept, default=0)
        for seq, parts in files.items():
            # older than the kept ones, or an orphan .npz below them (a write that crashed
            # before its manifest); manifests go first so no manifest outlives its arrays
            if seq not in kept and seq < oldest_kept:
                for kind in ["json", "npz"] + sorted(k for k in parts if k.startswith("shard-")):
                    if kind in parts:
                        try:
                            parts[kind].unlink()
                        except FileNotFoundError:
                            pass

    # -- reading -----------------------------------------------------------------------------
    def _read(self, path: Path) -> tuple[dict, dict[str, np.ndarray]]:
        """(payload, arrays) of one checkpoint; ValueError saying why it is unusable."""
        seq = int(_NAME.match(path.name).group(1))
        try:
            manifest = json.loads(_read_regular(path, MAX_MANIFEST_BYTES).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"manifest unreadable ({type(err).__name__})") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("payload"), dict):
            raise ValueError("manifest has no payload")
        payload = manifest["payload"]
        text = json.dumps(payload, sort_keys=True, default=_json_default)
        if hashlib.sha256(text.encode()).hexdigest() != manifest.get("sha256"):
            raise ValueError("manifest checksum mismatch")
        if payload.get("format") != FORMAT or payload.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} version {VERSION} file "
                             f"(format {payload.get('format')!r}, version {payload.get('version')!r})")
        info = payload["arrays"]
        # the arrays file is this checkpoint's own, in this directory: never a path from the file
        expected = f"ckpt-{seq:06d}.npz"
        if info.get("file") != expected:
            raise ValueError(f"manifest names arrays file {str(info.get('file'))[:80]!r}, not {expected!r}")
        size = info.get("size")
        if not isinstance(size, int) or not 0 <= size <= MAX_ARRAYS_BYTES:
            raise ValueError("manifest gives no valid arrays size")
        blob = _read_regular(self.directory / expected, size)
        if len(blob) != size or hashlib.sha256(blob).hexdigest() != info.get("sha256"):
            raise ValueError(f"arrays file {expected} does not match its manifest (size or checksum)")
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return payload, arrays

    def load(self, decode: Optional[Callable[[dict, dict], Any]] = None) -> Any:
        """The newest usable checkpoint, or None when there is none: ``(payload, arrays)``, or
        ``decode(payload, arrays)`` when given.

        Unreadable ones (corrupt, partial, not regular files, too large, naming other files, or
        failing ``decode``: wrong shapes, unknown generators) are skipped with a CheckpointWarning
        (then the previous one is tried; with none left the caller starts fresh). A readable
        checkpoint of a different problem raises CheckpointError: resuming it would silently
        solve the wrong problem."""
        manifests = self.manifests()
        for path in manifests:
            try:
                payload, arrays = self._read(path)
                diffs = fingerprint_differences(payload["fingerprint"], self.fingerprint)
                if not diffs and decode is not None:
                    return decode(payload, arrays)
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
                warnings.warn(f"sparkopt checkpoint {path.name} in {str(self.directory)!r} is unusable and was "
                              f"skipped: {err}", CheckpointWarning, stacklevel=3)
                continue
            if diffs:
                raise CheckpointError(
                    f"checkpoint {path} is from a different problem; differences: {'; '.join(diffs)}. "
                    f"Use another checkpointDir, or delete {str(self.directory)!r} to start over")
            return payload, arrays
        if manifests:
            warnings.warn(f"sparkopt: no usable checkpoint in {str(self.directory)!r} (all {len(manifests)} "
                          "unusable); starting from the beginning", CheckpointWarning, stacklevel=3)
        return None

    # -- one writer per directory ------------------------------------------------------------
    def acquire(self) -> "CheckpointStore":
        """Take the directory's lock file (an exclusive, non-blocking flock held until
        :meth:`release`): a second writer, in this process or another, gets a CheckpointError
        instead of interleaving its checkpoints with this run's."""
        import fcntl

        if self._lock is not None:
            return self
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise CheckpointError(f"checkpointDir {str(self.directory)!r} is in use by another running fit; "
                                  "give each fit its own directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd
        return self

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)        # closing the descriptor drops the flock
            self._lock = None

    def __enter__(self) -> "CheckpointStore":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------------ shard files
def write_shard(store_directory: Union[str, os.PathLike], seq: int, rank: int, arrays: dict[str, np.ndarray]) -> dict:
    """Write shard ``rank``'s arrays of checkpoint ``seq`` (atomically, numeric arrays only, as
    :meth:`CheckpointStore.save` writes its own); the record the manifest keeps of it. Run by
    whoever holds the shard (a task of the sharded engine), before the driver's manifest."""
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "biufc":
            raise CheckpointError(f"shard array {name!r} must be a numeric ndarray")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    blob = buffer.getvalue()
    path = Path(store_directory) / f"ckpt-{int(seq):06d}-shard-{int(rank):05d}.npz"
    _write_atomic(path, blob)
    return {"file": path.name, "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}


def read_shard(store_directory: Union[str, os.PathLike], seq: int, rank: int, record: Any) -> dict[str, np.ndarray]:
    """Shard ``rank``'s arrays of checkpoint ``seq``, checked against the manifest's ``record``
    (its own file name, size and sha256; a regular file; no pickles); ValueError otherwise."""
    expected = f"ckpt-{int(seq):06d}-shard-{int(rank):05d}.npz"
    if not isinstance(record, dict) or record.get("file") != expected:
        raise ValueError(f"manifest names shard file {str(record)[:80]!r}, not {expected!r}")
    size = record.get("size")
    if not isinstance(size, int) or not 0 <= size <= MAX_ARRAYS_BYTES:
        raise ValueError(f"manifest gives no valid size for {expected}")
    blob = _read_regular(Path(store_directory) / expected, size)
    if len(blob) != size or hashlib.sha256(blob).hexdigest() != record.get("sha256"):
        raise ValueError(f"shard file {expected} does not match its manifest (size or checksum)")
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


# ------------------------------------------------------------------------ minimize() loop state
def snapshot(state, loop: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) for a SolverState and the loop's bookkeeping.

    `loop`: history (list of dicts of scalars), best_x (n,), best_f, best_g ((n,) or None),
    scale (the convergence test's reference norm), passes, evaluations, seconds so far."""
    memory_spec, arrays = encode_memory(state.memory)
    arrays["state/x"] = np.asarray(state.x, dtype=float)
    arrays["state/g"] = np.asarray(state.g, dtype=float)
    arrays["loop/best_x"] = np.asarray(loop["best_x"], dtype=float)
    if loop["best_g"] is not None:
        arrays["loop/best_g"] = np.asarray(loop["best_g"], dtype=float)
    meta = {
        "state": {"f": float(state.f), "opt_norm": float(state.opt_norm), "iteration": int(state.iteration),
                  "step_size": float(state.step_size), "memory": memory_spec},
        "loop": {"best_f": float(loop["best_f"]), "scale": float(loop["scale"]), "passes": float(loop["passes"]),
                 "evaluations": int(loop["evaluations"]), "seconds": float(loop["seconds"]),
                 "history": loop["history"]},
    }
    return meta, arrays


def restore(payload: dict, arrays: dict[str, np.ndarray], n_params: Optional[int] = None):
    """(SolverState, loop dict) from a loaded checkpoint; inverse of :func:`snapshot`.

    With ``n_params`` every array is checked to belong to a problem of that size (the iterate,
    gradient and best iterate are (n_params,); every solver-memory array's last axis is
    n_params): a manifest that passes its checksum but holds other shapes is unusable, not a
    crash later in the fit. ValueError says what does not fit."""
    s, loop = payload["meta"]["state"], payload["meta"]["loop"]
    if n_params is not None:
        for name in ("state/x", "state/g", "loop/best_x", "loop/best_g"):
            if name in arrays and arrays[name].shape != (n_params,):
                raise ValueError(f"array {name} has shape {arrays[name].shape}, this problem has {n_params} parameters")
        for name, a in arrays.items():
            if name.startswith("memory/") and (a.ndim == 0 or a.shape[-1] != n_params):
                raise ValueError(f"solver memory {name[7:]!r} has shape {a.shape}, this problem has {n_params} parameters")
        if not np.all(np.isfinite(arrays["state/x"])):
            raise ValueError("the saved iterate is not finite")
    state = SolverState(x=np.array(arrays["state/x"], copy=True), f=float(s["f"]),
                        g=np.array(arrays["state/g"], copy=True), opt_norm=float(s["opt_norm"]),
                        iteration=int(s["iteration"]), step_size=float(s["step_size"]),
                        memory=decode_memory(s["memory"], arrays))
    best_g = arrays.get("loop/best_g")
    out = dict(loop, best_x=np.array(arrays["loop/best_x"], copy=True),
               best_g=None if best_g is None else np.array(best_g, copy=True))
    return state, out
