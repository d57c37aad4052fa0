"""Hostile input at the SMTP proxy: MIME torture and the corpus end to end, and protocol
attacks with raw sockets. The proxy relays to an in-process recording sink
(``tests/support/smtp_sink.py``); what the sink got is the evidence.

Invariants: the proxy never crashes or hangs (pytest-timeout per test, bounded reads),
relays either the original bytes or a valid rewrite (links decode to the original's URLs),
never lets a second message be smuggled, never relays for a stranger.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from redirector.tokens import load_keyring
from tests.reliability import torture
from tests.reliability.checks import check_relayed
from tests.reliability.harness import (
    FULL,
    UNDER_LOAD,
    Figures,
    RawSmtp,
    dot_stuff,
    make_message,
    need,
    raw_send,
    scale,
)
from tests.support.config import proxy_config
from tests.support.corpus import corpus_eml_files
from tests.support.proxy_helpers import running_proxy

pytestmark = [pytest.mark.reliability]


@contextlib.asynccontextmanager
async def proxy_and_sink(
    tmp_path: Path, key_file: Path, sink_options: dict[str, Any] | None = None, **proxy: Any
) -> AsyncIterator[tuple[Any, Any]]:
    sink_mod = need("tests.support.smtp_sink", "recording sink (tests/support/smtp_sink.py)")
    sink = sink_mod.SmtpSink(**(sink_options or {"data_size_limit": None}))
    await sink.start()
    try:
        config = proxy_config(tmp_path, sink.url, key_file, **{**UNDER_LOAD, **proxy})
        async with running_proxy(config, load_keyring(key_file)) as service:
            yield service, sink
    finally:
        await sink.stop()


def as_received(data: bytes) -> bytes:
    """What an SMTP server hands on after un-dot-stuffing what :func:`dot_stuff` sent."""
    return data if data.endswith(b"\r\n") else data + b"\r\n"


class StallProbe:
    """Another client sending NOOPs while a big message is processed: how long did the
    proxy keep everyone else waiting? (A figure for the report, not an assertion.)"""

    def __init__(self, port: int) -> None:
        self.port = port
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None
        self._client: RawSmtp | None = None

    async def start(self) -> None:
        self._client = await RawSmtp.connect(self.port)
        await self._client.reply()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._client is not None
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._client.cmd("NOOP", 600)
            self.worst = max(self.worst, loop.time() - started)
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._client is not None:
            await self._client.close()


# --- MIME torture and the corpus, end to end -----------------------------------------------------


@pytest.mark.timeout(900 if FULL else 180)
@pytest.mark.parametrize("case", sorted(torture.CASES))
async def test_torture_case_through_proxy(
    tmp_path: Path, key_file: Path, figures: list[Figures], case: str
) -> None:
    keyring = load_keyring(key_file)
    original = torture.CASES[case]()
    async with proxy_and_sink(tmp_path, key_file) as (proxy, sink):
        stall = StallProbe(proxy.port)
        await stall.start()
        try:
            code, text = await raw_send(proxy.port, original, within=scale(120, 600))
        finally:
            await stall.stop()
        # The proxy is still serving: a normal message goes through afterwards.
        ok_code, _ = await raw_send(proxy.port, make_message("<after@torture>"))
        messages = list(sink.messages)
    assert ok_code == 250
    relayed = [m for m in messages if b"<after@torture>" not in m.data]
    if code == 250:
        assert len(relayed) == 1
        outcome = check_relayed(relayed[0].data, as_received(original), keyring)
    else:
        assert 400 <= code < 600, (code, text)
        assert relayed == []
        outcome = f"refused {code}"
    figures.append(
        Figures(
            f"mime torture (proxy): {case}",
            load=f"{len(original):,} bytes",
            faults=case,
            sent=1,
            delivered=1 if code == 250 else 0,
            refused=0 if code == 250 else 1,
            lost=0,
            duplicated=max(len(relayed) - 1, 0),
            notes=f"{outcome}: {text.splitlines()[-1][:80] if text else ''}; "
            f"longest NOOP wait of another client meanwhile {stall.worst * 1000:.0f} ms",
        )
    )


@pytest.mark.timeout(900 if FULL else 240)
async def test_corpus_through_proxy(
    corpus: Path, tmp_path: Path, key_file: Path, figures: list[Figures]
) -> None:
    keyring = load_keyring(key_file)
    files = corpus_eml_files()
    assert files
    outcomes: dict[str, int] = {}
    async with proxy_and_sink(tmp_path, key_file) as (proxy, sink):
        for path in files:
            # A real client sends CRLF lines (aiosmtplib and smtplib normalise).
            data = re.sub(rb"\r\n|\r|\n", b"\r\n", path.read_bytes())
            before = len(sink.messages)
            code, text = await raw_send(proxy.port, data)
            assert code == 250, (path.name, code, text)
            assert len(sink.messages) == before + 1
            outcome = check_relayed(sink.messages[-1].data, as_received(data), keyring)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    figures.append(
        Figures(
            "mime corpus (proxy, end to end)",
            load=f"{len(files)} corpus messages",
            sent=len(files),
            delivered=len(files),
            refused=0,
            lost=0,
            duplicated=0,
            notes=f"outcomes {outcomes}",
        )
    )


# --- SMTP smuggling and pipelining ----------------------------------------------------------

SMUGGLING = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\n", b"\n.\r"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bare_newline", ["reject", "normalize"])
async def test_smuggling_never_yields_a_second_message(
    tmp_path: Path, key_file: Path, figures: list[Figures], bare_newline: str
) -> None:
    results: list[int] = []
    async with proxy_and_sink(tmp_path, key_file, bare_newline=bare_newline) as (proxy, sink):
        for vector in SMUGGLING:
            client = await RawSmtp.connect(proxy.port)
            try:
                await client.reply()
                await client.cmd("EHLO attacker.test")
                assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
                assert (await client.cmd("RCPT TO:<victim@example.net>"))[0] == 250
                assert (await client.cmd("DATA"))[0] == 354
                smuggled = (
                    b"Subject: first\r\n\r\nbody"
                    + vector
                    + b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<smuggled@example.net>\r\n"
                    b"DATA\r\nSubject: SMUGGLED\r\n\r\nevil\r\n.\r\n"
                )
                await client.send(smuggled)
                code, _ = await client.reply()
                results.append(code)
                # Whatever follows must be parsed as commands of this connection only.
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await client.cmd("QUIT", 10)
            finally:
                await client.close()
        delivered = list(sink.messages)
    rcpts = [r for m in delivered for r in m.rcpt_tos]
    assert "smuggled@example.net" not in rcpts
    assert not any(
        b"Subject: SMUGGLED" in m.data and b"Subject: first" not in m.data for m in delivered
    )
    assert len(delivered) <= len(SMUGGLING)
    if bare_newline == "reject":
        assert all(code == 550 for code in results), results
    figures.append(
        Figures(
            f"smtp smuggling ({bare_newline})",
            load=f"{len(SMUGGLING)} vectors",
            faults="bare LF/CR end-of-data sequences",
            sent=len(SMUGGLING),
            delivered=len(delivered),
            refused=sum(1 for c in results if c != 250),
            notes=f"replies {results}; smuggled second messages=0",
        )
    )


@pytest.mark.timeout(120)
async def test_pipelining_abuse(tmp_path: Path, key_file: Path) -> None:
    # 250 commands without a message in one write: above the default max_junk_commands
    # (test_proxy_limits.py shows that limit; here pipelining is what is tested).
    async with proxy_and_sink(tmp_path, key_file, max_junk_commands=1000) as (proxy, sink):
        client = await RawSmtp.connect(proxy.port)
        try:
            await client.reply()
            await client.cmd("EHLO pipe.test")
            one = dot_stuff(make_message("<pipe-1@x>")) + b".\r\n"
            two = dot_stuff(make_message("<pipe-2@x>")) + b".\r\n"
            # Two whole transactions and a NOOP storm in one write (RFC 2920 allows the
            # client to pipeline; DATA's content must still wait for 354 on the server).
            await client.send(
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"
                + one
                + b"RSET\r\n" * 50
                + b"MAIL FROM:<a@example.com>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"
                + two
                + b"NOOP\r\n" * 200
            )
            codes = [(await client.reply())[0] for _ in range(3 + 1 + 50 + 3 + 1 + 200)]
            # Out-of-order: DATA without RCPT, RCPT without MAIL, garbage in between.
            await client.send(
                b"DATA\r\nRCPT TO:<x@example.net>\r\n\x00\x01\xff junk\r\nMAIL FROM:<a@b>\r\n"
                b"MAIL FROM:<again@b>\r\nDATA\r\nRSET\r\n"
            )
            codes2 = [(await client.reply())[0] for _ in range(7)]
            quit_code = (await client.cmd("QUIT"))[0]
        finally:
            await client.close()
        messages = list(sink.messages)
    assert codes[:3] == [250, 250, 354] and codes[3] == 250
    assert set(codes[4:54]) == {250}
    assert codes[54:57] == [250, 250, 354] and codes[57] == 250
    assert set(codes[58:]) == {250}
    assert codes2[0] == 503 and codes2[1] == 503 and codes2[2] >= 500
    assert codes2[3] == 250 and codes2[4] == 503 and codes2[5] == 503 and codes2[6] == 250
    assert quit_code == 221
    assert sorted(m.rcpt_tos[0] for m in messages) == ["b@example.net", "c@example.net"]


@pytest.mark.timeout(120)
async def test_starttls_command_injection_is_discarded(tmp_path: Path, key_file: Path) -> None:
    from tests.support.preflight_fixtures import TestCA

    ca = TestCA(tmp_path, ["127.0.0.1", "localhost"])
    async with proxy_and_sink(
        tmp_path, key_file, tls_cert=str(ca.cert_file), tls_key=str(ca.key_file)
    ) as (proxy, sink):
        client = await RawSmtp.connect(proxy.port)
        try:
            await client.reply()
            code, text = await client.cmd("EHLO inject.test")
            assert "STARTTLS" in text
            # The injection: commands after STARTTLS in the same packet, in clear text.
            await client.send(
                b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\nRCPT TO:<inj@example.net>\r\n"
                b"DATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n"
            )
            code, _ = await client.reply()
            assert code == 220
            context = ssl.create_default_context(cafile=str(ca.ca_file))
            await client.writer.start_tls(context, server_hostname="127.0.0.1")
            # The first reply after the handshake answers OUR next command, not an injected one.
            code, text = await client.cmd("EHLO inject.test")
            assert code == 250 and "STARTTLS" not in text
            code, _ = await client.cmd("RCPT TO:<after@example.net>")
            assert code == 503  # no MAIL in this session: the injected MAIL was discarded
            code, _ = await client.cmd("QUIT")
        finally:
            await client.close()
        messages = list(sink.messages)
    assert messages == []


@pytest.mark.timeout(120)
async def test_over_long_lines(tmp_path: Path, key_file: Path) -> None:
    async with proxy_and_sink(tmp_path, key_file) as (proxy, sink):
        client = await RawSmtp.connect(proxy.port)
        try:
            await client.reply()
            await client.cmd("EHLO long.test")
            code, _ = await client.cmd(b"MAIL FROM:<" + b"a" * 100_000 + b"@example.com>")
            assert code >= 500
            code, _ = await client.cmd(b"NOOP " + b"n" * 5000)
            assert code >= 500
            # The connection still works for an honest transaction.
            assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
            assert (await client.cmd("RCPT TO:<b@example.net>"))[0] == 250
            assert (await client.cmd("DATA"))[0] == 354
            # An over-long line inside DATA (> 998 octets): refused or relayed, never a crash.
            await client.send(b"Subject: long\r\n\r\n" + b"x" * 200_000 + b"\r\n.\r\n")
            code, _ = await client.reply()
            assert code == 250 or 400 <= code < 600, code
            assert (await client.cmd("QUIT"))[0] == 221
        finally:
            await client.close()
        messages = list(sink.messages)
    # Relayed whole exactly when the client was told 250; otherwise not at all.
    if code == 250:
        (message,) = messages
        assert b"x" * 200_000 in message.data
    else:
        assert messages == []


@pytest.mark.timeout(300)
async def test_ten_thousand_rcpts_get_452_without_disconnect(
    tmp_path: Path, key_file: Path, figures: list[Figures]
) -> None:
    cap = 100
    total = 10_000
    async with proxy_and_sink(tmp_path, key_file, max_recipients=cap) as (proxy, sink):
        client = await RawSmtp.connect(proxy.port)
        try:
            await client.reply()
            await client.cmd("EHLO many.test")
            assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
            # Pipelined in chunks, as a bulk sender would.
            codes: list[int] = []
            for start in range(0, total, 1000):
                await client.send(
                    b"".join(
                        b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(start, start + 1000)
                    )
                )
                codes.extend([(await client.reply())[0] for _ in range(1000)])
            assert (await client.cmd("DATA"))[0] == 354
            await client.send(dot_stuff(make_message("<many@x>")) + b".\r\n")
            data_code, _ = await client.reply()
            assert (await client.cmd("QUIT"))[0] == 221
        finally:
            await client.close()
        messages = list(sink.messages)
    assert codes[:cap] == [250] * cap
    assert set(codes[cap:]) == {452}
    assert data_code == 250
    assert len(messages) == 1 and len(messages[0].rcpt_tos) == cap
    figures.append(
        Figures(
            "smtp: 10,000 RCPTs",
            load=f"{total} RCPT in one transaction",
            faults=f"max_recipients={cap}",
            sent=1,
            delivered=1,
            notes=f"{codes.count(250)}x250 then {codes.count(452)}x452; no disconnect",
        )
    )


@pytest.mark.timeout(300)
async def test_auth_brute_force_is_rate_limited(
    tmp_path: Path, key_file: Path, figures: list[Figures]
) -> None:
    users = need("smtp_proxy.smtp.users", "users file (smtp_proxy/smtp/users.py)")
    users_file = tmp_path / "users"
    users.add_user(users_file, "alice", "correct horse battery staple")
    limit = 3
    async with proxy_and_sink(
        tmp_path,
        key_file,
        users_file=str(users_file),
        allow_plain_auth_on_loopback=True,
        trusted_networks=["127.0.0.1/32"],
        auth_fail_limit=limit,
        auth_fail_window=300,
    ) as (proxy, sink):
        import base64

        def plain(user: str, password: str) -> str:
            return base64.b64encode(f"\0{user}\0{password}".encode()).decode()

        codes: list[int] = []
        attempts = 20
        for i in range(attempts):
            client = await RawSmtp.connect(proxy.port, source="127.0.0.2")
            try:
                await client.reply()
                await client.cmd("EHLO brute.test")
                try:
                    code, _ = await client.cmd(f"AUTH PLAIN {plain('alice', f'guess{i}')}")
                except ConnectionError:
                    code = 0  # hung up on us: also a refusal
                codes.append(code)
            finally:
                await client.close()
        # Even the right password is refused while the address is blocked.
        client = await RawSmtp.connect(proxy.port, source="127.0.0.2")
        try:
            await client.reply()
            await client.cmd("EHLO brute.test")
            try:
                right, _ = await client.cmd(
                    f"AUTH PLAIN {plain('alice', 'correct horse battery staple')}"
                )
            except ConnectionError:
                right = 0
        finally:
            await client.close()
        messages = list(sink.messages)
    # Wrong passwords get 535 until the limit is reached (the attempt that reaches it may
    # already be answered 421); from then on the address is refused outright.
    assert codes[: limit - 1] == [535] * (limit - 1)
    assert codes[limit - 1] in (535, 421, 454)
    assert all(code in (421, 454, 0) for code in codes[limit:]), codes
    assert right != 235
    assert messages == []
    figures.append(
        Figures(
            "smtp: AUTH brute force from 127.0.0.2",
            load=f"{attempts} wrong passwords + 1 right one",
            faults=f"auth_fail_limit={limit}",
            notes=f"replies {sorted(set(codes))}; right password while blocked -> {right}",
        )
    )


@pytest.mark.timeout(120)
async def test_unauthenticated_relay_from_untrusted_address_refused(
    tmp_path: Path, key_file: Path, figures: list[Figures]
) -> None:
    async with proxy_and_sink(tmp_path, key_file, trusted_networks=["127.0.0.1/32"]) as (
        proxy,
        sink,
    ):
        client = await RawSmtp.connect(proxy.port, source="127.0.0.2")
        try:
            await client.reply()
            await client.cmd("EHLO stranger.test")
            mail, _ = await client.cmd("MAIL FROM:<spam@example.com>")
            rcpt, _ = await client.cmd("RCPT TO:<victim@example.net>")
            data, _ = await client.cmd("DATA")
            if data == 354:  # must not happen; finish so the assertion below sees it
                await client.send(b"Subject: spam\r\n\r\nspam\r\n.\r\n")
                await client.reply()
            # Pipelined attempt too.
            await client.send(
                b"RSET\r\nMAIL FROM:<spam@example.com>\r\nRCPT TO:<v2@example.net>\r\nDATA\r\n"
            )
            piped = [(await client.reply())[0] for _ in range(4)]
        finally:
            await client.close()
        # The trusted address still relays.
        code, _ = await raw_send(proxy.port, make_message("<trusted@x>"))
        messages = list(sink.messages)
    assert mail == 530 or rcpt == 554, (mail, rcpt)
    assert data != 354 and piped[-1] != 354
    assert code == 250
    assert [m.rcpt_tos for m in messages] == [["rcpt@example.net"]]
    figures.append(
        Figures(
            "smtp: relay attempt from 127.0.0.2 (untrusted, no AUTH)",
            load="1 + 1 pipelined transactions",
            faults="trusted_networks=127.0.0.1/32",
            sent=2,
            delivered=0,
            refused=2,
            notes=f"MAIL {mail}, RCPT {rcpt}, DATA {data}; pipelined {piped}",
        )
    )
