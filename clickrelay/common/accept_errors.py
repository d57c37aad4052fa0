"""``accept()`` failures of listening sockets, logged in rate-limited summaries.

When the process runs out of file descriptors (or the kernel of buffers), asyncio's
event loop reports every failed ``accept()`` to the loop's exception handler, which by
default logs a multi-line traceback each time — under a connection flood, hundreds of
megabytes of log in minutes. The handler installed here counts those reports in a
:class:`~clickrelay.common.floodlog.FloodLog` instead and passes every other report on
to the handler that was there before. (uvloop's libuv backend accepts and closes the
excess connection itself and reports nothing; the handler is harmless there.)
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from typing import Any

from clickrelay.common.floodlog import FloodLog

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]

#: What asyncio's selector loop says when ``accept()`` fails for lack of resources.
_ACCEPT_MESSAGE = "socket.accept() out of system resource"


def is_accept_error(context: dict[str, Any]) -> bool:
    exc = context.get("exception")
    return str(context.get("message", "")).startswith(_ACCEPT_MESSAGE) and isinstance(exc, OSError)


class AcceptErrorLog:
    """Installs itself as ``loop``'s exception handler until :meth:`uninstall`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, logger: logging.Logger) -> None:
        self.loop = loop
        self.flood = FloodLog(
            logger,
            "accept-failed",
            hint="out of file descriptors: lower the connection caps or raise LimitNOFILE",
        )
        self._previous: ExceptionHandler | None = loop.get_exception_handler()
        loop.set_exception_handler(self._handle)

    def _handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if is_accept_error(context):
            exc = context["exception"]
            self.flood.note(errno.errorcode.get(exc.errno, "error") if exc.errno else "error")
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def uninstall(self) -> None:
        """Put the previous handler back (if ours is still the loop's) and log the rest."""
        if self.loop.get_exception_handler() == self._handle:
            self.loop.set_exception_handler(self._previous)
        self.flood.flush()
