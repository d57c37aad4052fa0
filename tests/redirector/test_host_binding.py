"""Tracked links work only on the tracking host they were minted for (and its aliases).

The attack: one redirector serves several tenants' tracking hosts; a link minted for
``links.a.example`` was requested with ``Host: links.other-tenant.example`` and
redirected. Now it gets the one 404 (refusal reason ``wrong-host``). Real listeners on
port 0 and a real HTTP client; the links are minted by the rewriting engine, as the
proxy mints them.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from clickrelay.config import load_config_text
from redirector.service import RedirectorService
from redirector.tokens import Keyring
from smtp_proxy.engine.rewriter import rewrite_message
from smtp_proxy.smtp.tracking import tracking_settings
from tests.support.redirector_service import loopback_config, running_redirector

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
TARGET = "https://shop.example.org/sale?id=7"


def tracked_link(keyring: Keyring, base_url: str, tmp_path: Path) -> str:
    """The tracked URL the rewriting engine puts in a message for ``TARGET``."""
    config = load_config_text(f'[tracking]\nbase_url = "{base_url}"\n', base_dir=tmp_path)
    settings = tracking_settings(config, keyring, {})
    message = (
        b"From: a@sender.example\r\nTo: b@example.org\r\nSubject: x\r\n"
        b"Content-Type: text/html\r\n\r\n" + f'<a href="{TARGET}">sale</a>\r\n'.encode()
    )
    result = rewrite_message(
        message, settings, queue_id="Q1", sent_at=datetime(2024, 1, 1, tzinfo=UTC)
    )
    (decision,) = result.links
    assert decision.tracked_url is not None, decision
    return decision.tracked_url


def redirector(
    tmp_path: Path, keyring: Keyring, **kwargs: Any
) -> AbstractAsyncContextManager[RedirectorService]:
    return running_redirector(loopback_config(tmp_path, **kwargs), keyring)


async def click(port: int, path: str, host: str | None) -> tuple[int, str | None]:
    """GET ``path`` from 127.0.0.1:port with this ``Host`` header (None: HTTP/1.0 with
    no Host header at all)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if host is None:
            head = f"GET {path} HTTP/1.0\r\nUser-Agent: {BROWSER}\r\n\r\n"
        else:
            head = (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {BROWSER}\r\n"
                "Connection: close\r\n\r\n"
            )
        writer.write(head.encode("ascii"))
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1])
    match = re.search(rb"\r\nLocation: ([^\r]*)\r\n", answer, re.IGNORECASE)
    return status, match.group(1).decode() if match else None


async def refused(admin_port: int) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{admin_port}/metrics") as resp,
    ):
        text = await resp.text()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'clickrelay_redirects_refused_total\{reason="([^"]+)"\} (\S+)', text)
    }


async def test_link_requested_on_another_tenants_host_is_refused(
    tmp_path: Path, keyring: Keyring
) -> None:
    link = tracked_link(keyring, "https://links.a.example", tmp_path)
    path = "/c/" + link.rsplit("/c/", 1)[1]
    async with redirector(tmp_path, keyring) as service:
        port = service.public_port
        assert await click(port, path, "links.other-tenant.example") == (404, None)
        assert await click(port, path, "links.other-tenant.example:443") == (404, None)
        assert await click(port, path, "127.0.0.1") == (404, None)
        assert await click(port, path, None) == (404, None)  # no Host header at all
        assert await click(port, path, "links.a.example") == (302, TARGET)
        # The browser's spelling of the same host: port, case, trailing dot.
        assert await click(port, path, "LINKS.A.Example.:8443") == (302, TARGET)
        counts = await refused(service.admin_port)
    assert counts.get("wrong-host") == 4.0


async def test_host_aliases_answer_for_the_tracking_host(tmp_path: Path, keyring: Keyring) -> None:
    link = tracked_link(keyring, "https://links.a.example", tmp_path)
    path = "/c/" + link.rsplit("/c/", 1)[1]
    aliases = {"Old-Links.A.example": "links.a.example"}
    async with redirector(tmp_path, keyring, host_aliases=aliases) as service:
        port = service.public_port
        assert await click(port, path, "old-links.a.example") == (302, TARGET)
        assert await click(port, path, "links.a.example") == (302, TARGET)
        assert await click(port, path, "links.b.example") == (404, None)
        # An alias's own tokens still work on it too.
        own = tracked_link(keyring, "https://old-links.a.example", tmp_path)
        own_path = "/c/" + own.rsplit("/c/", 1)[1]
        assert await click(port, own_path, "old-links.a.example") == (302, TARGET)
        assert await click(port, own_path, "links.a.example") == (404, None)


async def test_version_1_links_already_sent_keep_working_on_any_host(
    tmp_path: Path, keyring: Keyring
) -> None:
    token = keyring.seal_v1(TARGET, queue_id="Q1", link_index=0, sent_at=1_700_000_000)
    async with redirector(tmp_path, keyring) as service:
        for host in ("links.a.example", "links.other-tenant.example"):
            assert await click(service.public_port, f"/c/{token}", host) == (302, TARGET)
