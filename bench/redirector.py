"""Benchmark: the redirector against a bare aiohttp app answering 302, in the same run.

    python bench/redirector.py [--requests 20000] [--connections 50] [--time-limit 15]
    python bench/redirector.py --breakdown
    python bench/redirector.py --instructions   # needs valgrind; about 5 minutes

Each server runs in its own subprocess (so it does not share a CPU-bound event loop with
the load generator), both on the same event loop choice (uvloop when installed):

(a) baseline: a bare aiohttp app whose ``/c/{token}`` answers a constant 302;
(b) the real redirector (``RedirectorService``): token decryption, Location building,
    classification, metrics, and clicks recorded in batches to a SQLite store.

The load generator is a minimal asyncio HTTP/1.1 client with N keep-alive connections
(aiohttp's client would use more CPU than the servers under test), sending a fixed
number of GETs per side (bounded by a time limit too), after a short warm-up. It prints
requests/s and latency percentiles of both, the ratio, and — after the redirector has
shut down and flushed — whether the clicks in the store equal the 302s it served.

``--breakdown`` instead starts one server per stage — bare, + token decryption,
+ Location, + classification (no store), + click store — and prints the server CPU per
request of each: where the redirector's cost goes beyond aiohttp's own.

``--instructions`` runs the same servers under valgrind's callgrind and prints the CPU
instructions each one executes per request (the difference between a run of warm-up only
and one of warm-up + N requests, so start-up and shutdown cancel out). Instruction counts
do not depend on what else the machine is doing: the same build gives the same figure
within a fraction of a percent, where req/s here moves by 15%. Callgrind serialises threads,
so the SQLite writer's work is counted in full, as if on the same core.

Targets: redirector rps >= 70% of the bare aiohttp baseline's (what recording and
checking a click may cost), p99 < 10 ms at 50 connections (a click feels instant),
clicks stored == 302s served (none lost). On a small machine the Python load generator
itself may be the bottleneck (it then caps both sides alike and the ratio reads high);
the printed client CPU share helps to judge that.

The rounds above are a closed loop (each connection sends as soon as it has its answer),
so their latency is mostly queueing: with 50 connections p50 is about 50 / throughput.
Then both servers get fixed-rate phases (``--paced-fractions``, default 25% and 50% of
the bare app's flat-out rate) with latency counted from the scheduled send time: the
p99 a click sees when the server is not saturated. Those clicks count as served too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This file is called redirector.py: drop its own directory from the path so that
# ``import redirector`` finds the package, not this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
SENT_AT = 1_700_000_000  # long ago: clicks are not "too soon"
WARMUP = 500


def run_loop(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run with uvloop when installed (the redirector command's choice too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())  # type: ignore[arg-type]
    return uvloop.run(main())


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


# --- servers (child processes) --------------------------------------------------------


async def _serve_app(app: Any) -> None:
    """Serve ``app`` on a free loopback port (told on stdout) until stdin closes."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
    await _wait_for_stdin_eof()
    await runner.cleanup()
    print(json.dumps({"done": True}), flush=True)


async def _serve_bare() -> None:
    from aiohttp import web

    async def found(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "https://example.com/"})

    app = web.Application()
    app.router.add_get("/c/{token}", found)
    await _serve_app(app)


async def _serve_partial(workdir: Path, upto: str) -> None:
    """For --breakdown: the redirector's 302 after only part of its work per request:
    ``open`` (token decryption) or ``location`` (that, and the Location header)."""
    from aiohttp import web

    from redirector.hosts import request_host
    from redirector.http import app as redirector_app
    from redirector.location import location_for
    from redirector.tokens import load_keyring

    keyring = load_keyring(workdir / "keys")

    async def found(request: web.Request) -> web.Response:
        link = keyring.open(request.match_info["token"], request_host(request.headers.get("Host")))
        location = location_for(link.url) if upto == "location" else "https://example.com/"
        response = web.Response(
            status=302, body=redirector_app._FOUND_BODY, headers=redirector_app._TEXT_HEADERS
        )
        response.headers["Location"] = location or ""
        return response

    app = web.Application()
    app.router.add_get("/c/{token}", found)
    await _serve_app(app)


async def _serve_nostore(workdir: Path) -> None:
    """The redirector's app without a click store (informational: the cost of recording)."""
    from prometheus_client import CollectorRegistry

    from redirector.config import RedirectorConfig
    from redirector.http.app import create_app
    from redirector.tokens import load_keyring

    app = create_app(
        RedirectorConfig(), load_keyring(workdir / "keys"), None, registry=CollectorRegistry()
    )
    await _serve_app(app)


async def _serve_real(workdir: Path) -> None:
    from redirector.config import RedirectorConfig
    from redirector.service import RedirectorService
    from redirector.tokens import load_keyring

    config = RedirectorConfig(
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        store=f"sqlite:{workdir / 'clicks.sqlite3'}",
        queue_size=1_000_000,
    )
    service = RedirectorService(config, load_keyring(workdir / "keys"))
    await service.start()
    print(json.dumps({"port": service.public_port, "admin_port": service.admin_port}), flush=True)
    await _wait_for_stdin_eof()
    recorder = service.recorder
    await service.stop(30)
    done = {
        "done": True,
        "dropped": recorder.dropped if recorder else None,
        "written": recorder.written if recorder else None,
    }
    print(json.dumps(done), flush=True)


async def _wait_for_stdin_eof() -> None:
    """The parent closes our stdin to ask us to stop (portable, no signals needed)."""
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# --- load generator -------------------------------------------------------------------


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    statuses: dict[int, int]
    latencies: list[float]
    client_cpu: float
    #: CPU seconds the server process used for this load (incl. its store writer), when
    #: known: far less sensitive than req/s to other work on a shared machine.
    server_cpu: float | None = None

    @property
    def server_us_per_request(self) -> float | None:
        if self.server_cpu is None or not self.requests:
            return None
        return self.server_cpu / self.requests * 1e6

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        data = sorted(self.latencies)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q * len(data)))] * 1000.0


async def load(
    name: str,
    port: int,
    paths: list[str],
    *,
    warmup: list[str],
    connections: int,
    time_limit: float,
    rate: float | None = None,
) -> tuple[Result, int]:
    """GET every path in ``warmup`` (unmeasured), then every path in ``paths``, over
    ``connections`` keep-alive connections; returns the measured result and the number
    of 302s among the warm-up requests.

    Without ``rate`` each connection sends its next request as soon as the answer is in
    (closed loop: the server runs flat out, and latency is mostly queueing — with N
    connections p50 is about N / throughput). With ``rate`` (requests/s over all
    connections) requests are sent on a fixed schedule and latency is counted from the
    scheduled time, so a server that falls behind is charged for the wait.

    A minimal HTTP/1.1 client on asyncio streams: aiohttp's client costs several times
    more CPU per request than the servers under test, and on a 2-core machine the load
    generator would otherwise measure itself.
    """
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]

    def request_bytes(path: str) -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {BROWSER}\r\n"
            "Accept: */*\r\n\r\n"
        ).encode("ascii")

    async def one(conn: Conn, path: str) -> int:
        reader, writer = conn
        writer.write(request_bytes(path))
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        pos = lower.find(b"\r\ncontent-length:")
        if pos == -1:
            raise RuntimeError(f"{name}: response without Content-Length")
        end = lower.index(b"\r\n", pos + 2)
        length = int(lower[pos + len(b"\r\ncontent-length:") : end])
        if length:
            await reader.readexactly(length)
        return status

    conns: list[Conn] = [
        await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)
    ]
    try:

        async def warm(conn: Conn, k: int) -> int:
            return sum(
                [await one(conn, warmup[i]) == 302 for i in range(k, len(warmup), connections)]
            )

        warm_302 = sum(await asyncio.gather(*(warm(c, k) for k, c in enumerate(conns))))
        deadline = time.perf_counter() + time_limit
        todo = iter(paths)

        async def worker(conn: Conn, k: int) -> None:
            interval = connections / rate if rate else 0.0
            due = t0 + k * interval / connections  # connections start staggered
            for path in todo:
                now = time.perf_counter()
                if now > deadline:
                    return
                if rate:
                    if due > now:
                        await asyncio.sleep(due - now)
                    start = due
                    due += interval
                else:
                    start = now
                status = await one(conn, path)
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1

        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c, k) for k, c in enumerate(conns)))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        for _, writer in conns:
            writer.close()
        for _, writer in conns:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    done = sum(statuses.values())
    share = cpu / elapsed if elapsed else 0.0
    return Result(name, done, elapsed, statuses, latencies, share), warm_302


#: The real redirector's admin port by its public port: the queue counts are on the admin
#: listener's /api/health (the public /healthz keeps them from outsiders).
ADMIN_PORT_OF: dict[int, int] = {}


async def wait_flushed(port: int, limit: float = 30.0) -> None:
    """Until the redirector's /api/health says no click is queued (so the next round does
    not share the CPU with its store writer)."""
    import aiohttp

    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            admin = ADMIN_PORT_OF[port]
            async with session.get(f"http://127.0.0.1:{admin}/api/health") as resp:
                doc = await resp.json()
            if doc["store"]["queued"] == 0:
                return
            await asyncio.sleep(0.05)
    raise RuntimeError("redirector did not flush its click queue in time")


def merge(name: str, parts: list[Result]) -> Result:
    statuses: dict[int, int] = {}
    for part in parts:
        for code, n in part.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
    seconds = sum(p.seconds for p in parts)
    cpu = sum(p.client_cpu * p.seconds for p in parts) / seconds if seconds else 0.0
    server = [p.server_cpu for p in parts]
    return Result(
        name,
        sum(p.requests for p in parts),
        seconds,
        statuses,
        [x for p in parts for x in p.latencies],
        cpu,
        None if None in server else sum(x for x in server if x is not None),
    )


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(
    kind: str, workdir: Path, wrapper: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [*wrapper, sys.executable, __file__, "--serve", kind, "--workdir", str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        proc.wait()
        raise SystemExit(f"{kind} server did not start")
    ports = json.loads(line)
    if "admin_port" in ports:
        ADMIN_PORT_OF[int(ports["port"])] = int(ports["admin_port"])
    return proc, int(ports["port"])


def stop_server(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    try:
        line = proc.stdout.readline()
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return {}
    finally:
        proc.stdout.close()
    return dict(json.loads(line)) if line else {}


@contextlib.contextmanager
def running_server(
    kind: str, workdir: Path, wrapper: tuple[str, ...] = (), stop_timeout: float = 60
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A ``kind`` server (process and port) for the ``with`` block; stopped after it."""
    proc, port = start_server(kind, workdir, wrapper)
    try:
        yield proc, port
    finally:
        stop_server(proc, timeout=stop_timeout)


def load_and_flush(
    kind: str,
    port: int,
    measured: list[str],
    warmup: list[str],
    connections: int,
    time_limit: float,
    flush_limit: float = 30.0,
    rate: float | None = None,
) -> tuple[Result, int]:
    """``load`` against one server (its result and the 302s among the warm-up); for the
    real redirector, until its clicks are written too (the store writer's work after the
    load is part of the cost, and the next load should not share the CPU with it)."""
    result: Result
    result, warm_302 = run_loop(
        partial(
            load,
            kind,
            port,
            measured,
            warmup=warmup,
            connections=connections,
            time_limit=time_limit,
            rate=rate,
        )
    )
    if kind == "real":
        run_loop(partial(wait_flushed, port, flush_limit))
    return result, warm_302


def mint_paths(workdir: Path, count: int) -> list[str]:
    from redirector.tokens import ensure_key_file

    keyring = ensure_key_file(workdir / "keys")
    return [
        "/c/"
        + keyring.seal(
            f"https://shop.example.com/products/{i}?utm_source=newsletter&utm_medium=email"
            f"&utm_campaign=winter-sale&ref=mail{i}",
            host="127.0.0.1",  # the Host the load generator sends
            queue_id=f"4Xb{i // 10:06d}",
            link_index=i % 10,
            recipient=f"user{i}@example.org",
            sent_at=SENT_AT,
        )
        for i in range(count)
    ]


def report(res: Result) -> str:
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(res.statuses.items()))
    per = res.server_us_per_request
    server = f"  server CPU {per:4.0f} us/req" if per is not None else ""
    return (
        f"{res.name:<10} {res.requests:>7} req in {res.seconds:5.2f} s  {res.rps:8.0f} req/s"
        f"  p50 {res.pct(0.50):6.2f} ms  p99 {res.pct(0.99):6.2f} ms"
        f"  client CPU {res.client_cpu:4.0%}{server}  [{codes}]"
    )


#: --breakdown: each kind adds one part of the redirector's per-click work to the last.
BREAKDOWN = (
    ("bare", "a bare aiohttp app answering 302"),
    ("open", "+ token decryption (and the redirector's 302 headers)"),
    ("location", "+ the Location header built from the sealed URL"),
    ("nostore", "+ client address, classification, metrics: the redirector without a store"),
    ("real", "+ recording the click (SQLite store, its writer thread)"),
)


def print_steps(values: dict[str, float], fmt: str, step_fmt: str) -> None:
    """One line per BREAKDOWN kind: its value and what it adds to the kind before."""
    previous = None
    for kind, label in BREAKDOWN:
        step = ""
        if previous is not None:
            step = "  (" + step_fmt.format(values[kind] - values[previous]) + ")"
        print(f"  {kind:9s}{fmt.format(values[kind])}{step}  {label}")
        previous = kind


def breakdown(args: argparse.Namespace) -> int:
    """Server CPU per request of each BREAKDOWN kind (best of --rounds runs): where the
    redirector's time goes beyond what aiohttp itself costs."""
    with tempfile.TemporaryDirectory(prefix="clickrelay-bench-") as tmp:
        workdir = Path(tmp)
        paths = mint_paths(workdir, WARMUP + args.requests)
        warmup, measured = paths[:WARMUP], paths[WARMUP:]
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for kind, _label in BREAKDOWN:
                with running_server(kind, workdir) as (proc, port):
                    cpu0 = process_cpu(proc.pid)
                    result, _ = load_and_flush(
                        kind, port, measured, warmup, args.connections, args.time_limit
                    )
                    cpu1 = process_cpu(proc.pid)
                if cpu0 is None or cpu1 is None or not result.requests:
                    print("cannot read process CPU times (/proc): no breakdown")
                    return 1
                us = (cpu1 - cpu0) / (result.requests + len(warmup)) * 1e6
                best[kind] = min(best.get(kind, us), us)
    print(f"server CPU per request, best of {args.rounds} runs of {args.requests} requests:")
    print_steps(best, "{:6.1f} us", "{:+5.1f}")
    print(f"CPU-bound capacity ratio redirector/bare: {best['bare'] / best['real']:.2f}")
    return 0


def callgrind_instructions(
    kind: str, workdir: Path, warmup: list[str], measured: list[str], connections: int
) -> int:
    """Instructions the ``kind`` server executes for ``warmup`` then ``measured``
    requests, start-up and shutdown included (callgrind's total)."""
    out = workdir / f"callgrind.{kind}.{len(measured)}"
    (workdir / "clicks.sqlite3").unlink(missing_ok=True)
    wrapper = ("valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={out}")
    with running_server(kind, workdir, wrapper, stop_timeout=300) as (_, port):
        result, _ = load_and_flush(kind, port, measured, warmup, connections, 3600, 300)
    if result.statuses.get(302, 0) != len(measured):
        raise SystemExit(f"{kind}: not every request got its 302: {result.statuses}")
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no instruction total in {out}")


def instructions(args: argparse.Namespace) -> int:
    """Instructions per request of each BREAKDOWN kind, from callgrind: repeatable
    where req/s on a shared machine is not."""
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)")
        return 1
    count = args.requests
    with tempfile.TemporaryDirectory(prefix="clickrelay-bench-") as tmp:
        workdir = Path(tmp)
        paths = mint_paths(workdir, WARMUP + count)
        warmup, measured = paths[:WARMUP], paths[WARMUP:]
        per_request: dict[str, float] = {}
        for kind, _label in BREAKDOWN:
            base = callgrind_instructions(kind, workdir, warmup, [], args.connections)
            full = callgrind_instructions(kind, workdir, warmup, measured, args.connections)
            per_request[kind] = (full - base) / count
    print(f"instructions per request (callgrind, {count} requests after {WARMUP} warm-up):")
    print_steps(per_request, "{:9.0f}", "{:+8.0f}")
    ratio = per_request["bare"] / per_request["real"]
    print(f"instruction ratio bare/redirector: {ratio:.2f}  (the rps target is 0.70)")
    return 0


def bench(args: argparse.Namespace) -> int:
    sides = ["bare", "real", "nostore"]
    per_round = max(1, args.requests // args.rounds)
    with tempfile.TemporaryDirectory(prefix="clickrelay-bench-") as tmp:
        workdir = Path(tmp)
        # One token per request: real clicks are mostly distinct tokens (one per
        # recipient and link), so nothing can profit from repetition.
        paths = mint_paths(workdir, WARMUP + per_round * args.rounds)
        warmup, measured = paths[:WARMUP], paths[WARMUP:]
        print(
            f"loop {loop_name()}, {args.connections} connections, {per_round * args.rounds}"
            f" requests per side in {args.rounds} interleaved rounds"
            f" (time limit {args.time_limit:g} s per round), {os.cpu_count()} CPUs"
        )
        servers = {side: start_server(side, workdir) for side in sides}
        parts: dict[str, list[Result]] = {side: [] for side in sides}
        served = 0
        final: dict[str, Any] = {}
        paced: list[tuple[float, float, Result]] = []
        try:
            for side in sides:  # warm-up, unmeasured (every 302 is still a click)
                _, warm = load_and_flush(
                    side, servers[side][1], [], warmup, args.connections, args.time_limit
                )
                if side == "real":
                    served += warm
            for rnd in range(args.rounds):
                chunk = measured[rnd * per_round : (rnd + 1) * per_round]
                for side in sides:
                    proc, port = servers[side]
                    cpu0 = process_cpu(proc.pid)
                    result, _ = load_and_flush(
                        side, port, chunk, [], args.connections, args.time_limit
                    )
                    if side == "real":
                        served += result.statuses.get(302, 0)
                    cpu1 = process_cpu(proc.pid)
                    if cpu0 is not None and cpu1 is not None:
                        result.server_cpu = cpu1 - cpu0
                    parts[side].append(result)
                    print(f"  round {rnd + 1} {report(result)}")
            # Latency at a fixed offered load (a fraction of what the bare app managed
            # flat out), on bare and redirector: the closed-loop p99 above is mostly
            # queueing behind 50 busy connections.
            bare_rps = merge("bare", parts["bare"]).rps
            for fraction in args.paced_fractions:
                rate = bare_rps * fraction
                paced_paths = measured[: min(len(measured), int(rate * args.paced_seconds))]
                for side in ("bare", "real"):
                    proc, port = servers[side]
                    result, _ = load_and_flush(
                        side, port, paced_paths, [], args.connections, args.time_limit, rate=rate
                    )
                    if side == "real":
                        served += result.statuses.get(302, 0)
                    paced.append((fraction, rate, result))
        finally:
            for side, (proc, _) in servers.items():
                answer = stop_server(proc)
                if side == "real":
                    final = answer
        with contextlib.closing(sqlite3.connect(workdir / "clicks.sqlite3")) as conn:
            (stored,) = conn.execute("SELECT COUNT(*) FROM clicks").fetchone()

    base, real, nostore = (merge(side, parts[side]) for side in sides)
    print(report(base))
    print(report(real))
    print(report(nostore) + "  (informational: no click store)")
    ratio = real.rps / base.rps if base.rps else 0.0
    p99 = real.pct(0.99)
    print(f"ratio redirector/bare rps: {ratio:.2f}  (target >= 0.70)")
    print(f"ratio redirector-without-store/bare rps: {nostore.rps / base.rps:.2f}")
    bare_us, real_us = base.server_us_per_request, real.server_us_per_request
    if bare_us and real_us:
        print(
            f"server CPU per request : bare {bare_us:.0f} us, redirector {real_us:.0f}"
            f" us -> CPU-bound capacity ratio {bare_us / real_us:.2f}"
        )
    print(f"redirector p99: {p99:.2f} ms, bare p99: {base.pct(0.99):.2f} ms  (target < 10 ms)")
    for fraction, rate, res in paced:
        print(
            f"fixed {rate:5.0f} req/s ({fraction:.0%} of bare's flat-out rps, latency from the"
            f" scheduled send): {report(res)}"
        )
    print(
        f"302s served: {served}, clicks stored: {stored}, dropped: {final.get('dropped')}"
        f"  ({'equal' if stored == served else 'MISMATCH'})"
    )
    ok = ratio >= 0.70 and p99 < 10.0 and stored == served
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="GETs per side")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side")
    parser.add_argument("--time-limit", type=float, default=8.0, help="seconds per round, max")
    parser.add_argument(
        "--paced-fractions",
        type=lambda text: [float(x) for x in text.split(",") if x],
        default=[0.25, 0.5],
        help="fixed-rate latency phases: offered loads as fractions of bare's measured rps",
    )
    parser.add_argument(
        "--paced-seconds", type=float, default=3.0, help="length of the fixed-rate phase"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="instead: server CPU per request as the redirector's parts are added one by one",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instead: instructions per request of each part, under valgrind's callgrind",
    )
    parser.add_argument("--serve", choices=[kind for kind, _ in BREAKDOWN], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "bare":
        run_loop(_serve_bare)
        return 0
    if args.serve == "real":
        run_loop(lambda: _serve_real(args.workdir))
        return 0
    if args.serve == "nostore":
        run_loop(lambda: _serve_nostore(args.workdir))
        return 0
    if args.serve in ("open", "location"):
        run_loop(lambda: _serve_partial(args.workdir, args.serve))
        return 0
    if args.instructions:
        return instructions(args)
    return breakdown(args) if args.breakdown else bench(args)


if __name__ == "__main__":
    sys.exit(main())
