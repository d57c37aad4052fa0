"""Who may use the admin listener: loopback only, or anyone holding ``admin_token``.

With ``[redirector] admin_token`` set, every admin route (dashboard, CSV, ``/api/*``,
``/metrics``, static files) needs ``Authorization: Bearer <token>`` or HTTP basic with
the token as password (any user name, so a browser's login prompt works). Tokens are
compared in constant time on their bytes. Without a token, binding the admin listener to
anything but a loopback address is a start-up error: the page tells anyone who asks
about every message and recipient.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from clickrelay.common.errors import ConfigError

REALM = 'Basic realm="clickrelay admin", charset="UTF-8"'


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost``; any other name or address is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_admin_exposure(host: str, token: str | None) -> None:
    """Refuse to start an admin listener reachable from elsewhere without a token."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"[redirector] admin_listen is on {host!r}, which is not a loopback address, and"
            " no [redirector] admin_token is set: set a token (anyone who can reach the"
            " admin listener sees every click) or listen on 127.0.0.1"
        )


def presented_token(request: web.Request) -> bytes | None:
    """The token in a Bearer or Basic ``Authorization`` header, as bytes."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip().encode("utf-8", "surrogateescape")
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        _, colon, password = decoded.partition(b":")
        return password if colon else None
    return None


def token_middleware(token: str) -> Middleware:
    """A middleware answering 401 to every request without ``token``."""
    expected = token.encode("utf-8")

    @web.middleware
    async def require_admin_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = presented_token(request)
        if given is None or not hmac.compare_digest(given, expected):
            return web.Response(
                status=401,
                text="401: this admin listener needs its admin_token\n",
                headers={hdrs.WWW_AUTHENTICATE: REALM, "Cache-Control": "no-store"},
            )
        return await handler(request)

    return require_admin_token
