"""The resident channel's wire format: a handshake that derives per-connection keys, then typed,
authenticated (and, when Spark encrypts its own network, encrypted), sequenced frames whose
payloads are plain values and raw numpy buffers.

numpy and the standard library only. Nothing here unpickles: a frame can carry ``None``, bools,
ints, floats, strings, bytes, numeric ndarrays, and tuples / lists / dicts of those; code reaches
a resident task only inside its Spark task closure (Spark's own channel).

Handshake (fixed sizes, under one total deadline on the driver; ``K`` is the session secret that
travels in the task closure, ``sid`` the session id)::

    task   -> driver   b"SOH1" | sid (16) | task nonce tn (32)
    driver -> task     driver nonce dn (32) | HMAC(K, "driver" | sid | tn | dn)
    task   -> driver   HMAC(K, "task" | sid | tn | dn)

Both proofs are HMAC-SHA256 compared with :func:`hmac.compare_digest`; the fresh nonces make a
recorded handshake useless. Each direction then has its own key ``HMAC(K, "t2d"|"d2t" | mode | sid
| tn | dn)``, so a frame cannot be replayed on another connection or reflected back to its sender.
``mode`` (``"hmac"`` or ``"aead"``) is in every label, the proofs' too, so two ends that disagree
on encryption fail the handshake instead of exchanging frames.

Frame (big-endian), authenticated only (version 1)::

    magic b"SF" | version u8 | type u8 | sequence u64 | length u32 | payload | HMAC-SHA256 tag (32)

The tag covers header and payload. Encrypted (version 2, :data:`ENCRYPTED`)::

    magic b"SF" | version u8 | type u8 | sequence u64 | length u32 | AES-256-GCM(payload) | GCM tag (16)

with the header as associated data and the nonce ``0 (4 bytes) | sequence u64`` built from the
number the receiver expects (never from the header), under the direction's key: each key meets a
nonce once, and a replayed, reordered or re-numbered frame fails its tag. Each direction numbers
its frames 0, 1, 2, ...; a receiver accepts only the next number, so a replayed, dropped or
reordered frame is rejected. ``length``
is bounded by ``max_frame``, and bytes are read (and memory grows) only as they arrive, so a
peer cannot make the reader allocate a buffer it chose the size of. Any violation raises
:class:`WireError`; the caller drops the connection.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import os
import socket
import struct
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["WireError", "FrameType", "Channel", "encode_value", "decode_value", "encode_frame",
           "read_frame", "frame_bytes", "client_handshake", "server_handshake", "MAX_FRAME_BYTES", "NONCE_BYTES",
           "SESSION_ID_BYTES", "socket_reader", "ENCRYPTED", "AUTHENTICATED"]

MAGIC_HELLO = b"SOH1"
MAGIC_FRAME = b"SF"
VERSION = 1                 # frames authenticated with HMAC-SHA256
VERSION_ENCRYPTED = 2       # frames encrypted and authenticated with AES-256-GCM
NONCE_BYTES = 32
SESSION_ID_BYTES = 16
TAG_BYTES = 32
GCM_TAG_BYTES = 16
#: the channel's two modes (``encrypted`` argument of the functions below)
AUTHENTICATED, ENCRYPTED = False, True
HEADER = struct.Struct(">2sBBQI")
#: largest frame payload accepted (coefficients of 2^20 features x 26 classes are 218 MB)
MAX_FRAME_BYTES = 1 << 30
_MAX_DEPTH = 32
_MAX_NDIM = 32
_CHUNK = 1 << 20


class WireError(Exception):
    """A frame or handshake that is malformed, unauthenticated, out of sequence or too large."""


class FrameType:
    HELLO = 1      # task -> driver: (group, attempt, partitions, rows, weight)
    EVAL = 2       # driver -> task: (function digest, payload, fraction, seed)
    RUN = 3        # driver -> task: (function digest, config)
    REPLY = 4      # task -> driver: the fold's result, or a worker program's return value
    ERROR = 5      # task -> driver: (exception name, text, traceback)
    MESSAGE = 6    # either way: a worker program's message
    STOP = 7       # driver -> task: end of the session
    HEARTBEAT = 8  # task -> driver: alive, still folding (None)
    ALL = frozenset(range(1, 9))


# ------------------------------------------------------------------------------ values
_DTYPES = {code: np.dtype(name) for code, name in enumerate(
    ["|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "<f4", "<f8", "<c8", "<c16"])}
_DTYPE_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


def encode_value(value: Any) -> bytes:
    """``value`` as bytes (see the module docstring for what can be carried); TypeError otherwise."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: Any, out: list, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise TypeError(f"the channel carries values nested at most {_MAX_DEPTH} deep")
    if value is None:
        out.append(b"N")
    elif value is True or value is False or isinstance(value, np.bool_):
        out.append(b"T" if value else b"F")
    elif isinstance(value, (int, np.integer)):
        value = int(value)
        if not -(1 << 63) <= value < (1 << 63):
            raise TypeError(f"the channel carries 64-bit integers, got {value}")
        out.append(b"i" + _I64.pack(value))
    elif isinstance(value, (float, np.floating)):
        out.append(b"f" + _F64.pack(float(value)))
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out.append(b"s" + _U32.pack(len(data)) + data)
    elif isinstance(value, (bytes, bytearray)):
        out.append(b"y" + _U32.pack(len(value)) + bytes(value))
    elif isinstance(value, np.ndarray):
        dtype = value.dtype.newbyteorder("<") if value.dtype.byteorder == ">" else value.dtype
        code = _DTYPE_CODES.get(dtype)
        if code is None or value.ndim > _MAX_NDIM:
            raise TypeError(f"the channel carries numeric arrays of at most {_MAX_NDIM} dimensions, "
                            f"got dtype {value.dtype} with {value.ndim}")
        data = np.asarray(value, dtype=_DTYPES[code], order="C")   # keeps 0-d arrays 0-d
        out.append(b"a" + bytes([code, data.ndim]) + b"".join(struct.pack(">Q", n) for n in data.shape))
        out.append(data.tobytes())
    elif isinstance(value, (tuple, list)):
        out.append((b"(" if isinstance(value, tuple) else b"[") + _U32.pack(len(value)))
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, dict):
        out.append(b"{" + _U32.pack(len(value)))
        for key, item in value.items():
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    else:
        raise TypeError(f"the channel cannot carry a {type(value).__name__} (values, numeric ndarrays "
                        "and tuples / lists / dicts of them only)")


def decode_value(data: bytes) -> Any:
    """The value :func:`encode_value` made of ``data``; WireError for anything else (never another
    exception, never an allocation larger than ``data``)."""
    view = memoryview(data)
    try:
        value, end = _decode(view, 0, 0)
    except WireError:
        raise
    except (struct.error, ValueError, UnicodeDecodeError, IndexError, TypeError) as exc:
        raise WireError(f"malformed value: {type(exc).__name__}: {exc}") from None
    if end != len(view):
        raise WireError(f"malformed value: {len(view) - end} trailing bytes")
    return value


def _need(view: memoryview, pos: int, size: int) -> None:
    if size < 0 or pos + size > len(view):
        raise WireError(f"malformed value: {size} bytes wanted at {pos}, {len(view) - pos} left")


def _decode(view: memoryview, pos: int, depth: int) -> tuple[Any, int]:
    if depth > _MAX_DEPTH:
        raise WireError(f"malformed value: nested deeper than {_MAX_DEPTH}")
    _need(view, pos, 1)
    tag = bytes(view[pos:pos + 1])
    pos += 1
    if tag == b"N":
        return None, pos
    if tag in (b"T", b"F"):
        return tag == b"T", pos
    if tag == b"i":
        _need(view, pos, 8)
        return _I64.unpack_from(view, pos)[0], pos + 8
    if tag == b"f":
        _need(view, pos, 8)
        return _F64.unpack_from(view, pos)[0], pos + 8
    if tag in (b"s", b"y"):
        _need(view, pos, 4)
        size = _U32.unpack_from(view, pos)[0]
        pos += 4
        _need(view, pos, size)
        raw = bytes(view[pos:pos + size])
        return (raw.decode("utf-8") if tag == b"s" else raw), pos + size
    if tag == b"a":
        _need(view, pos, 2)
        code, ndim = view[pos], view[pos + 1]
        pos += 2
        if code not in _DTYPES or ndim > _MAX_NDIM:
            raise WireError(f"malformed array: dtype code {code}, {ndim} dimensions")
        _need(view, pos, 8 * ndim)
        shape = struct.unpack_from(f">{ndim}Q", view, pos)
        pos += 8 * ndim
        dtype = _DTYPES[code]
        size = math.prod(shape) * dtype.itemsize          # Python ints: no overflow
        _need(view, pos, size)
        array = np.frombuffer(view, dtype=dtype, count=size // dtype.itemsize, offset=pos).reshape(shape)
        return array.copy(), pos + size
    if tag in (b"(", b"[", b"{"):
        _need(view, pos, 4)
        count = _U32.unpack_from(view, pos)[0]
        pos += 4
        # every item takes at least one byte: a count larger than what is left is a lie
        _need(view, pos, count * (2 if tag == b"{" else 1))
        items = []
        for _ in range(count * (2 if tag == b"{" else 1)):
            item, pos = _decode(view, pos, depth + 1)
            items.append(item)
        if tag == b"(":
            return tuple(items), pos
        if tag == b"[":
            return items, pos
        keys = items[0::2]
        if not all(_hashable(k) for k in keys):
            raise WireError("malformed value: a dict key that cannot be hashed")
        return dict(zip(keys, items[1::2])), pos
    raise WireError(f"malformed value: unknown tag {tag!r}")


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


# ------------------------------------------------------------------------------ frames
class _Authenticated:
    """Seals a frame's payload with an HMAC-SHA256 tag over header and payload (in the clear)."""

    version, tag_bytes = VERSION, TAG_BYTES

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _tag(self, header: bytes, payload: bytes) -> bytes:
        mac = hmac.new(self._key, header, hashlib.sha256)
        mac.update(payload)
        return mac.digest()

    def seal(self, header: bytes, payload: bytes, sequence: int) -> bytes:
        return payload + self._tag(header, payload)

    def open(self, header: bytes, body: bytes, sequence: int) -> bytes:
        payload, tag = body[:-TAG_BYTES], body[-TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(header, payload)):
            raise WireError("frame authentication failed (bad HMAC)")
        return payload


class _Encrypted:
    """Seals a frame's payload with AES-256-GCM: the header is associated data, the nonce is
    the frame's sequence number, so no (key, nonce) pair repeats and a frame opens only at the
    position it was sealed for."""

    version, tag_bytes = VERSION_ENCRYPTED, GCM_TAG_BYTES

    def __init__(self, key: bytes) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:      # a declared dependency; said plainly if an install lacks it
            raise RuntimeError("the resident channel encrypts its frames (Spark's network encryption is on) "
                               "and needs the 'cryptography' package: pip install cryptography") from exc
        if len(key) != 32:
            raise ValueError(f"an AES-256-GCM key has 32 bytes, got {len(key)}")
        self._aead = AESGCM(key)

    @staticmethod
    def _nonce(sequence: int) -> bytes:
        return b"\0\0\0\0" + struct.pack(">Q", sequence)

    def seal(self, header: bytes, payload: bytes, sequence: int) -> bytes:
        return self._aead.encrypt(self._nonce(sequence), payload, header)

    def open(self, header: bytes, body: bytes, sequence: int) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(self._nonce(sequence), body, header)
        except InvalidTag:
            raise WireError("frame authentication failed (bad AES-GCM tag: tampered, replayed, "
                            "reordered or another key)") from None


def _sealer(key: bytes, encrypted: bool) -> "_Authenticated | _Encrypted":
    return _Encrypted(key) if encrypted else _Authenticated(key)


def encode_frame(key: bytes, frame_type: int, sequence: int, value: Any,
                 max_frame: int = MAX_FRAME_BYTES, *, encrypted: bool = AUTHENTICATED) -> bytes:
    """One authenticated (``encrypted``: encrypted and authenticated) frame carrying ``value``
    (TypeError if it cannot be carried or is larger than ``max_frame``)."""
    return _encode_sealed(_sealer(key, encrypted), frame_type, sequence, value, max_frame)


def _encode_sealed(sealer: Any, frame_type: int, sequence: int, value: Any, max_frame: int) -> bytes:
    payload = encode_value(value)
    if len(payload) > max_frame:
        raise TypeError(f"a message of {len(payload)} bytes exceeds the channel's frame limit of {max_frame}")
    header = HEADER.pack(MAGIC_FRAME, sealer.version, frame_type, sequence, len(payload))
    return header + sealer.seal(header, payload, sequence)


def frame_bytes(value: Any, encrypted: bool = AUTHENTICATED) -> int:
    """The size in bytes of the frame that carries ``value`` (TypeError if it cannot be carried)."""
    return HEADER.size + len(encode_value(value)) + (GCM_TAG_BYTES if encrypted else TAG_BYTES)


def read_frame(read_exact: Callable[[int], bytes], key: bytes, expected_sequence: int,
               max_frame: int = MAX_FRAME_BYTES, *, encrypted: bool = AUTHENTICATED) -> tuple[int, Any]:
    """(type, value) of the next frame, read through ``read_exact(n)`` (which returns exactly n
    bytes or raises). The header is checked before the body is read, the tag (in constant time;
    ``encrypted``: the GCM tag, on decryption) before the payload is decoded."""
    return _read_sealed(read_exact, _sealer(key, encrypted), expected_sequence, max_frame)


def _read_sealed(read_exact: Callable[[int], bytes], sealer: Any, expected_sequence: int,
                 max_frame: int) -> tuple[int, Any]:
    header = read_exact(HEADER.size)
    magic, version, frame_type, sequence, length = HEADER.unpack(header)
    if magic != MAGIC_FRAME or version not in (VERSION, VERSION_ENCRYPTED):
        raise WireError(f"not a sparkopt frame (magic {magic!r}, version {version})")
    if version != sealer.version:
        raise WireError("an unencrypted frame on an encrypted channel" if version == VERSION
                        else "an encrypted frame on an unencrypted channel")
    if frame_type not in FrameType.ALL:
        raise WireError(f"unknown frame type {frame_type}")
    if length > max_frame:
        raise WireError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    payload = sealer.open(header, read_exact(length + sealer.tag_bytes), expected_sequence)
    if sequence != expected_sequence:
        raise WireError(f"frame out of sequence: got {sequence}, expected {expected_sequence} (replayed?)")
    return frame_type, decode_value(payload)


def socket_reader(sock: socket.socket, deadline: Optional[float]) -> Callable[[int], bytes]:
    """``read_exact(n)`` on ``sock``, done by ``deadline`` (time.monotonic(); None: no deadline).
    The buffer grows with the bytes received, never to a size the peer only announced."""

    def read_exact(size: int) -> bytes:
        buffer = bytearray()
        while len(buffer) < size:
            _time_left(sock, deadline, f"{len(buffer)} of {size} bytes read")
            chunk = sock.recv(min(size - len(buffer), _CHUNK))
            if not chunk:
                raise EOFError(f"peer closed the connection ({len(buffer)} of {size} bytes read)")
            buffer += chunk
        return bytes(buffer)

    return read_exact


def _time_left(sock: socket.socket, deadline: Optional[float], progress: str) -> None:
    """Give the next socket call what remains until ``deadline`` (None: no deadline); past it,
    raise TimeoutError saying how far the transfer got."""
    if deadline is None:
        sock.settimeout(None)
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"deadline passed with {progress}")
    sock.settimeout(remaining)


def _send_all(sock: socket.socket, data: bytes, deadline: Optional[float]) -> None:
    view = memoryview(data)
    while view:
        _time_left(sock, deadline, f"{len(view)} bytes unsent (peer not reading)")
        sent = sock.send(view[:_CHUNK])
        view = view[sent:]


# ------------------------------------------------------------------------------ handshake
def _keys(secret: bytes, session_id: bytes, task_nonce: bytes, driver_nonce: bytes,
          encrypted: bool = AUTHENTICATED) -> dict:
    mode = b"aead" if encrypted else b"hmac"

    def derive(label: bytes) -> bytes:
        return hmac.new(secret, label + mode + session_id + task_nonce + driver_nonce, hashlib.sha256).digest()

    return {"driver": derive(b"driver"), "task": derive(b"task"), "t2d": derive(b"t2d"), "d2t": derive(b"d2t")}


def client_handshake(sock: socket.socket, secret: bytes, session_id: bytes, deadline: float,
                     encrypted: bool = AUTHENTICATED) -> "Channel":
    """The task's side: prove the secret, check the driver's proof; a Channel to the driver
    (``encrypted``: its frames encrypted, which the driver must agree on)."""
    task_nonce = os.urandom(NONCE_BYTES)
    _send_all(sock, MAGIC_HELLO + session_id + task_nonce, deadline)
    reply = socket_reader(sock, deadline)(NONCE_BYTES + TAG_BYTES)
    driver_nonce, proof = reply[:NONCE_BYTES], reply[NONCE_BYTES:]
    keys = _keys(secret, session_id, task_nonce, driver_nonce, encrypted)
    if not hmac.compare_digest(proof, keys["driver"]):
        raise WireError("the driver failed the handshake (wrong secret, session or encryption mode)")
    _send_all(sock, keys["task"], deadline)
    return Channel(sock, send_key=keys["t2d"], recv_key=keys["d2t"], encrypted=encrypted)


def server_handshake(sock: socket.socket, secret: bytes, session_id: bytes, deadline: float,
                     encrypted: bool = AUTHENTICATED) -> "Channel":
    """The driver's side, all of it by ``deadline``: a Channel to an authenticated task."""
    read_exact = socket_reader(sock, deadline)
    hello = read_exact(len(MAGIC_HELLO) + SESSION_ID_BYTES + NONCE_BYTES)
    if hello[:len(MAGIC_HELLO)] != MAGIC_HELLO:
        raise WireError("not a sparkopt handshake")
    if not hmac.compare_digest(hello[len(MAGIC_HELLO):len(MAGIC_HELLO) + SESSION_ID_BYTES], session_id):
        raise WireError("handshake for another session")
    task_nonce = hello[len(MAGIC_HELLO) + SESSION_ID_BYTES:]
    driver_nonce = os.urandom(NONCE_BYTES)
    keys = _keys(secret, session_id, task_nonce, driver_nonce, encrypted)
    _send_all(sock, driver_nonce + keys["driver"], deadline)
    if not hmac.compare_digest(read_exact(TAG_BYTES), keys["task"]):
        raise WireError("the peer failed the handshake (bad HMAC)")
    return Channel(sock, send_key=keys["d2t"], recv_key=keys["t2d"], encrypted=encrypted)


class Channel:
    """One authenticated (``encrypted``: also encrypted) connection: ``send(type, value, deadline)``,
    ``recv(deadline)``. Errors:
    WireError (a bad frame), TimeoutError (the deadline), EOFError / OSError (the peer is gone);
    after any of them the channel is unusable and should be closed."""

    def __init__(self, sock: socket.socket, *, send_key: bytes, recv_key: bytes,
                 max_frame: int = MAX_FRAME_BYTES, encrypted: bool = AUTHENTICATED) -> None:
        self.sock = sock
        self.encrypted = bool(encrypted)
        self._send_key, self._recv_key = send_key, recv_key
        self._send_sealer, self._recv_sealer = _sealer(send_key, encrypted), _sealer(recv_key, encrypted)
        self._sent = 0
        self._received = 0
        self.max_frame = max_frame
        # a task's heartbeat thread sends beside its main thread: numbers and bytes in one order
        self._send_lock = threading.Lock()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, frame_type: int, value: Any, deadline: Optional[float] = None) -> int:
        """Send one frame (safe from several threads); returns its size in bytes."""
        with self._send_lock:
            frame = _encode_sealed(self._send_sealer, frame_type, self._sent, value, self.max_frame)
            self._sent += 1
            _send_all(self.sock, frame, deadline)
        return len(frame)

    def recv(self, deadline: Optional[float] = None) -> tuple[int, Any, int]:
        """(type, value, frame size in bytes) of the next frame."""
        sizes = []
        reader = socket_reader(self.sock, deadline)

        def counted(size: int) -> bytes:
            sizes.append(size)
            return reader(size)

        frame_type, value = _read_sealed(counted, self._recv_sealer, self._received, self.max_frame)
        self._received += 1
        return frame_type, value, sum(sizes)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
