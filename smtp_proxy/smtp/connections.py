"""The registry of open client connections and background upstream work: the connection
count and its gauge, and what shutdown waits for (drain) before it hangs up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any, Protocol

from clickrelay.common.logfmt import log_event
from smtp_proxy.smtp.metrics import ProxyMetrics

logger = logging.getLogger("clickrelay.proxy")

#: Seconds between two ``connections-refused`` log lines at most (a flood of refused
#: connections costs one line per interval, with the counts).
REFUSAL_LOG_INTERVAL = 10.0


class ClientConnection(Protocol):
    """What the registry needs of one client connection (a ProxySMTP)."""

    @property
    def in_transaction(self) -> bool:
        """True from MAIL (or DATA) until the transaction is over."""
        ...

    @property
    def client_task(self) -> asyncio.Task[None] | None:
        """The task that serves the connection's commands; it ends with the connection."""
        ...

    def hang_up(self) -> None: ...


class Connections:
    """Open client connections and background upstream work, for limits and shutdown.

    A connection counts from ``connection_made`` to ``connection_lost`` — the only two
    events asyncio promises in pairs. (A TLS connection whose handshake fails never gets
    either, so counting it any earlier would leak its slot for good.)
    """

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.metrics = metrics
        self.protocols: set[ClientConnection] = set()
        #: Open connections per client key (address, or IPv6 /64).
        self.per_client: Counter[str] = Counter()
        self._client_of: dict[ClientConnection, str] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        #: Set by ProxyService.stop(): transactions in flight finish, new ones are refused.
        self.draining = False
        self._changed = asyncio.Event()
        self._refusals: Counter[str] = Counter()
        self._refusal_logged = -REFUSAL_LOG_INTERVAL

    def refuse(self, reason: str, client: str | None) -> None:
        """Count a connection refused (or closed) for ``reason``; log at most one summary
        line per :data:`REFUSAL_LOG_INTERVAL` seconds."""
        self.metrics.connections_refused.labels(reason=reason).inc()
        self._refusals[reason] += 1
        now = time.monotonic()
        if now - self._refusal_logged < REFUSAL_LOG_INTERVAL:
            return
        self._refusal_logged = now
        counts = ",".join(f"{k}:{v}" for k, v in sorted(self._refusals.items()))
        self._refusals.clear()
        log_event(
            logger,
            logging.WARNING,
            "connections-refused",
            reasons=counts,
            last_client=client,
            open=len(self.protocols),
        )

    def admit(
        self, protocol: ClientConnection, client: str, *, total: int, per_client: int
    ) -> str | None:
        """Count ``protocol`` as open for ``client``; or say why not (nothing counted):
        ``"total"`` (``total`` connections open) or ``"per-client"`` (that client has
        ``per_client`` open)."""
        if len(self.protocols) >= total:
            return "total"
        if self.per_client[client] >= per_client:
            return "per-client"
        self.protocols.add(protocol)
        self._client_of[protocol] = client
        self.per_client[client] += 1
        self.metrics.connections.set(len(self.protocols))
        return None

    def remove(self, protocol: ClientConnection) -> None:
        """The end of a connection :meth:`admit` counted (other calls are ignored)."""
        client = self._client_of.pop(protocol, None)
        if client is None:
            return
        self.protocols.discard(protocol)
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]
        self.metrics.connections.set(len(self.protocols))
        self.notify()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task that shutdown waits for and a hang-up cannot cancel."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log_event(logger, logging.ERROR, "proxy-task-failed", error=repr(task.exception()))
        self.notify()

    def notify(self) -> None:
        """Something :meth:`busy` looks at changed: wake :meth:`wait_idle`."""
        self._changed.set()

    def busy(self) -> bool:
        """True while some client is inside a transaction or upstream work is running."""
        if self.tasks:
            return True
        return any(p.in_transaction for p in self.protocols)

    async def wait_idle(self) -> None:
        """Until no transaction is in flight (wrap in ``asyncio.timeout``)."""
        while self.busy():
            self._changed.clear()
            await self._changed.wait()

    async def close_all(self) -> None:
        """Hang up on every client, then wait for their handlers and our cleanups."""
        coros = []
        for protocol in list(self.protocols):
            protocol.hang_up()
            if protocol.client_task is not None:
                coros.append(protocol.client_task)
        if coros:
            await asyncio.gather(*coros, return_exceptions=True)
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
