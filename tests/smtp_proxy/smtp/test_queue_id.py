"""Queue ids: short, unique within a process, in minting order."""

from __future__ import annotations

import re
import time

import pytest

from smtp_proxy.smtp.queue_id import QueueIdClock, new_queue_id


def test_queue_ids_are_short_unique_and_time_ordered() -> None:
    # Many ids per millisecond: a random-only low part collided here about once in
    # 25 runs at 5000 ids, which is what this test caught in CI.
    ids = [new_queue_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-hjkmnp-tv-z]{14}", i) for i in ids)
    assert ids == sorted(ids)  # fixed width, ascending alphabet: minting order


def test_queue_ids_stay_unique_when_the_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = QueueIdClock()
    now = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    values = [clock.next_value() for _ in range(1000)]
    now[0] -= 3600.0  # NTP steps the wall clock back an hour
    values += [clock.next_value() for _ in range(1000)]
    assert values == sorted(set(values))
