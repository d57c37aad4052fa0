"""The SMTP protocol of one client connection: aiosmtpd's, with our session type, the
per-connection AUTH-over-plaintext switch, the connection limits (in total and per
client), a bound on commands that carry no message, and a DATA reader of our own (whole
pieces instead of lines, and one timeout for the whole DATA phase)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiosmtpd.smtp import MISSING, Session

from smtp_proxy.smtp.aiosmtpd_compat import CompatSMTP
from smtp_proxy.smtp.auth_limiter import limiter_key
from smtp_proxy.smtp.connections import Connections
from smtp_proxy.smtp.handler import ProxyHandler
from smtp_proxy.smtp.relay_policy import is_loopback, peer_host
from smtp_proxy.smtp.runtime import ProxyRuntime
from smtp_proxy.smtp.session import ProxySession

#: DATA is read in pieces of up to this many bytes (see ProxySMTP._receive_data).
READ_PIECE = 65_536
#: The longest DATA line, CRLF included: 998 octets + CRLF (RFC 5321 4.5.3.1.6).
#: (aiosmtpd's own line_length_limit, 1001, lets a 999-octet line through.)
MAX_DATA_LINE = 1000


class ProxySMTP(CompatSMTP):
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
        self._hostname = runtime.hostname
        self._max_connections = proxy.max_connections
        self._max_per_client = proxy.max_connections_per_client
        self._max_junk = proxy.max_junk_commands
        #: Commands since the last message (or the start) that carried no message.
        self._junk = 0
        #: True when connection_made refused the connection (nothing to clean up then).
        self._refused = False
        #: True from the DATA command until its reply was written: shutdown waits for it.
        self.in_data = False

    def new_session(self) -> Session:
        return ProxySession(self.loop)

    @property
    def in_transaction(self) -> bool:
        return self.in_data or (
            isinstance(self.session, ProxySession) and self.session.txn is not None
        )

    def hang_up(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        old = self.session
        if first:
            # Counted here, where the connection really begins (on the SMTPS listener:
            # after the TLS handshake), and uncounted in connection_lost, its pair.
            host = peer_host(transport.get_extra_info("peername"))
            refused = self.connections.admit(
                self,
                limiter_key(host),
                total=self._max_connections,
                per_client=self._max_per_client,
            )
            if refused is not None:
                self._refused = True
                self.connections.refuse(refused, host)
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(
                    f"421 4.7.0 {self._hostname} too many connections, try later\r\n".encode()
                )
                transport.close()
                return
        super().connection_made(transport)
        if first:
            if self._allow_loopback_auth and is_loopback(host):
                # Development convenience, off by default: AUTH without TLS on loopback.
                self.allow_auth_without_tls()
        elif isinstance(old, ProxySession) and old is not self.session:
            # STARTTLS starts a new session (RFC 3207 4.2): drop any transaction.
            self.proxy_handler.end_session(old)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        super().connection_lost(error)
        if isinstance(self.session, ProxySession):
            self.proxy_handler.end_session(self.session)
        self.connections.remove(self)

    def before_command(self, command: str) -> str | None:
        # NOOP, RSET, VRFY, HELP, EHLO… each restart the idle timer: without a bound a
        # client could hold a connection slot for ever without sending mail.
        if command in ("MAIL", "RCPT", "DATA", "QUIT"):
            return None
        self._junk += 1
        if self._junk <= self._max_junk:
            return None
        self.connections.refuse(
            "junk-commands", peer_host(self.session.peer if self.session else None)
        )
        return f"421 4.7.0 {self._hostname} too many commands without mail, closing"

    async def data_command(self, arg: str) -> None:
        # aiosmtpd's timer is reset per command; the whole DATA phase (receiving the
        # message and relaying it) gets data_timeout instead, then commands get theirs.
        self.restart_timer(self._data_timeout)
        self.in_data = True
        try:
            await self._receive_data(arg)
        finally:
            self.in_data = False
            self.connections.notify()
            if self.transport is not None:
                self.restart_timer()

    async def _receive_data(self, arg: str) -> None:
        """aiosmtpd's DATA command, receiving the message in large pieces.

        aiosmtpd reads the message one line at a time and keeps every line as its own
        bytearray: for a message of short (quoted-printable) lines that costs about
        6.5x the message in memory, and a read call per line dominates the proxy's
        CPU time. This keeps aiosmtpd's protocol semantics — the data ends only at
        CRLF "." CRLF, so bare CR/LF reach the handler untouched (see
        smtp_proxy.engine.newlines); a line starting with "." loses that dot; a line over
        998 octets (500) or too much data (552) is answered once the client has sent
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
        self._junk = 0  # a message: the client is doing what it connected for
        size_limit = self.data_size_limit or 0
        reader = self.reader
        buffer = bytearray()
        tail = b""  # the last 5 bytes received: is a ".\r\n" at a line start?
        received = 0
        too_much = finished = False
        # The reader's limit is aiosmtpd's line length (1001); it bounds how far
        # readuntil() looks for the separator and how much the reader buffers. During
        # DATA it is raised to READ_PIECE: pieces of up to that size, whether or not they
        # end in ".\r\n". Restored for the command lines that follow.
        with self.reader_limit(READ_PIECE):
            while self.transport is not None:
                try:
                    piece: bytes = await reader.readuntil(b".\r\n")
                except asyncio.CancelledError:
                    self.close_writer()
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
        if not finished:
            return  # connection gone: nothing to hand on
        if too_much:
            self.reset_envelope()
            await self.push("552 Error: Too much mail data")
            return
        del buffer[-3:]  # the final ".\r\n"
        content = bytes(buffer)
        del buffer
        if _longest_line(content) > MAX_DATA_LINE:
            self.reset_envelope()
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            return
        content = _unstuff(content)
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self.call_data_hook()
        self.reset_envelope()
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
            connections.refuse("total", None)
            return RefuseConnection(current.hostname)
        return ProxySMTP(handler, current, connections, implicit_tls=implicit_tls)

    return make
