"""Webhook queue statements both stores run alike: ``p`` is the table prefix (empty in
SQLite) and ``mark(n)`` the store's n-th parameter marker (``?`` or ``$n``)."""

from __future__ import annotations

from collections.abc import Callable

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
