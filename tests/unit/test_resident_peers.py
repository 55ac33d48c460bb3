"""The resident channel's peers without Spark. The listener's filter: only the application's hosts
(resolved to addresses) pass, an unknown address looks the hosts up again at most once per
refresh interval (an executor added mid-session gets in), each rejected address is reported once.
Liveness: a folding task's heartbeats keep its own deadline alive, never another task's, and
never past the hard cap. Every wait here is bounded (a few seconds at most)."""
import logging
import socket
import threading
import time

import numpy as np
import pytest

from sparkopt.engine.resident import (PeerFilter, SessionLost, _normal_address, _Session, heartbeat_interval,
                                      heartbeats)
from sparkopt.engine.wire import Channel, FrameType


class _Hosts:
    """A changing list of the application's hosts, counting how often it is asked."""

    def __init__(self, *hosts):
        self.hosts = list(hosts)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return list(self.hosts)


def test_only_addresses_of_the_application_hosts_pass():
    peers = PeerFilter(_Hosts("127.0.0.1", "localhost"), refresh_seconds=3600)
    assert peers.allows("127.0.0.1")
    assert not peers.allows("127.0.0.2") and not peers.allows("10.1.2.3")
    assert "127.0.0.1" in peers.addresses and "127.0.0.2" not in peers.addresses


def test_an_executor_added_later_is_found_by_looking_the_hosts_up_again():
    hosts = _Hosts("127.0.0.1")
    peers = PeerFilter(hosts, refresh_seconds=0.0)
    assert not peers.allows("127.0.0.3")
    hosts.hosts.append("127.0.0.3")            # a new executor registers with Spark
    assert peers.allows("127.0.0.3")
    assert peers.allows("127.0.0.1") and hosts.calls == 3   # a known address costs no look-up


def test_a_flood_of_strangers_costs_one_look_up_per_refresh_interval():
    hosts = _Hosts("127.0.0.1")
    peers = PeerFilter(hosts, refresh_seconds=3600)
    assert not any(peers.allows(f"10.0.{i // 250}.{i % 250}") for i in range(1000))
    assert hosts.calls == 1 and peers.lookups == 1


def test_extra_hosts_and_allow_any():
    peers = PeerFilter(_Hosts(), extra=["127.0.0.5"], refresh_seconds=3600)
    assert peers.allows("127.0.0.5") and not peers.allows("127.0.0.1")
    anyone = PeerFilter(_Hosts(), allow_any=True)
    assert anyone.allows("203.0.113.9")


def test_a_failing_host_listing_keeps_the_hosts_known(caplog):
    hosts = _Hosts("127.0.0.1")
    peers = PeerFilter(hosts, refresh_seconds=0.0)

    def broken():
        raise RuntimeError("the JVM is gone")

    peers._hosts = broken
    with caplog.at_level(logging.WARNING, logger="sparkopt"):
        assert not peers.allows("127.0.0.9")
    assert peers.allows("127.0.0.1")
    assert any("cannot list the application's executors" in r.getMessage() for r in caplog.records)


def test_an_unresolvable_host_allows_nothing(monkeypatch):
    import socket

    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)     # hermetic: no resolver asked
    peers = PeerFilter(_Hosts("no-such-host.invalid"), refresh_seconds=3600)
    assert peers.addresses == frozenset() and not peers.allows("127.0.0.1")


def test_each_rejected_address_is_reported_once():
    peers = PeerFilter(_Hosts("127.0.0.1"))
    assert peers.first_rejection("127.0.0.2")
    assert not peers.first_rejection("127.0.0.2") and not peers.first_rejection("::ffff:127.0.0.2")
    assert peers.first_rejection("127.0.0.3")


@pytest.mark.parametrize("raw, normal", [("::ffff:10.0.0.1", "10.0.0.1"), ("fe80::1%eth0", "fe80::1"),
                                         ("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("not-an-ip", "not-an-ip")])
def test_peer_addresses_are_normalized(raw, normal):
    assert _normal_address(raw) == normal


# ------------------------------------------------------------------------------ liveness
def _channel_pair(encrypted=False):
    """(task end, driver end) of one connection, keys as a handshake would leave them."""
    a, b = socket.socketpair()
    t2d, d2t = bytes(range(32)), bytes(range(32, 64))
    return (Channel(a, send_key=t2d, recv_key=d2t, encrypted=encrypted),
            Channel(b, send_key=d2t, recv_key=t2d, encrypted=encrypted))


def _driver_side():
    """A session's driver side with no Spark job behind it: enough for _incoming."""
    session = _Session.__new__(_Session)
    session._job_done = threading.Event()
    session.job_error = None
    session.heartbeats = 0
    return session


@pytest.mark.parametrize("encrypted", [False, True])
def test_heartbeats_arrive_while_the_block_runs_and_stop_before_the_reply(encrypted):
    task, driver = _channel_pair(encrypted)
    try:
        with heartbeats(task, 0.05):
            time.sleep(0.4)
        task.send(FrameType.REPLY, (1.0, np.ones(2)))
        kinds = []
        for _ in range(50):
            kind, value, _ = driver.recv(time.monotonic() + 2)
            kinds.append(kind)
            if kind == FrameType.REPLY:
                break
        # numbered in one sequence with the reply (the send lock), and none after it
        assert kinds[-1] == FrameType.REPLY and set(kinds[:-1]) == {FrameType.HEARTBEAT} and len(kinds) >= 4
        task.send(FrameType.STOP, None)
        assert driver.recv(time.monotonic() + 2)[0] == FrameType.STOP
    finally:
        task.close()
        driver.close()


def test_no_heartbeats_without_an_interval():
    task, driver = _channel_pair()
    try:
        with heartbeats(task, None):
            time.sleep(0.1)
        task.send(FrameType.REPLY, 2.0)
        assert driver.recv(time.monotonic() + 2)[:2] == (FrameType.REPLY, 2.0)
    finally:
        task.close()
        driver.close()


def test_heartbeat_interval_is_a_quarter_deadline_at_most_five_seconds():
    assert heartbeat_interval(3.0) == 0.75 and heartbeat_interval(30.0) == 5.0


def _busy_task(channel, seconds, interval=0.05):
    """A task that folds for `seconds` (heartbeating) and then replies."""
    def run():
        try:
            with heartbeats(channel, interval):
                time.sleep(seconds)
            channel.send(FrameType.REPLY, float(seconds))
        except OSError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_heartbeating_task_outlives_the_request_deadline():
    task, driver = _channel_pair()
    session = _driver_side()
    waiting = {driver: 0}
    replies = []
    thread = _busy_task(task, 1.0)
    try:
        for _, kind, value, _ in session._incoming(waiting, 0.3, per_task=True, cap=5.0):
            if kind == FrameType.REPLY:
                replies.append(value)
                del waiting[driver]
    finally:
        task.close()
        driver.close()
        thread.join(5)
    assert replies == [1.0] and session.heartbeats >= 5


def test_without_heartbeats_the_same_task_misses_the_deadline():
    task, driver = _channel_pair()
    session = _driver_side()
    thread = _busy_task(task, 1.0, interval=None)
    try:
        with pytest.raises(SessionLost, match="missed the request deadline of 0.3 s"):
            for _ in session._incoming({driver: 0}, 0.3, per_task=True, cap=5.0):
                pass
    finally:
        task.close()
        driver.close()
        thread.join(5)


def test_a_silent_task_is_lost_although_another_one_heartbeats():
    busy, busy_driver = _channel_pair()
    silent, silent_driver = _channel_pair()
    session = _driver_side()
    waiting = {busy_driver: 0, silent_driver: 1}
    thread = _busy_task(busy, 1.5)
    start = time.monotonic()
    try:
        with pytest.raises(SessionLost, match=r"task\(s\) \[1\] missed the request deadline"):
            for group, kind, _, _ in session._incoming(waiting, 0.3, per_task=True, cap=5.0):
                if kind == FrameType.REPLY:
                    del waiting[busy_driver]
        elapsed = time.monotonic() - start
    finally:
        for channel in (busy, busy_driver, silent, silent_driver):
            channel.close()
        thread.join(5)
    assert elapsed < 1.5          # found while the other task was still heartbeating


def test_heartbeats_do_not_extend_a_request_past_the_hard_cap():
    task, driver = _channel_pair()
    session = _driver_side()
    thread = _busy_task(task, 3.0)
    try:
        with pytest.raises(SessionLost, match="hard cap of 0.8 s"):
            for _ in session._incoming({driver: 0}, 0.3, per_task=True, cap=0.8):
                pass
    finally:
        task.close()
        driver.close()
        thread.join(5)
