"""Cross-check the HTML scanner with lxml before a part is changed.

lxml (libxml2 >= 2.14 has an HTML5 tokenizer) is the reference: after scanning,
``find_html_links`` parses the same text with lxml and compares, in document order, the
``href`` values of the ``<a>``/``<area>`` (and VML) elements lxml sees with those the
scanner found; the text of the conditional comments, which lxml keeps as comments, is
parsed on its own and compared with the links found inside them. If anything differs,
``HtmlScan.problem`` says so and the caller leaves the part alone: a scanner mistake can
cost a tracked link but does not damage a message. The parse is skipped when no link
could be tracked anyway (see ``find_html_links``).
"""

from __future__ import annotations

import itertools
import re

from lxml import etree

from smtp_proxy.engine.html_scan import (
    CONDITIONAL_COMMENT_RE,
    URL_TRIM,
    FoundLink,
    HtmlScan,
    scan_links,
    unescape_attribute,
)
from smtp_proxy.engine.linkrules import LinkPolicy, link_skip_reason

_PARSER_OPTIONS = {
    "encoding": "utf-8",
    "remove_comments": True,
    "remove_pis": True,
    "no_network": True,
    "collect_ids": False,
    "huge_tree": True,
    "default_doctype": False,
}


def _dom_value(link: FoundLink) -> str:
    """What the DOM holds for a link's value: newlines normalised, NUL replaced."""
    raw = link.raw
    if "\r" in raw or "\0" in raw:
        raw = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
        return unescape_attribute(raw)
    return link.url


def _parse(data: bytes, keep_comments: bool) -> etree._Element | None:
    """lxml's tree of ``data``; ``None`` if lxml refuses it.

    A document without any element (only a comment, say) gets an empty ``<p>`` put first
    so that lxml still returns a tree (with the comments, when kept; a "<p>" appended
    could end up inside an unterminated comment).
    """
    options = dict(_PARSER_OPTIONS, remove_comments=not keep_comments)
    try:
        root = etree.fromstring(data, etree.HTMLParser(**options))  # type: ignore[arg-type]
        if root is None:
            root = etree.fromstring(b"<p>" + data, etree.HTMLParser(**options))  # type: ignore[arg-type]
    except (etree.LxmlError, ValueError):
        return None
    return root


def _link_values(root: etree._Element, with_vml: bool) -> list[str]:
    """Non-empty hrefs of the link elements lxml sees, in document order."""
    if with_vml:
        elements = [
            e
            for e in root.iter()
            if isinstance(e.tag, str) and (e.tag in ("a", "area") or e.tag.startswith("v:"))
        ]
    else:
        elements = list(root.iter("a", "area"))
    values = []
    for element in elements:
        value = element.get("href")
        if value:
            value = value.strip(URL_TRIM)
            if value:
                values.append(value)
    return values


def _comments(root: etree._Element) -> list[etree._Element]:
    """Every comment of the document in order, including those before/after the root
    (iterating the tree is cheaper than an XPath query)."""
    before = list(root.itersiblings(preceding=True))[::-1]
    inside = list(root.iter(etree.Comment))
    after = list(root.itersiblings())
    return [c for c in (*before, *inside, *after) if isinstance(c, etree._Comment)]


def find_html_links(html: str, *, check: bool = True) -> HtmlScan:
    """Every ``<a>``/``<area>``/VML link of ``html``, checked against lxml's reading.

    The cross-check (an lxml parse, the costly half) only runs when at least one link
    could be tracked under some policy: when every link is skipped by a rule that needs
    no policy (not http, fragment, empty, placeholder, malformed, unsubscribe, opt-out),
    the part is copied unchanged anyway and ``problem`` stays None.

    With ``check=False`` the cross-check is left out entirely (``problem`` is None), so a
    caller that knows its policy can first decide whether any link would change, and
    only then pay for the parse with ``check_links(html, scan)``.
    """
    found = scan_links(html)
    links: tuple[FoundLink, ...] = ()
    ends: tuple[int, ...] = ()
    hidden: frozenset[int] = frozenset()
    if found:
        links, in_comments, ends = zip(*found, strict=True)
        if any(in_comments):
            hidden = frozenset(i for i, flag in enumerate(in_comments) if flag)
    scan = HtmlScan(links, None, hidden, ends)
    if not check:
        return scan
    last = max((i for i, link in enumerate(links) if _may_be_tracked(link)), default=-1)
    if last < 0:
        return scan
    return HtmlScan(links, check_links(html, scan, upto=last + 1), hidden, ends)


_NO_POLICY = LinkPolicy(frozenset())


def _may_be_tracked(link: FoundLink) -> bool:
    """Could any policy track this link? (Rules that need no policy say no: not http,
    fragment, empty, placeholder, malformed, unsubscribe; or an opt-out attribute.)"""
    return link.opt_out is None and link_skip_reason(link.url, _NO_POLICY) is None


def check_links(
    html: str, scan: HtmlScan, *, upto: int | None = None, data: bytes | None = None
) -> str | None:
    """lxml's verdict on a scan of ``html``.

    ``None`` if lxml finds the same links with the same values in the same order: the
    ``<a>``/``<area>`` (and VML, when the scan found some) elements of the document
    (cut before each ``</html>`` that more markup follows, see ``_segments``), and
    separately the links inside Outlook conditional comments, whose text lxml keeps as
    comments and which are therefore parsed on their own (all of them in one parse).
    Else ``"html-disagrees"``, or ``"html-unparseable"`` when lxml refuses a part in
    which links were found.

    ``upto``: verify only the first ``upto`` links (say, up to the last one the caller
    will change). lxml then reads the text only up to the end of that link's tag: what
    follows cannot move a link before it, as tokenizing runs front to back.

    ``data``: ``html`` encoded in UTF-8, when the caller has those bytes anyway (a
    part's decoded content). For an all-ASCII text lxml then reads them (or a slice)
    instead of a new encoded copy: for a large part that is one copy of it less.
    """
    count = len(scan.links)
    if upto is not None and len(scan.tag_ends) == count:  # (no tag ends: check all)
        count = max(0, min(upto, count))
    if count == 0:
        return None  # nothing to rewrite: whatever lxml sees, the part stays as it is
    limit = scan.tag_ends[count - 1] if count < len(scan.links) else len(html)
    return _check(html, scan, count, limit, data)


def _check(html: str, scan: HtmlScan, count: int, limit: int, data: bytes | None) -> str | None:
    """``check_links`` for the first ``count`` links of ``scan``, which all lie in
    ``html[:limit]`` (the scanned text, or a prefix of it ending after the last one's
    tag; lxml reads only that). ``data``: ``html`` in UTF-8, or None."""
    visible: list[str] = []
    hidden: list[str] = []
    with_vml = False
    for i, link in enumerate(scan.links[:count]):
        value = _dom_value(link).strip(URL_TRIM)
        if not value:
            continue
        if i in scan.hidden:
            hidden.append(value)
        else:
            visible.append(value)
            with_vml = with_vml or link.kind == "vml"
    ascii_text = html.isascii()
    if data is not None and (not ascii_text or len(data) != len(html)):
        data = None  # only an ASCII text has the same offsets in its bytes
    if not ascii_text:  # lone surrogates: lxml sees what "replace" made of them
        visible = [v.encode("utf-8", "replace").decode("utf-8") for v in visible]
        hidden = [v.encode("utf-8", "replace").decode("utf-8") for v in hidden]
    theirs: list[str] = []
    texts: list[str] = []
    for start, end in _segments(html, limit):
        if data is None:
            chunk = html[start:end].encode("utf-8", "replace")
        else:
            chunk = data if end - start == len(data) else data[start:end]
        root = _parse(chunk, keep_comments=bool(hidden))
        del chunk
        if root is None:
            return "html-unparseable"
        theirs += _link_values(root, with_vml)
        if hidden:
            texts += [
                text
                for comment in _comments(root)
                if (text := comment.text or "")
                and CONDITIONAL_COMMENT_RE.match(text)
                and "href" in text.lower()
            ]
    if theirs != visible:
        return "html-disagrees"
    if hidden:
        inner = _parse("\n".join(texts).encode("utf-8", "replace"), keep_comments=False)
        if inner is None or _link_values(inner, with_vml=True) != hidden:
            return "html-disagrees"
    return None


_HTML_END_RE = re.compile(r"</(?i:html)(?=[\t\n\f\r />]|\Z)")


def _segments(html: str, end: int) -> list[tuple[int, int]]:
    """Where to cut ``html[:end]`` for lxml: before every ``</html>`` followed by more
    markup (before ``end``).

    libxml2 drops everything after ``</html>`` (HTML5 would put it in the body), and
    footers appended after ``</html>`` are real: each part is parsed on its own, as
    it would be tokenized in the whole document. Usually one segment: the whole text.
    """
    cuts = [0]
    # (With an end position, "\Z" and the look-ahead see the text as ending there.)
    for m in _HTML_END_RE.finditer(html, 0, end):
        if html.find("<", m.end(), end) >= 0:
            cuts.append(m.start())
    cuts.append(end)
    return list(itertools.pairwise(cuts))
