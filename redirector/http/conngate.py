"""Connection caps of the public listener: a total, and a share per client address.

aiohttp itself accepts every connection it is offered. A single client holding a few
thousand half-sent requests would then use up the process's file descriptors, and real
clicks would wait in the kernel's backlog until they time out. The gate admits a new
connection only while the listener holds fewer than ``max_connections`` and the
client's address (an IPv4 address, or the /64 of an IPv6 one — one host usually owns a
whole /64) holds fewer than ``max_per_client``; any other connection gets a one-line
``503`` and is closed at once, before a request is read. Addresses of trusted reverse
proxies only count toward the total: every click arrives through them.

How long an admitted connection may stay without a complete request is aiohttp's
``keepalive_timeout``, which the handlers get from :func:`gated_factory`: it runs from
the moment the connection opens (and again after each response), and bytes trickling
in do not extend it — so a slowloris client loses its connections after that long.

Refusals are counted (``clickrelay_redirector_connections_refused``) and logged in
rate-limited summary lines.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clickrelay.common.floodlog import FloodLog

#: Sent to a connection beyond a cap: a real browser shows it or retries; then we close.
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n"
    b"Retry-After: 1\r\nCache-Control: no-store\r\n\r\n"
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_key(peer: Any) -> str:
    """What one client's connections are counted under: its IPv4 address, its IPv6 /64."""
    host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
    try:
        address = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return str(host)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ConnectionGate(Collector):
    """Counts open connections in total and per client; admits or refuses new ones."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_client: int,
        exempt: Sequence[Network] = (),
        logger: logging.Logger,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.exempt = tuple(exempt)
        self.open = 0
        self.per_client: dict[str, int] = {}
        self.refusals = FloodLog(
            logger,
            "connections-refused",
            hint="connection caps reached: [redirector] max_connections,"
            " max_connections_per_client",
        )
        if registry is not None:
            registry.register(self)

    def _is_exempt(self, key: str) -> bool:
        if not self.exempt:
            return False
        try:
            network = ipaddress.ip_network(key, strict=False)
        except ValueError:
            return False
        return any(
            network.version == ex.version and network.subnet_of(ex)  # type: ignore[arg-type]
            for ex in self.exempt
        )

    def admit(self, peer: Any) -> str | None:
        """The client key to :meth:`release` later, or None: refuse the connection."""
        if self.open >= self.max_connections:
            self.refusals.note("total")
            return None
        key = client_key(peer)
        held = self.per_client.get(key, 0)
        if held >= self.max_per_client and not self._is_exempt(key):
            self.refusals.note("per-client")
            return None
        self.open += 1
        self.per_client[key] = held + 1
        return key

    def release(self, key: str) -> None:
        self.open -= 1
        held = self.per_client.get(key, 0) - 1
        if held > 0:
            self.per_client[key] = held
        else:
            self.per_client.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "clickrelay_redirector_connections",
            "Open connections to the public listener",
            value=self.open,
        )
        refused = CounterMetricFamily(
            "clickrelay_redirector_connections_refused",
            "Connections to the public listener closed at once by a cap (total or per client)",
            labels=["reason"],
        )
        for reason in ("total", "per-client"):
            refused.add_metric([reason], self.refusals.totals.get(reason, 0))
        yield refused


class _GatedHandler(web.RequestHandler):
    """aiohttp's request handler, admitted by the gate before it sees any byte."""

    __slots__ = ("_gate", "_gate_key")

    def __init__(self, gate: ConnectionGate, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._gate_key: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        key = self._gate.admit(transport.get_extra_info("peername"))
        if key is None:
            # uvloop's transports are not asyncio.Transport subclasses but have write().
            cast(asyncio.Transport, transport).write(REFUSAL)
            transport.close()
            return
        self._gate_key = key
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        key, self._gate_key = self._gate_key, None
        if key is None:
            return  # refused: aiohttp never saw this connection
        self._gate.release(key)
        super().connection_lost(exc)


def gated_factory(
    server: web.Server,
    gate: ConnectionGate,
    *,
    loop: asyncio.AbstractEventLoop,
    keepalive_timeout: float,
) -> Callable[[], web.RequestHandler]:
    """A protocol factory for ``loop.create_server``: aiohttp's handlers behind ``gate``."""

    def make() -> web.RequestHandler:
        return _GatedHandler(gate, server, **kwargs)

    # No access log: it would cost time on the hot path and write every client's IP in
    # full, bypassing the configured truncation.
    kwargs: dict[str, Any] = {
        "loop": loop,
        "keepalive_timeout": keepalive_timeout,
        "access_log": None,
    }

    return make
