"""The resident channel's wire format without Spark: values round-trip, and random bytes, truncated
frames, bad MACs, huge lengths and replays are rejected with WireError (or EOF / timeout from the
socket) only: no other exception, no unpickling, no buffer of a size the peer chose."""
import io
import os
import pickle
import socket
import threading
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from sparkopt.engine.wire import (HEADER, MAGIC_FRAME, MAX_FRAME_BYTES, SESSION_ID_BYTES, VERSION, Channel,
                                  FrameType, WireError, client_handshake, decode_value, encode_frame,
                                  encode_value, read_frame, server_handshake, socket_reader)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_dtypes = st.sampled_from(["<f8", "<f4", "<i8", "<i4", "|u1", "|b1", "<c16"])
_arrays = _dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)))
_scalars = st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1) | \
    st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
_values = st.recursive(_scalars | _arrays, lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=4)
                       | st.dictionaries(st.integers(-5, 5) | st.text(max_size=5), inner, max_size=3),
                       max_leaves=12)


def _same(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _reader(data: bytes):
    stream = io.BytesIO(data)

    def read_exact(size):
        chunk = stream.read(size)
        if len(chunk) != size:
            raise EOFError("truncated")
        return chunk

    return read_exact


@FUZZ
@given(_values)
def test_values_round_trip(value):
    assert _same(decode_value(encode_value(value)), value)


@FUZZ
@given(_values, st.integers(0, 1000))
def test_frames_round_trip_in_sequence(value, sequence):
    frame = encode_frame(KEY, FrameType.MESSAGE, sequence, value)
    kind, got = read_frame(_reader(frame), KEY, sequence)
    assert kind == FrameType.MESSAGE and _same(got, value)


def test_things_that_are_not_values_are_refused_on_the_sending_side():
    for bad in (object(), np.array([object()]), {1, 2}, lambda: 0, 1 << 70, np.array(["a"])):
        with pytest.raises(TypeError, match="channel"):
            encode_value(bad)


@FUZZ
@given(st.binary(max_size=300))
def test_random_payload_bytes_decode_or_raise_wire_error(data):
    try:
        decode_value(data)
    except WireError:
        pass


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_as_frames_are_rejected_before_authentication(data):
    with pytest.raises((WireError, EOFError)):
        read_frame(_reader(data), KEY, 0)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(sorted(FrameType.ALL)))
def test_authenticated_garbage_payload_is_rejected_after_authentication(payload, kind):
    header = HEADER.pack(MAGIC_FRAME, VERSION, kind, 0, len(payload))
    import hashlib
    import hmac
    frame = header + payload + hmac.new(KEY, header + payload, hashlib.sha256).digest()
    try:
        read_frame(_reader(frame), KEY, 0)
    except WireError:
        pass


@FUZZ
@given(_values, st.data())
def test_truncated_and_tampered_frames_are_rejected(value, data):
    frame = encode_frame(KEY, FrameType.REPLY, 0, value)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(EOFError):
        read_frame(_reader(frame[:cut]), KEY, 0)
    position = data.draw(st.integers(0, len(frame) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(frame)
    tampered[position] ^= flip
    with pytest.raises((WireError, EOFError)):
        read_frame(_reader(bytes(tampered) + b"\0" * 64), KEY, 0)
    with pytest.raises(WireError, match="HMAC"):
        read_frame(_reader(frame), OTHER_KEY, 0)


def test_replayed_and_reordered_sequence_numbers_are_rejected():
    frames = [encode_frame(KEY, FrameType.MESSAGE, i, ("push", i)) for i in range(3)]
    assert read_frame(_reader(frames[0]), KEY, 0) == (FrameType.MESSAGE, ("push", 0))
    with pytest.raises(WireError, match="sequence"):
        read_frame(_reader(frames[0]), KEY, 1)          # the same frame again
    with pytest.raises(WireError, match="sequence"):
        read_frame(_reader(frames[2]), KEY, 1)          # one skipped


def test_a_pickle_is_never_unpickled(tmp_path):
    evil = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(evil), "w"))

    blob = pickle.dumps(Payload())
    for data in (blob, len(blob).to_bytes(4, "big") + blob):
        with pytest.raises((WireError, EOFError)):
            read_frame(_reader(data), KEY, 0)
        with pytest.raises(WireError):
            decode_value(data)
    assert not evil.exists()


def test_huge_lengths_are_bounded():
    header = HEADER.pack(MAGIC_FRAME, VERSION, FrameType.REPLY, 0, (1 << 32) - 1)
    with pytest.raises(WireError, match="exceeds the limit"):
        read_frame(_reader(header), KEY, 0)
    # a payload that claims 2^60 array entries in a few bytes
    claim = b"a" + bytes([10, 2]) + (1 << 30).to_bytes(8, "big") + (1 << 30).to_bytes(8, "big")
    with pytest.raises(WireError, match="bytes wanted"):
        decode_value(claim)
    with pytest.raises(WireError, match="bytes wanted"):
        decode_value(b"(" + (1 << 32 - 1).to_bytes(4, "big"))


def test_an_announced_length_allocates_nothing_until_the_bytes_arrive():
    """A peer announces a 500 MB frame (under the limit) and sends 10 bytes: the reader times out
    holding ~10 bytes, not 500 MB."""
    a, b = socket.socketpair()
    with a, b:
        a.sendall(HEADER.pack(MAGIC_FRAME, VERSION, FrameType.REPLY, 0, 500_000_000) + b"x" * 10)
        tracemalloc.start()
        try:
            with pytest.raises(TimeoutError):
                read_frame(socket_reader(b, time.monotonic() + 0.3), KEY, 0, MAX_FRAME_BYTES)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 5_000_000


def _handshake_pair(client_secret=KEY, server_secret=KEY, session=b"s" * SESSION_ID_BYTES):
    a, b = socket.socketpair()
    result = {}

    def serve():
        try:
            result["server"] = server_handshake(b, server_secret, b"s" * SESSION_ID_BYTES, time.monotonic() + 5)
        except Exception as exc:  # noqa: BLE001 - inspected by the test
            result["server"] = exc
            b.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        result["client"] = client_handshake(a, client_secret, session, time.monotonic() + 5)
    except Exception as exc:  # noqa: BLE001 - inspected by the test
        result["client"] = exc
        a.close()
    thread.join(10)
    return result["client"], result["server"]


def test_handshake_then_frames_both_ways():
    task, driver = _handshake_pair()
    try:
        driver.send(FrameType.EVAL, (b"digest", np.arange(3.0), None, None), time.monotonic() + 5)
        kind, value, _ = task.recv(time.monotonic() + 5)
        assert kind == FrameType.EVAL and np.array_equal(value[1], np.arange(3.0))
        task.send(FrameType.REPLY, (1.5, np.ones(2)), time.monotonic() + 5)
        kind, value, size = driver.recv(time.monotonic() + 5)
        assert kind == FrameType.REPLY and value[0] == 1.5 and size > 0
    finally:
        task.close()
        driver.close()


def test_a_frame_reflected_to_its_sender_is_rejected():
    task, driver = _handshake_pair()
    try:
        frame = encode_frame(driver._send_key, FrameType.STOP, 0, None)
        # the frame the driver would send, played back to the driver: the other direction's key
        task.sock.sendall(frame)
        with pytest.raises(WireError, match="HMAC"):
            driver.recv(time.monotonic() + 5)
    finally:
        task.close()
        driver.close()


@pytest.mark.parametrize("client, server, session", [
    (OTHER_KEY, KEY, b"s" * SESSION_ID_BYTES), (KEY, KEY, b"t" * SESSION_ID_BYTES)])
def test_handshake_with_the_wrong_secret_or_session_fails_on_both_sides(client, server, session):
    task, driver = _handshake_pair(client, server, session)
    assert isinstance(driver, (WireError, EOFError, OSError))
    assert isinstance(task, (WireError, EOFError, OSError))


def test_handshake_deadline_is_total_not_per_receive():
    """A peer trickling one byte every 0.1 s never lets a per-receive timeout fire; the total
    deadline of 0.5 s ends the handshake anyway."""
    a, b = socket.socketpair()
    stop = threading.Event()

    def trickle():
        for byte in b"SOH1" + b"s" * 100:
            if stop.wait(0.1):
                return
            try:
                a.send(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=trickle)
    thread.start()
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            server_handshake(b, KEY, b"s" * SESSION_ID_BYTES, time.monotonic() + 0.5)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join(5)
        a.close()
        b.close()
    assert elapsed < 3.0
