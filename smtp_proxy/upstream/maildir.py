"""``maildir:PATH`` upstream: deliver each message as one file in a maildir.

The quick start uses it instead of a real MTA, and it shows exactly what would be sent.
It implements the same :class:`~smtp_proxy.upstream.UpstreamTransaction` protocol as the
SMTP pool: MAIL and every RCPT are accepted, DATA writes the message bytes **exactly as
given** (no Return-Path or envelope headers added) following the maildir rules:

1. write to ``tmp/<unique>`` and ``fsync`` it,
2. ``rename`` it into ``new/<unique>`` (atomic: a reader never sees a partial file),
3. ``fsync`` the ``new/`` directory so the rename survives a crash,

and only then answers ``250``. Any filesystem error is an
:class:`~smtp_proxy.upstream.UpstreamError` (the proxy answers 451 and the client keeps
the message). The blocking file work runs in a thread, off the event loop.

Unique names follow the maildir convention
``<seconds>.M<microseconds>P<pid>Q<counter>R<random>.<host>``; ``/`` and ``:`` in the host
name are escaped as ``\\057`` and ``\\072``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from clickrelay.common.errors import ConfigError
from clickrelay.common.fsutil import write_atomically
from clickrelay.common.logfmt import log_event
from smtp_proxy.config import UpstreamConfig
from smtp_proxy.upstream.types import Reply, UpstreamError

logger = logging.getLogger("clickrelay.upstream")

_COUNTER = itertools.count(1)


def maildir_path(config: UpstreamConfig) -> Path:
    if not config.url.startswith("maildir:") or not config.url[len("maildir:") :]:
        raise ConfigError(f"upstream.url: expected maildir:PATH, got {config.url!r}")
    return Path(config.url[len("maildir:") :]).expanduser()


def unique_name(host: str | None = None) -> str:
    """A maildir file name no other delivery (this process or another) will produce."""
    now = time.time()
    seconds = int(now)
    micros = int((now - seconds) * 1_000_000)
    hostname = (host or socket.gethostname() or "localhost").replace("/", "\\057")
    hostname = hostname.replace(":", "\\072")
    return f"{seconds}.M{micros}P{os.getpid()}Q{next(_COUNTER)}R{secrets.token_hex(8)}.{hostname}"


def ensure_maildir(path: Path) -> None:
    """Create ``path`` and ``path/{tmp,new,cur}`` (mode 0700: mail is private) if missing."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(exist_ok=True, mode=0o700)


def deliver(path: Path, data: bytes, host: str | None = None) -> str:
    """Write ``data`` into the maildir at ``path`` atomically; returns the file name.

    Blocking (fsync): call it in a thread.
    """
    ensure_maildir(path)
    name = unique_name(host)
    write_atomically(path / "tmp" / name, path / "new" / name, data)
    return name


class MaildirUpstream:
    """The ``maildir:`` upstream; same surface as :class:`~smtp_proxy.upstream.UpstreamPool`."""

    def __init__(self, config: UpstreamConfig, *, registry: CollectorRegistry | None = None):
        self.config = config
        self.path = maildir_path(config)
        self.description = f"maildir:{self.path}"
        self.registry = registry if registry is not None else CollectorRegistry()
        self._host = socket.gethostname() or "localhost"

    @property
    def extensions(self) -> frozenset[str]:
        # A file takes any bytes: 8-bit bodies and UTF-8 addresses are fine.
        return frozenset({"8bitmime", "smtputf8"})

    @property
    def max_size(self) -> int | None:
        return None

    async def transaction(self) -> MaildirTransaction:
        return MaildirTransaction(self)

    async def check(self) -> None:
        """Create the maildir if needed and make sure it is writable."""
        try:
            await asyncio.to_thread(ensure_maildir, self.path)
            if not os.access(self.path / "tmp", os.W_OK) or not os.access(
                self.path / "new", os.W_OK
            ):
                raise PermissionError(f"{self.path}: tmp/ or new/ not writable")
        except OSError as exc:
            raise UpstreamError(f"upstream {self.description}: {exc}") from exc

    async def close(self) -> None:
        return None

    async def deliver_message(self, data: bytes) -> str:
        """Write one message file (off the event loop); its name, or UpstreamError."""
        try:
            return await asyncio.to_thread(deliver, self.path, data, self._host)
        except OSError as exc:
            log_event(
                logger, logging.WARNING, "upstream-failed",
                upstream=self.description, stage="data", reason=str(exc),
            )  # fmt: skip
            raise UpstreamError(f"upstream {self.description}: cannot deliver: {exc}") from exc


class MaildirTransaction:
    """Accepts MAIL and every RCPT; DATA writes one file."""

    def __init__(self, upstream: MaildirUpstream) -> None:
        self._upstream = upstream
        self._sender: str | None = None
        self._recipients: list[str] = []
        self._closed = False

    async def mail(self, sender: str, options: Sequence[str]) -> Reply:
        self._check_open()
        if self._sender is not None:
            return Reply(503, "5.5.1 Error: nested MAIL command")
        self._sender = sender
        return Reply(250, "2.1.0 Ok")

    async def rcpt(self, recipient: str, options: Sequence[str]) -> Reply:
        self._check_open()
        if self._sender is None:
            return Reply(503, "5.5.1 Error: need MAIL command")
        self._recipients.append(recipient)
        return Reply(250, "2.1.5 Ok")

    async def data(self, message: bytes) -> Reply:
        self._check_open()
        if not self._recipients:
            return Reply(503, "5.5.1 Error: need RCPT command")
        name = await self._upstream.deliver_message(message)
        self._sender = None
        self._recipients = []
        return Reply(250, f"2.0.0 Ok: delivered to maildir {name}")

    async def close(self, *, reusable: bool) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise UpstreamError("upstream transaction already closed")
