"""Which repeated clicks are stored: the first few per (link, address) and window."""

from __future__ import annotations

from redirector.clicks.repeats import RepeatLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_n_per_window_then_a_new_window() -> None:
    clock = Clock()
    limiter = RepeatLimiter(3, 600, clock=clock)
    assert [limiter.allow("Q", 0, "r", "192.0.2.1") for _ in range(5)] == [True] * 3 + [False] * 2
    # Another address, link or recipient has its own count.
    assert limiter.allow("Q", 0, "r", "192.0.2.2")
    assert limiter.allow("Q", 1, "r", "192.0.2.1")
    assert limiter.allow("Q", 0, "s", "192.0.2.1")
    clock.now += 599
    assert not limiter.allow("Q", 0, "r", "192.0.2.1")
    clock.now += 1
    assert limiter.allow("Q", 0, "r", "192.0.2.1")
    assert limiter.suppressed == 3


def test_memory_is_bounded_and_forgets_the_oldest() -> None:
    clock = Clock()
    limiter = RepeatLimiter(1, 600, max_keys=100, clock=clock)
    for i in range(1000):
        assert limiter.allow("Q", i, None, "192.0.2.1")
    assert len(limiter._seen) <= 100
    assert not limiter.allow("Q", 999, None, "192.0.2.1")  # recent: still remembered
    assert limiter.allow("Q", 0, None, "192.0.2.1")  # forgotten: a new window
