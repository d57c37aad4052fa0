"""Certificates of the HTTPS listener: which one each tracking host gets, and getting new
ones from ACME in the background.

Per tracking host of an ``https://`` base URL:

* A certificate file (``[redirector] tls_certificates``) that covers the host wins.
* Otherwise, with ``[acme] enabled``: the certificate stored from an earlier order is
  served at once; a host with none (or one inside its renewal window) is ordered — only
  after its DNS check passed (``dns_gate``), only while this node holds the host's order
  lock, never for a name that is not a tracking host. A failed order is retried with
  exponential back-off (``Timing.backoff_base`` doubling up to ``backoff_max``) plus
  jitter, so a host never sees more than a few failed orders an hour. The certificate
  in service keeps serving until its successor is installed.
* Nodes sharing the storage pick up a certificate another node ordered at their next
  look (``Timing.poll``).

Everything observable is in :meth:`CertManager.status` (also written to the storage for
``clickrelay check`` and the proxy's preflight in other processes) and in the metrics
``clickrelay_tls_certificate_expiry_seconds{host}``, ``clickrelay_acme_orders_total
{host,outcome}`` and ``clickrelay_acme_backoff_seconds{host}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import random
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clickrelay.common.aiotasks import cancel_and_wait
from clickrelay.common.errors import ConfigError
from clickrelay.common.logfmt import log_event
from redirector.config import AcmeConfig, RedirectorConfig
from redirector.tls import status as st
from redirector.tls.certs import (
    ACME,
    CertBundle,
    CertError,
    new_key_pem,
    parse_bundle,
    renewal_due,
    select,
    tls_host,
)
from redirector.tls.files import load_certificate_files
from redirector.tls.sni import SniCertificates
from redirector.tls.storage import (
    ACCOUNT,
    CERT,
    CHALLENGE,
    STATUS,
    TlsStorage,
    TlsStorageError,
)

if TYPE_CHECKING:
    from redirector.tls.acme_client import Account

log = logging.getLogger("clickrelay.tls")

T = TypeVar("T")

#: ``await dns_gate(host)``: None when the host's DNS check passed, else why not.
DnsGate = Callable[[str], Awaitable[str | None]]

#: Below this many days left with renewal failing, the loud warning is an error.
EXPIRY_ALARM_DAYS = 7.0


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Timing:
    """Seconds. Tests shrink them; the defaults respect public CAs' rate limits."""

    backoff_base: float = 300.0
    backoff_max: float = 6 * 3600.0
    #: Re-check a host whose DNS is not ready yet after this long.
    dns_retry: float = 60.0
    #: Look for a certificate another node stored at least this often.
    poll: float = 300.0
    #: ... and this often while this node has none for the host (a cheap read, and the
    #: host's links wait for it).
    poll_missing: float = 5.0
    #: Renewal starts up to this fraction of the certificate's lifetime later (at most
    #: an hour), so that nodes and hosts do not all renew in the same second.
    jitter: float = 0.02


@dataclass(frozen=True)
class TlsSettings:
    """What the HTTPS listener needs beyond ``[redirector]``, from the product layer:
    the tracking hosts of ``https://`` base URLs, ``[acme]``, the data directory (for the
    SQLite TLS storage) and the DNS check that must pass before a host is ordered."""

    hosts: tuple[str, ...] = ()
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    data_dir: Path = Path("clickrelay-data")
    dns_gate: DnsGate | None = None
    timing: Timing = field(default_factory=Timing)
    #: Called with the host whenever the certificate served for it changes (the preflight
    #: in the same process re-checks at once instead of at its next refresh).
    on_change: Callable[[str], None] | None = None


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


@dataclass
class _Host:
    name: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    acme: CertBundle | None = None
    state: str = st.NONE
    detail: str | None = None
    last_attempt: datetime.datetime | None = None
    last_error: str | None = None
    failures: int = 0
    next_attempt: datetime.datetime | None = None
    orders: dict[str, int] = field(default_factory=dict)
    alarmed: bool = False


class CertManager(Collector):
    """See the module docstring. ``hosts``: the tracking hosts served over HTTPS."""

    def __init__(
        self,
        hosts: Sequence[str],
        config: RedirectorConfig,
        acme: AcmeConfig,
        *,
        storage: TlsStorage | None,
        registry: CollectorRegistry,
        dns_gate: DnsGate | None = None,
        timing: Timing | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.on_change = on_change
        self.acme = acme
        self.storage = storage
        self.dns_gate = dns_gate
        self.timing = timing or Timing()
        self._hosts = {h: _Host(h) for h in dict.fromkeys(tls_host(x) for x in hosts)}
        self.sni = SniCertificates(self._hosts)
        self._files: list[CertBundle] = []
        self._challenges: dict[str, str] = {}
        self._account: Account | None = None
        self._account_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        if acme.enabled and storage is None:
            raise ValueError("ACME needs a TLS storage")
        self._registry = registry
        registry.register(self)

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self._hosts)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the certificate files and stored certificates and install what covers each
        host. Raises ConfigError for an unusable file or a host nothing can ever cover (no
        file, ACME off). Ordering starts with :meth:`start_ordering`."""
        self._loop = asyncio.get_running_loop()
        self._files = await asyncio.to_thread(load_certificate_files, self.config.tls_certificates)
        self._check_coverage(self._files)
        if self.acme.enabled:
            assert self.storage is not None
            try:
                await self.storage.open()
                for host in self._hosts.values():
                    await self._load_stored(host)
            except TlsStorageError as exc:
                # The ordering loops retry; hosts covered by files serve meanwhile.
                log_event(log, logging.WARNING, "tls-storage-unavailable", error=str(exc))
        for host in self._hosts.values():
            self._install_best(host)

    def start_ordering(self) -> None:
        """Start the background ordering and renewal (ACME on) — once the plain listener
        answers, since the CA may come for the HTTP-01 challenge right away."""
        if not self.acme.enabled or self._tasks:
            return
        for host in self._hosts.values():
            self._tasks.append(asyncio.create_task(self._run(host), name=f"acme {host.name}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)
        with contextlib.suppress(KeyError):  # a second stop()
            self._registry.unregister(self)
        if self.storage is not None:
            with contextlib.suppress(TlsStorageError):
                await self.storage.close()

    async def reload_files(self, config: RedirectorConfig) -> None:
        """SIGHUP: read ``tls_certificates`` again. A bad file raises ConfigError and
        changes nothing."""
        files = await asyncio.to_thread(load_certificate_files, config.tls_certificates)
        self._check_coverage(files)
        self.config = config
        self._files = files
        for host in self._hosts.values():
            self._install_best(host)
            host.wake.set()

    def _check_coverage(self, files: Sequence[CertBundle]) -> None:
        if self.acme.enabled:
            return
        for name in self._hosts:
            if not any(b.covers(name) for b in files):
                raise ConfigError(
                    f"[redirector] tls_certificates: no certificate file covers the tracking "
                    f"host {name} (an https:// base URL): add a PEM file for it, or set "
                    "[acme] enabled = true"
                )

    # --- what is served ------------------------------------------------------------------

    def _install_best(self, host: _Host) -> None:
        now = utcnow()
        candidates = [*self._files, *([host.acme] if host.acme else [])]
        best = select(candidates, host.name, now)
        current = self.sni.bundle(host.name)
        if best is None:
            if current is not None:
                self.sni.remove(host.name)
                self._changed(host)
            return
        if current is not None and current.fingerprint == best.fingerprint:
            return
        try:
            self.sni.install(host.name, best)
        except Exception as exc:  # OpenSSL refused it: keep what is served
            log_event(
                log,
                logging.ERROR,
                "tls-install-failed",
                host=host.name,
                origin=best.origin,
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        log_event(
            log,
            logging.INFO,
            "tls-certificate-installed",
            host=host.name,
            managed_by=best.source,
            origin=best.origin,
            issuer=best.issuer,
            not_after=best.not_after.isoformat(),
        )
        self._changed(host)

    def _changed(self, host: _Host) -> None:
        if self.on_change is not None:
            try:
                self.on_change(host.name)
            except Exception as exc:  # a listener's bug must not stop certificates
                log_event(log, logging.ERROR, "tls-on-change-failed", error=repr(exc))

    def served(self, host: str) -> CertBundle | None:
        return self.sni.bundle(host)

    def status(self, host: str) -> st.HostStatus:
        name = tls_host(host)
        entry = self._hosts.get(name)
        bundle = self.sni.bundle(name)
        if entry is None:
            return st.HostStatus(host=name, state=st.NONE, detail="not a tracking host")
        state = entry.state
        if bundle is not None and bundle.source != ACME:
            state = st.VALID
        elif bundle is not None and state in (st.NONE, st.PENDING):
            state = st.VALID
        due = (
            renewal_due(bundle, self._renew_before()) if bundle and bundle.source == ACME else None
        )
        return st.HostStatus(
            host=name,
            state=state,
            managed_by=bundle.source if bundle else (ACME if self.acme.enabled else None),
            names=bundle.names if bundle else (),
            issuer=bundle.issuer if bundle else None,
            not_after=bundle.not_after if bundle else None,
            origin=bundle.origin if bundle else None,
            detail=entry.detail,
            last_attempt=entry.last_attempt,
            last_error=entry.last_error,
            failures=entry.failures,
            next_attempt=entry.next_attempt,
            renewal_due=due,
        )

    def statuses(self) -> list[st.HostStatus]:
        return [self.status(h) for h in self._hosts]

    # --- HTTP-01 -------------------------------------------------------------------------

    async def challenge_answer(self, token: str) -> str | None:
        """The key authorization for ``token`` if any node placed it, else None."""
        answer = self._challenges.get(token)
        if answer is not None or self.storage is None or not self.acme.enabled:
            return answer
        try:
            stored = await self.storage.get(CHALLENGE, token)
        except TlsStorageError as exc:
            log_event(log, logging.WARNING, "acme-challenge-lookup-failed", error=str(exc))
            return None
        return stored.decode() if stored is not None else None

    async def _publish(self, token: str, answer: str) -> None:
        self._challenges[token] = answer
        assert self.storage is not None
        await self.storage.put(CHALLENGE, token, answer.encode())

    async def _withdraw(self, token: str) -> None:
        self._challenges.pop(token, None)
        assert self.storage is not None
        with contextlib.suppress(TlsStorageError):
            await self.storage.delete(CHALLENGE, token)

    # --- ordering ------------------------------------------------------------------------

    def _renew_before(self) -> datetime.timedelta:
        return datetime.timedelta(days=self.acme.renew_before_days)

    async def _load_stored(self, host: _Host) -> None:
        assert self.storage is not None
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

    def _covered_by_file(self, host: _Host, now: datetime.datetime) -> bool:
        return any(b.covers(host.name) and b.valid_at(now) for b in self._files)

    def _due(self, host: _Host) -> datetime.datetime | None:
        """When this host's next order should start (None: now)."""
        bundle = host.acme
        if bundle is None:
            return None
        lifetime = (bundle.not_after - bundle.not_before).total_seconds()
        spread = min(3600.0, lifetime * self.timing.jitter)
        # Stable per certificate and node, so waking up early does not re-roll the dice.
        offset = random.Random(f"{bundle.fingerprint}{id(self)}").uniform(0, spread)
        return renewal_due(bundle, self._renew_before()) + datetime.timedelta(seconds=offset)

    async def _run(self, host: _Host) -> None:
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

    async def _step(self, host: _Host) -> float:
        """One look at a host; returns the seconds until the next look."""
        assert self.storage is not None
        timing = self.timing
        now = utcnow()
        if self._covered_by_file(host, now):
            host.state, host.detail = st.VALID, "certificate file in use"
            return timing.poll
        await self._load_stored(host)  # another node may have renewed it
        self._install_best(host)
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
            await self._load_stored(host)
            due = self._due(host)
            if due is not None and utcnow() < due:  # it was renewed while we waited
                self._install_best(host)
                return 0.0
            await self._order(host)
        if host.failures:
            assert host.next_attempt is not None
            self._alarm(host, utcnow())
            return (host.next_attempt - utcnow()).total_seconds()
        return 0.0

    async def _order(self, host: _Host) -> None:
        # Imported here: the ACME library (and requests) only for a redirector that orders.
        from redirector.tls.acme_client import AcmeOrderError, order_certificate

        assert self.storage is not None
        loop = asyncio.get_running_loop()
        host.state = st.PENDING if host.acme is None else host.state
        host.detail = "order in progress"
        host.last_attempt = utcnow()
        await self._persist_status(host)
        log_event(log, logging.INFO, "acme-order-start", host=host.name, ca=self.acme.directory)
        key_pem = new_key_pem()
        account = await self._get_account()

        def publish(token: str, answer: str) -> None:
            asyncio.run_coroutine_threadsafe(self._publish(token, answer), loop).result(30)

        def withdraw(token: str) -> None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._withdraw(token), loop).result(30)

        try:
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
        self._install_best(host)

    def _failed(self, host: _Host, error: str) -> None:
        host.failures += 1
        host.orders["failed"] = host.orders.get("failed", 0) + 1
        backoff = min(self.timing.backoff_base * 2 ** (host.failures - 1), self.timing.backoff_max)
        backoff *= 1 + random.uniform(0, 0.1)
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
        self._changed(host)

    def _alarm(self, host: _Host, now: datetime.datetime) -> None:
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

    async def _get_account(self) -> Account:
        from redirector.tls.acme_client import Account, new_account_key

        assert self.storage is not None
        async with self._account_lock:
            if self._account is None:
                stored = await self.storage.get(ACCOUNT, "default")
                if stored is not None:
                    doc = json.loads(stored)
                    self._account = Account(doc["key_pem"].encode(), doc.get("uri"))
                else:
                    self._account = Account(new_account_key())
                    await self._save_account(self._account, force=True)
            return self._account

    async def _save_account(self, account: Account, *, force: bool = False) -> None:
        assert self.storage is not None
        if not force and self._account == account:
            return
        self._account = account
        doc = {"key_pem": account.key_pem.decode(), "uri": account.uri}
        await self.storage.put(ACCOUNT, "default", json.dumps(doc).encode())

    async def _persist_status(self, host: _Host) -> None:
        if self.storage is None:
            return
        doc = self.status(host.name).to_json()
        with contextlib.suppress(TlsStorageError):
            await self.storage.put(STATUS, host.name, json.dumps(doc).encode())

    # --- metrics -------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        expiry = GaugeMetricFamily(
            "clickrelay_tls_certificate_expiry_seconds",
            "Seconds until the certificate served for the tracking host expires",
            labels=["host"],
        )
        orders = CounterMetricFamily(
            "clickrelay_acme_orders",
            "ACME orders per tracking host by outcome (issued, failed)",
            labels=["host", "outcome"],
        )
        backoff = GaugeMetricFamily(
            "clickrelay_acme_backoff_seconds",
            "Seconds until the next ACME order may start after failures (0: none pending)",
            labels=["host"],
        )
        refused = CounterMetricFamily(
            "clickrelay_tls_handshakes_refused",
            "TLS handshakes refused for the name asked (unknown-name, no-sni, no-certificate)",
            labels=["reason"],
        )
        for name, host in self._hosts.items():
            bundle = self.sni.bundle(name)
            if bundle is not None:
                expiry.add_metric([name], bundle.seconds_left(now))
            for outcome in ("issued", "failed"):
                orders.add_metric([name, outcome], host.orders.get(outcome, 0))
            wait = (host.next_attempt - now).total_seconds() if host.next_attempt else 0.0
            backoff.add_metric([name], max(wait, 0.0))
        for reason, count in sorted(self.sni.refused.items()):
            refused.add_metric([reason], count)
        yield expiry
        yield orders
        yield backoff
        yield refused

    def describe(self) -> list[Metric]:
        return []


def status_from_json(data: bytes) -> st.HostStatus | None:
    """A status record read from the storage (None if it is not one)."""
    try:
        doc: Any = json.loads(data)
        return st.HostStatus.from_json(doc) if isinstance(doc, dict) else None
    except (ValueError, KeyError, TypeError):
        return None
