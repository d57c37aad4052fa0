"""SMTP AUTH PLAIN and LOGIN against the users file, with the failure limiter.

aiosmtpd's built-in PLAIN/LOGIN would call a synchronous authenticator; argon2
verification takes tens of milliseconds, so :class:`Authenticator` verifies in a worker
thread instead of stalling the event loop. The handler offers its two methods to
aiosmtpd as the ``auth_PLAIN``/``auth_LOGIN`` mechanisms.

argon2 is the CPU an attacker buys cheaply, so a check runs only once the limiter has
reserved it (never more than ``auth_fail_limit`` per client and window, however many
connections ask at once: the others wait for a settled check, then go on or get 421),
and at most ``auth_concurrency`` checks run at once in the whole process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

from clickrelay.common.logfmt import log_event
from smtp_proxy.smtp.auth_limiter import AuthFailureLimiter, limiter_key
from smtp_proxy.smtp.metrics import ProxyMetrics
from smtp_proxy.smtp.relay_policy import peer_host
from smtp_proxy.smtp.replies import REPLY_AUTH_BLOCKED, REPLY_AUTH_INVALID
from smtp_proxy.smtp.runtime import ProxyRuntime
from smtp_proxy.smtp.session import ProxySession

logger = logging.getLogger("clickrelay.proxy")


class Authenticator:
    """The AUTH mechanisms; one instance serves every connection."""

    def __init__(
        self,
        runtime: Callable[[], ProxyRuntime],
        metrics: ProxyMetrics,
        limiter: AuthFailureLimiter,
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.limiter = limiter
        #: Woken whenever a reserved check settles (waiting clients look again).
        self._settled = asyncio.Condition()
        self._slots = asyncio.Semaphore(runtime().config.proxy.auth_concurrency)

    async def plain(self, server: SMTP, args: list[str]) -> AuthResult:
        if await self._blocked(server):
            return AuthResult(success=False, handled=True)
        blob = await self._first_response(server, args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await server.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._check_password(server, parts[1], parts[2])

    async def login(self, server: SMTP, args: list[str]) -> AuthResult:
        if await self._blocked(server):
            return AuthResult(success=False, handled=True)
        login = await self._first_response(server, args, SMTP.AuthLoginUsernameChallenge)
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(password, bytes)
        return await self._check_password(server, login, password)

    async def _first_response(self, server: SMTP, args: list[str], challenge: str) -> bytes | None:
        """The client's first AUTH answer: the base64 initial response on the AUTH line
        itself, or else its reply to ``challenge``. None when the exchange is over: the
        client cancelled (``*``), or the initial response was not base64 (501 sent).
        """
        if len(args) == 1:
            blob = await server.challenge_auth(challenge)
            return None if blob is MISSING else blob
        try:
            return base64.b64decode(args[1].encode(), validate=True)
        except (binascii.Error, ValueError):
            await server.push("501 5.5.2 Can't decode base64")
            return None

    async def _blocked(self, server: SMTP) -> bool:
        session = server.session
        key = limiter_key(peer_host(session.peer if session else None))
        if not self.limiter.blocked(key):
            return False
        self.metrics.auth.labels(result="blocked").inc()
        log_event(logger, logging.WARNING, "auth-blocked", client=key)
        await self._hang_up_blocked(server)
        return True

    async def _hang_up_blocked(self, server: SMTP) -> None:
        """421 and close: the client has failed AUTH too often (see AuthFailureLimiter)."""
        await server.push(REPLY_AUTH_BLOCKED)
        if server.transport is not None:
            server.transport.close()

    async def _reserve(self, key: str) -> bool:
        """Wait until the limiter grants ``key`` a check (True), or blocks it (False)."""
        async with self._settled:
            while not self.limiter.try_reserve(key):
                if self.limiter.blocked(key):
                    return False
                await self._settled.wait()
        return True

    async def _settle(self, key: str, *, ok: bool) -> bool:
        """End a reservation: success, or one more failure (True: now blocked)."""
        async with self._settled:
            if ok:
                self.limiter.release(key)
                blocked = False
            else:
                blocked = self.limiter.record_failure(key)
            self._settled.notify_all()
        return blocked

    async def _check_password(self, server: SMTP, login: bytes, password: bytes) -> AuthResult:
        runtime = self.runtime()
        session = server.session
        client = peer_host(session.peer if session else None)
        user = login.decode("utf-8", "replace")
        key = limiter_key(client)
        if not await self._reserve(key):
            self.metrics.auth.labels(result="blocked").inc()
            log_event(logger, logging.WARNING, "auth-blocked", client=key)
            await self._hang_up_blocked(server)
            return AuthResult(success=False, handled=True)
        ok = False
        try:
            if runtime.users is not None and login:
                async with self._slots:
                    self.metrics.auth_verifications.inc()
                    ok = await runtime.users.averify(login, password)
        except BaseException:
            # Cancelled (client gone) or failed: counted as a failure — a guesser must
            # not get free checks by hanging up mid-verification.
            await asyncio.shield(self._settle(key, ok=False))
            raise
        now_blocked = await self._settle(key, ok=ok)
        if ok:
            self.metrics.auth.labels(result="ok").inc()
            log_event(logger, logging.INFO, "auth-ok", client=client, user=user)
            if isinstance(session, ProxySession):
                session.auth_user = user
            return AuthResult(success=True, auth_data=LoginPassword(login, b""))
        self.metrics.auth.labels(result="failed").inc()
        log_event(
            logger, logging.WARNING, "auth-failed", client=client, user=user, blocked=now_blocked
        )
        if now_blocked:
            await self._hang_up_blocked(server)
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=REPLY_AUTH_INVALID)
