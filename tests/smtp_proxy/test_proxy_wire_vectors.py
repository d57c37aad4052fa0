"""Vectors that already held but had no test, end to end over real sockets.

End-of-data lookalikes, BDAT, the DATA line limit, dot-stuffing on the upstream wire,
bare newlines in normalize mode, every recipient refused upstream, an upstream TLS
failure, malformed header blocks, and DKIM re-signing after bare-CR normalisation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import dkim

from smtp_proxy.engine.newlines import has_bare_newline
from tests.support.dkim_keys import new_dkim_key, txt_record
from tests.support.dns_server import DnsServer
from tests.support.proxy_helpers import TOKEN_RE, LineClient, ProxyLab

HTML = (
    b"From: news@example.com\r\nTo: b@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/html\r\n\r\n"
    b'<a href="https://shop.example.net/a">a</a>\r\n'
)


async def test_cr_cr_lf_dot_cr_cr_lf_does_not_end_the_data(lab: ProxyLab) -> None:
    vector = b"\r\r\n.\r\r\n"
    smuggle = b"hello" + vector + b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<v@example.org>\r\n"
    for mode, expected in (("reject", 550), ("normalize", 250)):
        sink = await lab.sink()
        async with lab.proxy(lab.config(sink.url, bare_newline=mode)) as proxy:
            client = await LineClient.start(proxy.port)
            code, _ = await client.transaction(b"Subject: a\r\n\r\n" + smuggle + b".\r\n")
            assert code == expected, mode
            # The next reply answers our QUIT: nothing in the body ran as a command.
            assert (await client.cmd("QUIT"))[0] == 221
            await client.close()
        verbs = [verb for _n, verb in sink.commands if verb in ("MAIL", "RCPT")]
        assert verbs == ["MAIL", "RCPT"], mode
        if mode == "normalize":
            assert len(sink.messages) == 1
            assert sink.messages[0].rcpt_tos == ["b@example.org"]
            assert not has_bare_newline(sink.messages[0].data)


async def test_bdat_is_refused_and_chunking_not_offered(lab: ProxyLab) -> None:
    sink = await lab.sink()
    async with lab.proxy(lab.config(sink.url)) as proxy:
        client = await LineClient.start(proxy.port)
        assert "CHUNKING" not in client.ehlo.upper()
        assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        assert (await client.cmd("RCPT TO:<b@example.org>"))[0] == 250
        code, _ = await client.cmd("BDAT 4 LAST")
        assert code == 500
        assert (await client.cmd("NOOP"))[0] == 250
        await client.close()
    assert sink.messages == []


async def test_a_data_line_over_998_octets_is_answered_500(lab: ProxyLab) -> None:
    sink = await lab.sink()
    async with lab.proxy(lab.config(sink.url)) as proxy:
        client = await LineClient.start(proxy.port)
        longest_allowed = b"Subject: ok\r\n\r\n" + b"a" * 998 + b"\r\n.\r\n"
        assert (await client.transaction(longest_allowed))[0] == 250
        for length in (999, 1_000, 5_000):
            wire = b"Subject: long\r\n\r\n" + b"y" * length + b"\r\n.\r\n"
            await client.open_data()
            await client.send(wire)
            code, text = await client.reply()
            assert (code, text) == (500, "Line too long (see RFC5321 4.5.3.1.6)")
        await client.close()
    assert len(sink.messages) == 1


@contextlib.asynccontextmanager
async def recording_upstream() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A minimal SMTP server that keeps the raw bytes of each DATA phase (dot-stuffed)."""
    raw: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-raw.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
                data = await reader.readuntil(b"\r\n.\r\n")
                raw.append(data)
                writer.write(b"250 2.0.0 kept\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], raw
    finally:
        server.close()
        await server.wait_closed()


async def test_leading_dots_are_stuffed_again_on_the_upstream_wire(lab: ProxyLab) -> None:
    async with recording_upstream() as (port, raw):
        config = lab.config(f"smtp://127.0.0.1:{port}")
        async with lab.proxy(config) as proxy:
            client = await LineClient.start(proxy.port)
            # As sent: dot-stuffed; as relayed: stuffed again, the same bytes.
            wire = b"Subject: dots\r\n\r\n..one\r\n...\r\n.. space\r\nmid.dot\r\n.\r\n"
            assert (await client.transaction(wire))[0] == 250
            await client.close()
    assert raw == [b"Subject: dots\r\n\r\n..one\r\n...\r\n.. space\r\nmid.dot\r\n.\r\n"]


async def test_normalize_mode_with_a_bare_lf_before_a_bcc_header(lab: ProxyLab) -> None:
    sink = await lab.sink()
    async with lab.proxy(lab.config(sink.url, bare_newline="normalize")) as proxy:
        client = await LineClient.start(proxy.port)
        wire = b"Subject: a\nBcc: victim@example.org\r\n\r\nbody\r\n.\r\n"
        assert (await client.transaction(wire))[0] == 250
        await client.close()
    (got,) = sink.messages
    # Normalised to CRLF and relayed once, to the envelope's recipient only: a header
    # never adds a recipient.
    assert got.data == b"Subject: a\r\nBcc: victim@example.org\r\n\r\nbody\r\n"
    assert got.rcpt_tos == ["b@example.org"]


async def test_every_recipient_refused_upstream(lab: ProxyLab) -> None:
    sink = await lab.sink()
    sink.rcpt_replies = {
        "x@example.org": "550 5.1.1 no such user x",
        "y@example.org": "550 5.1.1 no such user y",
    }
    async with lab.proxy(lab.config(sink.url)) as proxy:
        client = await LineClient.start(proxy.port)
        assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        assert await client.cmd("RCPT TO:<x@example.org>") == (550, "5.1.1 no such user x")
        assert await client.cmd("RCPT TO:<y@example.org>") == (550, "5.1.1 no such user y")
        assert (await client.cmd("DATA"))[0] == 503
        assert (await client.cmd("RSET"))[0] == 250
        # The session (and the upstream connection) carry on with the next message.
        assert (await client.transaction(b"Subject: next\r\n\r\nx\r\n.\r\n"))[0] == 250
        await client.close()
    assert [m.rcpt_tos for m in sink.messages] == [["b@example.org"]]


async def test_an_upstream_tls_failure_is_a_451(lab: ProxyLab) -> None:
    sink = await lab.sink()  # plain SMTP: a TLS handshake with it fails
    config = lab.config(sink.url.replace("smtp://", "smtps://"))
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        code, text = await client.cmd("MAIL FROM:<a@example.com>")
        assert (code, text) == (451, "4.4.1 upstream unavailable, try again later")
        await client.close()
    assert sink.messages == []


async def test_malformed_header_blocks_are_relayed_unchanged(lab: ProxyLab) -> None:
    bad_line = HTML.replace(b"Subject: s\r\n", b"Subject: s\r\nnot a header line\r\n")
    leading_space = b" folded: first line\r\n" + HTML
    sink = await lab.sink()
    async with lab.proxy(lab.config(sink.url)) as proxy:
        client = await LineClient.start(proxy.port)
        for message in (bad_line, leading_space):
            assert (await client.transaction(message + b".\r\n"))[0] == 250
        assert (await client.transaction(HTML + b".\r\n"))[0] == 250  # the control
        await client.close()
    got = [m.data for m in sink.messages]
    assert got[:2] == [bad_line, leading_space]
    assert TOKEN_RE.search(got[2].decode())


async def test_dkim_resigning_after_bare_cr_normalisation(lab: ProxyLab, tmp_path: Path) -> None:
    (client_pem, client_txt), (proxy_pem, proxy_txt) = new_dkim_key(), new_dkim_key()
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(proxy_pem)
    key_file.chmod(0o600)
    # Signed as it will be once normalised; sent with one line ending a bare CR.
    html = HTML.replace(b"From: news@example.com", b"From: news@example.com").replace(
        b"\r\n\r\n<a", b"\r\n\r\nline one\r\n<a"
    )
    signature = dkim.sign(html, b"s1", b"example.com", client_pem, include_headers=[b"from"])
    sent = bytes(signature) + html.replace(b"line one\r\n", b"line one\r")
    sink = await lab.sink()
    with DnsServer() as dns:
        dns.add("s1._domainkey.example.com", "TXT", txt_record(client_txt))
        config = lab.config(
            sink.url,
            bare_newline="normalize",
            preflight={"enabled": False, "nameservers": [dns.nameserver]},
            dkim={"domains": {"example.com": {"selector": "s2", "key_file": str(key_file)}}},
        )
        async with lab.proxy(config) as proxy:
            client = await LineClient.start(proxy.port)
            assert (await client.transaction(sent + b".\r\n"))[0] == 250
            await client.close()
    relayed = sink.messages[0].data
    assert not has_bare_newline(relayed)
    assert TOKEN_RE.search(relayed.decode())
    assert relayed.count(b"DKIM-Signature:") == 1 and b"s=s2" in relayed

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return proxy_txt if name.startswith(b"s2._domainkey.example.com") else None

    assert dkim.verify(relayed, dnsfunc=dnsfunc)
