"""The redirector's own settings (the ``[redirector]`` section).

Defined here rather than in ``smtp_proxy.config`` because the redirector may not import
the proxy package; ``smtp_proxy.config`` loads the TOML and builds this dataclass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def parse_hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or (with a default port) a bare host."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError("expected [ipv6]:port")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif text.count(":") > 1:
        host, port_text = text, ""
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError("expected host:port")
    if not port_text:
        if default_port is None:
            raise ValueError("expected host:port")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("expected a port number 0-65535")
    return host, int(port_text)


def _check_listen(value: str) -> None:
    parse_hostport(value)


def _check_store(value: str) -> None:
    if value.startswith("sqlite:") and len(value) > len("sqlite:"):
        return
    if value.startswith(("postgresql://", "postgres://")):
        return
    raise ValueError("expected sqlite:PATH or postgresql://user@host:port/db")


def _check_networks(values: tuple[str, ...]) -> None:
    for item in values:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"expected CIDR networks like 10.0.0.0/8, got {item!r}") from None


def _check_ip_mode(value: str) -> None:
    if value not in ("truncate", "full", "none"):
        raise ValueError("expected one of 'truncate', 'full', 'none'")


def _range(low: float, high: float) -> Callable[[float], None]:
    def check(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low:g} to {high:g}")

    return check


def _check(fn: Callable[[Any], None]) -> dict[str, Any]:
    """Field metadata read by the strict loader in ``smtp_proxy.config``."""
    return {"check": fn}


@dataclass(frozen=True)
class RedirectorConfig:
    #: Public listener: serves only ``/c/<token>`` and ``/healthz``.
    listen: str = field(default="127.0.0.1:8080", metadata=_check(_check_listen))
    #: Admin listener: ``/metrics`` and ``/api/stats``; keep it off the internet.
    admin_listen: str = field(default="127.0.0.1:8081", metadata=_check(_check_listen))
    #: ``sqlite:PATH`` or ``postgresql://user@host:port/db``.
    store: str = field(
        default="sqlite:clickrelay-data/clicks.sqlite3", metadata=_check(_check_store)
    )
    #: How client IPs are kept: ``truncate`` (to the prefixes below), ``full`` or ``none``.
    ip_mode: str = field(default="truncate", metadata=_check(_check_ip_mode))
    ipv4_prefix: int = field(default=24, metadata=_check(_range(0, 32)))
    ipv6_prefix: int = field(default=48, metadata=_check(_range(0, 128)))
    #: Reverse proxies whose ``X-Forwarded-For`` is believed (CIDRs); otherwise ignored.
    trusted_proxies: tuple[str, ...] = field(default=(), metadata=_check(_check_networks))
    #: Clicks held in memory while the store is slow or down; the oldest are dropped past it.
    queue_size: int = field(default=100_000, metadata=_check(_range(1, 10**9)))
    batch_size: int = field(default=500, metadata=_check(_range(1, 10**6)))
    flush_interval: float = field(default=0.25, metadata=_check(_range(0.001, 3600)))
    #: A click within this many seconds of the send time is a scanner, not a person.
    bot_seconds_after_send: float = 10.0
    #: Several links of one message from one address within this window: a scanner.
    burst_window: float = 2.0
    burst_links: int = 3
    #: Extra scanner user-agent substrings file (one per line), added to the bundled list.
    scanner_agents_file: Path | None = None
    #: Seconds the shutdown waits for queued clicks to reach the store.
    shutdown_flush_timeout: float = 10.0
