"""Getting certificates from ACME in the background, and renewing them in time.

Per tracking host not covered by a certificate file, with ``[acme] enabled``: a host with
no certificate (or one inside its renewal window) is ordered — only after its DNS check
passed (``dns_gate``), only while this node holds the host's order lock, never for a
name that is not a tracking host. A failed order is retried with exponential back-off
(:func:`backoff_delay`), so a host never sees more than a few failed orders an hour; the
certificate in service keeps serving until its successor is installed. Nodes sharing
the storage pick up a certificate another node ordered at their next look
(``Timing.poll``). The HTTP-01 answers and the ACME account live in the same storage,
so that any node can answer the CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from clickrelay.common.aiotasks import cancel_and_wait
from clickrelay.common.logfmt import log_event
from redirector.config import AcmeConfig
from redirector.tls import status as st
from redirector.tls.certs import ACME, CertError, new_key_pem, parse_bundle, renewal_due
from redirector.tls.host_state import HostState, utcnow
from redirector.tls.served import ServedCertificates
from redirector.tls.settings import DnsGate, Timing
from redirector.tls.storage import ACCOUNT, CERT, CHALLENGE, STATUS, TlsStorage, TlsStorageError

if TYPE_CHECKING:
    from redirector.tls.acme_client import Account

log = logging.getLogger("clickrelay.tls")

T = TypeVar("T")

#: Below this many days left with renewal failing, the loud warning is an error.
EXPIRY_ALARM_DAYS = 7.0


async def in_daemon_thread(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """``fn(**kwargs)`` on a thread of its own that does not hold up the process's exit.

    An ACME order may poll the CA for minutes; on SIGTERM the service must not wait for
    it (``asyncio.to_thread``'s executor is joined at loop shutdown). A cancelled caller
    leaves the thread to finish or fail on its own; its result is dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = fn(**kwargs)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name="acme-order", daemon=True).start()
    return await future


def backoff_delay(failures: int, timing: Timing, unit_random: float) -> float:
    """Seconds to wait after ``failures`` failed orders in a row: ``backoff_base``
    doubling per failure up to ``backoff_max``, plus up to 10 % jitter (``unit_random``
    in [0, 1)). With the defaults a host sees at most four failed orders in any hour."""
    delay = min(timing.backoff_base * 2.0 ** min(failures - 1, 32), timing.backoff_max)
    return delay * (1 + 0.1 * unit_random)


@dataclass(eq=False)
class AcmeRenewal:
    """One ordering loop per host of ``served``; ACME state in ``storage``."""

    served: ServedCertificates
    acme: AcmeConfig
    storage: TlsStorage
    dns_gate: DnsGate | None
    timing: Timing
    _challenges: dict[str, str] = field(default_factory=dict, init=False)
    _account: Account | None = field(default=None, init=False)
    _account_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    async def open(self) -> None:
        """Open the storage and read the certificates stored by earlier orders."""
        await self.storage.open()
        for host in self.served.hosts.values():
            await self.load_stored(host)

    def start(self) -> None:
        if self._tasks:
            return
        for host in self.served.hosts.values():
            self._tasks.append(asyncio.create_task(self._run(host), name=f"acme {host.name}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)

    # --- HTTP-01 -------------------------------------------------------------------------

    async def challenge_answer(self, token: str) -> str | None:
        """The key authorization for ``token`` if any node placed it, else None."""
        answer = self._challenges.get(token)
        if answer is not None:
            return answer
        try:
            stored = await self.storage.get(CHALLENGE, token)
        except TlsStorageError as exc:
            log_event(log, logging.WARNING, "acme-challenge-lookup-failed", error=str(exc))
            return None
        return stored.decode() if stored is not None else None

    async def _publish(self, token: str, answer: str) -> None:
        self._challenges[token] = answer
        await self.storage.put(CHALLENGE, token, answer.encode())

    async def _withdraw(self, token: str) -> None:
        self._challenges.pop(token, None)
        with contextlib.suppress(TlsStorageError):
            await self.storage.delete(CHALLENGE, token)

    # --- ordering ------------------------------------------------------------------------

    async def load_stored(self, host: HostState) -> None:
        data = await self.storage.get(CERT, host.name)
        if data is None:
            return
        try:
            bundle = parse_bundle(data, source=ACME, origin=ACME)
        except CertError as exc:
            log_event(log, logging.WARNING, "tls-stored-certificate-bad", host=host.name, error=exc)
            return
        if host.acme is None or bundle.not_after > host.acme.not_after:
            host.acme = bundle

    def _due(self, host: HostState) -> datetime.datetime | None:
        """When this host's next order should start (None: now)."""
        bundle = host.acme
        if bundle is None:
            return None
        lifetime = (bundle.not_after - bundle.not_before).total_seconds()
        spread = min(3600.0, lifetime * self.timing.jitter)
        # Stable per certificate and node, so waking up early does not re-roll the dice.
        offset = random.Random(f"{bundle.fingerprint}{id(self)}").uniform(0, spread)
        return renewal_due(bundle, self.served.renew_before()) + datetime.timedelta(seconds=offset)

    async def _run(self, host: HostState) -> None:
        while True:
            host.wake.clear()
            try:
                delay = await self._step(host)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or a storage outage: retry, never die
                log_event(
                    log,
                    logging.ERROR,
                    "acme-loop-error",
                    host=host.name,
                    error=f"{type(exc).__name__}: {exc}",
                )
                delay = self.timing.dns_retry
            await self._persist_status(host)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.01)):
                    await host.wake.wait()

    async def _step(self, host: HostState) -> float:
        """One look at a host; returns the seconds until the next look."""
        timing = self.timing
        now = utcnow()
        if self.served.covered_by_file(host, now):
            host.state, host.detail = st.VALID, "certificate file in use"
            return timing.poll
        await self.load_stored(host)  # another node may have renewed it
        self.served.install_best(host)
        due = self._due(host)
        if due is not None and now < due:
            host.state, host.detail = st.VALID, None
            return min((due - now).total_seconds(), timing.poll)
        if host.next_attempt is not None and now < host.next_attempt:
            self._alarm(host, now)
            return min((host.next_attempt - now).total_seconds(), timing.poll)
        if self.dns_gate is not None:
            reason = await self.dns_gate(host.name)
            if reason is not None:
                if host.acme is None:
                    host.state = st.PENDING
                host.detail = f"waiting for DNS before ordering: {reason}"
                if host.acme is None:
                    return min(timing.dns_retry, timing.poll_missing)
                return timing.dns_retry
        async with self.storage.order_lock(host.name) as mine:
            if not mine:
                if host.acme is None:
                    host.state = st.PENDING
                host.detail = "another node is ordering this certificate"
                return min(timing.dns_retry, timing.poll, timing.poll_missing)
            await self.load_stored(host)
            due = self._due(host)
            if due is not None and utcnow() < due:  # it was renewed while we waited
                self.served.install_best(host)
                return 0.0
            await self._order(host)
        if host.failures:
            assert host.next_attempt is not None
            self._alarm(host, utcnow())
            return (host.next_attempt - utcnow()).total_seconds()
        return 0.0

    async def _order(self, host: HostState) -> None:
        # Imported here: the ACME library (and requests) only for a redirector that orders.
        from redirector.tls.acme_client import AcmeOrderError, order_certificate

        loop = asyncio.get_running_loop()
        host.state = st.PENDING if host.acme is None else host.state
        host.detail = "order in progress"
        host.last_attempt = utcnow()
        await self._persist_status(host)
        log_event(log, logging.INFO, "acme-order-start", host=host.name, ca=self.acme.directory)
        key_pem = new_key_pem()

        def publish(token: str, answer: str) -> None:
            asyncio.run_coroutine_threadsafe(self._publish(token, answer), loop).result(30)

        def withdraw(token: str) -> None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._withdraw(token), loop).result(30)

        try:
            account = await self._registered_account()
            account, chain = await in_daemon_thread(
                order_certificate,
                directory_url=self.acme.directory,
                ca_file=self.acme.ca_file,
                account=account,
                email=self.acme.email,
                host=host.name,
                key_pem=key_pem,
                publish=publish,
                withdraw=withdraw,
            )
            await self._save_account(account)
            bundle = parse_bundle(key_pem + b"\n" + chain.encode(), source=ACME, origin=ACME)
            if not bundle.covers(host.name):
                raise AcmeOrderError(f"the CA issued a certificate for {bundle.names}")
            await self.storage.put(CERT, host.name, key_pem + b"\n" + chain.encode())
        except (AcmeOrderError, CertError, TlsStorageError) as exc:
            self._failed(host, str(exc))
            return
        host.acme = bundle
        host.failures = 0
        host.next_attempt = None
        host.last_error = None
        host.alarmed = False
        host.state, host.detail = st.VALID, None
        host.orders["issued"] = host.orders.get("issued", 0) + 1
        log_event(
            log,
            logging.INFO,
            "acme-order-issued",
            host=host.name,
            issuer=bundle.issuer,
            not_after=bundle.not_after.isoformat(),
        )
        self.served.install_best(host)

    def _failed(self, host: HostState, error: str) -> None:
        host.failures += 1
        host.orders["failed"] = host.orders.get("failed", 0) + 1
        backoff = backoff_delay(host.failures, self.timing, random.random())
        host.next_attempt = utcnow() + datetime.timedelta(seconds=backoff)
        host.last_error = error
        host.detail = None
        if host.acme is None or not host.acme.valid_at(utcnow()):
            host.state = st.FAILED
        else:
            host.state = st.VALID  # the old certificate keeps serving; renewal is failing
        log_event(
            log,
            logging.WARNING,
            "acme-order-failed",
            host=host.name,
            failures=host.failures,
            retry_in=f"{backoff:.0f}s",
            error=error,
        )
        self.served.changed(host)

    def _alarm(self, host: HostState, now: datetime.datetime) -> None:
        bundle = host.acme
        if bundle is None or host.failures == 0 or host.alarmed:
            return
        if bundle.days_left(now) < EXPIRY_ALARM_DAYS:
            host.alarmed = True
            log_event(
                log,
                logging.ERROR,
                "tls-certificate-expiring",
                host=host.name,
                not_after=bundle.not_after.isoformat(),
                days_left=f"{bundle.days_left(now):.1f}",
                last_error=host.last_error,
                detail="renewal keeps failing; new mail to this host goes out untracked",
            )

    async def _registered_account(self) -> Account:
        """The ACME account, registered at the CA once, before any order uses it.

        Orders for several hosts start together; were each to register the new key itself,
        the CA would see concurrent registrations of one key, which a CA may fail (Pebble
        answers ``serverInternal: Error saving account``) — a failed order and minutes of
        back-off for nothing. The lock makes the first order register and the others wait."""
        from redirector.tls.acme_client import Account, new_account_key, register_account

        async with self._account_lock:
            if self._account is None:
                stored = await self.storage.get(ACCOUNT, "default")
                if stored is not None:
                    doc = json.loads(stored)
                    self._account = Account(doc["key_pem"].encode(), doc.get("uri"))
                else:
                    self._account = Account(new_account_key())
                    await self._save_account(self._account, force=True)
            if self._account.uri is None:
                registered = await in_daemon_thread(
                    register_account,
                    directory_url=self.acme.directory,
                    ca_file=self.acme.ca_file,
                    account=self._account,
                    email=self.acme.email,
                )
                await self._save_account(registered)
            return self._account

    async def _save_account(self, account: Account, *, force: bool = False) -> None:
        if not force and self._account == account:
            return
        self._account = account
        doc = {"key_pem": account.key_pem.decode(), "uri": account.uri}
        await self.storage.put(ACCOUNT, "default", json.dumps(doc).encode())

    async def _persist_status(self, host: HostState) -> None:
        doc = self.served.status(host.name).to_json()
        with contextlib.suppress(TlsStorageError):
            await self.storage.put(STATUS, host.name, json.dumps(doc).encode())
