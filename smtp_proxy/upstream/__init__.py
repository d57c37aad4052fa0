"""The proxy's upstream side: pooled aiosmtplib connections to the real MTA.

The proxy relays in lock step (no local queue): for each client transaction it takes an
:class:`UpstreamTransaction` from the pool, forwards MAIL, each RCPT and DATA, and hands
the upstream's :class:`Reply` back to its client unchanged. Two kinds of failure:

* the upstream **answered** 4xx/5xx → a :class:`Reply` (never raised); the proxy passes
  it through with its enhanced status code;
* the upstream **could not be talked to** (refused/failed connect, TLS or AUTH failure at
  connect, timeout, connection lost, garbled reply, ``421`` "closing") →
  :class:`UpstreamError`; the proxy answers ``451 4.4.1`` so the client keeps the message
  and retries. After an UpstreamError the transaction is dead: call ``close()`` and stop.

Pooling: up to ``pool_size`` idle connections are kept. Reusing one costs no extra round
trip in the common case:

* an idle connection the upstream closed (its FIN already arrived) is noticed for free
  (``is_connected``) and dropped;
* one idle for more than :data:`PROBE_AFTER` seconds is checked with ``RSET`` (bounded by
  ``connect_timeout``) before reuse, which also catches half-dead connections;
* if MAIL on a reused connection finds it closed (or gets ``421``), MAIL is retried once
  on a fresh connection — nothing has been sent for the transaction yet, so this is safe;
* ``close(reusable=True)`` sends ``RSET`` when a transaction was left open upstream
  (refused recipients, client RSET, …) and returns the connection to the pool; after
  a DATA reply the upstream has already reset itself, so no RSET is needed.

Every network step is bounded: connecting (TCP + greeting + EHLO + STARTTLS + AUTH) by
``connect_timeout`` as a whole, each command and the DATA phase by ``timeout``.

Use :func:`open_upstream` to get the right object for a URL (``maildir:`` included).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtplib import SMTPException, SMTPResponseException
from prometheus_client import CollectorRegistry, Counter, Gauge

from clickrelay.common.errors import ConfigError
from clickrelay.common.logfmt import log_event
from smtp_proxy.config import UpstreamConfig
from smtp_proxy.engine.newlines import normalize_newlines
from smtp_proxy.upstream.types import Reply, Upstream, UpstreamError, UpstreamTransaction

__all__ = [
    "Reply",
    "Upstream",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamTransaction",
    "open_upstream",
]

logger = logging.getLogger("clickrelay.upstream")

#: An idle connection older than this is probed with RSET before reuse.
PROBE_AFTER = 5.0
#: Idle connections older than this are closed instead of reused (MTAs drop idle
#: clients after a few minutes; Postfix's smtpd_timeout is 300 s).
IDLE_MAX = 60.0
#: Bound on the polite QUIT when a connection is let go.
QUIT_TIMEOUT = 2.0

DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


def open_upstream(
    config: UpstreamConfig,
    *,
    registry: CollectorRegistry | None = None,
    local_hostname: str | None = None,
) -> Upstream:
    """An :class:`UpstreamPool` for ``smtp*://`` URLs, a maildir writer for ``maildir:``."""
    if config.url.startswith("maildir:"):
        from smtp_proxy.upstream.maildir import MaildirUpstream

        return MaildirUpstream(config, registry=registry)
    return UpstreamPool(config, registry=registry, local_hostname=local_hostname)


# --- metrics ------------------------------------------------------------------------------


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.opened = Counter(
            "clickrelay_upstream_connections_opened",
            "Upstream SMTP connections opened",
            registry=registry,
        )
        self.reused = Counter(
            "clickrelay_upstream_connections_reused",
            "Transactions that reused a pooled upstream connection",
            registry=registry,
        )
        self.failures = Counter(
            "clickrelay_upstream_failures",
            "Upstream connection failures (connect, command, data, probe)",
            ["stage"],
            registry=registry,
        )
        self.idle = Gauge(
            "clickrelay_upstream_idle_connections",
            "Idle upstream connections in the pool",
            registry=registry,
        )
        self.active = Gauge(
            "clickrelay_upstream_active_transactions",
            "Upstream transactions in progress",
            registry=registry,
        )


# One set of metric objects per registry: a reload may build a new pool on the same
# registry, and registering the same names twice would raise.
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    metrics = _METRICS.get(registry)
    if metrics is None:
        metrics = _METRICS[registry] = _Metrics(registry)
    return metrics


# --- the SMTP pool ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    username: str
    password: str
    description: str


def _parse_target(config: UpstreamConfig) -> _Target:
    parts = urlsplit(config.url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(
            f"upstream.url: expected smtp://, smtp+starttls:// or smtps://, got {config.url!r}"
        )
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ConfigError(f"upstream.url: bad port in {config.url!r}") from None
    # Credentials: the config keys win; userinfo in the URL is accepted too.
    username = config.username or unquote(parts.username or "")
    password = config.password or unquote(parts.password or "")
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return _Target(scheme, host, port, username, password, f"{scheme}://{shown}:{port}")


def _tls_context(config: UpstreamConfig) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(config.ca_file) if config.ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"upstream.ca_file: cannot load {config.ca_file}: {exc}") from None
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, SMTPResponseException):
        return f"{exc.code} {exc.message}".replace("\n", " ")
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class _Connection:
    """One aiosmtplib connection plus pool bookkeeping."""

    __slots__ = ("idle_since", "number", "smtp")

    def __init__(self, smtp: aiosmtplib.SMTP, number: int) -> None:
        self.smtp = smtp
        self.number = number
        self.idle_since = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.smtp.is_connected

    def abort(self) -> None:
        self.smtp.close()


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
        self._target = _parse_target(config)
        self.description = self._target.description
        self._tls = _tls_context(config) if self._target.scheme != "smtp" else None
        self._helo = config.helo or local_hostname or ""
        self.registry = registry if registry is not None else CollectorRegistry()
        self._metrics = _metrics_for(self.registry)
        self._idle: list[_Connection] = []
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

    # --- public -----------------------------------------------------------------------

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

    async def transaction(self) -> _SmtpTransaction:
        """A transaction on a pooled (or new) connection; raises :class:`UpstreamError`."""
        if self._closed:
            raise UpstreamError(f"upstream {self.description}: pool is closed")
        while self._idle:
            conn = self._idle.pop()  # most recently used first: the warmest connection
            self._metrics.idle.dec()
            idle_for = time.monotonic() - conn.idle_since
            if not conn.alive or idle_for > IDLE_MAX:
                await self._let_go(conn, polite=conn.alive)
                continue
            if idle_for > PROBE_AFTER and not await self._probe(conn):
                continue
            self._metrics.reused.inc()
            return _SmtpTransaction(self, conn, reused=True)
        return _SmtpTransaction(self, await self._connect(), reused=False)

    async def check(self) -> None:
        """Open and close one connection (startup reachability log); raises UpstreamError."""
        conn = await self._connect()
        await self._let_go(conn, polite=True)

    async def close(self) -> None:
        """Close idle connections (QUIT); connections in use are closed when released."""
        self._closed = True
        idle, self._idle = self._idle, []
        self._metrics.idle.dec(len(idle))
        await asyncio.gather(*(self._let_go(conn, polite=True) for conn in idle))

    # --- internals --------------------------------------------------------------------

    async def _helo_name(self) -> str:
        if not self._helo:
            # getfqdn may do a DNS lookup: once, off the event loop.
            self._helo = await asyncio.to_thread(socket.getfqdn)
        return self._helo

    async def _connect(self) -> _Connection:
        target = self._target
        smtp = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            use_tls=target.scheme == "smtps",
            start_tls=target.scheme == "smtp+starttls",
            tls_context=self._tls,
            local_hostname=await self._helo_name(),
            username=target.username or None,
            password=target.password or None,
            timeout=self.config.connect_timeout,
        )
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                await smtp.connect()
                # connect() only greets when it needs to (STARTTLS, AUTH); we send raw
                # commands afterwards, so make sure EHLO (or HELO) has been done.
                if smtp.is_ehlo_or_helo_needed:
                    try:
                        await smtp.ehlo()
                    except aiosmtplib.SMTPHeloError:
                        if not smtp.is_connected:
                            raise
                        await smtp.helo()
        except (SMTPException, OSError, ssl.SSLError, TimeoutError, ValueError) as exc:
            smtp.close()
            self._metrics.failures.labels(stage="connect").inc()
            reason = _describe_exc(exc)
            log_event(
                logger, logging.WARNING, "upstream-connect-failed",
                upstream=self.description, reason=reason,
            )  # fmt: skip
            raise UpstreamError(f"upstream {self.description}: cannot connect: {reason}") from exc
        except BaseException:
            smtp.close()
            raise
        smtp.timeout = self.config.timeout
        self._numbers += 1
        self._metrics.opened.inc()
        self._extensions = frozenset(smtp.esmtp_extensions)
        size = smtp.esmtp_extensions.get("size", "")
        self._max_size = int(size) if size.isdigit() and int(size) > 0 else None
        log_event(logger, logging.DEBUG, "upstream-connected", upstream=self.description)
        return _Connection(smtp, self._numbers)

    async def _probe(self, conn: _Connection) -> bool:
        """RSET an idle connection; False (and the connection closed) if it is dead."""
        try:
            response = await conn.smtp.execute_command(
                b"RSET", timeout=min(self.config.connect_timeout, self.config.timeout)
            )
        except (SMTPException, OSError):
            self._metrics.failures.labels(stage="probe").inc()
            conn.abort()
            return False
        except BaseException:
            conn.abort()
            raise
        if response.code != 250:
            await self._let_go(conn, polite=conn.alive)
            return False
        return True

    def _release(self, conn: _Connection) -> None:
        """Back to the pool, if there is room and the pool is open."""
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        self._metrics.idle.inc()

    def _has_room(self) -> bool:
        return not self._closed and len(self._idle) < self.config.pool_size

    async def _let_go(self, conn: _Connection, *, polite: bool) -> None:
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


class _SmtpTransaction:
    """:class:`UpstreamTransaction` over one pooled aiosmtplib connection."""

    def __init__(self, pool: UpstreamPool, conn: _Connection, *, reused: bool) -> None:
        self._pool = pool
        self._conn = conn
        self._reused = reused
        self._started = False  # MAIL sent: the upstream has transaction state
        self._utf8 = False  # MAIL carried SMTPUTF8: addresses may be UTF-8 (RFC 6531)
        self._open = False  # a transaction is open upstream (needs RSET before reuse)
        self._broken = False
        self._closed = False
        pool._metrics.active.inc()

    @property
    def connection_number(self) -> int:
        """Which pool connection this runs on (1-based, per pool; for logs/tests)."""
        return self._conn.number

    async def mail(self, sender: str, options: Sequence[str]) -> Reply:
        """Forward ``MAIL FROM:<sender> options``; upstream 4xx/5xx come back as a Reply."""
        utf8 = any(option.upper() == "SMTPUTF8" for option in options)
        args = _command_args(b"MAIL FROM:", sender, options, utf8=utf8)
        if isinstance(args, Reply):
            return args
        self._utf8 = utf8
        first = not self._started
        self._started = True
        if first and self._reused:
            # A pooled connection may have been closed by the upstream since it was last
            # used; nothing of this transaction has been sent yet, so one retry on a fresh
            # connection is safe.
            try:
                reply = await self._command(args, stage="command")
            except UpstreamError as exc:
                if not exc.connection_lost:
                    raise  # a timeout: retrying would only double the wait
                self._conn.abort()
                self._conn = await self._pool._connect()
                self._broken = False
                self._reused = False
                reply = await self._command(args, stage="command")
        else:
            reply = await self._command(args, stage="command")
        self._open = True
        return reply

    async def rcpt(self, recipient: str, options: Sequence[str]) -> Reply:
        """Forward ``RCPT TO:<recipient> options``; a refusal comes back as a Reply."""
        args = _command_args(b"RCPT TO:", recipient, options, utf8=self._utf8)
        if isinstance(args, Reply):
            return args
        return await self._command(args, stage="command")

    async def data(self, message: bytes) -> Reply:
        """Send ``DATA`` and the message; the upstream's final reply.

        The message is streamed in line-aligned chunks with back-pressure (see
        :func:`_stream_data`), so a 25 MB message costs about one chunk of extra memory,
        not several copies. Bare CR or LF are sent as CRLF and lines starting with ``.``
        are dot-stuffed, so no byte sequence in ``message`` can end the DATA early (the
        proxy rejects or normalises bare newlines before this point anyway).
        """
        self._usable()
        smtp = self._conn.smtp
        try:
            reply = await _stream_data(smtp, message, self._pool.config.timeout)
        except SMTPResponseException as exc:
            reply = Reply(exc.code, exc.message)
        except (SMTPException, OSError, TimeoutError) as exc:
            raise self._fail(exc, stage="data") from exc
        except BaseException:
            self._break()
            raise
        if reply.code == 421 or not 200 <= reply.code <= 599:
            # "Closing channel", or not an SMTP reply at all: the connection is done.
            raise self._fail(SMTPResponseException(reply.code, reply.message), stage="data")
        if not self._conn.alive:
            # The upstream hung up right after answering. The answer stands (a 250 here
            # means delivered: raising would make the client send it twice); the
            # connection is simply not reused.
            self._break()
        # After a 2xx the upstream has reset its transaction state by itself. aiosmtplib
        # reports a refused DATA command (no 354, transaction still open) and a refused
        # message alike, so RSET on release after any refusal; it is harmless.
        self._open = not reply.ok
        return reply

    async def close(self, *, reusable: bool) -> None:
        """End the transaction: back to the pool (after RSET if needed), or discard."""
        if self._closed:
            return
        self._closed = True
        pool = self._pool
        pool._metrics.active.dec()
        conn = self._conn
        if self._broken or not conn.alive:
            conn.abort()
            return
        if not reusable or not pool._has_room():
            await pool._let_go(conn, polite=True)
            return
        if self._open:
            try:
                response = await conn.smtp.execute_command(b"RSET", timeout=pool.config.timeout)
            except (SMTPException, OSError):
                pool._metrics.failures.labels(stage="command").inc()
                conn.abort()
                return
            except BaseException:
                conn.abort()
                raise
            if response.code != 250 or not conn.alive:
                await pool._let_go(conn, polite=conn.alive)
                return
        pool._release(conn)

    # --- internals --------------------------------------------------------------------

    def _usable(self) -> None:
        if self._closed:
            raise UpstreamError("upstream transaction already closed")
        if self._broken:
            raise UpstreamError("upstream connection broken earlier in this transaction")

    def _break(self) -> None:
        self._broken = True
        self._conn.abort()

    def _fail(self, exc: BaseException, *, stage: str) -> UpstreamError:
        self._break()
        self._pool._metrics.failures.labels(stage=stage).inc()
        reason = _describe_exc(exc)
        log_event(
            logger, logging.WARNING, "upstream-failed",
            upstream=self._pool.description, stage=stage, reason=reason,
        )  # fmt: skip
        error = UpstreamError(f"upstream {self._pool.description}: {reason}")
        error.connection_lost = isinstance(exc, aiosmtplib.SMTPServerDisconnected) or (
            isinstance(exc, SMTPResponseException) and exc.code == 421
        )
        return error

    async def _command(self, args: tuple[bytes, ...], *, stage: str) -> Reply:
        self._usable()
        try:
            response = await self._conn.smtp.execute_command(
                *args, timeout=self._pool.config.timeout
            )
        except (SMTPException, OSError) as exc:
            raise self._fail(exc, stage=stage) from exc
        except BaseException:
            self._break()  # cancelled mid-command: the connection's state is unknown
            raise
        reply = Reply(response.code, response.message)
        if reply.code == 421:
            # "Service not available, closing channel": aiosmtplib has closed it already.
            raise self._fail(SMTPResponseException(reply.code, reply.message), stage=stage)
        if not self._conn.alive:
            self._break()  # the answer stands; the next command will raise UpstreamError
        return reply


#: Target size of one DATA write; chunks are cut after a line end.
DATA_CHUNK = 256 * 1024
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _chunk_for_wire(piece: bytes) -> bytes:
    """CRLF line ends and dot-stuffing for a piece that starts at a line start."""
    piece = normalize_newlines(piece)
    if piece.startswith(b".") or b"\n." in piece:
        piece = _LEADING_DOT.sub(b"..", piece)
    return piece


async def _stream_data(smtp: aiosmtplib.SMTP, message: bytes, wait: float) -> Reply:
    """The DATA phase, streamed; each reply and each drain bounded by ``wait`` seconds.

    aiosmtplib's own ``data()`` builds the whole dot-stuffed message in memory (three
    or four copies of a big message at the peak). Here the message goes out in
    :data:`DATA_CHUNK` pieces, cut after a newline so each piece starts at a line start
    (where stuffing is decided), waiting for the transport to drain between pieces.
    """
    protocol = smtp.protocol
    drain = getattr(protocol, "_drain_helper", None)
    if protocol is None or drain is None:  # pragma: no cover - other aiosmtplib versions
        response = await smtp.data(message, timeout=wait)
        return Reply(response.code, response.message)
    start = await smtp.execute_command(b"DATA", timeout=wait)
    if start.code != 354:
        return Reply(start.code, start.message)
    size = len(message)
    pos = 0
    ends_crlf = False
    while pos < size:
        end = pos + DATA_CHUNK
        if end < size:
            newline = message.find(b"\n", end)
            end = size if newline < 0 else newline + 1
        else:
            end = size
        piece = _chunk_for_wire(message[pos:end])
        pos = end
        ends_crlf = piece.endswith(b"\r\n")
        protocol.write(piece)
        await asyncio.wait_for(drain(), wait)
    tail = b".\r\n" if ends_crlf else b"\r\n.\r\n"
    # aiosmtplib >= 5 drops replies that arrive while no command is "pending"; the final
    # reply can come as soon as the last byte is out, so mark it expected before writing.
    if hasattr(protocol, "_response_pending"):
        protocol._response_pending = True
    protocol.write(tail)
    response = await protocol.read_response(timeout=wait)
    return Reply(response.code, response.message)


def _command_args(
    verb: bytes, address: str, options: Sequence[str], *, utf8: bool
) -> tuple[bytes, ...] | Reply:
    """``MAIL FROM:<addr> opts`` as bytes, or a local refusal for unsendable input.

    ``utf8``: the transaction's MAIL carried SMTPUTF8, so addresses go out as UTF-8.
    """
    try:
        addr = address.encode("utf-8" if utf8 else "ascii")
        opts = tuple(option.encode("ascii") for option in options)
    except UnicodeEncodeError:
        return Reply(553, "5.6.7 Non-ASCII address needs SMTPUTF8")
    if any((c < 0x21 and c != 0x20) or c == 0x7F for c in addr) or any(
        c < 0x21 or c == 0x7F for opt in opts for c in opt
    ):
        return Reply(501, "5.5.4 Control characters in address or parameter")
    return (verb + b"<" + addr + b">", *opts)
