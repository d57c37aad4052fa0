"""Helpers shared by the proxy tests, unit and reliability alike.

A proxy for the length of an ``async with`` (``running_proxy``), message builders, a raw
SMTP line client (``LineClient``) and an aiosmtplib client on loopback (``smtp_client``).
The fixtures ``keys``, ``lab`` and ``close_line_clients`` reach every test through
``pytest_plugins`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any, ClassVar, Self

import aiosmtplib
import pytest
from prometheus_client import CollectorRegistry

from clickrelay.config import Config
from redirector.hosts import base_url_host
from redirector.tokens import Keyring, load_keyring
from smtp_proxy.preflight.monitor import PreflightMonitor
from smtp_proxy.service import ProxyService
from tests.support.config import BASE_URL, proxy_config
from tests.support.preflight_fixtures import TestCA
from tests.support.smtp_sink import SinkFactory, SmtpSink

TOKEN_RE = re.compile(re.escape(BASE_URL) + r"/c/([A-Za-z0-9_-]+)")
QID_RE = re.compile(r"clickrelay id ([0-9a-z]+)")


@contextlib.asynccontextmanager
async def running_proxy(
    config: Config,
    keyring: Keyring,
    *,
    preflight: PreflightMonitor | None = None,
    admin: bool = False,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[ProxyService]:
    service = ProxyService(config, keyring, registry=registry, preflight=preflight, admin=admin)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=5)


def html_message(
    html: str,
    *,
    sender: str = "news@example.com",
    to: str = "reader@example.org",
    subject: str = "Newsletter",
    message_id: str | None = None,
    cte: str = "quoted-printable",
) -> bytes:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    msg.set_content(html, subtype="html", cte=cte)
    return msg.as_bytes()


SIMPLE_HTML = (
    "<html><body><p>Hello</p>"
    '<a href="https://shop.example.net/sale?id=1&amp;x=2">Sale</a> '
    '<a href="https://blog.example.net/post/42">Post</a> '
    '<a href="mailto:someone@example.com">mail</a>'
    "</body></html>\n"
)


class LineClient:
    """A raw SMTP client over a real socket: exact bytes out, reply lines in.

    Clients a failing test did not close are closed by the fixture ``close_line_clients``.
    """

    open_clients: ClassVar[set[LineClient]] = set()
    #: Seconds a reply is waited for when the caller does not say.
    reply_timeout: ClassVar[float] = 10.0

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        #: The text of the EHLO reply (lines joined by \n), set by :meth:`start`.
        self.ehlo = ""
        LineClient.open_clients.add(self)

    @classmethod
    async def connect(cls, port: int, *, source: str | None = None) -> Self:
        # A 1 MiB line limit: hostile-input tests read replies far longer than 64 KiB.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0) if source else None, limit=2**20
        )
        return cls(reader, writer)

    @classmethod
    async def start(cls, port: int, *, source: str | None = None, helo: str = "c") -> Self:
        """Connected, greeted with 220 and past ``EHLO helo`` (250): ready for MAIL."""
        client = await cls.connect(port, source=source)
        code, text = await client.reply()
        assert code == 220, (code, text)
        code, client.ehlo = await client.cmd(f"EHLO {helo}")
        assert code == 250, (code, client.ehlo)
        return client

    async def open_data(
        self,
        sender: str = "a@example.com",
        *,
        params: str = "",
        recipients: Sequence[str] = ("b@example.org",),
    ) -> None:
        """MAIL (250), one RCPT per recipient (250 each), DATA (354): the message may follow."""
        mail = f"MAIL FROM:<{sender}>" + (f" {params}" if params else "")
        assert (await self.cmd(mail))[0] == 250, mail
        for recipient in recipients:
            assert (await self.cmd(f"RCPT TO:<{recipient}>"))[0] == 250, recipient
        assert (await self.cmd("DATA"))[0] == 354

    async def transaction(
        self,
        wire: bytes,
        sender: str = "a@example.com",
        *,
        params: str = "",
        recipients: Sequence[str] = ("b@example.org",),
    ) -> tuple[int, str]:
        """A whole transaction: :meth:`open_data`, then ``wire`` (the message as sent, with
        its dot-stuffing and final ``.\r\n``); returns the reply to the end of data."""
        await self.open_data(sender, params=params, recipients=recipients)
        await self.send(wire)
        return await self.reply()

    async def reply(self, timeout: float | None = None) -> tuple[int, str]:  # noqa: ASYNC109
        """One (possibly multi-line) reply: code and the text lines joined by \\n."""
        lines: list[str] = []
        async with asyncio.timeout(self.reply_timeout if timeout is None else timeout):
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise ConnectionError("server closed the connection: " + "|".join(lines))
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(line[4:])
                if line[3:4] != "-":
                    return int(line[:3]), "\n".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str | bytes, timeout: float | None = None) -> tuple[int, str]:  # noqa: ASYNC109
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply(timeout)

    async def closed_by_server(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """True when the server hangs up (EOF) within ``timeout``."""
        async with asyncio.timeout(timeout):
            while await self.reader.read(4096):
                pass
        return True

    async def close(self) -> None:
        LineClient.open_clients.discard(self)
        self.writer.close()
        with contextlib.suppress(OSError):  # (ConnectionError included)
            await self.writer.wait_closed()


def smtp_client(port: int, **kwargs: Any) -> aiosmtplib.SMTP:
    """An aiosmtplib client for the proxy on 127.0.0.1:``port`` (use with ``async with``)."""
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=port, **kwargs)


def decode_links(keyring: Keyring, data: bytes) -> list[tuple[str, str, int, str | None]]:
    """(url, queue_id, link_index, recipient) of every tracked link in a raw message."""
    text = data.replace(b"=\r\n", b"").decode("ascii", "replace")
    found = []
    for token in TOKEN_RE.findall(text):
        link = keyring.open(token, base_url_host(BASE_URL))
        found.append((link.url, link.queue_id, link.link_index, link.recipient))
    return found


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def keys(key_file: Path) -> Keyring:
    return load_keyring(key_file)


@dataclass(frozen=True)
class ProxyLab:
    """What most proxy tests set up, behind one fixture (``lab``): a recording sink,
    a config for a proxy relaying to it, and that proxy for an ``async with``::

        sink = await lab.sink()
        config = lab.config(sink.url, max_recipients=2)
        async with lab.proxy(config) as proxy: ...
    """

    tmp_path: Path
    key_file: Path
    keys: Keyring
    sink_factory: SinkFactory

    async def sink(self, **options: Any) -> SmtpSink:
        """A started recording sink (stopped at teardown)."""
        return await self.sink_factory(**options)

    def config(self, upstream_url: str, **settings: Any) -> Config:
        """:func:`proxy_config` with this test's tmp_path and key file."""
        return proxy_config(self.tmp_path, upstream_url, self.key_file, **settings)

    def tls_config(self, upstream_url: str, ca: TestCA, **settings: Any) -> Config:
        """:meth:`config` serving the certificate of ``ca`` (STARTTLS; TLS from the first
        byte too when ``tls_listen`` is given)."""
        tls = {"tls_cert": str(ca.cert_file), "tls_key": str(ca.key_file)}
        return self.config(upstream_url, **tls, **settings)

    def proxy(
        self, config: Config, **kwargs: Any
    ) -> contextlib.AbstractAsyncContextManager[ProxyService]:
        """:func:`running_proxy` with this test's keyring."""
        return running_proxy(config, self.keys, **kwargs)


@pytest.fixture
def lab(tmp_path: Path, key_file: Path, keys: Keyring, smtp_sink_factory: SinkFactory) -> ProxyLab:
    return ProxyLab(tmp_path, key_file, keys, smtp_sink_factory)


@pytest.fixture
async def close_line_clients() -> AsyncIterator[None]:
    """Closes the :class:`LineClient` connections a failing test left open; a module that
    uses LineClient asks for it with ``pytestmark = pytest.mark.usefixtures(...)``. (Not
    autouse: it would give every synchronous test of the tree an event loop.)"""
    yield
    for client in list(LineClient.open_clients):
        await client.close()
