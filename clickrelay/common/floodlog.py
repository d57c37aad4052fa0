"""Events that can come in floods, logged as rate-limited summary lines.

An attacker who can make us log one line per event (a refused connection, a failed
``accept()``) can fill the disk and drown the journal: the issue this guards against
grew stderr by hundreds of megabytes in two minutes. A :class:`FloodLog` logs the first
event at once, then at most one line per ``interval`` with the counts by reason since
the previous line::

    event=connections-refused count=1204 reasons=per-client:1200,total:4

Use from one event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from clickrelay.common.logfmt import log_event

#: Seconds between two summary lines at most while events keep coming.
DEFAULT_INTERVAL = 10.0
#: Distinct reasons kept per line (reasons may derive from peer input).
MAX_REASONS = 20


class FloodLog:
    """Counts events by reason; logs them in summary lines, at most one per interval."""

    def __init__(
        self,
        logger: logging.Logger,
        event: str,
        *,
        level: int = logging.WARNING,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        **fields: object,
    ) -> None:
        self.logger = logger
        self.event = event
        self.level = level
        self.interval = interval
        self.clock = clock
        self.fields = fields
        #: Events by reason since the start (for metrics).
        self.totals: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._last_line = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def note(self, reason: str) -> None:
        """Count one event; log at once after a quiet interval, else in a later summary."""
        self.totals[reason] = self.totals.get(reason, 0) + 1
        if reason in self._pending or len(self._pending) < MAX_REASONS:
            self._pending[reason] = self._pending.get(reason, 0) + 1
        else:
            self._pending["other"] = self._pending.get("other", 0) + 1
        wait = self._last_line + self.interval - self.clock()
        if wait <= 0:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: the next note or flush() logs
                return
            self._timer = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        """Log what was counted since the last line, if anything (timer and shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        self._last_line = self.clock()
        level, fields = self.summary(pending)
        log_event(self.logger, level, self.event, **fields)

    def summary(self, pending: dict[str, int]) -> tuple[int, dict[str, object]]:
        """The level and fields of the line for ``pending`` (reason → count); a subclass
        adds what its events carry besides a reason."""
        fields: dict[str, object] = {
            "count": sum(pending.values()),
            "reasons": counts_text(pending),
        }
        return self.level, fields | self.fields


def counts_text(counts: dict[str, int]) -> str:
    """``a:3,b:1``, the biggest first."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ",".join(f"{key}:{n}" for key, n in ordered)
