"""The dashboard in a real browser: headless Chromium against a running ``clickrelay serve``.

Clicks are made the way people make them: real GETs (and HEADs, and a scanner's GET) of
real tokens on the public listener. The page must show the numbers ``/api/stats`` gives,
draw one chart point per bucket, log no console error and no CSP violation, and show
hostile user agents and URLs as text (checked in the browser's DOM).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from redirector.clicks import Click
from redirector.store.sqlite import SqliteStore
from redirector.token_types import encode_extras
from redirector.tokens import Keyring, load_keyring
from tests.support.browser import chromium, console_problems, require_chromium
from tests.support.config import write_config
from tests.support.net import free_ports
from tests.support.polling import wait_until
from tests.support.processes import ClickrelayProcess

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
HOSTILE_UA = "<script>document.title='pwned'</script>\"'<img src=x>\u202eevil"
HOSTILE_URL = "https://example.com/\"><script>alert(1)</script>?q='x'&r=\u202eabc<b>bold</b>"
LONG_UA = "<i>" + "A" * 10_240 + "</i>\u202e"
LONG_URL = "https://example.com/" + "<u>x</u>" * 1300
HOSTILE_TAG = "<script>document.title='pwned'</script>\"'<b>\u202espring"
LONG_TAG = "<i>" + "T" * 10_240 + "</i>\u202e"
#: The tag sealed into each DASHQ message's links.
TAGS = ("spring", "spring", "autumn")
LONG_AGO = 1_700_000_000
REPO = Path(__file__).resolve().parents[3]


def get(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def raw_get(port: int, path: str, user_agent: str) -> bytes:
    """A GET whose User-Agent is raw UTF-8 (urllib only sends Latin-1 headers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n".encode()
            + b"User-Agent: "
            + user_agent.encode()
            + b"\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def api_stats(admin_port: int, **query: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{admin_port}/api/stats?{urlencode(query)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        doc: dict[str, Any] = json.load(r)
    return doc


def make_clicks(keyring: Keyring, http_port: int) -> int:
    """Real clicks on the public listener; returns how many were redirected.

    They arrive through a trusted proxy on loopback (``X-Forwarded-For``): each reader
    opens each link from an address of its own /24, as people on their own devices do
    (from one address, the walk rules rightly call three links in a second a scanner);
    a link checker sends the HEADs and scanner GETs from another network.
    """
    base = f"http://127.0.0.1:{http_port}/c/"
    made = 0
    for m in range(3):
        checker = {"X-Forwarded-For": f"10.99.{m}.1"}
        for link in range(3):
            person = {"User-Agent": BROWSER_UA, "X-Forwarded-For": f"10.{m}.{link}.7"}
            token = keyring.seal(
                f"https://example.com/campaign/{link}",
                host="127.0.0.1",
                queue_id=f"DASHQ{m}",
                link_index=link,
                recipient=f"reader{m}@example.org",
                sent_at=LONG_AGO,
                extras=encode_extras(TAGS[m], None),
            )
            for _ in range(m + 1):
                assert get(base + token, headers=person) == 302
                made += 1
            head = {**checker, "User-Agent": BROWSER_UA}
            assert get(base + token, method="HEAD", headers=head) == 302
            assert get(base + token, headers={**checker, "User-Agent": "Barracuda Sentinel"}) == 302
            made += 2
    token = keyring.seal(
        HOSTILE_URL,
        host="127.0.0.1",
        queue_id="EVIL1",
        link_index=0,
        sent_at=LONG_AGO,
        extras=encode_extras(HOSTILE_TAG, None),
    )
    assert b" 302 " in raw_get(http_port, "/c/" + token, HOSTILE_UA).split(b"\r\n")[0] + b" "
    return made + 1


def write_long_values(store_path: Path) -> None:
    """10 KB values cannot arrive in a header (aiohttp caps a field at 8 KB) or a token
    (8,000 characters): they are in the store before the service starts."""

    async def write() -> None:
        store = SqliteStore(store_path)
        try:
            click = Click(
                datetime.now(UTC),
                "EVIL2",
                0,
                LONG_URL,
                None,
                None,
                LONG_UA,
                "GET",
                "human",
                None,
                tag=LONG_TAG,
            )
            await store.write([click])
        finally:
            await store.close()

    asyncio.run(write())


def check_page(driver: Any, url: str, shot: Path) -> None:
    driver.get(url)
    assert driver.find_elements("css selector", "#health"), driver.page_source[:500]
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    problems = console_problems(driver)
    assert not problems, problems
    assert not driver.find_elements("tag name", "script")
    assert driver.title != "pwned"


def number(driver: Any, element_id: str) -> int:
    element = driver.find_element("id", element_id)
    text = element.text.replace(",", "")
    assert text == element.get_attribute("data-value")
    return int(text)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    require_chromium()
    tmp_path = tmp_path_factory.mktemp("dash")
    http_port, admin_port = free_ports(2)
    # Every click stored (the repeat limit would keep only the first few from this one
    # client), so the counts below are known.
    config = write_config(
        tmp_path,
        http_port=http_port,
        admin_port=admin_port,
        redirector={"repeat_clicks_stored": 1000, "trusted_proxies": ["127.0.0.1/32"]},
    )
    # The store the service will open already holds the 10 KB values.
    write_long_values(tmp_path / "clickrelay-data" / "clicks.sqlite3")
    process = ClickrelayProcess(["serve", "-c", config], cwd=tmp_path)
    try:
        process.wait_ready()
        keyring = load_keyring(tmp_path / "clickrelay-data" / "keys")
        made = make_clicks(keyring, http_port) + 1
        wait_until(
            lambda: (
                sum(api_stats(admin_port)["totals"][k] for k in ("human_clicks", "bot_clicks"))
                == made
            ),
            30,
            failure=lambda: f"stats never reached {made}: {api_stats(admin_port)['totals']}",
        )
        yield admin_port, tmp_path
    finally:
        process.close()


def test_overview_in_chromium_equals_api_stats(served: Any, tmp_path: Path) -> None:
    admin_port, _ = served
    stats = api_stats(admin_port)
    with chromium() as driver:
        check_page(driver, f"http://127.0.0.1:{admin_port}/", tmp_path / "overview.png")
        assert number(driver, "human-clicks") == stats["totals"]["human_clicks"]
        assert number(driver, "bot-clicks") == stats["totals"]["bot_clicks"]
        humans = {m["queue_id"]: m["human_clicks"] for m in stats["messages"]}
        cells = driver.find_elements("css selector", "td[data-queue-id]")
        assert len(cells) == len(humans)
        for cell in cells:
            assert int(cell.text.replace(",", "")) == humans[cell.get_attribute("data-queue-id")]
        for series in ("human", "bot"):
            points = driver.find_elements("css selector", f'g[data-series="{series}"] circle')
            assert len(points) == 24
        drawn = driver.find_elements("css selector", 'g[data-series="bot"] circle')
        assert (
            sum(int(p.get_attribute("data-value")) for p in drawn) == stats["totals"]["bot_clicks"]
        )
        reasons = {
            c.get_attribute("data-reason"): int(c.text)
            for c in driver.find_elements("css selector", "td[data-reason]")
        }
        assert reasons["head"] == 9 and reasons["scanner-agent"] == 9
        # A 7-day window: six-hour points from midnight six days ago to now, as many
        # as the table of the numbers behind the chart has rows.
        check_page(
            driver,
            f"http://127.0.0.1:{admin_port}/?window=7d&tz=Europe/Berlin",
            tmp_path / "7d.png",
        )
        drawn = driver.find_elements("css selector", 'g[data-series="human"] circle')
        assert 25 <= len(drawn) <= 28
        assert len(drawn) == len(driver.find_elements("css selector", ".series-table tbody tr"))
        if os.environ.get("CLICKRELAY_UPDATE_SCREENSHOT"):
            driver.get(f"http://127.0.0.1:{admin_port}/")
            driver.save_screenshot(str(tmp_path / "docs.png"))
            shutil.copy(tmp_path / "docs.png", REPO / "docs" / "dashboard.png")


def test_message_drill_down_in_chromium(served: Any, tmp_path: Path) -> None:
    admin_port, _ = served
    stats = api_stats(admin_port)
    (entry,) = [m for m in stats["messages"] if m["queue_id"] == "DASHQ2"]
    with chromium() as driver:
        check_page(
            driver, f"http://127.0.0.1:{admin_port}/message?queue_id=DASHQ2", tmp_path / "msg.png"
        )
        assert number(driver, "human-clicks") == entry["human_clicks"]
        assert number(driver, "bot-clicks") == entry["bot_clicks"]
        assert number(driver, "unique-humans") == entry["unique_human_recipients"]
        rows = driver.find_elements("css selector", "table.clicks tr.click")
        assert len(rows) == entry["human_clicks"] + entry["bot_clicks"]
        # The CSV link downloads what the table shows.
        href = driver.find_element("id", "csv").get_attribute("href")
        with urllib.request.urlopen(href, timeout=10) as resp:
            lines = resp.read().decode().strip().splitlines()
        assert len(lines) - 1 == len(rows)


def test_tag_drill_down_in_chromium(served: Any, tmp_path: Path) -> None:
    admin_port, _ = served
    base = f"http://127.0.0.1:{admin_port}"
    with chromium() as driver:
        # From the overview's top tags, the way a person gets there.
        check_page(driver, f"{base}/", tmp_path / "overview-tags.png")
        humans = {t["tag"]: t["human_clicks"] for t in api_stats(admin_port)["tags"]}
        cells = driver.find_elements("css selector", "#top-tags td[data-tag]")
        assert {c.get_attribute("data-tag") for c in cells} == set(humans)
        for cell in cells:
            assert int(cell.text.replace(",", "")) == humans[cell.get_attribute("data-tag")]
        driver.find_element("css selector", '#top-tags a[href*="tag=spring"]').click()
        assert driver.current_url.startswith(f"{base}/tag?")
        check_page(driver, driver.current_url, tmp_path / "tag.png")
        stats = api_stats(admin_port, tag="spring")
        assert driver.find_element("id", "subject").text == "spring"
        human, bot = number(driver, "human-clicks"), number(driver, "bot-clicks")
        assert (human, bot) == (stats["totals"]["human_clicks"], stats["totals"]["bot_clicks"])
        # DASHQ0 and DASHQ1: 3 links each, clicked m + 1 times, one HEAD and one scanner.
        assert human + bot == 3 * 3 + 3 * 4
        assert human == 3 * 1 + 3 * 2  # each reader's own GETs; HEADs and the scanner: bots
        url = f"{base}/api/clicks?tag=spring"
        with urllib.request.urlopen(url, timeout=10) as resp:
            stored = json.load(resp)["clicks"]
        assert len(stored) == human + bot
        assert number(driver, "unique-humans") == len(
            {c["recipient"] for c in stored if c["classification"] == "human"}
        )
        for series, total in (("human", human), ("bot", bot)):
            points = driver.find_elements("css selector", f'g[data-series="{series}"] circle')
            assert len(points) == 24
            assert sum(int(p.get_attribute("data-value")) for p in points) == total
        rows = driver.find_elements("css selector", "table.clicks tr.click")
        assert len(rows) == human + bot
        messages = {a.text for a in driver.find_elements("css selector", "table.clicks a")}
        assert messages == {"DASHQ0", "DASHQ1"}
        assert not driver.find_elements("id", "top-tags")
        href = driver.find_element("id", "csv").get_attribute("href")
        with urllib.request.urlopen(href, timeout=10) as resp:
            lines = resp.read().decode().strip().splitlines()
        assert len(lines) - 1 == len(rows)


@pytest.mark.parametrize(
    ("queue_id", "url", "user_agent", "tag"),
    [("EVIL1", HOSTILE_URL, HOSTILE_UA, HOSTILE_TAG), ("EVIL2", LONG_URL, LONG_UA, LONG_TAG)],
    ids=["short", "10k"],
)
def test_hostile_values_are_text_in_the_dom(
    served: Any, tmp_path: Path, queue_id: str, url: str, user_agent: str, tag: str
) -> None:
    admin_port, _ = served
    base = f"http://127.0.0.1:{admin_port}"
    with chromium() as driver:
        check_page(driver, f"{base}/message?queue_id={queue_id}", tmp_path / "hostile.png")
        for element in ("script", "img", "b", "i", "u"):
            assert not driver.find_elements("tag name", element), element
        (ua,) = driver.find_elements("css selector", ".ua-text")
        assert ua.get_attribute("textContent") == user_agent
        (shown,) = driver.find_elements("css selector", ".url-text")
        assert shown.get_attribute("textContent") == url
        check_page(driver, f"{base}/", tmp_path / "hostile-overview.png")
        texts = [
            e.get_attribute("textContent")
            for e in driver.find_elements("css selector", "#top-links td.url")
        ]
        assert url in texts
        tags = [
            e.get_attribute("textContent")
            for e in driver.find_elements("css selector", "#top-tags td.tag")
        ]
        assert tag in tags
        if len(tag) < 2048:  # like a link, a real tag fits a request line
            check_page(
                driver, f"{base}/tag?{urlencode({'tag': tag}, quote_via=quote)}", tmp_path / "t.png"
            )
            for element in ("script", "img", "b", "i", "u"):
                assert not driver.find_elements("tag name", element), element
            assert driver.find_element("id", "subject").get_attribute("textContent") == tag
            assert number(driver, "human-clicks") == 1
        if len(url) < 2048:  # a link drill-down fits a request line for real link sizes
            check_page(
                driver,
                f"{base}/link?{urlencode({'url': url}, quote_via=quote)}",
                tmp_path / "l.png",
            )
            for element in ("script", "img", "b", "i", "u"):
                assert not driver.find_elements("tag name", element), element
            assert driver.find_element("id", "subject").get_attribute("textContent") == url
