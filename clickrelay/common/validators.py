"""Value checks for settings fields, read by the strict TOML loader in :mod:`clickrelay.config`.

A settings dataclass attaches one with ``field(metadata=check(fn))``; ``fn`` raises
``ValueError("expected …")`` and the loader turns that into a ``ConfigError`` naming the
file and the key. Both services' settings use these, so each rule is written once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from clickrelay.common.hostport import parse_hostport


def check(fn: Callable[[Any], None]) -> dict[str, Any]:
    """Field metadata carrying ``fn`` for the loader."""
    return {"check": fn}


def check_listen(value: str) -> None:
    """``host:port``; empty means the listener is off."""
    if value:
        parse_hostport(value)


def check_required_listen(value: str) -> None:
    parse_hostport(value)


#: The port of a ``[preflight] nameservers`` entry that names none.
DNS_PORT = 53


def parse_nameserver(entry: str) -> tuple[str, int]:
    """A DNS server as ``host``, ``host:port`` or ``[v6]:port`` → (host, port)."""
    return parse_hostport(entry, DNS_PORT)


def check_nameservers(values: tuple[str, ...]) -> None:
    for item in values:
        try:
            parse_nameserver(item)
        except ValueError:
            raise ValueError(
                f"expected host, host:port or [ipv6]:port for each server, got {item!r}"
            ) from None


def check_base_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("expected a base URL without query or fragment")


def check_sender_domains(value: dict[str, str]) -> None:
    """``[tracking] sender_domains``: sender domain -> tracking base URL."""
    for domain, url in value.items():
        if not domain or "@" in domain:
            raise ValueError(f"expected a sender domain as key, got {domain!r}")
        check_base_url(url)


def check_networks(values: tuple[str, ...]) -> None:
    for item in values:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"expected CIDR networks like 127.0.0.0/8, got {item!r}") from None


def check_positive(value: float) -> None:
    if value <= 0:
        raise ValueError("expected a number > 0")


def check_non_negative(value: float) -> None:
    if value < 0:
        raise ValueError("expected a number >= 0")


def one_of(*choices: str) -> Callable[[str], None]:
    def check_choice(value: str) -> None:
        if value not in choices:
            raise ValueError("expected one of " + ", ".join(repr(c) for c in choices))

    return check_choice


def in_range(low: float, high: float) -> Callable[[float], None]:
    def check_range(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low:g} to {high:g}")

    return check_range
