"""FULL run only: the whole path under combined faults, with ``clickrelay serve``.

Messages go through ``clickrelay serve`` (proxy + redirector + SQLite click store in one
process) to an upstream process; every tracked link of every delivered message is then
clicked against the same process. Meanwhile the upstream crashes and ``serve`` is
SIGTERMed and restarted. At the end: every message delivered exactly once, every click
answered 302 to the URL the sender wrote, clicks stored == 302s served.
"""

from __future__ import annotations

import asyncio
import html
import re
import sqlite3
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from redirector.tokens import load_keyring
from tests.reliability.checks import tokens_in
from tests.reliability.harness import (
    MESSAGE_ID_RE,
    Figures,
    SendStats,
    SinkProcess,
    full_only,
    make_message,
    need,
    send_with_retry,
)
from tests.support.config import config_text
from tests.support.net import free_ports
from tests.support.polling import until
from tests.support.processes import ClickrelayProcess

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600), full_only]

HREF_RE = re.compile(rb'href="([^"]+)"')


async def test_soak_serve_messages_and_clicks_under_faults(
    tmp_path: Path, key_file: Path, sink: SinkProcess, figures: list[Figures]
) -> None:
    need("clickrelay.supervisor", "clickrelay serve (clickrelay/supervisor.py)")
    smtp_port, http_port, admin_port = free_ports(3)
    db = tmp_path / "clicks.sqlite3"
    cfg = tmp_path / "serve.toml"
    base = f"http://127.0.0.1:{http_port}"
    cfg.write_text(
        config_text(
            {
                "proxy": {
                    "listen": f"127.0.0.1:{smtp_port}",
                    "admin_listen": "",
                    "hostname": "soak.test",
                    "trusted_networks": ["127.0.0.1/32"],
                    "shutdown_grace": 10,
                },
                "upstream": {"url": f"smtp://127.0.0.1:{sink.port}", "timeout": 10},
                "tracking": {"base_url": base, "key_file": key_file},
                "preflight": {"enabled": False},
                "redirector": {
                    "listen": f"127.0.0.1:{http_port}",
                    "admin_listen": f"127.0.0.1:{admin_port}",
                    "store": f"sqlite:{db}",
                    "flush_interval": 0.1,
                },
            }
        )
    )
    keyring = load_keyring(key_file)
    serve = ClickrelayProcess(["serve", "-c", cfg], cwd=tmp_path)
    await asyncio.to_thread(serve.wait_ready, 60)
    run = uuid.uuid4().hex[:8]
    total = 600
    messages = [(f"<soak-{run}-{i}@x>", make_message(f"<soak-{run}-{i}@x>")) for i in range(total)]
    stats = SendStats()
    clicks = {"served": 0, "wrong": 0, "errors": 0}
    clicked: set[str] = set()
    exits: list[int] = []

    async def click_everything(session: aiohttp.ClientSession) -> None:
        for data in sink.messages():
            match = MESSAGE_ID_RE.search(data)
            mid = match.group(1).decode() if match else ""
            if mid in clicked:
                continue
            clicked.add(mid)
            originals = {html.unescape(h.decode()) for h in HREF_RE.findall(data)}
            for token in tokens_in(data):
                try:
                    async with session.get(f"{base}/c/{token}", allow_redirects=False) as resp:
                        await resp.read()
                        if resp.status == 302:
                            clicks["served"] += 1
                            if keyring.open(token, "127.0.0.1").url != resp.headers["Location"]:
                                clicks["wrong"] += 1
                        else:
                            clicks["wrong"] += 1
                except aiohttp.ClientError:
                    clicks["errors"] += 1  # serve restarting: the click was never served
            assert originals  # the message had links to click

    deadline = time.monotonic() + 420
    senders = [
        asyncio.create_task(
            send_with_retry(
                smtp_port, messages[i::4], stats, deadline=deadline, reuse_connection=i % 2 == 0
            )
        )
        for i in range(4)
    ]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for step in range(1, 7):
                await until(lambda s=step: stats.delivered >= s * total // 8, within=180)  # type: ignore[misc]
                await click_everything(session)
                if step % 2:
                    sink.die_at(["mail", "rcpt", "data"][step % 3])
                    await until(lambda: not sink.alive, within=60)
                    sink.reap()
                    await asyncio.to_thread(sink.start)
                else:
                    exits.append(await asyncio.to_thread(serve.stop, 60))
                    serve.start()
                    await asyncio.to_thread(serve.wait_ready, 60)
            await asyncio.gather(*senders)
            await click_everything(session)
        exits.append(await asyncio.to_thread(serve.stop, 60))
    finally:
        await asyncio.to_thread(serve.close)
    ids = sink.message_ids()
    with sqlite3.connect(db) as conn:
        recorded, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT id) FROM clicks"
        ).fetchone()
    conn.close()
    duplicated = sum(n - 1 for n in ids.values() if n > 1)
    missing = sum(1 for mid, _ in messages if ids[mid] == 0)
    figures.append(
        Figures(
            "soak: clickrelay serve, messages + clicks, combined faults",
            load=f"{total} msgs (4 clients), every tracked link clicked",
            faults="3 upstream crashes + 3 serve SIGTERM/restarts",
            sent=total,
            delivered=total - missing,
            refused=stats.refused_4xx + stats.connection_errors,
            lost=missing,
            duplicated=duplicated,
            clicks_served=clicks["served"],
            clicks_recorded=recorded,
            clicks_lost=clicks["served"] - recorded,
            notes=f"serve exit codes {exits}; wrong redirects={clicks['wrong']}; "
            f"click attempts refused while restarting={clicks['errors']}",
        )
    )
    assert exits == [0] * len(exits)
    assert stats.delivered == total and missing == 0 and duplicated == 0
    assert clicks["wrong"] == 0 and clicks["served"] >= total
    assert recorded == distinct == clicks["served"]
