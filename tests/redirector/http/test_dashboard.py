"""The admin dashboard over real sockets: a RedirectorService on port 0 with a real SQLite
store; access control, pages, CSV, windows and the health strip."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import aiohttp
import lxml.html
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickrelay.common.errors import ConfigError
from redirector.clicks import Click
from redirector.config import RedirectorConfig
from redirector.http.charts import buckets, line_chart
from redirector.http.dashboard import CSP, csv_cell, number, parse_view, percent
from redirector.http.health import HealthItem
from redirector.service import RedirectorService
from redirector.tokens import Keyring, new_key_line

TOKEN = "s3cret-admin-token-0123456789"
NOW = datetime.now(UTC)
HOSTILE_UA = '<script>alert("ua")</script>\'"\u202e' + "x" * 10_000
HOSTILE_URL = 'https://example.com/"><script>alert(1)</script>?q=\u202e&a=<b>'
HOSTILE_TAG = '<script>alert("tag")</script>\'"\u202e<b>bold</b>'
LONG_TAG = "<i>" + "t" * 10_240 + "</i>\u202e"  # too long for a request line: overview only
#: The tag of each message of the test store (Q3 has none).
TAGS = {"Q0": "spring", "Q1": "spring", "Q2": "autumn", "Q3": None}

ROUTES = [
    "/",
    "/?window=7d",
    "/message?queue_id=Q1",
    "/link?url=https%3A%2F%2Fexample.com%2F1",
    "/tag?tag=spring",
    "/?format=csv",
    "/message?queue_id=Q1&format=csv",
    "/link?url=https%3A%2F%2Fexample.com%2F1&format=csv",
    "/tag?tag=spring&format=csv",
    "/api/clicks",
    "/api/health",
    "/api/stats",
    "/metrics",
    "/static/dashboard.css",
    "/static/favicon.svg",
]


def clicks() -> list[Click]:
    out = []
    for i in range(60):
        human = i % 3 != 0
        out.append(
            Click(
                NOW - timedelta(hours=i % 20, minutes=1),
                f"Q{i % 4}",
                i % 2,
                f"https://example.com/{i % 2}",
                f"r{i % 5}@example.org",
                "192.0.2.0",
                "Mozilla/5.0",
                "GET",
                "human" if human else "bot",
                None if human else ("head" if i % 2 else "scanner-agent"),
                tag=TAGS[f"Q{i % 4}"],
            )
        )
    out.append(
        Click(
            NOW,
            "EVIL",
            0,
            HOSTILE_URL,
            None,
            "192.0.2.0",
            HOSTILE_UA,
            "GET",
            "human",
            None,
            tag=HOSTILE_TAG,
        )
    )
    out.append(
        Click(
            NOW,
            "EVIL2",
            0,
            "https://example.com/2",
            None,
            None,
            None,
            "GET",
            "bot",
            "head",
            tag=LONG_TAG,
        )
    )
    return out


async def service(tmp_path: Path, keyring: Keyring, **kwargs: Any) -> RedirectorService:
    config = RedirectorConfig(
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        store=f"sqlite:{tmp_path / 'clicks.sqlite3'}",
        **kwargs,
    )
    svc = RedirectorService(config, keyring)
    await svc.start()
    assert svc.recorder is not None
    await svc.recorder.store.write(clicks())
    return svc


@pytest.fixture
async def admin(tmp_path: Path, keyring: Keyring) -> AsyncIterator[str]:
    svc = await service(tmp_path, keyring)
    try:
        yield f"http://127.0.0.1:{svc.admin_port}"
    finally:
        await svc.stop()


async def fetch(url: str, **kwargs: Any) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as resp:
        return resp.status, dict(resp.headers), await resp.text()


# -- access ---------------------------------------------------------------------------


async def test_token_guards_every_admin_route(tmp_path: Path, keyring: Keyring) -> None:
    svc = await service(tmp_path, keyring, admin_token=TOKEN)
    base = f"http://127.0.0.1:{svc.admin_port}"
    basic = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    wrong_basic = base64.b64encode(f"admin:{TOKEN}x".encode()).decode()
    try:
        for route in [*ROUTES, "/no-such-page"]:
            for headers in (
                {},
                {"Authorization": f"Bearer {TOKEN[:-1]}"},
                {"Authorization": f"Bearer {TOKEN}x"},
                {"Authorization": f"Basic {wrong_basic}"},
                {"Authorization": "Basic !!!"},
                {"Authorization": TOKEN},
            ):
                status, got, body = await fetch(base + route, headers=headers)
                assert status == 401, (route, headers, status)
                assert "Basic realm" in got["WWW-Authenticate"]
                assert "Q1" not in body and "example.com" not in body
            for auth in (f"Bearer {TOKEN}", f"Basic {basic}"):
                status, got, _ = await fetch(base + route, headers={"Authorization": auth})
                assert status == (404 if route == "/no-such-page" else 200), (route, status)
                # Reading needs no cookie, and every answer carries the strict CSP.
                assert "Set-Cookie" not in got and got["Content-Security-Policy"] == CSP
    finally:
        await svc.stop()


def test_non_loopback_admin_without_token_refuses_to_start(keyring: Keyring) -> None:
    for host in ("0.0.0.0", "192.0.2.1", "[::]", "admin.example.com"):
        config = RedirectorConfig(listen="127.0.0.1:0", admin_listen=f"{host}:0")
        with pytest.raises(ConfigError, match="admin_token"):
            RedirectorService(config, keyring)
    # With a token, or on loopback, it may.
    RedirectorService(RedirectorConfig(admin_listen="0.0.0.0:0", admin_token=TOKEN), keyring)
    for host in ("127.0.0.1", "127.1.2.3", "[::1]", "localhost"):
        RedirectorService(RedirectorConfig(admin_listen=f"{host}:0"), keyring)


# -- pages ----------------------------------------------------------------------------


async def test_overview_numbers_equal_api_stats(admin: str) -> None:
    status, headers, html = await fetch(admin + "/?window=24h")
    assert status == 200
    assert headers["Content-Security-Policy"] == CSP
    assert "Set-Cookie" not in headers
    _, _, stats_text = await fetch(admin + "/api/stats")
    stats = json.loads(stats_text)
    doc = lxml.html.fromstring(html)
    human = doc.get_element_by_id("human-clicks")
    bot = doc.get_element_by_id("bot-clicks")
    assert int(human.get("data-value")) == stats["totals"]["human_clicks"]
    assert int(bot.get("data-value")) == stats["totals"]["bot_clicks"]
    assert human.text_content() == f"{stats['totals']['human_clicks']:,}"
    # 24 hourly points per series.
    for series in ("human", "bot"):
        points = doc.xpath(f'//*[@data-series="{series}"]//*[local-name()="circle"]')
        assert len(points) == 24
    assert (
        sum(
            int(p.get("data-value"))
            for p in doc.xpath('//*[@data-series="human"]//*[local-name()="circle"]')
        )
        == stats["totals"]["human_clicks"]
    )
    assert not doc.xpath("//script")
    by_message = {m["queue_id"]: m["human_clicks"] for m in stats["messages"]}
    for cell in doc.xpath("//td[@data-queue-id]"):
        assert int(cell.text_content().replace(",", "")) == by_message[cell.get("data-queue-id")]


async def test_drill_down_escapes_hostile_values(admin: str) -> None:
    status, _, html = await fetch(admin + "/link?" + urlencode({"url": HOSTILE_URL}))
    assert status == 200
    doc = lxml.html.fromstring(html)
    assert not doc.xpath("//script") and not doc.xpath("//b")
    assert doc.get_element_by_id("subject").text_content() == HOSTILE_URL
    (ua,) = doc.xpath('//*[@class="ua-text"]')
    assert ua.text_content() == HOSTILE_UA


async def test_tag_drill_down_numbers_equal_api_stats(admin: str) -> None:
    for tag, messages in (("spring", 30), ("autumn", 15)):
        status, headers, html = await fetch(admin + "/tag?" + urlencode({"tag": tag}))
        assert status == 200 and headers["Content-Security-Policy"] == CSP
        _, _, stats_text = await fetch(admin + "/api/stats?" + urlencode({"tag": tag}))
        totals = json.loads(stats_text)["totals"]
        doc = lxml.html.fromstring(html)
        assert doc.get_element_by_id("subject").text_content() == tag
        human = int(doc.get_element_by_id("human-clicks").get("data-value"))
        bot = int(doc.get_element_by_id("bot-clicks").get("data-value"))
        assert (human, bot) == (totals["human_clicks"], totals["bot_clicks"])
        assert human + bot == messages
        reasons = {
            c.get("data-reason"): int(c.text_content()) for c in doc.xpath("//td[@data-reason]")
        }
        assert reasons == totals["bot_reasons"]
        unique = int(doc.get_element_by_id("unique-humans").get("data-value"))
        assert unique == len(
            {c.recipient for c in clicks() if c.tag == tag and c.classification == "human"}
        )
        rows = doc.xpath('//table[@class="clicks"]/tbody/tr[contains(@class, "click")]')
        assert len(rows) == messages
        # Recent clicks link to their message; every one is of a message with this tag.
        shown = {a.text_content() for a in doc.xpath('//table[@class="clicks"]//a')}
        assert shown == {q for q, t in TAGS.items() if t == tag}
        assert not doc.xpath('//section[@id="top-tags"]')  # the tag itself: no table
        # The window form keeps the tag; the CSV link downloads the same clicks.
        assert doc.xpath('//input[@name="tag"]')[0].get("value") == tag
        href = doc.get_element_by_id("csv").get("href")
        assert href.startswith("/tag?") and f"tag={tag}" in href
        _, headers, text = await fetch(admin + href)
        assert f"clicks-tag-{tag}-" in headers["Content-Disposition"]
        csv_rows = list(csv.reader(io.StringIO(text)))[1:]
        assert len(csv_rows) == messages
        assert {r[6] for r in csv_rows} == shown
    status, _, html = await fetch(admin + "/tag?tag=no-such-tag")
    assert status == 200
    doc = lxml.html.fromstring(html)
    assert doc.get_element_by_id("human-clicks").get("data-value") == "0"
    assert doc.xpath('//td[@class="empty"]')


async def test_top_tags_link_to_the_tag_view(admin: str) -> None:
    _, _, stats_text = await fetch(admin + "/api/stats")
    by_tag = {t["tag"]: t for t in json.loads(stats_text)["tags"]}
    for path in ("/", "/message?queue_id=Q1", "/link?url=https%3A%2F%2Fexample.com%2F1"):
        status, _, html = await fetch(admin + path)
        assert status == 200
        doc = lxml.html.fromstring(html)
        cells = doc.xpath('//section[@id="top-tags"]//td[@data-tag]')
        assert cells, path
        for cell in cells:
            tag = cell.get("data-tag")
            link = cell.getparent().xpath(".//a")[0]
            assert link.get("href") == "/tag?" + urlencode({"window": "24h", "tag": tag})
            if path == "/":
                assert int(cell.text_content().replace(",", "")) == by_tag[tag]["human_clicks"]
        tags = [c.get("data-tag") for c in cells]
        if path == "/":
            assert set(tags) == {"spring", "autumn", HOSTILE_TAG, LONG_TAG}
            assert tags[0] == "spring"  # by human clicks, most first
        elif path.startswith("/message"):
            assert tags == ["spring"]


async def test_hostile_tag_is_text(admin: str) -> None:
    status, _, html = await fetch(admin + "/")
    doc = lxml.html.fromstring(html)
    assert not doc.xpath("//script") and not doc.xpath("//b") and not doc.xpath("//i")
    texts = [a.text_content() for a in doc.xpath('//section[@id="top-tags"]//a')]
    assert HOSTILE_TAG in texts and LONG_TAG in texts
    status, _, html = await fetch(admin + "/tag?" + urlencode({"tag": HOSTILE_TAG}))
    assert status == 200
    doc = lxml.html.fromstring(html)
    assert not doc.xpath("//script") and not doc.xpath("//b")
    assert doc.get_element_by_id("subject").text_content() == HOSTILE_TAG
    assert doc.get_element_by_id("human-clicks").get("data-value") == "1"
    assert doc.xpath('//input[@name="tag"]')[0].get("value") == HOSTILE_TAG


async def test_csv_is_what_the_page_shows_and_formula_safe(admin: str) -> None:
    status, headers, text = await fetch(admin + "/message?queue_id=Q1&format=csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["time (UTC)", "class", "reason"]
    assert len(rows) - 1 == 15  # Q1: clicks 1, 5, 9, ... 57
    assert {r[6] for r in rows[1:]} == {"Q1"}
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_cell("@x") == "'@x" and csv_cell("plain") == "plain" and csv_cell(None) == ""


async def test_custom_window_in_a_chosen_zone(admin: str) -> None:
    zone = ZoneInfo("Asia/Kolkata")
    today = datetime.now(zone).date()
    query = {
        "window": "custom",
        "from": (today - timedelta(days=2)).isoformat(),
        "to": today.isoformat(),
        "tz": "Asia/Kolkata",
    }
    status, _, html = await fetch(admin + "/?" + urlencode(query))
    assert status == 200
    view = parse_view(query, datetime.now(UTC))
    doc = lxml.html.fromstring(html)
    rows = doc.xpath('//table[@class="series-table"]/tbody/tr')
    expected = buckets([], view.start, view.end, view.bucket_hours)
    assert len(rows) == len(expected) == len(doc.xpath('//*[@data-series="human"]/*'))
    # Bucket times are shown in the chosen zone (UTC+05:30: the half hour shows).
    assert rows[0].xpath("td")[0].text_content() == view.when(view.start)
    assert view.when(view.start).endswith(":30")
    assert "times in Asia/Kolkata" in doc.xpath("//footer")[0].text_content()
    # Every click of the test store is inside the window, and the chart holds them all.
    _, _, stats_text = await fetch(admin + "/api/stats")
    totals = json.loads(stats_text)["totals"]
    drawn = sum(int(c.get("data-value")) for c in doc.xpath('//*[@data-series="bot"]/*'))
    assert drawn == totals["bot_clicks"]
    # The form keeps the window.
    assert doc.xpath('//input[@name="from"]')[0].get("value") == query["from"]
    assert doc.xpath("//option[@selected]")[0].get("value") == "custom"


async def test_overview_csv_is_the_chart_numbers(admin: str) -> None:
    _, _, html = await fetch(admin + "/?window=7d")
    shown = [
        [td.text_content().replace(",", "") for td in tr.xpath("td")]
        for tr in lxml.html.fromstring(html).xpath('//table[@class="series-table"]/tbody/tr')
    ]
    status, headers, text = await fetch(admin + "/?window=7d&format=csv")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["bucket start (UTC)", "human", "bot"]
    assert rows[1:] == shown and len(shown) > 24


def test_numbers_are_formatted_for_people() -> None:
    assert number(1234) == "1,234" and number(1_234_567) == "1,234,567" and number(7) == "7"
    assert percent(1, 8) == "12.5 %" and percent(2, 3) == "66.7 %" and percent(0, 0) == "–"


@pytest.mark.parametrize(
    "query",
    [
        "?window=1y",
        "?tz=../../etc/passwd",
        "?tz=Nowhere/Land",
        "?window=custom",
        "?window=custom&from=2026-02-01&to=2026-01-01",
        "?window=custom&from=1900-01-01",
        "?window=custom&from=yesterday",
    ],
)
async def test_bad_window_is_a_clear_400(admin: str, query: str) -> None:
    status, headers, html = await fetch(admin + "/" + query)
    assert status == 400
    assert headers["Content-Security-Policy"] == CSP
    assert lxml.html.fromstring(html).get_element_by_id("error").text_content()


async def test_drill_down_needs_its_subject(admin: str) -> None:
    for route in ("/message", "/message?queue_id=", "/link?url=", "/link", "/tag", "/tag?tag="):
        status, _, html = await fetch(admin + route)
        assert status == 400, route
        error = lxml.html.fromstring(html).get_element_by_id("error").text_content()
        assert error.endswith("?"), (route, error)


async def test_health_strip_lists_store_and_failing_providers_in_red(
    tmp_path: Path, keyring: Keyring
) -> None:
    config = RedirectorConfig(
        listen="127.0.0.1:0", admin_listen="127.0.0.1:0", store=f"sqlite:{tmp_path / 'c.db'}"
    )
    svc = RedirectorService(config, keyring)

    def broken() -> list[HealthItem]:
        raise RuntimeError("provider bug")

    svc.health_providers.append(
        lambda: [HealthItem("preflight", "https://t.example", "bad", "nxdomain", "", "add a CNAME")]
    )
    svc.health_providers.append(broken)
    await svc.start()
    try:
        status, _, html = await fetch(f"http://127.0.0.1:{svc.admin_port}/")
        assert status == 200
        doc = lxml.html.fromstring(html)
        strip = doc.get_element_by_id("health")
        assert "needs-action" in strip.get("class")
        text = strip.text_content()
        assert "click store" in text and "add a CNAME" in text and "provider bug" in text
    finally:
        await svc.stop()


# -- pure parts -----------------------------------------------------------------------


def test_preset_windows_and_buckets() -> None:
    now = datetime(2026, 11, 30, 12, 34, tzinfo=UTC)
    for window, start, points in (
        ("24h", datetime(2026, 11, 29, 13, tzinfo=UTC), 24),
        ("7d", datetime(2026, 11, 24, tzinfo=UTC), 27),  # 6 days + 13 hours in 6-hour steps
        ("30d", datetime(2026, 11, 1, tzinfo=UTC), 30),  # 29 days + today so far
    ):
        view = parse_view({"window": window}, now)
        assert view.end == datetime(2026, 11, 30, 13, tzinfo=UTC)
        assert view.start == start
        assert len(buckets([], view.start, view.end, view.bucket_hours)) == points
    view = parse_view(
        {"window": "custom", "from": "2026-11-01", "to": "2026-11-02", "tz": "Asia/Kolkata"}, now
    )
    assert view.start == datetime(2026, 10, 31, 18, tzinfo=UTC)  # 18:30 floored
    assert view.end == datetime(2026, 11, 2, 19, tzinfo=UTC)  # through the 2nd, ceiled
    assert view.when(view.start) == "2026-10-31 23:30"


@given(st.dictionaries(st.sampled_from(["window", "from", "to", "tz"]), st.text(max_size=30)))
def test_any_query_string_is_a_view_or_a_clear_error(query: dict[str, str]) -> None:
    try:
        view = parse_view(query, datetime(2026, 11, 30, 12, tzinfo=UTC))
    except ValueError as exc:
        assert str(exc)
    else:
        assert view.start < view.end


@given(
    st.lists(st.tuples(st.integers(0, 800), st.integers(0, 50), st.integers(0, 50)), max_size=50),
    st.sampled_from([1, 6, 24]),
)
def test_buckets_keep_every_click_in_the_window(
    rows: list[tuple[int, int, int]], size: int
) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = start + timedelta(hours=720)
    hours = [(start + timedelta(hours=h), a, b) for h, a, b in rows]
    got = buckets(hours, start, end, size)
    inside = [r for r in rows if r[0] < 720]
    assert sum(b.human for b in got) == sum(a for _, a, _ in inside)
    assert sum(b.bot for b in got) == sum(b for _, _, b in inside)
    chart = line_chart(got, lambda d: d.isoformat())
    assert all(len(s.points) == len(got) for s in chart.series)
    assert all(12 <= p.y <= 192 for s in chart.series for p in s.points)


def test_clickrelay_redirector_refuses_a_public_admin_listener_without_token(
    tmp_path: Path,
) -> None:
    from tests.support.config import write_redirector_config
    from tests.support.processes import run_cli

    (tmp_path / "keys").write_text(new_key_line() + "\n")
    (tmp_path / "keys").chmod(0o600)
    config = write_redirector_config(tmp_path, tmp_path / "keys", port=0, admin_listen="0.0.0.0:0")
    proc = run_cli("redirector", "-c", str(config), cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "admin_token" in proc.stderr and "127.0.0.1" in proc.stderr
