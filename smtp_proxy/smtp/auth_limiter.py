"""How often a client may fail AUTH. Pure logic.

:class:`AuthFailureLimiter` counts failed AUTH attempts per client address in a sliding
window. Once a client reaches the limit it is refused (421) until old failures age out
of the window, so password guessing is slow even across reconnects.

A password check is *reserved* before it runs (:meth:`AuthFailureLimiter.try_reserve`)
and settled when it is done: a reservation counts like a failure until then, so clients
checking many passwords at once still get no more than ``limit`` checked per window —
whatever their concurrency. IPv6 clients are
counted per /64 (:func:`limiter_key`): one host usually owns a whole /64 and could
otherwise rotate addresses to dodge the limit.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from smtp_proxy.smtp.relay_policy import parse_address


def limiter_key(host: str | None) -> str:
    """What failures are counted by: the IPv4 address, or the IPv6 /64."""
    address = parse_address(host)
    if address is None:
        return host or "?"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class AuthFailureLimiter:
    """Sliding-window count of failed AUTH attempts per client key.

    ``limit`` failures within ``window`` seconds block the key until the oldest of them
    is older than ``window``. Memory is bounded: at most ``max_keys`` clients are
    remembered (the least recently failing ones are forgotten first).
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        #: Password checks running now, per key (counted like failures until settled).
        self._reserved: dict[str, int] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def blocked(self, key: str) -> bool:
        """True while ``key`` has ``limit`` or more failures inside the window."""
        times = self._recent(key, self._clock())
        return times is not None and len(times) >= self.limit

    def try_reserve(self, key: str) -> bool:
        """Reserve one password check for ``key``: False while failures plus checks in
        flight already reach the limit. Settle with :meth:`release` (success) or
        :meth:`record_failure` (which also ends the reservation)."""
        if self.failures(key) + self._reserved.get(key, 0) >= self.limit:
            return False
        self._reserved[key] = self._reserved.get(key, 0) + 1
        return True

    def release(self, key: str) -> None:
        """End one reservation of ``key`` without counting a failure."""
        left = self._reserved.get(key, 0) - 1
        if left > 0:
            self._reserved[key] = left
        else:
            self._reserved.pop(key, None)

    def in_flight(self, key: str) -> int:
        return self._reserved.get(key, 0)

    def failures(self, key: str) -> int:
        times = self._recent(key, self._clock())
        return 0 if times is None else len(times)

    def record_failure(self, key: str) -> bool:
        """Count one failure (ending a reservation, if any); True when now blocked."""
        self.release(key)
        now = self._clock()
        times = self._recent(key, now)
        if times is None:
            times = deque()
            self._failures[key] = times
        times.append(now)
        # Never keep more timestamps than the limit needs.
        while len(times) > self.limit:
            times.popleft()
        self._failures.move_to_end(key)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)
        return len(times) >= self.limit

    def reconfigure(self, limit: int, window: float) -> None:
        """New limits (reload); recorded failures are kept."""
        self.limit = limit
        self.window = window
