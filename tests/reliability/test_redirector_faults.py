"""Click store faults under a click load: every 302 answered, every served click recorded.

* PostgreSQL cut and restored through ``tests/support/tcp_relay.py`` (a real connection fault).
* SQLite on a tiny tmpfs that fills up (disk full), and on a tmpfs mounted read-only
  (needs root and ``mount``; skipped with the reason otherwise).
* ``clickrelay redirector`` as a subprocess, SIGTERM mid-load: clicks queued at the
  signal are in the store after exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from redirector.config import RedirectorConfig
from redirector.tokens import Keyring
from tests.reliability.harness import Figures, need, scale
from tests.support.config import write_redirector_config
from tests.support.net import free_port
from tests.support.polling import until
from tests.support.processes import ClickrelayProcess

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]


def mint(keyring: Keyring, count: int, prefix: str) -> list[str]:
    return [
        keyring.seal(
            f"https://example.com/{prefix}/{i}?x=1",
            host="127.0.0.1",
            queue_id=f"{prefix}{i}",
            link_index=i,
        )
        for i in range(count)
    ]


class ClickLoad:
    """Concurrent GETs of tracked links; counts what the clients got."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.served = 0
        self.statuses: dict[int, int] = {}
        self.errors = 0

    async def run(self, tokens: list[str], concurrency: int = 8) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        for token in tokens:
            queue.put_nowait(token)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def worker() -> None:
                while not queue.empty():
                    token = queue.get_nowait()
                    url = f"http://127.0.0.1:{self.port}/c/{token}"
                    headers = {"User-Agent": "Mozilla/5.0 (reliability)"}
                    async with session.get(url, allow_redirects=False, headers=headers) as resp:
                        await resp.read()
                        self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
                        if resp.status == 302:
                            self.served += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))


async def count_pg(dsn: str, table: str) -> tuple[int, int]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(f"SELECT count(*) AS n, count(DISTINCT id) AS d FROM {table}")
        return int(row["n"]), int(row["d"])
    except asyncpg.UndefinedTableError:
        return 0, 0
    finally:
        await conn.close()


def count_sqlite(path: Path) -> tuple[int, int]:
    if not path.exists():
        return 0, 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        n, d = conn.execute("SELECT count(*), count(DISTINCT id) FROM clicks").fetchone()
        return int(n), int(d)
    except sqlite3.OperationalError:
        return 0, 0
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def fresh_pg_database(dsn: str) -> AsyncIterator[str]:
    """A new empty database on the test server (dropped afterwards)."""
    import asyncpg

    name = f"clickrelay_rel_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(dsn)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def failures_counted(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("clickrelay_click_store_write_failures_total") or 0.0


# --- PostgreSQL cut and restored -----------------------------------------------------------


@pytest.mark.parametrize("hold", [False, True], ids=["refused", "black-holed"])
async def test_pg_store_cut_and_restored_mid_load(
    pg_dsn: str, keyring: Keyring, figures: list[Figures], hold: bool
) -> None:
    service_mod = need("redirector.service", "redirector (RedirectorService)")
    relay_mod = need("tests.support.tcp_relay", "tests/support/tcp_relay.py")
    per_phase = scale(300, 3000)
    target = urlsplit(pg_dsn)
    async with (
        fresh_pg_database(pg_dsn) as db_dsn,
        relay_mod.TcpRelay((target.hostname or "127.0.0.1", target.port or 5432)) as relay,
    ):
        parts = urlsplit(db_dsn)
        netloc = (parts.username + "@" if parts.username else "") + f"127.0.0.1:{relay.port}"
        if parts.password:
            netloc = f"{parts.username}:{parts.password}@127.0.0.1:{relay.port}"
        store_url = urlunsplit(parts._replace(netloc=netloc))
        config = RedirectorConfig(
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            store=store_url,
            flush_interval=0.05,
            batch_size=100,
        )
        registry = CollectorRegistry()
        service = service_mod.RedirectorService(config, keyring, registry=registry)
        await service.start()
        load = ClickLoad(service.public_port)
        table = "clickrelay_clicks"
        try:
            await load.run(mint(keyring, per_phase, "before"))
            await until(lambda: service.recorder.queued == 0, within=60)

            await relay.cut(hold=hold)
            await load.run(mint(keyring, per_phase, "during"))
            await until(lambda: service.recorder.state == "down", within=60)
            during_state = service.recorder.state
            queued_during = service.recorder.queued

            relay.restore()
            await load.run(mint(keyring, per_phase, "after"))

            async def stored() -> tuple[int, int]:
                return await count_pg(db_dsn, table)

            async with asyncio.timeout(120):
                while (await stored())[0] < load.served:  # noqa: ASYNC110 - bounded poll of the DB
                    await asyncio.sleep(0.1)
            await until(lambda: service.recorder.queued == 0, within=60)
        finally:
            await service.stop(30)
        recorded, distinct = await count_pg(db_dsn, table)
    assert load.statuses == {302: 3 * per_phase}
    assert during_state == "down" and queued_during > 0
    assert recorded == distinct == load.served
    assert service.recorder.dropped == 0
    assert failures_counted(registry) >= 1
    figures.append(
        Figures(
            f"click store: PostgreSQL cut ({'black-holed' if hold else 'refused'}) + restored",
            load=f"{3 * per_phase} clicks, 8 concurrent",
            faults="1 cut of every store connection (tcp relay)",
            clicks_served=load.served,
            clicks_recorded=recorded,
            clicks_lost=load.served - recorded,
            notes=f"{queued_during} clicks queued while down; duplicates={recorded - distinct}",
        )
    )


# --- SQLite on a disk that fills up / is read-only --------------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tiny tmpfs (disk full / read-only data dir)")
    try:
        _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}): disk-full scenario not run")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(path: Path) -> Path:
    """Write a filler file until the filesystem is full."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = b"\0" * 65536
    try:
        while len(chunk) >= 512:
            try:
                os.write(fd, chunk)
            except OSError:
                chunk = chunk[: len(chunk) // 2]  # fill the last free bytes too
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
async def test_sqlite_data_dir_full_or_read_only(
    tmp_path: Path,
    keyring: Keyring,
    figures: list[Figures],
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    service_mod = need("redirector.service", "redirector (RedirectorService)")
    caplog.set_level(logging.INFO, logger="clickrelay")
    per_phase = scale(200, 2000)
    # Big enough for every click of the run once space is back (the filler takes the rest);
    # a click takes more room since the roll-ups, the settling evidence and their indexes.
    size_mb = scale(6, 48)
    with tmpfs(tmp_path / "data", f"{size_mb}m") as data:
        db = data / "clicks.sqlite3"
        config = RedirectorConfig(
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            store=f"sqlite:{db}",
            flush_interval=0.05,
            batch_size=50,
        )
        registry = CollectorRegistry()
        if fault == "read-only":
            # Read-only from the start (a remount while SQLite holds the file open for
            # writing is refused by the kernel with EBUSY): the store cannot even open.
            _mount("-o", "remount,ro", str(data))
        service = service_mod.RedirectorService(config, keyring, registry=registry)
        await service.start()
        load = ClickLoad(service.public_port)
        phases = 2
        try:
            if fault == "disk-full":
                phases = 3
                await load.run(mint(keyring, per_phase, "before"))
                await until(lambda: count_sqlite(db)[0] == per_phase, within=60)
                filler = fill(data)
            try:
                await load.run(mint(keyring, per_phase, "during" + "x" * 200))
                await until(lambda: service.recorder.state == "down", within=60)
                queued_during = service.recorder.queued
                async with aiohttp.ClientSession() as session:
                    health_url = f"http://127.0.0.1:{service.public_port}/healthz"
                    async with session.get(health_url) as resp:
                        assert resp.status == 200
                        health = await resp.json()
            finally:
                if fault == "disk-full":
                    filler.unlink()
                else:
                    _mount("-o", "remount,rw", str(data))
            await load.run(mint(keyring, per_phase, "after"))
            await until(
                lambda: service.recorder.queued == 0 and count_sqlite(db)[0] >= load.served,
                within=120,
            )
        finally:
            await service.stop(30)
        recorded, distinct = count_sqlite(db)
    assert load.statuses == {302: phases * per_phase}
    assert health["store"]["state"] == "down"
    assert queued_during > 0
    assert failures_counted(registry) >= 1
    assert "click-store-down" in caplog.text
    assert recorded == distinct == load.served
    figures.append(
        Figures(
            f"click store: SQLite {fault}",
            load=f"{phases * per_phase} clicks, 8 concurrent",
            faults=f"{size_mb} MB tmpfs filled up mid-run"
            if fault == "disk-full"
            else "data dir (tmpfs) read-only at start, then made writable",
            clicks_served=load.served,
            clicks_recorded=recorded,
            clicks_lost=load.served - recorded,
            notes=f"{queued_during} queued while failing; logged click-store-down; "
            f"write failures counted={failures_counted(registry):.0f}",
        )
    )


# --- clickrelay redirector, SIGTERM mid-load ----------------------------------------------------


async def test_redirector_sigterm_mid_load_flushes_queue(
    tmp_path: Path, key_file: Path, figures: list[Figures]
) -> None:
    from redirector.tokens import load_keyring

    port = free_port()
    db = tmp_path / "clicks.sqlite3"
    # A long interval: clicks are still queued when SIGTERM arrives.
    cfg = write_redirector_config(
        tmp_path, key_file, port=port, flush_interval=30.0, batch_size=100000
    )
    keyring = load_keyring(key_file)
    proc = ClickrelayProcess(["redirector", "-c", cfg], cwd=tmp_path)
    try:
        await asyncio.to_thread(proc.wait_ready, 30)
        load = ClickLoad(port)
        total = scale(500, 5000)
        tokens = mint(keyring, total, "sigterm")
        half = total // 2
        await load.run(tokens[:half])
        # SIGTERM while the second half is in flight.
        second = asyncio.create_task(load.run(tokens[half:], concurrency=4))
        await until(lambda: load.served >= half + 10, within=30)
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await second
        returncode = await asyncio.to_thread(proc.wait_exit, 60)
    finally:
        await asyncio.to_thread(proc.close)
    recorded, distinct = count_sqlite(db)
    assert returncode == 0, proc.stderr()[-2000:]
    assert load.served >= half
    assert recorded == distinct
    # Nothing served is lost; a click whose 302 was cut off by the exit may be recorded
    # without the client having seen it (at most one per concurrent client).
    assert load.served <= recorded <= load.served + 4
    figures.append(
        Figures(
            "redirector: SIGTERM mid-load",
            load=f"{load.served} clicks served of {total} attempted",
            faults="SIGTERM with clicks queued (flush interval 30 s)",
            clicks_served=load.served,
            clicks_recorded=recorded,
            clicks_lost=load.served - recorded,
        )
    )
