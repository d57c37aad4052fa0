"""What the proxy and every upstream share: replies, the one error, the interfaces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from clickrelay.common.errors import ClickrelayError


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: ``code`` and text without the code (lines joined by ``\\n``)."""

    code: int
    message: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def __str__(self) -> str:
        """The reply as an SMTP server sends it (multi-line with ``code-`` continuations),
        ready for an aiosmtpd hook to return."""
        lines = self.message.split("\n") if self.message else [""]
        head = [f"{self.code}-{line}" for line in lines[:-1]]
        return "\r\n".join([*head, f"{self.code} {lines[-1]}".rstrip()])


class UpstreamError(ClickrelayError):
    """The upstream could not be reached or stopped talking: answer ``451 4.4.1``."""

    #: True when the connection turned out to be closed (not a timeout or garbage).
    connection_lost: bool = False


class UpstreamTransaction(Protocol):
    """One mail transaction on one upstream connection, driven by the proxy."""

    async def mail(self, sender: str, options: Sequence[str]) -> Reply: ...

    async def rcpt(self, recipient: str, options: Sequence[str]) -> Reply: ...

    async def data(self, message: bytes) -> Reply: ...

    async def close(self, *, reusable: bool) -> None: ...


class Upstream(Protocol):
    """What :func:`open_upstream` returns: an SMTP pool or a maildir."""

    #: The URL without credentials, for logs.
    description: str

    async def transaction(self) -> UpstreamTransaction: ...

    @property
    def extensions(self) -> frozenset[str]: ...

    @property
    def max_size(self) -> int | None: ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...
