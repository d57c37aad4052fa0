"""The proxy's upstream side: pooled aiosmtplib connections to the real MTA, or a maildir.

The proxy relays in lock step (no local queue): for each client transaction it takes an
:class:`UpstreamTransaction` from the upstream, forwards MAIL, each RCPT and DATA, and
hands the upstream's :class:`Reply` back to its client unchanged. Two kinds of failure:

* the upstream **answered** 4xx/5xx → a :class:`Reply` (never raised); the proxy passes
  it through with its enhanced status code;
* the upstream **could not be talked to** (refused/failed connect, TLS or AUTH failure at
  connect, timeout, connection lost, garbled reply, ``421`` "closing") →
  :class:`UpstreamError`; the proxy answers ``451 4.4.1`` so the client keeps the message
  and retries. After an UpstreamError the transaction is dead: call ``close()`` and stop.

Use :func:`open_upstream` to get the right object for a URL. The modules, one job each:

* ``types`` — Reply, UpstreamError and the Upstream/UpstreamTransaction protocols;
* ``pool`` — :class:`UpstreamPool`: idle connections, probing, reuse, letting go;
* ``transaction`` — one SMTP transaction on a pooled connection, the streamed DATA phase;
* ``connection`` — opening one connection (greeting, EHLO, STARTTLS, AUTH);
* ``target`` — the upstream URL, credentials and TLS context;
* ``wire`` — command arguments and the DATA bytes (CRLF, dot-stuffing, pieces);
* ``aiosmtplib_compat`` — the only module touching aiosmtplib's private names;
* ``metrics`` — the Prometheus metrics; ``maildir`` — the ``maildir:`` upstream.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from smtp_proxy.config import UpstreamConfig
from smtp_proxy.upstream.maildir import MaildirUpstream
from smtp_proxy.upstream.pool import UpstreamPool
from smtp_proxy.upstream.types import Reply, Upstream, UpstreamError, UpstreamTransaction

__all__ = [
    "MaildirUpstream",
    "Reply",
    "Upstream",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamTransaction",
    "open_upstream",
]


def open_upstream(
    config: UpstreamConfig,
    *,
    registry: CollectorRegistry | None = None,
    local_hostname: str | None = None,
) -> Upstream:
    """An :class:`UpstreamPool` for ``smtp*://`` URLs, a maildir writer for ``maildir:``."""
    if config.url.startswith("maildir:"):
        return MaildirUpstream(config, registry=registry)
    return UpstreamPool(config, registry=registry, local_hostname=local_hostname)
