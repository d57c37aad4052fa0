"""Webhook queue logic both stores share: the cursor's step over the clicks after it
(pure), and statements run alike, where ``p`` is the table prefix (empty in SQLite) and
``mark(n)`` the store's n-th parameter marker (``?`` or ``$n``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

#: ``(endpoint, include_bots, settled_only)``: one cursor the enqueue step moves.
Target = tuple[str, bool, bool]


class Ahead(NamedTuple):
    """A click after a cursor, as the cursor step reads it."""

    seq: int
    id: str
    classification: str
    due: bool  # recorded at or before the cutoff (deliverable_after)
    settled: bool  # its label is final


def deliverable(click: Ahead, settled_only: bool) -> bool:
    """Whether a cursor may take ``click`` now (old enough, and settled if it must be)."""
    return click.due and (click.settled or not settled_only)


def cursor_step(
    ahead: Iterable[Ahead], include_bots: bool, settled_only: bool
) -> tuple[list[Ahead], list[Ahead]]:
    """``(taken, events)`` of one cursor step over ``ahead`` (in seq order): the cursor
    takes clicks up to the first that is not deliverable yet and stops there, never past
    it, so a click that settles (or comes of age) after a later one is still taken, once.
    ``events``: the taken clicks the endpoint wants (humans, or all with include_bots).
    ``ahead`` is read no further than that first click (a lazy query reads no more)."""
    taken: list[Ahead] = []
    for click in ahead:
        if not deliverable(click, settled_only):
            break
        taken.append(click)
    events = [c for c in taken if include_bots or c.classification == "human"]
    return taken, events


#: ``(sql, parameters)`` pairs, run in one transaction.
Statements = list[tuple[str, tuple[object, ...]]]


def finish_statements(
    p: str,
    mark: Callable[[int], str],
    endpoint: str,
    click_id: str,
    outcome: str,
    next_at: float,
    error: str | None,
) -> Statements:
    """A claimed event's end: ``delivered`` forgets it; ``retry`` makes it pending again
    at ``next_at``, ``failed`` gives up on it (both note the error on the endpoint)."""
    if outcome == "delivered":
        return [
            (
                f"DELETE FROM {p}webhook_events"
                f" WHERE endpoint = {mark(1)} AND click_id = {mark(2)}",
                (endpoint, click_id),
            )
        ]
    state = "failed" if outcome == "failed" else "pending"
    return [
        (
            f"UPDATE {p}webhook_events SET state = {mark(1)}, next_attempt_at = {mark(2)},"
            f" last_error = {mark(3)} WHERE endpoint = {mark(4)} AND click_id = {mark(5)}",
            (state, next_at, error, endpoint, click_id),
        ),
        (
            f"UPDATE {p}webhook_cursors SET last_error = {mark(1)} WHERE endpoint = {mark(2)}",
            (error, endpoint),
        ),
    ]
