"""The redirector's own settings (the ``[redirector]`` section).

Plain data: the product layer's loader (:mod:`clickrelay.config`) reads the TOML and
builds this dataclass; the redirector never reads files for its settings itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from clickrelay.common.validators import (
    check,
    check_networks,
    check_required_listen,
    in_range,
    one_of,
)
from redirector.hosts import normalize_host
from redirector.store import store_kind


def _check_store(value: str) -> None:
    if store_kind(value) is None:
        raise ValueError("expected sqlite:PATH or postgresql://user@host:port/db")


_HOST_RE = re.compile(r"[a-z0-9_.-]+|[0-9a-f:.]+")


def _check_host(value: str) -> None:
    if not _HOST_RE.fullmatch(normalize_host(value)):
        raise ValueError(f"expected a host name (no scheme, port or path), got {value!r}")


def _check_host_aliases(value: dict[str, str]) -> None:
    for alias, host in value.items():
        _check_host(alias)
        _check_host(host)


#: Settings a SIGHUP applies without a restart (everything else here needs one).
LIVE_FIELDS = frozenset({"host_aliases", "blocklist_file"})


@dataclass(frozen=True)
class RedirectorConfig:
    #: Public listener: serves only ``/c/<token>`` and ``/healthz``.
    listen: str = field(default="127.0.0.1:8080", metadata=check(check_required_listen))
    #: Admin listener: ``/metrics`` and ``/api/stats``; keep it off the internet.
    admin_listen: str = field(default="127.0.0.1:8081", metadata=check(check_required_listen))
    #: ``sqlite:PATH`` or ``postgresql://user@host:port/db``.
    store: str = field(
        default="sqlite:clickrelay-data/clicks.sqlite3", metadata=check(_check_store)
    )
    #: How client IPs are kept: ``truncate`` (to the prefixes below), ``full`` or ``none``.
    ip_mode: str = field(default="truncate", metadata=check(one_of("truncate", "full", "none")))
    ipv4_prefix: int = field(default=24, metadata=check(in_range(0, 32)))
    ipv6_prefix: int = field(default=48, metadata=check(in_range(0, 128)))
    #: Reverse proxies whose ``X-Forwarded-For`` is believed (CIDRs); otherwise ignored.
    trusted_proxies: tuple[str, ...] = field(default=(), metadata=check(check_networks))
    #: Clicks held in memory while the store is slow or down; the oldest are dropped past it.
    queue_size: int = field(default=100_000, metadata=check(in_range(1, 10**9)))
    batch_size: int = field(default=500, metadata=check(in_range(1, 10**6)))
    flush_interval: float = field(default=0.25, metadata=check(in_range(0.001, 3600)))
    #: A click within this many seconds of the send time is a scanner, not a person.
    bot_seconds_after_send: float = 10.0
    #: Several links of one message from one address within this window: a scanner.
    burst_window: float = 2.0
    burst_links: int = 3
    #: Extra scanner user-agent substrings file (one per line), added to the bundled list.
    scanner_agents_file: Path | None = None
    #: Extra scanner network ranges file (``<name> <CIDR>`` per line), added to the bundled
    #: list; matched on the full client address before truncation.
    scanner_networks_file: Path | None = None
    #: Seconds after a click when its label becomes final: until then the walk rules may
    #: still relabel it bot as more clicks arrive. At least the rules' horizon (20 s).
    classification_settle: float = field(default=60.0, metadata=check(in_range(20, 7 * 86400)))
    #: Request host -> tracking host: links minted for the tracking host also work when
    #: requested on the alias (e.g. an old tracking domain kept pointing here).
    host_aliases: dict[str, str] = field(default_factory=dict, metadata=check(_check_host_aliases))
    #: Links switched off by queue id or destination host (see redirector.blocklist).
    blocklist_file: Path | None = None
    #: Seconds the shutdown waits for queued clicks to reach the store.
    shutdown_flush_timeout: float = 10.0
