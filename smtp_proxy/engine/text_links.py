"""Find the http(s) URLs of a text/plain part.

Plain text has no markup, so where a URL ends is a guess; the guess follows what mail
clients' linkifiers do, and leaves a URL alone rather than cut it wrongly:

- a URL starts at ``http://`` or ``https://`` (any case) not glued to a preceding word
  character, and runs over ASCII URL characters: it stops at whitespace, ``<``, ``>``,
  ``"``, control characters and anything non-ASCII (a URL broken across lines is two
  pieces; the second is not a URL);
- ``<https://...>`` (RFC 3986 appendix C) gives the URL without the brackets;
- trailing ``. , ; : ! ? ' *`` are sentence punctuation, not URL (but ``|*`` closes a
  ``*|MERGE|*`` placeholder), and so is a closing ``)``, ``]`` or ``}`` without its
  opening partner inside the URL: ``(see https://x.example/a_(b))`` keeps ``a_(b)``;
- a URL directly followed by a non-ASCII letter or digit (``https://bücher.example``,
  or Japanese text glued to a URL) is ambiguous and is not reported at all: replacing
  only its ASCII head would send readers to the wrong page;
- a URL inside another URL's query string is part of the outer one (one link), also
  when the outer one is not http(s) (``ftp://host/?u=https://...``: no link at all).

The text was already decoded from its transfer encoding by the caller (no QP soft line
breaks here). Offsets are into the given str; ``url == raw``.
"""

from __future__ import annotations

import re

from smtp_proxy.engine.html_scan import FoundLink

# "://" and what follows: printable ASCII except space, '"', '<', '>' -- everything a URL
# may carry, including the characters real links use unescaped ({}, |, ^, `, \). The
# scheme is checked in Python: searching for a literal is several times faster than
# trying a case-insensitive "https?" at every position.
_TAIL_RE = re.compile(r"://[!#-;=?-~]+")
#: A scheme glued to one of these is part of a longer word ("xhttp://"), not a URL.
_GLUE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+.-")
_TRAILING = ".,;:!?'*"
_PAIRS = {")": "(", "]": "[", "}": "{"}


def _trim(url: str) -> str:
    """Drop trailing punctuation that belongs to the sentence, not to the URL.

    Works on an end index with bracket counts taken once: linear even for a URL
    followed by thousands of dots or parentheses.
    """
    end = len(url)
    counts: dict[str, int] | None = None
    while end:
        last = url[end - 1]
        if last in _TRAILING:
            if last == "*" and url.endswith("|*", 0, end):
                break  # the closing star of a *|MERGE_TAG|* placeholder
            end -= 1
        elif last in _PAIRS:
            if counts is None:
                counts = {c: url.count(c, 0, end) for c in "()[]{}"}
            if counts[last] <= counts[_PAIRS[last]]:
                break  # balanced: part of the URL
            counts[last] -= 1
            end -= 1
        else:
            break
    return url[:end]


def find_text_links(text: str) -> tuple[FoundLink, ...]:
    """Every http(s) URL of ``text``, in order, as ``FoundLink(kind="text")``."""
    if "://" not in text:
        return ()
    found = []
    for m in _TAIL_RE.finditer(text):
        colon = m.start()
        if text[colon - 5 : colon].lower() == "https":
            start = colon - 5
        elif text[colon - 4 : colon].lower() == "http":
            start = colon - 4
        else:
            continue  # another scheme: its whole run (nested URLs too) is skipped
        if start > 0 and text[start - 1] in _GLUE:
            continue
        end = m.end()
        if end < len(text) and not text[end].isascii() and text[end].isalnum():
            continue  # glued to a non-ASCII word: where the URL ends is unknowable
        url = _trim(text[start:end])
        if len(url) <= colon + 3 - start:
            continue  # "http://" alone, or followed only by punctuation
        found.append(FoundLink(start, start + len(url), url, url, "text", None))
    return tuple(found)
