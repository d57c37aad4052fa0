"""Tokens look like nothing a mail filter looks for.

A version 2 token is ``k`` + lower-case base36: one word with no separator, so a
word-anchored pattern can only start at the token's first character, ``k``, which starts
none of them (Bitcoin ``1``/``3``/``bc1``, Litecoin ``L``/``M``/``3``, Monero ``4``,
hex ``0-9a-f``, IBAN upper case). The unanchored ones need characters a token never has
(``@``, ``+``, upper case) or a long run from a narrow class (Ethereum: ``0x`` and 40
hex digits, below 1e-17 per token). These tests check that over many random tokens,
with SpamAssassin's own rules where it has one.

The version 1 shape (base64url) did match: its ``-`` split a token into words, and one
run between two ``-`` matched the Bitcoin pattern in a real message; the first test
shows these patterns catch that shape.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from redirector.tokens import Keyring, new_key_line, parse_keys
from smtp_proxy.smtp.queue_id import new_queue_id

BASE = "https://links.example.com/c/"
HOST = "links.example.com"

# Copied from /usr/share/spamassassin/72_active.cf (SpamAssassin 4.0.1, Debian
# 4.0.1-1~deb12u1); Perl regexes that Python's re reads the same way.
SPAMASSASSIN_BODY = {
    "__BITCOIN_ID": r"\b(?<!=)(?:[13](?:(?:[-_=\s][a-km-zA-HJ-NP-Z1-9]){29,34}"
    r"|[a-km-zA-HJ-NP-Z1-9]{29,34})|bc1[acdefghjklmnpqrstuvwxyz234567890]{30,90}"
    r"|b[-_=\s]c[-_=\s]1(?:[-_=\s][acdefghjklmnpqrstuvwxyz234567890]){30,90})\b",
    # GB_HASHBL_BTC's body regex
    "GB_HASHBL_BTC": r"\b(?<!=)([13][a-km-zA-HJ-NP-Z1-9]{25,34}"
    r"|bc1[acdefghjklmnpqrstuvwxyz234567890]{30,62})\b",
    "__LITECOIN_ID": r"\b(?<!=)[LM3][a-km-zA-HJ-NP-Z1-9]{26,33}\b",
    "__MONERO_ID": r"\b4[0-9AB][1-9A-HJ-NP-Za-km-z]{93,104}\b",
}
SPAMASSASSIN_URI = {
    "__URL_BTC_ID": r"[/.](?:[13][a-km-zA-HJ-NP-Z1-9]{25,34}"
    r"|bc1[acdefghjklmnpqrstuvwxyz234567890]{30,90})(?:/|$)",
    "__URL_LTC_ID": r"[/.][LM3][a-km-zA-HJ-NP-Z1-9]{26,33}(?:/|$)",
    "__128_HEX_URI": r"/[0-9a-f]{128}",
    "__AC_CHDSEQ_URI": r"\/chd[a-z0-9]{20,}",
    "__AC_MHDSEQ_URI": r"\/mhd[a-z0-9]{20,}",
    "__AC_UHDSEQ_URI": r"\/uhd[a-z0-9]{20,}",
    "__AC_1SEQC_URI": r"\/1[a-z0-9]8[a-z0-9_]{20,}\/C\/",
}
# The usual content patterns SpamAssassin has no rule of its own for.
GENERIC = {
    "bitcoin": r"\b[13][a-km-zA-HJ-NP-Z1-9]{25,34}\b",
    "bech32": r"\bbc1[a-z0-9]{25,90}\b",
    "ethereum": r"0x[0-9a-fA-F]{40}",
    "hex run": r"\b[0-9a-f]{32,}\b",
    "e-mail address": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "phone number": r"(?<!\w)\+?\d[\d\s().-]{7,}\d(?!\w)",
    "E.164 number": r"\+\d{8,15}",
    "IBAN": r"\b[A-Z]{2}\d{2}[A-Z0-9]{11,30}\b",
}
BODY = {name: re.compile(rx) for name, rx in {**SPAMASSASSIN_BODY, **GENERIC}.items()}
URI = {name: re.compile(rx) for name, rx in SPAMASSASSIN_URI.items()}  # (none has /i)

_KEYRING = parse_keys(new_key_line())


def hits(token: str) -> list[str]:
    """Names of the patterns that match a tracked link with this token, in a plain-text
    body line, as a bare word, and as the URI."""
    url = BASE + token
    texts = (f"Read more: {url}\n", f"Read more:\n{url} now\n", f" {token} ")
    found = [name for name, rx in BODY.items() if any(rx.search(t) for t in texts)]
    found += [name for name, rx in URI.items() if rx.search(url)]
    return found


def test_the_patterns_catch_the_old_base64url_shape() -> None:
    # A base64url token in which a run between two "-" is a Bitcoin-address shape, as a
    # real message's token was: the tests below would see this.
    old_shape = "AQoLDA1VDODdYxiNl9t7sg-1BoatSLRHtKNngkdXEeobR76b53LETtpyT-pZU85diGJArO5wQ"
    assert "__BITCOIN_ID" in hits(old_shape)
    assert "GB_HASHBL_BTC" in hits(old_shape)
    assert "hex run" in hits("0123456789abcdef" * 3)
    assert "bech32" in hits("bc1" + "q" * 40)


@settings(max_examples=400, deadline=None)
@given(
    path=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=300),
    index=st.integers(min_value=0, max_value=2**32 - 1),
    qid=st.one_of(st.builds(new_queue_id), st.text(min_size=1, max_size=30)),
    rcpt=st.one_of(st.none(), st.emails()),
    sent_at=st.integers(min_value=0, max_value=2**33),
)
def test_no_token_matches_a_content_pattern(
    path: str, index: int, qid: str, rcpt: str | None, sent_at: int
) -> None:
    token = _KEYRING.seal(
        "https://example.com/" + path,
        host=HOST,
        queue_id=qid,
        link_index=index,
        recipient=rcpt,
        sent_at=sent_at,
    )
    assert re.fullmatch(r"k[0-9a-z]+", token)
    assert hits(token) == []


def test_many_random_tokens_match_no_content_pattern(keyring: Keyring) -> None:
    """A wider sweep than hypothesis's examples: 5,000 links of a campaign (random nonces
    make every token's bytes random)."""
    qid = new_queue_id()
    for i in range(5_000):
        token = keyring.seal(
            f"https://shop.example.com/item/{i}?utm_source=newsletter",
            host=HOST,
            queue_id=qid,
            link_index=i % 40,
            recipient=f"user{i}@example.org",
        )
        assert hits(token) == [], token
