"""Fail-open link rewriting of one message: rewrite only while preflight allows it for
the sender's tracking domain, and relay the message unchanged on any failure.

The rewriter is CPU work on the event loop that also serves every other client (and,
in ``serve``, the redirects). Small messages are faster inline, but what a message costs
depends on its MIME parts and links more than on its size: :func:`inline_cost` prices
it cheaply (two byte counts) and anything over :data:`THREAD_THRESHOLD` goes to a worker
thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

from clickrelay.common.logfmt import log_event
from smtp_proxy.engine.dkim_sign import DkimVerdict
from smtp_proxy.engine.rewriter import RewriteResult, rewrite_message
from smtp_proxy.preflight.monitor import PreflightMonitor
from smtp_proxy.smtp.dkim_check import DkimChecker
from smtp_proxy.smtp.metrics import ProxyMetrics
from smtp_proxy.smtp.runtime import ProxyRuntime
from smtp_proxy.smtp.tracking import sender_base_url, utm_values

logger = logging.getLogger("clickrelay.proxy")

#: Messages costing more than this (:func:`inline_cost`, in bytes' worth) are rewritten
#: in a worker thread so the event loop keeps serving other connections; cheaper ones
#: are faster inline (no thread hop).
THREAD_THRESHOLD = 1_000_000
#: What one line starting with "--" (a MIME boundary, at most) costs, in bytes' worth:
#: a part's headers are parsed and its body looked at (bench/proxy.py: a 960 KB message
#: of 14,000 parts took as long as ~50 MB of one-part mail).
PART_COST = 4_000
#: What one "://" (a link, at most) costs, in bytes' worth: found, checked, sealed.
LINK_COST = 2_000


def inline_cost(content: bytes) -> int:
    """An upper bound of the rewriter's work on ``content``, priced in bytes."""
    return len(content) + PART_COST * content.count(b"\n--") + LINK_COST * content.count(b"://")


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
        self.dkim = DkimChecker()

    async def rewrite(
        self,
        runtime: ProxyRuntime,
        mail_from: str,
        content: bytes,
        queue_id: str,
        recipient: str | None,
        auth_user: str | None = None,
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
            utm = utm_values(runtime.config, mail_from, content) or None
            verdict: DkimVerdict = await self.dkim.verdict(
                runtime.config,
                runtime.dkim_keys,
                content,
                auth_user,
                runtime.users.domains.get(auth_user, ())
                if auth_user is not None and runtime.users is not None
                else (),
            )
            rewrite = functools.partial(
                rewrite_message,
                content,
                settings,
                queue_id=queue_id,
                recipient=recipient,
                utm_values=utm,
                dkim_verdict=verdict,
            )
            if inline_cost(content) > THREAD_THRESHOLD:
                result = await asyncio.to_thread(rewrite)
            else:
                result = rewrite()
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
