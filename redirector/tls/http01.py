"""HTTP-01: ``GET /.well-known/acme-challenge/<token>`` on the plain listener.

The answer comes from whichever node placed it (memory, then the shared TLS storage);
anything else gets the public app's one 404.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

PATH = "/.well-known/acme-challenge/{token}"
#: RFC 8555 tokens are base64url; anything else is not worth a storage lookup.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")

ChallengeLookup = Callable[[str], Awaitable[str | None]]
LOOKUP_KEY: web.AppKey[ChallengeLookup] = web.AppKey("acme_challenge_lookup")


def add_route(app: web.Application, lookup: ChallengeLookup, not_found: web.Response) -> None:
    app[LOOKUP_KEY] = lookup
    body, headers = not_found.body, not_found.headers.copy()

    async def answer(request: web.Request) -> web.Response:
        token = request.match_info.get("token", "")
        value = await request.app[LOOKUP_KEY](token) if _TOKEN_RE.match(token) else None
        if value is None:
            return web.Response(status=404, body=body, headers=headers)
        return web.Response(
            text=value,
            content_type="application/octet-stream",
            headers={"Cache-Control": "no-store"},
        )

    app.router.add_route("GET", PATH, answer)
