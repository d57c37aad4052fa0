"""One ``[[webhooks]]`` entry: where clicks are posted, how they are signed and retried."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from clickrelay.common.errors import ConfigError
from clickrelay.common.validators import check, in_range

SECRET_PREFIX = "whsec_"


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ``whsec_<base64>``; ValueError if bad."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("expected a secret 'whsec_<base64>' (Standard Webhooks format)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "expected a secret 'whsec_<base64>': the part after whsec_ is not base64"
        ) from None
    if not 24 <= len(key) <= 64:
        raise ValueError("expected a secret of 24 to 64 bytes (whsec_ + base64)")
    return key


def _check_secret(value: str) -> None:
    secret_bytes(value)


def _check_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("expected a URL without user:password (sign with the secret)")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebhookConfig:
    #: Where clicks are POSTed (http(s); http:// only to loopback unless allow_insecure).
    url: str = field(metadata=check(_check_url))
    #: Standard Webhooks signing secret, ``whsec_<base64 of 24-64 random bytes>``.
    secret: str = field(repr=False, metadata=check(_check_secret))
    #: Label in metrics, logs and ``clickrelay webhooks``; default: the URL's host and path.
    #: Also the key of this endpoint's cursor in the store: renaming starts a new cursor.
    name: str = ""
    #: Also send bot clicks (flagged with classification and reason); default humans only.
    include_bots: bool = False
    #: Seconds one request may take (connect, send, answer).
    timeout: float = field(default=10.0, metadata=check(in_range(0.1, 300)))
    #: Retry a failing event for this long (seconds) with exponential back-off...
    retry_for: float = field(default=86_400.0, metadata=check(in_range(0, 30 * 86_400)))
    #: ...or at most this many attempts (0 = no limit but retry_for).
    max_attempts: int = field(default=0, metadata=check(in_range(0, 1_000_000)))
    #: The first retry waits this long (seconds); each next one twice as long, up to 1 h.
    retry_delay: float = field(default=5.0, metadata=check(in_range(0.01, 3600)))
    #: Allow http:// to a host that is not loopback (the body and signature in clear).
    allow_insecure: bool = False
    #: Send a click only once its label is final (settled, ``classification_settle``
    #: after the click): a scanner's walk is served as human and relabelled bot later, so
    #: with false an endpoint without include_bots gets scanner clicks as human ones.
    settled_only: bool = True
    #: Seconds a click waits before it is sent (0 = as soon as it is committed, or settled).
    deliverable_after: float = field(default=0.0, metadata=check(in_range(0, 86_400)))
    #: Requests in flight at once to this endpoint.
    concurrency: int = field(default=4, metadata=check(in_range(1, 256)))

    @property
    def key(self) -> str:
        """The endpoint's name: ``name`` or the URL's host, port and path."""
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        return f"{parts.netloc}{parts.path}"


def validate_webhooks(webhooks: tuple[WebhookConfig, ...]) -> None:
    """Checks across keys; raises ConfigError (the service refuses to start)."""
    seen: set[str] = set()
    for i, hook in enumerate(webhooks):
        where = f"webhooks[{i}]"
        parts = urlsplit(hook.url)
        if (
            parts.scheme == "http"
            and not hook.allow_insecure
            and not is_loopback(parts.hostname or "")
        ):
            raise ConfigError(
                f"{where}.url: http:// to a host that is not loopback sends clicks and"
                f" signatures in clear; use https:// or set allow_insecure = true, got {hook.url!r}"
            )
        if hook.key in seen:
            raise ConfigError(f"{where}: two webhooks named {hook.key!r}; give each a name")
        seen.add(hook.key)
