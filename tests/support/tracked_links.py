"""Reading tracked links back in tests: a version 2 token opens only with the tracking
host it was minted for, which is the host of the tracked URL it sits in."""

from __future__ import annotations

from urllib.parse import urlsplit

from redirector.hosts import request_host
from redirector.tokens import Keyring, LinkData


def open_tracked(keyring: Keyring, tracked_url: str) -> LinkData:
    """Decode ``<base_url>/c/<token>`` with the base URL's host (port dropped)."""
    parts = urlsplit(tracked_url)
    token = parts.path.rsplit("/c/", 1)[1]
    return keyring.open(token, request_host(parts.netloc.rpartition("@")[2]))
