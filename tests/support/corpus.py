"""The third-party corpus of real mail and HTML (``$CLICKRELAY_CORPUS``), when present."""

from __future__ import annotations

import base64
import os
import quopri
from collections.abc import Iterator
from pathlib import Path

import lxml.html
import pytest
from lxml import etree

from tests.support.rewrite_checks import fits

ROOT = Path(__file__).resolve().parents[2]


def corpus_dir() -> Path | None:
    env = os.environ.get("CLICKRELAY_CORPUS")
    path = Path(env) if env else ROOT.parent / "shared" / "corpus"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def corpus() -> Path:
    path = corpus_dir()
    if path is None:
        if os.environ.get("CLICKRELAY_CI"):
            pytest.fail("CLICKRELAY_CORPUS is set in CI but the corpus is missing")
        pytest.skip("corpus not found: set $CLICKRELAY_CORPUS or put it at ../shared/corpus")
    return path


def corpus_eml_files() -> list[Path]:
    path = corpus_dir()
    return sorted(path.glob("eml/**/*.eml")) if path else []


def corpus_html_files() -> list[Path]:
    path = corpus_dir()
    return sorted(path.glob("html/**/*.html")) if path else []


# --- templates wrapped in MIME ------------------------------------------------------------


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
