"""The resident listener's peer filter without Spark: only the application's hosts (resolved to
addresses) pass, an unknown address looks the hosts up again at most once per refresh interval
(an executor added mid-session gets in), and each rejected address is reported once."""
import logging

import pytest

from sparkopt.engine.resident import PeerFilter, _normal_address


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
