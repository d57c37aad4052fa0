"""The installed aiosmtpd still has every private name smtp_proxy/smtp/aiosmtpd_compat.py
borrows, with the signatures we call, and the borrowed behaviour still works over a real
connection. An aiosmtpd upgrade that renames one fails here, naming it, instead of in
the middle of a DATA command in production.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from smtp_proxy.smtp.aiosmtpd_compat import (
    BORROWED_ATTRIBUTES,
    BORROWED_METHODS,
    BORROWED_READER_ATTRIBUTES,
    CompatSMTP,
)

# --- the checks ----------------------------------------------------------------------------


def _param_text(param: inspect.Parameter) -> str:
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        return f"*{param.name}"
    if param.kind is inspect.Parameter.VAR_KEYWORD:
        return f"**{param.name}"
    return param.name


def method_problem(cls: type, name: str, expected: tuple[str, ...]) -> str | None:
    """Why ``cls.name`` cannot be called as we call it, or None when it can.

    Our parameters must come first, in order; anything aiosmtpd adds after them must
    have a default (we never pass it).
    """
    method = getattr(cls, name, None)
    if method is None:
        return f"{cls.__module__}.{cls.__qualname__} has no method {name!r}"
    if not callable(method):
        return f"{cls.__qualname__}.{name} is no longer a method: {method!r}"
    params = list(inspect.signature(method).parameters.values())
    actual = tuple(_param_text(p) for p in params)
    if actual[: len(expected)] != expected:
        return f"{cls.__qualname__}.{name}{actual} no longer takes {expected}"
    for extra in params[len(expected) :]:
        if extra.default is inspect.Parameter.empty and extra.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            return f"{cls.__qualname__}.{name} has a new required parameter {extra.name!r}"
    return None


def attribute_problem(
    obj: object, name: str, kind: type | tuple[type, ...], owner: str
) -> str | None:
    """Why ``obj.name`` is not the ``kind`` we use, or None."""
    if not hasattr(obj, name):
        return f"{owner} has no attribute {name!r}"
    value = getattr(obj, name)
    if not isinstance(value, kind):
        return f"{owner}.{name} is {type(value).__name__}, not {kind}"
    return None


# --- a live aiosmtpd connection ------------------------------------------------------------


class RecordingHandler:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope.original_content or b"")
        return "250 2.0.0 recorded"


class Peer:
    """A line-at-a-time SMTP client over a real socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def reply(self) -> str:
        lines: list[str] = []
        async with asyncio.timeout(10):
            while True:
                line = (await self.reader.readline()).decode()
                assert line, f"connection closed after {lines!r}"
                lines.append(line.rstrip("\r\n"))
                if line[3:4] != "-":
                    return "\n".join(lines)

    async def send(self, data: bytes) -> str:
        self.writer.write(data)
        await self.writer.drain()
        return await self.reply()

    async def command(self, line: str) -> str:
        return await self.send(line.encode() + b"\r\n")


@asynccontextmanager
async def connected(
    make: Callable[[RecordingHandler], SMTP],
) -> AsyncIterator[tuple[SMTP, Peer, RecordingHandler]]:
    """An aiosmtpd server on 127.0.0.1 port 0, one client connected (greeting read)."""
    handler = RecordingHandler()
    made: list[SMTP] = []

    def factory() -> SMTP:
        protocol = make(handler)
        made.append(protocol)
        return protocol

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    peer = Peer(reader, writer)
    try:
        assert (await peer.reply()).startswith("220 ")
        yield made[0], peer, handler
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()


def plain_smtp(handler: RecordingHandler) -> SMTP:
    return SMTP(handler, hostname="contract.test", loop=asyncio.get_running_loop())


# --- the contract --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BORROWED_METHODS))
def test_borrowed_method_exists_with_our_signature(name: str) -> None:
    problem = method_problem(SMTP, name, BORROWED_METHODS[name])
    assert problem is None, problem


async def test_borrowed_attributes_exist_on_a_connected_smtp() -> None:
    async with connected(plain_smtp) as (protocol, _peer, _handler):
        problems = [
            attribute_problem(protocol, name, kind, "aiosmtpd.smtp.SMTP")
            for name, kind in BORROWED_ATTRIBUTES.items()
        ]
        reader = getattr(protocol, "_reader", None)
        problems += [
            attribute_problem(reader, name, kind, "asyncio.StreamReader")
            for name, kind in BORROWED_READER_ATTRIBUTES.items()
        ]
        assert [p for p in problems if p] == []
        # The reader's limit is aiosmtpd's line length (what reader_limit() restores).
        assert reader._limit == SMTP.line_length_limit  # type: ignore[union-attr]


def test_the_names_we_import_from_aiosmtpd_are_there() -> None:
    import aiosmtpd.smtp

    used = ("MISSING", "SMTP", "Session", "Envelope", "AuthResult", "LoginPassword", "syntax")
    missing = [name for name in used if not hasattr(aiosmtpd.smtp, name)]
    assert missing == []


# --- the checks can fail ---------------------------------------------------------------------


def test_method_check_names_a_missing_method() -> None:
    class Renamed:
        def _reset_timeout_later(self, duration: float | None = None) -> None:
            pass

    problem = method_problem(Renamed, "_reset_timeout", BORROWED_METHODS["_reset_timeout"])
    assert problem is not None and "'_reset_timeout'" in problem


def test_method_check_names_a_changed_signature() -> None:
    class Changed(SMTP):
        def _reset_timeout(self) -> None:  # type: ignore[override]
            pass

        async def _call_handler_hook(self, command: str, session: Any) -> Any:
            return None

    assert "_reset_timeout" in str(
        method_problem(Changed, "_reset_timeout", BORROWED_METHODS["_reset_timeout"])
    )
    assert "_call_handler_hook" in str(
        method_problem(Changed, "_call_handler_hook", BORROWED_METHODS["_call_handler_hook"])
    )


def test_attribute_check_names_a_missing_attribute() -> None:
    class Bare:
        _reader = object()

    assert attribute_problem(Bare(), "_writer", asyncio.StreamWriter, "X") == (
        "X has no attribute '_writer'"
    )
    assert "_reader" in str(attribute_problem(Bare(), "_reader", asyncio.StreamReader, "X"))


# --- the borrowed behaviour, through CompatSMTP on a real connection -----------------------


class ProbeSMTP(CompatSMTP):
    """Reads DATA itself through CompatSMTP's methods, recording what it saw."""

    def __init__(self, handler: RecordingHandler, seen: dict[str, Any]) -> None:
        super().__init__(handler, hostname="contract.test", loop=asyncio.get_running_loop())
        self.seen = seen

    def new_session(self) -> Session:
        session = Session(self.loop)
        self.seen["session"] = session
        return session

    async def data_command(self, arg: str) -> None:
        self.seen["arg"] = arg
        self.restart_timer(60.0)
        await self.push("354 go ahead")
        with self.reader_limit(4096):
            self.seen["limit inside"] = self.reader._limit  # type: ignore[attr-defined]
            data = await self.reader.readuntil(b"\r\n.\r\n")
        self.seen["limit after"] = self.reader._limit  # type: ignore[attr-defined]
        assert self.envelope is not None
        self.envelope.original_content = data[:-3]
        status = await self.call_data_hook()
        self.reset_envelope()
        self.seen["envelope reset"] = not self.envelope.rcpt_tos
        self.restart_timer()
        await self.push("250 OK" if status is MISSING else status)


async def test_compat_smtp_runs_our_data_reader_and_borrowed_helpers() -> None:
    seen: dict[str, Any] = {}
    async with connected(lambda handler: ProbeSMTP(handler, seen)) as (protocol, peer, handler):
        assert isinstance(protocol, ProbeSMTP)
        assert protocol.session is seen["session"]  # _create_session is still the factory
        assert protocol.client_task is not None and not protocol.client_task.done()
        assert (await peer.command("EHLO client.test")).startswith("250")
        assert (await peer.command("MAIL FROM:<a@example.com>")).startswith("250")
        assert (await peer.command("RCPT TO:<b@example.com>")).startswith("250")
        assert await peer.command("DATA") == "354 go ahead"  # dispatched to our reader
        assert await peer.send(b"Subject: x\r\n\r\nbody\r\n.\r\n") == "250 2.0.0 recorded"
        assert handler.messages == [b"Subject: x\r\n\r\nbody\r\n"]
        assert not seen["arg"]  # no argument to DATA
        assert seen["limit inside"] == 4096
        assert seen["limit after"] == SMTP.line_length_limit
        assert seen["envelope reset"] is True


async def test_compat_smtp_without_a_reader_of_its_own_uses_aiosmtpds_data() -> None:
    def make(handler: RecordingHandler) -> SMTP:
        return CompatSMTP(handler, hostname="contract.test", loop=asyncio.get_running_loop())

    async with connected(make) as (_protocol, peer, handler):
        await peer.command("HELO client.test")
        await peer.command("MAIL FROM:<a@example.com>")
        await peer.command("RCPT TO:<b@example.com>")
        assert (await peer.command("DATA")).startswith("354")
        assert await peer.send(b"Subject: y\r\n\r\n..dot\r\n.\r\n") == "250 2.0.0 recorded"
        assert handler.messages == [b"Subject: y\r\n\r\n.dot\r\n"]


async def test_allow_auth_without_tls_offers_auth_in_plaintext() -> None:
    """``_auth_require_tls`` still decides whether EHLO offers AUTH without TLS."""

    def make(handler: RecordingHandler) -> SMTP:
        return CompatSMTP(
            handler,
            hostname="contract.test",
            auth_require_tls=True,
            loop=asyncio.get_running_loop(),
        )

    async with connected(make) as (protocol, peer, _handler):
        assert "AUTH" not in await peer.command("EHLO client.test")
        assert isinstance(protocol, CompatSMTP)
        protocol.allow_auth_without_tls()
        assert "AUTH" in await peer.command("EHLO client.test")


def test_borrowed_tables_cover_what_the_module_docstring_lists() -> None:
    import smtp_proxy.smtp.aiosmtpd_compat as compat

    doc = compat.__doc__ or ""
    names: Mapping[str, object] = {
        **BORROWED_METHODS,
        **BORROWED_ATTRIBUTES,
        **BORROWED_READER_ATTRIBUTES,
    }
    undocumented = [n for n in names if f"``{n}" not in doc]
    assert undocumented == []
