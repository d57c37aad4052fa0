"""Process lifecycle of the long-running commands (``serve``, ``proxy``, ``redirector``).

One event loop (uvloop when installed) runs a :class:`Stack` — the services a command
needs, started in dependency order — and reacts to signals:

* **SIGTERM / SIGINT**: ``STOPPING=1``; the proxy stops accepting and lets in-flight SMTP
  transactions finish for up to ``[proxy] shutdown_grace``; the preflight monitor stops;
  the redirector stops listening and flushes queued clicks for up to ``[redirector]
  shutdown_flush_timeout``; exit 0. A second SIGINT (Ctrl-C) quits at once (exit 130);
  further SIGTERMs are ignored (systemd's ``TimeoutStopSec`` is the hard limit).
* **SIGHUP**: ``RELOADING=1``; the config file, the key file and (through the proxy) the
  TLS certificate and users file are read again, and so are the redirector's blocklist
  file and host aliases. Anything wrong (bad TOML, unknown key,
  unreadable key file or certificate) is logged as ``reload-failed`` with the reason and
  the old settings stay in force. Settings that need new sockets or a new store
  (listen addresses, ``[redirector]``, tracking domains, ``[preflight]``) are logged as
  ``reload-needs-restart`` and keep their running values. ``READY=1`` when done.

Startup: logging, the key file (created 0600 with one key if missing), the services, then
``READY=1`` and a few lines on stdout saying where it listens and where mail goes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from prometheus_client import CollectorRegistry

from clickrelay.common.aiotasks import cancel_and_wait
from clickrelay.common.errors import ClickrelayError
from clickrelay.common.hostport import parse_hostport
from clickrelay.common.logfmt import log_event
from clickrelay.config import Config, config_from_cli
from clickrelay.logsetup import setup_logging
from clickrelay.sdnotify import Notifier
from redirector.blocklist import load_blocklist
from redirector.config import LIVE_FIELDS as REDIRECTOR_LIVE_FIELDS
from redirector.tokens import Keyring, ensure_key_file, load_keyring

if TYPE_CHECKING:
    from redirector.service import RedirectorService
    from smtp_proxy.preflight.monitor import PreflightMonitor
    from smtp_proxy.service import ProxyService

logger = logging.getLogger("clickrelay.lifecycle")

Kind = Literal["serve", "proxy", "redirector"]
T = TypeVar("T")


#: Seconds between checks whether the STATUS line changed (e.g. a preflight verdict);
#: a changed line is sent to systemd, so ``systemctl status`` stays current.
STATUS_INTERVAL = 5.0


class StartupError(ClickrelayError):
    """A service could not start (address in use, permission denied, store unreachable)."""


# --- what changed between two configs ----------------------------------------------------


def restart_only_changes(old: Config, new: Config, kind: Kind) -> list[str]:
    """Keys whose new value a reload cannot apply (they need new sockets, a new store or
    a new preflight monitor). They keep their running value until the next restart."""
    changed: list[str] = []
    if kind in ("serve", "proxy"):
        # (The proxy itself reports proxy.listen, proxy.tls_listen and upstream.)
        if kind == "proxy" and old.proxy.admin_listen != new.proxy.admin_listen:
            changed.append("proxy.admin_listen")
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
    # (tracking.key_file is not here: the keys are read from the new path on reload.)
    return changed


def _hostport_text(listen: str, port: int | None) -> str:
    host, _ = parse_hostport(listen)
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}"


# --- the services of one command -----------------------------------------------------------


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
        if kind in ("serve", "redirector"):
            from redirector.service import RedirectorService

            self.redirector = RedirectorService(config.redirector, keyring, registry=self.registry)
        if kind in ("serve", "proxy"):
            from smtp_proxy.preflight.monitor import PreflightMonitor
            from smtp_proxy.service import ProxyService

            self.monitor = PreflightMonitor(config, keyring, registry=self.registry)
            self.proxy = ProxyService(
                config,
                keyring,
                registry=self.registry,
                preflight=self.monitor,
                admin=kind == "proxy",
            )

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
        setup_logging(config.log.level)
        self.config = config
        self.keyring = keyring
        return pending

    # --- what to tell the user -------------------------------------------------------------

    def listening(self) -> dict[str, str]:
        """``name -> host:port`` of every bound listener."""
        out: dict[str, str] = {}
        cfg = self.config
        if self.proxy is not None:
            out["smtp"] = _hostport_text(cfg.proxy.listen, self.proxy.port)
            if cfg.proxy.tls_listen and self.proxy.tls_port is not None:
                out["smtps"] = _hostport_text(cfg.proxy.tls_listen, self.proxy.tls_port)
            if self.kind == "proxy" and cfg.proxy.admin_listen and self.proxy.admin_port:
                out["admin"] = _hostport_text(cfg.proxy.admin_listen, self.proxy.admin_port)
        if self.redirector is not None:
            out["redirector"] = _hostport_text(cfg.redirector.listen, self.redirector.public_port)
            if cfg.redirector.admin_listen and self.redirector.admin_port:
                out["admin"] = _hostport_text(
                    cfg.redirector.admin_listen, self.redirector.admin_port
                )
        return out

    def preflight_summary(self) -> str | None:
        if self.monitor is None:
            return None
        if not self.config.preflight.enabled:
            return "preflight disabled: links are always rewritten"
        states = [f"{url} {self.monitor.state(url)}" for url in self.config.tracking.base_urls()]
        return "preflight: " + ", ".join(states)

    def status_line(self) -> str:
        parts = [f"{name} {addr}" for name, addr in self.listening().items()]
        summary = self.preflight_summary()
        if summary:
            parts.append(summary)
        return "; ".join(parts)

    def banner(self) -> list[str]:
        """A few lines for a person at a terminal: where it listens, where mail goes,
        how to change it."""
        cfg = self.config
        listening = self.listening()
        lines: list[str] = []
        if "smtp" in listening:
            lines.append(f"SMTP proxy      smtp://{listening['smtp']}  (send mail here)")
        if "smtps" in listening:
            lines.append(f"SMTPS           smtps://{listening['smtps']}")
        if self.proxy is not None:
            maildir = cfg.maildir
            if maildir is not None:
                where = f"maildir {maildir}/new/ (a folder, nothing is really sent)"
            else:
                where = cfg.upstream.url
            lines.append(f"mail goes to    {where}")
            lines.append(f"tracked links   {cfg.tracking.base_url}/c/…")
            summary = self.preflight_summary()
            if summary:
                lines.append(summary)
                if self.monitor is not None and not all(
                    self.monitor.may_rewrite(url) for url in cfg.tracking.base_urls()
                ):
                    lines.append(
                        "                (mail is relayed unrewritten until preflight passes:"
                        " run `clickrelay check`)"
                    )
        if "redirector" in listening:
            lines.append(f"redirector      http://{listening['redirector']}  (clicks land here)")
        if "admin" in listening:
            lines.append(f"admin           http://{listening['admin']}/metrics")
        if self.redirector is not None:
            lines.append(f"clicks stored   {cfg.redirector.store}  (see `clickrelay stats`)")
        lines.append(f"link keys       {cfg.tracking.key_file}")
        if cfg.source is None:
            lines.append(
                "configure       copy conf/clickrelay.toml, edit it, run "
                f"`clickrelay {self.kind} -c FILE` (or set $CLICKRELAY_CONFIG)"
            )
        else:
            lines.append(f"config          {cfg.source}  (edit, then SIGHUP to reload)")
        return lines


# --- the run loop -----------------------------------------------------------------------------


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_in_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion in a fresh event loop (uvloop when installed)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


class Supervisor:
    """Starts a :class:`Stack`, then serves signals until SIGTERM/SIGINT.

    ``load`` reads the configuration (again on SIGHUP); ``out`` receives the banner.
    """

    def __init__(
        self,
        kind: Kind,
        load: Callable[[], Config],
        *,
        notifier: Notifier | None = None,
        out: Callable[[str], None] | None = None,
    ) -> None:
        self.kind = kind
        self.load = load
        self.notifier = notifier if notifier is not None else Notifier()
        self.out = out if out is not None else _print_flush
        self.stack: Stack | None = None
        self._signals: asyncio.Queue[str] = asyncio.Queue()
        self._stopping = False

    def _on_signal(self, name: str) -> None:
        if self._stopping:
            if name == "SIGINT":
                # A second Ctrl-C at a terminal: the person does not want to wait for the
                # grace period. Messages not yet answered 250 stay with their senders;
                # clicks still queued are lost, which is what was asked for.
                log_event(logger, logging.WARNING, "forced-exit", signal=name)
                logging.shutdown()
                os._exit(130)
            log_event(logger, logging.WARNING, "signal-while-stopping", signal=name)
            return
        if name in ("SIGTERM", "SIGINT"):
            self._stopping = True
        self._signals.put_nowait(name)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        for sig in handled:
            loop.add_signal_handler(sig, self._on_signal, sig.name)
        watchdog = asyncio.create_task(self.notifier.watchdog_loop(), name="sd-watchdog")
        try:
            return await self._run()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            await cancel_and_wait(watchdog)

    async def _run(self) -> int:
        config = self.load()
        setup_logging(config.log.level)
        try:
            keyring = ensure_key_file(config.tracking.key_file)
        except OSError as exc:
            # e.g. a relative key_file under a read-only /etc (systemd's ProtectSystem).
            raise StartupError(
                f"cannot create the key file {config.tracking.key_file}: {exc.strerror}"
                " (set [tracking] key_file to a writable path)"
            ) from None
        stack = Stack(self.kind, config, keyring)
        self.stack = stack
        try:
            await stack.start()
        except OSError as exc:
            await stack.stop()
            raise StartupError(f"cannot start: {exc}") from None
        except BaseException:
            await stack.stop()
            raise
        for line in stack.banner():
            self.out(line)
        loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
        log_event(
            logger, logging.INFO, "ready", command=self.kind, loop=loop_kind, **stack.listening()
        )
        self.notifier.ready(stack.status_line())
        status = asyncio.create_task(self._status_loop(stack), name="sd-status")
        try:
            while True:
                name = await self._signals.get()
                if name == "SIGHUP":
                    await self._reload(stack)
                    continue
                break
        finally:
            await cancel_and_wait(status)
        log_event(logger, logging.INFO, "stopping", signal=name)
        if name == "SIGINT" and sys.stderr.isatty():
            print("stopping gracefully; press Ctrl-C again to quit at once", file=sys.stderr)
        self.notifier.stopping("stopping: finishing in-flight mail, flushing clicks")
        await stack.stop()
        log_event(logger, logging.INFO, "stopped", command=self.kind)
        return 0

    async def _status_loop(self, stack: Stack) -> None:
        if not self.notifier.enabled:
            return
        last = stack.status_line()
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            line = stack.status_line()
            if line != last:
                self.notifier.status(line)
                last = line

    async def _reload(self, stack: Stack) -> None:
        self.notifier.reloading("reloading")
        log_event(logger, logging.INFO, "reload-start")
        try:
            config = self.load()
            keyring = load_keyring(config.tracking.key_file)
            pending = await stack.reload(config, keyring)
        except Exception as exc:
            # Keep serving with what works; say exactly why the new settings were refused.
            # (Anything, even a bug in a reload path, must not take the mail path down.)
            error = str(exc) if isinstance(exc, ClickrelayError) else f"{type(exc).__name__}: {exc}"
            log_event(
                logger,
                logging.ERROR,
                "reload-failed",
                error=error,
                kept="previous configuration",
            )
            self.notifier.ready(f"reload failed, old config kept: {error}; {stack.status_line()}")
            return
        if pending:
            log_event(
                logger,
                logging.WARNING,
                "reload-needs-restart",
                keys=",".join(pending),
                detail="these settings keep their running values until a restart",
            )
        log_event(logger, logging.INFO, "reloaded", key_ids=",".join(stack.keyring.key_ids))
        self.notifier.ready(stack.status_line())


def _print_flush(line: str) -> None:
    print(line, flush=True)


def run_command(kind: Kind, config_path: str | None) -> int:
    """Entry point of ``clickrelay serve|proxy|redirector``.

    The supervisor reads the config first thing, before any service starts, so a bad
    file still fails fast with a clean error (a ConfigError out of ``run_in_loop``).
    """

    async def main() -> int:
        supervisor = Supervisor(kind, lambda: config_from_cli(config_path))
        return await supervisor.run()

    return run_in_loop(main())


__all__ = [
    "Kind",
    "Stack",
    "StartupError",
    "Supervisor",
    "restart_only_changes",
    "run_command",
    "run_in_loop",
]
