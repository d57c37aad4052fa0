"""The ``maildir:`` upstream: exact bytes, atomic delivery, unique names."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from clickrelay.common.errors import ConfigError
from smtp_proxy.config import UpstreamConfig
from smtp_proxy.upstream import Reply, UpstreamError, open_upstream
from smtp_proxy.upstream.maildir import MaildirUpstream, unique_name

MESSAGE = b"From: a@example.com\r\nSubject: caf\xc3\xa9\r\n\r\n.line\r\nbare\nlf\x00nul\r\n"


def maildir(path: Path) -> MaildirUpstream:
    upstream = open_upstream(UpstreamConfig(url=f"maildir:{path}"))
    assert isinstance(upstream, MaildirUpstream)
    return upstream


async def deliver(upstream: MaildirUpstream, data: bytes = MESSAGE) -> Reply:
    txn = await upstream.transaction()
    assert (await txn.mail("a@example.com", ["BODY=8BITMIME"])) == Reply(250, "2.1.0 Ok")
    assert (await txn.rcpt("b@example.com", [])) == Reply(250, "2.1.5 Ok")
    reply = await txn.data(data)
    await txn.close(reusable=True)
    return reply


async def test_delivers_exact_bytes(tmp_path: Path) -> None:
    box = tmp_path / "outbox"
    upstream = maildir(box)
    reply = await deliver(upstream)
    assert reply.code == 250
    assert reply.message.startswith("2.0.0 Ok: delivered to maildir ")
    name = reply.message.rsplit(" ", 1)[1]
    files = list((box / "new").iterdir())
    assert [f.name for f in files] == [name]
    assert files[0].read_bytes() == MESSAGE
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert list((box / "tmp").iterdir()) == []
    assert (box / "cur").is_dir()
    assert stat.S_IMODE(box.stat().st_mode) == 0o700
    await upstream.close()


async def test_names_unique_under_concurrency(tmp_path: Path) -> None:
    upstream = maildir(tmp_path / "outbox")
    bodies = [b"Subject: %d\r\n\r\nx\r\n" % i for i in range(40)]
    replies = await asyncio.gather(*(deliver(upstream, body) for body in bodies))
    names = {r.message.rsplit(" ", 1)[1] for r in replies}
    assert len(names) == 40
    stored = sorted(f.read_bytes() for f in (tmp_path / "outbox" / "new").iterdir())
    assert stored == sorted(bodies)


async def test_transaction_state_machine(tmp_path: Path) -> None:
    upstream = maildir(tmp_path / "outbox")
    txn = await upstream.transaction()
    assert (await txn.rcpt("b@example.com", [])).code == 503
    assert (await txn.data(MESSAGE)).code == 503
    assert (await txn.mail("", [])).ok  # null sender (bounces) is fine
    assert (await txn.mail("a@example.com", [])).code == 503
    assert (await txn.data(MESSAGE)).code == 503
    assert (await txn.rcpt("b@example.com", [])).ok
    assert (await txn.data(MESSAGE)).ok
    # a second transaction on the same object starts clean
    assert (await txn.mail("a@example.com", [])).ok
    await txn.close(reusable=False)
    with pytest.raises(UpstreamError):
        await txn.rcpt("b@example.com", [])
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == 1


async def test_unwritable_maildir_is_an_upstream_error(tmp_path: Path) -> None:
    blocker = tmp_path / "outbox"
    blocker.write_text("not a directory")
    upstream = maildir(blocker)
    with pytest.raises(UpstreamError, match="cannot deliver"):
        await deliver(upstream)
    with pytest.raises(UpstreamError):
        await upstream.check()


async def test_failed_rename_leaves_no_temporary_file(tmp_path: Path) -> None:
    box = tmp_path / "outbox"
    upstream = maildir(box)
    await upstream.check()
    (box / "new").rmdir()
    (box / "new").write_text("in the way")  # rename into new/ must fail
    with pytest.raises(UpstreamError):
        await deliver(upstream)
    assert list((box / "tmp").iterdir()) == []


async def test_check_creates_maildir(tmp_path: Path) -> None:
    box = tmp_path / "a" / "b"
    upstream = maildir(box)
    await upstream.check()
    assert all((box / sub).is_dir() for sub in ("tmp", "new", "cur"))
    assert {"8bitmime", "smtputf8"} <= upstream.extensions
    assert upstream.description == f"maildir:{box}"


def test_unique_name_escapes_host() -> None:
    name = unique_name("evil/host:name")
    assert "/" not in name and ":" not in name
    assert name.endswith(".evil\\057host\\072name")
    assert unique_name("h") != unique_name("h")


def test_bad_url() -> None:
    with pytest.raises(ConfigError, match="maildir:PATH"):
        MaildirUpstream(UpstreamConfig(url="smtp://h:25"))
