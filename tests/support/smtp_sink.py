"""A recording SMTP sink for tests: the "upstream MTA" every proxy test talks to.

The sink runs **inside the test's event loop** (``loop.create_server`` with
an :class:`aiosmtpd.smtp.SMTP` protocol factory), not in an aiosmtpd ``Controller`` thread.
That keeps everything single-threaded: tests can flip the sink's behaviour between
commands without locks, and waiting for "n messages" is a plain future, never a sleep.

Quick use (async test)::

    async with SmtpSink() as sink:          # or the ``smtp_sink`` fixture
        ... send to 127.0.0.1:sink.port (sink.url is "smtp://127.0.0.1:PORT") ...
        await sink.wait_for_messages(1)
        msg = sink.messages[0]
        assert msg.data == b"Subject: x\\r\\n\\r\\nbody\\r\\n"

Construction options (keyword-only, all optional):

* ``tls``: a :class:`tests.support.preflight_fixtures.TestCA` (or anything with ``server_context()``
  returning a server :class:`ssl.SSLContext`); with ``implicit_tls=False`` (default) the
  sink offers STARTTLS, with ``implicit_tls=True`` it speaks TLS from the first byte
  (``smtps://``). :func:`make_test_ca` makes one for ``127.0.0.1``/``localhost``.
* ``require_tls``: refuse MAIL (530) before STARTTLS.
* ``auth_users``: ``{"user": "password"}`` enables AUTH PLAIN/LOGIN. AUTH is offered only
  after STARTTLS when STARTTLS is configured, at once otherwise (plain or implicit TLS).
* ``auth_required``: refuse MAIL (530) without AUTH.
* ``smtputf8`` (default True): advertise SMTPUTF8. 8BITMIME is always advertised.
* ``data_size_limit`` (default 32 MiB; None = unlimited): SIZE advertised and enforced.
* ``line_length_limit`` (default 1001 as in aiosmtpd/RFC 5321): longer lines get 500.
* ``hostname``: greeting/EHLO name (default ``sink.test``).

Behaviour switches (plain attributes; change them at any time, they apply to the next
command):

* ``mail_reply``: None (accept) or a full reply line like ``"451 4.3.0 try later"``.
* ``rcpt_replies``: ``{"bad@example.com": "550 5.1.1 no such user"}``; other recipients
  are accepted. Keys are compared case-insensitively.
* ``data_reply``: None (``250 2.0.0 Ok: queued as <n>``) or a reply line for the end of
  DATA, e.g. ``"554 5.7.1 spam"``. A message answered with a non-2xx reply is NOT
  recorded in ``messages`` (it is in ``refused``).
* ``data_action``: ``"accept"`` (reply as above), ``"hang"`` (receive the message, then
  never answer until the sink stops or the client gives up) or ``"cut"`` (receive the
  message, then abort the connection without answering: "connection lost mid-DATA").
  Neither a hung nor a cut message is recorded as accepted.
* ``cut_after_bytes``: None, or abort the connection as soon as this many bytes of
  message content have arrived (the client is still sending: cut in the middle of DATA).
* ``hangup_after_data``: after answering DATA (any reply), close the connection — an
  upstream that goes away right after accepting a message.
* ``silent``: new connections are accepted but never greeted (a black-hole upstream for
  connect-timeout tests).

What it records:

* ``messages``: list of :class:`ReceivedMessage` (accepted with 2xx only), in order.
* ``refused``: messages whose DATA got a non-2xx ``data_reply`` (also hung/cut ones).
* ``connections``: total connections accepted since construction (across restarts);
  ``open_connections``: currently open; ``commands``: list of ``(connection, VERB)`` for
  EHLO/HELO/MAIL/RCPT/DATA/RSET/NOOP/QUIT/STARTTLS/AUTH in arrival order.
* ``auth_logins``: usernames that authenticated successfully.

Waiting without sleeps:

* ``await sink.wait_for_messages(n, timeout=10)`` until ``len(messages) >= n``;
* ``await sink.wait_for(lambda: ..., timeout=10, what="...")`` for any condition on the
  sink's state (re-checked on every SMTP event); both raise AssertionError on timeout.

Faults:

* ``await sink.stop()`` closes the listener and aborts every open connection (upstream
  down); ``await sink.start()`` listens again on the **same port** (upstream back).
* ``sink.cut_connections()`` aborts every open connection right now.

Fixtures (import them into a test module, or list this module in ``pytest_plugins``):
``smtp_sink`` (a plain started sink) and ``smtp_sink_factory`` (``await
smtp_sink_factory(**options)`` → started sink; all stopped at teardown). ``make_test_ca``
writes a CA + server cert for 127.0.0.1 with :mod:`cryptography`.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.closing import AsyncRunning
from tests.support.preflight_fixtures import TestCA


class _ServerTLS(Protocol):
    def server_context(self) -> ssl.SSLContext: ...


@dataclass
class ReceivedMessage:
    """One message as the sink received it (after SMTP dot-unstuffing)."""

    mail_from: str
    rcpt_tos: list[str]
    #: Exactly the bytes between ``DATA`` and the final ``.``, unstuffed, ending in CRLF.
    data: bytes
    mail_options: list[str]
    rcpt_options: list[str]
    #: Number of the connection it arrived on (1-based, see ``SmtpSink.connections``).
    connection: int
    tls: bool
    auth_user: str | None = None


@dataclass
class _Conn:
    number: int
    protocol: asyncio.BaseProtocol
    transport: asyncio.BaseTransport | None = None
    auth_user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def make_test_ca(directory: Path) -> TestCA:
    """A throwaway CA and a server certificate valid for 127.0.0.1 and localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    return TestCA(directory, ["127.0.0.1", "localhost"])


class _Silent(asyncio.Protocol):
    """Accepts a connection and never says a word (black-hole upstream)."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink
        self._conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._conn = self._sink._on_connect(self, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._sink._on_disconnect(self._conn)


class _SinkSMTP(SMTP):
    """aiosmtpd's protocol, plus connection bookkeeping for the sink."""

    line_length_limit = 1001

    def __init__(self, sink: SmtpSink, **kwargs: Any) -> None:
        # Read by SMTP.__init__ for its StreamReader limit, so set it first.
        self.line_length_limit = sink.line_length_limit
        super().__init__(sink._handler, **kwargs)
        self._sink = sink
        self.sink_conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # STARTTLS calls this a second time
        super().connection_made(transport)
        if first:
            self.sink_conn = self._sink._on_connect(self, transport)
        elif self.sink_conn is not None:
            self.sink_conn.transport = transport
            self._sink._record(self.sink_conn, "STARTTLS")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sink_conn is not None:
            self._sink._on_disconnect(self.sink_conn)
        super().connection_lost(exc)

    # Mid-DATA cut: count content bytes between "354" and the end of DATA.
    _data_bytes: int | None = None

    async def smtp_DATA(self, arg: str) -> None:
        self._data_bytes = 0
        try:
            await super().smtp_DATA(arg)
        finally:
            self._data_bytes = None

    def data_received(self, data: bytes) -> None:
        limit = self._sink.cut_after_bytes
        if self._data_bytes is not None and limit is not None:
            self._data_bytes += len(data)
            if self._data_bytes >= limit and isinstance(self.transport, asyncio.Transport):
                if self.sink_conn is not None:
                    self._sink._record(self.sink_conn, "CUT")
                self.transport.abort()
                return
        super().data_received(data)


class _Handler:
    """aiosmtpd hooks: apply the sink's switches and record what arrives."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    def _conn(self, server: _SinkSMTP) -> _Conn:
        assert server.sink_conn is not None
        return server.sink_conn

    async def handle_EHLO(
        self, server: _SinkSMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:  # fmt: skip
        session.host_name = hostname
        self.sink._record(self._conn(server), "EHLO")
        return responses

    async def handle_HELO(
        self, server: _SinkSMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        session.host_name = hostname
        self.sink._record(self._conn(server), "HELO")
        return f"250 {server.hostname}"

    async def handle_NOOP(
        self, server: _SinkSMTP, session: Session, envelope: Envelope, arg: str
    ) -> str:
        self.sink._record(self._conn(server), "NOOP")
        return "250 2.0.0 Ok"

    async def handle_RSET(self, server: _SinkSMTP, session: Session, envelope: Envelope) -> str:
        self.sink._record(self._conn(server), "RSET")
        return "250 2.0.0 Ok"

    async def handle_QUIT(self, server: _SinkSMTP, session: Session, envelope: Envelope) -> str:
        self.sink._record(self._conn(server), "QUIT")
        return "221 2.0.0 Bye"

    async def handle_MAIL(
        self,
        server: _SinkSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        conn = self._conn(server)
        self.sink._record(conn, "MAIL")
        if self.sink.require_tls and not self.sink._is_tls(conn):
            return "530 5.7.0 Must issue a STARTTLS command first"
        if self.sink.auth_required and conn.auth_user is None:
            return "530 5.7.0 Authentication required"
        if self.sink.mail_reply is not None:
            return self.sink.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: _SinkSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.sink._record(self._conn(server), "RCPT")
        refusals = {k.lower(): v for k, v in self.sink.rcpt_replies.items()}
        reply = refusals.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: _SinkSMTP, session: Session, envelope: Envelope) -> str:
        sink = self.sink
        conn = self._conn(server)
        sink._record(conn, "DATA")
        content = envelope.original_content
        assert isinstance(content, bytes)
        message = ReceivedMessage(
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            data=content,
            mail_options=list(envelope.mail_options),
            rcpt_options=list(envelope.rcpt_options),
            connection=conn.number,
            tls=sink._is_tls(conn),
            auth_user=conn.auth_user,
        )
        action = sink.data_action
        if action == "hang":
            sink.refused.append(message)
            sink._changed()
            await sink._stopping.wait()  # cancelled when the client hangs up
            return "421 4.3.2 sink stopping"
        if action == "cut":
            sink.refused.append(message)
            if isinstance(server.transport, asyncio.Transport):
                server.transport.abort()
            sink._changed()
            await asyncio.Event().wait()  # connection_lost cancels this coroutine
        if sink.hangup_after_data and isinstance(server.transport, asyncio.Transport):
            # Runs after aiosmtpd has written our reply: close() flushes it first.
            asyncio.get_running_loop().call_soon(server.transport.close)
        if sink.data_reply is not None and not sink.data_reply.startswith("2"):
            sink.refused.append(message)
            sink._changed()
            return sink.data_reply
        sink.messages.append(message)
        sink._changed()
        return sink.data_reply or f"250 2.0.0 Ok: queued as {len(sink.messages)}"


class SmtpSink(AsyncRunning):
    """A recording SMTP server on 127.0.0.1; see the module docstring for the API."""

    def __init__(
        self,
        *,
        tls: _ServerTLS | None = None,
        implicit_tls: bool = False,
        require_tls: bool = False,
        auth_users: dict[str, str] | None = None,
        auth_required: bool = False,
        smtputf8: bool = True,
        data_size_limit: int | None = 33_554_432,
        line_length_limit: int = 1001,
        hostname: str = "sink.test",
    ) -> None:
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.require_tls = require_tls
        self.auth_users = dict(auth_users or {})
        self.auth_required = auth_required
        self.smtputf8 = smtputf8
        self.data_size_limit = data_size_limit
        self.line_length_limit = line_length_limit
        self.hostname = hostname
        # behaviour switches
        self.mail_reply: str | None = None
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply: str | None = None
        self.data_action: str = "accept"
        self.silent = False
        self.hangup_after_data = False
        self.cut_after_bytes: int | None = None
        # records
        self.messages: list[ReceivedMessage] = []
        self.refused: list[ReceivedMessage] = []
        self.commands: list[tuple[int, str]] = []
        self.auth_logins: list[str] = []
        self.connections = 0
        self._open: dict[int, _Conn] = {}
        self._numbers = itertools.count(1)
        self._handler = _Handler(self)
        self._server: asyncio.Server | None = None
        self._port = 0
        self._stopping = asyncio.Event()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._tls_context = tls.server_context() if tls is not None else None

    # --- addresses ----------------------------------------------------------------------

    host = "127.0.0.1"

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("sink not started")
        return self._port

    @property
    def url(self) -> str:
        """The upstream URL for this sink: smtp://, smtp+starttls:// or smtps://."""
        if self.tls is None:
            scheme = "smtp"
        elif self.implicit_tls:
            scheme = "smtps"
        else:
            scheme = "smtp+starttls"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def running(self) -> bool:
        return self._server is not None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (again) on 127.0.0.1: port 0 the first time, the same port afterwards."""
        if self._server is not None:
            return
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_protocol,
            self.host,
            self._port,
            ssl=self._tls_context if self.implicit_tls else None,
            reuse_address=True,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and abort every open connection (an upstream that went away)."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.cut_connections()
        if server is not None:
            await server.wait_closed()
        # Let connection_lost callbacks run so every transport is really gone.
        await self.wait_for(lambda: not self._open, timeout=10, what="connections to close")

    async def close(self) -> None:
        """:meth:`stop`, as ``async with`` calls it on the way out."""
        await self.stop()

    def cut_connections(self) -> None:
        """Abort every open connection now, without a reply."""
        for conn in list(self._open.values()):
            if isinstance(conn.transport, asyncio.Transport):
                conn.transport.abort()

    # --- waiting ------------------------------------------------------------------------

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline is this helper's whole point
        what: str = "condition",
    ) -> None:
        """Wait until ``predicate()`` is true; it is re-checked on every SMTP event."""
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AssertionError(
                f"smtp sink: timed out after {timeout}s waiting for {what}"
            ) from None
        finally:
            self._waiters.remove(entry)

    async def wait_for_messages(self, count: int, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until at least ``count`` messages were accepted."""
        await self.wait_for(
            lambda: len(self.messages) >= count,
            timeout=timeout,
            what=f"{count} messages (have {len(self.messages)})",
        )

    def commands_of(self, connection: int) -> list[str]:
        """The verbs one connection sent, in order."""
        return [verb for number, verb in self.commands if number == connection]

    # --- internals ----------------------------------------------------------------------

    def _make_protocol(self) -> asyncio.BaseProtocol:
        if self.silent:
            return _Silent(self)
        starttls = self._tls_context if not self.implicit_tls else None
        kwargs: dict[str, Any] = {
            "hostname": self.hostname,
            "enable_SMTPUTF8": self.smtputf8,
            "data_size_limit": self.data_size_limit,
            "tls_context": starttls,
            "loop": asyncio.get_running_loop(),
            # AUTH after STARTTLS when STARTTLS is offered; at once on plain/implicit TLS
            # (aiosmtpd does not count implicit TLS as "TLS" for this check).
            "auth_require_tls": starttls is not None,
        }
        if self.auth_users:
            kwargs["authenticator"] = self._authenticate
        return _SinkSMTP(self, **kwargs)

    def _authenticate(
        self, server: _SinkSMTP, session: Session, envelope: Envelope, mechanism: str,
        auth_data: Any,
    ) -> AuthResult:  # fmt: skip
        conn = server.sink_conn
        assert conn is not None
        self._record(conn, "AUTH")
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if self.auth_users.get(user) == password:
            conn.auth_user = user
            self.auth_logins.append(user)
            self._changed()
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def _is_tls(self, conn: _Conn) -> bool:
        transport = conn.transport
        return transport is not None and transport.get_extra_info("sslcontext") is not None

    def _on_connect(
        self, protocol: asyncio.BaseProtocol, transport: asyncio.BaseTransport
    ) -> _Conn:
        conn = _Conn(next(self._numbers), protocol, transport)
        self.connections += 1
        self._open[conn.number] = conn
        self._changed()
        return conn

    def _on_disconnect(self, conn: _Conn) -> None:
        self._open.pop(conn.number, None)
        self._changed()

    def _record(self, conn: _Conn, verb: str) -> None:
        self.commands.append((conn.number, verb))
        self._changed()

    def _changed(self) -> None:
        for predicate, future in list(self._waiters):
            if not future.done() and predicate():
                future.set_result(None)


@pytest.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    """A started plain-SMTP sink (no TLS, no AUTH)."""
    async with SmtpSink() as sink:
        yield sink


#: What the ``smtp_sink_factory`` fixture gives: ``await factory(**SmtpSink options)``.
SinkFactory = Callable[..., Awaitable[SmtpSink]]


@pytest.fixture
async def smtp_sink_factory() -> AsyncIterator[SinkFactory]:
    """``await smtp_sink_factory(**SmtpSink options)`` → a started sink, stopped at teardown."""
    sinks: list[SmtpSink] = []

    async def make(**options: Any) -> SmtpSink:
        sink = SmtpSink(**options)
        await sink.start()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.stop()
