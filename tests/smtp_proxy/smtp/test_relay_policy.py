"""Who may relay without AUTH (trusted networks) and the peer-address helpers. Pure."""

from __future__ import annotations

from smtp_proxy.smtp.relay_policy import RelayPolicy, is_loopback, parse_address, peer_host


def test_trusted_networks() -> None:
    policy = RelayPolicy.from_networks(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])
    assert policy.is_trusted("127.0.0.1")
    assert not policy.is_trusted("127.0.0.2")
    assert policy.is_trusted("10.200.3.4")
    assert policy.is_trusted("::ffff:10.1.2.3")  # IPv4-mapped IPv6 counts as IPv4
    assert policy.is_trusted("fd12::1")
    assert policy.is_trusted("fd12::1%eth0")
    assert not policy.is_trusted("fe80::1")
    assert not policy.is_trusted(None)
    assert not policy.is_trusted("")
    assert not policy.is_trusted("not-an-ip")
    assert not RelayPolicy.from_networks([]).is_trusted("127.0.0.1")


def test_peer_helpers() -> None:
    assert peer_host(("127.0.0.1", 2525)) == "127.0.0.1"
    assert peer_host(("::1", 25, 0, 0)) == "::1"
    assert peer_host(None) is None
    assert peer_host("/run/sock") is None
    assert is_loopback("127.0.0.5")
    assert is_loopback("::1")
    assert not is_loopback("192.0.2.1")
    assert not is_loopback(None)
    assert parse_address("garbage") is None
    assert parse_address("::ffff:192.0.2.1") == parse_address("192.0.2.1")
