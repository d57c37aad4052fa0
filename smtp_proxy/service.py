"""ProxyService: the SMTP proxy's listeners, upstream pool and admin HTTP, as one object.

Usage (``clickrelay proxy``/``serve``, tests)::

    service = ProxyService(config, keyring, registry=registry, preflight=monitor)
    await service.start()          # listening when this returns; port 0 allowed
    service.port, service.tls_port, service.admin_port
    service.reload(new_config, new_keyring)   # SIGHUP: TLS cert, users, networks, keys, DKIM keys
    await service.stop(grace=30)   # stop accepting, let transactions finish, close

What ``reload`` cannot change without a restart: listen addresses, the upstream
(URL, pool size, credentials) and the connection/size limits of connections that are
already open (new connections get the new limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time

from aiohttp import web
from prometheus_client import CollectorRegistry

from clickrelay.common.errors import ConfigError
from clickrelay.common.hostport import parse_hostport
from clickrelay.common.logfmt import log_event
from redirector.http.admin import create_admin_app
from redirector.tokens import Keyring
from smtp_proxy.config import ProxySettings
from smtp_proxy.engine.speedups import speedups
from smtp_proxy.preflight.monitor import PreflightMonitor
from smtp_proxy.smtp.auth_limiter import AuthFailureLimiter
from smtp_proxy.smtp.connections import Connections
from smtp_proxy.smtp.handler import ProxyHandler
from smtp_proxy.smtp.metrics import ProxyMetrics
from smtp_proxy.smtp.protocol import protocol_factory
from smtp_proxy.smtp.relay_policy import RelayPolicy
from smtp_proxy.smtp.runtime import ProxyRuntime
from smtp_proxy.smtp.tracking import build_settings, load_dkim_keys
from smtp_proxy.smtp.users import UsersFile
from smtp_proxy.upstream import Upstream, open_upstream

logger = logging.getLogger("clickrelay.proxy")

#: The service name in the admin listener's ``/healthz``.
SERVICE = "clickrelay-proxy"


def make_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """Server-side TLS context for STARTTLS and the implicit-TLS listener."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"proxy.tls_cert/tls_key: cannot load {cert} / {key}: {exc}") from None
    return context


class ProxyService:
    """SMTP listener(s) + optional implicit-TLS listener + admin HTTP around one pool."""

    def __init__(
        self,
        config: ProxySettings,
        keyring: Keyring,
        *,
        registry: CollectorRegistry | None = None,
        preflight: PreflightMonitor | None = None,
        admin: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.preflight = preflight
        self._config = config
        self._keyring = keyring
        self._admin = admin
        self.metrics = ProxyMetrics(self.registry)
        self.connections: Connections | None = None
        self._limiter = AuthFailureLimiter(
            config.proxy.auth_fail_limit, config.proxy.auth_fail_window
        )
        self._runtime: ProxyRuntime | None = None
        self._servers: list[asyncio.Server] = []
        self._smtp_server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._admin_runner: web.AppRunner | None = None
        self._admin_port: int | None = None
        self._port: int | None = None
        self._tls_port: int | None = None
        self._pool: Upstream | None = None
        self.handler: ProxyHandler | None = None

    # --- runtime (what reload swaps) ----------------------------------------------------------

    def _build_runtime(
        self, config: ProxySettings, keyring: Keyring, hostname: str
    ) -> ProxyRuntime:
        proxy = config.proxy
        tls_context = None
        if proxy.tls_cert is not None or proxy.tls_key is not None:
            if proxy.tls_cert is None or proxy.tls_key is None:
                raise ConfigError("proxy: tls_cert and tls_key must be set together")
            tls_context = make_tls_context(str(proxy.tls_cert), str(proxy.tls_key))
            tls_context.sni_callback = self._sni
        if proxy.tls_listen and tls_context is None:
            raise ConfigError("proxy.tls_listen needs proxy.tls_cert and proxy.tls_key")
        users = UsersFile.load(proxy.users_file) if proxy.users_file is not None else None
        # Read here, once: a signed message is then re-signed from memory (no file read
        # on the event loop), and a reload with an unreadable key keeps the old ones.
        dkim_keys = load_dkim_keys(config.dkim)
        return ProxyRuntime(
            config=config,
            keyring=keyring,
            relay=RelayPolicy.from_networks(proxy.trusted_networks),
            users=users,
            tls_context=tls_context,
            hostname=hostname,
            settings=build_settings(config, keyring, dkim_keys),
            dkim_keys=dkim_keys,
        )

    def _current(self) -> ProxyRuntime:
        assert self._runtime is not None, "ProxyService not started"
        return self._runtime

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        # The implicit-TLS listener's context is fixed at bind time; on each handshake
        # switch to the newest context so a reloaded certificate is used at once.
        current = self._runtime.tls_context if self._runtime else None
        if current is not None and current is not context:
            sslobj.context = current

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        config = self._config
        hostname = config.proxy.hostname or await asyncio.to_thread(socket.getfqdn)
        self._runtime = self._build_runtime(config, self._keyring, hostname)
        self.connections = Connections(self.metrics)
        pool = open_upstream(config.upstream, registry=self.registry, local_hostname=hostname)
        self._pool = pool
        self.handler = ProxyHandler(
            self._current,
            pool,
            connections=self.connections,
            metrics=self.metrics,
            limiter=self._limiter,
            preflight=self.preflight,
        )
        loop = asyncio.get_running_loop()
        try:
            host, port = parse_hostport(config.proxy.listen)
            self._smtp_server = await loop.create_server(
                protocol_factory(self.handler, self._current, self.connections),
                host,
                port,
                reuse_address=True,
            )
            self._servers.append(self._smtp_server)
            self._port = int(self._smtp_server.sockets[0].getsockname()[1])
            if config.proxy.tls_listen:
                tls_host, tls_port = parse_hostport(config.proxy.tls_listen)
                self._tls_server = await loop.create_server(
                    protocol_factory(
                        self.handler, self._current, self.connections, implicit_tls=True
                    ),
                    tls_host,
                    tls_port,
                    ssl=self._runtime.tls_context,
                    reuse_address=True,
                )
                self._servers.append(self._tls_server)
                self._tls_port = int(self._tls_server.sockets[0].getsockname()[1])
            if self._admin and config.proxy.admin_listen:
                admin_host, admin_port = parse_hostport(config.proxy.admin_listen)
                admin = create_admin_app(
                    None, registry=self.registry, stats=False, health_service=SERVICE
                )
                runner = web.AppRunner(admin, access_log=None)
                await runner.setup()
                self._admin_runner = runner
                site = web.TCPSite(runner, admin_host, admin_port)
                await site.start()
                self._admin_port = int(runner.addresses[0][1])
        except BaseException:
            await self._close_listeners()
            await self._close_pool()
            raise
        log_event(
            logger,
            logging.INFO,
            "proxy-started",
            listen=config.proxy.listen,
            port=self.port,
            tls_port=self.tls_port,
            admin_port=self.admin_port,
            upstream=_redact(config.upstream.url),
            # Whether the rewriter runs its C loops (pure Python is ~1.5x slower).
            speedups="on" if speedups else "off",
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight transactions finish (up to ``grace`` seconds,
        default ``proxy.shutdown_grace``), then hang up on clients and close the pool."""
        if grace is None:
            grace = self._config.proxy.shutdown_grace
        for server in self._servers:
            server.close()
        started = time.monotonic()
        connections = self.connections
        if connections is not None:
            connections.draining = True
            try:
                async with asyncio.timeout(grace):
                    await connections.wait_idle()
            except TimeoutError:
                log_event(logger, logging.WARNING, "proxy-stop-grace-expired", grace=grace)
            await connections.close_all()
        await self._close_listeners()
        await self._close_pool()
        log_event(
            logger,
            logging.INFO,
            "proxy-stopped",
            waited_ms=round((time.monotonic() - started) * 1000),
        )

    async def _close_listeners(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        if self._admin_runner is not None:
            runner, self._admin_runner = self._admin_runner, None
            await runner.cleanup()

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def reload(self, config: ProxySettings, keyring: Keyring) -> None:
        """Apply a new config and keyring to new commands and connections.

        Raises ConfigError (and keeps the old runtime) when e.g. the new certificate,
        users file or a DKIM key file cannot be loaded.
        """
        old = self._current()
        hostname = config.proxy.hostname or old.hostname
        self._runtime = self._build_runtime(config, keyring, hostname)
        self._config = config
        self._keyring = keyring
        self._limiter.reconfigure(config.proxy.auth_fail_limit, config.proxy.auth_fail_window)
        if self.preflight is not None:
            self.preflight.update_keyring(keyring)
        for what, before, after in (
            ("proxy.listen", old.config.proxy.listen, config.proxy.listen),
            ("proxy.tls_listen", old.config.proxy.tls_listen, config.proxy.tls_listen),
            ("upstream", old.config.upstream, config.upstream),
        ):
            if before != after:
                log_event(logger, logging.WARNING, "reload-needs-restart", setting=what)
        log_event(logger, logging.INFO, "proxy-reloaded", key_ids=",".join(keyring.key_ids))

    # --- addresses ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The SMTP port bound at start (still answers after stop())."""
        assert self._port is not None, "ProxyService not started"
        return self._port

    @property
    def tls_port(self) -> int | None:
        return self._tls_port

    @property
    def admin_port(self) -> int | None:
        return self._admin_port


def _redact(url: str) -> str:
    """An upstream URL without its password, for logs."""
    if "@" not in url or url.startswith("maildir:"):
        return url
    scheme, _, rest = url.partition("://")
    creds, _, hostpart = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}"
