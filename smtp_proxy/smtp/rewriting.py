"""Fail-open link rewriting of one message: rewrite only while preflight allows it for
the sender's tracking domain, and relay the message unchanged on any failure."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from clickrelay.common.logfmt import log_event
from smtp_proxy.engine.rewriter import RewriteResult, rewrite_message
from smtp_proxy.preflight.monitor import PreflightMonitor
from smtp_proxy.smtp.metrics import ProxyMetrics
from smtp_proxy.smtp.runtime import ProxyRuntime
from smtp_proxy.smtp.tracking import sender_base_url

logger = logging.getLogger("clickrelay.proxy")

#: Messages larger than this are rewritten in a worker thread so the event loop keeps
#: serving other connections; smaller ones are faster inline (no thread hop).
THREAD_THRESHOLD = 1_000_000


@dataclass
class Outcome:
    """What goes upstream, and why: the (maybe rewritten) message and the rewrite's verdict."""

    data: bytes
    #: The rewriter's reason, ``preflight-<state>`` when preflight said no, or
    #: ``error:<exception>`` when rewriting failed.
    reason: str
    base_url: str = ""
    preflight: str = ""
    result: RewriteResult | None = None


class FailOpenRewriter:
    """Rewrites a message's links when allowed; any failure relays it unchanged."""

    def __init__(self, metrics: ProxyMetrics, preflight: PreflightMonitor | None) -> None:
        self.metrics = metrics
        self.preflight = preflight

    async def rewrite(
        self,
        runtime: ProxyRuntime,
        mail_from: str,
        content: bytes,
        queue_id: str,
        recipient: str | None,
    ) -> Outcome:
        """Rewrite when allowed; any failure relays ``content`` unchanged (fail-open)."""
        try:
            base_url = sender_base_url(runtime.config, mail_from, content)
            if self.preflight is not None:
                allowed = self.preflight.may_rewrite(base_url)
                state = self.preflight.state(base_url)
            else:
                # No monitor: only a config with preflight switched off means "go ahead".
                allowed = not runtime.config.preflight.enabled
                state = "disabled" if allowed else "no-monitor"
            if not allowed:
                return Outcome(content, f"preflight-{state}", base_url, state)
            settings = runtime.tracking_settings(base_url)
            if len(content) > THREAD_THRESHOLD:
                result = await asyncio.to_thread(
                    rewrite_message, content, settings, queue_id=queue_id, recipient=recipient
                )
            else:
                result = rewrite_message(content, settings, queue_id=queue_id, recipient=recipient)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.rewrite_errors.inc()
            log_event(logger, logging.ERROR, "rewrite-failed", queue_id=queue_id, error=repr(exc))
            return Outcome(content, f"error:{type(exc).__name__}")
        if result.reason.startswith("error"):
            self.metrics.rewrite_errors.inc()
            log_event(
                logger, logging.ERROR, "rewrite-failed", queue_id=queue_id, error=result.reason
            )
        return Outcome(result.data, result.reason, base_url, state, result)
