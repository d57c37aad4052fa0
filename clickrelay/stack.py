"""The services one long-running command runs (``serve``, ``proxy``, ``redirector``): built
in dependency order with one shared Prometheus registry, started, stopped and reloaded.

A :class:`Stack` also wires the services to one another: the preflight monitor reads the
certificates of the redirector in the same process (else what the redirector nodes wrote
to the TLS storage) and re-checks when one changes, and the redirector's health page
shows the preflight verdicts. :func:`restart_only_changes` says which changed settings a
reload cannot apply. Signals and the run loop are :mod:`clickrelay.supervisor`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry

from clickrelay.common.logfmt import log_event
from clickrelay.config import Config
from clickrelay.health_items import preflight_provider, standalone_preflight_item
from clickrelay.logsetup import setup_logging
from clickrelay.tls_setup import https_hosts, tls_settings
from redirector.blocklist import load_blocklist
from redirector.config import LIVE_FIELDS as REDIRECTOR_LIVE_FIELDS
from redirector.tokens import Keyring

if TYPE_CHECKING:
    from clickrelay.tls_status import StoredTlsStatus
    from redirector.service import RedirectorService
    from redirector.tls.status import HostStatus
    from smtp_proxy.preflight.monitor import PreflightMonitor
    from smtp_proxy.service import ProxyService

logger = logging.getLogger("clickrelay.lifecycle")

Kind = Literal["serve", "proxy", "redirector"]


def restart_only_changes(old: Config, new: Config, kind: Kind) -> list[str]:
    """Keys whose new value a reload cannot apply (they need new sockets, a new store or
    a new preflight monitor). They keep their running value until the next restart."""
    changed: list[str] = []
    if kind in ("serve", "proxy"):
        # (The proxy itself reports proxy.listen, proxy.tls_listen and upstream.)
        if kind == "proxy" and old.proxy.admin_listen != new.proxy.admin_listen:
            changed.append("proxy.admin_listen")
        if kind == "proxy" and old.redirector.admin_token != new.redirector.admin_token:
            changed.append("redirector.admin_token")  # the proxy's admin listener's token
        if old.tracking.base_urls() != new.tracking.base_urls():
            changed.append("tracking.base_url/sender_domains")
        if old.preflight != new.preflight or old.tracking.cname_target != new.tracking.cname_target:
            changed.append("preflight")
    if kind in ("serve", "redirector"):
        for fld in dataclasses.fields(old.redirector):
            if fld.name in REDIRECTOR_LIVE_FIELDS:
                continue
            if getattr(old.redirector, fld.name) != getattr(new.redirector, fld.name):
                changed.append(f"redirector.{fld.name}")
        if old.acme != new.acme:
            changed.append("acme")
        tls_hosts_changed = https_hosts(old.tracking) != https_hosts(new.tracking)
        if kind == "redirector" and new.redirector.https_listen and tls_hosts_changed:
            changed.append("tracking.base_url/sender_domains")
        if [w.key for w in old.webhooks] != [w.key for w in new.webhooks]:
            changed.append("webhooks (endpoints added or removed)")
    # (tracking.key_file is not here: the keys are read from the new path on reload.)
    return changed


class Stack:
    """The services one command runs, with one shared Prometheus registry.

    ``serve``: redirector, then the preflight monitor (its HTTP probe must reach our own
    redirector, so the redirector listens first), then the proxy (no admin listener of
    its own: the redirector's admin listener serves every metric). ``proxy``: monitor +
    proxy with its own admin listener. ``redirector``: the redirector alone.
    """

    def __init__(self, kind: Kind, config: Config, keyring: Keyring) -> None:
        self.kind = kind
        self.config = config
        self.keyring = keyring
        self.registry = CollectorRegistry()
        self.redirector: RedirectorService | None = None
        self.monitor: PreflightMonitor | None = None
        self.proxy: ProxyService | None = None
        # Each service (and preflight) is imported only by the commands that run it:
        # `clickrelay redirector` loads no SMTP code, DNS resolver or HTTP client.
        self._stored_tls: StoredTlsStatus | None = None
        if kind in ("serve", "redirector"):
            from redirector.service import RedirectorService

            tls = tls_settings(config, on_change=self._certificate_changed)
            self.redirector = RedirectorService(
                config.redirector,
                keyring,
                registry=self.registry,
                tls=tls,
                webhooks=config.webhooks,
            )
            if kind == "redirector":
                self.redirector.health_providers.append(standalone_preflight_item(config))
        if kind in ("serve", "proxy"):
            from clickrelay.tls_status import StoredTlsStatus
            from smtp_proxy.preflight.monitor import PreflightMonitor
            from smtp_proxy.service import ProxyService

            # What the preflight knows about certificates: our own redirector's, when it
            # runs in this process, else what the redirector nodes wrote to the storage.
            self._stored_tls = StoredTlsStatus(config)

            self.monitor = PreflightMonitor(
                config, keyring, registry=self.registry, tls_status=self._tls_status
            )
            if self.redirector is not None:
                self.redirector.health_providers.append(preflight_provider(self.monitor, config))
            self.proxy = ProxyService(
                config,
                keyring,
                registry=self.registry,
                preflight=self.monitor,
                admin=kind == "proxy",
            )

    def _certificate_changed(self, host: str) -> None:
        if self.monitor is not None:
            self.monitor.refresh_soon()

    async def _tls_status(self, host: str) -> HostStatus | None:
        certs = self.redirector.certificates if self.redirector is not None else None
        if certs is not None:
            return certs.status(host)
        return await self._stored_tls(host) if self._stored_tls is not None else None

    async def start(self) -> None:
        if self.redirector is not None:
            await self.redirector.start()
        if self.monitor is not None:
            await self.monitor.start()
            # Wait (bounded) for the first verdicts, so that mail sent right after READY
            # is already rewritten when the tracking domain checks out. A domain still
            # pending afterwards just means its mail goes out unrewritten for a while.
            bound = self.config.preflight.timeout * 3 + 1
            try:
                async with asyncio.timeout(bound):
                    await self.monitor.wait_ready()
            except TimeoutError:
                log_event(logger, logging.WARNING, "preflight-pending", waited=bound)
        if self.proxy is not None:
            await self.proxy.start()

    async def stop(self) -> None:
        """Stop in reverse order; a failure in one service does not skip the others."""
        if self.proxy is not None:
            await self._stop_one("proxy", self.proxy.stop(self.config.proxy.shutdown_grace))
        if self.monitor is not None:
            await self._stop_one("preflight", self.monitor.stop())
        if self.redirector is not None:
            timeout = self.config.redirector.shutdown_flush_timeout
            await self._stop_one("redirector", self.redirector.stop(timeout))
        if self._stored_tls is not None:
            await self._stop_one("tls-status", self._stored_tls.aclose())

    async def _stop_one(self, name: str, stopping: Coroutine[Any, Any, None]) -> None:
        try:
            await stopping
        except Exception as exc:  # keep stopping the rest; the error is in the log
            log_event(
                logger,
                logging.ERROR,
                "stop-failed",
                service=name,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def reload(self, config: Config, keyring: Keyring) -> list[str]:
        """Apply what can be applied live; returns the keys that need a restart."""
        pending = restart_only_changes(self.config, config, self.kind)
        # Read before anything switches: a bad blocklist keeps the whole old state.
        blocklist = (
            load_blocklist(config.redirector.blocklist_file)
            if self.redirector is not None
            else None
        )
        if self.redirector is not None:
            # Certificate files too: a bad one raises ConfigError before anything else
            # has changed, and the certificates in service stay.
            await self.redirector.reload_certificates(config.redirector)
        if self.proxy is not None:
            # The proxy validates the new TLS certificate and users file before it
            # switches (and hands the keys to the preflight monitor, which re-proves
            # that the redirector holds a new minting key before links use it); if it
            # raises, nothing below ran and the old state stands.
            self.proxy.reload(config, keyring)
        # New keys for the redirector in the same step (no await in between), so a
        # link minted with a new key always decodes.
        if self.redirector is not None and blocklist is not None:
            self.redirector.update_keyring(keyring)
            self.redirector.update_live_settings(config.redirector, blocklist)
            self.redirector.update_webhooks(config.webhooks)
        setup_logging(config.log.level)
        self.config = config
        self.keyring = keyring
        return pending
