"""Faults around the SMTP proxy under a message load: nothing lost, nothing duplicated.

* The upstream MTA (a real process, ``sink_proc.py``) crashes at chosen points of the
  transaction (MAIL, RCPT, after the whole DATA) and comes back on the same port.
* The upstream is slow: the client gets 451 within the configured timeout.
* ``clickrelay proxy`` (subprocess) gets SIGTERM mid-load and is started again.
* The DNS server stops answering: the preflight verdict lapses within its TTL and mail
  keeps flowing unrewritten.

Every message carries a unique Message-ID; the sink's stored files are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from clickrelay.config import Config
from redirector.tokens import load_keyring
from tests.reliability.checks import tokens_in
from tests.reliability.harness import (
    UNDER_LOAD,
    Figures,
    SendStats,
    SinkProcess,
    make_message,
    need,
    scale,
    send_with_retry,
)
from tests.support.config import proxy_config, proxy_config_text
from tests.support.dns_server import DnsServer
from tests.support.net import free_port, port_open
from tests.support.polling import DeadlinePassed, until
from tests.support.processes import ClickrelayProcess
from tests.support.proxy_helpers import running_proxy

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]


def loaded_config(tmp_path: Path, key_file: Path, sink: SinkProcess, **settings: Any) -> Config:
    """The proxy in front of ``sink`` with the settings for load (``UNDER_LOAD``), then
    ``settings`` over them."""
    upstream = f"smtp://127.0.0.1:{sink.port}"
    return proxy_config(tmp_path, upstream, key_file, **{**UNDER_LOAD, **settings})


def batch(prefix: str, count: int) -> list[tuple[str, bytes]]:
    run = uuid.uuid4().hex[:8]
    out = []
    for i in range(count):
        mid = f"<{prefix}-{run}-{i}@reliability.test>"
        out.append((mid, make_message(mid)))
    return out


def split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


def tally(sink: SinkProcess, sent: list[tuple[str, bytes]], stats: SendStats) -> dict[str, int]:
    at_sink = sink.message_ids()
    ids = [mid for mid, _ in sent]
    delivered_once = sum(1 for mid in ids if at_sink[mid] == 1)
    duplicated = sum(at_sink[mid] - 1 for mid in ids if at_sink[mid] > 1)
    # Lost: the client was told 250 but the sink does not have it.
    lost = sum(1 for mid in stats.delivered_ids if at_sink[mid] == 0)
    foreign = sum(n for mid, n in at_sink.items() if mid not in set(ids))
    return {
        "delivered_once": delivered_once,
        "duplicated": duplicated,
        "lost": lost,
        "foreign": foreign,
        "missing": sum(1 for mid in ids if at_sink[mid] == 0),
    }


def delivery_figures(scenario: str, counts: dict[str, int], **fields: Any) -> Figures:
    """A row whose delivered/lost/duplicated columns come from :func:`tally`'s counts."""
    return Figures(
        scenario,
        delivered=counts["delivered_once"],
        lost=counts["lost"] + counts["missing"],
        duplicated=counts["duplicated"],
        **fields,
    )


# --- upstream killed and restarted -------------------------------------------------------------


async def test_upstream_killed_and_restarted_mid_load(
    tmp_path: Path, key_file: Path, sink: SinkProcess, figures: list[Figures]
) -> None:
    total = scale(80, 800)
    clients = 4
    faults = scale(6, 30)
    messages = batch("kill", total)
    stats = SendStats()
    points = ["mail", "rcpt", "data"]
    injected: list[str] = []
    config = loaded_config(
        tmp_path, key_file, sink, upstream={"pool_size": 2, "connect_timeout": 2, "timeout": 10}
    )
    async with running_proxy(config, load_keyring(key_file)) as service:
        deadline = time.monotonic() + scale(240, 540)
        senders = [
            asyncio.create_task(send_with_retry(service.port, part, stats, deadline=deadline))
            for part in split(messages, clients)
        ]

        async def inject() -> None:
            for n in range(faults):
                # Spread the faults over the load.
                target = (n + 1) * total // (faults + 2)
                await until(lambda t=target: stats.delivered >= t, within=120)  # type: ignore[misc]
                point = points[n % len(points)]
                sink.die_at(point)
                await until(lambda: not sink.alive, within=60)
                sink.reap()
                injected.append(point)
                refused_before = stats.refused_4xx
                # Down until a client has really been refused (the fault was felt).
                with contextlib.suppress(DeadlinePassed):
                    await until(lambda r=refused_before: stats.refused_4xx > r, within=10)  # type: ignore[misc]
                await asyncio.to_thread(sink.start)

        injector = asyncio.create_task(inject())
        await asyncio.gather(*senders)
        await injector
    counts = tally(sink, messages, stats)
    figures.append(
        delivery_figures(
            "upstream MTA killed + restarted",
            counts,
            load=f"{total} msgs, {clients} clients",
            faults=f"{len(injected)} upstream crashes (at {'/'.join(points)})",
            sent=total,
            refused=stats.refused_4xx,
            notes=f"4xx attempts={stats.refused_4xx} (retried), client connection errors="
            f"{stats.connection_errors}, codes={dict(stats.codes)}",
        )
    )
    assert len(injected) == faults
    assert stats.gave_up == 0 and stats.permanent == 0, stats
    assert stats.delivered == total
    assert counts["lost"] == 0 and counts["missing"] == 0
    assert counts["duplicated"] == 0
    assert counts["foreign"] == 0
    assert stats.refused_4xx >= 1
    # The proxy answers 451 itself; it does not hang up on its client.
    assert stats.connection_errors == 0


async def test_upstream_slow_gives_451_within_timeout_then_delivers_once(
    tmp_path: Path, key_file: Path, sink: SinkProcess, figures: list[Figures]
) -> None:
    count = scale(3, 10)
    messages = batch("slow", count)
    stats = SendStats()
    codes: list[int] = []
    config = loaded_config(
        tmp_path, key_file, sink, upstream={"pool_size": 1, "connect_timeout": 2, "timeout": 1.5}
    )
    async with running_proxy(config, load_keyring(key_file)) as service:
        sink.set_delay(8)  # longer than upstream.timeout
        import aiosmtplib

        for _, data in messages:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port, timeout=30) as c:
                try:
                    await c.sendmail("sender@example.com", ["rcpt@example.net"], data)
                    codes.append(250)
                except aiosmtplib.SMTPResponseException as exc:
                    codes.append(exc.code)
        sink.set_delay(None)
        await send_with_retry(service.port, messages, stats, deadline=time.monotonic() + 60)
    counts = tally(sink, messages, stats)
    figures.append(
        delivery_figures(
            "upstream slow (DATA stalls 8 s, timeout 1.5 s)",
            counts,
            load=f"{count} msgs",
            faults="slow upstream",
            sent=count,
            refused=codes.count(451),
            notes=f"first attempts answered {sorted(set(codes))}; retries after recovery",
        )
    )
    assert codes == [451] * count
    assert stats.delivered == count
    assert counts["missing"] == 0 and counts["duplicated"] == 0


# --- clickrelay proxy: SIGTERM mid-load ---------------------------------------------------


async def test_proxy_sigterm_mid_load(
    tmp_path: Path, key_file: Path, sink: SinkProcess, figures: list[Figures]
) -> None:
    need("smtp_proxy.service", "proxy (smtp_proxy/service.py ProxyService)")
    need("clickrelay.commands.proxy", "clickrelay proxy command")
    port = free_port()
    cfg = tmp_path / "proxy.toml"
    cfg.write_text(
        proxy_config_text(
            f"smtp://127.0.0.1:{sink.port}",
            key_file,
            **{**UNDER_LOAD, "listen": f"127.0.0.1:{port}"},
        )
    )
    total = scale(80, 800)
    clients = 4
    restarts = scale(2, 5)
    proxy = ClickrelayProcess(["proxy", "-c", cfg], cwd=tmp_path)
    await asyncio.to_thread(proxy.wait_ready, 30)
    # Each upstream DATA takes 0.2 s, so transactions are surely in flight at SIGTERM.
    sink.set_delay(0.2)
    messages = batch("term", total)
    stats = SendStats()
    exit_codes: list[int] = []
    try:
        deadline = time.monotonic() + scale(240, 540)
        # A connection per message: after SIGTERM the listener is closed, so new
        # transactions meet a refused connection until the proxy is back.
        senders = [
            asyncio.create_task(
                send_with_retry(port, part, stats, deadline=deadline, reuse_connection=False)
            )
            for part in split(messages, clients)
        ]
        for n in range(restarts):
            target = (n + 1) * total // (restarts + 2)
            await until(lambda t=target: stats.delivered >= t, within=120)  # type: ignore[misc]
            exit_codes.append(await asyncio.to_thread(proxy.stop, 60))
            proxy.start()
            await asyncio.to_thread(proxy.wait_ready, 30)
        await asyncio.gather(*senders)
    finally:
        await asyncio.to_thread(proxy.close)
    counts = tally(sink, messages, stats)
    figures.append(
        delivery_figures(
            "clickrelay proxy SIGTERM mid-load (+ restart)",
            counts,
            load=f"{total} msgs, {clients} clients",
            faults=f"{restarts} SIGTERMs",
            sent=total,
            refused=stats.refused_4xx + stats.connection_errors,
            notes=f"exit codes {exit_codes}; retried attempts: 4xx={stats.refused_4xx}, "
            f"refused connections={stats.connection_errors}",
        )
    )
    assert exit_codes == [0] * restarts, proxy.stderr()[-3000:]
    # The restarts were felt by the clients (they had to retry), yet nothing was lost.
    assert stats.refused_4xx + stats.connection_errors >= 1
    assert stats.delivered == total and stats.gave_up == 0
    assert counts["lost"] == 0 and counts["missing"] == 0
    assert counts["duplicated"] == 0


# --- DNS stops answering mid-run ----------------------------------------------------------


async def test_dns_stops_answering_rewriting_stops_within_ttl_mail_flows(
    tmp_path: Path, key_file: Path, sink: SinkProcess, dns_server: DnsServer, figures: list[Figures]
) -> None:
    service_mod = need("smtp_proxy.service", "proxy (smtp_proxy/service.py ProxyService)")
    from smtp_proxy.preflight import PreflightMonitor

    host, target = "links.example.com", "track.example.net"
    base = f"http://{host}"
    ttl = 1
    dns_server.add(host, "CNAME", target, ttl=ttl)
    dns_server.add(target, "A", "127.0.0.1", ttl=ttl)
    keyring = load_keyring(key_file)
    config = loaded_config(
        tmp_path,
        key_file,
        sink,
        tracking={"base_url": base, "cname_target": target},
        preflight={
            "enabled": True,
            "nameservers": [dns_server.nameserver],
            "http_probe": False,
            "timeout": 0.5,
            "interval": 300.0,
        },
    )
    now = [1000.0]
    monitor = PreflightMonitor(
        config, keyring, registry=CollectorRegistry(), min_ttl=0.2, clock=lambda: now[0]
    )
    service = service_mod.ProxyService(
        config, keyring, registry=CollectorRegistry(), preflight=monitor, admin=False
    )
    await monitor.start()
    await service.start()
    per_phase = scale(5, 50)
    phases: dict[str, list[tuple[str, bytes]]] = {}
    stats = SendStats()
    try:
        async with asyncio.timeout(20):
            await monitor.wait_ready()
        assert monitor.may_rewrite(base)
        phases["verified"] = batch("dns-ok", per_phase)
        await send_with_retry(
            service.port, phases["verified"], stats, deadline=time.monotonic() + 60
        )

        dns_server.set_mode(None, "drop")
        # The bound: a verdict is trusted for its TTL at most. Past it, no rewriting,
        # whatever the background refresh is doing.
        now[0] += ttl + 0.001
        assert not monitor.may_rewrite(base)
        phases["dns-down"] = batch("dns-down", per_phase)
        await send_with_retry(
            service.port, phases["dns-down"], stats, deadline=time.monotonic() + 60
        )
        # And the refresh, which cannot reach DNS, turns the verdict into a failure.
        await until(lambda: monitor.state(base) not in ("verified", "pending"), within=30)
        failed_state = monitor.state(base)

        dns_server.set_mode(None, None)
        monitor.refresh_soon()
        await until(lambda: monitor.may_rewrite(base), within=30)
        phases["recovered"] = batch("dns-back", per_phase)
        await send_with_retry(
            service.port, phases["recovered"], stats, deadline=time.monotonic() + 60
        )
    finally:
        await service.stop(grace=5)
        await monitor.stop()
    sent = {mid: data for part in phases.values() for mid, data in part}
    by_id: dict[str, bytes] = {}
    from tests.reliability.harness import MESSAGE_ID_RE

    for data in sink.messages():
        match = MESSAGE_ID_RE.search(data)
        assert match is not None
        by_id[match.group(1).decode()] = data
    rewritten = {
        name: sum(1 for mid, _ in part if tokens_in(by_id.get(mid, b"")))
        for name, part in phases.items()
    }
    identical = {
        name: sum(1 for mid, d in part if by_id.get(mid) == d) for name, part in phases.items()
    }
    figures.append(
        Figures(
            "DNS stops answering (preflight)",
            load=f"{len(sent)} msgs in 3 phases",
            faults="DNS server drops every query",
            sent=len(sent),
            delivered=len(by_id),
            refused=stats.refused_4xx,
            lost=len(sent) - len(set(by_id) & set(sent)),
            duplicated=sum(n - 1 for n in sink.message_ids().values() if n > 1),
            notes=f"rewritten per phase {rewritten}; byte-identical per phase {identical}; "
            f"verdict while down: {failed_state}; bound = TTL {ttl}s",
        )
    )
    assert stats.delivered == len(sent) and set(by_id) == set(sent)
    assert rewritten["verified"] == per_phase
    assert rewritten["dns-down"] == 0 and identical["dns-down"] == per_phase
    assert rewritten["recovered"] == per_phase


async def test_drain_refuses_new_transactions_on_open_connections(
    tmp_path: Path, key_file: Path, sink: SinkProcess
) -> None:
    """During the SIGTERM drain, a connection that is open but idle starts a new
    transaction: it must get a 4xx ("shutting down"), or a client that keeps its
    connection busy (Postfix's connection cache, an app's pooled client) holds the proxy
    open for the whole grace period and is then cut mid-transaction."""
    service_mod = need("smtp_proxy.service", "proxy (smtp_proxy/service.py ProxyService)")
    from tests.reliability.harness import RawSmtp, dot_stuff

    keyring = load_keyring(key_file)
    config = loaded_config(tmp_path, key_file, sink, shutdown_grace=30)
    service = service_mod.ProxyService(config, keyring, registry=CollectorRegistry(), admin=False)
    await service.start()
    busy = await RawSmtp.connect(service.port)
    idle = await RawSmtp.connect(service.port)
    stopping: asyncio.Task[None] | None = None
    try:
        for client in (busy, idle):
            await client.reply()
            await client.cmd("EHLO drain.test")
        sink.set_delay(2)  # the busy connection's DATA is in flight while we stop
        assert (await busy.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        assert (await busy.cmd("RCPT TO:<b@example.net>"))[0] == 250
        assert (await busy.cmd("DATA"))[0] == 354
        await busy.send(dot_stuff(make_message("<drain-busy@x>")) + b".\r\n")
        stopping = asyncio.create_task(service.stop(grace=30))
        await until(lambda: not port_open(service.port), within=10)  # listeners closed
        code, _ = await idle.cmd("MAIL FROM:<late@example.com>")
        busy_code, _ = await busy.reply()
    finally:
        for client in (busy, idle):
            await client.close()
        if stopping is None:
            await service.stop(grace=5)
        else:
            await stopping
    assert busy_code == 250  # the in-flight transaction finished
    assert 400 <= code < 500, f"new MAIL during drain answered {code}"
