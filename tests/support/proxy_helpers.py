"""Helpers shared by the proxy test modules (test_proxy_e2e, test_proxy_security, …).

A config builder (``proxy_config``), a proxy for the length of an ``async with``
(``running_proxy``), message builders, a raw SMTP line client (``LineClient``) and an
aiosmtplib client on loopback (``smtp_client``). The fixtures ``keys`` and
``close_line_clients`` must be imported into the test module that uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any, ClassVar, Self

import aiosmtplib
import pytest
from prometheus_client import CollectorRegistry

from clickrelay.config import Config, load_config_text
from redirector.tokens import Keyring, load_keyring
from smtp_proxy.preflight.monitor import PreflightMonitor
from smtp_proxy.service import ProxyService
from tests.support.smtp_sink import SmtpSink, smtp_sink_factory

__all__ = ["smtp_sink_factory"]  # fixture, re-exported for the test modules

BASE_URL = "http://127.0.0.1:8080"
TOKEN_RE = re.compile(re.escape(BASE_URL) + r"/c/([A-Za-z0-9_-]+)")
QID_RE = re.compile(r"clickrelay id ([0-9a-z]+)")

SinkFactory = Callable[..., Awaitable[SmtpSink]]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def proxy_config(
    tmp_path: Path,
    upstream_url: str,
    key_file: Path,
    *,
    preflight: bool = False,
    upstream: dict[str, Any] | None = None,
    tracking: dict[str, Any] | None = None,
    nameservers: Sequence[str] = (),
    dkim_domains: dict[str, dict[str, Any]] | None = None,
    **proxy: Any,
) -> Config:
    """A config for a proxy on 127.0.0.1:0 relaying to ``upstream_url``.

    ``preflight=False`` (default) switches preflight off, which means "rewriting
    allowed" for a proxy without a monitor. ``nameservers``: ``[preflight]
    nameservers``; ``dkim_domains``: the ``[dkim.domains."<domain>"]`` tables.
    """
    proxy_table: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin_listen": "",
        "hostname": "proxy.test",
        "trusted_networks": ["127.0.0.1/32"],
        "command_timeout": 30,
        "data_timeout": 30,
        "shutdown_grace": 5,
    }
    proxy_table.update(proxy)
    upstream_table: dict[str, Any] = {
        "url": upstream_url,
        "pool_size": 2,
        "connect_timeout": 5,
        "timeout": 10,
    }
    upstream_table.update(upstream or {})
    tracking_table: dict[str, Any] = {"base_url": BASE_URL, "key_file": str(key_file)}
    tracking_table.update(tracking or {})
    lines = []
    preflight_table: dict[str, Any] = {"enabled": preflight}
    if nameservers:
        preflight_table["nameservers"] = list(nameservers)
    tables: list[tuple[str, dict[str, Any]]] = [
        ("proxy", proxy_table),
        ("upstream", upstream_table),
        ("tracking", tracking_table),
        ("preflight", preflight_table),
    ]
    tables += [(f'dkim.domains."{d}"', t) for d, t in (dkim_domains or {}).items()]
    for name, table in tables:
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in table.items())
    return load_config_text("\n".join(lines) + "\n", base_dir=tmp_path)


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

    Clients a failing test did not close are closed by the autouse fixture
    ``close_line_clients`` (import it into any module that uses LineClient).
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
        link = keyring.open(token)
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

    def proxy(
        self, config: Config, **kwargs: Any
    ) -> contextlib.AbstractAsyncContextManager[ProxyService]:
        """:func:`running_proxy` with this test's keyring."""
        return running_proxy(config, self.keys, **kwargs)


@pytest.fixture
def lab(tmp_path: Path, key_file: Path, keys: Keyring, smtp_sink_factory: SinkFactory) -> ProxyLab:
    """Needs the fixtures ``keys`` and ``smtp_sink_factory`` imported next to it."""
    return ProxyLab(tmp_path, key_file, keys, smtp_sink_factory)


@pytest.fixture(autouse=True)
async def close_line_clients() -> AsyncIterator[None]:
    yield
    for client in list(LineClient.open_clients):
        await client.close()
