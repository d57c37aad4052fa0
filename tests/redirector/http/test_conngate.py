"""The public listener's connection gate: who is counted under which key, and the caps."""

from __future__ import annotations

import ipaddress
import logging

from redirector.http.conngate import ConnectionGate, client_key


def gate(total: int = 10, per_client: int = 2, exempt: tuple[str, ...] = ()) -> ConnectionGate:
    return ConnectionGate(
        max_connections=total,
        max_per_client=per_client,
        exempt=[ipaddress.ip_network(n) for n in exempt],
        logger=logging.getLogger("test.conngate"),
    )


def test_ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key(("2001:db8:1:2::1", 1, 0, 0)) == client_key(("2001:db8:1:2:ffff::9", 1, 0, 0))
    assert client_key(("2001:db8:1:3::1", 1, 0, 0)) != client_key(("2001:db8:1:2::1", 1, 0, 0))
    assert client_key(("::ffff:192.0.2.7", 1, 0, 0)) == "192.0.2.7"
    assert client_key(("192.0.2.7", 1)) == "192.0.2.7"
    assert client_key(None) == "None"


def test_per_client_share_then_release() -> None:
    g = gate(per_client=2)
    a1, a2 = g.admit(("192.0.2.1", 1)), g.admit(("192.0.2.1", 2))
    assert a1 == a2 == "192.0.2.1"
    assert g.admit(("192.0.2.1", 3)) is None
    assert g.admit(("192.0.2.2", 1)) == "192.0.2.2"  # another client still gets in
    g.release("192.0.2.1")
    assert g.admit(("192.0.2.1", 4)) == "192.0.2.1"
    assert g.refusals.totals == {"per-client": 1}


def test_total_cap_applies_to_everyone_including_trusted_proxies() -> None:
    g = gate(total=3, per_client=1, exempt=("10.0.0.0/8",))
    assert [g.admit(("10.0.0.5", i)) for i in range(3)] == ["10.0.0.5"] * 3
    assert g.admit(("192.0.2.1", 1)) is None
    assert g.refusals.totals == {"total": 1}
    for _ in range(3):
        g.release("10.0.0.5")
    assert g.open == 0 and g.per_client == {}
