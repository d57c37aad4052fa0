"""The AUTH failure limiter: sliding window per client key, bounded memory. Pure."""

from __future__ import annotations

from smtp_proxy.smtp.auth_limiter import AuthFailureLimiter, limiter_key


def test_limiter_key_counts_ipv6_per_64() -> None:
    assert limiter_key("192.0.2.7") == "192.0.2.7"
    assert limiter_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert limiter_key("2001:db8:1:2:aaaa::1") == limiter_key("2001:db8:1:2:bbbb::9")
    assert limiter_key("2001:db8:1:2::1") != limiter_key("2001:db8:1:3::1")
    assert limiter_key(None) == "?"
    assert limiter_key("not-an-ip") == "not-an-ip"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_auth_limiter_blocks_at_limit_and_recovers() -> None:
    clock = FakeClock()
    limiter = AuthFailureLimiter(3, 60.0, clock=clock)
    assert not limiter.blocked("a")
    assert limiter.record_failure("a") is False
    clock.now += 10
    assert limiter.record_failure("a") is False
    assert not limiter.blocked("a")
    clock.now += 10
    assert limiter.record_failure("a") is True
    assert limiter.blocked("a")
    assert not limiter.blocked("b")  # per client
    clock.now += 41  # the first failure (t=1000) is now 61 s old
    assert not limiter.blocked("a")
    assert limiter.failures("a") == 2
    clock.now += 100
    assert limiter.failures("a") == 0


def test_auth_limiter_memory_is_bounded() -> None:
    limiter = AuthFailureLimiter(2, 60.0, clock=FakeClock(), max_keys=10)
    for i in range(100):
        limiter.record_failure(f"10.0.0.{i}")
        limiter.record_failure(f"10.0.0.{i}")
    assert limiter.blocked("10.0.0.99")
    assert not limiter.blocked("10.0.0.0")  # forgotten, oldest first
    assert len(limiter._failures) == 10


def test_auth_limiter_reconfigure() -> None:
    limiter = AuthFailureLimiter(5, 60.0, clock=FakeClock())
    limiter.record_failure("k")
    limiter.record_failure("k")
    assert not limiter.blocked("k")
    limiter.reconfigure(2, 60.0)
    assert limiter.blocked("k")
