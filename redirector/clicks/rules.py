"""Walk rules: pure functions from the clicks of a few messages to the ones that are bots.

A redirect is labelled the moment it is served (:mod:`redirector.clicks.classify`), but a
scanner's walk through a message only shows once several of its requests are in. These
rules look at every click of a message together — as the settler reads them back from the
store, so every node reaches the same answer — and name the human-labelled clicks that
belong to a scanner, each with its reason and the evidence.

The clicks of one *copy* of a message (same ``queue_id`` and ``recipient``: everyone
gets their own tokens) are grouped by the client that made them: its full address (as a
keyed hash, see :mod:`redirector.clicks.clientkeys`), its /24 (IPv6: /48), and the named
scanner network it came from, if any. Colleagues behind one office NAT are different
recipients, so they never form one group.

``walk`` — a scanner walking the message
    Within one group, ``k >= 2`` *different* links in a span of at most
    ``pair_span`` seconds (k = 2) or ``chain_gap x (k - 1)`` seconds (k >= 3, at most
    ``max_span``): every click in that span. Safe Links, Mimecast and Barracuda fetch
    every link of a message within seconds of delivery (or at a fixed pace a few seconds
    apart); a person opens a link, reads, comes back: distinct links seconds apart are
    not a person's pace. Several detonation hosts of one /24 sharing the work are one
    group through the /24 key.
``fan-out`` — one link, several machines
    The same link of one copy fetched from ``fanout_addresses`` or more different
    addresses of one /24 or one scanner network within ``fanout_window`` seconds: a
    sandbox farm checking a link in parallel. A person opens a link from one device.
``regular`` — machine-regular intervals
    ``regular_clicks`` or more consecutive clicks of one group whose gaps are each at
    most ``regular_max_gap`` seconds and differ from each other by at most
    ``regular_tolerance`` (relative): a scheduler spacing requests on purpose (a
    scanner that slows down to avoid burst rules). People are not metronomes.
``after-head`` — GET following a HEAD
    A GET of a link from the address that sent a HEAD for that same link in the
    ``head_follow`` seconds before: Proofpoint URL Defense and several link checkers
    HEAD a URL then GET it. Browsers never send HEAD for a click.
``trap`` — the invisible link was fetched
    A click on the trap link (a link no person can see or reach, see the README) is a
    bot at once; so is every click of that copy from the same address within
    ``trap_window`` seconds of it, and every click of a walk that includes it.

Every rule only ever turns a human label into a bot label: evidence that arrives later
can add bots, never take one back. Every rule looks at most :attr:`WalkRules.horizon`
seconds away from a click, so a label can be settled that long after the click.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from redirector.clicks import BOT, HUMAN

#: The reasons the walk rules give, besides those of the serve-time rules.
WALK_REASONS = ("walk", "fan-out", "regular", "after-head", "trap")


class Seen(NamedTuple):
    """What the rules know of one click (read back from the store)."""

    id: str
    at: float  # unix seconds
    queue_id: str
    recipient: str | None
    link_index: int
    client: str | None  # keyed hash of the full address
    net: str | None  # keyed hash of its /24 (/48)
    network: str | None  # named scanner network
    method: str
    label: str  # HUMAN | BOT
    reason: str | None
    trap: bool = False


class Relabel(NamedTuple):
    """A human click the rules found to be a bot."""

    id: str
    reason: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class WalkRules:
    pair_span: float = 3.0
    chain_gap: float = 5.0
    max_span: float = 20.0
    fanout_window: float = 5.0
    fanout_addresses: int = 2
    regular_clicks: int = 4
    regular_max_gap: float = 6.0
    regular_tolerance: float = 0.05
    head_follow: float = 10.0
    trap_window: float = 20.0

    @property
    def horizon(self) -> float:
        """How far from a click (seconds) any rule looks: the least settle delay."""
        return max(
            self.pair_span,
            min(self.max_span, self.chain_gap * 64),
            self.fanout_window,
            self.regular_max_gap * (self.regular_clicks - 1),
            self.head_follow,
            self.trap_window,
        )

    def span_for(self, distinct: int) -> float:
        """The longest span in which ``distinct`` different links make a walk."""
        if distinct < 2:
            return -1.0
        if distinct == 2:
            return self.pair_span
        return min(self.max_span, self.chain_gap * (distinct - 1))


DEFAULT_RULES = WalkRules()


def _groups(clicks: Sequence[Seen]) -> list[tuple[str, list[Seen]]]:
    """Clicks of one copy of a message by client key, /24 and scanner network.

    In a fixed order (by key; members by time, then id), whatever the order of ``clicks``.
    """
    groups: dict[tuple[str, str, str, str], list[Seen]] = defaultdict(list)
    for c in clicks:
        copy = (c.queue_id, c.recipient or "")
        if c.client is not None:
            groups[("address", *copy, c.client)].append(c)
        if c.net is not None:
            groups[("net", *copy, c.net)].append(c)
        if c.network is not None:
            groups[("network", *copy, c.network)].append(c)
    out = []
    for key in sorted(groups):
        members = groups[key]
        members.sort(key=lambda c: (c.at, c.id))
        out.append((key[0], members))
    return out


def walk_members(rules: WalkRules, group: Sequence[Seen]) -> dict[str, dict[str, Any]]:
    """Clicks of ``group`` (time-ordered) that lie in a walk window, with its evidence."""
    found: dict[str, dict[str, Any]] = {}
    n = len(group)
    for i in range(n):
        links: set[int] = set()
        for j in range(i, n):
            span = group[j].at - group[i].at
            if span > rules.max_span:
                break
            links.add(group[j].link_index)
            if len(links) >= 2 and span <= rules.span_for(len(links)):
                evidence = {
                    "rule": "walk",
                    "links": len(links),
                    "span_seconds": round(span, 3),
                    "first_click": group[i].id,
                }
                for c in group[i : j + 1]:
                    found.setdefault(c.id, evidence)
    return found


def regular_members(rules: WalkRules, group: Sequence[Seen]) -> dict[str, dict[str, Any]]:
    """Clicks in a run of ``regular_clicks`` or more evenly spaced clicks."""
    found: dict[str, dict[str, Any]] = {}
    k = rules.regular_clicks
    for i in range(len(group) - k + 1):
        run = group[i : i + k]
        gaps = [b.at - a.at for a, b in itertools.pairwise(run)]
        low, high = min(gaps), max(gaps)
        if low <= 0 or high > rules.regular_max_gap:
            continue
        if (high - low) <= rules.regular_tolerance * high:
            evidence = {
                "rule": "regular",
                "clicks": k,
                "gaps_seconds": [round(g, 3) for g in gaps],
            }
            for c in run:
                found.setdefault(c.id, evidence)
    return found


def fanout_members(rules: WalkRules, group: Sequence[Seen]) -> dict[str, dict[str, Any]]:
    """Clicks of one link from several addresses of this /24 or network, close together."""
    found: dict[str, dict[str, Any]] = {}
    by_link: dict[int, list[Seen]] = defaultdict(list)
    for c in group:
        by_link[c.link_index].append(c)
    for link, clicks in by_link.items():
        for i, first in enumerate(clicks):
            window = [c for c in clicks[i:] if c.at - first.at <= rules.fanout_window]
            addresses = {c.client for c in window if c.client is not None}
            if len(addresses) >= rules.fanout_addresses:
                evidence = {"rule": "fan-out", "link_index": link, "addresses": len(addresses)}
                for c in window:
                    found.setdefault(c.id, evidence)
    return found


def after_head_members(rules: WalkRules, group: Sequence[Seen]) -> dict[str, dict[str, Any]]:
    """GETs of a link following a HEAD of it from the same address."""
    found: dict[str, dict[str, Any]] = {}
    heads: dict[int, float] = {}
    for c in group:
        if c.method == "HEAD":
            heads[c.link_index] = c.at
        elif c.link_index in heads and 0 <= c.at - heads[c.link_index] <= rules.head_follow:
            found[c.id] = {
                "rule": "after-head",
                "seconds_after_head": round(c.at - heads[c.link_index], 3),
            }
    return found


def trap_members(rules: WalkRules, group: Sequence[Seen]) -> dict[str, dict[str, Any]]:
    """Clicks near a trap click of the same address."""
    found: dict[str, dict[str, Any]] = {}
    traps = [c for c in group if c.trap]
    for t in traps:
        for c in group:
            if abs(c.at - t.at) <= rules.trap_window:
                found.setdefault(c.id, {"rule": "trap", "trap_click": t.id})
    return found


#: When several rules catch a click, the reason it keeps: the most specific first.
_PRIORITY = {"trap": 0, "walk": 1, "fan-out": 2, "regular": 3, "after-head": 4}


def relabel(clicks: Sequence[Seen], rules: WalkRules = DEFAULT_RULES) -> list[Relabel]:
    """The human clicks among ``clicks`` that the walk rules show to be bots.

    Pure and deterministic: the same clicks, in any order, give the same answer on every
    node. Clicks already labelled bot are evidence but are never relabelled (their first
    reason stands). A walk that includes a trap click is a trap walk.
    """
    decided: dict[str, tuple[int, str, dict[str, Any]]] = {}

    def note(reason: str, members: dict[str, dict[str, Any]], kind: str) -> None:
        rank = _PRIORITY[reason]
        for click_id, evidence in members.items():
            known = decided.get(click_id)
            if known is None or rank < known[0]:
                decided[click_id] = (rank, reason, {**evidence, "group": kind})

    walks: list[tuple[str, dict[str, dict[str, Any]]]] = []
    for kind, group in _groups(clicks):
        if len(group) < 2 and not any(c.trap for c in group):
            continue
        walk = walk_members(rules, group)
        walks.append((kind, walk))
        if kind == "address":
            note("trap", trap_members(rules, group), kind)
            note("after-head", after_head_members(rules, group), kind)
        else:
            note("fan-out", fanout_members(rules, group), kind)
        note("walk", walk, kind)
        note("regular", regular_members(rules, group), kind)
    # A walk that includes a trap click, or a click the trap caught: all of it is the trap's.
    trapped = {c.id for c in clicks if c.trap} | {
        i for i, (_, reason, _) in decided.items() if reason == "trap"
    }
    for kind, members in walks:
        if trapped & members.keys():
            trap_walk = {i: {**e, "rule": "trap-walk"} for i, e in members.items()}
            note("trap", trap_walk, kind)
    by_id = {c.id: c for c in clicks}
    out = [
        Relabel(click_id, reason, evidence)
        for click_id, (_, reason, evidence) in decided.items()
        if by_id[click_id].label == HUMAN
    ]
    out.sort(key=lambda r: r.id)
    return out


def labels_after(clicks: Sequence[Seen], relabels: Iterable[Relabel]) -> dict[str, str]:
    """Each click's label once ``relabels`` are applied (for tests and the bench)."""
    labels = {c.id: c.label for c in clicks}
    for r in relabels:
        if labels.get(r.id) == HUMAN:
            labels[r.id] = BOT
    return labels
