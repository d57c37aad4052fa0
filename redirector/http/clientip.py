"""Who clicked: the client address behind trusted reverse proxies, and how much of it we keep.

``X-Forwarded-For`` is believed only when the TCP peer is one of ``trusted_proxies``; then
the list is walked from the right (the hop our proxy added) past every trusted proxy, and
the first untrusted address is the client. Anything left of it was written by the client
itself and could be forged, so it is never used.

What is stored is then cut down per ``ip_mode``: ``truncate`` keeps the network part
(``/24`` IPv4, ``/48`` IPv6 by default), ``full`` keeps it all, ``none`` keeps nothing.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from redirector.config import RedirectorConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Most distinct (peer, forwarded-for) pairs ClientIpPolicy.describe() remembers.
_MEMO_SIZE = 4096


@lru_cache(maxsize=4096)  # peers repeat (keep-alive, proxies); ipaddress parsing is slow
def parse_ip(text: str) -> IPAddress | None:
    """An address from a peer name or a forwarded-for entry; None when it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``, ``[2001:db8::1]:443``; an
    IPv4-mapped IPv6 address (``::ffff:1.2.3.4``, what dual-stack sockets report) becomes
    the IPv4 address so that prefixes and trusted networks work as written.
    """
    value = text.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class ClientIpPolicy:
    """The ``[redirector]`` settings about client addresses, parsed once."""

    trusted_proxies: tuple[IPNetwork, ...] = ()
    ip_mode: str = "truncate"
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48
    #: describe()'s answers by (peer, forwarded-for headers); bounded, see describe().
    _memo: dict[tuple[str | None, tuple[str, ...]], tuple[str | None, str | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    @classmethod
    def from_config(cls, config: RedirectorConfig) -> ClientIpPolicy:
        return cls(
            trusted_proxies=tuple(
                ipaddress.ip_network(net, strict=False) for net in config.trusted_proxies
            ),
            ip_mode=config.ip_mode,
            ipv4_prefix=config.ipv4_prefix,
            ipv6_prefix=config.ipv6_prefix,
        )

    def is_trusted(self, address: IPAddress) -> bool:
        return any(address in net for net in self.trusted_proxies)

    def client_address(self, peer: str | None, forwarded_for: Iterable[str]) -> IPAddress | None:
        """The client's full address: the peer, or the rightmost untrusted forwarded hop."""
        current = parse_ip(peer) if peer else None
        if current is None or not self.trusted_proxies or not self.is_trusted(current):
            return current
        hops = [hop for header in forwarded_for for hop in header.split(",")]
        for raw in reversed(hops):
            hop = parse_ip(raw)
            if hop is None:
                # A trusted proxy passed on garbage: the last address we can vouch for
                # is the proxy itself.
                return current
            current = hop
            if not self.is_trusted(hop):
                return hop
        return current

    def describe(
        self, peer: str | None, forwarded_for: tuple[str, ...] = ()
    ) -> tuple[str | None, str | None]:
        """``(client address as text, its stored form)`` for one request; memoised.

        The same answer as ``str(client_address(...))`` and ``stored(client_address(...))``
        — but a redirect is answered many times per peer (keep-alive, a few proxies), and
        formatting an address object costs more than the rest of the lookup.
        """
        key = (peer, forwarded_for)
        known = self._memo.get(key)
        if known is not None:
            return known
        address = self.client_address(peer, forwarded_for)
        answer = (None if address is None else str(address), self.stored(address))
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()  # crude but bounded; refills with the busy peers at once
        self._memo[key] = answer
        return answer

    def stored(self, address: IPAddress | None) -> str | None:
        """The form of ``address`` that may be recorded with a click."""
        if address is None or self.ip_mode == "none":
            return None
        if self.ip_mode == "full":
            return str(address)
        prefix = self.ipv4_prefix if address.version == 4 else self.ipv6_prefix
        return _network_address(address, prefix)


@lru_cache(maxsize=4096)
def _network_address(address: IPAddress, prefix: int) -> str:
    """``address`` with all but its first ``prefix`` bits cleared, as text."""
    bits = address.max_prefixlen
    # Integer masking: ip_network(..., strict=False) does the same, ~10x slower.
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)
    return str(type(address)(int(address) & mask))
