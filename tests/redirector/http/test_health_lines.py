"""The health strip's certificate and webhook lines, from real parts: a real CertManager
holding certificates of a throwaway CA (files, and ACME against a CA that is not there),
a real click store with webhook events pending and given up, and a real redirector whose
receiver disables its endpoint with 410 Gone. Plus how the strip gathers providers: one
that fails or hangs is a red line, never a 500."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import lxml.html
import pytest
from prometheus_client import CollectorRegistry

from redirector.clicks import Click
from redirector.config import AcmeConfig, RedirectorConfig
from redirector.http.health import HealthItem, collect
from redirector.http.health_certs import certificate_item, certificates_provider, days_text
from redirector.http.health_webhooks import BACKLOG_RED, webhook_item, webhooks_provider
from redirector.service import RedirectorService
from redirector.store import ClickStore
from redirector.store.pg import PgStore
from redirector.store.sqlite import SqliteStore
from redirector.tls import status as st
from redirector.tls.certs import FILE, parse_bundle
from redirector.tls.manager import CertManager
from redirector.tls.settings import Timing, TlsSettings
from redirector.tls.storage import CERT, SqliteTlsStorage
from redirector.tokens import Keyring
from redirector.webhooks.config import WebhookConfig
from tests.support.net import free_port
from tests.support.polling import until
from tests.support.tls_certs import CertAuthority
from tests.support.webhook_receiver import WebhookReceiver, new_secret

UTC = datetime.UTC
DAY = datetime.timedelta(days=1)
OK_HOST, SOON_HOST, OLD_HOST = "ok.links.test", "soon.links.test", "old.links.test"
HUMAN_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


# -- gathering providers --------------------------------------------------------------


async def test_providers_sync_and_async_in_order_failures_and_hangs_red() -> None:
    never = asyncio.Event()

    def plain() -> list[HealthItem]:
        return [HealthItem("a", "plain", "ok", "fine")]

    async def asks_the_store() -> list[HealthItem]:
        return [HealthItem("b", "async", "warn", "slowish")]

    def broken() -> list[HealthItem]:
        raise RuntimeError("sync provider bug")

    async def broken_async() -> list[HealthItem]:
        raise OSError("store gone")

    async def hangs() -> list[HealthItem]:
        await never.wait()  # a store that never answers
        return []

    items = await collect([plain, hangs, asks_the_store, broken, broken_async], limit=0.2)
    assert [(i.group, i.name, i.level) for i in items] == [
        ("a", "plain", "ok"),
        ("health", "hangs", "bad"),
        ("b", "async", "warn"),
        ("health", "broken", "bad"),
        ("health", "broken_async", "bad"),
    ]
    assert items[1].state == "timed out" and "0.2 s" in items[1].detail
    assert "sync provider bug" in items[3].detail and "store gone" in items[4].detail
    assert all(i.needs_action for i in items[1:2] + items[3:])


# -- certificates ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> CertAuthority:
    return CertAuthority()


def write_cert(ca: CertAuthority, path: Path, names: list[str], days_left: float) -> Path:
    not_after = _now() + datetime.timedelta(days=days_left)
    path.write_bytes(
        ca.bundle(names, not_before=not_after - datetime.timedelta(days=90), not_after=not_after)
    )
    return path


def file_manager(tmp_path: Path, ca: CertAuthority) -> CertManager:
    certs = tmp_path / "certs"
    certs.mkdir()
    write_cert(ca, certs / "ok.pem", [OK_HOST], 60)
    write_cert(ca, certs / "soon.pem", [SOON_HOST], 3)
    write_cert(ca, certs / "old.pem", [OLD_HOST], -2)
    config = RedirectorConfig(tls_certificates=(certs / "*.pem",))
    return CertManager(
        (OK_HOST, SOON_HOST, OLD_HOST),
        config,
        AcmeConfig(),
        storage=None,
        registry=CollectorRegistry(),
    )


async def test_certificate_files_valid_expiring_expired(tmp_path: Path, ca: CertAuthority) -> None:
    certs = file_manager(tmp_path, ca)
    await certs.start()
    try:
        items = {i.name: i for i in certificates_provider(certs)()}
    finally:
        await certs.stop()
    assert set(items) == {OK_HOST, SOON_HOST, OLD_HOST}
    assert all(i.group == "certificate" for i in items.values())
    ok, soon, old = items[OK_HOST], items[SOON_HOST], items[OLD_HOST]
    assert ok.level == "ok" and not ok.needs_action
    assert ok.state in ("59 days left", "60 days left")
    assert "ok.pem" in ok.detail and "clickrelay test CA" in ok.detail
    assert soon.level == "bad" and soon.state.startswith("expiring: ")
    assert soon.state.endswith(" days left") and 2.9 <= float(soon.state.split()[1]) <= 3.0
    assert soon.fix is not None and "tls_certificates" in soon.fix and "SIGHUP" in soon.fix
    assert old.level == "bad" and old.state.startswith("expired ") and old.state.endswith(" ago")
    assert old.fix is not None and "renewed certificate" in old.fix


def test_a_certificate_for_other_names_is_a_name_mismatch(ca: CertAuthority) -> None:
    # The manager itself only serves certificates that cover the host, so this is what
    # another node or a proxy in front would show: judged from a real parsed certificate.
    bundle = parse_bundle(ca.bundle(["other.example.org"]), source=FILE, origin="/x.pem")
    status = st.HostStatus(host=OK_HOST, state=st.VALID, managed_by=FILE)
    item = certificate_item(status, bundle, _now())
    assert (item.level, item.state) == ("bad", "name mismatch")
    assert "other.example.org" in item.detail
    assert item.fix is not None and f"subjectAltName includes {OK_HOST}" in item.fix


def test_not_yet_valid_is_red(ca: CertAuthority) -> None:
    start = _now() + 2 * DAY
    pem = ca.bundle([OK_HOST], not_before=start, not_after=start + 90 * DAY)
    bundle = parse_bundle(pem, source=FILE, origin="/x.pem")
    item = certificate_item(st.HostStatus(host=OK_HOST, state=st.VALID), bundle, _now())
    assert (item.level, item.state) == ("bad", "not valid yet")


def test_days_text() -> None:
    assert days_text(63.9) == "63 days" and days_text(1234.5) == "1,234 days"
    assert days_text(6.54) == "6.5 days" and days_text(1.01) == "1 day"


@pytest.fixture
def dead_ca() -> str:
    """An ACME directory URL on a loopback port nothing listens on."""
    return f"https://127.0.0.1:{free_port()}/dir"


async def test_acme_pending_then_failed_and_renewal_failing(
    tmp_path: Path, ca: CertAuthority, dead_ca: str
) -> None:
    storage = SqliteTlsStorage(tmp_path / "tls.sqlite3")
    await storage.open()
    # SOON_HOST has a stored ACME certificate inside its renewal window (20 of 90 days
    # left, renewal 30 days before): the manager serves it and tries to renew it.
    not_after = _now() + 20 * DAY
    await storage.put(
        CERT,
        SOON_HOST,
        ca.bundle([SOON_HOST], not_before=not_after - 90 * DAY, not_after=not_after),
    )
    await storage.close()
    certs = CertManager(
        (OK_HOST, SOON_HOST),
        RedirectorConfig(),
        AcmeConfig(enabled=True, directory=dead_ca),
        storage=SqliteTlsStorage(tmp_path / "tls.sqlite3"),
        registry=CollectorRegistry(),
        timing=Timing(backoff_base=3600, backoff_max=3600),
    )
    provider = certificates_provider(certs)
    await certs.start()
    try:
        items = {i.name: i for i in provider()}
        assert (items[OK_HOST].level, items[OK_HOST].state) == ("warn", "pending")
        assert items[OK_HOST].fix is not None and "DNS" in items[OK_HOST].fix
        assert items[SOON_HOST].level == "ok" and "renewal under way" in items[SOON_HOST].detail
        certs.start_ordering()
        await until(
            lambda: all(s.failures for s in certs.statuses()), "both orders failed", within=30
        )
        items = {i.name: i for i in provider()}
    finally:
        await certs.stop()
    failed, renewing = items[OK_HOST], items[SOON_HOST]
    assert (failed.level, failed.state) == ("bad", "order failed")
    assert "next attempt" in failed.detail
    assert failed.fix is not None and f"http://{OK_HOST}/.well-known/acme-challenge/" in failed.fix
    assert renewing.level == "bad" and renewing.state.startswith("expiring: ")
    assert "last renewal error" in renewing.detail
    assert renewing.fix is not None and "keeps failing" in renewing.fix


async def test_certificate_lines_on_the_page(
    tmp_path: Path, ca: CertAuthority, keyring: Keyring
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    write_cert(ca, certs / "ok.pem", [OK_HOST], 60)
    write_cert(ca, certs / "old.pem", [OLD_HOST], -2)
    config = RedirectorConfig(
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        https_listen="127.0.0.1:0",
        tls_certificates=(certs / "*.pem",),
        store=f"sqlite:{tmp_path / 'clicks.sqlite3'}",
    )
    svc = RedirectorService(config, keyring, tls=TlsSettings(hosts=(OK_HOST, OLD_HOST)))
    await svc.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{svc.admin_port}/") as resp,
        ):
            assert resp.status == 200
            doc = lxml.html.fromstring(await resp.text())
    finally:
        await svc.stop()
    strip = doc.get_element_by_id("health")
    assert "needs-action" in strip.get("class")
    lines = {
        li.xpath('.//*[@class="h-name"]')[0].text_content(): li
        for li in strip.xpath('.//li[@data-group="certificate"]')
    }
    ok, old = lines[f"certificate: {OK_HOST}"], lines[f"certificate: {OLD_HOST}"]
    assert ok.get("class") == "h-ok" and "days left" in ok.text_content()
    assert old.get("class") == "h-bad" and "expired" in old.text_content()
    assert "fix:" in old.text_content() and "fix:" not in ok.text_content()


# -- webhooks -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ClickStore]:
    if request.param == "sqlite":
        s: ClickStore = SqliteStore(tmp_path / "clicks.sqlite3")
        await s.open()
        yield s
        await s.close()
    else:
        pg = PgStore(request.getfixturevalue("pg_dsn"), table_prefix=f"t{uuid.uuid4().hex[:12]}_")
        await pg.open()
        yield pg
        await pg.drop_tables()
        await pg.close()


def hook(name: str) -> WebhookConfig:
    return WebhookConfig(url=f"http://127.0.0.1:9/{name}", secret=new_secret(), name=name)


def human_click(n: int) -> Click:
    return Click(
        _now() - datetime.timedelta(minutes=1),
        f"Q{n}",
        0,
        "https://example.com/",
        "r@example.org",
        "192.0.2.0",
        "Mozilla/5.0",
        "GET",
        "human",
        None,
    )


async def test_webhook_lines_from_a_real_store(store: ClickStore) -> None:
    fresh, stale, given_up, idle = hook("fresh"), hook("stale"), hook("given-up"), hook("idle")
    hooks = [fresh, stale, given_up, idle]
    now = time.time()
    # Cursors first (a new endpoint starts at the newest click), then the clicks; not
    # settled_only: the clicks written here are not settled, and the lines are the point.
    await store.webhook_enqueue([(h.key, False, False) for h in hooks], _now(), 100, now)
    await store.write([human_click(n) for n in range(3)])
    cutoff = _now()
    await store.webhook_enqueue([(fresh.key, False, False)], cutoff, 100, now - 5)
    await store.webhook_enqueue([(stale.key, False, False)], cutoff, 100, now - 2 * BACKLOG_RED)
    await store.webhook_enqueue([(given_up.key, False, False)], cutoff, 100, now - 5)
    claimed = await store.webhook_claim(given_up.key, now, 30, 1)
    assert len(claimed) == 1
    await store.webhook_finish(given_up.key, claimed[0].click.id, "failed", now, "HTTP 500: no")

    answer = webhooks_provider(store, hooks, lambda name: False)()
    assert inspect.isawaitable(answer)  # it asks the store: the strip awaits it
    items = {i.name: i for i in await answer}
    assert [i.group for i in items.values()] == ["webhook"] * 4
    assert (items["fresh"].level, items["fresh"].state) == ("ok", "3 pending")
    assert (items["idle"].level, items["idle"].state) == ("ok", "up to date")
    stale_line = items["stale"]
    assert stale_line.level == "bad" and stale_line.state.startswith("backlog ")
    assert "3 pending" in stale_line.detail and "oldest 30 min" in stale_line.detail
    assert stale_line.fix is not None and stale.url in stale_line.fix
    failed = items["given-up"]
    assert (failed.level, failed.state) == ("bad", "1 failed")
    assert "HTTP 500: no" in failed.detail and "2 pending" in failed.detail
    assert failed.fix is not None and "webhooks replay --endpoint given-up" in failed.fix

    # A backlog a few minutes old is yellow: the receiver is failing, retries still run.
    (status,) = await store.webhook_status([fresh.key])
    assert status.oldest_pending is not None
    line = webhook_item(status, fresh, disabled=False, now=status.oldest_pending + 120)
    assert (line.level, line.state) == ("warn", "retrying") and "oldest 2 min" in line.detail
    # Disabled wins over everything else, whatever the backlog.
    (status,) = await store.webhook_status([fresh.key])
    line = webhook_item(status, fresh, disabled=True, now=time.time())
    assert (line.level, line.state) == ("bad", "disabled")
    assert line.fix is not None and "410 Gone" in line.fix and "SIGHUP" in line.fix


async def test_endpoint_disabled_by_410_is_red_on_the_page(
    tmp_path: Path, keyring: Keyring
) -> None:
    receiver = WebhookReceiver(new_secret())
    receiver.status = 410
    await receiver.start()
    # settled_only=False: the click is sent (and meets the 410) as soon as it is committed.
    cfg = WebhookConfig(
        url=receiver.url, secret=receiver.secret, name="crm", retry_delay=0.05, settled_only=False
    )
    config = RedirectorConfig(
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        store=f"sqlite:{tmp_path / 'clicks.sqlite3'}",
        flush_interval=0.02,
    )
    svc = RedirectorService(config, keyring, webhooks=(cfg,))
    await svc.start()
    try:
        token = keyring.seal(
            "https://example.com/x",
            host="127.0.0.1",
            queue_id="HOOKQ",
            link_index=0,
            sent_at=int(time.time()) - 3600,
        )
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"http://127.0.0.1:{svc.public_port}/c/{token}",
                allow_redirects=False,
                headers={"User-Agent": HUMAN_UA},
            ) as resp:
                assert resp.status == 302
            dispatcher = svc.dispatcher
            assert dispatcher is not None
            await until(lambda: dispatcher.disabled("crm"), "endpoint disabled by 410")
            async with session.get(f"http://127.0.0.1:{svc.admin_port}/") as resp:
                assert resp.status == 200
                doc = lxml.html.fromstring(await resp.text())
    finally:
        await svc.stop()
        await receiver.stop()
    (line,) = doc.xpath('//*[@id="health"]//li[@data-group="webhook"]')
    assert line.get("class") == "h-bad"
    text = line.text_content()
    assert "webhook: crm" in text and "disabled" in text and "410 Gone" in text
    assert receiver.url in text
