"""UTM parameters added to a tracked link's destination (pure).

The parameters go into the sealed token only — the message shows the tracking link, and
the redirect goes to the URL with them. A parameter the link already has (any case) is
left as the sender wrote it; the fragment stays after the query; every other byte of the
URL is kept. ``{tag}`` in a value is the message's tag (a parameter whose value comes out
empty is not added).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def utm_params(values: Mapping[str, str], tag: str | None) -> dict[str, str]:
    """The parameters to add for one message: ``{tag}`` filled in, empty ones dropped."""
    out: dict[str, str] = {}
    for name, value in values.items():
        filled = value.replace("{tag}", tag or "")
        if filled:
            out[name] = filled
    return out


def _names(query: str) -> set[str]:
    return {item.split("=", 1)[0].lower() for item in query.split("&") if item}


def add_utm(url: str, params: Mapping[str, str]) -> str:
    """``url`` with each of ``params`` it lacks appended to its query (values
    percent-encoded), before the fragment."""
    if not params:
        return url
    head, hash_, fragment = url.partition("#")
    base, _, query = head.partition("?")
    present = _names(query)
    added = [
        f"{quote(name, safe='')}={quote(value, safe='')}"
        for name, value in params.items()
        if name.lower() not in present
    ]
    if not added:
        return url
    joiner = "" if not query or query.endswith("&") else "&"
    return f"{base}?{query}{joiner}{'&'.join(added)}{hash_}{fragment}"
