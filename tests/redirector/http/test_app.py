"""The redirector's aiohttp apps through aiohttp's test client (real loopback sockets).

Redirect correctness for tricky URLs, the uniform 404, forged-token fuzzing, header
injection, classification and client addresses as recorded in a real SQLite store,
/healthz, and the admin endpoints.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from clickrelay import __version__
from clickrelay.common.errors import TokenError
from redirector.clicks.classify import Classifier, bundled_agents
from redirector.clicks.networks import NetworkMatcher, parse_networks
from redirector.clicks.recorder import ClickRecorder
from redirector.config import RedirectorConfig
from redirector.http.admin import create_admin_app
from redirector.http.app import MAX_TOKEN_CHARS, create_app, set_keyring
from redirector.http.clientip import ClientIpPolicy, parse_ip
from redirector.location import has_forbidden_char, location_for
from redirector.store import open_store
from redirector.tokens import Keyring, new_key_line, parse_keys
from tests.support.redirector_client import (
    BROWSER,
    LONG_AGO,
    TEST_HOST,
    TestClientT,
    assert_not_found,
    client_for,
    get,
    public_app,
    raw_token,
    request,
    seal,
)

# --- redirects ----------------------------------------------------------------------

#: (sealed URL, the Location we must send). ASCII stays byte-exact; only non-ASCII is
#: changed (IDN host → punycode, everything else → %-encoded UTF-8).
TRICKY_URLS: list[tuple[str, str]] = [
    ("https://example.com/", "https://example.com/"),
    ("https://example.com/a%7eb/~c", "https://example.com/a%7eb/~c"),
    ("https://example.com/a%7Eb?x=%7e", "https://example.com/a%7Eb?x=%7e"),
    ("https://example.com/a%20b+c?q=a%20b+c", "https://example.com/a%20b+c?q=a%20b+c"),
    ("https://example.com/a/../b/./c/%2e%2e/d", "https://example.com/a/../b/./c/%2e%2e/d"),
    (
        "https://example.com/p?x=1#frag/with?odd=chars",
        "https://example.com/p?x=1#frag/with?odd=chars",
    ),
    ("https://example.com/#", "https://example.com/#"),
    ("https://example.com/[x]@!*$'();,=:", "https://example.com/[x]@!*$'();,=:"),
    ("https://example.com/%zz%/%", "https://example.com/%zz%/%"),
    ('https://example.com/a\\b|c^d`e{f}g"h<i>', 'https://example.com/a\\b|c^d`e{f}g"h<i>'),
    ("HTTPS://Example.COM:8443/Path", "HTTPS://Example.COM:8443/Path"),
    ("http://user:pass@example.com/x", "http://user:pass@example.com/x"),
    ("https://[2001:db8::1]:8080/p", "https://[2001:db8::1]:8080/p"),
    (
        "https://bücher.example/straße?q=ä#Überblick",
        "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%A4#%C3%9Cberblick",
    ),
    ("https://Bücher.Example/", "https://xn--bcher-kva.Example/"),
    ("https://例え.jp/パス", "https://xn--r8jz45g.jp/%E3%83%91%E3%82%B9"),
    ("https://例え。jp/", "https://xn--r8jz45g.jp/"),
    ("https://☃.net/", "https://xn--n3h.net/"),
    (
        "https://user:pässword@bücher.example:8443/x",
        "https://user:p%C3%A4ssword@xn--bcher-kva.example:8443/x",
    ),
    ("https://[2001:db8::1]:8080/ü", "https://[2001:db8::1]:8080/%C3%BC"),
    ("https://example.com/?q=%E2%82%AC&r=€", "https://example.com/?q=%E2%82%AC&r=%E2%82%AC"),
    ("https://example.com/😀", "https://example.com/%F0%9F%98%80"),
    ("https://example.com/\u2028", "https://example.com/%E2%80%A8"),
    ("https://example.com/q?" + "k=v&" * 450, "https://example.com/q?" + "k=v&" * 450),
]


@pytest.mark.parametrize(("url", "location"), TRICKY_URLS)
async def test_get_redirects_to_the_sealed_url_exactly(
    keyring: Keyring, url: str, location: str
) -> None:
    async with client_for(public_app(keyring)) as client:
        resp = await get(client, f"/c/{seal(keyring, url)}")
    assert resp.status == 302
    assert resp.headers["Location"] == location
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Robots-Tag"] == "noindex"
    assert len(resp.body) < 64


@pytest.mark.parametrize(("url", "location"), TRICKY_URLS)
def test_location_for_is_ascii_and_keeps_ascii_exact(url: str, location: str) -> None:
    assert location_for(url) == location
    assert location.isascii()


async def test_head_redirects_too_and_tokens_are_never_single_use(keyring: Keyring) -> None:
    token = seal(keyring, "https://example.com/x")
    async with client_for(public_app(keyring)) as client:
        head = await request(client, "HEAD", f"/c/{token}")
        assert head.status == 302
        assert head.headers["Location"] == "https://example.com/x"
        assert head.body == b""
        for _ in range(3):
            resp = await get(client, f"/c/{token}")
            assert resp.status == 302
            assert resp.headers["Location"] == "https://example.com/x"
        # A query string added by some client or scanner is not passed on.
        resp = await get(client, f"/c/{token}?utm_source=scanner")
        assert resp.status == 302
        assert resp.headers["Location"] == "https://example.com/x"


async def test_old_keys_decode_and_set_keyring_swaps_keys_live() -> None:
    old = parse_keys(new_key_line())
    new_line = new_key_line()
    rotated = parse_keys(new_line + "\n" + _line_of(old))
    app = public_app(old)
    async with client_for(app) as client:
        new_token = seal(rotated, "https://example.com/new")
        old_token = seal(old, "https://example.com/old")
        assert (await get(client, f"/c/{new_token}")).status == 404
        set_keyring(app, rotated)
        assert (await get(client, f"/c/{new_token}")).status == 302
        assert (await get(client, f"/c/{old_token}")).status == 302


def _line_of(keyring: Keyring) -> str:
    key = keyring.keys[0]
    return f"{key.id_hex} {base64.urlsafe_b64encode(key.secret).rstrip(b'=').decode()}"


# --- the uniform 404 ----------------------------------------------------------------


async def test_every_failure_gets_the_same_404(keyring: Keyring) -> None:
    good = seal(keyring, "https://example.com/x")
    other = seal(parse_keys(new_key_line()), "https://example.com/x")
    # Version 2 tokens are read case-insensitively: the tampered character must differ
    # from the original in more than its case.
    flipped = good[:20] + ("b" if good[20].lower() == "a" else "a") + good[21:]
    paths = [
        "/c/" + good[:-1],  # truncated
        "/c/" + good[:-4],
        "/c/" + flipped,  # tampered
        "/c/" + good + "A",  # extended
        "/c/" + other,  # unknown key
        "/c/" + "A" * 200,  # forged
        "/c/x",
        "/c/",
        "/c/" + good + "/extra",
        "/c/" + good.replace("-", "+").replace("_", "/"),
        "/",
        "/metrics",
        "/api/stats",
        "/robots.txt",
        "/C/" + good,
        "/c/" + "A" * (MAX_TOKEN_CHARS + 4),
    ]
    async with client_for(public_app(keyring)) as client:
        for path in paths:
            resp = await get(client, path)
            if path.startswith("/c/" + good.replace("-", "+")) and path.endswith(good):
                continue  # identical when the token has neither - nor _
            assert_not_found(resp)
        # Other methods on a good token: the same 404 (not aiohttp's 405 page).
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            assert_not_found(await request(client, method, f"/c/{good}"))
        # A request line past aiohttp's limit is refused by its parser: still no Location.
        resp = await get(client, "/c/" + "A" * 9000)
        assert resp.status == 400
        assert "Location" not in resp.headers


async def test_non_http_and_control_character_targets_never_reach_location(
    keyring: Keyring,
) -> None:
    bad_urls = [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "ftp://example.com/x",
        "//evil.example/",
        " https://example.com/",
        "https://example.com/\r\nSet-Cookie: a=b",
        "https://example.com/\nX: y",
        "https://example.com/\r",
        "https://example.com/\x00",
        "https://example.com/\x7f",
        "https://example.com/\t",
        "https://example.com/ a",
        "https\n://example.com/",
    ]
    for url in bad_urls:
        # Our own minting refuses them ...
        with pytest.raises(TokenError):
            seal(keyring, url)
        # ... and the helper below really does mint (control: a good URL redirects).
    good_raw = raw_token(keyring, b"https://example.com/ok")
    async with client_for(public_app(keyring)) as client:
        resp = await get(client, f"/c/{good_raw}")
        assert resp.status == 302
        assert resp.headers["Location"] == "https://example.com/ok"
        # A token minted around seal() with such a URL is still refused by the app.
        for url in bad_urls:
            resp = await get(client, f"/c/{raw_token(keyring, url.encode())}")
            assert_not_found(resp)
        # Invalid UTF-8 in a sealed URL: refused, not a 500.
        bad_utf8 = raw_token(keyring, b"https://example.com/\xff")
        resp = await get(client, f"/c/{bad_utf8}")
        assert_not_found(resp)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "https://example.com/\r\nX: y",
        "https://example.com/\u0085\r",
        "mailto:a@example.com",
        "http:/example.com",
        "",
        "https://example.com/ x",
    ],
)
def test_location_for_refuses_unsafe_urls(url: str) -> None:
    assert location_for(url) is None


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=60),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
        st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=4),
    )
)
def test_has_forbidden_char_is_the_regex(text: str) -> None:
    # The isprintable() fast path must refuse exactly what [\x00-\x20\x7f] finds, for
    # ASCII and for any other text (NBSP, U+0085, lone surrogates are allowed through).
    assert has_forbidden_char(text) == (re.search(r"[\x00-\x20\x7f]", text) is not None)
    for c in ("\x00", "\t", "\n", "\r", " ", "\x1f", "\x7f"):
        assert has_forbidden_char(text + c) and has_forbidden_char(c + text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_location_for_never_emits_control_chars_or_other_schemes(tail: str) -> None:
    for url in (tail, "https://" + tail, "http://x/" + tail):
        got = location_for(url)
        if got is None:
            continue
        assert got.isascii()
        assert not any(ord(c) < 0x21 or ord(c) == 0x7F for c in got)
        assert got.lower().startswith(("http://", "https://"))
        if url.isascii():
            assert got == url


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    forged=st.lists(
        st.one_of(
            st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
            st.binary(min_size=1, max_size=600).map(
                lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
            ),
            st.text(
                alphabet=st.characters(codec="utf-8", exclude_characters="/?#"),
                min_size=1,
                max_size=40,
            ),
        ),
        min_size=1,
        max_size=8,
    ),
    flip=st.integers(min_value=0),
)
async def test_forged_tokens_never_get_a_location_or_a_5xx(
    keyring: Keyring, forged: list[str], flip: int
) -> None:
    good = seal(keyring, "https://example.com/target")
    pos = flip % len(good)
    # (A case change is no change: base36 is read case-insensitively.)
    mutated = good[:pos] + ("1" if good[pos] == "0" else "0") + good[pos + 1 :]
    async with client_for(public_app(keyring)) as client:
        for token in [*forged, mutated]:
            resp = await get(client, "/c/" + token)
            assert resp.status < 500
            assert "Location" not in resp.headers
            assert resp.status in (404, 400)


# --- recording and classification ---------------------------------------------------


@asynccontextmanager
async def recording_app(
    tmp_path: Path,
    keyring: Keyring,
    config: RedirectorConfig,
    clock: Callable[[], float],
    networks: str = "",
) -> AsyncIterator[tuple[TestClientT, Callable[[], Any]]]:
    """The public app with a real recorder writing to a real SQLite store.

    Yields the client and an async function that flushes and returns the stored rows.
    """
    store = open_store(f"sqlite:{tmp_path / 'clicks.sqlite3'}")
    await store.open()
    registry = CollectorRegistry()
    recorder = ClickRecorder(
        store, queue_size=1000, batch_size=50, flush_interval=0.01, registry=registry
    )
    await recorder.start()
    classifier = Classifier(
        agents=bundled_agents(),
        bot_seconds_after_send=config.bot_seconds_after_send,
        burst_window=config.burst_window,
        burst_links=config.burst_links,
        clock=clock,
        networks=NetworkMatcher(parse_networks(networks)),
    )
    app = create_app(config, keyring, recorder, registry=registry, classifier=classifier)

    async def rows() -> list[dict[str, Any]]:
        await recorder.stop(10)
        with sqlite3.connect(tmp_path / "clicks.sqlite3") as conn:
            conn.row_factory = sqlite3.Row
            found = [dict(r) for r in conn.execute("SELECT * FROM clicks ORDER BY time, rowid")]
        conn.close()
        return found

    try:
        async with client_for(app) as client:
            yield client, rows
    finally:
        await recorder.stop(10)
        await store.close()


async def test_each_redirect_records_one_click_with_its_link_data(
    tmp_path: Path, keyring: Keyring
) -> None:
    now = float(LONG_AGO + 86400)
    config = RedirectorConfig()
    async with recording_app(tmp_path, keyring, config, lambda: now) as (client, rows):
        t0 = seal(
            keyring, "https://example.com/a", queue_id="Q1", link_index=0, recipient="r@example.org"
        )
        t1 = seal(keyring, "https://example.com/b", queue_id="Q1", link_index=1)
        assert (await get(client, f"/c/{t0}")).status == 302
        assert (await get(client, f"/c/{t1}")).status == 302
        assert (await get(client, "/c/forged")).status == 404
        got = await rows()
    assert len(got) == 2
    first = got[0]
    assert first["queue_id"] == "Q1"
    assert first["link_index"] == 0
    assert first["url"] == "https://example.com/a"
    assert first["recipient"] == "r@example.org"
    assert first["client_ip"] == "127.0.0.0"  # default truncation to /24
    assert first["user_agent"] == BROWSER
    assert first["method"] == "GET"
    assert (first["classification"], first["reason"]) == ("human", None)
    assert got[1]["link_index"] == 1 and got[1]["recipient"] is None
    assert len({r["id"] for r in got}) == 2


async def test_each_classification_rule_through_the_app(tmp_path: Path, keyring: Keyring) -> None:
    clock_now = [float(LONG_AGO + 86400)]
    config = RedirectorConfig(ip_mode="full")
    async with recording_app(tmp_path, keyring, config, lambda: clock_now[0]) as (client, rows):

        def tok(link: int, queue_id: str, sent_at: int = LONG_AGO) -> str:
            return seal(
                keyring,
                f"https://example.com/{link}",
                queue_id=queue_id,
                link_index=link,
                sent_at=sent_at,
            )

        await request(client, "HEAD", f"/c/{tok(0, 'H')}")
        await get(client, f"/c/{tok(0, 'N')}", headers={}, skip_auto_headers=["User-Agent"])
        await get(client, f"/c/{tok(0, 'S')}", headers={"User-Agent": "curl/8.5.0"})
        await get(client, f"/c/{tok(0, 'T', sent_at=int(clock_now[0]) - 2)}")
        for link in range(3):
            clock_now[0] += 0.3
            await get(client, f"/c/{tok(link, 'B')}")
        got = await rows()
    verdicts = {(r["queue_id"], r["link_index"]): (r["classification"], r["reason"]) for r in got}
    assert verdicts == {
        ("H", 0): ("bot", "head"),
        ("N", 0): ("bot", "no-user-agent"),
        ("S", 0): ("bot", "scanner-agent"),
        ("T", 0): ("bot", "too-soon"),
        ("B", 0): ("human", None),
        ("B", 1): ("human", None),
        ("B", 2): ("bot", "burst"),
    }
    by_queue = {r["queue_id"]: r for r in got}
    assert by_queue["H"]["method"] == "HEAD"
    assert by_queue["N"]["user_agent"] is None
    assert by_queue["S"]["client_ip"] == "127.0.0.1"  # ip_mode full


async def test_scanner_network_matches_the_full_address_and_stores_it_truncated(
    tmp_path: Path, keyring: Keyring
) -> None:
    now = float(LONG_AGO + 86400)
    # A /28 inside a /24: only the full address can tell 203.0.113.5 (in) from .77 (out).
    config = RedirectorConfig(trusted_proxies=("127.0.0.0/8",))
    nets = "gateway 203.0.113.0/28"
    async with recording_app(tmp_path, keyring, config, lambda: now, nets) as (client, rows):
        for n, address in enumerate(("203.0.113.5", "203.0.113.77")):
            token = seal(keyring, "https://example.com/", queue_id=f"Q{n}")
            headers = {"User-Agent": BROWSER, "X-Forwarded-For": address}
            assert (await get(client, f"/c/{token}", headers=headers)).status == 302
        got = await rows()
    by_queue = {r["queue_id"]: r for r in got}
    assert (by_queue["Q0"]["classification"], by_queue["Q0"]["reason"]) == (
        "bot",
        "scanner-network",
    )
    assert by_queue["Q0"]["network"] == "gateway"
    assert json.loads(by_queue["Q0"]["evidence"]) == {
        "rule": "scanner-network",
        "network": "gateway",
    }
    assert (by_queue["Q1"]["classification"], by_queue["Q1"]["network"]) == ("human", None)
    # The stored address stays truncated; the keyed hashes differ per address, not per /24.
    assert by_queue["Q0"]["client_ip"] == by_queue["Q1"]["client_ip"] == "203.0.113.0"
    assert by_queue["Q0"]["client_key"] != by_queue["Q1"]["client_key"]
    assert by_queue["Q0"]["net_key"] == by_queue["Q1"]["net_key"]
    assert "203.0.113" not in (by_queue["Q0"]["client_key"] + by_queue["Q0"]["net_key"])


async def test_the_trap_token_is_a_bot_at_once_and_redirects_like_any_link(
    tmp_path: Path, keyring: Keyring
) -> None:
    now = float(LONG_AGO + 86400)
    async with recording_app(tmp_path, keyring, RedirectorConfig(), lambda: now) as (
        client,
        rows,
    ):
        token = seal(keyring, "https://example.com/", queue_id="TRAP", link_index=3, trap=True)
        assert keyring.open(token, TEST_HOST).trap
        resp = await get(client, f"/c/{token}")
        assert resp.status == 302
        assert resp.headers["Location"] == "https://example.com/"
        got = await rows()
    assert [(r["classification"], r["reason"], r["trap"]) for r in got] == [("bot", "trap", 1)]


async def test_forwarded_for_only_from_trusted_proxies(tmp_path: Path, keyring: Keyring) -> None:
    now = float(LONG_AGO + 86400)
    config = RedirectorConfig(ip_mode="full", trusted_proxies=("127.0.0.0/8", "10.0.0.0/8"))
    async with recording_app(tmp_path, keyring, config, lambda: now) as (client, rows):
        token = seal(keyring, "https://example.com/", queue_id="X")
        xff = "203.0.113.99, 198.51.100.7, 10.1.2.3"
        await get(client, f"/c/{token}", headers={"User-Agent": BROWSER, "X-Forwarded-For": xff})
        got = await rows()
    # The client-written 203.0.113.99 is ignored: rightmost untrusted hop wins.
    assert [r["client_ip"] for r in got] == ["198.51.100.7"]


async def test_forwarded_for_is_ignored_without_trusted_proxies(
    tmp_path: Path, keyring: Keyring
) -> None:
    now = float(LONG_AGO + 86400)
    config = RedirectorConfig(ip_mode="none")
    async with recording_app(tmp_path, keyring, config, lambda: now) as (client, rows):
        token = seal(keyring, "https://example.com/", queue_id="X")
        await get(
            client,
            f"/c/{token}",
            headers={"User-Agent": BROWSER, "X-Forwarded-For": "198.51.100.7"},
        )
        got = await rows()
    assert [r["client_ip"] for r in got] == [None]


# --- client addresses (pure) -------------------------------------------------------


def policy(**kwargs: Any) -> ClientIpPolicy:
    return ClientIpPolicy.from_config(dataclasses.replace(RedirectorConfig(), **kwargs))


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("192.0.2.1", ["198.51.100.7"], "192.0.2.1"),  # peer not trusted: header ignored
        ("10.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.1", ["1.1.1.1, 198.51.100.7, 10.0.0.2"], "198.51.100.7"),
        ("10.0.0.1", ["1.1.1.1", "198.51.100.7"], "198.51.100.7"),  # several headers
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # all trusted: the leftmost
        ("10.0.0.1", ["garbage"], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.7:4711"], "198.51.100.7"),
        ("10.0.0.1", ["[2001:db8::7]:443"], "2001:db8::7"),
        ("::ffff:10.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        ("fd00::1", ["2001:db8::9"], "2001:db8::9"),
        (None, ["198.51.100.7"], None),
        ("not-an-ip", ["198.51.100.7"], None),
    ],
)
def test_client_address(peer: str | None, xff: list[str], expected: str | None) -> None:
    p = policy(trusted_proxies=("10.0.0.0/8", "fd00::/8"))
    got = p.client_address(peer, xff)
    assert (str(got) if got is not None else None) == expected
    # describe() (the memoised form the redirect path uses) agrees, asked twice.
    for _ in range(2):
        assert p.describe(peer, tuple(xff)) == (expected, p.stored(got))


def test_describe_memo_is_bounded_and_keyed_by_forwarded_for() -> None:
    p = policy(trusted_proxies=("10.0.0.0/8",), ip_mode="full")
    assert p.describe("10.0.0.1", ("198.51.100.7",)) == ("198.51.100.7", "198.51.100.7")
    assert p.describe("10.0.0.1", ("198.51.100.8",)) == ("198.51.100.8", "198.51.100.8")
    assert p.describe("10.0.0.1") == ("10.0.0.1", "10.0.0.1")
    for n in range(10_000):  # a client varying its header cannot grow memory unbounded
        hop = f"198.51.{n // 256 % 256}.{n % 256}"
        assert p.describe("10.0.0.1", (hop,)) == (hop, hop)
    assert len(p._memo) <= 4096
    assert p == policy(trusted_proxies=("10.0.0.0/8",), ip_mode="full")  # memo not compared


@pytest.mark.parametrize(
    ("mode", "v4", "v6", "address", "stored"),
    [
        ("truncate", 24, 48, "198.51.100.77", "198.51.100.0"),
        ("truncate", 16, 48, "198.51.100.77", "198.51.0.0"),
        ("truncate", 24, 48, "2001:db8:abcd:1234::1", "2001:db8:abcd::"),
        ("truncate", 24, 64, "2001:db8:abcd:1234::1", "2001:db8:abcd:1234::"),
        ("truncate", 32, 128, "198.51.100.77", "198.51.100.77"),
        ("full", 24, 48, "2001:db8:abcd:1234::1", "2001:db8:abcd:1234::1"),
        ("none", 24, 48, "198.51.100.77", None),
    ],
)
def test_stored_address_follows_ip_mode(
    mode: str, v4: int, v6: int, address: str, stored: str | None
) -> None:
    p = policy(ip_mode=mode, ipv4_prefix=v4, ipv6_prefix=v6)
    assert p.stored(parse_ip(address)) == stored
    assert p.stored(None) is None
    assert p.describe(address) == (str(parse_ip(address)), stored)
    assert p.describe(None) == (None, None)


# --- healthz and admin --------------------------------------------------------------


async def test_healthz_identifies_the_redirector_without_a_store(keyring: Keyring) -> None:
    async with client_for(public_app(keyring)) as client:
        resp = await get(client, "/healthz")
        head = await request(client, "HEAD", "/healthz")
        doc = resp.json()
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert head.status == 200 and head.body == b""
    assert doc == {
        "service": "clickrelay-redirector",
        "version": __version__,
        "key_ids": list(keyring.key_ids),
        "store": {"state": "disabled"},
    }


async def test_healthz_is_200_with_the_store_down(tmp_path: Path, keyring: Keyring) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    store = open_store(f"sqlite:{blocker / 'clicks.sqlite3'}")
    recorder = ClickRecorder(
        store, queue_size=10, batch_size=5, flush_interval=0.01, registry=CollectorRegistry()
    )
    await recorder.start()
    try:
        async with client_for(public_app(keyring, recorder=recorder)) as client:
            deadline = time.monotonic() + 10
            while recorder.state == "starting" and time.monotonic() < deadline:
                resp = await get(client, "/healthz")
            resp = await get(client, "/healthz")
            doc = resp.json()
            assert resp.status == 200
            assert doc["store"]["state"] == "down"
            # Redirects still work, and the click waits in the queue.
            token = seal(keyring, "https://example.com/")
            assert (await get(client, f"/c/{token}")).status == 302
            # The queue is shown on the admin listener only.
            assert set((await get(client, "/healthz")).json()["store"]) == {"state"}
            admin = create_admin_app(recorder, registry=CollectorRegistry())
            async with client_for(admin) as admin_client:
                doc = (await get(admin_client, "/api/health")).json()
            assert doc["store"] == {"state": "down", "queued": 1, "dropped": 0}
    finally:
        await recorder.stop(0.1)
        await store.close()


async def test_admin_metrics_count_redirects_and_clicks(keyring: Keyring) -> None:
    registry = CollectorRegistry()
    config = RedirectorConfig()
    public = create_app(config, keyring, None, registry=registry)
    admin = create_admin_app(None, registry=registry)
    async with client_for(public) as client, client_for(admin) as admin_client:
        token = seal(keyring, "https://example.com/")
        await get(client, f"/c/{token}")
        await get(client, f"/c/{token}", headers={"User-Agent": "curl/8"})
        await get(client, "/c/forged")
        resp = await get(admin_client, "/metrics")
        text = resp.body.decode()
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert 'clickrelay_redirects_total{result="302"} 2.0' in text
        assert 'clickrelay_redirects_total{result="404"} 1.0' in text
        assert 'clickrelay_clicks_total{classification="human",reason="none"} 1.0' in text
        assert 'clickrelay_clicks_total{classification="bot",reason="scanner-agent"} 1.0' in text
        # The public listener does not serve the admin endpoints.
        assert (await get(client, "/metrics")).status == 404
        # Without a store, stats are unavailable (not a crash).
        resp = await get(admin_client, "/api/stats")
        assert resp.status == 503
        assert "error" in resp.json()


async def test_admin_api_stats_returns_the_store_document(tmp_path: Path, keyring: Keyring) -> None:
    now = float(LONG_AGO + 86400)
    config = RedirectorConfig()
    async with recording_app(tmp_path, keyring, config, lambda: now) as (client, rows):
        for i in range(3):
            token = seal(
                keyring,
                f"https://example.com/{i}",
                queue_id="M1",
                link_index=i % 2,
                recipient=f"r{i}@example.org",
            )
            await get(client, f"/c/{token}")
        await get(
            client,
            f"/c/{seal(keyring, 'https://example.com/', queue_id='M2')}",
            headers={"User-Agent": "curl/8"},
        )
        await rows()  # flushed
        store = open_store(f"sqlite:{tmp_path / 'clicks.sqlite3'}")
        await store.open()
        recorder = ClickRecorder(store, registry=CollectorRegistry())
        admin = create_admin_app(recorder, registry=CollectorRegistry())
        try:
            async with client_for(admin) as admin_client:
                resp = await get(admin_client, "/api/stats")
                doc = resp.json()
                assert resp.status == 200
                assert doc["totals"]["human_clicks"] == 3
                assert doc["totals"]["bot_clicks"] == 1
                assert doc["totals"]["messages"] == 2
                assert doc == await store.stats(None)
                assert doc["totals"]["bot_reasons"] == {"scanner-agent": 1}
                assert doc["totals"]["unsettled_clicks"] == 4
                # Nothing is settled yet: consumers of settled clicks see none.
                resp = await get(admin_client, "/api/stats", params={"settled": "1"})
                settled = resp.json()["totals"]
                assert (settled["settled_only"], settled["human_clicks"]) == (True, 0)
                assert settled["bot_clicks"] == 0
                # Clicks are timestamped from the (fake) clock, a day after LONG_AGO.
                resp = await get(admin_client, "/api/stats", params={"since": "2099-01-01"})
                assert resp.json()["totals"]["human_clicks"] == 0
                resp = await get(admin_client, "/api/stats", params={"since": "not a time"})
                assert resp.status == 400
                assert "error" in resp.json()
        finally:
            await store.close()
