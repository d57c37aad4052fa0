"""Authentication of the admin listeners (``/metrics``, ``/api/*``, and any later page).

One rule, one place: with ``[redirector] admin_token`` set, every admin request must
carry ``Authorization: Bearer <token>`` or HTTP basic credentials whose password is the
token (any user name: Prometheus and browsers both speak basic); anything else gets a
401 with ``WWW-Authenticate``. The comparison is constant-time. Without a token the
admin listeners must stay on a loopback address: :func:`check_admin_listen` makes any
other address a start-up error, so a stats API is never exposed by a typo.

The admin app factories only install :func:`admin_auth_middleware`.
"""

from __future__ import annotations

import binascii
import hmac
import ipaddress
from base64 import b64decode

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from clickrelay.common.errors import ConfigError
from clickrelay.common.hostport import parse_hostport

#: Names that are loopback without asking a resolver.
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for wildcards and other names."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_admin_listen(listen: str, token: str, *, key: str) -> None:
    """ConfigError when ``listen`` (``host:port``) is not loopback and there is no token."""
    if not listen or token:
        return
    try:
        host, _port = parse_hostport(listen)
    except ValueError:
        return  # the listener's own parsing reports a malformed address
    if not is_loopback(host):
        raise ConfigError(
            f"{key} = {listen!r} is reachable from other hosts but [redirector] admin_token"
            " is empty: set admin_token (admin requests then need 'Authorization: Bearer"
            " <token>') or bind the admin listener to 127.0.0.1"
        )


def _presented_token(header: str) -> str | None:
    scheme, _, credentials = header.strip().partition(" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    if scheme == "bearer":
        return credentials
    if scheme == "basic":
        try:
            decoded = b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, sep, password = decoded.partition(":")
        return password if sep else None
    return None


_CHALLENGE = 'Bearer realm="clickrelay-admin", Basic realm="clickrelay-admin"'


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "admin token required"},
        status=401,
        headers={
            hdrs.WWW_AUTHENTICATE: _CHALLENGE,
            "Cache-Control": "no-store",
        },
    )


def admin_auth_middleware(token: str) -> Middleware:
    """The middleware that requires ``token`` on every route of the app it is in."""
    expected = token.encode("utf-8")

    @web.middleware
    async def require_admin_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        presented = _presented_token(request.headers.get(hdrs.AUTHORIZATION, ""))
        if presented is None or not hmac.compare_digest(presented.encode("utf-8"), expected):
            return _unauthorized()
        return await handler(request)

    return require_admin_token


def install_admin_auth(app: web.Application, token: str) -> None:
    """Require ``token`` on every route of ``app`` (nothing to do for an empty token)."""
    if token:
        app.middlewares.append(admin_auth_middleware(token))
