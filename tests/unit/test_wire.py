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

from sparkopt.engine.wire import (ENCRYPTED, HEADER, MAGIC_FRAME, MAX_FRAME_BYTES, SESSION_ID_BYTES, VERSION,
                                  VERSION_ENCRYPTED, Channel, FrameType, WireError, client_handshake,
                                  decode_value, encode_frame, encode_value, read_frame, server_handshake,
                                  socket_reader)

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


def _handshake_pair(client_secret=KEY, server_secret=KEY, session=b"s" * SESSION_ID_BYTES,
                    client_encrypted=False, server_encrypted=False):
    a, b = socket.socketpair()
    result = {}

    def serve():
        try:
            result["server"] = server_handshake(b, server_secret, b"s" * SESSION_ID_BYTES, time.monotonic() + 5,
                                                server_encrypted)
        except Exception as exc:  # noqa: BLE001 - inspected by the test
            result["server"] = exc
            b.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        result["client"] = client_handshake(a, client_secret, session, time.monotonic() + 5, client_encrypted)
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


# ------------------------------------------------------------------ encrypted frames (AES-256-GCM)
@FUZZ
@given(_values, st.integers(0, 1000))
def test_encrypted_frames_round_trip_in_sequence(value, sequence):
    frame = encode_frame(KEY, FrameType.MESSAGE, sequence, value, encrypted=ENCRYPTED)
    kind, got = read_frame(_reader(frame), KEY, sequence, encrypted=ENCRYPTED)
    assert kind == FrameType.MESSAGE and _same(got, value)


def test_encrypted_frames_hide_their_payload():
    secret = b"the coefficients nobody may read" * 4
    plain = encode_frame(KEY, FrameType.EVAL, 0, secret)
    sealed = encode_frame(KEY, FrameType.EVAL, 0, secret, encrypted=ENCRYPTED)
    assert secret in plain and secret not in sealed
    assert sealed[2] == VERSION_ENCRYPTED and len(sealed) == len(plain) - 32 + 16     # GCM tag: 16 bytes
    # the same value at the next sequence number encrypts differently (the nonce is the number)
    again = encode_frame(KEY, FrameType.EVAL, 1, secret, encrypted=ENCRYPTED)
    assert again[HEADER.size:] != sealed[HEADER.size:]


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_as_encrypted_frames_are_rejected(data):
    with pytest.raises((WireError, EOFError)):
        read_frame(_reader(data), KEY, 0, encrypted=ENCRYPTED)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(sorted(FrameType.ALL)), st.integers(0, 3))
def test_a_well_formed_header_over_random_ciphertext_is_rejected(body, kind, sequence):
    header = HEADER.pack(MAGIC_FRAME, VERSION_ENCRYPTED, kind, sequence, max(len(body) - 16, 0))
    with pytest.raises((WireError, EOFError)):
        read_frame(_reader(header + body), KEY, sequence, encrypted=ENCRYPTED)


@FUZZ
@given(_values, st.data())
def test_truncated_and_tampered_encrypted_frames_are_rejected(value, data):
    frame = encode_frame(KEY, FrameType.REPLY, 0, value, encrypted=ENCRYPTED)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(EOFError):
        read_frame(_reader(frame[:cut]), KEY, 0, encrypted=ENCRYPTED)
    position = data.draw(st.integers(0, len(frame) - 1))
    tampered = bytearray(frame)
    tampered[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises((WireError, EOFError)):
        read_frame(_reader(bytes(tampered) + b"\0" * 64), KEY, 0, encrypted=ENCRYPTED)
    with pytest.raises(WireError, match="AES-GCM"):
        read_frame(_reader(frame), OTHER_KEY, 0, encrypted=ENCRYPTED)


def test_tampered_ciphertext_is_dropped_before_decoding():
    frame = bytearray(encode_frame(KEY, FrameType.REPLY, 0, (1.5, np.ones(4)), encrypted=ENCRYPTED))
    frame[HEADER.size + 3] ^= 0x01                      # one bit of the ciphertext
    with pytest.raises(WireError, match="AES-GCM"):
        read_frame(_reader(bytes(frame)), KEY, 0, encrypted=ENCRYPTED)


def test_replayed_reordered_and_renumbered_encrypted_frames_are_rejected():
    frames = [encode_frame(KEY, FrameType.MESSAGE, i, ("push", i), encrypted=ENCRYPTED) for i in range(3)]
    assert read_frame(_reader(frames[0]), KEY, 0, encrypted=ENCRYPTED) == (FrameType.MESSAGE, ("push", 0))
    for frame in (frames[0], frames[2]):                # the same frame again; one skipped
        with pytest.raises(WireError):
            read_frame(_reader(frame), KEY, 1, encrypted=ENCRYPTED)
    # frame 2 relabelled as frame 1: the nonce is the number the receiver expects, so it fails
    renumbered = bytearray(frames[2])
    renumbered[4:12] = (1).to_bytes(8, "big")
    with pytest.raises(WireError, match="AES-GCM"):
        read_frame(_reader(bytes(renumbered)), KEY, 1, encrypted=ENCRYPTED)


def test_a_frame_of_the_other_mode_is_refused():
    with pytest.raises(WireError, match="unencrypted frame on an encrypted channel"):
        read_frame(_reader(encode_frame(KEY, FrameType.STOP, 0, None)), KEY, 0, encrypted=ENCRYPTED)
    with pytest.raises(WireError, match="encrypted frame on an unencrypted channel"):
        read_frame(_reader(encode_frame(KEY, FrameType.STOP, 0, None, encrypted=ENCRYPTED)), KEY, 0)


def test_an_announced_encrypted_length_allocates_nothing_until_the_bytes_arrive():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(HEADER.pack(MAGIC_FRAME, VERSION_ENCRYPTED, FrameType.REPLY, 0, 500_000_000) + b"x" * 10)
        tracemalloc.start()
        try:
            with pytest.raises(TimeoutError):
                read_frame(socket_reader(b, time.monotonic() + 0.3), KEY, 0, MAX_FRAME_BYTES, encrypted=ENCRYPTED)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 5_000_000


def test_encrypted_channel_end_to_end_over_a_socket_pair():
    """Driver side and task side as the resident engine runs them, in-process: handshake, then
    requests, replies and worker messages both ways, all encrypted; a sniffer sees no payload."""
    task, driver = _handshake_pair(client_encrypted=True, server_encrypted=True)
    try:
        assert task.encrypted and driver.encrypted
        coefficients = np.linspace(-1.0, 1.0, 1000)
        for round_ in range(3):
            driver.send(FrameType.EVAL, (b"digest-" + bytes([round_]), coefficients * round_, None, None),
                        time.monotonic() + 5)
            kind, value, _ = task.recv(time.monotonic() + 5)
            assert kind == FrameType.EVAL and np.array_equal(value[1], coefficients * round_)
            task.send(FrameType.REPLY, (float(round_), value[1][:3]), time.monotonic() + 5)
            kind, value, size = driver.recv(time.monotonic() + 5)
            assert kind == FrameType.REPLY and value[0] == float(round_) and size > 0
        task.send(FrameType.MESSAGE, ("push", np.ones(2)), time.monotonic() + 5)
        assert driver.recv(time.monotonic() + 5)[0] == FrameType.MESSAGE
        # what crosses the socket: header in the clear, payload encrypted
        frame = encode_frame(driver._send_key, FrameType.EVAL, driver._sent, ("marker-bytes-xyz",),
                             encrypted=ENCRYPTED)
        assert b"marker-bytes-xyz" not in frame
    finally:
        task.close()
        driver.close()


def test_encrypted_channel_drops_a_tampered_and_a_replayed_frame():
    task, driver = _handshake_pair(client_encrypted=True, server_encrypted=True)
    try:
        frame = encode_frame(task._send_key, FrameType.REPLY, 0, (1.0, np.ones(3)), encrypted=ENCRYPTED)
        task.sock.sendall(frame)
        assert driver.recv(time.monotonic() + 5)[0] == FrameType.REPLY
        task.sock.sendall(frame)                        # recorded and played again
        with pytest.raises(WireError):
            driver.recv(time.monotonic() + 5)
    finally:
        task.close()
        driver.close()
    task, driver = _handshake_pair(client_encrypted=True, server_encrypted=True)
    try:
        frame = bytearray(encode_frame(task._send_key, FrameType.REPLY, 0, (1.0, np.ones(3)), encrypted=ENCRYPTED))
        frame[-20] ^= 0x80
        task.sock.sendall(bytes(frame))
        with pytest.raises(WireError, match="AES-GCM"):
            driver.recv(time.monotonic() + 5)
    finally:
        task.close()
        driver.close()


@pytest.mark.parametrize("client, server", [(True, False), (False, True)])
def test_ends_that_disagree_on_encryption_fail_the_handshake(client, server):
    task, driver = _handshake_pair(client_encrypted=client, server_encrypted=server)
    assert isinstance(task, (WireError, EOFError, OSError))
    assert isinstance(driver, (WireError, EOFError, OSError))


def test_encrypted_handshake_with_the_wrong_secret_fails():
    task, driver = _handshake_pair(OTHER_KEY, KEY, client_encrypted=True, server_encrypted=True)
    assert isinstance(driver, (WireError, EOFError, OSError))
    assert isinstance(task, (WireError, EOFError, OSError))


# ------------------------------------------------------------------ when the channel encrypts
def _conf(**settings):
    values = {key.replace("_", "."): value for key, value in settings.items()}
    return lambda key, default=None: values.get(key, default)


@pytest.mark.parametrize("settings, encrypted", [
    ({}, False),
    ({"spark_network_crypto_enabled": "false"}, False),
    ({"spark_network_crypto_enabled": "true"}, True),
    ({"spark_network_crypto_enabled": "TRUE", "spark_authenticate": "true"}, True),
    ({"spark_ssl_rpc_enabled": "true"}, True),
    ({"spark_authenticate_enableSaslEncryption": "true"}, True),
    ({"spark_io_encryption_enabled": "true"}, False),        # local disk, not the network
    ({"spark_sparkopt_resident_encrypt": "true"}, True),
    ({"spark_sparkopt_resident_encrypt": "false", "spark_network_crypto_enabled": "true"}, True),
])
def test_the_channel_encrypts_when_spark_encrypts_its_network(settings, encrypted):
    from sparkopt.engine.resident import channel_encrypted

    assert channel_encrypted(_conf(**settings)) is encrypted


def test_a_bad_encryption_setting_is_named():
    from sparkopt.engine.resident import channel_encrypted
    from sparkopt.errors import InputError

    with pytest.raises(InputError, match="spark.network.crypto.enabled must be true or false, got 'maybe'"):
        channel_encrypted(_conf(spark_network_crypto_enabled="maybe"))
