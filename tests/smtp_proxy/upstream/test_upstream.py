"""UpstreamPool against the recording sink over real loopback sockets."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

import smtp_proxy.upstream.pool as pool_module
import smtp_proxy.upstream.wire as wire_module
from clickrelay.common.errors import ConfigError
from clickrelay.config import load_config_text
from smtp_proxy.config import UpstreamConfig
from smtp_proxy.upstream import (
    Reply,
    UpstreamError,
    UpstreamPool,
    open_upstream,
)
from smtp_proxy.upstream.maildir import MaildirUpstream
from tests.support.smtp_sink import SinkFactory, SmtpSink, make_test_ca

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody\r\n.dot line\r\n"


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., UpstreamPool]]:
    made: list[UpstreamPool] = []

    def make(url: str, **options: Any) -> UpstreamPool:
        options.setdefault("connect_timeout", 5.0)
        options.setdefault("timeout", 5.0)
        pool = UpstreamPool(UpstreamConfig(url=url, **options), local_hostname="proxy.test")
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close()


async def send(
    pool: UpstreamPool,
    sender: str = "a@example.com",
    rcpts: tuple[str, ...] = ("b@example.com",),
    data: bytes = MESSAGE,
    *,
    options: tuple[str, ...] = (),
) -> tuple[Reply, list[Reply], Reply | None]:
    txn = await pool.transaction()
    reusable = False
    try:
        mail = await txn.mail(sender, options)
        rcpt_replies = [await txn.rcpt(r, ()) for r in rcpts]
        final = None
        if mail.ok and any(r.ok for r in rcpt_replies):
            final = await txn.data(data)
        reusable = True
        return mail, rcpt_replies, final
    finally:
        await txn.close(reusable=reusable)


# --- forwarding ---------------------------------------------------------------------------


async def test_message_forwarded_exactly(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    mail, rcpts, final = await send(pool, rcpts=("b@example.com", "c@example.com"))
    assert mail == Reply(250, "2.1.0 Ok")
    assert [r.code for r in rcpts] == [250, 250]
    assert final is not None and final.code == 250 and "queued as 1" in final.message
    await sink.wait_for_messages(1)
    got = sink.messages[0]
    assert got.data == MESSAGE
    assert got.mail_from == "a@example.com"
    assert got.rcpt_tos == ["b@example.com", "c@example.com"]
    assert "EHLO" in sink.commands_of(got.connection)


async def test_mail_options_passed_through(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    data = "Subject: caf\u00e9\r\n\r\nna\u00efve\r\n".encode()
    _, _, final = await send(
        pool,
        sender="j\u00f6rg@example.com",
        rcpts=("b@example.com",),
        data=data,
        options=("SIZE=100", "BODY=8BITMIME", "SMTPUTF8"),
    )
    assert final is not None and final.ok
    got = sink.messages[0]
    assert got.mail_options == ["SIZE=100", "BODY=8BITMIME", "SMTPUTF8"]
    assert got.mail_from == "j\u00f6rg@example.com"
    assert got.data == data
    assert {"8bitmime", "smtputf8", "size"} <= pool.extensions


async def test_utf8_address_without_smtputf8_refused_locally(
    smtp_sink_factory: SinkFactory, pools: Any
) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    txn = await pool.transaction()
    reply = await txn.mail("j\u00f6rg@example.com", ())
    assert reply.code == 553
    assert (await txn.mail("a@example.com", ["BAD\r\nRCPT"])).code == 501
    assert (await txn.mail("a@example.com", ())).ok  # the transaction is still usable
    await txn.close(reusable=True)
    assert "MAIL" in sink.commands_of(1)
    assert sink.commands_of(1).count("MAIL") == 1


async def test_utf8_recipient_after_smtputf8_mail(
    smtp_sink_factory: SinkFactory, pools: Any
) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    txn = await pool.transaction()
    assert (await txn.mail("j\u00f6rg@example.com", ["SMTPUTF8"])).ok
    assert (await txn.rcpt("\u00fc@example.org", ())).ok
    assert (await txn.data(b"Subject: x\r\n\r\ny\r\n")).ok
    # a new transaction without SMTPUTF8 may not use UTF-8 addresses
    assert (await txn.mail("a@example.com", ())).ok
    assert (await txn.rcpt("\u00fc@example.org", ())).code == 553
    await txn.close(reusable=True)
    assert sink.messages[0].rcpt_tos == ["\u00fc@example.org"]


async def test_recipient_refusal_passes_through(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    sink.rcpt_replies["nobody@example.com"] = "550 5.1.1 no such user"
    pool = pools(sink.url)
    _, rcpts, final = await send(pool, rcpts=("nobody@example.com", "b@example.com"))
    assert rcpts[0] == Reply(550, "5.1.1 no such user")
    assert rcpts[1].ok
    assert final is not None and final.ok
    assert sink.messages[0].rcpt_tos == ["b@example.com"]


async def test_mail_refusal_passes_through(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    sink.mail_reply = "451 4.3.0 greylisted"
    pool = pools(sink.url)
    mail, _, final = await send(pool)
    assert mail == Reply(451, "4.3.0 greylisted")
    assert final is None
    # the connection is RSET and pooled; the next transaction works on it
    sink.mail_reply = None
    _, _, final = await send(pool)
    assert final is not None and final.ok
    assert sink.connections == 1
    assert "RSET" in sink.commands_of(1)


@pytest.mark.parametrize(
    "reply", ["554 5.7.1 message rejected as spam", "452 4.3.1 insufficient storage"]
)
async def test_data_refusal_returned_as_reply(
    smtp_sink_factory: SinkFactory, pools: Any, reply: str
) -> None:
    sink = await smtp_sink_factory()
    sink.data_reply = reply
    pool = pools(sink.url)
    _, _, final = await send(pool)
    code, _, text = reply.partition(" ")
    assert final == Reply(int(code), text)
    assert sink.messages == [] and len(sink.refused) == 1
    sink.data_reply = None
    _, _, final = await send(pool)
    assert final is not None and final.ok
    assert sink.connections == 1  # the refused transaction did not cost the connection


async def test_multiline_reply_kept(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    sink.rcpt_replies["x@example.com"] = "550-5.1.1 first line\r\n550 5.1.1 second line"
    pool = pools(sink.url)
    _, rcpts, _ = await send(pool, rcpts=("x@example.com",))
    assert rcpts[0] == Reply(550, "5.1.1 first line\n5.1.1 second line")
    assert str(rcpts[0]) == "550-5.1.1 first line\r\n550 5.1.1 second line"


def test_reply_str() -> None:
    assert str(Reply(250, "2.0.0 Ok")) == "250 2.0.0 Ok"
    assert str(Reply(250, "")) == "250"
    assert Reply(250, "x").ok and not Reply(451, "x").ok and not Reply(199, "x").ok


# --- pooling ------------------------------------------------------------------------------


async def test_connection_reused(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    registry = CollectorRegistry()
    pool = UpstreamPool(
        UpstreamConfig(url=sink.url, timeout=5, connect_timeout=5), registry=registry
    )
    try:
        for _ in range(3):
            _, _, final = await send(pool)
            assert final is not None and final.ok
        assert sink.connections == 1
        assert len(sink.messages) == 3
        assert {m.connection for m in sink.messages} == {1}
        # after a 250 to DATA no RSET is needed; the upstream reset itself
        assert "RSET" not in sink.commands_of(1)
        assert registry.get_sample_value("clickrelay_upstream_connections_opened_total") == 1
        assert registry.get_sample_value("clickrelay_upstream_connections_reused_total") == 2
        assert registry.get_sample_value("clickrelay_upstream_idle_connections") == 1
        assert registry.get_sample_value("clickrelay_upstream_active_transactions") == 0
    finally:
        await pool.close()
    await sink.wait_for(lambda: sink.open_connections == 0, what="QUIT on pool close")
    assert sink.commands_of(1)[-1] == "QUIT"
    assert registry.get_sample_value("clickrelay_upstream_idle_connections") == 0


async def test_second_pool_on_same_registry(smtp_sink_factory: SinkFactory) -> None:
    """A reload builds a new pool on the same registry: metrics must not collide."""
    sink = await smtp_sink_factory()
    registry = CollectorRegistry()
    config = UpstreamConfig(url=sink.url, timeout=5, connect_timeout=5)
    first = UpstreamPool(config, registry=registry)
    second = UpstreamPool(config, registry=registry)
    await first.check()
    await second.check()
    await first.close()
    await second.close()
    assert registry.get_sample_value("clickrelay_upstream_connections_opened_total") == 2


async def test_concurrent_transactions_use_separate_connections(
    smtp_sink_factory: SinkFactory, pools: Any
) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url, pool_size=2)
    t1 = await pool.transaction()
    t2 = await pool.transaction()
    assert t1.connection_number != t2.connection_number
    for txn in (t1, t2):
        assert (await txn.mail("a@example.com", ())).ok
    t3 = await pool.transaction()
    await t3.close(reusable=True)
    for txn in (t1, t2):
        await txn.close(reusable=True)
    # pool_size=2: one of the three was let go with QUIT
    await sink.wait_for(lambda: sink.open_connections == 2, what="pool to shrink to 2")
    assert pool.idle_connections == 2
    assert sink.connections == 3


async def test_not_reusable_discards(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    txn = await pool.transaction()
    assert (await txn.mail("a@example.com", ())).ok
    await txn.close(reusable=False)
    await txn.close(reusable=False)  # idempotent
    await sink.wait_for(lambda: sink.open_connections == 0, what="discarded connection")
    assert pool.idle_connections == 0
    with pytest.raises(UpstreamError):
        await txn.mail("a@example.com", ())
    _, _, final = await send(pool)
    assert final is not None and final.ok
    assert sink.connections == 2


async def test_broken_idle_connection_replaced(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    await send(pool)
    assert pool.idle_connections == 1
    sink.cut_connections()  # the upstream drops the idle connection
    await sink.wait_for(lambda: sink.open_connections == 0, what="cut")
    _, _, final = await send(pool)
    assert final is not None and final.ok
    assert sink.connections == 2
    assert [m.connection for m in sink.messages] == [1, 2]


async def test_idle_connection_closed_unnoticed_is_retried_at_mail(
    smtp_sink_factory: SinkFactory, pools: Any
) -> None:
    """The upstream closes a pooled connection while we still think it is alive."""
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    await send(pool)
    txn = await pool.transaction()  # reused: looks alive
    sink.cut_connections()
    await sink.wait_for(lambda: sink.open_connections == 0, what="cut")
    # MAIL finds the connection gone and moves to a fresh one transparently.
    assert (await txn.mail("a@example.com", ())).ok
    assert (await txn.rcpt("b@example.com", ())).ok
    assert (await txn.data(MESSAGE)).ok
    await txn.close(reusable=True)
    assert [m.connection for m in sink.messages] == [1, 2]


async def test_idle_connection_probed_after_a_while(
    smtp_sink_factory: SinkFactory, pools: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    await send(pool)
    monkeypatch.setattr(pool_module, "PROBE_AFTER", 0.0)
    await send(pool)
    assert sink.connections == 1
    assert sink.commands_of(1).count("RSET") == 1  # the probe


async def test_idle_connection_too_old_replaced(
    smtp_sink_factory: SinkFactory, pools: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    await send(pool)
    monkeypatch.setattr(pool_module, "IDLE_MAX", -1.0)
    await send(pool)
    assert sink.connections == 2
    await sink.wait_for(lambda: "QUIT" in sink.commands_of(1), what="QUIT of the old one")


# --- failures -----------------------------------------------------------------------------


async def test_upstream_down(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    await sink.stop()
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.transaction()
    await sink.start()  # back on the same port
    _, _, final = await send(pool)
    assert final is not None and final.ok
    assert len(sink.messages) == 1


async def test_upstream_silent_times_out(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    sink.silent = True
    pool = pools(sink.url, connect_timeout=0.3)
    with pytest.raises(UpstreamError, match="timed out"):
        await pool.transaction()


async def test_data_hang_times_out(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    sink.data_action = "hang"
    pool = pools(sink.url, timeout=0.3)
    txn = await pool.transaction()
    assert (await txn.mail("a@example.com", ())).ok
    assert (await txn.rcpt("b@example.com", ())).ok
    with pytest.raises(UpstreamError, match="timed out"):
        await txn.data(MESSAGE)
    with pytest.raises(UpstreamError):
        await txn.data(MESSAGE)  # the transaction is dead now
    await txn.close(reusable=True)  # reusable is ignored for a broken connection
    assert pool.idle_connections == 0
    assert sink.messages == []


async def test_cut_mid_data(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    sink.data_action = "cut"
    pool = pools(sink.url)
    txn = await pool.transaction()
    assert (await txn.mail("a@example.com", ())).ok
    assert (await txn.rcpt("b@example.com", ())).ok
    with pytest.raises(UpstreamError) as info:
        await txn.data(MESSAGE)
    assert info.value.connection_lost
    await txn.close(reusable=True)
    assert pool.idle_connections == 0
    assert sink.messages == []
    sink.data_action = "accept"
    _, _, final = await send(pool)
    assert final is not None and final.ok
    assert len(sink.messages) == 1


async def test_reply_then_hangup_stands(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    """A 250 followed by a closed connection is a delivered message, not an error."""
    sink = await smtp_sink_factory()
    sink.hangup_after_data = True
    pool = pools(sink.url)
    _, _, final = await send(pool)
    assert final is not None and final.ok
    await sink.wait_for(lambda: sink.open_connections == 0, what="hang-up")
    assert pool.idle_connections <= 1
    sink.hangup_after_data = False
    _, _, final = await send(pool)  # a fresh connection (or the MAIL retry) carries on
    assert final is not None and final.ok
    assert [m.connection for m in sink.messages] == [1, 2]


async def test_cut_while_sending_data(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    """The upstream drops the connection while the message is still being written."""
    sink = await smtp_sink_factory(data_size_limit=None)
    sink.cut_after_bytes = 100_000
    pool = pools(sink.url)
    big = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 40_000
    txn = await pool.transaction()
    assert (await txn.mail("a@example.com", ())).ok
    assert (await txn.rcpt("b@example.com", ())).ok
    with pytest.raises(UpstreamError):
        await txn.data(big)
    await txn.close(reusable=True)
    assert "CUT" in sink.commands_of(1)
    assert sink.messages == [] and pool.idle_connections == 0
    sink.cut_after_bytes = None
    _, _, final = await send(pool, data=big)
    assert final is not None and final.ok
    assert sink.messages[0].data == big


async def test_421_is_an_upstream_error(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    sink.rcpt_replies["b@example.com"] = "421 4.3.2 shutting down"
    pool = pools(sink.url)
    txn = await pool.transaction()
    assert (await txn.mail("a@example.com", ())).ok
    with pytest.raises(UpstreamError, match="421"):
        await txn.rcpt("b@example.com", ())
    await txn.close(reusable=True)
    assert pool.idle_connections == 0


async def test_cancelled_command_discards_connection(
    smtp_sink_factory: SinkFactory, pools: Any
) -> None:
    sink = await smtp_sink_factory()
    sink.data_action = "hang"
    pool = pools(sink.url)
    txn = await pool.transaction()
    assert (await txn.mail("a@example.com", ())).ok
    assert (await txn.rcpt("b@example.com", ())).ok
    task = asyncio.create_task(txn.data(MESSAGE))
    await sink.wait_for(lambda: len(sink.refused) == 1, what="message at the sink")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await txn.close(reusable=True)
    assert pool.idle_connections == 0
    await sink.wait_for(lambda: sink.open_connections == 0, what="discarded connection")


async def test_closed_pool_refuses(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    txn = await pool.transaction()
    await pool.close()
    with pytest.raises(UpstreamError, match="closed"):
        await pool.transaction()
    await txn.close(reusable=True)  # released after close: let go, not pooled
    assert pool.idle_connections == 0
    await sink.wait_for(lambda: sink.open_connections == 0, what="connection closed")


async def test_check(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url)
    await pool.check()
    assert sink.connections == 1
    await sink.wait_for(lambda: sink.open_connections == 0, what="QUIT after check")
    await sink.stop()
    with pytest.raises(UpstreamError):
        await pool.check()


# --- TLS and AUTH -------------------------------------------------------------------------


async def test_starttls_verified_with_ca(
    smtp_sink_factory: SinkFactory, pools: Any, tmp_path: Path
) -> None:
    ca = make_test_ca(tmp_path)
    sink = await smtp_sink_factory(tls=ca, require_tls=True)
    assert sink.url.startswith("smtp+starttls://")
    pool = pools(sink.url, ca_file=ca.ca_file)
    _, _, final = await send(pool)
    assert final is not None and final.ok
    assert sink.messages[0].tls
    assert "STARTTLS" in sink.commands_of(1)


async def test_starttls_untrusted_certificate_refused(
    smtp_sink_factory: SinkFactory, pools: Any, tmp_path: Path
) -> None:
    ca = make_test_ca(tmp_path / "a")
    other = make_test_ca(tmp_path / "b")
    sink = await smtp_sink_factory(tls=ca)
    pool = pools(sink.url, ca_file=other.ca_file)
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.transaction()
    # verify_tls = false accepts it (explicitly configured)
    lax = pools(sink.url, verify_tls=False)
    _, _, final = await send(lax)
    assert final is not None and final.ok


async def test_starttls_required_but_not_offered(
    smtp_sink_factory: SinkFactory, pools: Any
) -> None:
    sink = await smtp_sink_factory()
    pool = pools(sink.url.replace("smtp://", "smtp+starttls://"))
    with pytest.raises(UpstreamError, match="STARTTLS"):
        await pool.transaction()
    assert sink.messages == []


async def test_smtps(smtp_sink_factory: SinkFactory, pools: Any, tmp_path: Path) -> None:
    ca = make_test_ca(tmp_path)
    sink = await smtp_sink_factory(tls=ca, implicit_tls=True)
    assert sink.url.startswith("smtps://")
    pool = pools(sink.url, ca_file=ca.ca_file)
    _, _, final = await send(pool)
    assert final is not None and final.ok
    assert sink.messages[0].tls


async def test_auth_after_starttls(
    smtp_sink_factory: SinkFactory, pools: Any, tmp_path: Path
) -> None:
    ca = make_test_ca(tmp_path)
    sink = await smtp_sink_factory(tls=ca, auth_users={"relay": "s3cret"}, auth_required=True)
    pool = pools(sink.url, ca_file=ca.ca_file, username="relay", password="s3cret")
    _, _, final = await send(pool)
    assert final is not None and final.ok
    assert sink.messages[0].auth_user == "relay"
    verbs = sink.commands_of(1)
    assert verbs.index("STARTTLS") < verbs.index("AUTH") < verbs.index("MAIL")


async def test_auth_wrong_password(
    smtp_sink_factory: SinkFactory, pools: Any, tmp_path: Path
) -> None:
    ca = make_test_ca(tmp_path)
    sink = await smtp_sink_factory(tls=ca, implicit_tls=True, auth_users={"relay": "s3cret"})
    pool = pools(sink.url, ca_file=ca.ca_file, username="relay", password="wrong")
    with pytest.raises(UpstreamError, match="535"):
        await pool.transaction()
    assert sink.auth_logins == []


async def test_credentials_in_url(
    smtp_sink_factory: SinkFactory, pools: Any, tmp_path: Path
) -> None:
    ca = make_test_ca(tmp_path)
    sink = await smtp_sink_factory(tls=ca, implicit_tls=True, auth_users={"re lay": "p@ss"})
    url = sink.url.replace("smtps://", "smtps://re%20lay:p%40ss@")
    pool = pools(url, ca_file=ca.ca_file)
    assert "p%40ss" not in pool.description and "@" not in pool.description
    await send(pool)
    assert sink.auth_logins == ["re lay"]


# --- construction -------------------------------------------------------------------------


def test_bad_ca_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_file"):
        UpstreamPool(UpstreamConfig(url="smtps://127.0.0.1:1", ca_file=tmp_path / "missing.pem"))


def test_default_ports() -> None:
    assert UpstreamPool(UpstreamConfig(url="smtp://mx.example")).description == (
        "smtp://mx.example:25"
    )
    assert UpstreamPool(UpstreamConfig(url="smtp+starttls://mx.example")).description == (
        "smtp+starttls://mx.example:587"
    )
    assert UpstreamPool(UpstreamConfig(url="smtps://[::1]")).description == ("smtps://[::1]:465")


def test_open_upstream_picks_by_url(tmp_path: Path) -> None:
    config = load_config_text(
        f'[upstream]\nurl = "maildir:{tmp_path / "out"}"\n', base_dir=tmp_path
    )
    assert isinstance(open_upstream(config.upstream), MaildirUpstream)
    assert isinstance(open_upstream(UpstreamConfig(url="smtp://127.0.0.1:25")), UpstreamPool)


# --- the streamed DATA phase --------------------------------------------------------------


def wire_normalized(message: bytes) -> bytes:
    """What an upstream must receive for ``message``: CRLF line ends, final CRLF."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    return text if text.endswith(b"\r\n") else text + b"\r\n"


async def _roundtrip(messages: list[bytes], chunk: int) -> list[bytes]:
    async with SmtpSink(line_length_limit=10_000_000, data_size_limit=None) as sink:
        pool = UpstreamPool(UpstreamConfig(url=sink.url, timeout=5, connect_timeout=5))
        try:
            for message in messages:
                _, _, final = await send(pool, data=message)
                assert final is not None and final.ok, final
        finally:
            await pool.close()
        return [m.data for m in sink.messages]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"x", b"\r\n.\r\n", b"\n.\n", b"a.b"]),
        max_size=30,
    ).map(b"".join),
    st.integers(min_value=1, max_value=16),
)
def test_stream_data_frames_any_bytes(message: bytes, chunk: int) -> None:
    """Dot-stuffing and CRLF on every chunk boundary: exactly one message, intact."""
    original = wire_module.DATA_CHUNK
    wire_module.DATA_CHUNK = chunk
    try:
        got = asyncio.run(_roundtrip([message, b"Subject: second\r\n\r\nok\r\n"], chunk))
    finally:
        wire_module.DATA_CHUNK = original
    assert got == [wire_normalized(message), b"Subject: second\r\n\r\nok\r\n"]


async def test_large_message_with_long_lines(smtp_sink_factory: SinkFactory, pools: Any) -> None:
    sink = await smtp_sink_factory(line_length_limit=2_000_000, data_size_limit=None)
    pool = pools(sink.url)
    body = (
        b"".join(b".%d " % i + b"y" * (i * 997 % 5000) + b"\r\n" for i in range(600))
        + b"."
        + b"z" * 700_000
        + b"\r\n.\r\n"
    )
    message = b"Subject: big\r\n\r\n" + body
    assert len(message) > 3 * wire_module.DATA_CHUNK
    _, _, final = await send(pool, data=message)
    assert final is not None and final.ok
    assert sink.messages[0].data == message
