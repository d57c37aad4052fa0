"""Sealed link tokens: round trips, tampering, rotation, key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clickrelay.common.errors import ClickrelayError, KeyFileError, TokenError
from redirector.tokens import (
    TOKEN_RE,
    Keyring,
    ensure_key_file,
    load_keyring,
    new_key_line,
    parse_keys,
    url_is_sealable,
)

TRICKY_URLS = [
    "https://example.com/",
    "http://example.com",
    "HTTPS://Example.COM/Path?Q=1",
    "https://exämple.com/ünïcode?q=日本語#frag",
    "https://xn--exmple-cua.com/a",
    "https://example.com/a%7e%7E%2F%20b?x=%00&y=%ZZ",
    "https://example.com/?a=1&amp;b=2&c=[x]&d=@!*$'()",
    "https://user:pass@example.com:8443/p;param?q#f",
    "https://example.com/" + "q" * 3000 + "?" + "&".join(f"k{i}=v{i}" for i in range(300)),
    "https://example.com/../../etc/passwd",
    "https://example.com/#",
    "https://example.com/?redirect=https://other.example.org/?x=1%26y=2",
]


@pytest.mark.parametrize("url", TRICKY_URLS)
def test_round_trip_keeps_url_byte_exact(keyring: Keyring, url: str) -> None:
    token = keyring.seal(
        url, queue_id="4XyZ9QAbc", link_index=7, recipient="a@b.example", sent_at=1_700_000_000
    )
    assert TOKEN_RE.fullmatch(token)
    data = keyring.open(token)
    assert data.url == url
    assert data.queue_id == "4XyZ9QAbc"
    assert data.link_index == 7
    assert data.recipient == "a@b.example"
    assert data.sent_at == 1_700_000_000
    assert data.key_id == keyring.current_key_id
    assert data.sent_at_datetime.isoformat() == "2023-11-14T22:13:20+00:00"


def test_recipient_optional_and_nonces_differ(keyring: Keyring) -> None:
    a = keyring.seal("https://example.com/", queue_id="Q", link_index=0)
    b = keyring.seal("https://example.com/", queue_id="Q", link_index=0)
    assert a != b  # random nonce: equal links do not give equal tokens
    assert keyring.open(a).recipient is None


@pytest.mark.parametrize(
    "url",
    [
        "mailto:a@b.example",
        "javascript:alert(1)",
        "ftp://example.com/",
        "data:text/html,hi",
        "//example.com/",
        "https://example.com/\r\nSet-Cookie: x=1",
        "https://example.com/a b",
        "https://example.com/\x00",
        "",
    ],
)
def test_refuses_to_seal_non_http_or_control_chars(keyring: Keyring, url: str) -> None:
    assert not url_is_sealable(url)
    with pytest.raises(TokenError):
        keyring.seal(url, queue_id="Q", link_index=0)


def test_rotation_first_mints_all_decode() -> None:
    old = new_key_line()
    new = new_key_line()
    before = parse_keys(old)
    token_old = before.seal("https://example.com/old", queue_id="Q", link_index=1)
    rotated = parse_keys(f"{new}\n{old}\n")
    assert rotated.open(token_old).url == "https://example.com/old"
    token_new = rotated.seal("https://example.com/new", queue_id="Q", link_index=2)
    assert rotated.open(token_new).key_id == new.split()[0]
    with pytest.raises(TokenError):
        before.open(token_new)  # the old-only keyring does not know the new key


def test_swapped_key_file_never_decodes() -> None:
    a, b = parse_keys(new_key_line()), parse_keys(new_key_line())
    with pytest.raises(TokenError):
        b.open(a.seal("https://example.com/", queue_id="Q", link_index=0))


def test_same_key_id_other_secret_fails_authentication() -> None:
    line = new_key_line()
    other = line.split()[0] + " " + new_key_line().split()[1]
    token = parse_keys(line).seal("https://example.com/", queue_id="Q", link_index=0)
    with pytest.raises(TokenError, match="authentication"):
        parse_keys(other).open(token)


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_KEYRING = parse_keys(new_key_line())
_TOKEN = _KEYRING.seal(
    "https://example.com/path?a=1&b=2#f", queue_id="QID123", link_index=3, recipient="r@x.example"
)


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(min_value=0, max_value=len(_TOKEN) - 1), char=st.sampled_from(ALPHABET))
def test_any_changed_character_never_decodes(pos: int, char: str) -> None:
    if _TOKEN[pos] == char:
        return
    tampered = _TOKEN[:pos] + char + _TOKEN[pos + 1 :]
    with pytest.raises(TokenError):
        _KEYRING.open(tampered)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(_TOKEN) - 1))
def test_truncation_never_decodes(cut: int) -> None:
    with pytest.raises(TokenError):
        _KEYRING.open(_TOKEN[:cut])


@settings(max_examples=200, deadline=None)
@given(extra=st.text(alphabet=ALPHABET, min_size=1, max_size=8))
def test_appending_never_decodes(extra: str) -> None:
    with pytest.raises(TokenError):
        _KEYRING.open(_TOKEN + extra)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.one_of(st.text(max_size=300), st.text(alphabet=ALPHABET, max_size=300)))
def test_random_strings_only_raise_token_error(junk: str) -> None:
    with pytest.raises(TokenError):
        _KEYRING.open(junk)


def test_error_type_is_under_the_one_root() -> None:
    assert issubclass(TokenError, ClickrelayError)
    with pytest.raises(ClickrelayError):
        _KEYRING.open("x" * 100)


@settings(max_examples=200, deadline=None)
@given(
    path=st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), max_size=200
    ),
    index=st.integers(min_value=0, max_value=2**32 - 1),
    qid=st.text(alphabet=ALPHABET, min_size=1, max_size=40),
    rcpt=st.one_of(st.none(), st.emails()),
)
def test_round_trip_property(path: str, index: int, qid: str, rcpt: str | None) -> None:
    url = "https://example.com/" + path
    token = _KEYRING.seal(url, queue_id=qid, link_index=index, recipient=rcpt, sent_at=1)
    data = _KEYRING.open(token)
    assert (data.url, data.queue_id, data.link_index, data.recipient) == (url, qid, index, rcpt)


# Minted by the code before the decoder was rewritten for speed (commit 1938129), with
# key id 0a0b0c0d and secret bytes 0..31: the token format did not change, old links work.
_OLD_KEYS = "0a0b0c0d AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
_OLD_TOKENS = [
    (
        "AQoLDA1VDODdYxiNl9t7sgxWVIlAyKJKeaFl_e-1FSY3sM9Zsel5LnMZwKBKrFWynTy8fwJLGuQLHNQO-9NiZG7-"
        "pZU85diGJArO5wQoccTWJETr4vD-MQ",
        ("https://example.com/a?b=1", "4XbQ1", 3, "a@example.org", 1700000000),
    ),
    (  # long enough to be zlib-compressed inside
        "AQoLDA3EbABh9xJE_oqLs9nWKIagXtMEdq5Z0Tg4XziFJKlIpuBXaXvKbo9qGhK_OH9nXCvhWjLk6ziDJnZzLHHD8w"
        "jsfPGCAvEj38A-MMYqYLg8WbHmIVQgrWDOwFrdLAMvamnjWwcScuLhvP1j4cZOAB1YE2NNt-FcfdhE8PmbL6Aoc67A"
        "MMcYRsHPci3JMPpP2AC60MR0",
        (
            "https://shop.example.com/products/12345?utm_source=newsletter&utm_medium=email"
            "&utm_campaign=winter-sale&ref=mail12345",
            "4XbQ2",
            0,
            None,
            1700000001,
        ),
    ),
]


@pytest.mark.parametrize(("token", "expected"), _OLD_TOKENS)
def test_tokens_minted_by_earlier_code_still_decode(
    token: str, expected: tuple[str, str, int, str | None, int]
) -> None:
    data = parse_keys(_OLD_KEYS).open(token)
    assert (data.url, data.queue_id, data.link_index, data.recipient, data.sent_at) == expected
    assert data.key_id == "0a0b0c0d"


def _tokens_by_tail_length() -> dict[int, str]:
    """Tokens whose length % 4 is 2, 3 and 0 (the tail carries 4, 2, 0 unused bits)."""
    found: dict[int, str] = {}
    for n in range(12):
        token = _KEYRING.seal("https://example.com/" + "x" * n, queue_id="Q", link_index=0)
        found.setdefault(len(token) % 4, token)
    assert set(found) == {0, 2, 3}
    return found


@pytest.mark.parametrize("rem", [2, 3])
def test_non_canonical_last_character_never_decodes(rem: int) -> None:
    token = _tokens_by_tail_length()[rem]
    assert _KEYRING.open(token).url.startswith("https://example.com/")
    unused = 4 if rem == 2 else 2  # bits of the last character that carry no data
    last = ALPHABET.index(token[-1])
    assert last % (1 << unused) == 0  # what we mint is canonical
    # Same data bits, other unused bits: plain base64 would decode these to the same bytes.
    for other in range(last + 1, last + (1 << unused)):
        with pytest.raises(TokenError):
            _KEYRING.open(token[:-1] + ALPHABET[other])


@pytest.mark.parametrize("rem", [0, 2, 3])
def test_standard_base64_padding_space_and_non_ascii_never_decode(rem: int) -> None:
    token = _tokens_by_tail_length()[rem]
    std = token.replace("-", "+").replace("_", "/")
    variants = [
        token + "=" * (-len(token) % 4 or 4),
        token[:10] + "+" + token[11:],
        token[:10] + "/" + token[11:],
        token[:10] + "=" + token[11:],
        token[:10] + " " + token[11:],
        token[:10] + "\n" + token[11:],
        token[:10] + "é" + token[11:],
        token[:10] + "\uff21" + token[11:],  # full-width A
        token + "\x00",
    ]
    if std != token:
        variants.append(std)
    for variant in variants:
        with pytest.raises(TokenError):
            _KEYRING.open(variant)


# --- key files --------------------------------------------------------------------------


def test_ensure_key_file_creates_0600_and_reuses(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys"
    ring = ensure_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_key_file(path).key_ids == ring.key_ids


def test_world_readable_key_file_is_refused(key_file: Path) -> None:
    os.chmod(key_file, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_keyring(key_file)


def test_missing_key_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="clickrelay keygen"):
        load_keyring(tmp_path / "nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no keys"),
        ("# only a comment\n", "no keys"),
        ("zzzzzzzz abc\n", "expected"),
        ("0011aabb AAAA\n", "expected"),
    ],
)
def test_malformed_key_files(text: str, message: str) -> None:
    with pytest.raises(KeyFileError, match=message):
        parse_keys(text, "keys")


def test_duplicate_key_id_refused() -> None:
    line = new_key_line()
    with pytest.raises(KeyFileError, match="duplicate"):
        parse_keys(f"{line}\n{line}\n")


def test_keygen_command_prints_a_usable_line(capsys: pytest.CaptureFixture[str]) -> None:
    from clickrelay.cli import main

    assert main(["keygen"]) == 0
    line = capsys.readouterr().out.strip()
    ring = parse_keys(line)
    assert ring.open(ring.seal("https://example.com/", queue_id="Q", link_index=0)).url


def test_tag_and_metadata_are_sealed_and_tokens_without_them_still_decode() -> None:
    from redirector.tokens import encode_extras

    keyring = parse_keys(new_key_line())
    extras = encode_extras("spring", {"user_id": "42", "name": "Zoë"})
    token = keyring.seal("https://example.com/a", queue_id="Q1", link_index=3, extras=extras)
    link = keyring.open(token)
    assert (link.url, link.queue_id, link.link_index) == ("https://example.com/a", "Q1", 3)
    assert (link.tag, dict(link.metadata or {})) == ("spring", {"user_id": "42", "name": "Zoë"})
    plain = keyring.open(keyring.seal("https://example.com/a", queue_id="Q1", link_index=3))
    assert (plain.tag, plain.metadata) == (None, None)
    assert encode_extras(None, {}) == b""
