"""Which tracking base URL a message gets: by its sender's domain.

``[tracking.sender_domains]`` maps sender domains to their own tracking base URLs; the
envelope sender is tried first, then the From header, each with its parent domains.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import getaddresses

from smtp_proxy.engine import mime_parts
from smtp_proxy.engine.linkrules import normalize_host


def domain_of(address: str) -> str:
    """The domain of an address, normalised as link hosts are (IDNA, lower case)."""
    _, _, domain = address.strip().strip("<>").rpartition("@")
    # As link hosts are compared: a sender domain configured as ``bücher.example``
    # matches mail from ``xn--bcher-kva.example`` (and the other way round).
    return normalize_host(domain.strip().strip(">"))


def _lookup_domain(domain: str, mapping: dict[str, str]) -> str | None:
    """Exact sender domain first, then its parent domains."""
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        url = mapping.get(".".join(labels[i:]))
        if url:
            return url
    return None


def sender_base_url(
    sender_domains: Mapping[str, str], default: str, envelope_from: str, data: bytes
) -> str:
    """The tracking base URL for a message: by envelope sender domain, then by the From
    header's domain (``sender_domains``: sender domain → base URL), else ``default``."""
    mapping = {normalize_host(k): v for k, v in sender_domains.items()}
    if not mapping:
        return default
    if envelope_from and "@" in envelope_from:
        url = _lookup_domain(domain_of(envelope_from), mapping)
        if url:
            return url
    try:
        header_end, _, _ = mime_parts.split_entity(data, 0, len(data))
        parsed = mime_parts.read_headers(data[:header_end])
        # Raw values: an SMTPUTF8 message may write the address in UTF-8 (RFC 6532), which
        # the parser keeps as surrogate escapes (and str() of its Header turns into U+FFFD).
        values = [
            value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
            for name, value in parsed.raw_items()
            if name.lower() == "from"
        ]
        for _, addr in getaddresses(values):
            if "@" in addr:
                url = _lookup_domain(domain_of(addr), mapping)
                if url:
                    return url
    except Exception:  # an unreadable From header just means: the default
        pass
    return default
