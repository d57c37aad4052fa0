"""Sealed link tokens: round trips, host binding, tampering, rotation, version 1 tokens
still decoding, key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clickrelay.common.errors import ClickrelayError, KeyFileError, TokenError
from redirector import base36, token_v2
from redirector.tokens import (
    TOKEN_RE,
    Key,
    Keyring,
    ensure_key_file,
    load_keyring,
    new_key_line,
    parse_keys,
    url_is_sealable,
)
from smtp_proxy.smtp.queue_id import new_queue_id

HOST = "links.example.com"

TRICKY_URLS = [
    "https://example.com/",
    "http://example.com",
    "https://www.example.com/a",
    "http://www.example.com/a",
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
    "https://shop.example.com/p?utm_source=newsletter&utm_medium=email&utm_campaign=x",
]


@pytest.mark.parametrize("url", TRICKY_URLS)
@pytest.mark.parametrize("queue_id", ["4XyZ9QAbc", "1m918sja48yfb3"])
def test_round_trip_keeps_url_byte_exact(keyring: Keyring, url: str, queue_id: str) -> None:
    token = keyring.seal(
        url,
        host=HOST,
        queue_id=queue_id,
        link_index=7,
        recipient="a@b.example",
        sent_at=1_700_000_000,
    )
    assert TOKEN_RE.fullmatch(token)
    assert token[0] == "k" and token[1:].isalnum() and token == token.lower()
    data = keyring.open(token, HOST)
    assert data.url == url
    assert data.queue_id == queue_id
    assert data.link_index == 7
    assert data.recipient == "a@b.example"
    assert data.sent_at == 1_700_000_000
    assert data.key_id == keyring.current_key_id
    assert (data.version, data.host) == (2, HOST)
    assert data.sent_at_datetime.isoformat() == "2023-11-14T22:13:20+00:00"


def test_our_queue_id_carries_the_send_time_in_one_byte(keyring: Keyring) -> None:
    qid = new_queue_id()
    url = "https://shop.example.com/sale/shoes?id=7"
    now = keyring.seal(url, host=HOST, queue_id=qid, link_index=0, sent_at=None)
    other = keyring.seal(url, host=HOST, queue_id=qid, link_index=0, sent_at=1_000_000_000)
    assert len(other) > len(now)
    assert keyring.open(other, HOST).sent_at == 1_000_000_000
    assert keyring.open(now, HOST).queue_id == qid


def test_recipient_optional_and_nonces_differ(keyring: Keyring) -> None:
    a = keyring.seal("https://example.com/", host=HOST, queue_id="Q", link_index=0)
    b = keyring.seal("https://example.com/", host=HOST, queue_id="Q", link_index=0)
    assert a != b  # random nonce: equal links do not give equal tokens
    assert keyring.open(a, HOST).recipient is None


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
        keyring.seal(url, host=HOST, queue_id="Q", link_index=0)
    with pytest.raises(TokenError):
        keyring.seal_v1(url, queue_id="Q", link_index=0)


def test_a_token_needs_a_host(keyring: Keyring) -> None:
    with pytest.raises(TokenError) as info:
        keyring.seal("https://example.com/", host=" . ", queue_id="Q", link_index=0)
    assert info.value.reason == "no-host"


# --- host binding ------------------------------------------------------------------------


def test_token_works_only_on_the_host_it_was_minted_for(keyring: Keyring) -> None:
    token = keyring.seal("https://example.com/", host="links.a.example", queue_id="Q", link_index=0)
    assert keyring.open(token, "links.a.example").url == "https://example.com/"
    for spelling in ("LINKS.A.Example", "links.a.example.", " links.a.example"):
        assert keyring.open(token, spelling).host == "links.a.example"
    for other in ("links.other-tenant.example", "a.example", "", "127.0.0.1"):
        with pytest.raises(TokenError) as info:
            keyring.open(token, other)
        assert info.value.reason == "wrong-host"


def test_idn_tracking_host_matches_its_punycode(keyring: Keyring) -> None:
    token = keyring.seal(
        "https://example.com/", host="Klicks.Bücher.example", queue_id="Q", link_index=0
    )
    assert (
        keyring.open(token, "klicks.xn--bcher-kva.example").host == "klicks.xn--bcher-kva.example"
    )


def test_host_is_authenticated_not_just_tagged(keyring: Keyring) -> None:
    """Another host whose one-byte tag collides still fails: the host is in the AEAD's
    associated data, the tag only names the likely reason."""
    token = keyring.seal("https://example.com/", host=HOST, queue_id="Q", link_index=0)
    tag = token_v2.host_tag(HOST.encode())
    collider = next(
        h for i in range(100_000) if token_v2.host_tag((h := f"h{i}.example").encode()) == tag
    )
    with pytest.raises(TokenError) as info:
        keyring.open(token, collider)
    assert info.value.reason == "forged"


def test_version_1_tokens_are_not_host_bound(keyring: Keyring) -> None:
    token = keyring.seal_v1("https://example.com/v1", queue_id="Q", link_index=2, sent_at=5)
    assert token.startswith("A")
    for host in (HOST, "anything.example", ""):
        data = keyring.open(token, host)
        assert (data.url, data.version, data.host, data.sent_at) == (
            "https://example.com/v1",
            1,
            None,
            5,
        )


# --- keys --------------------------------------------------------------------------------


def test_rotation_first_mints_all_decode() -> None:
    old = new_key_line()
    new = new_key_line()
    before = parse_keys(old)
    token_old = before.seal("https://example.com/old", host=HOST, queue_id="Q", link_index=1)
    v1_old = before.seal_v1("https://example.com/v1", queue_id="Q", link_index=1)
    rotated = parse_keys(f"{new}\n{old}\n")
    assert rotated.open(token_old, HOST).url == "https://example.com/old"
    assert rotated.open(v1_old, HOST).url == "https://example.com/v1"
    token_new = rotated.seal("https://example.com/new", host=HOST, queue_id="Q", link_index=2)
    assert rotated.open(token_new, HOST).key_id == new.split()[0]
    with pytest.raises(TokenError) as info:
        before.open(token_new, HOST)  # the old-only keyring does not know the new key
    if new[:2] != old[:2]:
        assert info.value.reason == "unknown-key"
        assert info.value.key_id == new[:2] + "??????"


def test_keys_sharing_a_first_byte_both_decode() -> None:
    """A version 2 token names its key by the first byte of its id only."""
    a = Key(bytes.fromhex("5a000001"), os.urandom(32))
    b = Key(bytes.fromhex("5a000002"), os.urandom(32))
    token_a = Keyring([a]).seal("https://example.com/a", host=HOST, queue_id="Q", link_index=0)
    token_b = Keyring([b]).seal("https://example.com/b", host=HOST, queue_id="Q", link_index=0)
    both = Keyring([a, b])
    assert both.open(token_a, HOST).key_id == "5a000001"
    assert both.open(token_b, HOST).key_id == "5a000002"


def test_swapped_key_file_never_decodes() -> None:
    a, b = parse_keys(new_key_line()), parse_keys(new_key_line())
    with pytest.raises(TokenError):
        b.open(a.seal("https://example.com/", host=HOST, queue_id="Q", link_index=0), HOST)
    with pytest.raises(TokenError):
        b.open(a.seal_v1("https://example.com/", queue_id="Q", link_index=0), HOST)


def test_same_key_id_other_secret_fails_authentication() -> None:
    line = new_key_line()
    other = line.split()[0] + " " + new_key_line().split()[1]
    ring = parse_keys(line)
    for token in (
        ring.seal("https://example.com/", host=HOST, queue_id="Q", link_index=0),
        ring.seal_v1("https://example.com/", queue_id="Q", link_index=0),
    ):
        with pytest.raises(TokenError, match="authentication"):
            parse_keys(other).open(token, HOST)


# --- tampering ---------------------------------------------------------------------------

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_KEYRING = parse_keys(new_key_line())
_TOKEN = _KEYRING.seal(
    "https://example.com/path?a=1&b=2#f",
    host=HOST,
    queue_id="QID123",
    link_index=3,
    recipient="r@x.example",
)
_V1_TOKEN = _KEYRING.seal_v1(
    "https://example.com/path?a=1&b=2#f", queue_id="QID123", link_index=3, recipient="r@x.example"
)


def test_case_does_not_matter() -> None:
    """base36 is read case-insensitively: a link a gateway upper-cased still works."""
    assert _KEYRING.open(_TOKEN.upper(), HOST).url == "https://example.com/path?a=1&b=2#f"


@settings(max_examples=300, deadline=None)
@given(
    which=st.sampled_from(["v2", "v1"]),
    pos=st.integers(min_value=0, max_value=len(_V1_TOKEN) - 1),
    char=st.sampled_from(ALPHABET),
)
def test_any_changed_character_never_decodes(which: str, pos: int, char: str) -> None:
    token = _TOKEN if which == "v2" else _V1_TOKEN
    pos %= len(token)
    if token[pos].lower() == char.lower() if which == "v2" else token[pos] == char:
        return
    tampered = token[:pos] + char + token[pos + 1 :]
    with pytest.raises(TokenError):
        _KEYRING.open(tampered, HOST)


@settings(max_examples=200, deadline=None)
@given(which=st.sampled_from([_TOKEN, _V1_TOKEN]), cut=st.integers(min_value=0))
def test_truncation_never_decodes(which: str, cut: int) -> None:
    with pytest.raises(TokenError):
        _KEYRING.open(which[: cut % len(which)], HOST)


@settings(max_examples=200, deadline=None)
@given(
    which=st.sampled_from([_TOKEN, _V1_TOKEN]),
    extra=st.text(alphabet=ALPHABET, min_size=1, max_size=8),
)
def test_appending_never_decodes(which: str, extra: str) -> None:
    with pytest.raises(TokenError):
        _KEYRING.open(which + extra, HOST)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    junk=st.one_of(
        st.text(max_size=300),
        st.text(alphabet=ALPHABET, max_size=300),
        st.text(alphabet=base36.ALPHABET, max_size=300).map(lambda t: "k" + t),
    )
)
def test_random_strings_only_raise_token_error(junk: str) -> None:
    with pytest.raises(TokenError):
        _KEYRING.open(junk, HOST)


def test_error_type_is_under_the_one_root() -> None:
    assert issubclass(TokenError, ClickrelayError)
    with pytest.raises(ClickrelayError):
        _KEYRING.open("x" * 100, HOST)


def test_base36_refuses_what_it_never_makes() -> None:
    encoded = base36.encode(b"\xff" * 30)
    assert base36.decode(encoded) == b"\xff" * 30
    for bad in (
        encoded[:-1],  # 46 characters: no byte count encodes to that
        "z" * len(encoded),
        " " + encoded[1:],
        encoded[:5] + "_" + encoded[6:],
        "+" + encoded[1:],
        encoded[:5] + "é" + encoded[6:],
    ):
        with pytest.raises(ValueError):
            base36.decode(bad)


@settings(max_examples=200, deadline=None)
@given(
    path=st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), max_size=200
    ),
    index=st.integers(min_value=0, max_value=2**32 - 1),
    qid=st.one_of(st.text(alphabet=ALPHABET, min_size=1, max_size=40), st.builds(new_queue_id)),
    rcpt=st.one_of(st.none(), st.emails()),
    sent_at=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_round_trip_property(
    path: str, index: int, qid: str, rcpt: str | None, sent_at: int
) -> None:
    url = "https://example.com/" + path
    token = _KEYRING.seal(
        url, host=HOST, queue_id=qid, link_index=index, recipient=rcpt, sent_at=sent_at
    )
    data = _KEYRING.open(token, HOST)
    assert (data.url, data.queue_id, data.link_index, data.recipient, data.sent_at) == (
        url,
        qid,
        index,
        rcpt,
        sent_at,
    )
    old = _KEYRING.seal_v1(url, queue_id=qid, link_index=index, recipient=rcpt, sent_at=sent_at)
    assert _KEYRING.open(old, "").url == url


def test_version_2_is_shorter_for_a_typical_link(keyring: Keyring) -> None:
    args = dict(queue_id=new_queue_id(), link_index=3, recipient="jane.doe@mailbox.org")
    url = "https://shop.example.com/sale/shoes?id=7"
    v1 = keyring.seal_v1(url, **args)  # type: ignore[arg-type]
    v2 = keyring.seal(url, host=HOST, **args)  # type: ignore[arg-type]
    assert len(v2) <= len(v1) - 30


# --- version 1 tokens ----------------------------------------------------------------------

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
    data = parse_keys(_OLD_KEYS).open(token, HOST)
    assert (data.url, data.queue_id, data.link_index, data.recipient, data.sent_at) == expected
    assert (data.key_id, data.version, data.host) == ("0a0b0c0d", 1, None)


def _tokens_by_tail_length() -> dict[int, str]:
    """Version 1 tokens whose length % 4 is 2, 3 and 0 (the tail carries 4, 2, 0 unused
    bits)."""
    found: dict[int, str] = {}
    for n in range(12):
        token = _KEYRING.seal_v1("https://example.com/" + "x" * n, queue_id="Q", link_index=0)
        found.setdefault(len(token) % 4, token)
    assert set(found) == {0, 2, 3}
    return found


@pytest.mark.parametrize("rem", [2, 3])
def test_non_canonical_last_character_never_decodes(rem: int) -> None:
    token = _tokens_by_tail_length()[rem]
    assert _KEYRING.open(token, HOST).url.startswith("https://example.com/")
    unused = 4 if rem == 2 else 2  # bits of the last character that carry no data
    last = ALPHABET.index(token[-1])
    assert last % (1 << unused) == 0  # what we mint is canonical
    # Same data bits, other unused bits: plain base64 would decode these to the same bytes.
    for other in range(last + 1, last + (1 << unused)):
        with pytest.raises(TokenError):
            _KEYRING.open(token[:-1] + ALPHABET[other], HOST)


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
            _KEYRING.open(variant, HOST)


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
    token = ring.seal("https://example.com/", host=HOST, queue_id="Q", link_index=0)
    assert ring.open(token, HOST).url


def test_base36_lengths_are_exact() -> None:
    for n in range(1, 600):
        chars = base36.encoded_length(n)
        assert 36 ** (chars - 1) < 256**n <= 36**chars


@pytest.mark.parametrize(
    "queue_id",
    ["1m918sja48yfbi", "1M918SJA48YFB3", "1m918sja48yf_3", "1m918sja48yf 3", "+m918sja48yfb3"],
)
def test_queue_ids_not_ours_are_carried_as_written(queue_id: str) -> None:
    token = _KEYRING.seal("https://example.com/", host=HOST, queue_id=queue_id, link_index=0)
    assert _KEYRING.open(token, HOST).queue_id == queue_id
