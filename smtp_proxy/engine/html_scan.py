"""Find the links of an HTML part without re-serialising it.

Rewriting must leave every byte outside the changed ``href`` values alone, so no parser
tree is ever written back. Instead a small scanner walks the HTML the way an HTML5
tokenizer does, but only as far as the links need:

- text, end tags and the start tags of elements we do not care about are skipped by one
  compiled regular expression (the loop runs in C; Python only sees the tags that matter);
- ``<a>``, ``<area>`` and VML (``<v:roundrect>``, ``<v:rect>``, ... any ``v:`` tag) start
  tags are split into attributes; the first ``href`` wins (HTML5 drops duplicates);
- comments are skipped, except Outlook conditional comments (``<!--[if mso]> ...
  <![endif]-->``), whose content is scanned as HTML: that is where VML buttons live;
- the content of ``<script>`` (with its HTML5 escape states), ``<style>``, ``<title>``,
  ``<textarea>``, ``<xmp>``, ``<iframe>``, ``<noembed>``, ``<noframes>`` is raw text,
  ``<plaintext>`` ends the scan (``<noscript>`` is scanned: lxml parses it as HTML);
- attribute values may be double-quoted, single-quoted or unquoted; a tag cut off by the
  end of the input is dropped, as HTML5 does.

What the scanner finds is checked against lxml's reading of the same text
(:mod:`smtp_proxy.engine.html_verify`) before a part is changed.

The scan runs in C when the optional extension is built (``smtp_proxy/engine/_speedups.c``, a
step-for-step copy of :func:`_scan`, tested against it); :func:`_scan` is the reference
and the fallback. Measured on the corpus (2-core VM, same run, ``bench/rewrite.py``): the
C scan alone at about 9x the speed of lxml.html parse+serialize, the Python one at 2.8x.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from html.entities import html5 as _HTML5_ENTITIES

from smtp_proxy.engine.speedups import speedups

_c_scan = speedups.scan if speedups else None


@dataclass(frozen=True, slots=True)
class FoundLink:
    """One link: where its value sits in the scanned text and what it means.

    ``start``/``end`` are offsets into the str given to the finder. For HTML they cover
    the attribute value without its quotes and without leading/trailing ASCII whitespace
    (which browsers strip from URLs anyway, so it stays in place around a new value).
    ``url`` is ``raw`` with character references decoded as in an HTML attribute value
    (for text links ``url == raw``). ``kind`` is ``"a"``, ``"area"``, ``"vml"`` or
    ``"text"``. ``opt_out`` names the opt-out attribute found on the element, if any.
    """

    start: int
    end: int
    raw: str
    url: str
    kind: str
    opt_out: str | None


@dataclass(frozen=True)
class HtmlScan:
    """The links of one HTML part, or a reason (``problem``) to leave the part alone."""

    links: tuple[FoundLink, ...]
    problem: str | None
    #: Indexes into ``links`` of the links inside Outlook conditional comments (lxml
    #: sees those as comment text; the cross-check parses that text separately).
    hidden: frozenset[int] = frozenset()
    #: Where the tag of each link ends (parallel to ``links``), so that the cross-check
    #: can stop reading after the last link that matters (``check_links(upto=)``).
    tag_ends: tuple[int, ...] = ()


# --- the scanner's regular expressions ------------------------------------------------

_WS = "\t\n\f\r "
# An attribute value. An unclosed quote runs to the end of the input, where the tag then
# fails to close and is dropped (as in HTML5); the possessive loops around it never let
# the regex re-read such a quote as something else.
_VALUE = rf"""(?:"[^"]*+(?:"|\Z)|'[^']*+(?:'|\Z)|[^{_WS}>"'][^{_WS}>]*+|)"""
# Everything between a tag name and its closing ">": names start with any character but
# whitespace, "/" or ">" (even "=" or a quote), "/" outside a value separates like a space.
_ATTRS = rf"(?:[{_WS}/]*+[^{_WS}/>][^{_WS}/>=]*+(?:[{_WS}]*+=[{_WS}]*+{_VALUE})?+)*+[{_WS}/]*+"
_TAG_RE = re.compile(rf"<(/?)([A-Za-z][^{_WS}/>]*+)({_ATTRS})>")
_ATTR_RE = re.compile(
    rf"""[{_WS}/]*+([^{_WS}/>][^{_WS}/>=]*+)"""
    rf"""(?>[{_WS}]*+=[{_WS}]*+(?:"([^"]*+)"|'([^']*+)'|([^{_WS}>]*+)))?+"""
)
_RAW_TEXT = ("script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes")
# Skips text, end tags, uninteresting start tags, plain comments, bogus comments
# (doctype, "<![endif]>") and the content of <style>/<title>; stops at an
# interesting "<", at anything the input cuts off, or at the end. The Python loop in
# _scan handles every case this skips too (it is only a fast path), so the alternatives
# are shaped for speed: a start tag is recognised as uninteresting by its first letter,
# with a look-ahead only after the letters that begin an interesting name.
_NAME = rf"[^{_WS}/>]*+"
_E = f"[{_WS}/>]"
_BORING_START = (
    rf"(?:[b-hj-moqruwyzB-HJ-MOQRUWYZ]|[aA](?!{_E}|[rR][eE][aA]{_E})"
    rf"|[iI](?![fF][rR][aA][mM][eE]{_E})"
    rf"|[nN](?![oO](?:[eE][mM][bB][eE][dD]|[fF][rR][aA][mM][eE][sS]){_E})"
    rf"|[pP](?![lL][aA][iI][nN][tT][eE][xX][tT]{_E})"
    rf"|[sS](?![cC][rR][iI][pP][tT]{_E}|[tT][yY][lL][eE]{_E})"
    rf"|[tT](?![iI][tT][lL][eE]{_E}|[eE][xX][tT][aA][rR][eE][aA]{_E})"
    rf"|[vV](?!:)|[xX](?![mM][pP]{_E}))"
)
_SKIP_RE = re.compile(
    rf"(?:[^<]++"
    rf"|</[A-Za-z]{_NAME}{_ATTRS}>"
    rf"|<{_BORING_START}{_NAME}{_ATTRS}>"
    rf"|<!--(?:-?>|(?![{_WS}]*+\[(?i:if)\b)[^-]*+(?:-(?!-!?>)[^-]*+)*+--!?>)"
    rf"|<!(?!--)[^>]*+>|<\?[^>]*+>"
    rf"|<(?i:style)(?={_E}){_ATTRS}>(?:[^<]++|<(?!/(?i:style){_E}))*+"
    rf"|<(?i:title)(?={_E}){_ATTRS}>(?:[^<]++|<(?!/(?i:title){_E}))*+"
    rf"|<(?![A-Za-z/!?])"
    rf")*+"
)

# Fast path for the tags that carry links: an <a>/<area>/<v:...> start tag with an href
# that has a value, captured (the first href: attributes before it are not "href").
_NOT_HREF_ATTR = (
    rf"(?:[{_WS}/]++|(?!(?i:href)[{_WS}/>=])[^{_WS}/>][^{_WS}/>=]*+"
    rf"(?>[{_WS}]*+=[{_WS}]*+{_VALUE})?+)"
)
_LINK_RE = re.compile(
    rf"<((?i:a|area)(?=[{_WS}/>])|[vV]:{_NAME}){_NOT_HREF_ATTR}*+"
    rf"""(?i:href)[{_WS}]*+=[{_WS}]*+(?>"([^"]*+)(?:"|\Z)|'([^']*+)(?:'|\Z)|([^{_WS}>]*+))"""
    rf"{_ATTRS}>"
)
_RAW_END_RE = {
    name: re.compile(rf"</(?i:{name})(?=[{_WS}/>])|</(?i:{name})\Z") for name in _RAW_TEXT
}
_SCRIPT_TOKEN_RE = re.compile(
    rf"(?P<comment><!--)|(?P<uncomment>-->)"
    rf"|(?P<open><(?i:script)(?=[{_WS}/>]))|(?P<close></(?i:script)(?=[{_WS}/>]|\Z))"
)
#: An Outlook conditional comment: its content is HTML to scan (and to cross-check).
CONDITIONAL_COMMENT_RE = re.compile(r"[\t\n\f\r ]*\[if\b", re.IGNORECASE)
#: What browsers strip around a URL in an attribute value (HTML whitespace).
URL_TRIM = _WS


# --- character references in attribute values ----------------------------------------

_CHARREF_RE = re.compile(r"&(?:#[xX][0-9A-Fa-f]+;?|#[0-9]+;?|([A-Za-z][A-Za-z0-9]*);?)")
_LONGEST_LEGACY = max(len(k) for k in _HTML5_ENTITIES if not k.endswith(";"))


def _charref(m: re.Match[str]) -> str:
    name = m.group(1)
    text = m.group(0)
    if name is None:
        return _numeric(text)
    if text.endswith(";") and name + ";" in _HTML5_ENTITIES:
        return _HTML5_ENTITIES[name + ";"]
    # No ";": only the legacy names (&amp, &copy, ...) decode, and in an attribute value
    # not at all when the reference runs on into an alphanumeric or "=": "?a=1&copy=2"
    # keeps "&copy=2" (HTML5 "character reference in attribute" rule).
    for size in range(min(len(name), _LONGEST_LEGACY), 0, -1):
        prefix = name[:size]
        if prefix in _HTML5_ENTITIES:
            if size < len(name):
                return text  # followed by an alphanumeric
            after = m.string[m.end()] if m.end() < len(m.string) else ""
            if not text.endswith(";") and after == "=":
                return text
            return _HTML5_ENTITIES[prefix] + text[1 + size :]
    return text


def _numeric(text: str) -> str:
    """``&#38;`` / ``&#x26;`` (";" optional) as HTML5 decodes it.

    Unlike ``html.unescape``, control characters are kept (lxml keeps them too); NUL,
    surrogates and out-of-range numbers become U+FFFD; 0x80-0x9F map through
    windows-1252 where it defines a character.
    """
    hexa = text[2] in "xX"
    digits = text[3 if hexa else 2 :].rstrip(";").lstrip("0")
    if len(digits) > 8:
        return "\ufffd"
    num = int(digits or "0", 16 if hexa else 10)
    if num == 0 or num > 0x10FFFF or 0xD800 <= num <= 0xDFFF:
        return "\ufffd"
    if 0x80 <= num <= 0x9F:
        try:
            return bytes([num]).decode("cp1252")
        except UnicodeDecodeError:
            return chr(num)
    return chr(num)


def unescape_attribute(raw: str) -> str:
    """Decode character references as HTML5 does inside an attribute value."""
    if "&" not in raw:
        return raw
    return _CHARREF_RE.sub(_charref, raw)


# --- opt-out attributes -----------------------------------------------------------------


def _opt_out(attrs: dict[str, str | None]) -> str | None:
    """The first opt-out attribute of an element (provider conventions), else None."""
    for name, value in attrs.items():
        if name in _PRESENT_OPT_OUTS:
            return name
        rule = _VALUED_OPT_OUTS.get(name)
        if rule is not None and unescape_attribute(value or "").strip(URL_TRIM).lower() in rule:
            return name
    return None


#: Opt-out by presence alone (any value).
_PRESENT_OPT_OUTS = frozenset(
    {"ses:no-track", "data-pm-no-track", "mc:disable-tracking", "mautic:disable-tracking"}
)
#: Opt-out by value (compared lower-case, after decoding references).
_VALUED_OPT_OUTS: dict[str, frozenset[str]] = {
    "data-clickrelay": frozenset({"off"}),
    "clicktracking": frozenset({"off"}),
    "data-msys-clicktrack": frozenset({"0"}),
    # Mailgun: disable-tracking=true, and a bare attribute (value "") too.
    "disable-tracking": frozenset({"true", "", "1", "yes", "on"}),
}


# --- the scanner ----------------------------------------------------------------------


def _scan(
    html: str, pos: int, end: int, in_comment: bool, out: list[tuple[FoundLink, bool, int]]
) -> None:
    """Append the links of ``html[pos:end]`` to ``out`` (offsets into ``html``), each
    with whether it is inside a conditional comment and where its tag ends."""
    skip = _SKIP_RE.match
    while True:
        skipped = skip(html, pos, end)
        pos = skipped.end() if skipped is not None else pos  # it always matches
        if pos >= end:
            return
        nxt = html[pos + 1] if pos + 1 < end else ""
        if nxt == "!":
            if html.startswith("<!--", pos) and pos + 4 <= end:
                if html.startswith(">", pos + 4):  # "<!-->"
                    pos += 5
                    continue
                if html.startswith("->", pos + 4):  # "<!--->"
                    pos += 6
                    continue
                close = _comment_end(html, pos + 4, end)
                if close < 0:
                    return  # the comment runs to the end
                if not in_comment and CONDITIONAL_COMMENT_RE.match(html, pos + 4, close):
                    _scan(html, pos + 4, close, True, out)
                pos = html.index(">", close) + 1
                continue
            pos = _bogus_comment(html, pos + 2, end)
        elif nxt == "?":
            pos = _bogus_comment(html, pos + 2, end)
        elif nxt == "/":
            if pos + 2 >= end:
                return
            if html[pos + 2] == ">":  # "</>" is dropped
                pos += 3
                continue
            pos = _bogus_comment(html, pos + 2, end)
        else:
            fast = _LINK_RE.match(html, pos, end)
            if fast is not None and not _may_opt_out(html[pos : fast.end()]):
                out.append((_fast_link(html, fast), in_comment, fast.end()))
                pos = fast.end()
                continue
            tag = _TAG_RE.match(html, pos, end)
            if tag is None:
                return  # a tag cut off by the end of the input: HTML5 drops it
            name = tag.group(2).lower()
            pos = tag.end()
            if tag.group(1):
                continue
            if name == "a" or name == "area" or name.startswith("v:"):
                link = _link(html, tag, name)
                if link is not None:
                    out.append((link, in_comment, pos))
            elif name == "script":
                pos = _script_end(html, pos, end)
            elif name in _RAW_END_RE:
                raw_end = _RAW_END_RE[name].search(html, pos, end)
                if raw_end is None:
                    return
                pos = raw_end.start()
            elif name == "plaintext":
                return
        if pos < 0:
            return


def scan_links(html: str) -> list[tuple[FoundLink, bool, int]]:
    """Every link of ``html`` with whether it is inside a conditional comment and where
    its tag ends: the C scanner's walk when it is built (and does not give up on the
    text), else :func:`_scan`'s. Both give the same answer (tested on the corpus and on
    generated HTML)."""
    found = _scan_in_c(html) if _c_scan is not None else None
    if found is None:
        found = []
        _scan(html, 0, len(html), False, found)
    return found


_C_KINDS = ("a", "area", "vml")


def _scan_in_c(html: str) -> list[tuple[FoundLink, bool, int]] | None:
    """The C walk (see ``_speedups.c``); None where it leaves the text to Python."""
    assert _c_scan is not None
    records = _c_scan(html, 0, len(html))
    if records is None:
        return None
    found: list[tuple[FoundLink, bool, int]] = []
    for code, start, stop, in_comment, tag_end in records:
        if code == 3:  # a tag whose attributes the Python code reads
            link, seen_end = _tag_link(html, start, stop)
            if seen_end != tag_end:
                return None  # cannot happen if the two agree; if not, trust Python's
            if link is None:
                continue
        else:
            raw = html[start:stop]
            url = unescape_attribute(raw) if "&" in raw else raw
            link = FoundLink(start, stop, raw, url, _C_KINDS[code], None)
        found.append((link, bool(in_comment), tag_end))
    return found


def _tag_link(html: str, pos: int, end: int) -> tuple[FoundLink | None, int]:
    """What :func:`_scan` makes of the link tag at ``pos``: its link (None if it has
    none) and where the tag ends (-1 if it is not a link tag after all)."""
    fast = _LINK_RE.match(html, pos, end)
    if fast is not None and not _may_opt_out(html[pos : fast.end()]):
        return _fast_link(html, fast), fast.end()
    tag = _TAG_RE.match(html, pos, end)
    if tag is None:
        return None, -1
    name = tag.group(2).lower()
    if name == "a" or name == "area" or name.startswith("v:"):
        return _link(html, tag, name), tag.end()
    return None, -1


def _fast_link(html: str, m: re.Match[str]) -> FoundLink:
    """The link of a tag matched by ``_LINK_RE`` (no opt-out attribute on it)."""
    start, stop = m.span(m.lastindex or 4)  # the value group that matched (2, 3 or 4)
    if start < stop and (html[start] in URL_TRIM or html[stop - 1] in URL_TRIM):
        start, stop = _strip_span(html, start, stop)
    raw = html[start:stop]
    name = m.group(1)
    kind = "a" if name in _A_NAMES else "area" if name in _AREA_NAMES else "vml"
    url = unescape_attribute(raw) if "&" in raw else raw
    return FoundLink(start, stop, raw, url, kind, None)


def _strip_span(html: str, start: int, stop: int) -> tuple[int, int]:
    """``html[start:stop]`` without leading and trailing ASCII whitespace, as a span."""
    while start < stop and html[start] in URL_TRIM:
        start += 1
    while stop > start and html[stop - 1] in URL_TRIM:
        stop -= 1
    return start, stop


_A_NAMES = frozenset({"a", "A"})
_AREA_NAMES = frozenset({"".join(c) for c in itertools.product("aA", "rR", "eE", "aA")})


def _script_end(html: str, pos: int, end: int) -> int:
    """Start of the ``</script>`` closing a script whose content starts at ``pos``; -1
    if the script runs to the end.

    HTML5 script data has escape states: after ``<!--`` a ``<script>`` starts a
    "double-escaped" stretch in which ``</script>`` does not end the element (until
    ``-->`` or the matching ``</script>``). lxml follows them, and so does this.
    """
    state = 0  # 0: script data, 1: escaped (after "<!--"), 2: double-escaped
    while True:
        m = _SCRIPT_TOKEN_RE.search(html, pos, end)
        if m is None:
            return -1
        token = m.lastgroup
        pos = m.end()
        if token == "close":
            if state != 2:
                return m.start()
            state = 1
        elif token == "comment" and state == 0:
            state = 1
            pos = m.start() + 2  # its "--" may also begin the "-->" ("<!-->")
        elif token == "uncomment" and state != 0:
            state = 0
        elif token == "open" and state == 1:
            state = 2


def _comment_end(html: str, pos: int, end: int) -> int:
    """Start of the ``-->`` (or ``--!>``) closing a comment whose text starts at pos."""
    close = html.find("-->", pos, end)
    bang = html.find("--!>", pos, close if close >= 0 else end)
    return bang if bang >= 0 else close


def _bogus_comment(html: str, pos: int, end: int) -> int:
    """End of a ``<!...>`` / ``<?...>`` / ``</ ...>`` bogus comment; -1 if it never ends."""
    gt = html.find(">", pos, end)
    return gt + 1 if gt >= 0 else -1


def _link(html: str, tag: re.Match[str], name: str) -> FoundLink | None:
    attrs_start, attrs_end = tag.span(3)
    # Only a tag that mentions an opt-out attribute needs all of its attributes read.
    want_all = _may_opt_out(html[attrs_start:attrs_end])
    attrs: dict[str, str | None] = {}
    href: tuple[int, int] | None = None
    for attr in _ATTR_RE.finditer(html, attrs_start, attrs_end):
        attr_name = attr.group(1).lower()
        if attr_name in attrs:
            continue  # duplicate attribute: the first one wins
        group = 2 if attr.group(2) is not None else 3 if attr.group(3) is not None else 4
        value = attr.group(group)
        attrs[attr_name] = value
        if attr_name == "href":
            if value is None:
                return None  # a bare "href" has no value to replace
            href = attr.span(group)
            if not want_all:
                break
    if href is None:
        return None
    start, stop = _strip_span(html, *href)
    raw = html[start:stop]
    kind = name if name in ("a", "area") else "vml"
    opt_out = _opt_out(attrs) if want_all else None
    return FoundLink(start, stop, raw, unescape_attribute(raw), kind, opt_out)


def _may_opt_out(tag_text: str) -> bool:
    """Cheap pre-check: every opt-out attribute name contains one of these words."""
    lower = tag_text.lower()
    return "track" in lower or "clickrelay" in lower
