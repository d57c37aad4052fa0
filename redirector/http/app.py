"""The redirector's public aiohttp application: ``/c/<token>`` and ``/healthz``.

(The admin application, ``/metrics`` and ``/api/stats``, is :mod:`redirector.http.admin`.)

The hot path (``GET|HEAD /c/<token>``) needs no I/O: open the sealed token, build the
Location header byte-exact (:mod:`redirector.location`), label the click
(:mod:`redirector.clicks.classify`), hand it to the recorder without waiting, answer 302. The
click store being slow or down therefore never delays a redirect.

Everything that is not a token we minted — forged, truncated, tampered, unknown key, a
target we would not send anyone to, any other path or method — gets one and the same 404
(no Location, same headers, same body), so a prober learns nothing from the failure. So
do a version 2 token requested on a host it was not minted for (the ``Host`` header,
port dropped, normalised; ``[redirector] host_aliases`` maps other request hosts to a
tracking host) and a link on the blocklist (:mod:`redirector.blocklist`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from clickrelay.common import __version__
from clickrelay.common.errors import TokenError
from clickrelay.common.logfmt import log_event
from redirector.blocklist import EMPTY as EMPTY_BLOCKLIST
from redirector.blocklist import Blocklist
from redirector.clicks import (
    BOT,
    HUMAN,
    MAX_STORED_RECIPIENT,
    MAX_STORED_URL,
    MAX_STORED_USER_AGENT,
    Click,
    bounded,
)
from redirector.clicks.classify import Classifier, ClickVerdict
from redirector.clicks.clientkeys import ClientKeys
from redirector.clicks.repeats import RepeatLimiter
from redirector.config import RedirectorConfig
from redirector.hosts import normalize_host, request_host
from redirector.http.clientip import ClientIpPolicy
from redirector.http.refusals import RefusalLog
from redirector.location import location_for
from redirector.tls import http01
from redirector.tls.http01 import ChallengeLookup
from redirector.tokens import Keyring, LinkData

if TYPE_CHECKING:
    from redirector.clicks.recorder import ClickRecorder

log = logging.getLogger("clickrelay.redirector")

SERVICE = "clickrelay-redirector"
#: Longest token accepted, checked before any decoding work. A tracked link is at most
#: ``[tracking] max_link_length`` (2048 by default) long, so real tokens are far shorter;
#: this stays just under aiohttp's request-line limit (8190 bytes, answered with its own
#: 400) so that every token-shaped path the server does parse gets the uniform 404.
MAX_TOKEN_CHARS = 8000

#: Headers of every answer on the public listener: never cached, never indexed, and the
#: tracking URL is not leaked to the destination as a Referer.
_COMMON_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}
#: The headers of the 302 (before its Location) and of the 404. Built once: web.Response
#: copies a CIMultiDict cheaper than it converts a dict.
_TEXT_HEADERS = CIMultiDict({**_COMMON_HEADERS, "Content-Type": "text/plain"})
_FOUND_BODY = b"Found\n"
_NOT_FOUND_BODY = b"Not Found\n"


class RedirectorMetrics(Collector):
    """Counters of the public app, exported through the given registry.

    Plain integers bumped on the event loop and turned into Prometheus counters only
    when scraped: a prometheus_client ``Counter.inc()`` takes a lock and costs a few
    microseconds, which adds up on a path that answers thousands of redirects a second.
    All increments and scrapes happen on the one event loop thread.
    """

    def __init__(self, registry: CollectorRegistry, refusals: RefusalLog) -> None:
        self.found = 0
        #: 404s by reason; their sum is the 404 count.
        self.refusals = refusals
        # Keyed by bot reason (None = human): a reason implies its classification, and
        # hashing a str is cheaper than hashing the ClickVerdict dataclass.
        self.clicks: dict[str | None, int] = {}
        #: Set by create_app: clicks redirected and counted but not stored (repeats).
        self.repeats: RepeatLimiter | None = None
        registry.register(self)

    def click(self, verdict: ClickVerdict) -> None:
        reason = verdict.reason
        self.clicks[reason] = self.clicks.get(reason, 0) + 1

    def collect(self) -> Iterator[Metric]:
        redirects = CounterMetricFamily(
            "clickrelay_redirects",
            "Answers to /c/<token> by status: 302 (ours) or 404 (anything else)",
            labels=["result"],
        )
        redirects.add_metric(["302"], self.found)
        redirects.add_metric(["404"], sum(self.refusals.totals.values()))
        yield redirects
        refused = CounterMetricFamily(
            "clickrelay_redirects_refused",
            "404s to /c/<token> by reason (malformed, unknown-key, forged, ...): the client"
            " gets the same answer for all",
            labels=["reason"],
        )
        for refusal, n in sorted(self.refusals.totals.items()):
            refused.add_metric([refusal], n)
        yield refused
        clicks = CounterMetricFamily(
            "clickrelay_clicks",
            "Redirected clicks by classification (human, or bot with a reason)",
            labels=["classification", "reason"],
        )
        for reason, count in sorted(self.clicks.items(), key=lambda kv: kv[0] or ""):
            classification = HUMAN if reason is None else BOT
            clicks.add_metric([classification, reason or "none"], count)
        yield clicks
        not_stored = CounterMetricFamily(
            "clickrelay_clicks_not_stored",
            "Clicks redirected and counted but not stored: repeats of one link from one"
            " address beyond [redirector] repeat_clicks_stored per repeat_window",
            labels=["reason"],
        )
        not_stored.add_metric(["repeat"], self.repeats.suppressed if self.repeats else 0)
        yield not_stored


@dataclass
class RedirectorState:
    """What the public app's handlers use. Mutable: the keyring, the host aliases and
    the blocklist can be swapped live."""

    keyring: Keyring
    recorder: ClickRecorder | None
    classifier: Classifier
    ip_policy: ClientIpPolicy
    metrics: RedirectorMetrics
    refusals: RefusalLog
    repeats: RepeatLimiter
    client_keys: ClientKeys
    #: Request host -> the tracking host whose tokens it also answers (normalised).
    host_aliases: dict[str, str] = field(default_factory=dict)
    blocklist: Blocklist = EMPTY_BLOCKLIST


def normalized_aliases(aliases: Mapping[str, str]) -> dict[str, str]:
    """``[redirector] host_aliases`` in the form requests are compared in."""
    return {normalize_host(alias): normalize_host(host) for alias, host in aliases.items()}


STATE_KEY = web.AppKey("redirector_state", RedirectorState)


def not_found_response() -> web.Response:
    """The one failure answer of the public listener, whatever went wrong."""
    return web.Response(status=404, body=_NOT_FOUND_BODY, headers=_TEXT_HEADERS)


async def _redirect(request: web.Request) -> web.StreamResponse:
    # The hot path: every line here runs once per click, so it is kept flat.
    state = request.app[STATE_KEY]
    token = request.match_info.get("token", "")
    if len(token) > MAX_TOKEN_CHARS:
        state.refusals.note("too-long")
        return not_found_response()
    host = request_host(request.headers.get(hdrs.HOST))
    try:
        try:
            link = state.keyring.open(token, host)
        except TokenError as exc:
            alias_of = state.host_aliases.get(host)
            if exc.reason != "wrong-host" or alias_of is None:
                raise
            link = state.keyring.open(token, alias_of)
    except TokenError as exc:
        state.refusals.note(exc.reason, exc.key_id)
        return not_found_response()
    if state.blocklist and state.blocklist.blocks(link):
        state.refusals.note("blocked")
        return not_found_response()
    location = location_for(link.url)
    if location is None:
        # Cannot happen for tokens our own seal() minted; refuse loudly if it does.
        log_event(
            log,
            logging.WARNING,
            "redirect-refused",
            queue_id=link.queue_id,
            link_index=link.link_index,
            reason="unsafe-location",
        )
        state.refusals.note("unsafe-location")
        return not_found_response()
    state.metrics.found += 1
    try:
        _note_click(request, state, link)
    except Exception as exc:  # a click we fail to note must never cost the redirect
        log_event(log, logging.ERROR, "click-not-recorded", queue_id=link.queue_id, error=repr(exc))
    response = web.Response(status=302, body=_FOUND_BODY, headers=_TEXT_HEADERS)
    # Set after construction: the CIMultiDict copy of the constant headers is cheaper
    # than building one from a new dict per redirect.
    response.headers[hdrs.LOCATION] = location
    return response


def _note_click(request: web.Request, state: RedirectorState, link: LinkData) -> None:
    headers = request.headers
    user_agent = headers.get(hdrs.USER_AGENT)
    policy = state.ip_policy
    forwarded = tuple(headers.getall(hdrs.X_FORWARDED_FOR, ())) if policy.trusted_proxies else ()
    client, client_ip = policy.describe(request.remote, forwarded)
    classifier = state.classifier
    now = classifier.clock()
    method = request.method
    # The full address, before truncation: the scanner ranges and the walk rules' keys.
    network = classifier.networks(client) if classifier.networks else None
    client_key, net_key = state.client_keys.keys(client, now)
    verdict = classifier.classify(
        method=method,
        user_agent=user_agent,
        client=client,
        queue_id=link.queue_id,
        link_index=link.link_index,
        sent_at=link.sent_at,
        now=now,
        network=network,
        trap=link.trap,
    )
    state.metrics.click(verdict)
    if state.recorder is None:
        return
    if not state.repeats.allow(link.queue_id, link.link_index, link.recipient, client):
        return
    state.recorder.record(
        Click(
            time=datetime.fromtimestamp(now, UTC),
            queue_id=link.queue_id,
            link_index=link.link_index,
            url=bounded(link.url, MAX_STORED_URL) or "",
            recipient=bounded(link.recipient, MAX_STORED_RECIPIENT),
            client_ip=client_ip,
            user_agent=bounded(user_agent, MAX_STORED_USER_AGENT),
            method=method,
            classification=verdict.classification,
            reason=verdict.reason,
            tag=link.tag,
            metadata=link.metadata,
            sent_at=link.sent_at_datetime,
            client_key=client_key,
            net_key=net_key,
            network=network,
            trap=link.trap,
            evidence=_serve_evidence(verdict, network),
        )
    )


def _serve_evidence(verdict: ClickVerdict, network: str | None) -> str | None:
    """The evidence of a serve-time bot label (the click's own fields say the rest)."""
    if not verdict.is_bot:
        return None
    if network is not None:
        return json.dumps({"rule": verdict.reason, "network": network})
    return f'{{"rule": "{verdict.reason}"}}'


async def _healthz(request: web.Request) -> web.Response:
    # Only what the preflight probe checks (smtp_proxy.preflight.http_probe): that this
    # is our redirector, which keys it holds, and whether the store is up. The queue and
    # drop counts tell an outsider how busy we are: they are on the admin listener.
    state = request.app[STATE_KEY]
    recorder = state.recorder
    doc = {
        "service": SERVICE,
        "version": __version__,
        "key_ids": list(state.keyring.key_ids),
        "store": {"state": recorder.state if recorder is not None else "disabled"},
    }
    return web.json_response(doc, headers=_COMMON_HEADERS)


async def _not_found(request: web.Request) -> web.Response:
    return not_found_response()


def create_app(
    config: RedirectorConfig,
    keyring: Keyring,
    recorder: ClickRecorder | None,
    *,
    registry: CollectorRegistry,
    classifier: Classifier | None = None,
    refusals: RefusalLog | None = None,
    acme_challenge: ChallengeLookup | None = None,
    blocklist: Blocklist = EMPTY_BLOCKLIST,
) -> web.Application:
    """The public application: ``GET|HEAD /c/<token>``, ``GET /healthz``, else 404.

    ``acme_challenge`` (ACME on) adds ``GET /.well-known/acme-challenge/<token>``.

    ``recorder`` None means clicks are only counted in metrics, not stored.
    ``classifier`` defaults to one built from ``config`` (tests pass one with a fake
    clock); ``refusals`` to a :class:`RefusalLog` on this module's logger.
    """
    app = web.Application()
    refusals = refusals or RefusalLog(log)
    classifier = classifier or Classifier.from_config(config)
    metrics = RedirectorMetrics(registry, refusals)
    metrics.repeats = RepeatLimiter(
        config.repeat_clicks_stored, config.repeat_window, clock=classifier.clock
    )
    app[STATE_KEY] = RedirectorState(
        keyring=keyring,
        recorder=recorder,
        classifier=classifier,
        ip_policy=ClientIpPolicy.from_config(config),
        metrics=metrics,
        refusals=refusals,
        repeats=metrics.repeats,
        client_keys=client_keys_for(keyring),
        host_aliases=normalized_aliases(config.host_aliases),
        blocklist=blocklist,
    )
    app.cleanup_ctx.append(_log_refusals_at_exit)
    app.router.add_route("GET", "/c/{token}", _redirect)
    app.router.add_route("HEAD", "/c/{token}", _redirect)
    app.router.add_route("GET", "/healthz", _healthz)
    app.router.add_route("HEAD", "/healthz", _healthz)
    if acme_challenge is not None:
        http01.add_route(app, acme_challenge, not_found_response())
    # Everything else, any method: the same 404 (not aiohttp's 404/405 pages).
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


async def _log_refusals_at_exit(app: web.Application) -> AsyncIterator[None]:
    yield
    app[STATE_KEY].refusals.flush()


def set_keyring(app: web.Application, keyring: Keyring) -> None:
    """Swap the keys a running public app decodes with (key rotation)."""
    app[STATE_KEY].keyring = keyring
    app[STATE_KEY].client_keys = client_keys_for(keyring)


def client_keys_for(keyring: Keyring) -> ClientKeys:
    """Hashes every node with this key file computes alike (see ClientKeys)."""
    return ClientKeys(keyring.keys[0].secret)


def set_live_settings(
    app: web.Application, host_aliases: Mapping[str, str], blocklist: Blocklist
) -> None:
    """Swap the host aliases and the blocklist of a running public app (SIGHUP)."""
    state = app[STATE_KEY]
    state.host_aliases = normalized_aliases(host_aliases)
    state.blocklist = blocklist
