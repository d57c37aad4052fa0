"""Per-connection state: aiosmtpd's session plus the upstream transaction mirroring it."""

from __future__ import annotations

import asyncio

from aiosmtpd.smtp import Session

from smtp_proxy.upstream import UpstreamTransaction


class ProxySession(Session):
    """aiosmtpd's session plus the upstream transaction that mirrors the client's."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.txn: UpstreamTransaction | None = None
        #: True while a hook awaits the upstream: a hang-up then is handled by that hook.
        self.txn_busy = False
        self.txn_started = 0.0
        self.auth_user: str | None = None
