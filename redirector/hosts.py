"""Host names in the one form every comparison uses: tracking hosts, Host headers, link
hosts (the link rules) and blocklist entries.

:func:`normalize_host`: lower case, no trailing dot, no IPv6 brackets, IDN labels in their
ASCII (punycode) form as a browser sends them (:func:`redirector.location.ascii_host`,
UTS 46), so ``Bücher.example.`` and ``xn--bcher-kva.example`` are the same host.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit

from redirector.location import ascii_host


def normalize_host(host: str) -> str:
    """Lower-case, without a trailing dot or brackets, IDN labels in punycode."""
    host = host.strip().rstrip(".").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.isascii():
        return host
    return ascii_host(host).lower()  # (a label it could only %-encode has upper-case hex)


def base_url_host(base_url: str) -> str:
    """The normalised host of a tracking base URL (``https://Links.Example.com/`` ->
    ``links.example.com``): what a token is bound to."""
    try:
        host = urlsplit(base_url.strip()).hostname
    except ValueError:
        host = None
    return normalize_host(host or "")


_HOST_RE = re.compile(r"[a-z0-9_.-]+|[0-9a-f:.]+")


def check_host(value: str) -> None:
    """A host name as settings name one: no scheme, port or path (ValueError if not)."""
    if not _HOST_RE.fullmatch(normalize_host(value)):
        raise ValueError(f"expected a host name (no scheme, port or path), got {value!r}")


def check_host_aliases(value: dict[str, str]) -> None:
    """``[redirector] host_aliases``: request host -> tracking host, both host names."""
    for alias, host in value.items():
        check_host(alias)
        check_host(host)


@lru_cache(maxsize=512)  # a handful of real hosts; junk from scanners just cycles through
def request_host(header: str | None) -> str:
    """The normalised host of a ``Host`` header value (port dropped); "" when absent."""
    if not header:
        return ""
    if header.startswith("["):  # [v6] or [v6]:port
        end = header.find("]")
        return normalize_host(header[1:end]) if end != -1 else ""
    head, colon, port = header.rpartition(":")
    if colon and (port.isdigit() or not port):
        header = head
    return normalize_host(header)
