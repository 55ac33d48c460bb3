"""AllReduce between the tasks of a sharded session: authenticated task-to-task channels and the
ring algorithms over them.

numpy and the standard library only (plus the wire format); never imports pyspark. Every task
holds one shard (a contiguous range of the coordinates; the caller gives the ranges) of a vector; a
**ring reduce-scatter** leaves each task the sum over all tasks of its own shard (n - 1 steps, each
task sending one chunk to the next task and adding the one it receives from the previous), a
**ring all-gather** gives every task every shard (n - 1 steps). Each task sends (n-1)/n of the
vector per collective, whatever n (Patarasuk & Yuan 2009). Sums are formed in a fixed order for
a given n, so a rerun gives the same bits.

Channels: the tasks connect pairwise, the higher rank to the lower, with the frames of
sparkopt.engine.wire (the same handshake, HMAC-authenticated and sequenced frames, AES-GCM when
the session encrypts) under a secret derived per pair from the session's peer key,
``HMAC(key, "pair" | low rank | high rank)``: a task proves it belongs to the session and which
rank it is, and no pair can read or forge another pair's frames. A connection names its claimed
rank first (``b"SPR1" | rank``); a claim the handshake cannot prove is dropped and logged.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import socket
import struct
import threading
import time
from typing import Any, Optional

import numpy as np

from .wire import Channel, FrameType, WireError, client_handshake, server_handshake, socket_reader

__all__ = ["Mesh", "pair_secret", "open_listener", "connect_mesh", "MeshError"]

logger = logging.getLogger("sparkopt")

PEER_MAGIC = b"SPR1"
_RANK = struct.Struct(">I")
#: the most connection attempts that fail their handshake one task tolerates while it waits
MAX_BAD_PEERS = 64


class MeshError(ConnectionError):
    """The task-to-task channels could not be set up or a collective lost a peer."""


def pair_secret(peer_key: bytes, a: int, b: int) -> bytes:
    """The secret of the channel between ranks ``a`` and ``b`` (either order)."""
    low, high = sorted((int(a), int(b)))
    return hmac.new(peer_key, b"pair" + _RANK.pack(low) + _RANK.pack(high), hashlib.sha256).digest()


def open_listener(host: str) -> socket.socket:
    """A listening socket on ``host`` at a free port, for the higher ranks to connect to."""
    server = socket.create_server((host, 0), backlog=64)
    return server


class Mesh:
    """Rank ``rank`` of ``size``: channels to every other rank, the ring collectives over them,
    and the bytes it sent and received."""

    def __init__(self, rank: int, size: int, channels: dict[int, Channel], timeout: float) -> None:
        self.rank, self.size, self.channels, self.timeout = int(rank), int(size), dict(channels), float(timeout)
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- point to point
    def send(self, peer: int, value: Any) -> None:
        try:
            self.bytes_sent += self.channels[peer].send(FrameType.MESSAGE, value, time.monotonic() + self.timeout)
        except (OSError, TimeoutError) as exc:
            raise MeshError(f"rank {self.rank} cannot send to rank {peer}: {exc}") from exc

    def recv(self, peer: int) -> Any:
        try:
            kind, value, size = self.channels[peer].recv(time.monotonic() + self.timeout)
        except (OSError, EOFError, TimeoutError, WireError) as exc:
            raise MeshError(f"rank {self.rank} lost rank {peer}: {type(exc).__name__}: {exc}") from exc
        if kind != FrameType.MESSAGE:
            raise MeshError(f"rank {peer} sent frame type {kind} to rank {self.rank}")
        self.bytes_received += size
        return value

    def _send_recv(self, to: int, value: Any, frm: int) -> Any:
        """Send to one peer while receiving from another (a thread sends: both ends of a ring
        step send at once, and a frame larger than the socket buffers would block both)."""
        error: list[BaseException] = []

        def send() -> None:
            try:
                self.send(to, value)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                error.append(exc)

        sender = threading.Thread(target=send, name="sparkopt-ring-send", daemon=True)
        sender.start()
        try:
            received = self.recv(frm)
        finally:
            sender.join(self.timeout + 1.0)
        if error:
            raise error[0]
        return received

    # -- collectives
    def reduce_scatter(self, vector: np.ndarray, bounds: list[tuple[int, int]], overwrite: bool = False) -> np.ndarray:
        """The sum over all ranks of ``vector`` restricted to this rank's range ``bounds[rank]``
        (every rank passes a vector of the same length and the same bounds). ``overwrite``: sums
        are formed in ``vector`` itself (a float64 temporary of the caller's) instead of a copy."""
        n, r = self.size, self.rank
        if n == 1:
            lo, hi = bounds[0]
            return np.array(vector[lo:hi], dtype=float, copy=True)
        if overwrite and isinstance(vector, np.ndarray) and vector.dtype == np.float64:
            chunks = [vector[lo:hi] for lo, hi in bounds]
        else:
            chunks = [np.array(vector[lo:hi], dtype=float, copy=True) for lo, hi in bounds]
        nxt, prv = (r + 1) % n, (r - 1) % n
        for k in range(n - 1):
            out = (r - k - 1) % n
            inc = (r - k - 2) % n
            received = self._send_recv(nxt, chunks[out], prv)
            if not isinstance(received, np.ndarray) or received.shape != chunks[inc].shape:
                raise MeshError(f"rank {prv} sent a chunk of shape {getattr(received, 'shape', None)}, "
                                f"expected {chunks[inc].shape}")
            chunks[inc] += received
        return chunks[r].copy() if overwrite else chunks[r]

    def all_gather(self, shard: np.ndarray, bounds: list[tuple[int, int]]) -> np.ndarray:
        """The whole vector from every rank's shard (rank r passes its ``bounds[r]`` part)."""
        n, r = self.size, self.rank
        total = bounds[-1][1] if bounds else 0
        out = np.empty((total,) + np.shape(shard)[1:], dtype=float)
        lo, hi = bounds[r]
        out[lo:hi] = shard
        nxt, prv = (r + 1) % n, (r - 1) % n
        for k in range(n - 1):
            send_chunk = (r - k) % n
            recv_chunk = (r - k - 1) % n
            s_lo, s_hi = bounds[send_chunk]
            received = self._send_recv(nxt, out[s_lo:s_hi], prv)
            r_lo, r_hi = bounds[recv_chunk]
            if not isinstance(received, np.ndarray) or received.shape != out[r_lo:r_hi].shape:
                raise MeshError(f"rank {prv} sent a shard of shape {getattr(received, 'shape', None)}")
            out[r_lo:r_hi] = received
        return out

    def allreduce(self, vector: np.ndarray, bounds: list[tuple[int, int]]) -> np.ndarray:
        """The sum over all ranks of ``vector``, on every rank (reduce-scatter, then all-gather)."""
        return self.all_gather(self.reduce_scatter(vector, bounds), bounds)

    def allreduce_scalars(self, values: np.ndarray) -> np.ndarray:
        """A few numbers summed over all ranks (each rank's copy identical: summed in rank order
        after an all-gather, not along the ring)."""
        values = np.atleast_1d(np.asarray(values, dtype=float))
        rows = self.all_gather(values[None, :], [(i, i + 1) for i in range(self.size)])
        out = np.zeros(values.shape)
        for row in rows:
            out += row
        return out

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def connect_mesh(rank: int, size: int, addresses: list, listener: Optional[socket.socket], peer_key: bytes,
                 session_id: bytes, timeout: float, encrypted: bool = False) -> Mesh:
    """Join the mesh: connect to every lower rank (at ``addresses[rank]`` = (host, port)), then
    accept every higher rank on ``listener``, each pair under its own derived secret, all within
    ``timeout`` seconds. Lower ranks accept before higher ranks connect to them, so no cycle of
    waits exists. Returns the :class:`Mesh`; closes ``listener``."""
    deadline = time.monotonic() + timeout
    channels: dict[int, Channel] = {}
    try:
        for peer in range(rank):
            channels[peer] = _connect_peer(rank, peer, tuple(addresses[peer]), peer_key, session_id, deadline,
                                           encrypted)
        bad = 0
        while len(channels) < size - 1:
            if listener is None:
                raise MeshError(f"rank {rank} has no listener for the higher ranks")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(range(size)) - set(channels) - {rank})
                raise MeshError(f"rank {rank}: ranks {missing} did not connect within {timeout:g} s")
            listener.settimeout(min(remaining, 1.0))
            try:
                raw, peer_address = listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            try:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                hello = socket_reader(raw, min(deadline, time.monotonic() + 10.0))(len(PEER_MAGIC) + _RANK.size)
                claimed = _RANK.unpack(hello[len(PEER_MAGIC):])[0]
                if hello[:len(PEER_MAGIC)] != PEER_MAGIC or not rank < claimed < size or claimed in channels:
                    raise WireError(f"not a peer of this session (claims rank {claimed})")
                channels[claimed] = server_handshake(raw, pair_secret(peer_key, rank, claimed), session_id,
                                                     min(deadline, time.monotonic() + 10.0), encrypted)
            except (OSError, EOFError, WireError, struct.error) as exc:
                bad += 1
                logger.warning("sparkopt sharded engine: rank %d dropped a connection from %s (%s)", rank,
                               peer_address, exc)
                with contextlib.suppress(OSError):
                    raw.close()
                if bad > MAX_BAD_PEERS:
                    raise MeshError(f"rank {rank}: more than {MAX_BAD_PEERS} bad connections") from exc
    except BaseException:
        for channel in channels.values():
            channel.close()
        raise
    finally:
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
    return Mesh(rank, size, channels, timeout)


def _connect_peer(rank: int, peer: int, address: tuple, peer_key: bytes, session_id: bytes, deadline: float,
                  encrypted: bool) -> Channel:
    pause, last = 0.05, None
    while time.monotonic() < deadline:
        sock = None
        try:
            sock = socket.create_connection(address, timeout=max(min(deadline - time.monotonic(), 10.0), 0.01))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(PEER_MAGIC + _RANK.pack(rank))
            return client_handshake(sock, pair_secret(peer_key, rank, peer), session_id,
                                    min(deadline, time.monotonic() + 10.0), encrypted)
        except (OSError, EOFError, WireError) as exc:
            last = exc
            if sock is not None:
                sock.close()
        time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(2 * pause, 1.0)
    raise MeshError(f"rank {rank} cannot reach rank {peer} at {address[0]}:{address[1]} "
                    f"({type(last).__name__}: {last})")
