"""Compressed exchanges between the driver and the tasks that hold the blocks, with error feedback.

numpy only; never imports pyspark. What a full pass of a first-order fit moves is the model out
(the coefficients, the same for every task) and one gradient sum back from every task; on a wide
multinomial model both are large (sector: 55,198 x 105 float64, 46 MB each way per task). A
block function whose passes may be compressed says so with an :class:`Exchange` attribute
(``fn.exchange``; sparkopt.linear_objective marks its loss and loss + gradient passes), and an
engine with a lossy :class:`Compression` then sends, instead of each such value ``v``, a
compressed *difference* against a reference both ends hold:

    message = C(v - r);   r <- r + decode(message)     (on both ends, the same arithmetic)

This is EF21's Markov compressor (Richtarik, Sokolova & Fatkhullin 2021; the bidirectional form:
Fatkhullin et al. 2021): the reference tracks the value, and whatever a message leaves out stays
in the next difference (error feedback), so the error is a fraction of how much the value moved
since the last pass, and vanishes as a run converges. Downlink: one model reference, shared by
all tasks (one message for all); the tasks evaluate at the reference, which trails the driver's
iterate by that error. Uplink: one reference per task and gradient stream, held by the task (and
mirrored by the driver, which adds the tasks' references in task order). Loss values and every
entry a block function does not mark travel exactly.

Schemes (``compression``; ``compressionRatio`` is the byte reduction asked of one value, 1 sends
every value exactly, which equals ``none`` bit for bit):

* ``none``: float64, no state (the default);
* ``bf16``: the difference as bfloat16 (the top half of float32; 8 significant bits), 4x;
* ``int8``: the difference quantized to int8 in chunks of :data:`CHUNK` values, each with a
  step (one byte: a power of 2^(1/4)) that maps its largest magnitude to 107..127; all-zero
  chunks are skipped (a task's gradient is zero on the features its rows never touch): ~7.5x;
* ``topk``: the ``n / compressionRatio`` largest differences (int32 index + float32 value);
* ``powersgd``: for matrix-shaped values (multinomial: K classes x (d + 1)), a rank-r
  approximation ``P Q^T`` of the difference by one power iteration warm-started from the last Q
  (Vogels, Karimireddy & Jaggi 2019; PyTorch's ``powerSGD_hook``), r the largest rank that meets
  the ratio; each task compresses its own sum (one round trip per pass instead of the two an
  all-reduce of P then Q needs), and its first ``warmup`` passes are exact (PyTorch's
  ``start_powerSGD_iter``). The model's differences (steps, not low-rank) travel as ``topk``.

Every stream's first message, and the first after :meth:`DriverExchange.reset` (a new session,
a task's error, a regrouping of the blocks), is a *key frame*: the exact value, which sets the
reference on both ends. A difference that is not finite is sent as a key frame too.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..errors import InputError
from ..rules import COMPRESSION_SCHEMES, check_param
from .fold import add_results
from .wire import encode_value

__all__ = ["SCHEMES", "Compression", "Exchange", "DriverExchange", "TaskExchange", "exchange_of", "compressed_pass",
           "CHUNK", "message_bytes"]

logger = logging.getLogger("sparkopt")

SCHEMES = COMPRESSION_SCHEMES
#: values per int8 chunk (one byte of step each: 6% on top of the int8 values; measured on a9a,
#: chunks of 16 keep the small differences a chunk of 256 rounds to 0, which slowed L-BFGS 1.6x)
CHUNK = 16
#: the ratio a scheme aims at when ``compressionRatio`` is not given (topk, powersgd)
DEFAULT_RATIO = 16.0
#: exact passes a powersgd stream starts with (its warm-up; PyTorch: start_powerSGD_iter)
POWERSGD_WARMUP = 2
_KEY, _BF16, _INT8, _TOPK, _LOWRANK = "key", "bf16", "int8", "topk", "lowrank"


@dataclass(frozen=True)
class Exchange:
    """What compression may touch in one block function's passes: ``model``: the payload is the
    model vector (coefficients; the downlink stream); ``sums``: the indices of result entries
    that are gradient sums (one uplink stream each); ``rows``: the matrix those vectors are (K
    outputs of equal length; 1: a plain vector), which low-rank schemes need."""

    model: bool = True
    sums: tuple[int, ...] = ()
    rows: int = 1


def exchange_of(fn: Any) -> Optional[Exchange]:
    """A block function's :class:`Exchange` (its ``exchange`` attribute), or None."""
    value = getattr(fn, "exchange", None)
    return value if isinstance(value, Exchange) else None


def compressed_pass(compression: "Compression", fn: Any, fraction: Any) -> bool:
    """Whether a pass of ``fn`` is compressed: a lossy scheme, a full pass (not a sample) and a
    block function marked with an :class:`Exchange`. Both ends decide with this."""
    return not compression.lossless and fraction is None and exchange_of(fn) is not None


@dataclass(frozen=True)
class Compression:
    """A compression scheme and its ratio (see the module docstring); ``Compression.of`` checks
    the user's values under their param names."""

    scheme: str = "none"
    ratio: Optional[float] = None

    @classmethod
    def of(cls, scheme: Any = "none", ratio: Any = None) -> "Compression":
        if isinstance(scheme, Compression):
            return scheme
        check_param("compression", "none" if scheme is None else scheme)
        if ratio is not None:
            check_param("compressionRatio", ratio)
            ratio = float(ratio)
        return cls("none" if scheme is None else str(scheme), ratio)

    @property
    def lossless(self) -> bool:
        """Every value travels exactly (``none``, or a ratio of 1)."""
        return self.scheme == "none" or self.ratio == 1.0

    @property
    def target(self) -> float:
        return DEFAULT_RATIO if self.ratio is None else self.ratio

    @property
    def model_scheme(self) -> str:
        """How the model's differences travel: as the scheme says, but powersgd's as topk (a
        step of L-BFGS or gradient descent is not low-rank: measured on sector, a rank-r
        approximation of it missed 10-50% of it, topk at the same ratio 5-7%)."""
        return "topk" if self.scheme == "powersgd" else self.scheme

    @property
    def warmup(self) -> int:
        return POWERSGD_WARMUP if self.scheme == "powersgd" else 0

    def check_shape(self, rows: int, n: int, what: str = "this problem") -> None:
        """InputError when the scheme cannot compress values of ``rows`` x (n / rows)."""
        if self.scheme == "powersgd" and not self.lossless and (rows < 2 or n % rows):
            raise InputError(f"compression='powersgd' approximates matrix-shaped gradients (multinomial: classes x "
                             f"features); {what} has a vector of {n}: use compression='topk', 'int8' or 'bf16'")

    def describe(self) -> str:
        if self.lossless:
            return "none" if self.scheme == "none" else f"{self.scheme} at ratio 1 (exact)"
        if self.scheme in ("topk", "powersgd"):
            return f"{self.scheme} (ratio {self.target:g}, error feedback)"
        return f"{self.scheme} (error feedback)"


# ------------------------------------------------------------------------------ the codecs
def _bf16(v: np.ndarray) -> Optional[tuple]:
    with np.errstate(over="ignore", invalid="ignore"):
        single = v.astype(np.float32)
    if not np.all(np.isfinite(single)):
        return None
    bits = single.view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return (_BF16, rounded.astype(np.uint16))


def _from_bf16(half: np.ndarray) -> np.ndarray:
    return (half.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)


def _int8(v: np.ndarray) -> Optional[tuple]:
    n = v.size
    chunks = -(-n // CHUNK)
    table = np.zeros(chunks * CHUNK)
    table[:n] = v
    table = table.reshape(chunks, CHUNK)
    peak = np.abs(table).max(axis=1)
    if not np.all(np.isfinite(peak)) or not np.any(peak > 0):
        return None
    # each chunk's step is a power of 2^(1/4) that maps its largest value to 107..127; the steps
    # travel as quarter-octaves below the message's largest (one byte per chunk)
    with np.errstate(divide="ignore"):
        quarters = np.ceil(4.0 * np.log2(peak / 127.0))
    top = int(quarters[peak > 0].max())
    below = np.where(peak > 0, top - quarters, _ZERO_CHUNK)
    below = np.where(below > _ZERO_CHUNK, _ZERO_CHUNK, below).astype(np.uint8)   # 2^-63 below: sent as 0
    step = _int8_steps(top, below)[:, None]
    with np.errstate(invalid="ignore"):
        q = np.clip(np.rint(np.where(step > 0, table / np.where(step > 0, step, 1.0), 0.0)), -127, 127)
    # the values of the chunks that are not all zero, without the last chunk's padding
    return (_INT8, n, top, below, q.astype(np.int8).ravel()[_int8_kept(below, n)])


#: an int8 chunk whose values are all zero (none are sent), in quarter-octaves below the top
_ZERO_CHUNK = 255


def _int8_steps(top: int, below: np.ndarray) -> np.ndarray:
    return np.where(below == _ZERO_CHUNK, 0.0, np.exp2((top - below.astype(np.float64)) / 4.0))


def _int8_kept(below: np.ndarray, n: int) -> np.ndarray:
    """The positions (of the padded chunk table, flattened) a message carries values for."""
    kept = np.repeat(below != _ZERO_CHUNK, CHUNK)
    kept[n:] = False
    return kept


def _from_int8(n: int, top: int, below: np.ndarray, q: np.ndarray) -> np.ndarray:
    table = np.zeros(below.size * CHUNK)
    table[_int8_kept(below, n)] = q.astype(np.float64)
    table = table.reshape(-1, CHUNK) * _int8_steps(top, below)[:, None]
    return table.ravel()[:n]


def _topk(v: np.ndarray, ratio: float) -> Optional[tuple]:
    n = v.size
    k = max(1, math.ceil(n / ratio))
    if k >= n:
        return None
    index = np.sort(np.argpartition(np.abs(v), n - k)[n - k:]).astype(np.int32)
    values = v[index].astype(np.float32)
    if not np.all(np.isfinite(values)):
        return None
    return (_TOPK, n, index, values)


def _from_topk(n: int, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(n)
    out[index] = values.astype(np.float64)
    return out


def powersgd_rank(rows: int, cols: int, ratio: float) -> int:
    """The largest rank whose float32 factors ((rows + cols) x r) are ``ratio`` times smaller than
    the float64 matrix (at least 1); ``min(rows, cols)`` or more means no compression."""
    return max(1, int(rows * cols * 8 // (ratio * (rows + cols) * 4)))


def _orthonormal(P: np.ndarray) -> np.ndarray:
    Q, R = np.linalg.qr(P)
    # a column the data do not span (a zero difference): keep it orthonormal, harmless
    return Q


def _lowrank(v: np.ndarray, rows: int, ratio: float, state: dict) -> Optional[tuple]:
    M = v.reshape(rows, -1)
    cols = M.shape[1]
    rank = powersgd_rank(rows, cols, ratio)
    if rank >= min(rows, cols):
        return None
    Q = state.get("Q")
    if Q is None or Q.shape != (cols, rank):
        Q = np.random.default_rng(0).standard_normal((cols, rank))
    P = _orthonormal(M @ Q)
    Q = M.T @ P
    if not (np.all(np.isfinite(P)) and np.all(np.isfinite(Q))):
        return None
    state["Q"] = Q
    return (_LOWRANK, rows, P.astype(np.float32), Q.astype(np.float32))


def _from_lowrank(rows: int, P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    return (P.astype(np.float64) @ Q.astype(np.float64).T).ravel()


def _decode(message: Any) -> np.ndarray:
    kind = message[0]
    if kind == _BF16:
        return _from_bf16(message[1])
    if kind == _INT8:
        return _from_int8(*message[1:])
    if kind == _TOPK:
        return _from_topk(*message[1:])
    if kind == _LOWRANK:
        return _from_lowrank(*message[1:])
    raise ValueError(f"unknown compressed message {kind!r}")


def _valid(message: Any) -> bool:
    return isinstance(message, tuple) and len(message) >= 2 and isinstance(message[0], str)


class _Stream:
    """One direction of one value: the reference both ends hold, and the sender's own state
    (PowerSGD's warm-start factor)."""

    def __init__(self) -> None:
        self.reference: Optional[np.ndarray] = None
        self.sender: dict = {}
        self.passes = 0

    def encode(self, value: np.ndarray, compression: Compression, rows: int, key: bool, model: bool = False) -> tuple:
        """The message for ``value`` (a key frame when ``key``, when nothing is held yet, or when
        the scheme has nothing smaller to send); the reference advances as the receiver's will.
        ``model``: the value is the model (powersgd sends its steps as topk: see the module)."""
        v = np.asarray(value, dtype=np.float64).ravel()
        self.passes += 1
        message = None
        scheme = compression.model_scheme if model else compression.scheme
        if not key and self.reference is not None and self.reference.shape == v.shape \
                and self.passes > compression.warmup:
            delta = v - self.reference
            if scheme == "bf16":
                message = _bf16(delta)
            elif scheme == "int8":
                message = _int8(delta)
            elif scheme == "topk":
                message = _topk(delta, compression.target)
            elif scheme == "powersgd":
                message = _lowrank(delta, rows, compression.target, self.sender)
        if message is None:
            message = (_KEY, v.copy())
            self.reference = v.copy()
        else:
            self.reference = self.reference + _decode(message)
        return message

    def decode(self, message: Any) -> np.ndarray:
        if not _valid(message):
            raise ValueError("a compressed stream received a value that is not a message")
        if message[0] == _KEY:
            self.reference = np.array(message[1], dtype=np.float64)
        else:
            if self.reference is None:
                raise ValueError("a compressed difference arrived before any key frame")
            self.reference = self.reference + _decode(message)
        return self.reference


def message_bytes(value: Any) -> int:
    """Size of ``value`` as the resident channel encodes it (sparkopt.engine.wire)."""
    return len(encode_value(value))


# ------------------------------------------------------------------------------ the two ends
class TaskExchange:
    """A task's end (a resident task holds one per session; LocalEngine one per partition):
    decodes the model it is sent, folds, and encodes its gradient sums."""

    def __init__(self, compression: Compression) -> None:
        self.compression = compression
        self._model = _Stream()
        self._sums: dict[int, _Stream] = {}

    def evaluate(self, fn: Any, request: Any, fraction: Any, fold: Callable[[Any], Any]) -> Any:
        """The reply to ``request`` for a pass of block function ``fn``: ``fold(payload)``,
        compressed as :func:`compressed_pass` says."""
        if not compressed_pass(self.compression, fn, fraction):
            return fold(request)
        exchange = exchange_of(fn)
        if not (isinstance(request, tuple) and len(request) == 2 and isinstance(request[1], bool)):
            raise ValueError("a compressed pass expects (model message, key) as its payload")
        message, key = request
        payload = self._model.decode(message) if exchange.model else message
        result = fold(payload)
        if result is None:
            return None
        if not isinstance(result, tuple):
            raise TypeError("a block function with an exchange must return a tuple")
        out = list(result)
        for index in exchange.sums:
            stream = self._sums.setdefault(index, _Stream())
            out[index] = stream.encode(result[index], self.compression, exchange.rows, key)
        return tuple(out)


class DriverExchange:
    """The driver's end: one model stream for all tasks, and a mirror of every task's gradient
    streams. ``reset(reason)`` forgets every reference (logged): the next pass sends key frames
    both ways."""

    def __init__(self, compression: Compression) -> None:
        self.compression = compression
        self._model = _Stream()
        self._sums: dict[tuple[int, int], _Stream] = {}
        self._key_next = True
        self.resets = 0
        self.key_frames = 0

    @property
    def active(self) -> bool:
        return not self.compression.lossless

    def applies(self, fn: Any, fraction: Any) -> bool:
        """Whether a pass of ``fn`` is compressed (:func:`compressed_pass`)."""
        return compressed_pass(self.compression, fn, fraction)

    def reset(self, reason: str) -> None:
        """Drop every reference (both ends start again from key frames), saying why."""
        if self._model.reference is None and not self._sums:
            return
        self.resets += 1
        logger.info("sparkopt compression: error-feedback state reset (%s); the next pass sends exact values",
                    reason)
        self._model = _Stream()
        self._sums = {}
        self._key_next = True

    def outgoing(self, fn: Any, payload: Any) -> Any:
        """The request payload every task is sent for a compressed pass of ``fn``."""
        exchange = exchange_of(fn)
        key = self._key_next
        self._key_next = False
        message = self._model.encode(payload, self.compression, exchange.rows, key, model=True) if exchange.model \
            else payload
        if key:
            self.key_frames += 1
        return (message, key)

    def incoming(self, fn: Any, task: int, reply: Any) -> Any:
        """Task ``task``'s reply, its gradient sums decoded against that task's references."""
        if reply is None:
            return None
        exchange = exchange_of(fn)
        out = list(reply)
        for index in exchange.sums:
            stream = self._sums.setdefault((task, index), _Stream())
            out[index] = stream.decode(reply[index]).copy()
        return tuple(out)

    def combine(self, fn: Any, replies: list[tuple[int, Any]]) -> Any:
        """The sum of the tasks' decoded replies, added in the order given."""
        acc = None
        for task, reply in replies:
            acc = add_results(acc, self.incoming(fn, task, reply))
        return acc
