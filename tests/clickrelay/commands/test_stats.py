"""Stats against known clicks in both stores, ``--since`` parsing, ``clickrelay stats``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redirector.clicks import Click
from redirector.store import ClickStore
from redirector.store.pg import PgStore
from redirector.store.sqlite import SqliteStore
from redirector.store.stats import build_stats, format_stats, parse_since
from tests.support.processes import run_cli

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def click(
    queue_id: str,
    link_index: int,
    when: datetime,
    recipient: str | None,
    classification: str = "human",
    reason: str | None = None,
) -> Click:
    return Click(
        time=when,
        queue_id=queue_id,
        link_index=link_index,
        url=f"https://example.com/{queue_id}/{link_index}?q=ü",
        recipient=recipient,
        client_ip="192.0.2.0",
        user_agent="Mozilla/5.0",
        method="HEAD" if reason == "head" else "GET",
        classification=classification,
        reason=reason,
    )


KNOWN: list[Click] = [
    # Message A: a scanner HEAD first, then people; r1 clicks twice.
    click("A1", 0, at(1), "r1@x", "bot", "head"),
    click("A1", 0, at(10.123456), "r1@x"),
    click("A1", 0, at(20), "r1@x"),
    click("A1", 0, at(30), "r2@x"),
    click("A1", 1, at(2), "r3@x", "bot", "scanner-agent"),
    click("A1", 1, at(40), "r3@x"),
    # Message B: no recipient known: counted as clicks, not as unique recipients.
    click("B2", 0, at(5), None, "bot", "missing-user-agent"),
    click("B2", 0, at(50), None),
    # Message C: a day earlier (for --since).
    click("C3", 7, at(-86400), "r1@x"),
]
KNOWN_REASONS = {"head": 1, "missing-user-agent": 1, "scanner-agent": 1}


def link(index: int, url_q: str, h: int, b: int, u: int, first: str, last: str) -> dict[str, Any]:
    return {
        "link_index": index,
        "url": f"https://example.com/{url_q}/{index}?q=ü",
        "human_clicks": h,
        "bot_clicks": b,
        "unique_human_recipients": u,
        "first_click": first,
        "last_click": last,
    }


MSG_A = {
    "queue_id": "A1",
    "human_clicks": 4,
    "bot_clicks": 2,
    "unique_human_recipients": 3,
    "first_click": "2026-11-01T12:00:01Z",
    "last_click": "2026-11-01T12:00:40Z",
    "links": [
        link(0, "A1", 3, 1, 2, "2026-11-01T12:00:01Z", "2026-11-01T12:00:30Z"),
        link(1, "A1", 1, 1, 1, "2026-11-01T12:00:02Z", "2026-11-01T12:00:40Z"),
    ],
}
MSG_B = {
    "queue_id": "B2",
    "human_clicks": 1,
    "bot_clicks": 1,
    "unique_human_recipients": 0,
    "first_click": "2026-11-01T12:00:05Z",
    "last_click": "2026-11-01T12:00:50Z",
    "links": [link(0, "B2", 1, 1, 0, "2026-11-01T12:00:05Z", "2026-11-01T12:00:50Z")],
}
MSG_C = {
    "queue_id": "C3",
    "human_clicks": 1,
    "bot_clicks": 0,
    "unique_human_recipients": 1,
    "first_click": "2026-10-31T12:00:00Z",
    "last_click": "2026-10-31T12:00:00Z",
    "links": [link(7, "C3", 1, 0, 1, "2026-10-31T12:00:00Z", "2026-10-31T12:00:00Z")],
}


async def test_stats_of_known_clicks(click_store: ClickStore) -> None:
    await click_store.write(KNOWN)
    doc = await click_store.stats()
    assert doc["messages"] == [MSG_C, MSG_A, MSG_B]  # ordered by first click
    assert doc["tags"] == []
    assert doc["totals"] == {
        "human_clicks": 6,
        "bot_clicks": 3,
        "messages": 3,
        "links": 4,
        "bot_reasons": KNOWN_REASONS,
        "unsettled_clicks": 9,
        "settled_only": False,
    }
    json.dumps(doc)  # JSON-ready as it is


async def test_stats_since_leaves_older_clicks_out(click_store: ClickStore) -> None:
    await click_store.write(KNOWN)
    doc = await click_store.stats(since=T0)
    assert doc["messages"] == [MSG_A, MSG_B]
    assert {k: doc["totals"][k] for k in ("human_clicks", "bot_clicks", "messages", "links")} == {
        "human_clicks": 5,
        "bot_clicks": 3,
        "messages": 2,
        "links": 3,
    }
    # The boundary is inclusive; a later since cuts into message A's links.
    late = await click_store.stats(since=at(30))
    assert [m["queue_id"] for m in late["messages"]] == ["A1", "B2"]
    assert late["messages"][0]["human_clicks"] == 2
    assert late["messages"][0]["bot_clicks"] == 0
    assert (await click_store.stats(since=at(3600)))["totals"]["messages"] == 0


async def test_sub_second_times_survive_the_round_trip(click_store: ClickStore) -> None:
    await click_store.write([click("M", 0, at(10.123456), "r@x")])
    doc = await click_store.stats()
    assert doc["messages"][0]["first_click"] == "2026-11-01T12:00:10.123456Z"


async def test_both_stores_agree(tmp_path: Path, pg_dsn: str) -> None:
    sqlite = SqliteStore(tmp_path / "c.sqlite3")
    pg = PgStore(pg_dsn, table_prefix=f"t{uuid.uuid4().hex[:12]}_")
    try:
        docs = []
        for s in (sqlite, pg):
            await s.open()
            await s.write(KNOWN)
            docs.append(await s.stats(since=at(-100000)))
        assert docs[0] == docs[1]
    finally:
        await pg.drop_tables()
        await pg.close()
        await sqlite.close()


def test_build_stats_with_no_rows() -> None:
    assert build_stats([], []) == {
        "messages": [],
        "totals": {
            "human_clicks": 0,
            "bot_clicks": 0,
            "messages": 0,
            "links": 0,
            "bot_reasons": {},
            "unsettled_clicks": 0,
            "settled_only": False,
        },
        "tags": [],
    }


def test_text_table_shows_messages_links_and_totals() -> None:
    doc = {
        "messages": [MSG_A, MSG_B],
        "totals": {"human_clicks": 5, "bot_clicks": 3, "messages": 2, "links": 3},
    }
    text = format_stats(doc)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["message", "/"]
    a_line = next(line for line in lines if line.startswith("A1 "))
    assert a_line.split()[1:4] == ["4", "2", "3"]
    assert "2026-11-01 12:00:01" in a_line
    assert any(line.strip().startswith("#1") and "A1/1" in line for line in lines)
    assert lines[-1] == "totals: 2 messages, 3 links, 5 human clicks, 3 bot clicks"
    assert "(no clicks)" in format_stats(build_stats([], []))


NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("30m", NOW - timedelta(minutes=30)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2w", NOW - timedelta(weeks=2)),
        (" 1.5H ", NOW - timedelta(hours=1.5)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T12:00Z", datetime(2026, 11, 1, 12, tzinfo=UTC)),
        ("2026-11-01T12:00:00+02:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01 12:00", datetime(2026, 11, 1, 12, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    got = parse_since(text, now=NOW)
    assert got == expected
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "yesterday", "24", "h", "-5d", "5y", "2026-13-01", "1e9999d"])
def test_parse_since_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="since"):
        parse_since(text, now=NOW)


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=30))
def test_parse_since_either_answers_utc_or_raises_value_error(text: str) -> None:
    try:
        got = parse_since(text, now=NOW)
    except ValueError:
        return
    assert got.utcoffset() == timedelta(0)


@settings(max_examples=50, deadline=None)
@given(st.datetimes(timezones=st.just(timezone(timedelta(hours=-5)))))
def test_parse_since_round_trips_iso_times(value: datetime) -> None:
    assert parse_since(value.isoformat()) == value


# -- the command ------------------------------------------------------------------------


def run_stats(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("stats", "-c", str(config), *extra, cwd=config.parent)


async def test_command_prints_json_and_table_from_the_configured_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data" / "clicks.sqlite3")
    await store.open()
    await store.write(KNOWN)
    await store.close()
    config = tmp_path / "clickrelay.toml"
    config.write_text('[redirector]\nstore = "sqlite:data/clicks.sqlite3"\n', encoding="utf-8")

    result = run_stats(config, "--json", "--since", "2026-11-01T00:00Z")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["messages"] == [MSG_A, MSG_B]

    result = run_stats(config)
    assert result.returncode == 0, result.stderr
    assert "totals: 3 messages, 4 links, 6 human clicks, 3 bot clicks" in result.stdout
    assert "https://example.com/A1/0?q=ü" in result.stdout


async def test_command_explains_a_click_and_counts_settled_clicks(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data" / "clicks.sqlite3")
    await store.open()
    walk = [
        Click(
            time=at(n),
            queue_id="W1",
            link_index=n,
            url=f"https://example.com/{n}",
            recipient="r@x",
            client_ip="192.0.2.0",
            user_agent="Mozilla/5.0",
            method="GET",
            classification="human",
            reason=None,
            id=f"{n:032x}",
            client_key="k",
            net_key="n",
            settled=n == 0,
        )
        for n in range(3)
    ]
    await store.write(walk)
    await store.settle([(walk[1].id, "walk", '{"rule": "walk", "links": 3}')], [walk[1].id])
    await store.close()
    config = tmp_path / "clickrelay.toml"
    config.write_text('[redirector]\nstore = "sqlite:data/clicks.sqlite3"\n', encoding="utf-8")

    result = run_stats(config, "--explain-click", walk[1].id)
    assert result.returncode == 0, result.stderr
    assert f"click {walk[1].id}: bot (walk), settled" in result.stdout
    assert '"links": 3' in result.stdout
    assert result.stdout.count("same address") == 2  # its two neighbours

    result = run_stats(config, "--explain-click", walk[1].id, "--json")
    doc = json.loads(result.stdout)
    assert doc["click"]["evidence"] == {"rule": "walk", "links": 3}
    assert [n["id"] for n in doc["nearby"]] == [walk[0].id, walk[2].id]

    result = run_stats(config, "--explain-click", "f" * 32)
    assert result.returncode != 0
    assert "no click" in result.stderr

    result = run_stats(config, "--json", "--settled")
    totals = json.loads(result.stdout)["totals"]
    assert (totals["human_clicks"], totals["bot_clicks"], totals["settled_only"]) == (1, 1, True)
    assert totals["unsettled_clicks"] == 1
    assert totals["bot_reasons"] == {"walk": 1}
    result = run_stats(config)
    assert "bot clicks by reason: walk 1" in result.stdout
    assert "not settled yet: 1 clicks" in result.stdout


async def test_command_reads_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    store = PgStore(pg_dsn, table_prefix=prefix)
    await store.open()
    try:
        await store.write(KNOWN)
        config = tmp_path / "clickrelay.toml"
        sep = "&" if "?" in pg_dsn else "?"
        config.write_text(
            f'[redirector]\nstore = "{pg_dsn}{sep}table_prefix={prefix}"\n', encoding="utf-8"
        )
        result = await asyncio.to_thread(run_stats, config, "--json", "--since", "2026-11-01")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["messages"] == [MSG_A, MSG_B]
    finally:
        await store.drop_tables()
        await store.close()


def test_command_says_clearly_when_the_store_is_missing(tmp_path: Path) -> None:
    config = tmp_path / "clickrelay.toml"
    config.write_text('[redirector]\nstore = "sqlite:nowhere/clicks.sqlite3"\n', encoding="utf-8")
    result = run_stats(config)
    assert result.returncode == 2
    assert "no click store at" in result.stderr
    assert "nowhere" in result.stderr
    assert not (tmp_path / "nowhere").exists()  # reading never creates a store


def test_command_says_clearly_when_the_store_is_unreachable(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    config = tmp_path / "clickrelay.toml"
    config.write_text(
        f'[redirector]\nstore = "postgresql://u:secret@127.0.0.1:{unused_tcp_port}/db"\n',
        encoding="utf-8",
    )
    result = run_stats(config, "--json")
    assert result.returncode == 2
    assert "cannot read the click store" in result.stderr
    assert "secret" not in result.stderr
    assert result.stdout == ""


def test_command_rejects_a_bad_since(tmp_path: Path) -> None:
    config = tmp_path / "clickrelay.toml"
    config.write_text('[redirector]\nstore = "sqlite:c.sqlite3"\n', encoding="utf-8")
    result = run_stats(config, "--since", "last tuesday")
    assert result.returncode == 2
    assert "--since" in result.stderr


# -- property: the stores' SQL agrees with a plain Python count -------------------------


def reference_stats(clicks: list[Click], since: datetime | None) -> dict[str, Any]:
    """What the stats must be, counted the obvious way."""

    def summary(group: list[Click]) -> dict[str, Any]:
        humans = [c for c in group if c.classification == "human"]
        times = [c.time for c in group]
        return {
            "human_clicks": len(humans),
            "bot_clicks": len(group) - len(humans),
            "unique_human_recipients": len({c.recipient for c in humans if c.recipient}),
            "first_click": min(times).isoformat().replace("+00:00", "Z"),
            "last_click": max(times).isoformat().replace("+00:00", "Z"),
        }

    chosen = [c for c in clicks if since is None or c.time >= since]
    messages: dict[str, list[Click]] = {}
    for c in chosen:
        messages.setdefault(c.queue_id, []).append(c)
    out = []
    links_total = 0
    for queue_id, group in messages.items():
        links: dict[tuple[int, str], list[Click]] = {}
        for c in group:
            links.setdefault((c.link_index, c.url), []).append(c)
        links_total += len(links)
        out.append(
            {
                "queue_id": queue_id,
                **summary(group),
                "links": [
                    {"link_index": i, "url": u, **summary(links[(i, u)])} for i, u in sorted(links)
                ],
            }
        )
    out.sort(key=lambda m: (min(c.time for c in messages[m["queue_id"]]), m["queue_id"]))
    return {
        "messages": out,
        "totals": {
            "human_clicks": sum(m["human_clicks"] for m in out),
            "bot_clicks": sum(m["bot_clicks"] for m in out),
            "messages": len(out),
            "links": links_total,
            "bot_reasons": dict(
                sorted(Counter(str(c.reason) for c in chosen if c.classification == "bot").items())
            ),
            "unsettled_clicks": sum(1 for c in chosen if not c.settled),
            "settled_only": False,
        },
        "tags": [],
    }


clicks_strategy = st.lists(
    st.builds(
        click,
        queue_id=st.sampled_from(["A", "B", "C", "D"]),
        link_index=st.integers(0, 3),
        # Whole milliseconds: distinct enough, and min/max ties cannot reorder messages.
        when=st.integers(0, 10_000).map(lambda ms: T0 + timedelta(milliseconds=ms)),
        recipient=st.sampled_from([None, "a@x", "b@x", "c@x"]),
        classification=st.sampled_from(["human", "bot"]),
    ),
    max_size=40,
)


async def _stats_via(store: ClickStore, clicks: list[Click], since: datetime | None) -> Any:
    await store.open()
    try:
        await store.write(clicks)
        return await store.stats(since)
    finally:
        if isinstance(store, PgStore):
            await store.drop_tables()
        await store.close()


@settings(max_examples=25, deadline=None)
@given(clicks=clicks_strategy, since_ms=st.none() | st.integers(0, 10_000))
def test_sqlite_stats_match_a_plain_count(
    tmp_path_factory: pytest.TempPathFactory, clicks: list[Click], since_ms: int | None
) -> None:
    since = None if since_ms is None else T0 + timedelta(milliseconds=since_ms)
    store = SqliteStore(tmp_path_factory.mktemp("prop") / "c.sqlite3")
    got = asyncio.run(_stats_via(store, clicks, since))
    assert got == reference_stats(clicks, since)


@settings(max_examples=15, deadline=None)
@given(clicks=clicks_strategy, since_ms=st.none() | st.integers(0, 10_000))
def test_pg_stats_match_a_plain_count(
    pg_dsn: str, clicks: list[Click], since_ms: int | None
) -> None:
    since = None if since_ms is None else T0 + timedelta(milliseconds=since_ms)
    store = PgStore(pg_dsn, table_prefix=f"t{uuid.uuid4().hex[:12]}_")
    got = asyncio.run(_stats_via(store, clicks, since))
    assert got == reference_stats(clicks, since)
