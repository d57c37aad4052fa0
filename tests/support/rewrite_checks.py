"""The acceptance checks of a rewrite, judged without the engine's own MIME code (the
email package, lxml and the token codec only), shared by the corpus and property tests.

:func:`check_rewrite` asserts, for one message: each rewritten part decodes to the
original once each tracked link is replaced by the original href text (1); tracked links
decode to exactly the original URLs (2); lxml sees the same anchors in the same order (3);
no new MIME defects (4); signed, encrypted or DKIM-signed mail is unchanged (5); a second
rewrite changes nothing (6).
"""

from __future__ import annotations

import email
import email.policy
import html as htmllib
import re
from email.message import Message

import lxml.html
from lxml import etree

from clickrelay.common.errors import TokenError
from redirector.tokens import new_key_line, parse_keys
from smtp_proxy.engine.rewriter import RewriteResult, TrackingSettings, rewrite_message
from tests.support.tracked_links import open_tracked

BASE = "https://t.example.net"
TRACKED_RE = re.compile(re.escape(BASE) + r"/c/[A-Za-z0-9_-]+")
KEYRING = parse_keys(new_key_line())
PROTECTED = ("multipart/signed", "multipart/encrypted", "application/pkcs7-mime")


def _leaves(msg: Message) -> list[Message]:
    return [p for p in msg.walk() if not p.is_multipart()]


def _defects(msg: Message) -> list[list[str]]:
    return [sorted(type(d).__name__ for d in p.defects) for p in msg.walk()]


def _text(part: Message) -> str:
    raw = part.get_payload(decode=True)
    assert isinstance(raw, bytes)
    charset = part.get_content_charset() or "ascii"
    return raw.decode(charset, "surrogateescape")


def _open(tracked: str) -> str:
    try:
        return open_tracked(KEYRING, tracked).url
    except TokenError as exc:  # pragma: no cover - the assertion message says it all
        raise AssertionError(f"tracked link does not decode: {tracked}: {exc}") from None


def _matches(raw: str, url: str, kind: str) -> bool:
    return raw == url or (kind == "html" and htmllib.unescape(raw) == url)


def _aligned(old: str, new: str, kind: str) -> list[str]:
    """Check (1)+(2) for one part: ``new`` is ``old`` with some href texts replaced by
    tracked links that decode to what those texts meant. Returns the decoded URLs."""
    pieces = TRACKED_RE.split(new)
    links = TRACKED_RE.findall(new)
    urls = [_open(t) for t in links]
    assert old.startswith(pieces[0]), "bytes before the first tracked link changed"
    pos = len(pieces[0])
    for url, piece in zip(urls, pieces[1:], strict=True):
        last = piece is pieces[-1]
        found = False
        start = pos
        while True:
            idx = (len(old) - len(piece)) if last else old.find(piece, start)
            if idx < pos:
                break
            if (not last or old.endswith(piece)) and _matches(old[pos:idx], url, kind):
                pos = idx + len(piece)
                found = True
                break
            if last:
                break
            start = idx + 1
        assert found, f"text around tracked link for {url!r} changed"
    assert pos == len(old)
    return urls


def _anchors(text: str, mapping: bool) -> list[str]:
    try:
        doc = lxml.html.document_fromstring(text)
    except (etree.ParserError, ValueError):
        return []
    out = []
    for el in doc.iter("a", "area"):
        href = el.get("href")
        if href is None:
            continue
        if mapping and TRACKED_RE.fullmatch(href):
            href = _open(href)
        out.append(href)
    return out


def check_rewrite(data: bytes, result: RewriteResult, settings: TrackingSettings) -> int:
    """Every acceptance check for one message; returns the number of tracked links."""
    old = email.message_from_bytes(data, policy=email.policy.compat32)
    new = email.message_from_bytes(result.data, policy=email.policy.compat32)
    assert _defects(new) == _defects(old), "new MIME defects"  # (4)
    if (
        old.get_content_type() in PROTECTED
        or old.get_content_type() == "application/pgp-encrypted"
        or old.get("DKIM-Signature") is not None
    ):
        assert result.data == data  # (5)
    old_leaves, new_leaves = _leaves(old), _leaves(new)
    assert [p.get_content_type() for p in new_leaves] == [p.get_content_type() for p in old_leaves]
    tracked = 0
    for old_part, new_part in zip(old_leaves, new_leaves, strict=True):
        if old_part.get_payload(decode=True) == new_part.get_payload(decode=True):
            assert not TRACKED_RE.search(str(new_part.get_payload())) or TRACKED_RE.search(
                str(old_part.get_payload())
            )
            continue
        kind = "html" if old_part.get_content_type() == "text/html" else "text"
        assert old_part.get_content_type() in ("text/html", "text/plain")
        assert old_part.get_content_disposition() != "attachment"
        old_text, new_text = _text(old_part), _text(new_part)
        urls = _aligned(old_text, new_text, kind)  # (1), (2)
        tracked += len(urls)
        if kind == "html":  # (3)
            assert _anchors(new_text, mapping=True) == _anchors(old_text, mapping=False)
    decided = [d for d in result.links if d.action == "tracked"]
    assert tracked == len(decided)
    again = rewrite_message(result.data, settings, queue_id="Q2")  # (6)
    assert again.data == result.data and not again.changed
    return tracked


def fits(text: str, charset: str) -> bool:
    """Whether ``text`` can be written in ``charset``."""
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        return False
    return True
