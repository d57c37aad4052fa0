"""The SMTP side of the proxy: an aiosmtpd handler that relays in lock step.

There is no local queue. Every client transaction is mirrored on an upstream
transaction taken from the pool (:mod:`smtp_proxy.upstream`):

* ``MAIL``: relay permission (trusted network or AUTH), then an upstream transaction
  and the upstream's answer to a MAIL command whose parameters *we* build (SIZE,
  BODY=8BITMIME, SMTPUTF8) — the client's raw parameters are never forwarded.
* ``RCPT``: recipient cap, then the upstream's answer for that very recipient.
* ``DATA``: bare CR/LF check (SMTP smuggling), link rewriting when the tracking domain
  passed preflight (fail-open), the message to the upstream, and the upstream's reply
  with our queue id appended. 250 is only ever the upstream's 250.
* Upstream unreachable, cut or timing out → ``451 4.4.1``: the client keeps the
  message and retries; nothing was accepted.

aiosmtpd calls the ``handle_*`` hooks with ``(server, session, envelope, …)`` and sends
what they return. When a hook returns a status, aiosmtpd does *not* record the address
in the envelope itself, so the hooks do that on success.

Everything that ``reload()`` may change (config, keys, TLS context, users, trusted
networks) lives in one frozen :class:`ProxyRuntime`; connections read the current one
through a callable, so a reload affects the next command without locking.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import ssl
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from clickrelay.common.logfmt import log_event
from redirector.tokens import Keyring
from smtp_proxy.config import ProxySettings
from smtp_proxy.engine.dkim_sign import DkimKey
from smtp_proxy.engine.newlines import has_bare_newline, normalize_newlines
from smtp_proxy.engine.rewriter import RewriteResult, TrackingSettings, rewrite_message
from smtp_proxy.preflight.monitor import PreflightMonitor, normalize_base_url
from smtp_proxy.smtp.metrics import ProxyMetrics
from smtp_proxy.smtp.relay_policy import (
    AuthFailureLimiter,
    RelayPolicy,
    is_loopback,
    limiter_key,
    peer_host,
)
from smtp_proxy.smtp.tracking import sender_base_url, tracking_settings
from smtp_proxy.smtp.users import UsersFile
from smtp_proxy.upstream import Reply, UpstreamError, UpstreamTransaction

logger = logging.getLogger("clickrelay.proxy")

#: DATA is read in pieces of up to this many bytes (see ProxySMTP._receive_data).
READ_PIECE = 65_536

#: Messages larger than this are rewritten in a worker thread so the event loop keeps
#: serving other connections; smaller ones are faster inline (no thread hop).
THREAD_THRESHOLD = 1_000_000

REPLY_RELAY_AUTH = "530 5.7.0 Authentication required"
REPLY_RELAY_DENIED = "554 5.7.1 relay access denied"
REPLY_UPSTREAM_DOWN = "451 4.4.1 upstream unavailable, try again later"
REPLY_TOO_MANY_RCPTS = "452 4.5.3 Too many recipients"
REPLY_BARE_NEWLINE = "550 5.6.0 bare CR or LF not allowed"
REPLY_AUTH_BLOCKED = "421 4.7.0 Too many failed authentication attempts, try again later"
REPLY_AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
REPLY_INTERNAL = "451 4.3.0 internal error, try again later"
REPLY_SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"


# --- small pure helpers -------------------------------------------------------------------

_B32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32: no i/l/o/u confusion
_QID_LOW_BITS = 25
_QID_MILLIS_MASK = (1 << 45) - 1


class _QueueIdClock:
    """Monotonic (millisecond, low bits) state, in the manner of ULID's monotonic mode.

    A fresh random low part per millisecond keeps ids of different processes apart;
    within one process, an id minted in the same millisecond as the previous one (or
    after the wall clock stepped back) is the previous value plus one, so this process
    never mints the same id twice and ids sort in minting order.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next_value(self) -> int:
        millis = int(time.time() * 1000) & _QID_MILLIS_MASK
        # 24 random bits in the 25-bit low part: its top bit starts clear, leaving
        # 2**24 increments before the millisecond field has to be borrowed.
        fresh = (millis << _QID_LOW_BITS) | int.from_bytes(os.urandom(3), "big")
        with self._lock:
            value = fresh if fresh > self._last else self._last + 1
            self._last = value
        return value


_QID_CLOCK = _QueueIdClock()


def new_queue_id() -> str:
    """A 14-character queue id: 45 bits of milliseconds, 25 bits that make it unique.

    Sortable by time (handy when reading logs) and never repeated by one process: ids
    minted in the same millisecond count up from a random start (`_QueueIdClock`).
    Two processes collide only when they start the same millisecond within a few ids
    of the same 24 random bits.
    """
    value = _QID_CLOCK.next_value() & ((1 << 70) - 1)
    return "".join(_B32[(value >> shift) & 31] for shift in range(65, -1, -5))


def upstream_mail_options(client_options: Sequence[str]) -> list[str]:
    """The MAIL parameters we send upstream, built from (never copied from) the client's.

    aiosmtpd has already refused every parameter other than SIZE, BODY and SMTPUTF8,
    and checked their syntax; we still only emit values we construct ourselves.
    """
    options: list[str] = []
    for raw in client_options:
        name, _, value = raw.partition("=")
        name = name.upper()
        if name == "SIZE" and value.isdigit() and len(value) <= 20:
            options.append(f"SIZE={int(value)}")
        elif name == "BODY" and value.upper() == "8BITMIME":
            options.append("BODY=8BITMIME")
        elif name == "SMTPUTF8" and not value:
            options.append("SMTPUTF8")
    return options


def format_reply(reply: Reply, queue_id: str | None = None) -> str:
    """An upstream reply as an SMTP status for aiosmtpd (multi-line joined with CRLF).

    Our queue id is appended to the last line. A 421 from the upstream ("closing
    connection") becomes 451: *our* connection to the client stays open.
    """
    code = reply.code if 200 <= reply.code <= 599 else 451
    if code == 421:
        code = 451
    lines = [line.strip() for line in reply.message.splitlines()] or [""]
    lines = [_printable(line) for line in lines]
    if queue_id:
        lines[-1] = f"{lines[-1]} (clickrelay id {queue_id})".lstrip()
    # _printable left no newline inside a line, so Reply splits them back as they are.
    return str(Reply(code, "\n".join(lines)))


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def with_queue_id(status: str, queue_id: str) -> str:
    return f"{status} (clickrelay id {queue_id})"


# --- what reload() swaps ------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyRuntime:
    """Everything a connection needs that a reload may replace, as one immutable value."""

    config: ProxySettings
    keyring: Keyring
    relay: RelayPolicy
    users: UsersFile | None
    tls_context: ssl.SSLContext | None
    hostname: str
    #: TrackingSettings by normalised base URL (smtp_proxy.smtp.tracking.build_settings).
    settings: Mapping[str, TrackingSettings] = field(default_factory=dict)
    #: DKIM re-signing keys, read when this runtime was built.
    dkim_keys: Mapping[str, DkimKey] = field(default_factory=dict)

    def tracking_settings(self, base_url: str) -> TrackingSettings:
        found = self.settings.get(normalize_base_url(base_url))
        if found is not None:
            return found
        return tracking_settings(self.config, self.keyring, self.dkim_keys, base_url)


class TransactionSource(Protocol):
    """What the handler needs of the upstream pool."""

    async def transaction(self) -> UpstreamTransaction: ...


# --- per-connection state -------------------------------------------------------------------


class ProxySession(Session):
    """aiosmtpd's session plus the upstream transaction that mirrors the client's."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.txn: UpstreamTransaction | None = None
        #: True while a hook awaits the upstream: a hang-up then is handled by that hook.
        self.txn_busy = False
        self.txn_started = 0.0
        self.auth_user: str | None = None


class Connections:
    """Open client connections and background upstream work, for limits and shutdown."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.metrics = metrics
        self.protocols: set[ProxySMTP] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        #: Set by ProxyService.stop(): transactions in flight finish, new ones are refused.
        self.draining = False
        self._changed = asyncio.Event()

    def add(self, protocol: ProxySMTP) -> None:
        self.protocols.add(protocol)
        self.metrics.connections.set(len(self.protocols))

    def remove(self, protocol: ProxySMTP) -> None:
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
        self._changed.set()

    def busy(self) -> bool:
        """True while some client is inside a transaction or upstream work is running."""
        if self.tasks:
            return True
        return any(
            p.in_data or (isinstance(p.session, ProxySession) and p.session.txn is not None)
            for p in self.protocols
        )

    async def wait_idle(self) -> None:
        """Until no transaction is in flight (wrap in ``asyncio.timeout``)."""
        while self.busy():
            self._changed.clear()
            await self._changed.wait()

    async def close_all(self) -> None:
        """Hang up on every client, then wait for their handlers and our cleanups."""
        coros = []
        for protocol in list(self.protocols):
            if protocol.transport is not None:
                protocol.transport.close()
            if protocol.handler_task is not None:
                coros.append(protocol.handler_task)
        if coros:
            await asyncio.gather(*coros, return_exceptions=True)
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


class ProxySMTP(SMTP):
    """aiosmtpd's SMTP with our session type, per-peer AUTH-over-plaintext, DATA timeout."""

    def __init__(
        self,
        handler: ProxyHandler,
        runtime: ProxyRuntime,
        connections: Connections,
        *,
        implicit_tls: bool = False,
    ) -> None:
        proxy = runtime.config.proxy
        super().__init__(
            handler,
            data_size_limit=proxy.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=runtime.hostname,
            ident="ESMTP clickrelay",
            # On the implicit-TLS listener the connection is already encrypted.
            tls_context=None if implicit_tls else runtime.tls_context,
            timeout=proxy.command_timeout,
            auth_require_tls=not implicit_tls,
            loop=asyncio.get_running_loop(),
        )
        self.proxy_handler = handler
        self.connections = connections
        self.implicit_tls = implicit_tls
        self._allow_loopback_auth = proxy.allow_plain_auth_on_loopback
        self._data_timeout = proxy.data_timeout
        self.handler_task: asyncio.Task[None] | None = None
        #: True from the DATA command until its reply was written: shutdown waits for it.
        self.in_data = False
        # Counted from creation (not connection_made) so a burst of accepts cannot
        # overshoot max_connections between the factory call and connection_made.
        connections.add(self)

    def _create_session(self) -> Session:
        return ProxySession(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        old = self.session
        super().connection_made(transport)
        if first:
            host = peer_host(self.session.peer if self.session else None)
            if self._allow_loopback_auth and is_loopback(host):
                # Development convenience, off by default: AUTH without TLS on loopback.
                self._auth_require_tls = False
            self.handler_task = self._handler_coroutine
        elif isinstance(old, ProxySession) and old is not self.session:
            # STARTTLS starts a new session (RFC 3207 4.2): drop any transaction.
            self.proxy_handler.session_ended(old)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        if isinstance(self.session, ProxySession):
            self.proxy_handler.session_ended(self.session)
        self.connections.remove(self)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's timer is reset per command; the whole DATA phase (receiving the
        # message and relaying it) gets data_timeout instead, then commands get theirs.
        self._reset_timeout(self._data_timeout)
        self.in_data = True
        try:
            await self._receive_data(arg)
        finally:
            self.in_data = False
            self.connections.notify()
            if self.transport is not None:
                self._reset_timeout()

    async def _receive_data(self, arg: str) -> None:
        """aiosmtpd's DATA command, receiving the message in large pieces.

        aiosmtpd reads the message one line at a time and keeps every line as its own
        bytearray: for a message of short (quoted-printable) lines that costs about
        6.5x the message in memory, and a read call per line dominates the proxy's
        CPU time. This keeps aiosmtpd's protocol semantics — the data ends only at
        CRLF "." CRLF, so bare CR/LF reach the handler untouched (see
        smtp_proxy.engine.newlines); a line starting with "." loses that dot; a line over
        1000 octets (500) or too much data (552) is answered once the client has sent
        everything — but reading pieces of up to READ_PIECE bytes into one buffer:
        about 2x the message at peak (the buffer and the final bytes copy).
        """
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        size_limit = self.data_size_limit or 0
        reader = self._reader
        # The reader's limit is aiosmtpd's line length (1001); it bounds how far
        # readuntil() looks for the separator and how much the reader buffers. During
        # DATA it is raised to READ_PIECE: pieces of up to that size, whether or not they
        # end in ".\r\n". Restored for the command lines that follow.
        line_limit = reader._limit  # type: ignore[attr-defined]
        reader._limit = READ_PIECE  # type: ignore[attr-defined]
        buffer = bytearray()
        tail = b""  # the last 5 bytes received: is a ".\r\n" at a line start?
        received = 0
        too_much = finished = False
        try:
            while self.transport is not None:
                try:
                    piece: bytes = await reader.readuntil(b".\r\n")
                except asyncio.CancelledError:
                    self._writer.close()
                    raise
                except asyncio.LimitOverrunError as exc:
                    # No ".\r\n" in the next READ_PIECE bytes: take them as they are
                    # (``consumed`` stops short of a separator that may be starting).
                    piece = await reader.read(exc.consumed)
                received += len(piece)
                tail = (tail + piece[-5:])[-5:]
                if size_limit and received > size_limit + 3:
                    too_much = True
                    buffer = bytearray()  # keep draining, keep nothing
                elif not too_much:
                    buffer += piece
                if piece.endswith(b".\r\n") and (received == 3 or tail[:2] == b"\r\n"):
                    finished = True
                    break
        finally:
            reader._limit = line_limit  # type: ignore[attr-defined]
        if not finished:
            return  # connection gone: nothing to hand on
        if too_much:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push("552 Error: Too much mail data")
            return
        del buffer[-3:]  # the final ".\r\n"
        content = bytes(buffer)
        del buffer
        if _longest_line(content) > self.line_length_limit:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            return
        content = _unstuff(content)
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)


def _longest_line(data: bytes) -> int:
    """Length of the longest CRLF-terminated line, CRLF included (as aiosmtpd counts)."""
    if len(data) < 1_000_000:
        # Fast in C; for big messages the list of lines would cost memory instead.
        return max(map(len, data.split(b"\r\n"))) + 2
    longest = 0
    start = 0
    find = data.find
    while True:
        end = find(b"\r\n", start)
        if end < 0:
            return max(longest, len(data) - start)
        if end + 2 - start > longest:
            longest = end + 2 - start
        start = end + 2


def _unstuff(data: bytes) -> bytes:
    """Remove the transparency dot of every line that starts with "." (RFC 5321 4.5.2).

    Returns ``data`` itself when no line starts with "." (no copy)."""
    out = data.replace(b"\r\n.", b"\r\n")
    return out[1:] if out.startswith(b".") else out


class RefuseConnection(asyncio.Protocol):
    """Answers 421 and hangs up: what a connection beyond max_connections gets."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(f"421 4.7.0 {self.hostname} too many connections, try later\r\n".encode())
        transport.close()


# --- the handler ------------------------------------------------------------------------------


@dataclass
class _Outcome:
    data: bytes
    reason: str
    base_url: str = ""
    preflight: str = ""
    result: RewriteResult | None = None


class ProxyHandler:
    """aiosmtpd handler: the lock-step relay. One instance serves every connection.

    Attribute names matter: aiosmtpd treats every ``handle_*`` attribute as a command
    hook and every ``auth_*`` attribute as an AUTH mechanism.
    """

    def __init__(
        self,
        runtime: Callable[[], ProxyRuntime],
        pool: TransactionSource,
        *,
        connections: Connections,
        metrics: ProxyMetrics,
        limiter: AuthFailureLimiter,
        preflight: PreflightMonitor | None = None,
    ) -> None:
        self.runtime = runtime
        self.pool = pool
        self.connections = connections
        self.metrics = metrics
        self.limiter = limiter
        self.preflight = preflight

    # --- session / transaction bookkeeping ---------------------------------------------------

    def session_ended(self, session: ProxySession) -> None:
        """Connection gone (or STARTTLS): give back an idle upstream transaction.

        If a hook is awaiting the upstream right now, that hook is being cancelled and
        its own error path discards the transaction; it is not touched here.
        """
        if session.txn is not None and not session.txn_busy:
            txn, session.txn = session.txn, None
            self.connections.spawn(self._close_txn(txn, reusable=True))

    async def _close_txn(self, txn: UpstreamTransaction, *, reusable: bool) -> None:
        try:
            await txn.close(reusable=reusable)
        except Exception as exc:  # closing must never take a client session down
            log_event(logger, logging.WARNING, "upstream-close-failed", error=repr(exc))
        finally:
            self.connections.notify()

    async def _release(self, session: ProxySession, *, reusable: bool) -> None:
        """End the session's upstream transaction (RSET and back to the pool, or discard).

        Runs as a protected task: a client hanging up meanwhile does not leave a
        half-closed connection in the pool.
        """
        txn, session.txn = session.txn, None
        if txn is not None:
            await asyncio.shield(self.connections.spawn(self._close_txn(txn, reusable=reusable)))

    def _abandon(self, session: ProxySession) -> None:
        """A hook awaiting the upstream was cancelled: its state is unknown, discard it."""
        txn, session.txn = session.txn, None
        if txn is not None:
            self.connections.spawn(self._close_txn(txn, reusable=False))

    async def _upstream_call(
        self,
        session: ProxySession,
        stage: str,
        client: str | None,
        call: Callable[[], Awaitable[Reply]],
    ) -> Reply | None:
        """Await one upstream command of a MAIL/RCPT hook; ``None`` means "answer 451".

        While the call runs the session is marked busy, so a hang-up meanwhile leaves the
        transaction to this hook. An :class:`UpstreamError` is counted, logged as
        ``upstream-error`` with the stage, and the (now unusable) transaction discarded;
        a cancellation (client gone) abandons the transaction, whose state is unknown.
        """
        session.txn_busy = True
        try:
            return await call()
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(stage=stage).inc()
            log_event(
                logger, logging.WARNING, "upstream-error", stage=stage, client=client, error=exc
            )
            await self._release(session, reusable=False)
            return None
        except asyncio.CancelledError:
            self._abandon(session)
            raise
        finally:
            session.txn_busy = False

    def _may_relay(self, runtime: ProxyRuntime, session: Session) -> bool:
        return bool(session.authenticated) or runtime.relay.is_trusted(peer_host(session.peer))

    # --- SMTP hooks ----------------------------------------------------------------------------

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        runtime = self.runtime()
        if runtime.users is None:
            # No users file: there is nothing to authenticate against, so no AUTH.
            responses = [r for r in responses if not r[4:].upper().startswith("AUTH")]
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        sess = cast(ProxySession, session)
        runtime = self.runtime()
        client = peer_host(session.peer)
        if self.connections.draining:
            # Shutting down: an open connection must not start a new transaction (a
            # client that keeps its connection busy would hold the shutdown for the
            # whole grace period). 421 and hang up once the reply is written.
            if server.transport is not None:
                asyncio.get_running_loop().call_soon(server.transport.close)
            return REPLY_SHUTTING_DOWN
        if not self._may_relay(runtime, session):
            self.metrics.relay_denied.inc()
            log_event(logger, logging.INFO, "relay-denied", stage="MAIL", client=client)
            return REPLY_RELAY_AUTH
        if sess.txn is not None:  # a transaction left over from a refused MAIL: start afresh
            await self._release(sess, reusable=True)

        async def begin() -> Reply:
            txn = await self.pool.transaction()
            sess.txn = txn
            sess.txn_started = time.monotonic()
            return await txn.mail(address, upstream_mail_options(mail_options))

        reply = await self._upstream_call(sess, "MAIL", client, begin)
        if reply is None:
            return REPLY_UPSTREAM_DOWN
        if 200 <= reply.code < 300:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        else:
            await self._release(sess, reusable=True)
        return format_reply(reply)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        sess = cast(ProxySession, session)
        runtime = self.runtime()
        if not self._may_relay(runtime, session):
            self.metrics.relay_denied.inc()
            log_event(
                logger, logging.INFO, "relay-denied", stage="RCPT", client=peer_host(session.peer)
            )
            return REPLY_RELAY_DENIED
        txn = sess.txn
        if txn is None:
            return REPLY_UPSTREAM_DOWN
        if len(envelope.rcpt_tos) >= runtime.config.proxy.max_recipients:
            return REPLY_TOO_MANY_RCPTS
        # aiosmtpd refuses every RCPT parameter (555), so there is nothing to forward.
        reply = await self._upstream_call(
            sess, "RCPT", peer_host(session.peer), lambda: txn.rcpt(address, [])
        )
        if reply is None:
            return REPLY_UPSTREAM_DOWN
        if 200 <= reply.code < 300:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return format_reply(reply)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sess = cast(ProxySession, session)
        runtime = self.runtime()
        queue_id = new_queue_id()
        started = sess.txn_started or time.monotonic()
        client = peer_host(session.peer)
        content = envelope.original_content or b""
        fields: dict[str, Any] = {
            "queue_id": queue_id,
            "client": client,
            "user": sess.auth_user,
            "sender": envelope.mail_from,
            "rcpts": len(envelope.rcpt_tos),
            "size": len(content),
        }
        if sess.txn is None:
            self.metrics.messages.labels(outcome="tempfail").inc()
            log_event(logger, logging.WARNING, "message", **fields, outcome="no-upstream")
            return with_queue_id(REPLY_UPSTREAM_DOWN, queue_id)
        if has_bare_newline(content):
            if runtime.config.proxy.bare_newline == "reject":
                await self._release(sess, reusable=True)
                self.metrics.messages.labels(outcome="rejected").inc()
                log_event(logger, logging.WARNING, "message", **fields, outcome="bare-newline")
                return with_queue_id(REPLY_BARE_NEWLINE, queue_id)
            content = normalize_newlines(content)
            fields["normalized"] = "bare-newline"
        recipient = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None
        try:
            outcome = await self._rewrite(
                runtime, envelope.mail_from or "", content, queue_id, recipient
            )
        except asyncio.CancelledError:
            self._abandon(sess)
            raise
        txn, sess.txn = sess.txn, None
        assert txn is not None
        # The upstream send runs as its own task: a client hanging up now must not cut
        # the upstream transaction in half (the upstream then has a clean end, and our
        # log line says what it answered).
        task = self.connections.spawn(self._send(txn, outcome, fields, started))
        return await asyncio.shield(task)

    async def _send(
        self,
        txn: UpstreamTransaction,
        outcome: _Outcome,
        fields: dict[str, Any],
        started: float,
    ) -> str:
        queue_id = str(fields["queue_id"])
        result = outcome.result
        tracked = skipped = 0
        skip_reasons: Counter[str] = Counter()
        if result is not None:
            for link in result.links:
                self.metrics.links.labels(action=link.action, reason=link.reason).inc()
                if link.action == "tracked":
                    tracked += 1
                else:
                    skipped += 1
                    skip_reasons[link.reason] += 1
        self.metrics.rewrites.labels(reason=outcome.reason.partition(":")[0]).inc()
        log_fields = dict(
            fields,
            out_size=len(outcome.data),
            tracking=outcome.base_url,
            preflight=outcome.preflight,
            rewrite=outcome.reason,
            tracked=tracked,
            skipped=skipped,
            skip_reasons=",".join(f"{k}:{v}" for k, v in sorted(skip_reasons.items())) or None,
        )
        try:
            reply = await txn.data(outcome.data)
        except UpstreamError as exc:
            await self._close_txn(txn, reusable=False)
            self.metrics.upstream_errors.labels(stage="DATA").inc()
            self.metrics.messages.labels(outcome="tempfail").inc()
            log_event(
                logger,
                logging.WARNING,
                "message",
                **log_fields,
                outcome="upstream-error",
                error=exc,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
            return with_queue_id(REPLY_UPSTREAM_DOWN, queue_id)
        except BaseException:
            await self._close_txn(txn, reusable=False)
            raise
        await self._close_txn(txn, reusable=True)
        accepted = 200 <= reply.code < 300
        self.metrics.messages.labels(outcome="accepted" if accepted else "refused").inc()
        self.metrics.duration.observe(time.monotonic() - started)
        log_event(
            logger,
            logging.INFO,
            "message",
            **log_fields,
            outcome="accepted" if accepted else "refused",
            upstream=reply.code,
            reply=reply.message.splitlines()[-1] if reply.message else "",
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return format_reply(reply, queue_id)

    async def _rewrite(
        self,
        runtime: ProxyRuntime,
        mail_from: str,
        content: bytes,
        queue_id: str,
        recipient: str | None,
    ) -> _Outcome:
        """Rewrite when allowed; any failure relays ``content`` unchanged (fail-open)."""
        try:
            base_url = sender_base_url(runtime.config, mail_from, content)
            if self.preflight is not None:
                allowed = self.preflight.may_rewrite(base_url)
                state = self.preflight.state(base_url)
            else:
                # No monitor: only a config with preflight switched off means "go ahead".
                allowed = not runtime.config.preflight.enabled
                state = "disabled" if allowed else "no-monitor"
            if not allowed:
                return _Outcome(content, f"preflight-{state}", base_url, state)
            settings = runtime.tracking_settings(base_url)
            if len(content) > THREAD_THRESHOLD:
                result = await asyncio.to_thread(
                    rewrite_message, content, settings, queue_id=queue_id, recipient=recipient
                )
            else:
                result = rewrite_message(content, settings, queue_id=queue_id, recipient=recipient)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.rewrite_errors.inc()
            log_event(logger, logging.ERROR, "rewrite-failed", queue_id=queue_id, error=repr(exc))
            return _Outcome(content, f"error:{type(exc).__name__}")
        if result.reason.startswith("error"):
            self.metrics.rewrite_errors.inc()
            log_event(
                logger, logging.ERROR, "rewrite-failed", queue_id=queue_id, error=result.reason
            )
        return _Outcome(result.data, result.reason, base_url, state, result)

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._release(cast(ProxySession, session), reusable=True)
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._release(cast(ProxySession, session), reusable=True)
        return "221 2.0.0 Bye"

    async def handle_exception(self, error: Exception) -> str:
        log_event(logger, logging.ERROR, "proxy-exception", error=repr(error))
        return REPLY_INTERNAL

    # --- AUTH (aiosmtpd calls these as mechanisms, replacing its built-ins) ---------------------
    # Built-in PLAIN/LOGIN would call a synchronous authenticator; argon2 verification
    # takes tens of milliseconds, so it runs in a thread here instead of stalling the loop.

    async def _first_response(self, server: SMTP, args: list[str], challenge: str) -> bytes | None:
        """The client's first AUTH answer: the base64 initial response on the AUTH line
        itself, or else its reply to ``challenge``. None when the exchange is over: the
        client cancelled (``*``), or the initial response was not base64 (501 sent).
        """
        if len(args) == 1:
            blob = await server.challenge_auth(challenge)
            return None if blob is MISSING else blob
        try:
            return base64.b64decode(args[1].encode(), validate=True)
        except (binascii.Error, ValueError):
            await server.push("501 5.5.2 Can't decode base64")
            return None

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if await self._auth_blocked(server):
            return AuthResult(success=False, handled=True)
        blob = await self._first_response(server, args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await server.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._check_password(server, parts[1], parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if await self._auth_blocked(server):
            return AuthResult(success=False, handled=True)
        login = await self._first_response(server, args, SMTP.AuthLoginUsernameChallenge)
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(password, bytes)
        return await self._check_password(server, login, password)

    async def _auth_blocked(self, server: SMTP) -> bool:
        session = server.session
        key = limiter_key(peer_host(session.peer if session else None))
        if not self.limiter.blocked(key):
            return False
        self.metrics.auth.labels(result="blocked").inc()
        log_event(logger, logging.WARNING, "auth-blocked", client=key)
        await self._hang_up_blocked(server)
        return True

    async def _hang_up_blocked(self, server: SMTP) -> None:
        """421 and close: the client has failed AUTH too often (see AuthFailureLimiter)."""
        await server.push(REPLY_AUTH_BLOCKED)
        if server.transport is not None:
            server.transport.close()

    async def _check_password(self, server: SMTP, login: bytes, password: bytes) -> AuthResult:
        runtime = self.runtime()
        session = server.session
        client = peer_host(session.peer if session else None)
        user = login.decode("utf-8", "replace")
        ok = False
        if runtime.users is not None and login:
            # argon2 takes tens of milliseconds: verify in a worker thread.
            ok = await runtime.users.averify(login, password)
        if ok:
            self.metrics.auth.labels(result="ok").inc()
            log_event(logger, logging.INFO, "auth-ok", client=client, user=user)
            if isinstance(session, ProxySession):
                session.auth_user = user
            return AuthResult(success=True, auth_data=LoginPassword(login, b""))
        self.metrics.auth.labels(result="failed").inc()
        key = limiter_key(client)
        now_blocked = self.limiter.record_failure(key)
        log_event(
            logger, logging.WARNING, "auth-failed", client=client, user=user, blocked=now_blocked
        )
        if now_blocked:
            await self._hang_up_blocked(server)
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=REPLY_AUTH_INVALID)


def protocol_factory(
    handler: ProxyHandler,
    runtime: Callable[[], ProxyRuntime],
    connections: Connections,
    *,
    implicit_tls: bool = False,
) -> Callable[[], asyncio.BaseProtocol]:
    """For ``loop.create_server``: a ProxySMTP per connection, or a 421 beyond the limit."""

    def make() -> asyncio.BaseProtocol:
        current = runtime()
        if len(connections.protocols) >= current.config.proxy.max_connections:
            connections.metrics.connections_refused.inc()
            return RefuseConnection(current.hostname)
        return ProxySMTP(handler, current, connections, implicit_tls=implicit_tls)

    return make
