"""One mail transaction on one pooled upstream connection, and the streamed DATA phase.

The proxy relays in lock step: MAIL, each RCPT and DATA are forwarded as its client sends
them, and the upstream's :class:`~smtp_proxy.upstream.types.Reply` goes back unchanged.
Each command and the DATA phase are bounded by ``timeout``. If MAIL on a reused
connection finds it closed (or gets ``421``), MAIL is retried once on a fresh connection:
nothing has been sent for the transaction yet, so this is safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import aiosmtplib
from aiosmtplib import SMTPException, SMTPResponseException

from clickrelay.common.logfmt import log_event
from smtp_proxy.config import UpstreamConfig
from smtp_proxy.upstream import aiosmtplib_compat as compat
from smtp_proxy.upstream.connection import Connection, describe_exc
from smtp_proxy.upstream.types import Reply, UpstreamError
from smtp_proxy.upstream.wire import command_args, data_pieces, end_of_data

logger = logging.getLogger("clickrelay.upstream")


class ConnectionLender(Protocol):
    """What a transaction needs from the pool that lent it its connection."""

    config: UpstreamConfig
    #: The URL without credentials, for logs.
    description: str

    async def open_connection(self) -> Connection: ...

    def count_failure(self, stage: str) -> None: ...

    async def give_back(self, conn: Connection, *, reusable: bool, reset: bool) -> None: ...


class SmtpTransaction:
    """:class:`~smtp_proxy.upstream.types.UpstreamTransaction` over one pooled connection."""

    def __init__(self, pool: ConnectionLender, conn: Connection, *, reused: bool) -> None:
        self._pool = pool
        self._conn = conn
        self._reused = reused
        self._started = False  # MAIL sent: the upstream has transaction state
        self._utf8 = False  # MAIL carried SMTPUTF8: addresses may be UTF-8 (RFC 6531)
        self._open = False  # a transaction is open upstream (needs RSET before reuse)
        self._broken = False
        self._closed = False

    @property
    def connection_number(self) -> int:
        """Which pool connection this runs on (1-based, per pool; for logs/tests)."""
        return self._conn.number

    async def mail(self, sender: str, options: Sequence[str]) -> Reply:
        """Forward ``MAIL FROM:<sender> options``; upstream 4xx/5xx come back as a Reply."""
        utf8 = any(option.upper() == "SMTPUTF8" for option in options)
        args = command_args(b"MAIL FROM:", sender, options, utf8=utf8)
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
                self._conn = await self._pool.open_connection()
                self._broken = False
                self._reused = False
                reply = await self._command(args, stage="command")
        else:
            reply = await self._command(args, stage="command")
        self._open = True
        return reply

    async def rcpt(self, recipient: str, options: Sequence[str]) -> Reply:
        """Forward ``RCPT TO:<recipient> options``; a refusal comes back as a Reply."""
        args = command_args(b"RCPT TO:", recipient, options, utf8=self._utf8)
        if isinstance(args, Reply):
            return args
        return await self._command(args, stage="command")

    async def data(self, message: bytes) -> Reply:
        """Send ``DATA`` and the message; the upstream's final reply.

        The message is streamed in line-aligned pieces with back-pressure (see
        :func:`stream_data`), so a 25 MB message costs about one piece of extra memory,
        not several copies. Bare CR or LF are sent as CRLF and lines starting with ``.``
        are dot-stuffed, so no byte sequence in ``message`` can end the DATA early (the
        proxy rejects or normalises bare newlines before this point anyway).
        """
        self._usable()
        smtp = self._conn.smtp
        try:
            reply = await stream_data(smtp, message, self._pool.config.timeout)
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
        if self._broken:
            self._conn.abort()
        await self._pool.give_back(self._conn, reusable=reusable, reset=self._open)

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
        self._pool.count_failure(stage)
        reason = describe_exc(exc)
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


async def stream_data(smtp: aiosmtplib.SMTP, message: bytes, wait: float) -> Reply:
    """The DATA phase, streamed; each reply and each drain bounded by ``wait`` seconds.

    aiosmtplib's own ``data()`` builds the whole dot-stuffed message in memory (three
    or four copies of a big message at the peak). Here the message goes out in the pieces
    of :func:`~smtp_proxy.upstream.wire.data_pieces`, waiting for the transport to drain
    between pieces.
    """
    protocol = compat.connected_protocol(smtp)
    start = await smtp.execute_command(b"DATA", timeout=wait)
    if start.code != 354:
        return Reply(start.code, start.message)
    last = b""
    for piece in data_pieces(message):
        protocol.write(piece)
        last = piece
        await compat.drain(protocol, wait)
    # The final reply can come as soon as the last byte is out: expected before writing.
    compat.expect_reply(protocol)
    protocol.write(end_of_data(last))
    response = await protocol.read_response(timeout=wait)
    return Reply(response.code, response.message)
