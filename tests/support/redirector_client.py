"""Talking to the redirector's apps in-process over loopback (aiohttp's test client):
answers read to the end, tokens sealed for a click long ago (or raw, past Keyring.seal's
checks), and the one uniform 404."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from multidict import CIMultiDictProxy
from prometheus_client import CollectorRegistry

from redirector.clicks.recorder import ClickRecorder
from redirector.config import RedirectorConfig
from redirector.http.app import create_app
from redirector.tokens import Keyring

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
LONG_AGO = 1_700_000_000  # send time far enough back that no click is "too soon"
#: The Host aiohttp's test client sends (port dropped): tokens are bound to it.
TEST_HOST = "127.0.0.1"

TestClientT = TestClient[Any, Any]


@asynccontextmanager
async def client_for(app: Application) -> AsyncIterator[TestClientT]:
    async with TestClient(TestServer(app)) as client:
        yield client


def public_app(
    keyring: Keyring,
    config: RedirectorConfig | None = None,
    recorder: ClickRecorder | None = None,
    **kwargs: Any,
) -> Application:
    return create_app(
        config or RedirectorConfig(), keyring, recorder, registry=CollectorRegistry(), **kwargs
    )


@dataclasses.dataclass(frozen=True)
class Answer:
    """A response read to the end (aiohttp's own object cannot be read after release)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def request(client: TestClientT, method: str, path: str, **kwargs: Any) -> Answer:
    headers = kwargs.pop("headers", {"User-Agent": BROWSER})
    async with client.request(
        method, path, allow_redirects=False, headers=headers, **kwargs
    ) as resp:
        return Answer(resp.status, resp.headers, await resp.read())


async def get(client: TestClientT, path: str, **kwargs: Any) -> Answer:
    return await request(client, "GET", path, **kwargs)


def seal(keyring: Keyring, url: str, **kwargs: Any) -> str:
    kwargs.setdefault("queue_id", "4XyZ1abc")
    kwargs.setdefault("link_index", 0)
    kwargs.setdefault("sent_at", LONG_AGO)
    kwargs.setdefault("host", TEST_HOST)
    return keyring.seal(url, **kwargs)


def raw_token(keyring: Keyring, url: bytes, *, queue_id: bytes = b"RAW1") -> str:
    """A version 1 token sealed with the raw AEAD, bypassing the keyring's URL checks."""
    key = keyring.keys[0]
    header = struct.pack(">B4s", 1, key.key_id)
    plaintext = (
        struct.pack(">BII", 0, LONG_AGO, 0)
        + bytes((len(queue_id),))
        + queue_id
        + struct.pack(">H", 0)
        + url
    )
    nonce = os.urandom(12)
    sealed = AESGCMSIV(key.secret).encrypt(nonce, plaintext, header)
    return base64.urlsafe_b64encode(header + nonce + sealed).rstrip(b"=").decode("ascii")


def assert_not_found(resp: Answer) -> None:
    assert resp.status == 404
    assert "Location" not in resp.headers
    assert resp.body == b"Not Found\n"
    assert resp.headers["Cache-Control"] == "no-store"
