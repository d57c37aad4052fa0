"""How many clicks of one link from one address are stored: the first few per window.

Replaying one tracked link is free for a client and each replay used to become a stored
row: three hundred replays of one link grew the SQLite store by tens of megabytes. Every
click is still answered and counted (the redirect and the ``clickrelay_clicks``
metric); only storage is limited: of the clicks of one link (message, link, recipient)
from one address (the client address as the redirector sees it), the first
``per_window`` in a window of ``window`` seconds — counted from the first of them — are
stored, the rest counted as ``clickrelay_clicks_not_stored{reason="repeat"}``.

Memory is bounded: at most ``max_keys`` (link, address) pairs are remembered, the
oldest forgotten first (a forgotten pair simply starts a new window).
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_MAX_KEYS = 200_000


class RepeatLimiter:
    """Decides, per click, whether it is among the first ``per_window`` of its pair."""

    def __init__(
        self,
        per_window: int,
        window: float,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_window = per_window
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        #: Clicks not stored because of the limit, since start.
        self.suppressed = 0
        # hash of the pair -> [window start, clicks in it]; insertion order = window start
        # order, so expired entries are at the front. A 64-bit hash instead of the tuple
        # keeps an entry small whatever the token carries.
        self._seen: dict[int, list[float]] = {}

    def allow(
        self, queue_id: str, link_index: int, recipient: str | None, address: str | None
    ) -> bool:
        """True: store this click; False: count it only (and :attr:`suppressed` grows)."""
        now = self.clock()
        key = hash((queue_id, link_index, recipient, address))
        seen = self._seen
        entry = seen.get(key)
        if entry is not None and now - entry[0] < self.window:
            entry[1] += 1
            if entry[1] > self.per_window:
                self.suppressed += 1
                return False
            return True
        if entry is not None:
            del seen[key]  # a new window: re-inserted at the end
        self._expire(now)
        seen[key] = [now, 1]
        return True

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            oldest = next(iter(seen))
            if now - seen[oldest][0] < self.window and len(seen) < self.max_keys:
                return
            del seen[oldest]
