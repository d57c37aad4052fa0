"""What a link token carries (:class:`LinkData`) and which URLs may be sealed: shared by
the token layouts (:mod:`redirector.token_v1`, :mod:`redirector.token_v2`) and the
keyring (:mod:`redirector.tokens`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

from redirector.location import has_forbidden_char

#: A URL longer than this is never minted (tracked links are capped far below it anyway).
MAX_URL_BYTES = 65_536


def url_is_sealable(url: str) -> bool:
    """Only absolute http(s) URLs without control characters or spaces are ever minted."""
    if not url.startswith(("https://", "http://")):  # the common spelling, then any case
        lower = url[:8].lower()
        if not (lower.startswith("http://") or lower.startswith("https://")):
            return False
    if has_forbidden_char(url):
        return False
    if url.isascii():  # O(1) in CPython: no need to encode to know the byte length
        return len(url) <= MAX_URL_BYTES
    return len(url.encode("utf-8", "surrogatepass")) <= MAX_URL_BYTES


class LinkData(NamedTuple):
    """What a token says: where to send the click and what to record about it.

    A named tuple (immutable) rather than a frozen dataclass: one is made per redirect,
    and the dataclass's ``__init__`` costs about 3x as much.
    """

    url: str
    queue_id: str
    link_index: int
    recipient: str | None
    sent_at: int
    key_id: str
    #: Token layout version (1: base64url, not host-bound; 2: base36, host-bound).
    version: int = 2
    #: The tracking host a version 2 token is bound to; None for version 1.
    host: str | None = None
    #: Minted for the invisible trap link (version 2 only): whoever fetches it is a scanner.
    trap: bool = False

    @property
    def sent_at_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.sent_at, UTC)
