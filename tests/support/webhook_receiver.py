"""A real webhook receiver on loopback that verifies every request with ``standardwebhooks``.

The specification's reference library checks the signature and the timestamp of each
request; a request that fails is answered 400 and kept in ``rejected`` (a test asserts it
is empty). ``status`` (e.g. 503 while "down") and ``delay`` (a slow receiver) change the
answers at any time; ``deliveries`` keeps every verified payload by ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections import defaultdict
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.polling import until


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class WebhookReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.verifier = Webhook(secret)
        self.status = 200
        self.delay = 0.0
        self.deliveries: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.rejected: list[str] = []
        self.requests = 0
        self.in_flight = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        try:
            body = await request.read()
            if self.delay:
                await asyncio.sleep(self.delay)  # a slow receiver, not synchronisation
            try:
                payload = self.verifier.verify(body, dict(request.headers))
            except WebhookVerificationError as exc:
                self.rejected.append(str(exc))
                return web.Response(status=400)
            if self.status // 100 == 2:
                self.deliveries[request.headers["webhook-id"]].append(payload)
            return web.Response(status=self.status, text="ok")
        finally:
            self.in_flight -= 1

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, ids: set[str], within: float = 60.0) -> None:
        await until(lambda: ids <= set(self.deliveries), f"webhooks for {len(ids)} clicks", within)
