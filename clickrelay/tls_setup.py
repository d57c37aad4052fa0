"""What the redirector's HTTPS listener needs from the other sections: the tracking hosts
of ``https://`` base URLs, ``[acme]``, the data directory, and — with ACME — the DNS
check that must pass before a host is ordered (imported only then: a redirector without
ACME loads no DNS resolver)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from clickrelay.config import Config

if TYPE_CHECKING:
    from collections.abc import Callable

    from redirector.tls.settings import TlsSettings
    from smtp_proxy.config import TrackingConfig


def https_hosts(tracking: TrackingConfig) -> tuple[str, ...]:
    """The hosts of every ``https://`` tracking base URL, default first, no duplicates."""
    hosts = []
    for url in tracking.base_urls():
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname:
            hosts.append(parts.hostname)
    return tuple(dict.fromkeys(hosts))


def tls_settings(config: Config, on_change: Callable[[str], None] | None = None) -> TlsSettings:
    from redirector.tls.settings import TlsSettings

    gate = None
    if config.acme.enabled and config.preflight.enabled:
        from smtp_proxy.preflight.tls_hosts import dns_gate

        gate = dns_gate(config)
    return TlsSettings(
        hosts=https_hosts(config.tracking),
        acme=config.acme,
        data_dir=config.data_dir,
        dns_gate=gate,
        on_change=on_change,
    )
