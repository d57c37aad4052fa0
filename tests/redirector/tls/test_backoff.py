"""The ACME back-off schedule (pure): never more than a few failed orders per host per
hour, growing to the maximum, with jitter that only ever lengthens the wait."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from redirector.tls.renewal import backoff_delay
from redirector.tls.settings import Timing


def failed_orders_within(seconds: float, timing: Timing, unit_random: float) -> int:
    """How many orders fail in ``seconds`` when every order fails at once."""
    elapsed, failures = 0.0, 0
    while elapsed <= seconds:
        failures += 1
        elapsed += backoff_delay(failures, timing, unit_random)
    return failures


@given(unit_random=st.floats(min_value=0, max_value=0.999))
def test_at_most_four_failed_orders_in_any_first_hour(unit_random: float) -> None:
    assert failed_orders_within(3600, Timing(), unit_random) <= 4


@given(failures=st.integers(min_value=1, max_value=10_000), unit_random=st.floats(0, 0.999))
def test_delay_grows_to_the_maximum_and_jitter_only_adds(failures: int, unit_random: float) -> None:
    timing = Timing()
    delay = backoff_delay(failures, timing, unit_random)
    plain = backoff_delay(failures, timing, 0.0)
    assert timing.backoff_base <= plain <= delay <= timing.backoff_max * 1.1
    assert backoff_delay(failures + 1, timing, 0.0) >= plain


def test_after_a_long_outage_orders_are_hours_apart() -> None:
    assert backoff_delay(50, Timing(), 0.0) == Timing().backoff_max == 6 * 3600
