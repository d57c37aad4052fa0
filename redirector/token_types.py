"""What a link token carries (:class:`LinkData`) and which URLs may be sealed: shared by
the token layouts (:mod:`redirector.token_v1`, :mod:`redirector.token_v2`) and the
keyring (:mod:`redirector.tokens`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
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
    #: The message's tag and metadata, as the sending application set them.
    tag: str | None = None
    metadata: Mapping[str, str] | None = None
    #: Minted for the invisible trap link (version 2 only): whoever fetches it is a scanner.
    trap: bool = False

    @property
    def sent_at_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.sent_at, UTC)


def encode_extras(tag: str | None, metadata: Mapping[str, str] | None) -> bytes:
    """The compact JSON sealed beside the URL (empty when there is nothing to say):
    ``{"t": tag, "m": {metadata}}``, either member optional."""
    doc: dict[str, object] = {}
    if tag is not None:
        doc["t"] = tag
    if metadata:
        doc["m"] = dict(metadata)
    if not doc:
        return b""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_extras(raw: bytes) -> tuple[str | None, Mapping[str, str] | None]:
    """(tag, metadata) from :func:`encode_extras`'s bytes; ValueError (UnicodeDecodeError
    too) when they are not what we wrote."""
    doc = json.loads(raw.decode("utf-8"))
    if not isinstance(doc, dict):
        raise ValueError("extras are not an object")
    tag = doc.get("t")
    metadata = doc.get("m")
    if tag is not None and not isinstance(tag, str):
        raise ValueError("tag is not a string")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise ValueError("metadata is not a flat object of strings")
    return tag, metadata
