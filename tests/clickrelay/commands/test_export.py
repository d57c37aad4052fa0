"""``clickrelay export`` as a real subprocess, and ``GET /api/clicks`` on a running admin
listener, over a real SQLite store."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from redirector.config import RedirectorConfig
from redirector.service import RedirectorService
from redirector.store.sqlite import SqliteStore
from tests.redirector.store.test_store import make_click
from tests.support.processes import run_cli

NOW = datetime.now(UTC).replace(microsecond=0)


async def _fill(path: Path) -> list[str]:
    store = SqliteStore(path)
    await store.open()
    clicks = [
        make_click(
            i,
            time=NOW - timedelta(days=3 - i),
            tag="spring" if i % 2 == 0 else None,
            metadata={"user_id": str(i)} if i % 2 == 0 else None,
            queue_id=f"Q{i}",
        )
        for i in range(4)
    ]
    await store.write(clicks)
    await store.close()
    return [c.id for c in clicks]


def _config(tmp_path: Path, db: Path) -> Path:
    path = tmp_path / "clickrelay.toml"
    path.write_text(f'[redirector]\nstore = "sqlite:{db}"\n')
    return path


async def test_export_jsonl_csv_and_filters(tmp_path: Path) -> None:
    db = tmp_path / "clicks.sqlite3"
    ids = await _fill(db)
    config = str(_config(tmp_path, db))
    out = run_cli("export", "-c", config, "--format", "jsonl", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["click_id"] for r in rows] == ids
    assert rows[0]["tag"] == "spring" and rows[0]["metadata"] == {"user_id": "0"}
    assert rows[1]["tag"] is None and rows[1]["metadata"] == {}

    tagged = run_cli("export", "-c", config, "--format", "jsonl", "--tag", "spring", cwd=tmp_path)
    assert [json.loads(x)["click_id"] for x in tagged.stdout.splitlines()] == [ids[0], ids[2]]

    recent = run_cli("export", "-c", config, "--since", "36h", cwd=tmp_path)
    table = list(csv.DictReader(io.StringIO(recent.stdout)))
    assert [r["click_id"] for r in table] == ids[2:]
    assert json.loads(table[0]["metadata"]) == {"user_id": "2"}

    until = (NOW - timedelta(days=2)).isoformat()
    older = run_cli("export", "-c", config, "--until", until, "--format", "jsonl", cwd=tmp_path)
    assert [json.loads(x)["click_id"] for x in older.stdout.splitlines()] == ids[:1]

    bad = run_cli("export", "-c", config, "--since", "yesterday-ish", cwd=tmp_path)
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr


async def test_api_clicks_pages_through_every_click(tmp_path: Path, keyring: object) -> None:
    db = tmp_path / "clicks.sqlite3"
    ids = await _fill(db)
    from redirector.tokens import Keyring

    assert isinstance(keyring, Keyring)
    service = RedirectorService(
        RedirectorConfig(listen="127.0.0.1:0", admin_listen="127.0.0.1:0", store=f"sqlite:{db}"),
        keyring,
    )
    await service.start()
    try:
        base = f"http://127.0.0.1:{service.admin_port}/api/clicks"
        seen: list[str] = []
        cursor = ""
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(f"{base}?limit=3&cursor={cursor or 0}") as resp:
                    assert resp.status == 200
                    doc = await resp.json()
                seen.extend(c["click_id"] for c in doc["clicks"])
                if doc["next_cursor"] is None:
                    break
                cursor = doc["next_cursor"]
            assert seen == ids
            async with session.get(f"{base}?tag=spring&since=36h") as resp:
                doc = await resp.json()
            assert [c["click_id"] for c in doc["clicks"]] == [ids[2]]
            for bad in ("limit=0", "cursor=x", "since=soon"):
                async with session.get(f"{base}?{bad}") as resp:
                    assert resp.status == 400, bad
    finally:
        await service.stop()


async def test_stats_tag_filter_and_per_tag_totals(tmp_path: Path) -> None:
    db = tmp_path / "clicks.sqlite3"
    await _fill(db)
    config = str(_config(tmp_path, db))
    every = run_cli("stats", "-c", config, "--json", cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    doc = json.loads(every.stdout)
    assert doc["tags"] == [{"tag": "spring", "human_clicks": 2, "bot_clicks": 0}]
    assert doc["totals"]["human_clicks"] == 4
    spring = json.loads(
        run_cli("stats", "-c", config, "--json", "--tag", "spring", cwd=tmp_path).stdout
    )
    assert spring["totals"]["human_clicks"] == 2
    text = run_cli("stats", "-c", config, cwd=tmp_path).stdout
    assert "tag spring: 2 human clicks, 0 bot clicks" in text


def test_reading_commands_never_create_a_store(tmp_path: Path) -> None:
    db = tmp_path / "nowhere.sqlite3"
    config = _config(tmp_path, db)
    with config.open("a") as fh:
        fh.write('[[webhooks]]\nurl = "http://127.0.0.1:9/h"\nsecret = "whsec_' + "A" * 44 + '"\n')
    for args in (("export",), ("webhooks",), ("webhooks", "replay", "--since", "1h")):
        done = run_cli(*args, "-c", str(config), cwd=tmp_path)
        assert done.returncode == 2 and "no click store at" in done.stderr, args
    assert not db.exists()
