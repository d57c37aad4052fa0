"""Links whose visible text is itself a URL or a host name (skip reason ``url-text``).

Tracking such a link makes the display lie about the destination: the reader sees
``https://www.bank.example/login`` and the click goes to the tracking host. Mail filters
look for exactly that (SpamAssassin's spoofed-URL rules, MailScanner's phishing check,
mail clients' "this link goes elsewhere" warnings), so by default such a link is left as
written (``[tracking] track_url_text = false``).

The visible text is taken as a reader sees it: from the end of the ``<a ...>`` start tag
to the element's end (``</a>``, or the next ``<a>`` start tag, which closes it in HTML5),
comments and tags dropped, character references decoded, whitespace (including
no-break and zero-width spaces) collapsed and trimmed. Surrounding ``<>``, ``()``,
``[]``, quotes and trailing sentence punctuation are ignored. The text **counts as a
URL** when it contains an ``http://`` or ``https://`` URL anywhere ("Sign in:
https://bank.example/login" shows a destination just as well; SpamAssassin's spoofed-URL
test also looks past leading words), or when it is one "word" (no inner whitespace)
that is:

- a URL with any scheme and ``//`` (``https://x.example/a``, ``HTTP://X``, ``ftp://...``);
- ``mailto:`` anything, or an e-mail address whose domain counts as a host name below;
- ``www.`` followed by anything (``www.bank.example/login``);
- a host name with an optional ``:port``, path, query or fragment: two or more
  dot-separated labels whose last one is a real top-level domain (the ICANN section of
  the Public Suffix List) or a special-use one (``example``, ``test``, ``invalid``,
  ``localhost``, ``local``, ``onion``): ``example.com``, ``bank.example/login`` -- so
  also the href with ``https://`` dropped; IDN hosts count (``bücher.example``);
- an IPv4 address, optionally with a port and path.

File names (``report.pdf``), version numbers (``v1.2``), ``Node.js`` and ordinary words
do not count: their last "label" is no top-level domain. Text with a URL among other
words and without a scheme ("Sign in at example.com") does not count: in prose, too
many ordinary words look like host names. Anchors whose text cannot be found within
:data:`MAX_TEXT_CHARS` characters are treated as not URL text. Both mistakes are safe:
a URL-text link left untracked still works, and any other link is tracked as before.
"""

from __future__ import annotations

import functools
import html
import re

from publicsuffixlist import PublicSuffixList

from smtp_proxy.engine.linkrules import normalize_host

#: How far after the start tag the anchor's end is looked for (longer text is no URL a
#: reader would take for the destination, and the look stays cheap).
MAX_TEXT_CHARS = 4096

_END_RE = re.compile(r"</?a(?=[\t\n\f\r />])|</a\Z|<!--", re.IGNORECASE)
_TAG_RE = re.compile(r"<[A-Za-z/!?][^>]*+>?")
#: Characters a reader does not see as text: HTML whitespace, no-break and zero-width
#: spaces, soft hyphens, the byte-order mark.
_INVISIBLE_RE = re.compile(
    r"[\s\u00a0\u00ad\u180e\u2000-\u200f\u2028-\u202f\u205f\u2060\u3000\ufeff]+"
)
_OPEN_CLOSE = {"<": ">", "(": ")", "[": "]", '"': '"', "'": "'", "\u201c": "\u201d"}
_TRAILING = ".,;:!?"
_SCHEME_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S", re.ASCII)
#: An http(s) URL anywhere in the text, not glued to a preceding word ("xhttps://").
_HTTP_URL_RE = re.compile(r"(?<![A-Za-z0-9+.-])https?://[^\s/?#]", re.IGNORECASE)
_MAILTO_RE = re.compile(r"mailto:\S", re.IGNORECASE)
#: host, then an optional port, then the rest (path, query, fragment).
_HOSTISH_RE = re.compile(r"([^/?#:@\s]+)(?::[0-9]{1,5})?(?:[/?#]\S*)?")
_IPV4_RE = re.compile(
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}",
    re.ASCII,
)
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
#: Special-use top-level names (RFC 2606, 6761, 6762, 7686): real hosts in documents,
#: tests and local networks, not in the Public Suffix List.
_SPECIAL_TLDS = frozenset({"example", "test", "invalid", "localhost", "local", "onion"})


def anchor_text(html_text: str, tag_end: int) -> str | None:
    """The visible text of the ``<a>`` element whose start tag ends at ``tag_end``, as a
    reader sees it (tags and comments dropped, references decoded, whitespace collapsed
    and trimmed); ``None`` if the element does not end within :data:`MAX_TEXT_CHARS`."""
    limit = min(len(html_text), tag_end + MAX_TEXT_CHARS)
    pieces: list[str] = []
    pos = tag_end
    while True:
        m = _END_RE.search(html_text, pos, limit)
        if m is None:
            if limit < len(html_text):
                return None  # too long to be a URL a reader would take at face value
            pieces.append(html_text[pos:limit])  # the document ends inside the anchor
            break
        pieces.append(html_text[pos : m.start()])
        if m.group(0) != "<!--":
            break  # "</a", or "<a" which closes an open <a> in HTML5
        close = html_text.find("-->", m.end(), limit)
        if close < 0:
            return None
        pos = close + 3
    text = _TAG_RE.sub("", "".join(pieces))
    if "&" in text:
        text = html.unescape(text)
    return _INVISIBLE_RE.sub(" ", text).strip()


def is_url_text(text: str) -> bool:
    """Whether ``text`` (as :func:`anchor_text` gives it) is a URL, a host name or an
    e-mail address (see the module docstring for exactly what counts). Total: never
    raises."""
    if _HTTP_URL_RE.search(text):
        return True
    word = _bare(text)
    if not word or " " in word:
        return False
    if _SCHEME_URL_RE.match(word) or _MAILTO_RE.match(word):
        return True
    if word[:4].lower() == "www." and len(word) > 4:
        return True
    if "@" in word:
        local, _, domain = word.rpartition("@")
        return bool(local) and "/" not in local and _is_host(domain)
    m = _HOSTISH_RE.fullmatch(word)
    return m is not None and _is_host(m.group(1))


def _bare(text: str) -> str:
    """``text`` without surrounding brackets/quotes and trailing sentence punctuation."""
    word = text.strip()
    for _ in range(3):
        before = word
        word = word.rstrip(_TRAILING)
        if len(word) >= 2 and _OPEN_CLOSE.get(word[0]) == word[-1]:
            word = word[1:-1].strip()
        if word == before:
            break
    return word


def _is_host(host: str) -> bool:
    """Two or more labels, the last a real or special-use top-level domain (or IPv4)."""
    host = host.rstrip(".")
    if _IPV4_RE.fullmatch(host):
        return True
    if "." not in host or len(host) > 253:
        return False
    try:
        ascii_form = normalize_host(host)
    except Exception:  # whatever the IDN conversion refuses is no host name
        return False
    labels = ascii_form.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        return False
    tld = labels[-1]
    if tld.isdigit():
        return False
    return tld in _SPECIAL_TLDS or _psl().publicsuffix(tld, accept_unknown=False) is not None


@functools.cache
def _psl() -> PublicSuffixList:
    # Loaded on first use (about 0.1 s): a proxy that never meets URL text never pays.
    return PublicSuffixList(only_icann=True)
