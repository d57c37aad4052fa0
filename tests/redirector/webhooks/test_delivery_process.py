"""At least once across a crash: ``clickrelay redirector`` SIGKILLed while deliveries are
in flight, then started again — every committed human click still reaches the receiver
(verified with ``standardwebhooks``), duplicates only ever under the same ``webhook-id``.
Then ``clickrelay webhooks`` and ``replay`` against the same store."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from pathlib import Path

import aiohttp

from redirector.tokens import encode_extras, load_keyring
from tests.support.config import write_config
from tests.support.net import free_ports
from tests.support.polling import until
from tests.support.processes import ClickrelayProcess, run_cli
from tests.support.webhook_receiver import WebhookReceiver, new_secret

HUMAN_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def stored_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with sqlite3.connect(db) as conn:
        try:
            return {r[0] for r in conn.execute("SELECT id FROM clicks")}
        except sqlite3.OperationalError:
            return set()


async def test_sigkill_mid_delivery_loses_nothing(tmp_path: Path) -> None:
    receiver = WebhookReceiver(new_secret())
    await receiver.start()
    http_port, admin_port = free_ports(2)
    config = write_config(
        tmp_path, http_port=http_port, admin_port=admin_port, redirector={"flush_interval": 0.02}
    )
    with config.open("a") as fh:
        # settled_only = false: about surviving a SIGKILL, sent as soon as committed.
        fh.write(
            f'\n[[webhooks]]\nname = "app"\nurl = "{receiver.url}"\n'
            f'secret = "{receiver.secret}"\ntimeout = 2.0\nretry_delay = 0.1\nconcurrency = 2\n'
            "settled_only = false\n"
        )
    db = tmp_path / "clickrelay-data" / "clicks.sqlite3"
    receiver.delay = 1.5  # deliveries stay in flight long enough to be cut
    command = ["redirector", "-c", str(config)]
    try:
        with ClickrelayProcess(command, cwd=tmp_path) as proc:
            await asyncio.to_thread(proc.wait_ready)
            keyring = load_keyring(tmp_path / "clickrelay-data" / "keys")
            async with aiohttp.ClientSession() as session:
                for i in range(10):
                    token = keyring.seal(
                        f"https://example.com/{i}",
                        host="127.0.0.1",
                        queue_id=f"Q{i}",
                        link_index=0,
                        recipient=f"r{i}@example.org",
                        sent_at=int(time.time()) - 3600,
                        extras=encode_extras("spring", {"user_id": str(i)}),
                    )
                    async with session.get(
                        f"http://127.0.0.1:{http_port}/c/{token}",
                        allow_redirects=False,
                        headers={"User-Agent": HUMAN_UA},
                    ) as resp:
                        assert resp.status == 302
            await until(lambda: len(stored_ids(db)) == 10, "10 clicks committed")
            await until(lambda: receiver.in_flight > 0, "a delivery in flight")
            proc.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(proc.wait_exit) == -signal.SIGKILL
        receiver.delay = 0.0
        committed = stored_ids(db)
        with ClickrelayProcess(command, cwd=tmp_path) as proc:
            await asyncio.to_thread(proc.wait_ready)
            # The leases of the cut deliveries run out (timeout + 5 s): sent again.
            await receiver.wait_for(committed, within=60)
            for cid, payloads in receiver.deliveries.items():
                assert {p["data"]["click_id"] for p in payloads} == {cid}
                assert payloads[0]["data"]["tag"] == "spring"

            listing = await asyncio.to_thread(
                run_cli, "webhooks", "-c", str(config), "--json", cwd=tmp_path
            )
            assert listing.returncode == 0, listing.stderr
            (status,) = [json.loads(line) for line in listing.stdout.splitlines()]
            assert status["endpoint"] == "app" and status["failed"] == 0

            # (An event cut by the SIGKILL may still arrive twice: sent again after its
            # lease, under the same webhook-id. So count per id, not in total.)
            before = {cid: len(p) for cid, p in receiver.deliveries.items()}
            replay = await asyncio.to_thread(
                run_cli, "webhooks", "-c", str(config), "replay", "--since", "1h", cwd=tmp_path
            )
            assert replay.returncode == 0, replay.stderr
            assert "app: 10 events pending again" in replay.stdout
            await until(
                lambda: all(len(receiver.deliveries[c]) > before[c] for c in committed),
                "every click delivered again after the replay",
                60,
            )
            assert set(receiver.deliveries) == committed
            assert await asyncio.to_thread(proc.stop) == 0
    finally:
        assert receiver.rejected == []
        await receiver.stop()
