"""Acceptance: the rewriter over third-party mail and templates nobody on this project wrote.

Every message in ``$CLICKRELAY_CORPUS/eml`` and every template in ``html/`` — each template
wrapped as text/html alone and in multipart/alternative with a text part, in 8bit,
quoted-printable and base64, in UTF-8 and a legacy charset where the text fits — must:

1. decode, in each rewritten part, to the original once each tracked link is replaced by
   the original href text (so everything outside href values is identical);
2. carry tracked links that decode to exactly the original URLs;
3. give lxml the same anchors in the same order (tracked ones mapped back);
4. parse with the email package with no new defects;
5. stay unchanged when signed, encrypted or DKIM-signed;
6. not change when rewritten a second time.

The checks use only the email package, lxml and the token codec — not the engine's
own MIME code — so they judge the engine rather than repeat it.
"""

from __future__ import annotations

import base64
import email
import email.policy
import html as htmllib
import quopri
import re
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import lxml.html
import pytest
from lxml import etree

from clickrelay.common.errors import TokenError
from clickrelay.config import load_config_text
from redirector.tokens import new_key_line, parse_keys
from smtp_proxy.engine.rewriter import RewriteResult, TrackingSettings, rewrite_message
from tests.conftest import corpus_eml_files, corpus_html_files
from tests.support.tracked_links import open_tracked

BASE = "https://t.example.net"
TRACKED_RE = re.compile(re.escape(BASE) + r"/c/[A-Za-z0-9_-]+")
KEYRING = parse_keys(new_key_line())
PROTECTED = ("multipart/signed", "multipart/encrypted", "application/pkcs7-mime")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> TrackingSettings:
    base = tmp_path_factory.mktemp("cfg")
    config = load_config_text(f'[tracking]\nbase_url = "{BASE}"\n', base_dir=base)
    return TrackingSettings.from_config(config, KEYRING)


def _ids(paths: list[Path], root: str) -> list[str]:
    return [str(p).split(f"/{root}/", 1)[-1] for p in paths]


# --- the checks --------------------------------------------------------------------------


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


# --- real messages -----------------------------------------------------------------------

EML = corpus_eml_files()


@pytest.mark.parametrize("path", EML, ids=_ids(EML, "eml"))
def test_corpus_message(path: Path, settings: TrackingSettings, corpus: Path) -> None:
    data = path.read_bytes()
    result = rewrite_message(data, settings, queue_id="Q1", recipient="r@example.org")
    assert not result.reason.startswith("error:"), result.reason
    if not result.changed:
        assert result.data == data
    check_rewrite(data, result, settings)


# --- templates wrapped in MIME ------------------------------------------------------------

HTML = corpus_html_files()


def _text_version(html: str) -> str:
    """A plain-text alternative like mailers make: the words, then the links."""
    try:
        doc = lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError):
        return "(empty)\n"
    lines = [" ".join(doc.text_content().split())[:2000]]
    for el in doc.iter("a"):
        href = el.get("href") or ""
        if href.startswith(("http://", "https://")):
            lines.append(f"{' '.join(el.text_content().split())[:60]}: <{href}>")
    return "\n".join(lines) + "\n"


def _encode(text: str, charset: str, cte: str) -> bytes:
    raw = text.replace("\r\n", "\n").replace("\n", "\r\n").encode(charset)
    if cte == "base64":
        return base64.encodebytes(raw).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        return quopri.encodestring(raw.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    return raw


def _part(ctype: str, text: str, charset: str, cte: str) -> bytes:
    head = f"Content-Type: {ctype}; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    return head.encode() + _encode(text, charset, cte)


def wrapped(html: str) -> Iterator[tuple[str, bytes]]:
    """The template as text/html alone and in multipart/alternative, in 8bit, QP and
    base64, in UTF-8 and a legacy charset when the text fits in one."""
    legacy = next((cs for cs in ("windows-1252", "iso-8859-1") if fits(html, cs)), None)
    head = "From: Sender <s@example.com>\r\nTo: r@example.org\r\nSubject: Test\r\n"
    head += "MIME-Version: 1.0\r\n"
    text = _text_version(html)
    for charset in ("utf-8", *([legacy] if legacy else [])):
        for cte in ("8bit", "quoted-printable", "base64"):
            yield f"html-{charset}-{cte}", head.encode() + _part("text/html", html, charset, cte)
            text_cs = charset if fits(text, charset) else "utf-8"
            body = (
                b"--=_alt\r\n"
                + _part("text/plain", text, text_cs, cte)
                + b"\r\n--=_alt\r\n"
                + _part("text/html", html, charset, cte)
                + b"\r\n--=_alt--\r\n"
            )
            ctype = 'Content-Type: multipart/alternative; boundary="=_alt"\r\n\r\n'
            yield f"alt-{charset}-{cte}", head.encode() + ctype.encode() + body


def fits(text: str, charset: str) -> bool:
    """Whether ``text`` can be written in ``charset``."""
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize("path", HTML, ids=_ids(HTML, "html"))
def test_corpus_template(path: Path, settings: TrackingSettings, corpus: Path) -> None:
    html = path.read_text(encoding="utf-8")
    for name, data in wrapped(html):
        result = rewrite_message(data, settings, queue_id="Q1")
        assert not result.reason.startswith("error:"), (name, result.reason)
        try:
            check_rewrite(data, result, settings)
        except AssertionError as exc:
            raise AssertionError(f"{path.name} as {name}: {exc}") from exc


def test_corpus_templates_get_tracked(settings: TrackingSettings, corpus: Path) -> None:
    """Guard against passing by doing nothing: the templates' real links get tracked (most
    of their links are placeholders, ``#`` or a bare ``http://``, which must be skipped)."""
    tracked = skipped = 0
    reasons: dict[str, int] = {}
    for path in HTML:
        data = next(wrapped(path.read_text(encoding="utf-8")))[1]
        result = rewrite_message(data, settings, queue_id="Q1")
        for d in result.links:
            if d.action == "tracked":
                tracked += 1
            else:
                skipped += 1
                reasons[d.reason] = reasons.get(d.reason, 0) + 1
    assert tracked >= 100, (tracked, reasons)
    assert reasons.get("html-disagrees", 0) < tracked // 10, reasons
