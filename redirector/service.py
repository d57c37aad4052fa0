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

import dataclasses
import logging

from aiohttp import web
from prometheus_client import CollectorRegistry

from clickrelay.common.errors import ConfigError
from clickrelay.common.hostport import parse_hostport
from clickrelay.common.logfmt import log_event
from redirector.blocklist import Blocklist, load_blocklist
from redirector.clicks.classify import Classifier
from redirector.clicks.recorder import ClickRecorder
from redirector.clicks.settle import Settler
from redirector.config import LIVE_FIELDS, RedirectorConfig
from redirector.http.admin import create_admin_app
from redirector.http.app import create_app, set_keyring, set_live_settings
from redirector.store import ClickStore, StoreError, open_store
from redirector.tokens import Keyring

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
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self._keyring = keyring
        # Built now so that a bad scanner_agents_file or blocklist fails before anything
        # is bound.
        self._classifier = Classifier.from_config(config)
        self._blocklist = load_blocklist(config.blocklist_file)
        self._listen = parse_listen(config.listen, key="listen")
        self._admin_listen = parse_listen(config.admin_listen, key="admin_listen")
        self._store: ClickStore | None = None
        self._recorder: ClickRecorder | None = None
        self._settler: Settler | None = None
        self._app: web.Application | None = None
        self._runners: list[web.AppRunner] = []
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
    def admin_port(self) -> int:
        if self._admin_port is None:
            raise RuntimeError("RedirectorService is not started")
        return self._admin_port

    async def start(self) -> None:
        """Open the store (a failure is survivable), start the recorder and both listeners.

        Raises StoreError for an unusable store URL, OSError when a port cannot be bound.
        """
        config = self.config
        store = open_store(config.store)
        self._store = store
        try:
            await store.open()
        except StoreError as exc:
            log_event(
                log, logging.WARNING, "click-store-unavailable", store=store.name, error=str(exc)
            )
        recorder = ClickRecorder(
            store,
            queue_size=config.queue_size,
            batch_size=config.batch_size,
            flush_interval=config.flush_interval,
            registry=self.registry,
        )
        self._recorder = recorder
        await recorder.start()
        self._settler = Settler(
            store, settle_delay=config.classification_settle, registry=self.registry
        )
        self._settler.start()
        try:
            self._app = create_app(
                config,
                self._keyring,
                recorder,
                registry=self.registry,
                classifier=self._classifier,
                blocklist=self._blocklist,
            )
            admin = create_admin_app(recorder, registry=self.registry)
            self._public_port = await self._serve(self._app, self._listen)
            self._admin_port = await self._serve(admin, self._admin_listen)
        except BaseException:
            await self.stop()
            raise
        log_event(
            log,
            logging.INFO,
            "redirector-listening",
            listen=f"{self._listen[0]}:{self._public_port}",
            admin=f"{self._admin_listen[0]}:{self._admin_port}",
            store=store.name,
            key_ids=",".join(self._keyring.key_ids),
        )
        if self._blocklist:
            _log_blocklist(self._blocklist)

    async def _serve(self, app: web.Application, where: tuple[str, int]) -> int:
        # No access log: it would cost time on the hot path and write every client's IP
        # in full, bypassing the configured truncation.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=LISTENER_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, where[0], where[1])
        await site.start()
        address = runner.addresses[-1]
        return int(address[1])

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
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
        settler, self._settler = self._settler, None
        if settler is not None:
            await settler.stop()
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


def _log_blocklist(blocklist: Blocklist) -> None:
    log_event(
        log,
        logging.INFO,
        "blocklist-loaded",
        source=blocklist.source,
        queues=len(blocklist.queue_ids),
        hosts=len(blocklist.hosts),
    )
