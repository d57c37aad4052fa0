"""Was a click a person or a machine, as far as one request shows? Pure rules plus one
small in-memory burst tracker.

Mail security scanners (Microsoft Safe Links, Mimecast, Proofpoint, Apple's privacy proxy…)
follow most links before any person does. Every click is recorded; this module only labels
it, so that stats can show humans and bots apart. The rules, in the order they are tried
(the first that matches gives the reason):

``trap``
    The token is the invisible trap link (``[tracking] bot_trap``): no person can see
    or reach it.
``head``
    A HEAD request: browsers never send one for a click.
``no-user-agent``
    No (or a blank) ``User-Agent`` header: every browser sends one.
``scanner-agent``
    The agent contains a known scanner/crawler/HTTP-library substring
    (``redirector/clicks/data/scanner_agents.txt`` plus ``[redirector] scanner_agents_file``).
``scanner-network``
    The client's full address (before truncation) is in a published range of a mail
    security gateway (``redirector/clicks/data/scanner_networks.txt`` plus
    ``[redirector] scanner_networks_file``).
``too-soon``
    Within ``bot_seconds_after_send`` of the message's send time: a scanner at the
    receiving gateway, not a reader. (A click "before" the send time — clock skew between
    nodes — is treated the same way.)
``burst``
    ``burst_links`` or more *different* links of one message from one client address within
    ``burst_window`` seconds: a scanner walking the message. The click that completes the
    burst and later ones in the window are bots; the first few are recorded as humans
    (a redirect cannot wait to see what comes next) until the settler
    (:mod:`redirector.clicks.settle`) relabels them with the walk rules of
    :mod:`redirector.clicks.rules`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clickrelay.common.errors import ConfigError
from redirector.clicks import BOT, HUMAN
from redirector.clicks.networks import NetworkMatcher, load_networks
from redirector.config import RedirectorConfig


@dataclass(frozen=True)
class ClickVerdict:
    classification: str  # "human" | "bot"
    reason: str | None  # None for humans; "head", "no-user-agent", ... for bots

    @property
    def is_bot(self) -> bool:
        return self.classification == BOT


HUMAN_VERDICT = ClickVerdict(HUMAN, None)
_BOT_VERDICTS = {
    reason: ClickVerdict(BOT, reason)
    for reason in (
        "trap",
        "head",
        "no-user-agent",
        "scanner-agent",
        "scanner-network",
        "too-soon",
        "burst",
    )
}


def parse_agent_list(text: str) -> tuple[str, ...]:
    """Substrings from a scanner-agent file: one per line, ``#`` comments, lower-cased."""
    agents: list[str] = []
    for line in text.splitlines():
        entry = line.partition("#")[0].strip().lower()
        if entry and entry not in agents:
            agents.append(entry)
    return tuple(agents)


def bundled_agents() -> tuple[str, ...]:
    """The scanner-agent list shipped with clickrelay."""
    data = resources.files("redirector.clicks").joinpath("data/scanner_agents.txt")
    text = data.read_text("utf-8")
    return parse_agent_list(text)


def load_agents(extra_file: Path | None = None) -> tuple[str, ...]:
    """The bundled list plus the site's own file; a missing or unreadable file is an error."""
    agents = bundled_agents()
    if extra_file is None:
        return agents
    try:
        extra = parse_agent_list(extra_file.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"[redirector] scanner_agents_file: cannot read {extra_file}: {exc}"
        ) from None
    return agents + tuple(a for a in extra if a not in agents)


class AgentMatcher:
    """Case-insensitive "contains any of these substrings", with a small memo.

    A loop of ``in`` over a lower-cased agent is several times faster than one big
    regex alternation in Python's ``re``; and since a few browser versions make up most
    clicks, the answer per distinct agent string is remembered (bounded).
    """

    def __init__(self, agents: Iterable[str], *, memo_size: int = 4096) -> None:
        self.agents = tuple(dict.fromkeys(a.lower() for a in agents if a))
        self._memo: dict[str, bool] = {}
        self._memo_size = memo_size

    def __call__(self, user_agent: str) -> bool:
        known = self._memo.get(user_agent)
        if known is not None:
            return known
        lowered = user_agent.lower()
        found = any(agent in lowered for agent in self.agents)
        if len(self._memo) >= self._memo_size:
            self._memo.clear()  # crude but bounded; refills with the common agents at once
        self._memo[user_agent] = found
        return found


def rule_verdict(
    *,
    method: str,
    user_agent: str | None,
    seconds_since_send: float,
    agents: Callable[[str], bool],
    bot_seconds_after_send: float,
    network: str | None = None,
    trap: bool = False,
) -> ClickVerdict:
    """Every rule but the burst rule (which needs memory of earlier clicks).

    ``agents`` tells whether a user agent is a known scanner (an :class:`AgentMatcher`);
    ``network`` is the scanner network the client's address is in, if any.
    """
    if trap:
        return _BOT_VERDICTS["trap"]
    if method == "HEAD":
        return _BOT_VERDICTS["head"]
    if user_agent is None or not user_agent.strip():
        return _BOT_VERDICTS["no-user-agent"]
    if agents(user_agent):
        return _BOT_VERDICTS["scanner-agent"]
    if network is not None:
        return _BOT_VERDICTS["scanner-network"]
    if seconds_since_send < bot_seconds_after_send:
        return _BOT_VERDICTS["too-soon"]
    return HUMAN_VERDICT


class BurstTracker:
    """Remembers, per (message, client address), which links were clicked in the last window.

    Bounded: at most ``max_keys`` (message, address) pairs, least recently seen evicted
    first, and at most ``max_links`` links per pair. Entries older than the window are
    dropped as the tracker is used, so memory follows the click rate, not the history.
    """

    def __init__(
        self, *, window: float, links: int, max_keys: int = 50_000, max_links: int = 64
    ) -> None:
        self.window = window
        self.links = links
        self.max_keys = max_keys
        self.max_links = max(max_links, links)
        # key -> {link index: last time seen}; pairs in last-use order (oldest first) by
        # deleting and re-inserting on every use: plain dicts keep insertion order.
        self._seen: dict[tuple[str, str], dict[int, float]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def observe(self, queue_id: str, client: str, link_index: int, now: float) -> bool:
        """Note a click; True when it makes ``links`` distinct links within the window."""
        key = (queue_id, client)
        horizon = now - self.window
        seen = self._seen
        entry = seen.pop(key, None)
        if entry is None:
            entry = {link_index: now}
        else:
            if min(entry.values()) < horizon:  # (one C call when nothing is stale)
                for index in [i for i, t in entry.items() if t < horizon]:
                    del entry[index]
            entry.pop(link_index, None)
            entry[link_index] = now
            while len(entry) > self.max_links:
                del entry[next(iter(entry))]
        seen[key] = entry
        self._expire(horizon)
        return len(entry) >= self.links

    def _expire(self, horizon: float) -> None:
        seen = self._seen
        while len(seen) > self.max_keys:
            del seen[next(iter(seen))]
        # The front is the least recently touched pair: drop a few stale ones per call.
        for _ in range(4):
            if not seen:
                return
            key = next(iter(seen))
            if max(seen[key].values(), default=horizon - 1) >= horizon:
                return
            del seen[key]


class Classifier:
    """Labels clicks; holds the agent list and the burst tracker. Clock injectable for tests."""

    def __init__(
        self,
        *,
        agents: Iterable[str],
        bot_seconds_after_send: float = 10.0,
        burst_window: float = 2.0,
        burst_links: int = 3,
        clock: Callable[[], float] = time.time,
        max_tracked: int = 50_000,
        networks: NetworkMatcher | None = None,
    ) -> None:
        self.matcher = AgentMatcher(agents)
        #: Which scanner network holds a full client address (text), if any.
        self.networks = networks if networks is not None else NetworkMatcher([])
        self.bot_seconds_after_send = bot_seconds_after_send
        self.clock = clock
        self.bursts = BurstTracker(window=burst_window, links=burst_links, max_keys=max_tracked)

    @classmethod
    def from_config(
        cls, config: RedirectorConfig, *, clock: Callable[[], float] = time.time
    ) -> Classifier:
        return cls(
            agents=load_agents(config.scanner_agents_file),
            bot_seconds_after_send=config.bot_seconds_after_send,
            burst_window=config.burst_window,
            burst_links=config.burst_links,
            clock=clock,
            networks=NetworkMatcher(load_networks(config.scanner_networks_file)),
        )

    def classify(
        self,
        *,
        method: str,
        user_agent: str | None,
        client: str | None,
        queue_id: str,
        link_index: int,
        sent_at: float,
        now: float | None = None,
        network: str | None = None,
        trap: bool = False,
    ) -> ClickVerdict:
        """The verdict for one click. Every click feeds the burst tracker, bot or not.

        ``now`` (unix seconds) defaults to the classifier's clock.
        """
        if now is None:
            now = self.clock()
        burst = (
            client is not None
            and queue_id != ""
            and self.bursts.observe(queue_id, client, link_index, now)
        )
        verdict = rule_verdict(
            method=method,
            user_agent=user_agent,
            seconds_since_send=now - sent_at,
            agents=self.matcher,
            bot_seconds_after_send=self.bot_seconds_after_send,
            network=network,
            trap=trap,
        )
        if verdict.is_bot or not burst:
            return verdict
        return _BOT_VERDICTS["burst"]
