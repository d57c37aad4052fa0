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

import logging
import time
from collections.abc import Callable

from clickrelay.common.floodlog import DEFAULT_INTERVAL, FloodLog, counts_text

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


class RefusalLog(FloodLog):
    """Counts refusals by reason and logs them in rate-limited summary lines."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            logger, "redirects-refused", level=logging.INFO, interval=interval, clock=clock
        )
        self._key_ids: dict[str, int] = {}

    def note(self, reason: str, key_id: str | None = None) -> None:
        """Count one refusal; log at once after a quiet interval, else later in a summary
        (flushed at shutdown too, so that no refusal goes unmentioned)."""
        if key_id is not None and (key_id in self._key_ids or len(self._key_ids) < MAX_KEY_IDS):
            self._key_ids[key_id] = self._key_ids.get(key_id, 0) + 1
        super().note(reason)

    def summary(self, pending: dict[str, int]) -> tuple[int, dict[str, object]]:
        key_ids, self._key_ids = self._key_ids, {}
        level, fields = super().summary(pending)
        hints: list[str] = []
        if "unknown-key" in pending:
            level = logging.WARNING
            fields["unknown_key_ids"] = counts_text(key_ids)
            hints.append(UNKNOWN_KEY_HINT)
        if "wrong-host" in pending:
            level = logging.WARNING
            hints.append(WRONG_HOST_HINT)
        if hints:
            fields["hint"] = "; ".join(hints)
        return level, fields
