"""Delivering clicks to the ``[[webhooks]]`` endpoints, at least once, from the store.

Nothing here reads the recorder's memory: events come from committed clicks only.

* **Cursor** — every ``poll_interval`` one step moves each endpoint's cursor (kept in the
  store) over newly committed clicks older than ``deliverable_after`` — and, with
  ``settled_only`` (the default), settled: their label is final — turning each click the
  endpoint wants (humans, or bots too with ``include_bots``) into a pending event. The
  cursor stops at the first click not deliverable yet: clicks settle by age, not in seq
  order, and a click passed over would never be sent.
* **Claim** — each endpoint's loop claims due pending events with a lease (in
  PostgreSQL ``FOR UPDATE SKIP LOCKED``: several nodes share the work, each event goes
  to one of them). A node that dies mid-delivery leaves the lease to expire, and the
  event is sent again — with the same ``webhook-id``, so the receiver can deduplicate.
* **Send** — a signed POST (:mod:`.payload`); 2xx = delivered (the event is forgotten),
  anything else = retry with exponential back-off until ``retry_for``/``max_attempts``,
  then ``failed`` (counted, logged, listed by ``clickrelay webhooks``, re-sent by
  ``clickrelay webhooks replay``). 410 Gone disables the endpoint until reload. No
  redirect is followed; a response body is read up to :data:`BODY_CAP` bytes.

All of it runs in background tasks on the redirector's loop and touches the store only
through its own threads/pool: a slow or dead receiver never delays a redirect or the
recording of a click.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from clickrelay.common.aiotasks import cancel_and_wait
from clickrelay.common.logfmt import log_event
from redirector.store import ClickStore, StoreError
from redirector.store.records import WebhookEvent
from redirector.webhooks.config import WebhookConfig, secret_bytes
from redirector.webhooks.payload import body_bytes, gives_up, retry_delay, signed_headers

logger = logging.getLogger("clickrelay.webhooks")

#: Bytes of a response body read (for the log line); the rest is not read.
BODY_CAP = 1024
#: Clicks one cursor step takes per endpoint; events claimed per round.
CURSOR_BATCH = 1000
CLAIM_BATCH = 100
#: Seconds a claim holds an event beyond the request timeout before another node (or
#: this one after a restart) may send it again.
LEASE_MARGIN = 5.0
#: A store error is logged at most this often (seconds) per loop.
ERROR_LOG_INTERVAL = 30.0


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "clickrelay_webhook_events",
            "Webhook delivery attempts by endpoint and outcome (delivered, retry, failed, gone)",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.backlog = Gauge(
            "clickrelay_webhook_backlog",
            "Events pending delivery per endpoint (as of the last check)",
            ["endpoint"],
            registry=registry,
        )


@dataclass
class _Endpoint:
    config: WebhookConfig
    key: bytes
    disabled: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class WebhookDispatcher:
    """Runs the cursor step and one delivery loop per endpoint; see the module docstring."""

    def __init__(
        self,
        store: ClickStore,
        webhooks: Sequence[WebhookConfig],
        *,
        registry: CollectorRegistry | None = None,
        poll_interval: float = 0.5,
        status_interval: float = 5.0,
    ) -> None:
        self._store = store
        self.poll_interval = poll_interval
        self.status_interval = status_interval
        self._endpoints = {w.key: _Endpoint(w, secret_bytes(w.secret)) for w in webhooks}
        self._metrics = _Metrics(registry if registry is not None else CollectorRegistry())
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_error_log: dict[str, float] = {}
        self._failed_unlogged: dict[str, int] = {}

    @property
    def endpoints(self) -> dict[str, WebhookConfig]:
        return {k: e.config for k, e in self._endpoints.items()}

    def disabled(self, name: str) -> bool:
        return self._endpoints[name].disabled

    async def start(self) -> None:
        if self._tasks or not self._endpoints:
            return
        # No cookies, no proxies from the environment, no redirects (per request).
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, auto_decompress=False
        )
        self._tasks.append(asyncio.create_task(self._cursor_loop(), name="webhooks-cursor"))
        for name in self._endpoints:
            self._tasks.append(
                asyncio.create_task(self._endpoint_loop(name), name=f"webhooks-{name}")
            )

    def reload(self, webhooks: Sequence[WebhookConfig]) -> None:
        """New settings for the same endpoints (a disabled one is enabled again);
        endpoints added or removed need a restart (their loops are per endpoint)."""
        for hook in webhooks:
            endpoint = self._endpoints.get(hook.key)
            if endpoint is None:
                continue
            endpoint.config = hook
            endpoint.key = secret_bytes(hook.secret)
            if endpoint.disabled:
                endpoint.disabled = False
                log_event(logger, logging.INFO, "webhook-enabled", endpoint=hook.key)
            endpoint.wakeup.set()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- the cursor -------------------------------------------------------------------

    async def _cursor_loop(self) -> None:
        last_status = 0.0
        while True:
            took = 0
            try:
                now = time.time()
                by_delay: dict[float, list[tuple[str, bool, bool]]] = {}
                for name, endpoint in self._endpoints.items():
                    cfg = endpoint.config
                    by_delay.setdefault(cfg.deliverable_after, []).append(
                        (name, cfg.include_bots, cfg.settled_only)
                    )
                for delay, group in by_delay.items():
                    cutoff = datetime.fromtimestamp(now - delay, UTC)
                    took += await self._store.webhook_enqueue(group, cutoff, CURSOR_BATCH, now)
                if took:
                    for endpoint in self._endpoints.values():
                        endpoint.wakeup.set()
                if now - last_status >= self.status_interval:
                    last_status = now
                    await self._update_backlog()
            except StoreError as exc:
                self._log_store_error("cursor", exc)
            except Exception as exc:  # a bug must not end delivery for good: log, go on
                self._log_store_error("cursor", exc)
            if took < CURSOR_BATCH:
                await asyncio.sleep(self.poll_interval)

    async def _update_backlog(self) -> None:
        for status in await self._store.webhook_status(list(self._endpoints)):
            self._metrics.backlog.labels(endpoint=status.endpoint).set(status.pending)

    def _log_store_error(self, where: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_log.get(where, -ERROR_LOG_INTERVAL) >= ERROR_LOG_INTERVAL:
            self._last_error_log[where] = now
            event = "webhook-store-error" if isinstance(exc, StoreError) else "webhook-error"
            log_event(logger, logging.WARNING, event, loop=where, error=repr(exc))

    # -- one endpoint -----------------------------------------------------------------

    async def _endpoint_loop(self, name: str) -> None:
        endpoint = self._endpoints[name]
        while True:
            endpoint.wakeup.clear()
            events: list[WebhookEvent] = []
            if not endpoint.disabled:
                cfg = endpoint.config
                try:
                    events = await self._store.webhook_claim(
                        name, time.time(), cfg.timeout + LEASE_MARGIN, CLAIM_BATCH
                    )
                except StoreError as exc:
                    self._log_store_error(name, exc)
                if events:
                    try:
                        await self._send_all(endpoint, events)
                    except Exception as exc:  # as above; unfinished events return after the lease
                        self._log_store_error(name, exc)
                    continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await endpoint.wakeup.wait()

    async def _send_all(self, endpoint: _Endpoint, events: list[WebhookEvent]) -> None:
        limit = asyncio.Semaphore(endpoint.config.concurrency)

        async def one(event: WebhookEvent) -> None:
            async with limit:
                if endpoint.disabled:  # a 410 meanwhile: leave it pending, uncounted
                    await self._finish(endpoint, event, "retry", time.time(), None, count=None)
                    return
                outcome, error = await self._send(endpoint, event)
                now = time.time()
                if outcome == "delivered":
                    await self._finish(endpoint, event, "delivered", now, None)
                elif outcome == "gone":
                    await self._finish(endpoint, event, "retry", now, error, count="gone")
                elif gives_up(
                    attempts=event.attempts,
                    max_attempts=endpoint.config.max_attempts,
                    enqueued_at=event.enqueued_at,
                    retry_for=endpoint.config.retry_for,
                    now=now,
                ):
                    await self._finish(endpoint, event, "failed", now, error)
                else:
                    delay = retry_delay(endpoint.config.retry_delay, event.attempts)
                    await self._finish(endpoint, event, "retry", now + delay, error)

        await asyncio.gather(*(one(e) for e in events))

    async def _finish(
        self,
        endpoint: _Endpoint,
        event: WebhookEvent,
        outcome: str,
        at: float,
        error: str | None,
        *,
        count: str | None = "",
    ) -> None:
        """Record ``outcome`` in the store; ``count`` is the metric's outcome label
        (default ``outcome``; None: not counted)."""
        name = endpoint.config.key
        label = outcome if count == "" else count
        if label is not None:
            self._metrics.events.labels(endpoint=name, outcome=label).inc()
        if outcome == "failed":
            self._log_failed(name, event, error)
        try:
            await self._store.webhook_finish(name, event.click.id, outcome, at, error)
        except StoreError as exc:
            # The lease runs out and the event is sent again: at least once still holds.
            self._log_store_error(name, exc)

    def _log_failed(self, name: str, event: WebhookEvent, error: str | None) -> None:
        """One ``webhook-failed`` line per endpoint per ERROR_LOG_INTERVAL at most, with
        how many gave up since the last line (a day-long outage ends in a burst)."""
        self._failed_unlogged[name] = self._failed_unlogged.get(name, 0) + 1
        now = time.monotonic()
        key = f"failed:{name}"
        if now - self._last_error_log.get(key, -ERROR_LOG_INTERVAL) < ERROR_LOG_INTERVAL:
            return
        self._last_error_log[key] = now
        log_event(
            logger,
            logging.WARNING,
            "webhook-failed",
            endpoint=name,
            count=self._failed_unlogged.pop(name),
            click_id=event.click.id,
            attempts=event.attempts,
            error=error,
        )

    async def _send(self, endpoint: _Endpoint, event: WebhookEvent) -> tuple[str, str | None]:
        """("delivered" | "retry" | "gone", error text)."""
        assert self._session is not None
        cfg = endpoint.config
        body = body_bytes(event.click, settled=event.settled)
        headers = signed_headers(endpoint.key, event.click.id, int(time.time()), body)
        try:
            async with self._session.post(
                cfg.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=cfg.timeout),
            ) as resp:
                snippet = await resp.content.read(BODY_CAP)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return "retry", f"{type(exc).__name__}: {exc}"[:300]
        if 200 <= status < 300:
            return "delivered", None
        text = snippet.decode("utf-8", "replace").strip()[:200]
        if status == 410:
            endpoint.disabled = True
            log_event(
                logger,
                logging.WARNING,
                "webhook-disabled",
                endpoint=cfg.key,
                status=status,
                reason="receiver answered 410 Gone; enabled again on reload",
            )
            return "gone", "HTTP 410"
        return "retry", f"HTTP {status}" + (f": {text}" if text else "")
