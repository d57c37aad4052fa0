"""The redirector's own settings (the ``[redirector]`` section).

Defined here rather than in ``smtp_proxy.config`` because the redirector may not import
the proxy package; ``smtp_proxy.config`` loads the TOML and builds this dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RedirectorConfig:
    #: Public listener: serves only ``/c/<token>`` and ``/healthz``.
    listen: str = "127.0.0.1:8080"
    #: Admin listener: ``/metrics`` and ``/api/stats``; keep it off the internet.
    admin_listen: str = "127.0.0.1:8081"
    #: ``sqlite:PATH`` or ``postgresql://user@host:port/db``.
    store: str = "sqlite:./clickrelay-data/clicks.sqlite3"
    #: How client IPs are kept: ``truncate`` (to the prefixes below), ``full`` or ``none``.
    ip_mode: str = "truncate"
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48
    #: Reverse proxies whose ``X-Forwarded-For`` is believed (CIDRs); otherwise ignored.
    trusted_proxies: tuple[str, ...] = ()
    #: Clicks held in memory while the store is slow or down; the oldest are dropped past it.
    queue_size: int = 100_000
    batch_size: int = 500
    flush_interval: float = 0.25
    #: A click within this many seconds of the send time is a scanner, not a person.
    bot_seconds_after_send: float = 10.0
    #: Several links of one message from one address within this window: a scanner.
    burst_window: float = 2.0
    burst_links: int = 3
    #: Extra scanner user-agent substrings file (one per line), added to the bundled list.
    scanner_agents_file: Path | None = None
    #: Seconds the shutdown waits for queued clicks to reach the store.
    shutdown_flush_timeout: float = 10.0
