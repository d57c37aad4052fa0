"""End to end over real sockets: SMTP client → ProxyService → recording aiosmtpd sink.

The helpers (config builder, ``running_proxy``, raw SMTP line client) live in
tests/support/proxy_helpers.py, shared with tests/smtp_proxy/smtp/test_proxy_security.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import aiohttp
import aiosmtplib
import pytest
from prometheus_client import CollectorRegistry

from redirector.tokens import Keyring
from smtp_proxy.preflight.monitor import PreflightMonitor
from smtp_proxy.service import ProxyService
from tests.support.config import BASE_URL
from tests.support.proxy_helpers import (
    QID_RE,
    SIMPLE_HTML,
    LineClient,
    ProxyLab,
    decode_links,
    html_message,
    running_proxy,
    smtp_client,
)

pytestmark = pytest.mark.usefixtures("close_line_clients")


# --- tests --------------------------------------------------------------------------------------


async def test_rewritten_message_arrives_with_envelope_unchanged(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    message = html_message(SIMPLE_HTML)
    async with lab.proxy(config) as proxy:
        async with smtp_client(proxy.port) as client:
            errors, text = await client.sendmail(
                "news@example.com", ["reader@example.org"], message
            )
    assert errors == {}
    match = QID_RE.search(text)
    assert match, text
    queue_id = match.group(1)
    assert "queued as 1" in text  # the upstream's own text is kept
    assert len(sink.messages) == 1
    got = sink.messages[0]
    assert got.mail_from == "news@example.com"
    assert got.rcpt_tos == ["reader@example.org"]
    assert got.data != message
    links = decode_links(lab.keys, got.data)
    assert [(url, qid, rcpt) for url, qid, _i, rcpt in links] == [
        ("https://shop.example.net/sale?id=1&x=2", queue_id, "reader@example.org"),
        ("https://blog.example.net/post/42", queue_id, "reader@example.org"),
    ]
    assert b"mailto:someone@example.com" in got.data.replace(b"=\r\n", b"")
    # Headers are untouched.
    assert got.data.split(b"\r\n\r\n", 1)[0] == message.split(b"\r\n\r\n", 1)[0]


async def test_two_recipients_give_tokens_without_recipient(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    async with lab.proxy(config) as proxy:
        async with smtp_client(proxy.port) as client:
            await client.sendmail(
                "news@example.com", ["a@example.org", "b@example.org"], html_message(SIMPLE_HTML)
            )
    assert sink.messages[0].rcpt_tos == ["a@example.org", "b@example.org"]
    links = decode_links(lab.keys, sink.messages[0].data)
    assert len(links) == 2
    assert all(rcpt is None for *_rest, rcpt in links)


async def test_refused_recipient_is_refused_and_others_delivered(lab: ProxyLab) -> None:
    sink = await lab.sink()
    sink.rcpt_replies = {"nobody@example.org": "550 5.1.1 <nobody@example.org>: no such user"}
    config = lab.config(sink.url)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port, helo="client.test")
        assert (await client.cmd("MAIL FROM:<news@example.com>"))[0] == 250
        code, text = await client.cmd("RCPT TO:<nobody@example.org>")
        assert (code, text) == (550, "5.1.1 <nobody@example.org>: no such user")
        assert (await client.cmd("RCPT TO:<reader@example.org>"))[0] == 250
        assert (await client.cmd("DATA"))[0] == 354
        await client.send(b"Subject: hi\r\n\r\nno links here\r\n.\r\n")
        code, text = await client.reply()
        assert code == 250 and "clickrelay id" in text
        assert (await client.cmd("QUIT"))[0] == 221
        await client.close()
    assert [m.rcpt_tos for m in sink.messages] == [["reader@example.org"]]
    assert sink.messages[0].data == b"Subject: hi\r\n\r\nno links here\r\n"


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("mail", "451 4.3.0 try again later"),
        ("mail", "550 5.7.1 sender rejected"),
        ("data", "452 4.3.1 insufficient storage"),
        ("data", "554 5.7.1 message looks like spam"),
    ],
)
async def test_upstream_4xx_and_5xx_are_passed_through(
    lab: ProxyLab, stage: str, reply: str
) -> None:
    sink = await lab.sink()
    if stage == "mail":
        sink.mail_reply = reply
    else:
        sink.data_reply = reply
    config = lab.config(sink.url)
    code, _, text = reply.partition(" ")
    async with lab.proxy(config) as proxy:
        async with smtp_client(proxy.port) as client:
            with pytest.raises(aiosmtplib.SMTPResponseException) as info:
                await client.sendmail(
                    "news@example.com", ["reader@example.org"], html_message(SIMPLE_HTML)
                )
            assert info.value.code == int(code)
            assert info.value.message.startswith(text)
            # The connection stays usable: the next transaction works.
            sink.mail_reply = sink.data_reply = None
            await client.rset()
            await client.sendmail(
                "news@example.com", ["reader@example.org"], b"Subject: 2\r\n\r\nx\r\n"
            )
    assert [m.data for m in sink.messages] == [b"Subject: 2\r\n\r\nx\r\n"]


async def test_upstream_down_gives_451_then_retry_delivers_exactly_once(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    message = html_message(SIMPLE_HTML, message_id="<retry-1@example.com>")
    async with lab.proxy(config) as proxy:
        async with smtp_client(proxy.port) as client:
            await sink.stop()
            with pytest.raises(aiosmtplib.SMTPResponseException) as info:
                await client.sendmail("news@example.com", ["reader@example.org"], message)
            assert info.value.code == 451
            assert info.value.message.startswith("4.4.1")
            await client.rset()
            await sink.start()
            errors, text = await client.sendmail(
                "news@example.com", ["reader@example.org"], message
            )
            assert errors == {} and "clickrelay id" in text
    assert len(sink.messages) == 1
    assert b"<retry-1@example.com>" in sink.messages[0].data


async def test_upstream_cut_mid_data_gives_451_and_nothing_accepted(lab: ProxyLab) -> None:
    sink = await lab.sink()
    sink.data_action = "cut"
    config = lab.config(sink.url)
    message = html_message(SIMPLE_HTML, message_id="<cut-1@example.com>")
    async with lab.proxy(config) as proxy:
        async with smtp_client(proxy.port) as client:
            with pytest.raises(aiosmtplib.SMTPResponseException) as info:
                await client.sendmail("news@example.com", ["reader@example.org"], message)
            assert info.value.code == 451
            assert info.value.message.startswith("4.4.1")
            assert sink.messages == []
            assert len(sink.refused) == 1  # the sink got the bytes but never answered
            sink.data_action = "accept"
            await client.rset()
            await client.sendmail("news@example.com", ["reader@example.org"], message)
    assert len(sink.messages) == 1
    assert b"<cut-1@example.com>" in sink.messages[0].data


async def test_second_transaction_reuses_client_and_upstream_connections(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    async with lab.proxy(config) as proxy:
        async with smtp_client(proxy.port) as client:
            ids = []
            for n in range(3):
                _, text = await client.sendmail(
                    "news@example.com",
                    [f"r{n}@example.org"],
                    html_message(SIMPLE_HTML, to=f"r{n}@example.org"),
                )
                match = QID_RE.search(text)
                assert match
                ids.append(match.group(1))
    assert len(set(ids)) == 3
    assert [m.rcpt_tos for m in sink.messages] == [
        ["r0@example.org"],
        ["r1@example.org"],
        ["r2@example.org"],
    ]
    assert {m.connection for m in sink.messages} == {1}
    assert sink.connections == 1
    for n, message in enumerate(sink.messages):
        links = decode_links(lab.keys, message.data)
        assert {qid for _u, qid, _i, _r in links} == {ids[n]}


async def test_client_rset_and_abandoned_transactions_leave_upstream_reusable(
    lab: ProxyLab,
) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, upstream={"pool_size": 1})
    async with lab.proxy(config) as proxy:
        # 1: RSET after RCPT.
        client = await LineClient.start(proxy.port)
        assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        assert (await client.cmd("RCPT TO:<b@example.org>"))[0] == 250
        assert (await client.cmd("RSET"))[0] == 250
        # 2: hang up in the middle of a transaction.
        assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        await client.close()
        # 3: a new client's message goes over the same upstream connection.
        async with smtp_client(proxy.port) as smtp:
            await sink.wait_for(lambda: sink.commands.count((1, "RSET")) >= 2, what="RSETs")
            await smtp.sendmail("a@example.com", ["c@example.org"], b"Subject: s\r\n\r\nx\r\n")
    assert [m.rcpt_tos for m in sink.messages] == [["c@example.org"]]
    assert sink.messages[0].connection == 1
    assert sink.connections == 1


async def test_preflight_not_verified_relays_byte_identical(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, preflight=True)
    # A real monitor that has not verified the domain (never started: "pending").
    monitor = PreflightMonitor(config, lab.keys, registry=CollectorRegistry())
    assert not monitor.may_rewrite(BASE_URL)
    message = html_message(SIMPLE_HTML, message_id="<pf@example.com>")
    async with lab.proxy(config, preflight=monitor) as proxy:
        async with smtp_client(proxy.port) as client:
            _, text = await client.sendmail("news@example.com", ["reader@example.org"], message)
    assert "clickrelay id" in text
    assert sink.messages[0].data == message
    assert decode_links(lab.keys, sink.messages[0].data) == []


async def test_preflight_enabled_without_monitor_does_not_rewrite(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, preflight=True)
    message = html_message(SIMPLE_HTML)
    async with lab.proxy(config) as proxy:
        async with smtp_client(proxy.port) as client:
            await client.sendmail("news@example.com", ["reader@example.org"], message)
    assert sink.messages[0].data == message


async def test_opt_out_header_is_honoured(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    message = b"X-Clickrelay-Track: off\r\n" + html_message(SIMPLE_HTML)
    async with lab.proxy(config) as proxy:
        async with smtp_client(proxy.port) as client:
            await client.sendmail("news@example.com", ["reader@example.org"], message)
    assert decode_links(lab.keys, sink.messages[0].data) == []
    assert b"https://blog.example.net/post/42" in sink.messages[0].data.replace(b"=\r\n", b"")


async def test_mail_parameters_are_rebuilt_not_copied(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port, helo="client.test")
        ehlo = client.ehlo.split("\n")
        assert "8BITMIME" in ehlo and "SMTPUTF8" in ehlo
        assert "CHUNKING" not in client.ehlo
        assert any(line.startswith("SIZE ") for line in ehlo)
        # Unknown parameters never get past the proxy.
        code, _ = await client.cmd("MAIL FROM:<a@example.com> RET=HDRS ENVID=x")
        assert code == 555
        code, _ = await client.transaction(
            "Subject: ü\r\n\r\nGrüße\r\n.\r\n".encode(),
            params="size=00012 body=8bitmime SMTPUTF8",
        )
        assert code == 250
        await client.cmd("QUIT")
        await client.close()
    assert sink.commands.count((1, "MAIL")) == 1
    got = sink.messages[0]
    assert got.mail_options == ["SIZE=12", "BODY=8BITMIME", "SMTPUTF8"]
    assert got.data == "Subject: ü\r\n\r\nGrüße\r\n".encode()


async def test_smtputf8_addresses_are_relayed(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port, helo="client.test")
        code, _ = await client.transaction(
            "Subject: ü\r\n\r\nGrüße\r\n.\r\n".encode(),
            "jörg@example.com",
            params="SMTPUTF8",
            recipients=["ü@example.org"],
        )
        assert code == 250
        await client.close()
    got = sink.messages[0]
    assert (got.mail_from, got.rcpt_tos) == ("jörg@example.com", ["ü@example.org"])


async def test_size_limit_is_advertised_and_enforced(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, max_message_size=2000)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        assert "SIZE 2000" in client.ehlo.split("\n")
        assert (await client.cmd("MAIL FROM:<a@example.com> SIZE=5000"))[0] == 552
        big = b"Subject: big\r\n\r\n" + (b"x" * 900 + b"\r\n") * 3 + b".\r\n"
        assert (await client.transaction(big))[0] == 552
        # The session goes on: RSET and a small message pass.
        assert (await client.cmd("RSET"))[0] == 250
        assert (await client.transaction(b"Subject: small\r\n\r\nok\r\n.\r\n"))[0] == 250
        await client.close()
    assert [m.data for m in sink.messages] == [b"Subject: small\r\n\r\nok\r\n"]


async def test_recipient_cap_answers_452_and_keeps_going(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, max_recipients=2)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        await client.cmd("MAIL FROM:<a@example.com>")
        assert (await client.cmd("RCPT TO:<r1@example.org>"))[0] == 250
        assert (await client.cmd("RCPT TO:<r2@example.org>"))[0] == 250
        assert await client.cmd("RCPT TO:<r3@example.org>") == (452, "4.5.3 Too many recipients")
        assert (await client.cmd("DATA"))[0] == 354
        await client.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
        assert (await client.reply())[0] == 250
        await client.close()
    assert sink.messages[0].rcpt_tos == ["r1@example.org", "r2@example.org"]
    assert sink.commands.count((1, "RCPT")) == 2


async def test_connection_limit_refuses_extra_clients_with_421(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, max_connections=2)
    async with lab.proxy(config) as proxy:
        first = await LineClient.connect(proxy.port)
        second = await LineClient.connect(proxy.port)
        assert (await first.reply())[0] == 220
        assert (await second.reply())[0] == 220
        third = await LineClient.connect(proxy.port)
        code, text = await third.reply()
        assert code == 421 and text.startswith("4.7.0")
        assert await third.closed_by_server()
        await third.close()
        # Once one leaves, a new client gets in.
        assert (await first.cmd("QUIT"))[0] == 221
        await first.close()
        async with asyncio.timeout(10):
            while True:
                fourth = await LineClient.connect(proxy.port)
                code, _ = await fourth.reply()
                if code == 220:
                    break
                await fourth.close()  # the first one's hang-up was not yet processed
        assert (await fourth.cmd("QUIT"))[0] == 221
        await fourth.close()
        await second.close()


async def test_command_timeout_hangs_up_idle_clients(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, command_timeout=1.0)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        assert await client.closed_by_server(timeout=10)
        await client.close()
        # The abandoned upstream transaction was reset and returned, not leaked.
        await sink.wait_for(lambda: (1, "RSET") in sink.commands, what="upstream RSET")
    assert sink.messages == []


async def test_data_timeout_hangs_up_and_delivers_nothing(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, data_timeout=0.5)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        await client.open_data()
        await client.send(b"Subject: slow\r\n\r\nstarted but never finished\r\n")
        assert await client.closed_by_server(timeout=10)
        await client.close()
    assert sink.messages == [] and sink.refused == []


async def test_stop_lets_in_flight_transaction_finish(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    service = ProxyService(config, lab.keys, admin=False)
    await service.start()
    client = await LineClient.connect(service.port)
    late = await LineClient.connect(service.port)
    try:
        await late.reply()
        await late.cmd("EHLO late")
        await client.reply()
        await client.cmd("EHLO c")
        await client.cmd("MAIL FROM:<a@example.com>")
        await client.cmd("RCPT TO:<b@example.org>")
        stopping = asyncio.create_task(service.stop(grace=10))
        # New connections are refused once stop() has begun.
        with pytest.raises(OSError):
            async with asyncio.timeout(10):
                while True:
                    probe = await LineClient.connect(service.port)
                    await probe.close()
        assert not stopping.done()
        # Another open connection cannot start a new transaction while draining.
        assert (await late.cmd("MAIL FROM:<late@example.com>"))[0] == 421
        assert await late.closed_by_server()
        assert (await client.cmd("DATA"))[0] == 354
        await client.send(b"Subject: last\r\n\r\nin flight\r\n.\r\n")
        assert (await client.reply())[0] == 250
        await stopping
        assert await client.closed_by_server()
    finally:
        await client.close()
        await service.stop(grace=0)
    assert [m.data for m in sink.messages] == [b"Subject: last\r\n\r\nin flight\r\n"]


async def test_reload_applies_new_trusted_networks(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        assert (await client.cmd("RSET"))[0] == 250
        untrusted = dataclasses.replace(
            config, proxy=dataclasses.replace(config.proxy, trusted_networks=("10.0.0.0/8",))
        )
        proxy.reload(untrusted, lab.keys)
        assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 530
        await client.close()
    assert sink.messages == []


async def admin_metrics(port: int | None) -> str:
    """The proxy admin listener's ``/metrics`` page."""
    assert port
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


async def test_admin_metrics_count_messages(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, admin_listen="127.0.0.1:0")
    async with lab.proxy(config, admin=True) as proxy:
        async with smtp_client(proxy.port) as client:
            await client.sendmail("a@example.com", ["b@example.org"], html_message(SIMPLE_HTML))
        body = await admin_metrics(proxy.admin_port)
    assert 'clickrelay_proxy_messages_total{outcome="accepted"} 1.0' in body
    assert 'clickrelay_proxy_links_total{action="tracked"' in body
    assert len(sink.messages) == 1


async def test_admin_metrics_count_url_text_links(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, admin_listen="127.0.0.1:0")
    page = '<p><a href="https://shop.example.net/x">https://shop.example.net/x</a></p>\n'
    async with lab.proxy(config, admin=True) as proxy:
        async with smtp_client(proxy.port) as client:
            await client.sendmail("a@example.com", ["b@example.org"], html_message(page))
        body = await admin_metrics(proxy.admin_port)
    assert 'clickrelay_proxy_links_total{action="skipped",reason="url-text"} 1.0' in body
    assert b'"https://shop.example.net/x">https://shop.example.net/x</a>' in sink.messages[0].data


async def test_maildir_upstream_quick_start(lab: ProxyLab) -> None:
    outbox = lab.tmp_path / "outbox"
    config = lab.config(f"maildir:{outbox}")
    async with lab.proxy(config) as proxy:
        async with smtp_client(proxy.port) as client:
            errors, text = await client.sendmail(
                "a@example.com", ["b@example.org"], html_message(SIMPLE_HTML)
            )
    assert errors == {} and "clickrelay id" in text
    files = [p for p in outbox.rglob("*") if p.is_file() and p.parent.name == "new"]
    assert len(files) == 1
    assert len(decode_links(lab.keys, files[0].read_bytes())) == 2


async def test_data_transparency_long_lines_and_a_big_message(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    big_body = b"".join(b"line %06d " % n + b"x" * 60 + b"\r\n" for n in range(40_000))
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        # Dot-stuffed lines lose one dot; "." inside a line or after a bare LF stays.
        code, _ = await client.transaction(
            b"Subject: dots\r\n\r\n..leading\r\n...\r\nmid . dot\r\n.\r\n"
        )
        assert code == 250
        # A line over 1000 octets: 500 after the whole message, nothing relayed.
        code, _ = await client.transaction(
            b"Subject: long\r\n\r\n" + b"y" * 5000 + b"\r\nok\r\n.\r\n"
        )
        assert code == 500
        assert (await client.cmd("RSET"))[0] == 250
        # A 2.8 MB message (rewritten in a worker thread) arrives whole.
        code, _ = await client.transaction(b"Subject: big\r\n\r\n" + big_body + b".\r\n")
        assert code == 250
        await client.close()
    assert [m.data for m in sink.messages] == [
        b"Subject: dots\r\n\r\n.leading\r\n..\r\nmid . dot\r\n",
        b"Subject: big\r\n\r\n" + big_body,
    ]


@pytest.mark.parametrize("write_size", [1, 7, 1000, 70_000])
async def test_end_of_data_is_found_across_read_boundaries(lab: ProxyLab, write_size: int) -> None:
    """Sentence-ending lines ("….\\r\\n"), dot-stuffed lines and a message longer than
    one read piece (64 KB), sent in writes of various sizes: the sink gets exactly
    the client's message, once."""
    sink = await lab.sink()
    config = lab.config(sink.url)
    lines = [b"Subject: boundaries", b""]
    for n in range(1500):
        lines.append(b"Sentence number %d ends here." % n)
        if n % 7 == 0:
            lines.append(b".")  # a lone dot line inside the message
        if n % 11 == 0:
            lines.append(b".starts with a dot.")
    message = b"".join(line + b"\r\n" for line in lines)
    if write_size == 1:
        message = message[: message.rindex(b"\r\n", 0, 3000) + 2]  # byte by byte: short
    stuffed = b"".join(
        (b"." + line if line.startswith(b".") else line) + b"\r\n"
        for line in message.split(b"\r\n")[:-1]
    )
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        await client.open_data()
        wire = stuffed + b".\r\n"
        for start in range(0, len(wire), write_size):
            await client.send(wire[start : start + write_size])
        assert (await client.reply())[0] == 250
        assert (await client.cmd("NOOP"))[0] == 250  # the command stream is in step
        await client.close()
    assert [m.data for m in sink.messages] == [message]


class BrokenKeyring(Keyring):
    """A keyring whose sealing fails: a stand-in for a broken crypto backend."""

    def seal(self, url: str, **kwargs: Any) -> str:
        raise RuntimeError("crypto backend unavailable")


async def test_rewrite_failure_relays_the_original_and_is_counted(
    lab: ProxyLab, caplog: pytest.LogCaptureFixture
) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url)
    registry = CollectorRegistry()
    message = html_message(SIMPLE_HTML)
    caplog.set_level(logging.INFO, logger="clickrelay.proxy")
    async with running_proxy(config, BrokenKeyring(lab.keys.keys), registry=registry) as proxy:
        async with smtp_client(proxy.port) as client:
            errors, text = await client.sendmail("a@example.com", ["b@example.org"], message)
    assert errors == {} and "clickrelay id" in text
    assert sink.messages[0].data == message
    assert registry.get_sample_value("clickrelay_proxy_rewrite_errors_total") == 1.0
    assert any("rewrite-failed" in r.getMessage() for r in caplog.records)


async def test_one_structured_log_line_per_message(
    lab: ProxyLab, caplog: pytest.LogCaptureFixture
) -> None:
    sink = await lab.sink()
    sink.rcpt_replies = {"gone@example.org": "550 5.1.1 gone"}
    config = lab.config(sink.url)
    caplog.set_level(logging.INFO, logger="clickrelay.proxy")
    async with lab.proxy(config) as proxy:
        async with smtp_client(proxy.port) as client:
            _, text = await client.sendmail(
                "news@example.com",
                ["reader@example.org", "gone@example.org"],
                html_message(SIMPLE_HTML),
            )
    match = QID_RE.search(text)
    assert match
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event=message ")]
    assert len(lines) == 1
    line = lines[0]
    for field in (
        f"queue_id={match.group(1)}",
        "client=127.0.0.1",
        "sender=news@example.com",
        "rcpts=1",
        "tracking=http://127.0.0.1:8080",
        "preflight=disabled",
        "rewrite=rewritten",
        "tracked=2",
        "skipped=1",
        "skip_reasons=not-http:1",
        "outcome=accepted",
        "upstream=250",
        "duration_ms=",
    ):
        assert field in line, (field, line)
