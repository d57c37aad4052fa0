"""Click classification: each rule, their order, the burst tracker, the agent lists."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickrelay.common.errors import ConfigError
from redirector.clicks.classify import (
    AgentMatcher,
    BurstTracker,
    Classifier,
    ClickVerdict,
    bundled_agents,
    load_agents,
    parse_agent_list,
    rule_verdict,
)
from redirector.config import RedirectorConfig

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
BROWSERS = (
    CHROME,
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 12; Cubot KingKong) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
)
SCANNERS = (
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.32.3",
    "Python/3.11 aiohttp/3.14.5",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
    "Microsoft Office Existence Discovery",
    "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    "facebookexternalhit/1.1 Facebot Twitterbot/1.0",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Mimecast URL Protect",
    "Proofpoint URL Defense",
    "Barracuda Sentinel (EE)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
)
AGENTS = AgentMatcher(bundled_agents())


def verdict(
    method: str = "GET", user_agent: str | None = CHROME, seconds_since_send: float = 3600.0
) -> ClickVerdict:
    return rule_verdict(
        method=method,
        user_agent=user_agent,
        seconds_since_send=seconds_since_send,
        agents=AGENTS,
        bot_seconds_after_send=10.0,
    )


def test_a_browser_long_after_sending_is_human() -> None:
    assert verdict() == ClickVerdict("human", None)
    assert not verdict().is_bot


@pytest.mark.parametrize("agent", BROWSERS)
def test_real_browser_agents_are_not_scanners(agent: str) -> None:
    assert verdict(user_agent=agent).classification == "human"


@pytest.mark.parametrize("agent", SCANNERS)
def test_known_scanner_agents_are_bots(agent: str) -> None:
    assert verdict(user_agent=agent) == ClickVerdict("bot", "scanner-agent")


def test_head_is_a_bot_whatever_the_agent() -> None:
    assert verdict(method="HEAD") == ClickVerdict("bot", "head")
    # HEAD is tried first: it wins over every other reason.
    assert verdict(method="HEAD", user_agent=None, seconds_since_send=0) == ClickVerdict(
        "bot", "head"
    )


@pytest.mark.parametrize("agent", [None, "", "   "])
def test_missing_or_blank_user_agent_is_a_bot(agent: str | None) -> None:
    assert verdict(user_agent=agent) == ClickVerdict("bot", "no-user-agent")


@pytest.mark.parametrize("seconds", [-30.0, 0.0, 3.0, 9.99])
def test_click_within_seconds_of_sending_is_too_soon(seconds: float) -> None:
    assert verdict(seconds_since_send=seconds) == ClickVerdict("bot", "too-soon")


def test_click_just_after_the_limit_is_human() -> None:
    assert verdict(seconds_since_send=10.0).classification == "human"


def test_scanner_agent_reason_wins_over_too_soon() -> None:
    assert verdict(user_agent="curl/8", seconds_since_send=0) == ClickVerdict(
        "bot", "scanner-agent"
    )


def test_agent_matching_is_case_insensitive_and_empty_list_flags_nobody() -> None:
    matcher = AgentMatcher(["MimeCast"])
    assert matcher("MIMECAST-Scanner")
    assert matcher("MIMECAST-Scanner")  # the memoised answer agrees
    assert not matcher("Mozilla/5.0")
    assert not AgentMatcher([])("curl/8")
    # Entries are plain substrings, not patterns.
    assert not AgentMatcher(["yahoo! slurp", "a.b"])("axb")


def test_agent_memo_is_bounded() -> None:
    matcher = AgentMatcher(["bot"], memo_size=10)
    for i in range(100):
        assert matcher(f"agent {i} bot") and not matcher(f"agent {i}")
    assert len(matcher._memo) <= 10


def test_parse_agent_list_skips_comments_blank_lines_and_duplicates() -> None:
    text = "# comment\n\nFooBot  # trailing comment\nfoobot\n  bar/ \n"
    assert parse_agent_list(text) == ("foobot", "bar/")


def test_bundled_list_has_a_source_comment_and_the_big_scanners() -> None:
    agents = bundled_agents()
    for name in ("mimecast", "proofpoint", "barracuda", "googleimageproxy", "curl/", "wget/"):
        assert name in agents
    assert all(a == a.lower() and a.strip() == a and a for a in agents)


def test_extra_agents_file_is_added_to_the_bundled_list(tmp_path: Path) -> None:
    extra = tmp_path / "agents.txt"
    extra.write_text("# our own link checker\nAcmeLinkCheck\ncurl/\n")
    agents = load_agents(extra)
    assert agents[: len(bundled_agents())] == bundled_agents()
    assert agents.count("curl/") == 1
    assert "acmelinkcheck" in agents


def test_missing_extra_agents_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scanner_agents_file"):
        load_agents(tmp_path / "missing.txt")


def test_classifier_from_config_uses_the_extra_file(tmp_path: Path) -> None:
    extra = tmp_path / "agents.txt"
    extra.write_text("AcmeLinkCheck\n")
    config = RedirectorConfig(scanner_agents_file=extra)
    classifier = Classifier.from_config(config, clock=lambda: 1000.0)
    got = classifier.classify(
        method="GET",
        user_agent="AcmeLinkCheck/2",
        client="192.0.2.1",
        queue_id="Q",
        link_index=0,
        sent_at=0,
    )
    assert got == ClickVerdict("bot", "scanner-agent")


# --- burst --------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_classifier(clock: FakeClock, *, window: float = 2.0, links: int = 3) -> Classifier:
    return Classifier(
        agents=bundled_agents(),
        bot_seconds_after_send=10.0,
        burst_window=window,
        burst_links=links,
        clock=clock,
    )


def click(c: Classifier, link: int, *, ip: str | None = "192.0.2.7", queue_id: str = "Q1") -> str:
    got = c.classify(
        method="GET", user_agent=CHROME, client=ip, queue_id=queue_id, link_index=link, sent_at=0
    )
    return got.reason or got.classification


def test_third_distinct_link_of_one_message_within_the_window_is_a_burst() -> None:
    clock = FakeClock()
    c = make_classifier(clock)
    assert click(c, 0) == "human"
    clock.now += 0.5
    assert click(c, 1) == "human"
    clock.now += 0.5
    assert click(c, 2) == "burst"
    clock.now += 0.5
    assert click(c, 3) == "burst"


def test_repeating_one_link_is_not_a_burst() -> None:
    clock = FakeClock()
    c = make_classifier(clock)
    for _ in range(10):
        clock.now += 0.1
        assert click(c, 0) == "human"


def test_links_spread_beyond_the_window_are_not_a_burst() -> None:
    clock = FakeClock()
    c = make_classifier(clock)
    for link in range(6):
        assert click(c, link) == "human"
        clock.now += 1.5  # two links are never within 2 s of a third


def test_burst_is_per_client_and_per_message() -> None:
    clock = FakeClock()
    c = make_classifier(clock)
    assert click(c, 0, ip="192.0.2.1") == "human"
    assert click(c, 1, ip="192.0.2.2") == "human"
    assert click(c, 2, ip="192.0.2.3") == "human"
    assert click(c, 0, queue_id="A") == "human"
    assert click(c, 1, queue_id="B") == "human"
    assert click(c, 2, queue_id="C") == "human"
    # Without a known client address there is nothing to group by.
    assert [click(c, i, ip=None) for i in range(5)] == ["human"] * 5


def test_a_bot_reason_from_the_rules_wins_over_burst_but_still_counts_toward_it() -> None:
    clock = FakeClock()
    c = make_classifier(clock)
    head = c.classify(
        method="HEAD", user_agent=CHROME, client="192.0.2.7", queue_id="Q1", link_index=0, sent_at=0
    )
    assert head == ClickVerdict("bot", "head")
    assert click(c, 1) == "human"
    assert click(c, 2) == "burst"


def test_too_soon_uses_the_classifier_clock() -> None:
    clock = FakeClock(now=5_000.0)
    c = make_classifier(clock)
    got = c.classify(
        method="GET", user_agent=CHROME, client=None, queue_id="Q", link_index=0, sent_at=4_995
    )
    assert got == ClickVerdict("bot", "too-soon")
    clock.now = 5_006.0
    got = c.classify(
        method="GET", user_agent=CHROME, client=None, queue_id="Q", link_index=0, sent_at=4_995
    )
    assert got == ClickVerdict("human", None)


def test_burst_tracker_is_bounded_and_forgets_stale_pairs() -> None:
    tracker = BurstTracker(window=2.0, links=3, max_keys=100, max_links=8)
    now = 0.0
    for i in range(1000):
        tracker.observe(f"Q{i}", "192.0.2.1", 0, now)
    assert len(tracker) <= 100
    # Much later, a handful of new clicks sweep the stale pairs away.
    now = 100.0
    for i in range(50):
        tracker.observe(f"new{i}", "192.0.2.1", 0, now)
    assert len(tracker) == 50  # the 1000 stale pairs are gone, only the new ones remain
    # Many links of one message: the per-pair memory stays bounded too.
    results = [tracker.observe("big", "192.0.2.9", link, now) for link in range(500)]
    assert results[:2] == [False, False]
    assert all(results[2:])
    assert len(tracker._seen[("big", "192.0.2.9")]) == 8


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Q1", "Q2"]),
            st.sampled_from(["192.0.2.1", "192.0.2.2"]),
            st.integers(min_value=0, max_value=5),
            st.floats(min_value=0.0, max_value=3.0, allow_nan=False),
        ),
        max_size=60,
    )
)
def test_burst_tracker_matches_a_plain_model(
    clicks: list[tuple[str, str, int, float]],
) -> None:
    # Unbounded model: a click is a burst when, counting it, its (message, address) pair
    # has clicked `links` distinct links no longer ago than the window.
    tracker = BurstTracker(window=2.0, links=3, max_links=4)
    last_seen: dict[tuple[str, str], dict[int, float]] = {}
    now = 1000.0
    for queue_id, client, link, step in clicks:
        now += step
        links = last_seen.setdefault((queue_id, client), {})
        links[link] = now
        recent = sum(1 for t in links.values() if t >= now - 2.0)
        assert tracker.observe(queue_id, client, link, now) == (recent >= 3)
    # A clock stepping back (NTP) may make it forget, but never fail or grow unbounded.
    for queue_id, client, link, step in clicks:
        now -= step
        tracker.observe(queue_id, client, link, now)
    assert all(0 < len(links) <= 4 for links in tracker._seen.values())
