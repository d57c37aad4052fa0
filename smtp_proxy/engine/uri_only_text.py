"""Plain text that is almost only URLs (skip reason ``uri-only-text``).

A tracked link is longer than most links it replaces. In a text/plain part made of
little more than URLs, that can turn ordinary text into what filters read as one long
unbroken word. Measured with SpamAssassin 4.0.1's base rules (``bench/deliverability.py``):
of every corpus message and crafted short message, the one rule the rewrite added was
``TVD_SPACE_RATIO_MINFP`` (1.0 point unless a rule update scores it otherwise) to a
short signature-only message with one URL: SpamAssassin's "vertical text" test fires
when no paragraph of the body has at least one space per ten other characters, and the
tracked URL pushed the only paragraph below that. (``BODY_URI_ONLY`` and
``BODY_SINGLE_URI`` did not get added: a longer URL never makes them fire.)

So a text/plain part is left untracked when tracking would take it from "some paragraph
has a space per ten characters" to "none has": the same measure as SpamAssassin's
(paragraphs split at blank lines, whitespace runs read as one space, paragraphs of five
characters or fewer ignored), taken on the part alone -- the subject and other parts
could only keep the rule quiet, so the part alone is the cautious reading.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from smtp_proxy.engine.html_scan import FoundLink

#: SpamAssassin's threshold: a paragraph "has spaces" at >= 10 spaces per 100 others.
MIN_SPACE_PERCENT = 10
_PARAGRAPH_RE = re.compile(r"\n[ \t\r\x0b\xa0]*\n[\s\xa0]*")
_WHITESPACE_RE = re.compile(r"[ \t\n\r\x0b\xa0]+")


def _max_space_percent(text: str) -> int:
    """The highest ``100 * spaces / non-spaces`` over the paragraphs of ``text`` (100
    when spaces outnumber the rest), or -1 when no paragraph is longer than five."""
    best = -1
    for paragraph in _PARAGRAPH_RE.split(text.replace("\r\n", "\n")):
        line = _WHITESPACE_RE.sub(" ", paragraph)
        if len(line) <= 5:
            continue
        spaces = line.count(" ")
        others = len(line) - spaces
        percent = 100 if spaces > others or others == 0 else 100 * spaces // others
        best = max(best, percent)
    return best


def _replaced(text: str, replacements: Sequence[tuple[FoundLink, str]]) -> str:
    pieces: list[str] = []
    pos = 0
    for link, new in sorted(replacements, key=lambda item: item[0].start):
        pieces.append(text[pos : link.start])
        pieces.append(new)
        pos = link.end
    pieces.append(text[pos:])
    return "".join(pieces)


def loses_its_spaces(text: str, replacements: Sequence[tuple[FoundLink, str]]) -> bool:
    """Whether replacing the links of ``text`` (a text/plain part) as given would leave
    no paragraph with a space per ten other characters, when the original had one."""
    if not replacements:
        return False
    before = _max_space_percent(text)
    if before < MIN_SPACE_PERCENT:
        return False  # already reads as one long word: tracking adds nothing
    return _max_space_percent(_replaced(text, replacements)) < MIN_SPACE_PERCENT
