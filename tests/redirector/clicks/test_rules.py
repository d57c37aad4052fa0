"""The walk rules: each rule on the behaviour it targets and on the human it must spare."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from redirector.clicks import BOT, HUMAN
from redirector.clicks.rules import DEFAULT_RULES, Seen, WalkRules, labels_after, relabel

T = 1_800_000_000.0


def c(
    n: int,
    at: float,
    link: int,
    *,
    client: str | None = "A",
    net: str | None = "N",
    network: str | None = None,
    method: str = "GET",
    label: str = HUMAN,
    reason: str | None = None,
    queue_id: str = "Q",
    recipient: str | None = "r@x",
    trap: bool = False,
) -> Seen:
    return Seen(
        f"c{n:03d}",
        T + at,
        queue_id,
        recipient,
        link,
        client,
        net,
        network,
        method,
        label,
        reason,
        trap,
    )


def reasons(clicks: list[Seen], rules: WalkRules = DEFAULT_RULES) -> dict[str, str]:
    return {r.id: r.reason for r in relabel(clicks, rules)}


# --- walk -----------------------------------------------------------------------------


def test_two_links_within_the_pair_span_are_a_walk_both_of_them() -> None:
    clicks = [c(1, 0, 0), c(2, 1.5, 1)]
    assert reasons(clicks) == {"c001": "walk", "c002": "walk"}


def test_two_links_further_apart_than_the_pair_span_are_a_person() -> None:
    assert reasons([c(1, 0, 0), c(2, DEFAULT_RULES.pair_span + 0.5, 1)]) == {}


def test_a_spaced_walk_of_several_links_is_caught_by_its_pace() -> None:
    # A scanner 4 s apart: never two links within 3 s, but 3 links in 8 s.
    clicks = [c(n, 4.0 * n, n) for n in range(5)]
    assert set(reasons(clicks).values()) == {"walk"}
    assert len(reasons(clicks)) == 5


def test_a_reader_going_through_a_digest_is_not_a_walk() -> None:
    # Several links in a row, each read for a while: 8 s or more apart.
    clicks = [c(n, 9.0 * n, n) for n in range(5)]
    assert reasons(clicks) == {}


def test_the_same_link_twice_is_not_a_walk() -> None:
    assert reasons([c(1, 0, 0), c(2, 0.5, 0)]) == {}


def test_hosts_of_one_slash24_walk_together() -> None:
    clicks = [c(1, 0, 0, client="h1"), c(2, 0.5, 1, client="h2"), c(3, 0.9, 2, client="h3")]
    assert set(reasons(clicks).values()) == {"walk"}


def test_colleagues_behind_one_nat_are_separate_copies() -> None:
    # One address, one message, different recipients: never one walk.
    clicks = [c(1, 0, 0, recipient="a@x"), c(2, 0.5, 1, recipient="b@x")]
    assert reasons(clicks) == {}


def test_a_person_in_the_same_second_as_a_scanner_elsewhere_stays_human() -> None:
    scanner = [c(n, 0.3 * n, n, client="S", net="SN") for n in range(4)]
    person = c(9, 0.4, 2, client="P", net="PN")
    found = reasons([*scanner, person])
    assert person.id not in found
    assert set(found) == {s.id for s in scanner}


# --- fan-out ----------------------------------------------------------------------------


def test_one_link_from_several_addresses_of_one_network_is_fan_out() -> None:
    clicks = [c(1, 0, 0, client="h1"), c(2, 2.0, 0, client="h2")]
    assert reasons(clicks) == {"c001": "fan-out", "c002": "fan-out"}


def test_one_link_from_two_unrelated_networks_is_not_fan_out() -> None:
    clicks = [c(1, 0, 0, client="h1", net="N1"), c(2, 2.0, 0, client="h2", net="N2")]
    assert reasons(clicks) == {}


# --- regular ----------------------------------------------------------------------------


def test_machine_regular_requests_are_bots() -> None:
    # The same link again and again (so no walk), every 5 s on the dot.
    clicks = [c(n, 5.0 * n, 0) for n in range(4)]
    assert reasons(clicks) == {s.id: "regular" for s in clicks}


def test_irregular_repeats_are_a_person() -> None:
    clicks = [c(1, 0, 0), c(2, 4.0, 0), c(3, 9.5, 0), c(4, 12.0, 0)]
    assert reasons(clicks) == {}


# --- after-head -------------------------------------------------------------------------


def test_a_get_after_a_head_from_the_same_address_is_a_bot() -> None:
    clicks = [c(1, 0, 0, method="HEAD", label=BOT, reason="head"), c(2, 0.4, 0)]
    assert reasons(clicks) == {"c002": "after-head"}


def test_a_get_long_after_a_head_is_not_tied_to_it() -> None:
    clicks = [c(1, 0, 0, method="HEAD", label=BOT, reason="head"), c(2, 3600, 0)]
    assert reasons(clicks) == {}


# --- trap -------------------------------------------------------------------------------


def test_the_trap_marks_its_address_near_it_and_its_walk() -> None:
    clicks = [
        c(1, 0, 0),
        c(2, 0.5, 1),
        c(3, 1.0, 9, label=BOT, reason="trap", trap=True),
        c(4, 3600, 2),  # the same address an hour later: not the trap's
    ]
    found = reasons(clicks)
    assert found == {"c001": "trap", "c002": "trap"}


# --- general properties ---------------------------------------------------------------


def test_bot_labels_are_never_changed_or_taken_back() -> None:
    clicks = [c(1, 0, 0, label=BOT, reason="scanner-agent"), c(2, 1, 1)]
    found = reasons(clicks)
    assert "c001" not in found
    assert found == {"c002": "walk"}


def test_the_horizon_covers_every_window() -> None:
    r = DEFAULT_RULES
    assert r.horizon >= max(r.pair_span, r.max_span, r.fanout_window, r.head_follow)
    assert r.horizon >= r.regular_max_gap * (r.regular_clicks - 1)


seen_strategy = st.lists(
    st.builds(
        lambda n, at, link, client, net, method, bot, trap: c(
            n,
            at,
            link,
            client=client,
            net=net,
            method=method,
            label=BOT if bot else HUMAN,
            reason="x" if bot else None,
            trap=trap,
        ),
        st.integers(0, 10_000),
        st.floats(0, 120, allow_nan=False),
        st.integers(0, 5),
        st.sampled_from(["A", "B", None]),
        st.sampled_from(["N", "M", None]),
        st.sampled_from(["GET", "HEAD"]),
        st.booleans(),
        st.booleans(),
    ),
    max_size=30,
    unique_by=lambda s: s.id,
)


@settings(max_examples=200, deadline=None)
@given(clicks=seen_strategy)
def test_relabelling_never_loses_or_duplicates_a_click_and_counts_add_up(
    clicks: list[Seen],
) -> None:
    relabels = relabel(clicks)
    ids = [r.id for r in relabels]
    assert len(ids) == len(set(ids))  # each click relabelled at most once
    by_id = {s.id: s for s in clicks}
    assert all(by_id[i].label == HUMAN for i in ids)  # only humans are relabelled
    labels = labels_after(clicks, relabels)
    assert labels.keys() == by_id.keys()  # no click lost, none invented
    counts = Counter(labels.values())
    assert counts[HUMAN] + counts[BOT] == len(clicks)
    assert counts[BOT] == sum(1 for s in clicks if s.label == BOT) + len(relabels)
    # Deterministic: every node, any order of rows, the same answer.
    assert relabel(list(reversed(clicks))) == relabels


@settings(max_examples=100, deadline=None)
@given(clicks=seen_strategy, extra=seen_strategy)
def test_more_evidence_never_turns_a_walk_back_into_a_person(
    clicks: list[Seen], extra: list[Seen]
) -> None:
    # Walks, fan-outs, after-heads and traps only grow with evidence. (The regular rule
    # may not: a click in the middle of a metronome breaks it; the settle delay covers
    # the rules' horizon so the full evidence is in before a label is final.)
    extra = [e._replace(id="x" + e.id) for e in extra]
    before = {r.id for r in relabel(clicks) if r.reason != "regular"}
    after = {r.id for r in relabel(clicks + extra)}
    assert before <= after
