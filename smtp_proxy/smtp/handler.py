"""The aiosmtpd handler that relays in lock step: each client transaction mirrored on an
upstream transaction, each client command answered with the upstream's answer.

There is no local queue. Every client transaction is mirrored on an upstream
transaction taken from the pool (:mod:`smtp_proxy.upstream`):

* ``EHLO``: 8BITMIME and SMTPUTF8 are offered only while the upstream offers them (as
  its most recent EHLO said; before the first upstream connection both are offered).
* ``MAIL``: relay permission (trusted network or AUTH), then an upstream transaction
  and the upstream's answer to a MAIL command whose parameters *we* build (SIZE,
  BODY=8BITMIME, SMTPUTF8) — the client's raw parameters are never forwarded. A
  BODY=8BITMIME or SMTPUTF8 the upstream does not offer is refused here (555 5.5.4,
  550 5.6.7), before anything is accepted: never a 250 for what the next hop refuses.
* ``RCPT``: recipient cap, then the upstream's answer for that very recipient.
* ``DATA``: bare CR/LF check (SMTP smuggling), link rewriting when the tracking domain
  passed preflight (fail-open, :mod:`smtp_proxy.smtp.rewriting`), the message to the
  upstream, and the upstream's reply with our queue id appended. 250 is only ever the
  upstream's 250.
* Upstream unreachable, cut or timing out → ``451 4.4.1``: the client keeps the
  message and retries; nothing was accepted.

aiosmtpd calls the ``handle_*`` hooks with ``(server, session, envelope, …)`` and sends
what they return. When a hook returns a status, aiosmtpd does *not* record the address
in the envelope itself, so the hooks do that on success.

Ending an upstream transaction, one method per act:

* :meth:`~ProxyHandler._close_upstream` — the act itself (RSET and back to the pool, or
  discard); the only caller of ``txn.close``.
* :meth:`~ProxyHandler._end_transaction` — a hook ends its session's transaction and
  waits for that (RSET, QUIT, a refused MAIL or message, an upstream error).
* :meth:`~ProxyHandler._abandon_transaction` — a hook was cancelled mid-command: the
  transaction's state is unknown, so it is discarded in the background.
* :meth:`~ProxyHandler.end_session` — the protocol's call when a session ends (hang-up,
  STARTTLS): an idle transaction goes back to the pool in the background.

The DATA hook hands its transaction over to the send task, which closes it once the
upstream has answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from clickrelay.common.logfmt import log_event
from smtp_proxy.engine.newlines import has_bare_newline, normalize_newlines
from smtp_proxy.preflight.monitor import PreflightMonitor
from smtp_proxy.smtp.auth import Authenticator
from smtp_proxy.smtp.auth_limiter import AuthFailureLimiter
from smtp_proxy.smtp.connections import Connections
from smtp_proxy.smtp.message_report import MessageReport
from smtp_proxy.smtp.metrics import ProxyMetrics
from smtp_proxy.smtp.queue_id import new_queue_id
from smtp_proxy.smtp.relay_policy import peer_host
from smtp_proxy.smtp.replies import (
    REPLY_BARE_NEWLINE,
    REPLY_INTERNAL,
    REPLY_NO_8BITMIME,
    REPLY_NO_SMTPUTF8,
    REPLY_RELAY_AUTH,
    REPLY_RELAY_DENIED,
    REPLY_SHUTTING_DOWN,
    REPLY_TOO_MANY_RCPTS,
    REPLY_UPSTREAM_DOWN,
    format_reply,
    with_queue_id,
)
from smtp_proxy.smtp.rewriting import FailOpenRewriter, Outcome
from smtp_proxy.smtp.runtime import ProxyRuntime
from smtp_proxy.smtp.session import ProxySession
from smtp_proxy.upstream import Reply, UpstreamError, UpstreamTransaction

logger = logging.getLogger("clickrelay.proxy")


class TransactionSource(Protocol):
    """What the handler needs of the upstream pool."""

    async def transaction(self) -> UpstreamTransaction: ...

    @property
    def extensions(self) -> frozenset[str]:
        """The upstream's ESMTP keywords (lower case) as last seen; empty if unknown."""
        ...


#: The extensions we offer only when the upstream offers them: (keyword, MAIL parameter
#: that needs it, the refusal when it is missing).
PASSED_THROUGH_EXTENSIONS = (
    ("8bitmime", "BODY=8BITMIME", REPLY_NO_8BITMIME),
    ("smtputf8", "SMTPUTF8", REPLY_NO_SMTPUTF8),
)


def missing_extension(options: Sequence[str], upstream: frozenset[str]) -> str | None:
    """The refusal for a MAIL parameter (as we send it) the upstream does not offer."""
    if not upstream:
        return None  # not known (yet): let the upstream answer for itself
    for keyword, option, refusal in PASSED_THROUGH_EXTENSIONS:
        if option in options and keyword not in upstream:
            return refusal
    return None


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
        self.authenticator = Authenticator(runtime, metrics, limiter)
        self.rewriter = FailOpenRewriter(metrics, preflight)

    # --- ending upstream transactions ----------------------------------------------------------

    def end_session(self, session: ProxySession) -> None:
        """Connection gone (or STARTTLS): give back an idle upstream transaction.

        If a hook is awaiting the upstream right now, that hook is being cancelled and
        its own error path abandons the transaction; it is not touched here.
        """
        if session.txn is not None and not session.txn_busy:
            txn, session.txn = session.txn, None
            self.connections.spawn(self._close_upstream(txn, reusable=True))

    async def _end_transaction(self, session: ProxySession, *, reusable: bool) -> None:
        """End the session's upstream transaction (RSET and back to the pool, or discard).

        Runs as a protected task: a client hanging up meanwhile does not leave a
        half-closed connection in the pool.
        """
        txn, session.txn = session.txn, None
        if txn is not None:
            await asyncio.shield(
                self.connections.spawn(self._close_upstream(txn, reusable=reusable))
            )

    def _abandon_transaction(self, session: ProxySession) -> None:
        """A hook awaiting the upstream was cancelled: its state is unknown, discard it."""
        txn, session.txn = session.txn, None
        if txn is not None:
            self.connections.spawn(self._close_upstream(txn, reusable=False))

    async def _close_upstream(self, txn: UpstreamTransaction, *, reusable: bool) -> None:
        """Back to the pool (``reusable``) or discarded; never raises."""
        try:
            await txn.close(reusable=reusable)
        except Exception as exc:  # closing must never take a client session down
            log_event(logger, logging.WARNING, "upstream-close-failed", error=repr(exc))
        finally:
            self.connections.notify()

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
            await self._end_transaction(session, reusable=False)
            return None
        except asyncio.CancelledError:
            self._abandon_transaction(session)
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
        upstream = self.pool.extensions
        if upstream:
            hidden = {k.upper() for k, _, _ in PASSED_THROUGH_EXTENSIONS if k not in upstream}
            responses = [r for r in responses if r[4:].upper() not in hidden]
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
            await self._end_transaction(sess, reusable=True)

        options = upstream_mail_options(mail_options)

        async def begin() -> Reply:
            txn = await self.pool.transaction()
            sess.txn = txn
            sess.txn_started = time.monotonic()
            # Checked once a transaction is open: the first connection is what tells us.
            refusal = missing_extension(options, self.pool.extensions)
            if refusal is not None:
                code, _, text = refusal.partition(" ")
                return Reply(int(code), text)
            return await txn.mail(address, options)

        reply = await self._upstream_call(sess, "MAIL", client, begin)
        if reply is None:
            return REPLY_UPSTREAM_DOWN
        if 200 <= reply.code < 300:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        else:
            await self._end_transaction(sess, reusable=True)
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
        content = envelope.original_content or b""
        report = MessageReport(
            self.metrics,
            started=sess.txn_started or time.monotonic(),
            queue_id=queue_id,
            client=peer_host(session.peer),
            user=sess.auth_user,
            sender=envelope.mail_from,
            rcpts=len(envelope.rcpt_tos),
            size=len(content),
        )
        if sess.txn is None:
            report.end_no_upstream()
            return with_queue_id(REPLY_UPSTREAM_DOWN, queue_id)
        if has_bare_newline(content):
            if runtime.config.proxy.bare_newline == "reject":
                await self._end_transaction(sess, reusable=True)
                report.end_bare_newline()
                return with_queue_id(REPLY_BARE_NEWLINE, queue_id)
            content = normalize_newlines(content)
            report.newlines_normalized()
        recipient = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None
        try:
            outcome = await self.rewriter.rewrite(
                runtime,
                envelope.mail_from or "",
                content,
                queue_id,
                recipient,
                sess.auth_user if session.authenticated else None,
            )
        except asyncio.CancelledError:
            self._abandon_transaction(sess)
            raise
        txn, sess.txn = sess.txn, None
        assert txn is not None
        # The upstream send runs as its own task: a client hanging up now must not cut
        # the upstream transaction in half (the upstream then has a clean end, and our
        # log line says what it answered).
        task = self.connections.spawn(self._send(txn, outcome, report, queue_id))
        return await asyncio.shield(task)

    async def _send(
        self, txn: UpstreamTransaction, outcome: Outcome, report: MessageReport, queue_id: str
    ) -> str:
        """The message to the upstream, which then owns the transaction's end."""
        report.rewritten(outcome)
        try:
            reply = await txn.data(outcome.data)
        except UpstreamError as exc:
            await self._close_upstream(txn, reusable=False)
            report.end_upstream_error(exc)
            return with_queue_id(REPLY_UPSTREAM_DOWN, queue_id)
        except BaseException:
            await self._close_upstream(txn, reusable=False)
            raise
        await self._close_upstream(txn, reusable=True)
        report.end_relayed(reply)
        return format_reply(reply, queue_id)

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._end_transaction(cast(ProxySession, session), reusable=True)
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._end_transaction(cast(ProxySession, session), reusable=True)
        return "221 2.0.0 Bye"

    async def handle_exception(self, error: Exception) -> str:
        log_event(logger, logging.ERROR, "proxy-exception", error=repr(error))
        return REPLY_INTERNAL

    # --- AUTH mechanisms (aiosmtpd finds them by name; they replace its built-ins) ----------------

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self.authenticator.plain(server, args)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self.authenticator.login(server, args)
