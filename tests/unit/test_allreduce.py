"""Ring AllReduce between in-process tasks over loopback sockets (sparkopt.engine.allreduce): the
collectives equal a plain sum for any number of tasks and uneven shards, the channels are
authenticated per pair."""
from __future__ import annotations

import secrets
import socket
import threading

import numpy as np
import pytest

from sparkopt.engine.allreduce import MeshError, connect_mesh, open_listener, pair_secret
from sparkopt.solvers.vectors import shard_bounds

SESSION = b"s" * 16


def _meshes(size: int, key: bytes, *, keys=None, timeout: float = 20.0, encrypted: bool = False):
    """Every rank's Mesh (or the exception it raised), built by one thread per rank."""
    listeners = [open_listener("127.0.0.1") for _ in range(size)]
    addresses = [lst.getsockname()[:2] for lst in listeners]
    out: list = [None] * size

    def join(r: int) -> None:
        try:
            out[r] = connect_mesh(r, size, addresses, listeners[r], (keys or [key] * size)[r], SESSION, timeout,
                                  encrypted)
        except Exception as exc:  # noqa: BLE001 - inspected by the test
            out[r] = exc

    threads = [threading.Thread(target=join, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    return out


def _collective(meshes, fn):
    out: list = [None] * len(meshes)

    def run(r):
        try:
            out[r] = fn(meshes[r])
        except Exception as exc:  # noqa: BLE001
            out[r] = exc

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(meshes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("encrypted", [False, True])
def test_allreduce_equals_a_plain_sum(size, encrypted):
    rng = np.random.default_rng(size)
    n = 1000 + 3 * size + 1                       # uneven shards for every size > 1
    vectors = [rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4) for _ in range(size)]
    bounds = shard_bounds(n, size)
    meshes = _meshes(size, secrets.token_bytes(32), encrypted=encrypted)
    assert all(not isinstance(m, Exception) for m in meshes), meshes
    try:
        expected = np.sum(vectors, axis=0)
        scale = np.abs(vectors).sum(axis=0)
        reduced = _collective(meshes, lambda m: m.reduce_scatter(vectors[m.rank], bounds))
        in_place = _collective(meshes, lambda m: m.reduce_scatter(vectors[m.rank].copy(), bounds, overwrite=True))
        for r, part in enumerate(reduced):
            lo, hi = bounds[r]
            assert np.all(np.abs(part - expected[lo:hi]) <= 1e-12 * scale[lo:hi])
            assert np.array_equal(in_place[r], part) and in_place[r].base is None     # not a view of the whole
        full = _collective(meshes, lambda m: m.allreduce(vectors[m.rank], bounds))
        for r in range(size):
            assert np.all(np.abs(full[r] - expected) <= 1e-12 * scale)
            assert np.array_equal(full[r], full[0])           # every rank the same bits
        gathered = _collective(meshes, lambda m: m.all_gather(expected[slice(*bounds[m.rank])], bounds))
        assert all(np.array_equal(g, expected) for g in gathered)
        scalars = _collective(meshes, lambda m: m.allreduce_scalars(np.array([m.rank, 1.0])))
        assert all(np.array_equal(s, [size * (size - 1) / 2, size]) for s in scalars)
        # bytes: each rank sends (n-1)/n of the vector per collective, plus frame overhead
        if size > 1:
            for m in meshes:
                assert m.bytes_sent >= 8 * n * (size - 1) / size * 2
    finally:
        for m in meshes:
            m.close()


def test_empty_shards_when_there_are_more_tasks_than_coordinates():
    bounds = shard_bounds(3, 5)
    meshes = _meshes(5, secrets.token_bytes(32))
    try:
        vectors = [np.arange(3.0) * (r + 1) for r in range(5)]
        full = _collective(meshes, lambda m: m.allreduce(vectors[m.rank], bounds))
        assert all(np.array_equal(f, np.arange(3.0) * 15) for f in full)
    finally:
        for m in meshes:
            m.close()


def test_a_rank_with_another_key_cannot_join():
    key = secrets.token_bytes(32)
    meshes = _meshes(3, key, keys=[key, key, secrets.token_bytes(32)], timeout=3.0)
    try:
        assert isinstance(meshes[2], Exception)
        assert isinstance(meshes[0], MeshError) and "did not connect" in str(meshes[0])
    finally:
        for m in meshes:
            if not isinstance(m, Exception):
                m.close()


def test_strangers_and_false_rank_claims_are_dropped():
    key = secrets.token_bytes(32)
    listener = open_listener("127.0.0.1")
    address = listener.getsockname()[:2]
    result: list = []
    t = threading.Thread(target=lambda: result.append(connect_mesh(0, 2, [address, None], listener, key, SESSION,
                                                                   20.0)))
    t.start()
    # a stranger sending junk, then one claiming rank 1 without the key
    with socket.create_connection(address) as junk:
        junk.sendall(b"GET / HTTP/1.0\r\n\r\n")
    with socket.create_connection(address) as liar:
        liar.sendall(b"SPR1" + (1).to_bytes(4, "big") + SESSION + b"n" * 32)
        liar.recv(64)
        liar.sendall(b"x" * 32)
    from sparkopt.engine.allreduce import _connect_peer
    import time
    real = _connect_peer(1, 0, address, key, SESSION, time.monotonic() + 10, False)
    t.join(20)
    mesh = result[0]
    try:
        assert set(mesh.channels) == {1}
        peer = type(mesh)(1, 2, {0: real}, 5.0)
        out = _collective([mesh, peer], lambda m: m.allreduce(np.full(4, m.rank + 1.0), [(0, 2), (2, 4)]))
        assert all(np.array_equal(o, np.full(4, 3.0)) for o in out)
    finally:
        mesh.close()
        real.close()


def test_pair_secrets_are_per_pair_and_symmetric():
    key = b"k" * 32
    assert pair_secret(key, 1, 2) == pair_secret(key, 2, 1)
    assert len({pair_secret(key, a, b) for a in range(4) for b in range(4) if a < b}) == 6


def test_a_lost_peer_is_a_mesh_error():
    meshes = _meshes(2, secrets.token_bytes(32), timeout=2.0)
    meshes[1].close()
    with pytest.raises(MeshError, match="lost rank 1"):
        meshes[0].recv(1)
    meshes[0].close()
