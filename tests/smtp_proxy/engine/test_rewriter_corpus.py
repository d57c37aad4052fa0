"""Acceptance: the rewriter over third-party mail and templates nobody on this project wrote.

Every message in ``$CLICKRELAY_CORPUS/eml`` and every template in ``html/`` — each template
wrapped as text/html alone and in multipart/alternative with a text part, in 8bit,
quoted-printable and base64, in UTF-8 and a legacy charset where the text fits — must:

pass every check of :func:`tests.support.rewrite_checks.check_rewrite` (same text outside
href values, tracked links decoding to the original URLs, the same anchors for lxml, no
new MIME defects, signed/encrypted/DKIM-signed mail unchanged, a second rewrite a no-op).
The checks use only the email package, lxml and the token codec — not the engine's own
MIME code — so they judge the engine rather than repeat it.
"""

from __future__ import annotations

import base64
import quopri
from collections.abc import Iterator
from pathlib import Path

import lxml.html
import pytest
from lxml import etree

from clickrelay.config import load_config_text
from smtp_proxy.engine.rewriter import TrackingSettings, rewrite_message
from smtp_proxy.smtp.tracking import tracking_settings
from tests.support.corpus import corpus_eml_files, corpus_html_files
from tests.support.rewrite_checks import BASE, KEYRING, check_rewrite, fits


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> TrackingSettings:
    base = tmp_path_factory.mktemp("cfg")
    config = load_config_text(f'[tracking]\nbase_url = "{BASE}"\n', base_dir=base)
    return tracking_settings(config, KEYRING, {})


def _ids(paths: list[Path], root: str) -> list[str]:
    return [str(p).split(f"/{root}/", 1)[-1] for p in paths]


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
