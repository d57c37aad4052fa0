"""Refused redirects, told to the operator: counted by reason, logged in summary lines.

Every refused ``/c/<token>`` gets the same 404, whatever went wrong, so a prober learns
nothing. The operator must learn everything: a link that stopped working because its key
line was deleted from the key file looks, from outside, exactly like a forged one. So
each refusal is counted by reason (``TokenError.reason``, e.g. ``wrong-host``, plus
``too-long``, ``blocked`` and ``unsafe-location``), and logged — the first one at once,
then at most one line per ``interval`` seconds with the counts since the last line, so
that a scanner throwing thousands of junk tokens a second costs a log line every ten
seconds, not thousands::

    event=redirects-refused count=1204 reasons=unknown-key:1200,malformed:4
        unknown_key_ids=0a1b2c3d:1200 hint="…"

A line that holds ``unknown-key`` or ``wrong-host`` is a WARNING (links we minted may be
failing: a key line deleted, a reverse proxy that does not pass the Host header); one
with only other reasons is INFO (the internet sending junk, blocked links).

Must be used from one event loop thread (the redirector's), like the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from clickrelay.common.logfmt import log_event

#: Seconds between two summary lines at most once refusals keep coming.
DEFAULT_INTERVAL = 10.0
#: Distinct unknown key ids named in one line (they are unauthenticated input).
MAX_KEY_IDS = 5
UNKNOWN_KEY_HINT = (
    "tokens minted with a key this redirector does not have: put that key line back in its"
    " key file (old lines keep old links working) and reload"
)
WRONG_HOST_HINT = (
    "links requested on a host they were not minted for: make the reverse proxy pass the"
    " client's Host header (nginx: proxy_set_header Host $host), or map the host with"
    " [redirector] host_aliases"
)


class RefusalLog:
    """Counts refusals by reason and logs them in rate-limited summary lines."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        #: Refusals by reason since the process started (the metrics read these).
        self.totals: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._key_ids: dict[str, int] = {}
        self._last_line = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def note(self, reason: str, key_id: str | None = None) -> None:
        """Count one refusal; log at once after a quiet interval, else later in a summary."""
        self.totals[reason] = self.totals.get(reason, 0) + 1
        self._pending[reason] = self._pending.get(reason, 0) + 1
        if key_id is not None and (key_id in self._key_ids or len(self._key_ids) < MAX_KEY_IDS):
            self._key_ids[key_id] = self._key_ids.get(key_id, 0) + 1
        wait = self._last_line + self.interval - self.clock()
        if wait <= 0:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a script or test): the next note or flush() logs
                return
            self._timer = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        """Log the refusals counted since the last line, if any (the timer's callback,
        and at shutdown, so that no refusal goes unmentioned)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        pending, key_ids = self._pending, self._key_ids
        self._pending, self._key_ids = {}, {}
        self._last_line = self.clock()
        fields: dict[str, object] = {
            "count": sum(pending.values()),
            "reasons": _counts(pending),
        }
        level = logging.INFO
        hints: list[str] = []
        if "unknown-key" in pending:
            level = logging.WARNING
            fields["unknown_key_ids"] = _counts(key_ids)
            hints.append(UNKNOWN_KEY_HINT)
        if "wrong-host" in pending:
            level = logging.WARNING
            hints.append(WRONG_HOST_HINT)
        if hints:
            fields["hint"] = "; ".join(hints)
        log_event(self.logger, level, "redirects-refused", **fields)


def _counts(counts: dict[str, int]) -> str:
    """``a:3,b:1``, the biggest first."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ",".join(f"{key}:{n}" for key, n in ordered)
