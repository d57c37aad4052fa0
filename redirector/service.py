"""The redirector as a service: click store + recorder + public and admin HTTP listeners.

Lifecycle::

    service = RedirectorService(config.redirector, keyring, registry=registry)
    await service.start()      # store, recorder, then listeners; ports known after this
    ...
    service.update_keyring(new_keyring)   # key rotation, no restart
    service.update_live_settings(new_config, load_blocklist(path))   # SIGHUP
    await service.stop()       # stop listening, flush queued clicks, close the store

The event loop (uvloop or not) is the caller's choice — the ``clickrelay redirector``
command picks it. A store that cannot be opened at start does not stop the service:
redirects never need the store, so listeners start anyway, ``/healthz`` reports the store
``down``, and the recorder keeps retrying (queueing clicks meanwhile).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import ssl

from aiohttp import web
from prometheus_client import CollectorRegistry

from clickrelay.common.accept_errors import AcceptErrorLog
from clickrelay.common.errors import ConfigError
from clickrelay.common.hostport import parse_hostport
from clickrelay.common.logfmt import log_event
from redirector.blocklist import Blocklist, load_blocklist
from redirector.clicks.classify import Classifier
from redirector.clicks.recorder import ClickRecorder
from redirector.clicks.settle import Settler
from redirector.config import LIVE_FIELDS, RedirectorConfig
from redirector.http.admin import create_admin_app
from redirector.http.admin_auth import check_admin_listen
from redirector.http.app import create_app, set_keyring, set_live_settings
from redirector.http.conngate import ConnectionGate, gated_factory
from redirector.http.dashboard import DashboardSources
from redirector.http.health import HealthItem, HealthProvider, refusals_provider, store_item
from redirector.http.health_certs import certificates_provider
from redirector.http.health_webhooks import webhooks_provider
from redirector.http.refusals import RefusalLog
from redirector.store import ClickStore, StoreError, open_store
from redirector.store.retention import Retention
from redirector.tls.manager import CertManager
from redirector.tls.settings import TlsSettings
from redirector.tls.storage import open_tls_storage
from redirector.tokens import Keyring
from redirector.webhooks.config import WebhookConfig
from redirector.webhooks.delivery import WebhookDispatcher

log = logging.getLogger("clickrelay.redirector")

#: How long stopping a listener waits for requests already being handled. Redirects are
#: answered from memory, so anything still running after this is a stuck client.
LISTENER_SHUTDOWN_TIMEOUT = 5.0


def parse_listen(value: str, *, key: str = "listen") -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (port 0 = any free port) → (host, port)."""
    try:
        return parse_hostport(value)
    except ValueError:
        raise ConfigError(
            f"[redirector] {key}: expected host:port or [ipv6]:port, got {value!r}"
        ) from None


class RedirectorService:
    """Runs the click redirector: see the module docstring."""

    def __init__(
        self,
        config: RedirectorConfig,
        keyring: Keyring,
        *,
        registry: CollectorRegistry | None = None,
        tls: TlsSettings | None = None,
        webhooks: tuple[WebhookConfig, ...] = (),
    ) -> None:
        self.config = config
        self.tls = tls if tls is not None else TlsSettings()
        self.webhooks = webhooks
        self._dispatcher: WebhookDispatcher | None = None
        self._retention: Retention | None = None
        self.registry = registry if registry is not None else CollectorRegistry()
        self._keyring = keyring
        # Built now so that a bad scanner_agents_file or blocklist fails before anything
        # is bound.
        self._classifier = Classifier.from_config(config)
        self._blocklist = load_blocklist(config.blocklist_file)
        self._listen = parse_listen(config.listen, key="listen")
        self._admin_listen = parse_listen(config.admin_listen, key="admin_listen")
        check_admin_listen(config.admin_listen, config.admin_token, key="[redirector] admin_listen")
        self._https_listen = (
            parse_listen(config.https_listen, key="https_listen") if config.https_listen else None
        )
        self._certs: CertManager | None = None
        self._https_port: int | None = None
        #: Extra lines for the dashboard's health strip (preflight, certificates, ...):
        #: the product layer appends providers before start().
        self.health_providers: list[HealthProvider] = []
        self._store: ClickStore | None = None
        self._recorder: ClickRecorder | None = None
        self._settler: Settler | None = None
        self._app: web.Application | None = None
        self._runners: list[web.AppRunner] = []
        self._public_servers: list[asyncio.Server] = []
        self._accept_errors: AcceptErrorLog | None = None
        self.gate = ConnectionGate(
            max_connections=config.max_connections,
            max_per_client=config.max_connections_per_client,
            exempt=[ipaddress.ip_network(n, strict=False) for n in config.trusted_proxies],
            logger=log,
            registry=self.registry,
        )
        self._public_port: int | None = None
        self._admin_port: int | None = None

    @property
    def recorder(self) -> ClickRecorder | None:
        return self._recorder

    @property
    def public_port(self) -> int:
        """The bound public port (useful with port 0); only after start()."""
        if self._public_port is None:
            raise RuntimeError("RedirectorService is not started")
        return self._public_port

    @property
    def https_port(self) -> int | None:
        """The bound HTTPS port (None when ``https_listen`` is off); only after start()."""
        return self._https_port

    @property
    def certificates(self) -> CertManager | None:
        """The HTTPS listener's certificates (None when ``https_listen`` is off)."""
        return self._certs

    @property
    def admin_port(self) -> int:
        if self._admin_port is None:
            raise RuntimeError("RedirectorService is not started")
        return self._admin_port

    async def start(self) -> None:
        """Open the store (a failure is survivable), start the recorder and both listeners.

        Raises StoreError for an unusable store URL, OSError when a port cannot be bound.
        """
        config = self.config
        if self._https_listen is not None:
            # First, so that an unusable certificate file fails the start before anything
            # is bound or opened.
            acme = self.tls.acme
            storage = open_tls_storage(config.store, self.tls.data_dir) if acme.enabled else None
            certs = CertManager(
                self.tls.hosts,
                config,
                acme,
                storage=storage,
                registry=self.registry,
                dns_gate=self.tls.dns_gate,
                timing=self.tls.timing,
                on_change=self.tls.on_change,
            )
            try:
                await certs.start()
            except BaseException:
                await certs.stop()
                raise
            self._certs = certs
        store = open_store(config.store)
        self._store = store
        try:
            await store.open()
        except StoreError as exc:
            log_event(
                log, logging.WARNING, "click-store-unavailable", store=store.name, error=str(exc)
            )
        self._accept_errors = AcceptErrorLog(asyncio.get_running_loop(), log)
        recorder = ClickRecorder(
            store,
            queue_size=config.queue_size,
            queue_bytes=config.queue_bytes,
            batch_size=config.batch_size,
            flush_interval=config.flush_interval,
            registry=self.registry,
        )
        self._recorder = recorder
        await recorder.start()
        if self.webhooks:
            self._dispatcher = WebhookDispatcher(store, self.webhooks, registry=self.registry)
            await self._dispatcher.start()
        if self._retention is None:  # its metric is registered once per registry
            self._retention = Retention(store, config.retention_days, registry=self.registry)
        self._retention.store = store
        await self._retention.start()
        self._settler = Settler(
            store, settle_delay=config.classification_settle, registry=self.registry
        )
        self._settler.start()
        refusals = RefusalLog(log)

        def click_store() -> list[HealthItem]:
            item = store_item(recorder.state, recorder.queued, recorder.dropped, config.queue_size)
            return [item]

        try:
            self._app = create_app(
                config,
                self._keyring,
                recorder,
                registry=self.registry,
                classifier=self._classifier,
                acme_challenge=(
                    self._certs.challenge_answer
                    if self._certs is not None and self.tls.acme.enabled
                    else None
                ),
                blocklist=self._blocklist,
                refusals=refusals,
            )
            sources = DashboardSources(
                store=store,
                store_state=click_store,
                providers=[
                    *self.health_providers,
                    *self._own_health(store),
                    refusals_provider(refusals),
                ],
            )
            admin = create_admin_app(
                recorder,
                registry=self.registry,
                dashboard=sources,
                token=config.admin_token,
            )
            self._public_port = await self._serve_public(self._app, self._listen)
            if self._https_listen is not None and self._certs is not None:
                # The same gate as the plain listener: both serve the public app.
                self._https_port = await self._serve_public(
                    self._app, self._https_listen, ssl_context=self._certs.sni.context
                )
            self._admin_port = await self._serve(admin, self._admin_listen)
            if self._certs is not None:
                self._certs.start_ordering()
        except BaseException:
            await self.stop()
            raise
        log_event(
            log,
            logging.INFO,
            "redirector-listening",
            listen=f"{self._listen[0]}:{self._public_port}",
            https=f"{self._https_listen[0]}:{self._https_port}" if self._https_listen else "off",
            admin=f"{self._admin_listen[0]}:{self._admin_port}",
            store=store.name,
            key_ids=",".join(self._keyring.key_ids),
        )
        if self._blocklist:
            _log_blocklist(self._blocklist)

    def _own_health(self, store: ClickStore) -> list[HealthProvider]:
        """The strip's certificate lines (HTTPS on) and webhook backlog (webhooks on)."""
        own: list[HealthProvider] = []
        if self._certs is not None:
            own.append(certificates_provider(self._certs))
        dispatcher = self._dispatcher
        if dispatcher is not None:
            own.append(webhooks_provider(store, self.webhooks, dispatcher.disabled))
        return own

    async def _runner(self, app: web.Application) -> web.AppRunner:
        """One runner per app, shared by its listeners (HTTP and HTTPS serve one app)."""
        runner = next((r for r in self._runners if r.app is app), None)
        if runner is not None:
            return runner
        # No access log: it would cost time on the hot path and write every client's IP
        # in full, bypassing the configured truncation.
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=LISTENER_SHUTDOWN_TIMEOUT,
            keepalive_timeout=self.config.header_timeout,
        )
        await runner.setup()
        self._runners.append(runner)
        return runner

    async def _serve_public(
        self,
        app: web.Application,
        where: tuple[str, int],
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> int:
        """A public listener: aiohttp's handlers behind the connection gate."""
        runner = await self._runner(app)
        assert runner.server is not None
        loop = asyncio.get_running_loop()
        factory = gated_factory(
            runner.server, self.gate, loop=loop, keepalive_timeout=self.config.header_timeout
        )
        server = await loop.create_server(factory, where[0], where[1], ssl=ssl_context)
        self._public_servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _serve(self, app: web.Application, where: tuple[str, int]) -> int:
        runner = await self._runner(app)
        site = web.TCPSite(runner, where[0], where[1])
        await site.start()
        address = runner.addresses[-1]
        return int(address[1])

    async def reload_certificates(self, config: RedirectorConfig) -> None:
        """SIGHUP: read ``[redirector] tls_certificates`` again (ConfigError: nothing
        changed)."""
        if self._certs is not None:
            await self._certs.reload_files(config)

    @property
    def dispatcher(self) -> WebhookDispatcher | None:
        return self._dispatcher

    def update_webhooks(self, webhooks: tuple[WebhookConfig, ...]) -> None:
        """New settings for the running endpoints (one disabled by a 410 is enabled)."""
        if self._dispatcher is not None:
            self._dispatcher.reload(webhooks)

    def update_keyring(self, keyring: Keyring) -> None:
        """Decode with these keys from now on (rotation without a restart)."""
        self._keyring = keyring
        if self._app is not None:
            set_keyring(self._app, keyring)
        log_event(log, logging.INFO, "redirector-keys", key_ids=",".join(keyring.key_ids))

    def update_live_settings(self, config: RedirectorConfig, blocklist: Blocklist) -> None:
        """Apply the settings a SIGHUP may change (``LIVE_FIELDS`` of ``config``: the host
        aliases and the blocklist file, read by the caller into ``blocklist``)."""
        changed = blocklist != self._blocklist
        self._blocklist = blocklist
        live = {name: getattr(config, name) for name in LIVE_FIELDS}
        self.config = dataclasses.replace(self.config, **live)
        if self._app is not None:
            set_live_settings(self._app, config.host_aliases, blocklist)
        if changed:
            _log_blocklist(blocklist)

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - contract
        """Stop listening, flush queued clicks (up to ``timeout`` or the configured
        ``shutdown_flush_timeout``), close the store. Safe to call twice."""
        public, self._public_servers = self._public_servers, []
        for server in public:
            server.close()  # stop accepting; the runner's cleanup ends open connections
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
        settler, self._settler = self._settler, None
        if settler is not None:
            await settler.stop()
        if self._retention is not None:
            await self._retention.stop()
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            # Events in flight stay leased in the store and are sent again later.
            await dispatcher.stop()
        certs, self._certs = self._certs, None
        if certs is not None:
            await certs.stop()
        recorder = self._recorder  # kept: its counters stay readable after stop
        if recorder is not None:
            flush = self.config.shutdown_flush_timeout if timeout is None else timeout
            await recorder.stop(flush)
        store, self._store = self._store, None
        if store is not None:
            try:
                await store.close()
            except StoreError as exc:
                log_event(log, logging.WARNING, "click-store-close-failed", error=str(exc))
            log_event(
                log,
                logging.INFO,
                "redirector-stopped",
                clicks_written=recorder.written if recorder else 0,
                clicks_unsaved=recorder.queued if recorder else 0,
                clicks_dropped=recorder.dropped if recorder else 0,
            )
        self._app = None
        self.gate.refusals.flush()
        accept_errors, self._accept_errors = self._accept_errors, None
        if accept_errors is not None:
            accept_errors.uninstall()


def _log_blocklist(blocklist: Blocklist) -> None:
    log_event(
        log,
        logging.INFO,
        "blocklist-loaded",
        source=blocklist.source,
        queues=len(blocklist.queue_ids),
        hosts=len(blocklist.hosts),
    )
