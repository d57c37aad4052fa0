"""systemd's ``sd_notify`` protocol, without libsystemd.

A ``Type=notify`` service tells systemd about its state by sending datagrams of
``KEY=value`` lines to the unix socket named in ``$NOTIFY_SOCKET`` (a path, or an
abstract socket written ``@name``). clickrelay sends:

* ``READY=1`` once every listener accepts connections (systemd then starts units
  ordered after it, and ``systemctl start`` returns);
* ``RELOADING=1`` + ``MONOTONIC_USEC=…`` when SIGHUP arrives and ``READY=1`` when the
  reload is done (good or bad);
* ``STOPPING=1`` when SIGTERM arrives;
* ``STATUS=…`` one-line summaries shown by ``systemctl status``;
* ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` while the event loop runs (``WatchdogSec=``
  in the unit): a wedged loop stops the pings and systemd restarts the service.

Without ``$NOTIFY_SOCKET`` (a shell, a test) every call is a cheap no-op. Sending never
raises: systemd being gone must not take the mail path down with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

from clickrelay.common.logfmt import log_event

logger = logging.getLogger("clickrelay.sdnotify")

#: A datagram larger than this is certainly a bug; systemd accepts far more, but a
#: STATUS line should be short.
MAX_STATUS_CHARS = 400


def socket_address(value: str) -> str | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value, or None when unusable.

    ``@name`` is Linux's abstract namespace (a leading NUL byte); an absolute path is a
    filesystem socket. Anything else (relative paths, ``vsock:`` addresses) is not
    something we can reach with AF_UNIX, so it is ignored.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as systemd advises.

    None when no watchdog is configured, when the value is not a positive integer, or
    when ``$WATCHDOG_PID`` names another process (the variable was inherited).
    """
    usec_text = env.get("WATCHDOG_USEC", "")
    if not usec_text.isdigit() or int(usec_text) <= 0:
        return None
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text and (not pid_text.isdigit() or int(pid_text) != pid):
        return None
    return int(usec_text) / 1_000_000 / 2


def _clean(text: str) -> str:
    # A STATUS value is one line: a newline would start a new KEY=value assignment.
    one_line = " ".join(text.split())
    return one_line[:MAX_STATUS_CHARS]


def _status(text: str | None) -> tuple[str, ...]:
    """The ``STATUS=`` assignment that goes with a state change, if there is a text."""
    return (f"STATUS={_clean(text)}",) if text else ()


class Notifier:
    """Sends state changes to systemd; does nothing when not run as a notify service.

    ``env`` defaults to :data:`os.environ`; tests pass their own mapping so they never
    touch the process environment.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        environ = os.environ if env is None else env
        self.address = socket_address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = watchdog_interval(environ, os.getpid())
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; True when it was delivered."""
        if self.address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self.address)
        except OSError as exc:
            # systemd restarting or the socket gone: log, never raise into the service.
            log_event(logger, logging.WARNING, "sd-notify-failed", error=str(exc))
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload it
        # asked for with this answer; older versions ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_clean(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    async def watchdog_loop(self) -> None:
        """Ping the watchdog until cancelled; returns at once when there is none.

        Runs as a task on the service's event loop, so the pings prove that the loop
        itself is alive, not merely that some thread is.
        """
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)
