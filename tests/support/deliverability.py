"""The messages the deliverability check scores before and after rewriting.

Two sets: the corpus (every ``eml/`` message, every ``html/`` template wrapped in
multipart/alternative with a text part, as the corpus tests wrap them) and a crafted set
of the shapes spam filters look at hardest: anchors whose text is a URL, bank-style
notifications, short plain-text messages, image-only newsletters, a message with 100
links. Shared by ``tests/smtp_proxy/engine/test_deliverability.py`` and
``bench/deliverability.py``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from smtp_proxy.engine.rewriter import TrackingSettings, rewrite_message
from tests.support.corpus import corpus_eml_files, corpus_html_files, wrapped
from tests.support.spamd import Spamd, Verdict

#: The branded tracking base URL the check rewrites with.
BRANDED_BASE = "https://links.example.com"

# As the recipient's MX would see it: relayed from an outside host without
# authentication (several rules only look at such mail).
_HEAD = (
    "Received: from mail.example.com (mail.example.com [81.2.69.160])\r\n"
    "\tby mx.example.org (Postfix) with ESMTPS id 4Q1xYz2abc\r\n"
    "\tfor <robin@example.org>; Fri, 04 Dec 2026 10:00:02 +0000 (UTC)\r\n"
    "From: {sender}\r\n"
    "To: Robin Reader <robin@example.org>\r\n"
    "Subject: {subject}\r\n"
    "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
    "Message-ID: <{mid}.20261204100000@mail.example.com>\r\n"
    "MIME-Version: 1.0\r\n"
)


def _message(mid: str, subject: str, ctype: str, body: str, *, sender: str = "") -> bytes:
    head = _HEAD.format(
        sender=sender or "Example Store <news@example.com>", subject=subject, mid=mid
    )
    return (head + ctype + "\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")).encode()


def _html(mid: str, subject: str, html: str, **kw: str) -> bytes:
    return _message(mid, subject, "Content-Type: text/html; charset=utf-8\r\n", html, **kw)


def _text(mid: str, subject: str, text: str, **kw: str) -> bytes:
    return _message(mid, subject, "Content-Type: text/plain; charset=utf-8\r\n", text, **kw)


def _alternative(mid: str, subject: str, text: str, html: str, **kw: str) -> bytes:
    body = (
        "--=_alt\nContent-Type: text/plain; charset=utf-8\n\n"
        + text
        + "\n--=_alt\nContent-Type: text/html; charset=utf-8\n\n"
        + html
        + "\n--=_alt--\n"
    )
    ctype = 'Content-Type: multipart/alternative; boundary="=_alt"\r\n'
    return _message(mid, subject, ctype, body, **kw)


_BANK = "Example Bank <alerts@bank.example>"


def crafted() -> list[tuple[str, bytes]]:
    """(name, message) of the crafted set."""
    many = "".join(
        f'<li><a href="https://shop.example.com/item/{i}?ref=nl">Item number {i}</a></li>\n'
        for i in range(100)
    )
    return [
        (
            "url-text-anchor",
            _html(
                "c1",
                "Your statement",
                "<html><body><p>Your statement is ready.</p>"
                '<p><a href="https://www.bank.example/login">https://www.bank.example/login</a>'
                "</p></body></html>\n",
                sender=_BANK,
            ),
        ),
        (
            "url-text-www-and-host",
            _html(
                "c2",
                "Welcome",
                "<html><body><p>Welcome aboard. Sign in at "
                '<a href="https://www.bank.example/x">www.bank.example/x</a> or '
                '<a href="https://bank.example/">bank.example</a>.</p></body></html>\n',
                sender=_BANK,
            ),
        ),
        (
            "bank-notification",
            _alternative(
                "c3",
                "A payment of EUR 120.00 was made from your account",
                "Dear customer,\n\nA payment of EUR 120.00 was made from your account\n"
                "ending in 4321 on 3 December 2026.\n\nIf this was not you, review your\n"
                "recent activity: https://www.bank.example/activity?id=98231\n\n"
                "Example Bank\n",
                "<html><body><p>Dear customer,</p><p>A payment of EUR 120.00 was made from "
                "your account ending in 4321 on 3 December 2026.</p><p>If this was not you, "
                '<a href="https://www.bank.example/activity?id=98231">review your recent '
                "activity</a>.</p><p>Example Bank</p></body></html>\n",
                sender=_BANK,
            ),
        ),
        (
            "password-reset",
            _alternative(
                "c4",
                "Reset your password",
                "Someone asked to reset the password of your account.\n\n"
                "Reset it here: https://accounts.example.com/reset?t=Zx81kQ\n\n"
                "If it was not you, ignore this message.\n",
                "<html><body><p>Someone asked to reset the password of your account.</p>"
                '<p><a href="https://accounts.example.com/reset?t=Zx81kQ" '
                'style="background:#06c;color:#fff;padding:10px">Reset password</a></p>'
                "<p>If it was not you, ignore this message.</p></body></html>\n",
                sender="Example Accounts <no-reply@example.com>",
            ),
        ),
        (
            "short-text-two-urls",
            _text(
                "c5",
                "links from today",
                "Hi Robin, here are the two links:\n"
                "https://docs.example.com/guide/setup\n"
                "https://docs.example.com/guide/faq\n",
                sender="Sam Sender <sam@example.com>",
            ),
        ),
        (
            "short-text-one-url",
            _text(
                "c6",
                "slides",
                "https://files.example.com/slides/2026-12.pdf\n",
                sender="Sam Sender <sam@example.com>",
            ),
        ),
        (
            "short-text-sentence",
            _text(
                "c7",
                "meeting notes",
                "Hi Robin,\n\nthe notes from this morning are at\n"
                "https://wiki.example.com/notes/2026-12-04 - see you on Monday.\n\nSam\n",
                sender="Sam Sender <sam@example.com>",
            ),
        ),
        (
            # Tracking the one link would leave no paragraph with spaces enough
            # (TVD_SPACE_RATIO_MINFP): the rewriter leaves it alone (uri-only-text).
            "signature-only",
            _text(
                "c10",
                "Testmail",
                "\n--\nSam Sender -- http://www.sam.example.com\n924 38 051 -- sam@example.com\n",
                sender="Sam Sender <sam@example.com>",
            ),
        ),
        (
            "image-only-newsletter",
            _html(
                "c8",
                "December deals",
                '<html><body><a href="https://shop.example.com/december">'
                '<img src="https://img.example.com/december.png" width="600" height="900" '
                'alt="December deals"></a></body></html>\n',
            ),
        ),
        (
            "hundred-links",
            _alternative(
                "c9",
                "Our whole catalogue",
                "The catalogue: https://shop.example.com/catalogue\n",
                f"<html><body><h1>Catalogue</h1><ul>\n{many}</ul></body></html>\n",
            ),
        ),
    ]


def _wrap_template(path: Path) -> bytes:
    html = path.read_text(encoding="utf-8")
    # multipart/alternative, UTF-8, quoted-printable: how templates are usually sent.
    return dict(wrapped(html))["alt-utf-8-quoted-printable"]


def corpus_messages() -> Iterator[tuple[str, bytes]]:
    """(name, message) for every corpus message and template (none without a corpus)."""
    for path in corpus_eml_files():
        yield "eml/" + path.name, path.read_bytes()
    for path in corpus_html_files():
        yield "html/" + path.parent.name + "/" + path.name, _wrap_template(path)


@dataclass(frozen=True)
class Compared:
    """One message scored as written and as rewritten."""

    name: str
    before: Verdict
    after: Verdict
    changed: bool

    @property
    def delta(self) -> float:
        return round(self.after.score - self.before.score, 3)

    @property
    def added(self) -> frozenset[str]:
        """Rules and probes that fire only after rewriting."""
        return (self.after.rules | self.after.probes) - (self.before.rules | self.before.probes)

    @property
    def removed(self) -> frozenset[str]:
        return (self.before.rules | self.before.probes) - (self.after.rules | self.after.probes)


_UNSCORED = Verdict(0.0, frozenset())


def compare(spamd: Spamd, name: str, data: bytes, settings: TrackingSettings) -> Compared:
    """Score ``data`` as written and as rewritten. A message the rewrite leaves as it
    was is not scored at all (the same bytes get the same verdict)."""
    result = rewrite_message(data, settings, queue_id="Q1", recipient="robin@example.org")
    if not result.changed:
        return Compared(name, _UNSCORED, _UNSCORED, False)
    return Compared(name, spamd.check(data), spamd.check(result.data), True)


def compare_all(
    spamd: Spamd, messages: list[tuple[str, bytes]], settings: TrackingSettings
) -> list[Compared]:
    """:func:`compare` for every message, two at a time (spamd runs two children)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda m: compare(spamd, m[0], m[1], settings), messages))


def summary(rows: list[Compared]) -> dict[str, object]:
    """Messages, how many the rewrite changed, mean and p95 score delta over the changed
    ones, rules added/removed (with how many messages each)."""
    deltas = sorted(r.delta for r in rows if r.changed) or [0.0]
    p95 = deltas[min(len(deltas) - 1, int(0.95 * len(deltas)))]
    added: dict[str, int] = {}
    removed: dict[str, int] = {}
    for r in rows:
        for rule in r.added:
            added[rule] = added.get(rule, 0) + 1
        for rule in r.removed:
            removed[rule] = removed.get(rule, 0) + 1
    return {
        "messages": len(rows),
        "rewritten": sum(r.changed for r in rows),
        "mean_delta": round(statistics.fmean(deltas), 3),
        "p95_delta": round(p95, 3),
        "max_delta": round(deltas[-1], 3),
        "added": dict(sorted(added.items())),
        "removed": dict(sorted(removed.items())),
    }
