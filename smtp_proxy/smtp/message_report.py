"""The ``message`` log line and the message metrics of one DATA command.

Every message that reaches the end of DATA is counted once in
``clickrelay_proxy_messages_total{outcome=…}`` and logged in one ``message`` line,
whatever its end: no upstream transaction, refused for bare newlines, upstream failure,
or relayed (accepted or refused upstream). A rewritten message also counts its links
and the rewrite's reason, and its line says what the rewrite did.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from clickrelay.common.logfmt import log_event
from smtp_proxy.smtp.metrics import ProxyMetrics
from smtp_proxy.smtp.rewriting import Outcome
from smtp_proxy.upstream import Reply, UpstreamError

logger = logging.getLogger("clickrelay.proxy")


class MessageReport:
    """Collects the fields of one message's log line; each ``end`` method logs it once."""

    def __init__(
        self,
        metrics: ProxyMetrics,
        *,
        started: float,
        queue_id: str,
        client: str | None,
        user: str | None,
        sender: str | None,
        rcpts: int,
        size: int,
    ) -> None:
        self.metrics = metrics
        self.started = started
        self.fields: dict[str, Any] = {
            "queue_id": queue_id,
            "client": client,
            "user": user,
            "sender": sender,
            "rcpts": rcpts,
            "size": size,
        }

    def newlines_normalized(self) -> None:
        self.fields["normalized"] = "bare-newline"

    def rewritten(self, outcome: Outcome) -> None:
        """Count the rewrite and its links; the line says what it did."""
        tracked = skipped = 0
        skip_reasons: Counter[str] = Counter()
        if outcome.result is not None:
            for link in outcome.result.links:
                self.metrics.links.labels(action=link.action, reason=link.reason).inc()
                if link.action == "tracked":
                    tracked += 1
                else:
                    skipped += 1
                    skip_reasons[link.reason] += 1
        self.metrics.rewrites.labels(reason=outcome.reason.partition(":")[0]).inc()
        self.fields.update(
            out_size=len(outcome.data),
            tracking=outcome.base_url,
            preflight=outcome.preflight,
            rewrite=outcome.reason,
            tracked=tracked,
            skipped=skipped,
            skip_reasons=",".join(f"{k}:{v}" for k, v in sorted(skip_reasons.items())) or None,
        )

    # --- ends (one per message) ---------------------------------------------------------------

    def end_no_upstream(self) -> None:
        """The client's transaction had no upstream transaction left (451)."""
        self.metrics.messages.labels(outcome="tempfail").inc()
        log_event(logger, logging.WARNING, "message", **self.fields, outcome="no-upstream")

    def end_bare_newline(self) -> None:
        """Refused by the proxy: bare CR/LF with ``bare_newline = "reject"`` (550)."""
        self.metrics.messages.labels(outcome="rejected").inc()
        log_event(logger, logging.WARNING, "message", **self.fields, outcome="bare-newline")

    def end_upstream_error(self, error: UpstreamError) -> None:
        """The upstream failed during DATA (451)."""
        self.metrics.upstream_errors.labels(stage="DATA").inc()
        self.metrics.messages.labels(outcome="tempfail").inc()
        log_event(
            logger,
            logging.WARNING,
            "message",
            **self.fields,
            outcome="upstream-error",
            error=error,
            duration_ms=self._elapsed_ms(),
        )

    def end_relayed(self, reply: Reply) -> None:
        """The upstream answered DATA: accepted (2xx) or refused, passed on as it is."""
        accepted = 200 <= reply.code < 300
        self.metrics.messages.labels(outcome="accepted" if accepted else "refused").inc()
        self.metrics.duration.observe(time.monotonic() - self.started)
        log_event(
            logger,
            logging.INFO,
            "message",
            **self.fields,
            outcome="accepted" if accepted else "refused",
            upstream=reply.code,
            reply=reply.message.splitlines()[-1] if reply.message else "",
            duration_ms=self._elapsed_ms(),
        )

    def _elapsed_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)
