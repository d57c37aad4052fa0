"""The one module that touches aiosmtpd's private names: a base class over its ``SMTP``.

aiosmtpd offers no public way to do a few things the proxy needs, so :class:`CompatSMTP`
borrows these names of ``aiosmtpd.smtp.SMTP`` (and of the ``asyncio.StreamReader`` it
reads from), each behind a method of our own:

* ``_create_session()`` — overridden: the factory of a connection's session, so each
  connection gets our session type (:meth:`CompatSMTP.new_session`).
* ``_auth_require_tls`` — written: AUTH without TLS for one connection, when the
  config allows it on loopback (:meth:`CompatSMTP.allow_auth_without_tls`).
* ``_handler_coroutine`` — read: the task serving a connection's commands, which
  shutdown awaits after hanging up (:attr:`CompatSMTP.client_task`).
* ``_reset_timeout(duration)`` — called: the idle timer is reset per command; the
  whole DATA phase gets a timeout of its own (:meth:`CompatSMTP.restart_timer`).
* ``_reader`` and the stream reader's ``_limit`` — read, and the limit changed: DATA is
  read in large pieces with ``readuntil()``, whose reach the limit bounds (aiosmtpd
  sets it to its line length) (:attr:`CompatSMTP.reader`,
  :meth:`CompatSMTP.reader_limit`).
* ``_writer.close()`` — called when DATA is cancelled (the connection is gone), as
  aiosmtpd's own DATA does (:meth:`CompatSMTP.close_writer`).
* ``_set_post_data_state()`` — called at the end of DATA: a fresh envelope, as
  aiosmtpd does after its own DATA (:meth:`CompatSMTP.reset_envelope`).
* ``_call_handler_hook("DATA")`` — called: the handler's ``handle_DATA`` with
  aiosmtpd's arguments, or ``MISSING`` (:meth:`CompatSMTP.call_data_hook`).
* ``_smtp_methods`` — read and replaced: the table aiosmtpd dispatches commands
  through (built from ``dir()`` at construction). Each entry is wrapped so that
  :meth:`CompatSMTP.before_command` sees every command first and may refuse it.
* ``smtp_DATA`` — overridden: aiosmtpd dispatches the DATA command to this name (found
  by ``dir()`` at construction). Our DATA reader (:meth:`CompatSMTP.data_command` in
  the subclass) replaces aiosmtpd's line-by-line one; it mirrors aiosmtpd's DATA, so
  it also calls the public ``check_helo_needed``/``check_auth_needed``/``push``.

:data:`BORROWED_METHODS`, :data:`BORROWED_ATTRIBUTES` and
:data:`BORROWED_READER_ATTRIBUTES` list them for the contract test, which checks them
against the installed aiosmtpd; another test keeps these names out of every other module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiosmtpd.smtp import SMTP, Session, syntax

#: Methods of ``aiosmtpd.smtp.SMTP`` we override or call, with the parameters they must
#: take (the public ones are those our DATA copy calls as aiosmtpd's DATA does).
BORROWED_METHODS: dict[str, tuple[str, ...]] = {
    "_create_session": ("self",),
    "_reset_timeout": ("self", "duration"),
    "_set_post_data_state": ("self",),
    "_call_handler_hook": ("self", "command", "*args"),
    "smtp_DATA": ("self", "arg"),
    "check_helo_needed": ("self", "helo"),
    "check_auth_needed": ("self", "caller_method"),
    "push": ("self", "status"),
}

#: Attributes of a connected ``aiosmtpd.smtp.SMTP`` we read or write, with their types.
BORROWED_ATTRIBUTES: dict[str, type | tuple[type, ...]] = {
    "_auth_require_tls": bool,
    "_handler_coroutine": asyncio.Task,
    "_reader": asyncio.StreamReader,
    "_writer": asyncio.StreamWriter,
    "_smtp_methods": dict,
}

#: Attributes of ``asyncio.StreamReader`` (aiosmtpd's ``_reader``) we read and write.
BORROWED_READER_ATTRIBUTES: dict[str, type] = {"_limit": int}

#: The names no other module may use (private ones, and the DATA command we replace).
FENCED_NAMES = frozenset(
    [
        *(name for name in BORROWED_METHODS if name.startswith("_")),
        "smtp_DATA",
        *BORROWED_ATTRIBUTES,
        *BORROWED_READER_ATTRIBUTES,
    ]
)


class CompatSMTP(SMTP):
    """aiosmtpd's SMTP with what we borrow from its insides under names of our own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._smtp_methods = {
            name: self._checked(name, method) for name, method in self._smtp_methods.items()
        }

    # --- every command --------------------------------------------------------------------

    def before_command(self, command: str) -> str | None:
        """Called before each known command: a reply refuses it and hangs up."""
        return None

    def _checked(
        self, command: str, method: Callable[[str], Awaitable[None]]
    ) -> Callable[[str], Awaitable[None]]:
        # functools.wraps keeps the syntax attributes HELP reads off the method.
        @functools.wraps(method)
        async def run(arg: str) -> None:
            refusal = self.before_command(command)
            if refusal is None:
                await method(arg)
                return
            await self.push(refusal)
            if self.transport is not None:
                self.transport.close()

        return run

    # --- session ------------------------------------------------------------------------

    def new_session(self) -> Session:
        """The session of a new connection (and of the TLS layer after STARTTLS)."""
        return Session(self.loop)

    def _create_session(self) -> Session:
        return self.new_session()

    def allow_auth_without_tls(self) -> None:
        """Offer and accept AUTH on this connection although it is not encrypted."""
        self._auth_require_tls = False

    @property
    def client_task(self) -> asyncio.Task[None] | None:
        """The task serving this connection's commands (None before connection_made)."""
        return self._handler_coroutine

    def restart_timer(self, seconds: float | None = None) -> None:
        """Restart the idle timer: ``seconds``, or else the command timeout."""
        self._reset_timeout(seconds)

    # --- DATA -----------------------------------------------------------------------------

    @property
    def reader(self) -> asyncio.StreamReader:
        """The client's byte stream (set once the connection is made)."""
        return self._reader

    @contextlib.contextmanager
    def reader_limit(self, limit: int) -> Iterator[None]:
        """Let the reader buffer, and ``readuntil()`` look, up to ``limit`` bytes."""
        reader = self._reader
        saved = reader._limit  # type: ignore[attr-defined]
        reader._limit = limit  # type: ignore[attr-defined]
        try:
            yield
        finally:
            reader._limit = saved  # type: ignore[attr-defined]

    def close_writer(self) -> None:
        """Close the connection's writer (DATA was cancelled: the connection is gone)."""
        self._writer.close()

    def reset_envelope(self) -> None:
        """A fresh envelope: the end of a DATA command, whatever its outcome."""
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    async def call_data_hook(self) -> Any:
        """The handler's answer to the message in ``envelope``, or ``MISSING``."""
        return await self._call_handler_hook("DATA")

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        await self.data_command(arg)

    async def data_command(self, arg: str) -> None:
        """The DATA command: aiosmtpd's own unless a subclass reads DATA itself."""
        await super().smtp_DATA(arg)
