"""Hostile HTTP against the real redirector: never a redirect we did not mint, never a
5xx, never a hang.

The redirector (``RedirectorService`` with a real SQLite store) runs on its own loop in a
thread; attacks are sent as raw bytes over loopback sockets or with ``http.client``.
"""

from __future__ import annotations

import http.client
import random
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redirector.tokens import Keyring, load_keyring, new_key_line
from tests.reliability.harness import Figures, need, scale
from tests.reliability.servers import forge_token, get, raw_http
from tests.support.config import write_redirector_config
from tests.support.net import free_port
from tests.support.processes import ClickrelayProcess

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

MINTED_URLS = (
    "https://example.com/",
    "https://example.com/a?b=c&d=e#frag",
    "http://例え.テスト/パス?q=値",
    "https://example.com/%7euser/%2e%2e/x%zz",
    "https://example.com/" + "q" * 1500,
)


class Redirector:
    """``clickrelay redirector`` as a subprocess: the hypothesis client and the server
    then run on separate cores instead of sharing one interpreter lock."""

    def __init__(self, proc: ClickrelayProcess, port: int, keyring: Keyring) -> None:
        self.proc = proc
        self.port = port
        self.keyring = keyring
        self.tokens = {
            keyring.seal(url, host="127.0.0.1", queue_id=f"Q{i}", link_index=i): url
            for i, url in enumerate(MINTED_URLS)
        }

    @property
    def minted_urls(self) -> set[str]:
        return set(self.tokens.values())


@pytest.fixture(scope="module")
def redirector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redirector]:
    need("redirector.service", "redirector (RedirectorService)")
    need("clickrelay.supervisor", "clickrelay redirector command")
    tmp: Path = tmp_path_factory.mktemp("redirector")
    key_file = tmp / "keys"
    key_file.write_text(new_key_line() + "\n")
    key_file.chmod(0o600)
    port = free_port()
    cfg = write_redirector_config(tmp, key_file, port=port)
    with ClickrelayProcess(["redirector", "-c", cfg], cwd=tmp) as proc:
        proc.wait_ready(60)
        yield Redirector(proc, port, load_keyring(key_file))
        assert proc.stop(60) == 0, proc.stderr()[-2000:]


def check_reply(red: Redirector, status: int, location: list[bytes]) -> None:
    """The two invariants of every answer."""
    assert status < 500, f"5xx from the redirector: {status}"
    if status in (301, 302, 303, 307, 308) or location:
        assert status == 302, status
        assert len(location) == 1
        value = location[0]
        assert b"\r" not in value and b"\n" not in value
        # Location carries the minted URL (non-ASCII percent-/puny-encoded by location.py);
        # it must be the encoding of one of the URLs we minted.
        from redirector.location import location_for

        allowed = {location_for(u) for u in red.minted_urls}
        assert value.decode("ascii") in allowed, f"redirect we did not mint: {value!r}"


# --- forged and mutated tokens (hypothesis) ------------------------------------------------

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


@st.composite
def mutated_token(draw: st.DrawFn, tokens: list[str]) -> str:
    """One of ``tokens`` with 1-4 random edits (:func:`mutate`, driven by hypothesis)."""
    token = draw(st.sampled_from(tokens))
    return mutate(draw(st.randoms(use_true_random=False)), token)


def token_strategy(tokens: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        mutated_token(tokens),
        st.text(ALPHABET, min_size=0, max_size=400),
        st.text(min_size=0, max_size=200),  # any unicode, percent-encoded on the wire
    )


def mutate(rnd: random.Random, token: str) -> str:
    """1-4 random edits of ``token``: flip, delete, insert, truncate, append or swap."""
    for _ in range(rnd.randint(1, 4)):
        op = rnd.choice(["flip", "delete", "insert", "truncate", "append", "swap"])
        i = rnd.randrange(max(len(token), 1))
        c = rnd.choice(ALPHABET)
        if op == "flip" and token:
            token = token[:i] + c + token[i + 1 :]
        elif op == "delete":
            token = token[:i] + token[i + 1 :]
        elif op == "insert":
            token = token[:i] + c + token[i:]
        elif op == "truncate":
            token = token[:i]
        elif op == "append":
            token += "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, 20)))
        elif op == "swap" and len(token) > 1:
            j = rnd.randrange(len(token))
            chars = list(token)
            chars[i], chars[j] = chars[j], chars[i]
            token = "".join(chars)
    return token


def test_forged_and_mutated_tokens_never_redirect(
    redirector: Redirector, figures: list[Figures]
) -> None:
    """2,000 cases in the quick run, 100,000 in the full run.

    Each hypothesis example is one drawn token plus (full run) 9 more mutations made by a
    hypothesis-seeded ``Random``: hypothesis' own generation costs ~2 ms per example, so
    100,000 plain examples would take most of the full run's budget.
    """
    tokens = list(redirector.tokens)
    examples = scale(2_000, 10_000)
    batch = scale(1, 10)
    conn = http.client.HTTPConnection("127.0.0.1", redirector.port, timeout=30)
    seen = {"requests": 0, "302": 0, "404": 0, "other": 0}

    def one(token: str, method: str) -> None:
        nonlocal conn
        path = "/c/" + urllib.parse.quote(token, safe="")
        try:
            conn.request(method, path)
            resp = conn.getresponse()
        except (http.client.HTTPException, OSError):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", redirector.port, timeout=30)
            conn.request(method, path)
            resp = conn.getresponse()
        resp.read()
        seen["requests"] += 1
        key = str(resp.status) if resp.status in (302, 404) else "other"
        seen[key] += 1
        location = resp.getheader("Location")
        check_reply(redirector, resp.status, [location.encode("latin-1")] if location else [])
        if resp.status == 302:
            # Only a minted token redirects. A version 2 token (base36 after its "k")
            # reads the same in either case, so a case change of one is the same token.
            v2 = token[:1] in ("k", "K")
            assert (token.lower() if v2 else token) in redirector.tokens

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        token=token_strategy(tokens),
        method=st.sampled_from(["GET", "HEAD"]),
        rnd=st.randoms(use_true_random=False),
    )
    def probe(token: str, method: str, rnd: random.Random) -> None:
        one(token, method)
        for _ in range(batch - 1):
            one(mutate(rnd, rnd.choice(tokens)), method)

    try:
        probe()
    finally:
        conn.close()
    assert seen["requests"] >= min(examples * batch, 100)
    figures.append(
        Figures(
            "http: forged/mutated tokens",
            load=f"{seen['requests']} requests (hypothesis)",
            faults="forged, truncated, mutated, random tokens",
            notes=f"302 (unchanged minted tokens only)={seen['302']} 404={seen['404']} "
            f"other={seen['other']}; 5xx=0; foreign redirects=0",
        )
    )


# --- what a key holder's bug could seal: CR/LF, control chars, non-http schemes -------------

UNSAFE_SEALED = [
    b"http://example.com/\r\nSet-Cookie: session=evil",
    b"http://example.com/\nLocation: http://evil.example",
    b"https://example.com/a\rb",
    b"https://example.com/\x00nul",
    b"https://exa mple.com/",
    b"javascript:alert(document.cookie)",
    b"JAVASCRIPT:alert(1)",
    b"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    b"vbscript:msgbox(1)",
    b"ftp://example.com/file",
    b"//evil.example/path",
    b"\thttp://evil.example/",
    b" https://evil.example/",
    b"http:evil.example",
    b"mailto:someone@example.com",
    b"file:///etc/passwd",
    b"https://example.com/\x7f",
    b"https://example.com/\xe2\x80\xa8line-separator",
    b"\xff\xfe not utf-8",
]


def test_unsafe_urls_sealed_with_our_key_are_refused(
    redirector: Redirector, figures: list[Figures]
) -> None:
    refused = 0
    for url in UNSAFE_SEALED:
        token = forge_token(redirector.keyring, url)
        for method in (b"GET", b"HEAD"):
            reply = raw_http(
                redirector.port,
                method
                + b" /c/"
                + token.encode()
                + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            assert reply is not None
            assert b"Set-Cookie" not in reply.head and b"evil" not in reply.head
            location = reply.header("Location")
            if url == b"https://example.com/\xe2\x80\xa8line-separator":
                # U+2028 is not a control char: a legit URL; if followed it is %-encoded.
                if location:
                    assert location == [b"https://example.com/%E2%80%A8line-separator"]
                    continue
            assert reply.status == 404, (url, reply.status)
            assert location == []
            refused += 1
    figures.append(
        Figures(
            "http: unsafe URLs sealed with our key",
            load=f"{len(UNSAFE_SEALED)} URLs x GET/HEAD",
            faults="CR/LF, NUL, space, javascript:, data:, ftp:, //host, file:",
            notes=f"refused with 404={refused}, Location headers=0",
        )
    )


# --- path traversal, odd request lines, oversized input -------------------------------------


def traversal_requests(token: str) -> list[bytes]:
    t = token.encode()
    return [
        get("/c/../../etc/passwd"),
        get("/c/%2e%2e/%2e%2e/etc/passwd"),
        get("/c/..%2f..%2fetc%2fpasswd"),
        get("/../../../../etc/passwd"),
        get(b"/c/" + t + b"/../../healthz"),
        get(b"/c/" + t + b"/.."),
        get(b"/c//" + t),
        get(b"/c/" + t + b"%00"),
        get(b"/c/" + t + b"%0d%0aSet-Cookie:%20x=1"),
        get(b"/c/" + t + b"?next=http://evil.example"),
        get(b"/x/../c/" + t[:-1]),
        get("/metrics"),
        get("/api/stats"),
        get("/c/"),
        get("/c"),
        get("//evil.example/c/" + token),
        b"GET http://evil.example/c/" + t[:-2] + b" HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        b"GET /c/" + t[:10] + b" HTTP/1.0\r\n\r\n",
        b"GET /c/" + t[:-1] + b" HTTP/9.9\r\nHost: x\r\n\r\n",
        b"POST /c/" + t + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"DELETE /c/" + t + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /c/" + t[:-1] + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET /c/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /c/" + t + b" HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
        b"GET /c/" + t + b" HTTP/1.1\nHost: x\n\n",
    ]


def test_path_traversal_and_odd_requests(redirector: Redirector, figures: list[Figures]) -> None:
    token = next(iter(redirector.tokens))
    statuses: list[int] = []
    for request in traversal_requests(token):
        reply = raw_http(redirector.port, request)
        if reply is None:  # the server may close on a malformed request: fine, not a 5xx
            statuses.append(0)
            continue
        statuses.append(reply.status)
        check_reply(redirector, reply.status, reply.header("Location"))
        if request.startswith((b"POST", b"DELETE")):
            assert reply.status != 302
    # The admin endpoints never answer on the public listener.
    for path in ("/metrics", "/api/stats"):
        reply = raw_http(redirector.port, get(path))
        assert reply is not None and reply.status == 404
    figures.append(
        Figures(
            "http: traversal / odd request lines",
            load=f"{len(statuses)} requests",
            faults="../, %2e%2e, NUL, CRLF in path, absolute-form, bad methods, TE+CL",
            notes=f"statuses: {sorted(set(statuses))} (0 = closed without reply); 5xx=0",
        )
    )


@pytest.mark.parametrize(
    ("label", "size"),
    [
        ("url-64k", 64 * 1024),
        ("url-1m", 1024 * 1024),
        ("header-64k", 64 * 1024),
        ("headers-2000", 0),
    ],
)
def test_oversized_urls_and_headers(redirector: Redirector, label: str, size: int) -> None:
    token = next(iter(redirector.tokens))
    if label.startswith("url"):
        request = get("/c/" + token + "A" * size)
    elif label == "header-64k":
        request = get("/c/" + token, b"X-Big: " + b"b" * size + b"\r\n")
    else:
        request = get("/c/" + token, b"".join(b"X-H%d: v\r\n" % i for i in range(2000)))
    try:
        reply = raw_http(redirector.port, request)
    except (ConnectionResetError, BrokenPipeError):
        reply = None  # refused mid-upload: acceptable, it is not a 5xx and not a redirect
    if reply is not None:
        check_reply(redirector, reply.status, reply.header("Location"))
        if label.startswith("url"):
            assert reply.status != 302
    # And the server is still fine for the next client.
    ok = raw_http(redirector.port, get("/c/" + token))
    assert ok is not None and ok.status == 302


def test_slow_clients_do_not_block_others(redirector: Redirector, figures: list[Figures]) -> None:
    """Slowloris: many half-sent requests stay open while real clicks are answered."""
    token, url = next(iter(redirector.tokens.items()))
    slow: list[socket.socket] = []
    count = scale(100, 400)
    served = 0
    try:
        for i in range(count):
            sock = socket.create_connection(("127.0.0.1", redirector.port), timeout=10)
            slow.append(sock)
            # Partial request line / headers, never finished.
            sock.sendall(
                b"GET /c/" + token.encode()[: i % 40] if i % 2 else b"GET / HTTP/1.1\r\nX-"
            )
        for _ in range(scale(20, 200)):
            reply = raw_http(redirector.port, get("/c/" + token), timeout=10)
            assert reply is not None and reply.status == 302
            check_reply(redirector, reply.status, reply.header("Location"))
            served += 1
        # Trickle one more byte on each slow socket: they are still open (not our concern
        # whether the server dropped them), and a new client still gets through.
        for sock in slow:
            try:
                sock.sendall(b"a")
            except OSError:
                pass
        started = time.monotonic()
        reply = raw_http(redirector.port, get("/c/" + token), timeout=10)
        assert reply is not None and reply.status == 302
        elapsed = time.monotonic() - started
    finally:
        for sock in slow:
            sock.close()
    figures.append(
        Figures(
            "http: slowloris",
            load=f"{count} stalled connections + {served} real clicks",
            faults="partial request lines/headers held open",
            clicks_served=served + 1,
            notes=f"every real click answered 302 (last one in {elapsed * 1000:.0f} ms)",
        )
    )
    assert url in redirector.minted_urls
