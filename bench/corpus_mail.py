"""What the corpus benches share: where the corpus is, and an HTML template as a message.

Imported as ``bench.corpus_mail`` (each bench puts the repository root on ``sys.path``).
"""

from __future__ import annotations

import os
import quopri
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def corpus_dir() -> Path:
    """``$CLICKRELAY_CORPUS``, else ``../shared/corpus``; exits when it is not there."""
    env = os.environ.get("CLICKRELAY_CORPUS")
    path = Path(env) if env else ROOT.parent / "shared" / "corpus"
    if not path.is_dir():
        sys.exit(f"corpus not found at {path}: set $CLICKRELAY_CORPUS")
    return path


def wrap(html: bytes, cte: str) -> bytes:
    """An HTML template as a one-part message in ``cte`` (``8bit`` or ``quoted-printable``)."""
    body = html.replace(b"\r\n", b"\n")
    if cte == "quoted-printable":
        body = quopri.encodestring(body)
    head = (
        "From: s@example.com\nTo: r@example.org\nSubject: bench\nMIME-Version: 1.0\n"
        f"Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: {cte}\n\n"
    )
    return (head.encode() + body).replace(b"\n", b"\r\n")
