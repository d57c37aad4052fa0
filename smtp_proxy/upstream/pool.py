"""Pooled connections to an SMTP upstream, and the small interface its transactions use.

Up to ``pool_size`` idle connections are kept. Reusing one costs no extra round trip in
the common case:

* an idle connection the upstream closed (its FIN already arrived) is noticed for free
  (``is_connected``) and dropped;
* one idle for more than :data:`PROBE_AFTER` seconds is checked with ``RSET`` (bounded by
  ``connect_timeout``) before reuse, which also catches half-dead connections;
* a connection given back with a transaction still open upstream (refused recipients,
  client RSET, …) is reset with ``RSET`` first; after a DATA reply the upstream has
  already reset itself, so no RSET is needed.

Connecting (TCP + greeting + EHLO + STARTTLS + AUTH) is bounded by ``connect_timeout`` as
a whole.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time

from aiosmtplib import SMTPException
from prometheus_client import CollectorRegistry

from clickrelay.common.logfmt import log_event
from smtp_proxy.config import UpstreamConfig
from smtp_proxy.upstream.connection import Connection, connect, describe_exc
from smtp_proxy.upstream.metrics import metrics_for
from smtp_proxy.upstream.target import parse_target, tls_context
from smtp_proxy.upstream.transaction import SmtpTransaction
from smtp_proxy.upstream.types import UpstreamError

logger = logging.getLogger("clickrelay.upstream")

#: An idle connection older than this is probed with RSET before reuse.
PROBE_AFTER = 5.0
#: Idle connections older than this are closed instead of reused (MTAs drop idle
#: clients after a few minutes; Postfix's smtpd_timeout is 300 s).
IDLE_MAX = 60.0
#: Bound on the polite QUIT when a connection is let go.
QUIT_TIMEOUT = 2.0


class UpstreamPool:
    """Pooled connections to an SMTP upstream (``smtp://``, ``smtp+starttls://``, ``smtps://``).

    ``local_hostname`` is the EHLO name when ``config.helo`` is empty (pass the proxy's
    hostname); with neither, the machine's FQDN. Metrics go to ``registry`` (a private one
    when None).
    """

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        registry: CollectorRegistry | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self.config = config
        self._target = parse_target(config)
        self.description = self._target.description
        self._tls = tls_context(config) if self._target.scheme != "smtp" else None
        self._helo = config.helo or local_hostname or ""
        self.registry = registry if registry is not None else CollectorRegistry()
        self._metrics = metrics_for(self.registry)
        self._idle: list[Connection] = []
        self._extensions: frozenset[str] = frozenset()
        self._max_size: int | None = None
        self._closed = False
        self._numbers = 0
        if self._target.username and self._target.scheme == "smtp":
            log_event(
                logger,
                logging.WARNING,
                "upstream-auth-without-tls",
                upstream=self.description,
                hint="use smtp+starttls:// or smtps:// so the password is not sent in clear",
            )

    # --- for the proxy ----------------------------------------------------------------

    @property
    def extensions(self) -> frozenset[str]:
        """Lower-case ESMTP keywords (``8bitmime``, ``smtputf8``, ``size``, …) the upstream
        advertised on the most recent connection; empty before the first one."""
        return self._extensions

    @property
    def max_size(self) -> int | None:
        """The upstream's advertised SIZE limit (None if unknown or unlimited)."""
        return self._max_size

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def transaction(self) -> SmtpTransaction:
        """A transaction on a pooled (or new) connection; raises :class:`UpstreamError`."""
        if self._closed:
            raise UpstreamError(f"upstream {self.description}: pool is closed")
        while self._idle:
            conn = self._idle.pop()  # most recently used first: the warmest connection
            self._metrics.idle.dec()
            idle_for = time.monotonic() - conn.idle_since
            if not conn.alive or idle_for > IDLE_MAX:
                await self.let_go(conn, polite=conn.alive)
                continue
            if idle_for > PROBE_AFTER and not await self._probe(conn):
                continue
            self._metrics.reused.inc()
            return self._lend(conn, reused=True)
        return self._lend(await self.open_connection(), reused=False)

    async def check(self) -> None:
        """Open and close one connection (startup reachability log); raises UpstreamError."""
        conn = await self.open_connection()
        await self.let_go(conn, polite=True)

    async def close(self) -> None:
        """Close idle connections (QUIT); connections in use are closed when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        self._metrics.idle.dec(len(idle))
        await asyncio.gather(*(self.let_go(conn, polite=True) for conn in idle))

    # --- for its transactions ---------------------------------------------------------

    async def open_connection(self) -> Connection:
        """A new connection, not pooled yet; raises :class:`UpstreamError`."""
        helo = await self._helo_name()
        try:
            smtp = await connect(
                self._target, tls=self._tls, helo=helo, connect_timeout=self.config.connect_timeout
            )
        except (SMTPException, OSError, ssl.SSLError, TimeoutError, ValueError) as exc:
            self._metrics.failures.labels(stage="connect").inc()
            reason = describe_exc(exc)
            log_event(
                logger, logging.WARNING, "upstream-connect-failed",
                upstream=self.description, reason=reason,
            )  # fmt: skip
            raise UpstreamError(f"upstream {self.description}: cannot connect: {reason}") from exc
        smtp.timeout = self.config.timeout
        self._numbers += 1
        self._metrics.opened.inc()
        self._extensions = frozenset(smtp.esmtp_extensions)
        size = smtp.esmtp_extensions.get("size", "")
        self._max_size = int(size) if size.isdigit() and int(size) > 0 else None
        log_event(logger, logging.DEBUG, "upstream-connected", upstream=self.description)
        return Connection(smtp, self._numbers)

    def count_failure(self, stage: str) -> None:
        """One more ``clickrelay_upstream_failures`` at ``stage``."""
        self._metrics.failures.labels(stage=stage).inc()

    async def give_back(self, conn: Connection, *, reusable: bool, reset: bool) -> None:
        """The end of a transaction on ``conn``: back to the pool, or closed.

        ``reusable``: the proxy may reuse it; ``reset``: a transaction is still open
        upstream, so it is reset with RSET first. A dead connection, a full pool or a
        closed one means the connection is let go instead.
        """
        self._metrics.active.dec()
        if not conn.alive:
            conn.abort()
            return
        if not reusable or not self._has_room():
            await self.let_go(conn, polite=True)
            return
        if reset:
            try:
                response = await conn.smtp.execute_command(b"RSET", timeout=self.config.timeout)
            except (SMTPException, OSError):
                self.count_failure("command")
                conn.abort()
                return
            except BaseException:
                conn.abort()
                raise
            if response.code != 250 or not conn.alive:
                await self.let_go(conn, polite=conn.alive)
                return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        self._metrics.idle.inc()

    async def let_go(self, conn: Connection, *, polite: bool) -> None:
        """Close a connection: QUIT (bounded) when it is healthy, else just drop it."""
        if polite and conn.alive:
            try:
                await conn.smtp.execute_command(b"QUIT", timeout=QUIT_TIMEOUT)
            except (SMTPException, OSError):
                pass
            finally:
                conn.abort()
        else:
            conn.abort()

    # --- internals --------------------------------------------------------------------

    def _lend(self, conn: Connection, *, reused: bool) -> SmtpTransaction:
        self._metrics.active.inc()
        return SmtpTransaction(self, conn, reused=reused)

    async def _helo_name(self) -> str:
        if not self._helo:
            # getfqdn may do a DNS lookup: once, off the event loop.
            self._helo = await asyncio.to_thread(socket.getfqdn)
        return self._helo

    async def _probe(self, conn: Connection) -> bool:
        """RSET an idle connection; False (and the connection closed) if it is dead."""
        try:
            response = await conn.smtp.execute_command(
                b"RSET", timeout=min(self.config.connect_timeout, self.config.timeout)
            )
        except (SMTPException, OSError):
            self.count_failure("probe")
            conn.abort()
            return False
        except BaseException:
            conn.abort()
            raise
        if response.code != 250:
            await self.let_go(conn, polite=conn.alive)
            return False
        return True

    def _has_room(self) -> bool:
        return not self._closed and len(self._idle) < self.config.pool_size
