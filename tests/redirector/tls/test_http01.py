"""``GET /.well-known/acme-challenge/<token>`` on the public app, over a real socket: a
placed token gets its key authorization, anything else the public app's one 404 (and
only well-formed tokens are looked up)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from redirector.config import RedirectorConfig
from redirector.http.app import create_app
from redirector.tokens import Keyring
from tests.support.preflight_fixtures import serve_app

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
ANSWER = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


@pytest.fixture
async def server(keyring: Keyring) -> AsyncIterator[tuple[int, list[str]]]:
    asked: list[str] = []

    async def lookup(token: str) -> str | None:
        asked.append(token)
        return ANSWER if token == TOKEN else None

    app = create_app(
        RedirectorConfig(), keyring, None, registry=CollectorRegistry(), acme_challenge=lookup
    )
    async with serve_app(app) as port:
        yield port, asked


async def get(port: int, path: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", allow_redirects=False) as resp,
    ):
        return resp.status, await resp.read()


async def test_a_placed_token_gets_its_key_authorization(
    server: tuple[int, list[str]],
) -> None:
    port, _ = server
    assert await get(port, f"/.well-known/acme-challenge/{TOKEN}") == (200, ANSWER.encode())


@pytest.mark.parametrize(
    "token", ["A" * 43, "short", "has.dot" + "x" * 20, "%2e%2e%2fetc", "x" * 200]
)
async def test_anything_else_is_the_uniform_404(server: tuple[int, list[str]], token: str) -> None:
    port, asked = server
    not_found = await get(port, "/c/not-a-token")
    assert not_found[0] == 404
    assert await get(port, f"/.well-known/acme-challenge/{token}") == not_found
    well_formed = token == "A" * 43
    assert asked == ([token] if well_formed else [])


async def test_without_acme_the_path_is_not_served(keyring: Keyring) -> None:
    app = create_app(RedirectorConfig(), keyring, None, registry=CollectorRegistry())
    async with serve_app(app) as port:
        status, _ = await get(port, f"/.well-known/acme-challenge/{TOKEN}")
    assert status == 404
