"""The registry of open client connections and background upstream work: the connection
count and its gauge, and what shutdown waits for (drain) before it hangs up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from clickrelay.common.logfmt import log_event
from smtp_proxy.smtp.metrics import ProxyMetrics

logger = logging.getLogger("clickrelay.proxy")


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
    """Open client connections and background upstream work, for limits and shutdown."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.metrics = metrics
        self.protocols: set[ClientConnection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        #: Set by ProxyService.stop(): transactions in flight finish, new ones are refused.
        self.draining = False
        self._changed = asyncio.Event()

    def add(self, protocol: ClientConnection) -> None:
        self.protocols.add(protocol)
        self.metrics.connections.set(len(self.protocols))

    def remove(self, protocol: ClientConnection) -> None:
        self.protocols.discard(protocol)
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
