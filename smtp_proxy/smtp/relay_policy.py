"""Who may relay through the proxy without AUTH, and the peer-address helpers. Pure logic.

:class:`RelayPolicy` is the ``[proxy] trusted_networks`` check. A client whose address
is in one of these networks may send without AUTH; everyone else must authenticate
first (never an open relay). How often a client may fail AUTH is
:mod:`smtp_proxy.smtp.auth_limiter`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def peer_host(peer: Any) -> str | None:
    """The host part of an asyncio peername: ``(host, port[, flow, scope])`` or None."""
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return None


def parse_address(host: str | None) -> IPAddress | None:
    """An IP address from a peer host; IPv4-mapped IPv6 becomes IPv4; junk becomes None."""
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(host: str | None) -> bool:
    address = parse_address(host)
    return address is not None and address.is_loopback


@dataclass(frozen=True)
class RelayPolicy:
    """The trusted networks; membership = may relay without AUTH."""

    networks: tuple[IPNetwork, ...]

    @classmethod
    def from_networks(cls, networks: Iterable[str]) -> RelayPolicy:
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def is_trusted(self, host: str | None) -> bool:
        """True when ``host`` parses as an address inside a trusted network.

        Unknown or unparsable peers (a unix socket, a missing peername) are never trusted.
        """
        address = parse_address(host)
        if address is None:
            return False
        return any(address.version == net.version and address in net for net in self.networks)
