"""RedirectorService end to end: real listeners on port 0, real SQLite click store.

Clicks served must equal clicks stored (exactly once), a store that is down at start must
not stop redirects and must catch up when it returns, shutdown flushes the queue.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from clickrelay.common.errors import ConfigError
from redirector.config import RedirectorConfig
from redirector.service import RedirectorService, parse_listen
from redirector.store import open_store
from redirector.tokens import Keyring, new_key_line, parse_keys
from tests.support.polling import until
from tests.support.redirector_service import running_redirector
from tests.support.tcp_relay import TcpRelay

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
LONG_AGO = 1_700_000_000


def config_for(store_path: Path, **kwargs: Any) -> RedirectorConfig:
    kwargs.setdefault("flush_interval", 0.02)
    return RedirectorConfig(
        listen="127.0.0.1:0", admin_listen="127.0.0.1:0", store=f"sqlite:{store_path}", **kwargs
    )


async def fetch(
    session: aiohttp.ClientSession, url: str, *, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    async with session.request(
        method, url, allow_redirects=False, headers={"User-Agent": BROWSER}
    ) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def stored_totals(path: Path) -> dict[str, Any]:
    store = open_store(f"sqlite:{path}")
    try:
        await store.open()
        doc = await store.stats(None)
    finally:
        await store.close()
    totals: dict[str, Any] = doc["totals"]
    return totals


def tokens(keyring: Keyring, count: int, queue_id: str = "Q") -> list[str]:
    return [
        keyring.seal(
            f"https://example.com/{i}",
            host="127.0.0.1",
            queue_id=f"{queue_id}{i}",
            link_index=0,
            sent_at=LONG_AGO,
        )
        for i in range(count)
    ]


async def test_clicks_served_equal_clicks_stored(tmp_path: Path, keyring: Keyring) -> None:
    db = tmp_path / "data" / "clicks.sqlite3"
    async with (
        running_redirector(config_for(db), keyring) as service,
        aiohttp.ClientSession() as session,
    ):
        base = f"http://127.0.0.1:{service.public_port}"
        admin = f"http://127.0.0.1:{service.admin_port}"
        served = 0
        for token in tokens(keyring, 40):
            status, headers, _ = await fetch(session, f"{base}/c/{token}")
            assert status == 302
            assert headers["Location"].startswith("https://example.com/")
            served += 1
        status, _, _ = await fetch(session, f"{base}/c/forged-token")
        assert status == 404

        async def store_ok() -> bool:
            _, _, body = await fetch(session, f"{base}/healthz")
            return bool(json.loads(body)["store"]["state"] == "ok")

        await until(store_ok, "store ok", within=10)

        async def all_in_api_stats() -> bool:
            status, _, body = await fetch(session, f"{admin}/api/stats")
            return status == 200 and json.loads(body)["totals"]["human_clicks"] == served

        await until(all_in_api_stats, "all in api stats", within=10)
        _, _, body = await fetch(session, f"{admin}/metrics")
        assert b'clickrelay_redirects_total{result="302"} 40.0' in body
        # Each listener serves only its own endpoints.
        assert (await fetch(session, f"{base}/metrics"))[0] == 404
        assert (await fetch(session, f"{admin}/c/{tokens(keyring, 1)[0]}"))[0] == 404
    totals = await stored_totals(db)
    assert totals["human_clicks"] == served
    assert totals["bot_clicks"] == 0


async def test_shutdown_flushes_queued_clicks(tmp_path: Path, keyring: Keyring) -> None:
    db = tmp_path / "clicks.sqlite3"
    # A batch would only be written an hour from now: only stop() can write these.
    config = config_for(db, flush_interval=3600.0, batch_size=10_000)
    service = RedirectorService(config, keyring)
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            for token in tokens(keyring, 25):
                status, _, _ = await fetch(
                    session, f"http://127.0.0.1:{service.public_port}/c/{token}"
                )
                assert status == 302
            # HEAD counts too (as a bot).
            status, _, _ = await fetch(
                session,
                f"http://127.0.0.1:{service.public_port}/c/{tokens(keyring, 1, 'H')[0]}",
                method="HEAD",
            )
            assert status == 302
        recorder = service.recorder
        assert recorder is not None
        assert recorder.queued == 26
    finally:
        await service.stop()
    assert recorder.queued == 0
    totals = await stored_totals(db)
    assert (totals["human_clicks"], totals["bot_clicks"]) == (25, 1)


async def test_store_down_at_start_still_redirects_and_catches_up(
    tmp_path: Path, keyring: Keyring
) -> None:
    blocker = tmp_path / "store-dir"
    blocker.write_text("a file where the store's directory should be")
    db = blocker / "clicks.sqlite3"
    async with (
        running_redirector(config_for(db), keyring) as service,
        aiohttp.ClientSession() as session,
    ):
        base = f"http://127.0.0.1:{service.public_port}"
        admin = f"http://127.0.0.1:{service.admin_port}"

        async def health() -> dict[str, Any]:
            status, _, body = await fetch(session, f"{admin}/api/health")
            assert status == 200
            doc: dict[str, Any] = json.loads(body)
            return doc

        async def store_down() -> bool:
            return bool((await health())["store"]["state"] == "down")

        await until(store_down, "store down", within=10)
        for token in tokens(keyring, 5):
            status, headers, _ = await fetch(session, f"{base}/c/{token}")
            assert status == 302
            assert "Location" in headers
        assert (await health())["store"]["queued"] == 5

        # The store comes back: the recorder's retries find it and write the queue.
        blocker.unlink()
        blocker.mkdir()

        async def caught_up() -> bool:
            doc = await health()
            return bool(doc["store"]["state"] == "ok" and doc["store"]["queued"] == 0)

        await until(caught_up, "caught up", within=20.0)
    assert (await stored_totals(db))["human_clicks"] == 5


async def test_update_keyring_rotates_keys_live(tmp_path: Path) -> None:
    old = parse_keys(new_key_line())
    rotated_line = new_key_line()
    rotated = parse_keys(rotated_line)
    config = config_for(tmp_path / "clicks.sqlite3")
    async with running_redirector(config, old) as service, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{service.public_port}"
        token = tokens(rotated, 1)[0]
        assert (await fetch(session, f"{base}/c/{token}"))[0] == 404
        service.update_keyring(rotated)
        assert (await fetch(session, f"{base}/c/{token}"))[0] == 302
        _, _, body = await fetch(session, f"{base}/healthz")
        assert json.loads(body)["key_ids"] == list(rotated.key_ids)


async def test_port_in_use_fails_start_and_cleans_up(tmp_path: Path, keyring: Keyring) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = RedirectorConfig(
            listen=f"127.0.0.1:{port}",
            admin_listen="127.0.0.1:0",
            store=f"sqlite:{tmp_path / 'clicks.sqlite3'}",
        )
        service = RedirectorService(config, keyring)
        with pytest.raises(OSError):
            await service.start()
        with pytest.raises(RuntimeError):
            _ = service.public_port
        await service.stop()  # a second stop is harmless


async def test_postgresql_outage_through_a_relay_never_delays_redirects(
    pg_dsn: str, keyring: Keyring
) -> None:
    """The acceptance scenario: PostgreSQL cut off (black-holed) mid-run; every redirect
    still answers 302 at once, and after the restore every click is stored exactly once."""
    parts = urlsplit(pg_dsn)
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    async with TcpRelay((parts.hostname or "127.0.0.1", parts.port or 5432)) as relay:
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{relay.port}" if userinfo else f"127.0.0.1:{relay.port}"
        store_url = parts._replace(netloc=netloc, query=f"table_prefix={prefix}").geturl()
        config = RedirectorConfig(
            listen="127.0.0.1:0", admin_listen="127.0.0.1:0", store=store_url, flush_interval=0.02
        )
        service = RedirectorService(config, keyring)
        await service.start()
        recorder = service.recorder
        assert recorder is not None
        served = 0
        try:
            async with aiohttp.ClientSession() as session:
                base = f"http://127.0.0.1:{service.public_port}"

                async def redirect_all(batch: list[str]) -> int:
                    # Bounded: a redirect that waited for the store would blow this.
                    async with asyncio.timeout(10):
                        results = [await fetch(session, f"{base}/c/{t}") for t in batch]
                    assert all(status == 302 for status, _, _ in results)
                    return len(results)

                served += await redirect_all(tokens(keyring, 10, "before"))

                async def flushed() -> bool:
                    return recorder.queued == 0 and recorder.state == "ok"

                await until(flushed, "flushed", within=30)
                await relay.cut(hold=True)
                served += await redirect_all(tokens(keyring, 20, "during"))

                async def down() -> bool:
                    return recorder.state == "down"

                await until(down, "down", within=30)
                served += await redirect_all(tokens(keyring, 5, "down"))
                assert recorder.queued >= 25
                relay.restore()
                await until(flushed, "flushed", within=30)
        finally:
            await service.stop(10)
        assert recorder.dropped == 0
        conn = await asyncpg.connect(pg_dsn)
        try:
            rows = await conn.fetch(f"SELECT id, queue_id FROM {prefix}clicks")
            await conn.execute(f"DROP TABLE IF EXISTS {prefix}clicks, {prefix}schema_version")
        finally:
            await conn.close()
        assert len(rows) == served == 35
        assert len({r["id"] for r in rows}) == served  # each click exactly once


def test_unreadable_scanner_agents_file_fails_before_binding(tmp_path: Path) -> None:
    config = config_for(tmp_path / "clicks.sqlite3", scanner_agents_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match="scanner_agents_file"):
        RedirectorService(config, parse_keys(new_key_line()))


def test_bad_scanner_networks_file_fails_before_binding(tmp_path: Path) -> None:
    missing = config_for(tmp_path / "clicks.sqlite3", scanner_networks_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match="scanner_networks_file"):
        RedirectorService(missing, parse_keys(new_key_line()))
    bad = tmp_path / "nets.txt"
    bad.write_text("gateway 10.0.0.0/33\n", "utf-8")
    config = config_for(tmp_path / "clicks.sqlite3", scanner_networks_file=bad)
    with pytest.raises(ConfigError, match=r"nets.txt:1"):
        RedirectorService(config, parse_keys(new_key_line()))


@pytest.mark.parametrize("value", ["8080", "localhost", ":8080", "host:99999", "::1:80", "[::1]"])
def test_bad_listen_values_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError, match="listen"):
        parse_listen(value)
    with pytest.raises(ConfigError, match="admin_listen"):
        RedirectorService(RedirectorConfig(admin_listen=value), parse_keys(new_key_line()))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:8080", ("::1", 8080)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
)
def test_listen_values(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected
