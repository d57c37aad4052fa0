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

The services themselves (which ones, their order, what a reload applies) are
:mod:`clickrelay.stack`'s; what is printed and sent as ``STATUS`` is
:mod:`clickrelay.banner`'s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from clickrelay.banner import banner, listening, status_line
from clickrelay.common.aiotasks import cancel_and_wait
from clickrelay.common.errors import ClickrelayError
from clickrelay.common.logfmt import log_event
from clickrelay.config import Config, config_from_cli
from clickrelay.logsetup import setup_logging
from clickrelay.sdnotify import Notifier
from clickrelay.stack import Kind, Stack
from redirector.tokens import ensure_key_file, load_keyring

logger = logging.getLogger("clickrelay.lifecycle")

T = TypeVar("T")


#: Seconds between checks whether the STATUS line changed (e.g. a preflight verdict);
#: a changed line is sent to systemd, so ``systemctl status`` stays current.
STATUS_INTERVAL = 5.0


class StartupError(ClickrelayError):
    """A service could not start (address in use, permission denied, store unreachable)."""


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
        for line in banner(stack):
            self.out(line)
        loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
        log_event(
            logger, logging.INFO, "ready", command=self.kind, loop=loop_kind, **listening(stack)
        )
        self.notifier.ready(status_line(stack))
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
        last = status_line(stack)
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            line = status_line(stack)
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
            self.notifier.ready(f"reload failed, old config kept: {error}; {status_line(stack)}")
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
        self.notifier.ready(status_line(stack))


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
    "StartupError",
    "Supervisor",
    "run_command",
    "run_in_loop",
]
