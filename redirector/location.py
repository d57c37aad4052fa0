"""Build the ``Location`` header value for a sealed URL, byte-exact where possible.

The sealed URL is what the sender wrote. A redirect must send the browser to exactly that,
so this module deliberately does *not* parse and re-serialise the URL (yarl, and so
aiohttp's ``HTTPFound``, normalise ``%7e`` to ``~``, resolve ``..``, re-quote spaces and
change IDN hosts — every one of which can change a signed destination URL).

Only two changes are made, both needed because an HTTP header must be ASCII:

* a non-ASCII host label becomes its punycode (``xn--``) form, as a browser would send it;
* every other non-ASCII character becomes the percent-encoding of its UTF-8 bytes.

Every ASCII character, including existing ``%``-escapes (valid or not), stays as written.
Anything that could split or smuggle a header (CR, LF, other control characters, space)
or lead anywhere but http(s) is refused: :func:`location_for` returns ``None`` and the
caller answers 404.
"""

from __future__ import annotations

import re
from functools import lru_cache

#: Characters that may never appear in a Location we send (after encoding).
_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f]")


def has_forbidden_char(text: str) -> bool:
    """True when ``text`` holds a control character, space or DEL (``_FORBIDDEN_RE``).

    Runs twice per click (token opening, then here): for ASCII text, which almost every
    URL is, ``isprintable()`` (false exactly for 0x00-0x1F and 0x7F) and a search for the
    space are C loops several times cheaper than the regex.
    """
    if text.isascii():
        return not text.isprintable() or " " in text
    return _FORBIDDEN_RE.search(text) is not None


#: Non-ASCII characters (incl. lone surrogates, which a sealed URL can carry).
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")
#: Label separators that IDNA treats like ``.`` (ideographic and full-width full stops).
_LABEL_SEP_RE = re.compile("[.\u3002\uff0e\uff61]")


def _percent_encode(match: re.Match[str]) -> str:
    data = match.group(0).encode("utf-8", "surrogatepass")
    return "".join(f"%{byte:02X}" for byte in data)


def _encode_non_ascii(text: str) -> str:
    """Percent-encode only the non-ASCII characters; ASCII stays byte-exact."""
    if text.isascii():
        return text
    return _NON_ASCII_RE.sub(_percent_encode, text)


def _punycode_label(label: str) -> str:
    """One non-ASCII host label in its ASCII form, as browsers compute it (UTS 46)."""
    import idna  # here: its tables cost a command that meets only ASCII hosts a millisecond

    try:
        return idna.encode(label, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    try:
        # IDNA 2003 is laxer (e.g. some symbols); browsers accept what it produces.
        return label.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        # Not a valid IDN at all: percent-encoding is what a browser's URL parser
        # would undo before failing; the link was broken as written either way.
        return _encode_non_ascii(label)


@lru_cache(maxsize=1024)  # UTS 46 in the idna package costs tens of microseconds
def ascii_host(host: str) -> str:
    """``host`` as a browser sends it: each non-ASCII label in its punycode form.

    The link rules compare hosts in this form too (``smtp_proxy.engine.linkrules``), so that a
    skip domain matches the host the click really goes to.
    """
    if host.isascii():
        return host
    labels = _LABEL_SEP_RE.split(host)
    return ".".join(label if label.isascii() else _punycode_label(label) for label in labels)


def _split_authority(rest: str) -> tuple[str, str]:
    """``rest`` is the URL after ``scheme://``: return (authority, path-query-fragment)."""
    end = len(rest)
    for sep in "/?#":
        pos = rest.find(sep)
        if pos != -1 and pos < end:
            end = pos
    return rest[:end], rest[end:]


def _encode_authority(authority: str) -> str:
    if authority.isascii():
        return authority
    userinfo, at, hostport = authority.rpartition("@")
    # A bracketed IPv6 literal is ASCII; otherwise the port is after the last ':'.
    host, colon, port = hostport, "", ""
    if not hostport.startswith("["):
        head, sep, tail = hostport.rpartition(":")
        if sep and tail.isdigit():
            host, colon, port = head, sep, tail
    return _encode_non_ascii(userinfo) + at + ascii_host(host) + colon + _encode_non_ascii(port)


def location_for(url: str) -> str | None:
    """The ASCII ``Location`` value that sends a browser to ``url``, or None to refuse.

    Refused: anything not starting with ``http://`` or ``https://`` (any case), and any URL
    containing control characters, space or DEL. Pure; never raises.
    """
    lower = url[:8].lower()
    if lower.startswith("http://"):
        scheme_len = len("http://")
    elif lower.startswith("https://"):
        scheme_len = len("https://")
    else:
        return None
    if has_forbidden_char(url):
        return None
    if url.isascii():
        return url
    authority, tail = _split_authority(url[scheme_len:])
    result = url[:scheme_len] + _encode_authority(authority) + _encode_non_ascii(tail)
    # Belt and braces: whatever the encoders did, the header is ASCII without controls.
    if not result.isascii() or has_forbidden_char(result):
        return None
    return result
