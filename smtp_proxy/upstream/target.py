"""Where the SMTP upstream is and how to reach it: the URL, credentials, TLS context."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from clickrelay.common.errors import ConfigError
from smtp_proxy.config import UpstreamConfig

DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    username: str
    password: str
    #: The URL without credentials, for logs.
    description: str


def parse_target(config: UpstreamConfig) -> Target:
    parts = urlsplit(config.url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(
            f"upstream.url: expected smtp://, smtp+starttls:// or smtps://, got {config.url!r}"
        )
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ConfigError(f"upstream.url: bad port in {config.url!r}") from None
    # Credentials: the config keys win; userinfo in the URL is accepted too.
    username = config.username or unquote(parts.username or "")
    password = config.password or unquote(parts.password or "")
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return Target(scheme, host, port, username, password, f"{scheme}://{shown}:{port}")


def tls_context(config: UpstreamConfig) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(config.ca_file) if config.ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"upstream.ca_file: cannot load {config.ca_file}: {exc}") from None
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
