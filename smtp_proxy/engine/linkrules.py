"""Which links may be tracked: one pure function, ``link_skip_reason(url, policy)``.

Every link the finders (``html_scan``, ``text_links``) report goes through here. ``None``
means "may be tracked"; anything else is the reason string ``clickrelay rewrite --explain``
shows for a link that is left as written. The rules are checked in this order, so each
URL gets the most telling reason:

1. ``empty``         nothing but whitespace
2. ``placeholder``   template variables (``{{x}}``, ``{%x%}``, ``*|X|*``, ``%%X%%``, ``[[x]]``),
                     raw or percent-encoded: the URL is not final yet, tracking would freeze it
3. ``fragment``      ``#...`` (in-page anchors)
4. ``not-http``      any other scheme (mailto, tel, javascript, data, cid, ...) or none
5. ``malformed``     http(s) but not a URL a token may carry: whitespace or control
                     characters anywhere (CR/LF included), no ``//authority``, no host, a
                     bad host character, a bad port
6. ``already-tracked`` the host is one of our tracking hosts (idempotency: the second
                     rewrite of a message must change nothing)
7. ``unsubscribe``   path or query mentions unsubscribe / optout / opt-out
8. ``skip-domain``   the host equals a configured skip domain or is under one

A URL for which this returns ``None`` always satisfies ``redirector.tokens.url_is_sealable``
except for its length, which the caller checks against ``max_link_length``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

# Re-exported: the engine compares hosts in the form the redirector does.
from redirector.hosts import normalize_host as normalize_host

#: Reason given by the caller for a link whose element carries an opt-out attribute.
OPT_OUT_REASON = "opted-out"

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
#: What the WHATWG URL parser strips or rejects, plus lone surrogates (undecodable input).
_BAD_CHAR_RE = re.compile(r"[\x00-\x20\x7f\ud800-\udfff]")
#: Template placeholders as the common mail/templating tools write them: an opener with
#: its closer somewhere after it. (Checked with str.find, not a ".*?" regex: linear even
#: for a megabyte of "{{{{".)
_PLACEHOLDERS = (("{{", "}}"), ("{%", "%}"), ("*|", "|*"), ("%%", "%%"), ("[[", "]]"))
#: Quick pre-check before the search and the percent-decoding: every placeholder opener
#: contains one of these characters (raw or as the first byte of its %-escape).
_PLACEHOLDER_HINT_RE = re.compile(r"[{*%\[]")
#: After "scheme:": "//", the authority, then path and query (up to the fragment).
_AUTHORITY_RE = re.compile(r"//([^/?#]*)([^#]*)")
_UNSUBSCRIBE_RE = re.compile(r"unsubscribe|opt-?out|opt_out", re.IGNORECASE)
#: Characters a host may contain (ASCII) besides any non-ASCII letter of an IDN.
_HOST_OK_RE = re.compile(r"[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\]")


def _host_of(entry: str) -> str:
    """A policy entry may be a bare host, ``host:port``, ``[v6]:port`` or a base URL."""
    entry = entry.strip()
    try:
        host = urlsplit(entry if "//" in entry else "//" + entry).hostname
    except ValueError:
        host = None
    return normalize_host(host if host else entry)


@dataclass(frozen=True)
class LinkPolicy:
    """The per-message facts the rules need.

    ``tracking_hosts``: hosts of every tracking base URL (a link to one of them is
    already tracked). ``skip_domains``: a link whose host is one of these, or under one,
    is left alone. Entries are normalised on construction (case, trailing dot, IDN,
    an accidental port or scheme), so callers may pass what the configuration holds.
    """

    tracking_hosts: frozenset[str]
    skip_domains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        hosts = frozenset(h for h in map(_host_of, self.tracking_hosts) if h)
        domains = tuple(d for d in map(_host_of, self.skip_domains) if d)
        object.__setattr__(self, "tracking_hosts", hosts)
        object.__setattr__(self, "skip_domains", domains)

    @classmethod
    def from_base_urls(
        cls, base_urls: Iterable[str], skip_domains: Iterable[str] = ()
    ) -> LinkPolicy:
        """Build a policy from tracking base URLs (``TrackingConfig.base_urls()``)."""
        return cls(frozenset(base_urls), tuple(skip_domains))


def _has_placeholder(url: str) -> bool:
    if not _PLACEHOLDER_HINT_RE.search(url):
        return False
    if _placeholder_in(url):
        return True
    # Percent-encoded forms: %7B%7B..%7D%7D, %25%25..%25%25, *%7C..%7C*, %5B%5B..%5D%5D,
    # also encoded twice (a templating tool that URL-encodes an already encoded link).
    decoded = url
    for _ in range(2):
        if "%" not in decoded:
            return False
        decoded = unquote(decoded, errors="replace")
        if _placeholder_in(decoded):
            return True
    return False


def _placeholder_in(text: str) -> bool:
    for opener, closer in _PLACEHOLDERS:
        start = text.find(opener)
        if start >= 0 and text.find(closer, start + len(opener)) >= 0:
            return True
    return False


def _is_under(host: str, domains: Iterable[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def link_skip_reason(url: str, policy: LinkPolicy) -> str | None:
    """``None`` if ``url`` may be tracked, else the reason it is left as written.

    Pure and total: never raises, whatever the input.
    """
    stripped = url.strip(" \t\n\r\f")
    if not stripped:
        return "empty"
    if _has_placeholder(url):
        return "placeholder"
    if stripped.startswith("#"):
        return "fragment"
    scheme = _SCHEME_RE.match(stripped)
    if scheme is None or scheme.group(1).lower() not in ("http", "https"):
        return "not-http"
    if _BAD_CHAR_RE.search(url):
        return "malformed"
    split = _host_and_tail(url, scheme.end())
    if split is None:
        return "malformed"
    host, tail = split
    if host in policy.tracking_hosts:
        return "already-tracked"
    if _UNSUBSCRIBE_RE.search(tail) or (
        "%" in tail and _UNSUBSCRIBE_RE.search(unquote(tail, errors="replace"))
    ):
        return "unsubscribe"
    if _is_under(host, policy.skip_domains):
        return "skip-domain"
    return None


def _host_and_tail(url: str, after_scheme: int) -> tuple[str, str] | None:
    """(normalised host, path + query) of an http(s) URL; ``None`` if its authority is
    unusable: no ``//``, no host, a bad host character, a bad port, a backslash.

    Split by hand rather than with ``urllib.parse.urlsplit``: several times faster, and
    every rule is visible here.
    """
    parts = _AUTHORITY_RE.match(url, after_scheme)
    if parts is None:
        return None  # "http:example.com" or "http:/x": browsers guess, we do not
    authority, tail = parts.groups()
    if "\\" in authority:
        return None  # browsers read "\" as "/": the host would not be what it seems
    userinfo, _, hostport = authority.rpartition("@")
    if "[" in userinfo or "]" in userinfo or not userinfo.isascii():
        return None  # brackets belong to an IPv6 host; odd credentials: leave alone
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            return None
        host, port = hostport[: close + 1], hostport[close + 1 :]
        if port and not port.startswith(":"):
            return None
        port = port[1:]
    else:
        host, _, port = hostport.partition(":")
    if port:
        digits = port.lstrip("0")
        if not (port.isascii() and port.isdigit()) or len(digits) > 5:
            return None
        if int(digits or "0") > 65535:
            return None
    if not host or not _host_chars_ok(host):
        return None
    return normalize_host(host), tail


def _host_chars_ok(host: str) -> bool:
    if host.isascii():
        return _HOST_OK_RE.fullmatch(host) is not None
    # IDN: letters of any script, plus the ASCII host characters -- also after NFKC
    # (IDNA maps U+FF0F FULLWIDTH SOLIDUS to "/", which would change the host).
    return all(_idn_char_ok(c) for c in host) and all(
        _idn_char_ok(c) for c in unicodedata.normalize("NFKC", host)
    )


def _idn_char_ok(c: str) -> bool:
    if c.isascii():
        return c.isalnum() or c in "._~-"
    return c.isprintable() and not c.isspace()
