"""The redirector's own settings (the ``[redirector]`` section).

Plain data: the product layer's loader (:mod:`clickrelay.config`) reads the TOML and
builds this dataclass; the redirector never reads files for its settings itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from clickrelay.common.validators import (
    check,
    check_listen,
    check_networks,
    check_required_listen,
    in_range,
    one_of,
)
from redirector.hosts import check_host_aliases

#: Let's Encrypt's production ACME directory.
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


def _check_store(value: str) -> None:
    """The URLs :func:`redirector.store.store_kind` knows, checked without importing the
    store package (its schema and drivers): every command reads this section, and most
    never open the store. A test keeps the two in step."""
    sqlite = value.startswith("sqlite:") and value != "sqlite:"
    if not sqlite and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("expected sqlite:PATH or postgresql://user@host:port/db")


def _check_directory(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("expected the https:// URL of an ACME directory")


#: Settings a SIGHUP applies without a restart (everything else here needs one).
LIVE_FIELDS = frozenset({"host_aliases", "blocklist_file", "tls_certificates"})


@dataclass(frozen=True)
class RedirectorConfig:
    #: Public listener: serves only ``/c/<token>`` and ``/healthz`` (and, for ACME,
    #: ``/.well-known/acme-challenge/``).
    listen: str = field(default="127.0.0.1:8080", metadata=check(check_required_listen))
    #: HTTPS listener serving what ``listen`` serves, certificate chosen by SNI; empty = off.
    https_listen: str = field(default="", metadata=check(check_listen))
    #: Globs of PEM files (private key + chain) for tracking hosts you certify yourself;
    #: read at start and on SIGHUP, preferred to ACME for the names they cover.
    tls_certificates: tuple[Path, ...] = ()
    #: Admin listener: ``/metrics`` and ``/api/stats``; keep it off the internet.
    admin_listen: str = field(default="127.0.0.1:8081", metadata=check(check_required_listen))
    #: Shared secret of every admin listener (this one and ``[proxy] admin_listen``):
    #: when set, admin requests need ``Authorization: Bearer <token>`` (or HTTP basic with
    #: the token as password). Empty: the admin listeners must be on a loopback address.
    admin_token: str = field(default="", repr=False)
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
    #: Seconds a connection to the public listener may stay open without a complete
    #: request: the deadline for a request's headers (from the moment it connects) and
    #: the keep-alive idle timeout after each answer. Trickled bytes do not extend it.
    header_timeout: float = field(default=10.0, metadata=check(in_range(0.1, 3600)))
    #: Open connections to the public listener, in total and per client address (IPv4
    #: address or IPv6 /64; trusted_proxies count only toward the total). Beyond them a
    #: connection gets a 503 and is closed. Keep max_connections well under the process's
    #: file descriptor limit (LimitNOFILE= in the systemd units).
    max_connections: int = field(default=2000, metadata=check(in_range(1, 10**6)))
    max_connections_per_client: int = field(default=100, metadata=check(in_range(1, 10**6)))
    #: Clicks held in memory while the store is slow or down; the oldest are dropped past it.
    queue_size: int = field(default=100_000, metadata=check(in_range(1, 10**9)))
    #: The same queue bounded in memory too (bytes, roughly): long URLs and user agents
    #: cannot make it grow past this; the oldest clicks are dropped first.
    queue_bytes: int = field(default=64 * 2**20, metadata=check(in_range(2**16, 2**40)))
    #: Of the clicks of one link from one client address, only the first
    #: repeat_clicks_stored within repeat_window seconds are stored; every click is still
    #: redirected and counted in the metrics.
    repeat_clicks_stored: int = field(default=3, metadata=check(in_range(1, 10**6)))
    repeat_window: float = field(default=600.0, metadata=check(in_range(1, 86400 * 7)))
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
    host_aliases: dict[str, str] = field(default_factory=dict, metadata=check(check_host_aliases))
    #: Links switched off by queue id or destination host (see redirector.blocklist).
    blocklist_file: Path | None = None
    #: Seconds the shutdown waits for queued clicks to reach the store.
    shutdown_flush_timeout: float = 10.0
    #: Clicks older than this many days are deleted in the background (0 = keep forever).
    retention_days: int = field(default=395, metadata=check(in_range(0, 100_000)))


@dataclass(frozen=True)
class AcmeConfig:
    """The ``[acme]`` section: certificates for the tracking hosts from an ACME CA."""

    enabled: bool = False
    #: The CA's ACME directory URL (Let's Encrypt production by default).
    directory: str = field(default=LETS_ENCRYPT, metadata=check(_check_directory))
    #: Contact address given to the CA (expiry notices); empty = none.
    email: str = ""
    #: CA bundle to trust the ACME server with (a test CA); empty = system CAs.
    ca_file: Path | None = None
    #: Renewal starts this many days before expiry (or in a certificate's last third).
    renew_before_days: float = field(default=30.0, metadata=check(in_range(1, 365)))
    challenge: str = field(default="http-01", metadata=check(one_of("http-01")))
