"""Throughput, latency and memory of the SMTP proxy, against baselines from the same run.

    .venv/bin/python bench/proxy.py [--messages N] [--rounds R] [--concurrency C]
                                    [--loop asyncio|uvloop] [--no-memory]

The same client load (C connections sending N messages of a ~20 KB HTML newsletter from
the corpus — the one near 20 KB with the most trackable links) against three targets,
interleaved over R rounds so a busy machine hurts all of them alike (median msgs/s):

1. client → sink                                 (direct: the baseline)
2. client → proxy, rewriting off → sink           (preflight on, no monitor: relay only)
3. client → proxy, rewriting on → sink            (preflight off: every link tracked)

The sink (a counting aiosmtpd server that keeps nothing) and the proxy each run in
their own process, so the client's CPU does not count against them. Printed: msgs/s and
p50/p99 of the per-message latency (MAIL to the DATA reply) and the ratios; targets are
rewriting ≥ 50% of direct and ≥ 80% of the proxy without rewriting.

Memory: a ~25 MB message through a fresh rewriting proxy — once the usual shape (the
newsletter plus a large attachment), once the rewriter's worst case (25 MB of HTML, the
newsletter repeated: thousands of links); the growth of the proxy process's peak RSS
(VmHWM) over its RSS before the message, against the target of < 4× the message size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SIZE = 20_000
BIG_SIZE = 25 * 1024 * 1024


# --- child processes ------------------------------------------------------------------------


def run_sink(port_file: Path) -> None:
    """A sink that answers 250 to everything and only counts messages."""
    from aiosmtpd.smtp import SMTP, Envelope, Session

    class Handler:
        count = 0

        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            Handler.count += 1
            return f"250 2.0.0 Ok: queued as {Handler.count}"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                Handler(),
                hostname="sink.bench",
                data_size_limit=64 * 1024 * 1024,
                enable_SMTPUTF8=True,
                loop=loop,
            ),
            "127.0.0.1",
            0,
        )
        port_file.write_text(str(server.sockets[0].getsockname()[1]))  # noqa: ASYNC240
        await asyncio.Event().wait()

    asyncio.run(main())


def run_proxy(config_file: Path, port_file: Path) -> None:
    """A ProxyService from a config file, with no preflight monitor."""
    from clickrelay.config import load_config
    from redirector.tokens import load_keyring
    from smtp_proxy.service import ProxyService

    async def main() -> None:
        config = load_config(config_file)
        keyring = load_keyring(config.tracking.key_file)
        service = ProxyService(config, keyring, admin=False)
        await service.start()
        port_file.write_text(str(service.port))  # noqa: ASYNC240 - a few bytes, once
        await asyncio.Event().wait()

    asyncio.run(main())


def set_loop(name: str) -> None:
    if name == "uvloop":
        import uvloop

        uvloop.install()


class Child:
    """A child process of this script that writes its port to a file."""

    def __init__(self, args: list[str], workdir: Path, name: str, loop: str) -> None:
        self.port_file = workdir / f"{name}.port"
        self.port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--loop", loop, *args, "--port-file", str(self.port_file)]
        )
        deadline = time.monotonic() + 20
        while not self.port_file.exists() or not self.port_file.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.02)
        self.port = int(self.port_file.read_text())

    def status(self, key: str) -> int:
        """A /proc/PID/status figure in bytes (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the client load ------------------------------------------------------------------------


def newsletter() -> tuple[Path, str]:
    """The corpus HTML file within 25% of 20 KB whose links the engine tracks most."""
    from clickrelay.config import load_config_text
    from redirector.tokens import new_key_line, parse_keys
    from smtp_proxy.engine.rewriter import rewrite_message
    from smtp_proxy.smtp.tracking import tracking_settings
    from tests.support.corpus import corpus_html_files

    files = [
        f for f in corpus_html_files() if abs(f.stat().st_size - TARGET_SIZE) <= TARGET_SIZE // 4
    ]
    if not files:
        sys.exit("corpus not found: set $CLICKRELAY_CORPUS or put it at ../shared/corpus")
    config = load_config_text('[tracking]\nbase_url = "https://links.example.com"\n')
    settings = tracking_settings(config, parse_keys(new_key_line()), {})

    def tracked(path: Path) -> tuple[int, int]:
        message = build_message(path.read_text("utf-8", "replace"))
        result = rewrite_message(message, settings, queue_id="pick")
        count = sum(link.action == "tracked" for link in result.links)
        return count, -abs(path.stat().st_size - TARGET_SIZE)

    best = max(files, key=tracked)
    return best, best.read_text("utf-8", "replace")


def build_message(html: str, to: str = "reader@example.org") -> bytes:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = "news@example.com"
    msg["To"] = to
    msg["Subject"] = "Benchmark newsletter"
    msg.set_content(html, subtype="html", cte="quoted-printable")
    return msg.as_bytes()


async def load(
    port: int, message: bytes, total: int, concurrency: int
) -> tuple[float, list[float]]:
    """``total`` messages over ``concurrency`` connections: (msgs/s, per-message latencies)."""
    import aiosmtplib

    latencies: list[float] = []
    remaining = [total]

    async def worker() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60) as smtp:
            while remaining[0] > 0:
                remaining[0] -= 1
                started = time.perf_counter()
                await smtp.sendmail("news@example.com", ["reader@example.org"], message)
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


def summarize(rates: list[float], latencies: list[float]) -> dict[str, float]:
    latencies = sorted(latencies)
    return {
        "msgs_per_s": statistics.median(rates),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "messages": len(latencies),
    }


def write_config(workdir: Path, sink_port: int, *, rewriting: bool) -> Path:
    from redirector.tokens import new_key_line

    key_file = workdir / "keys"
    if not key_file.exists():
        key_file.write_text(new_key_line() + "\n")
        key_file.chmod(0o600)
    path = workdir / f"proxy-{'on' if rewriting else 'off'}.toml"
    path.write_text(
        f"""
[proxy]
listen = "127.0.0.1:0"
admin_listen = ""
hostname = "proxy.bench"
trusted_networks = ["127.0.0.1/32"]
max_message_size = {64 * 1024 * 1024}
[upstream]
url = "smtp://127.0.0.1:{sink_port}"
pool_size = 16
timeout = 120
[tracking]
base_url = "https://links.example.com"
key_file = "{key_file}"
[preflight]
# false = rewriting allowed (no monitor); true without a monitor = relay unrewritten
enabled = {"false" if rewriting else "true"}
"""
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--messages", type=int, default=80, help="per scenario per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--proxy", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_loop(args.loop)
    if args.sink:
        run_sink(args.port_file)
        return
    if args.proxy:
        run_proxy(Path(args.proxy), args.port_file)
        return

    source, html = newsletter()
    message = build_message(html)
    corpus_root = source.parents[3] if len(source.parents) > 3 else source.parent
    print(
        f"newsletter: {source.relative_to(corpus_root)} ({len(html)} chars HTML, "
        f"{len(message)} bytes message)"
    )
    print(
        f"load: {args.rounds} rounds x {args.messages} messages per scenario over "
        f"{args.concurrency} connections, {args.loop}; scenarios interleaved, median msgs/s"
    )
    names = ("direct", "proxy-off", "proxy-on")
    rates: dict[str, list[float]] = {name: [] for name in names}
    latencies: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="clickrelay-bench-") as tmp:
        workdir = Path(tmp)
        children: list[Child] = []
        try:
            sink = Child(["--sink"], workdir, "sink", args.loop)
            children.append(sink)
            ports = {"direct": sink.port}
            for name in ("proxy-off", "proxy-on"):
                config = write_config(workdir, sink.port, rewriting=name == "proxy-on")
                proxy = Child(["--proxy", str(config)], workdir, name, args.loop)
                children.append(proxy)
                ports[name] = proxy.port
            for name in names:  # warm-up: connections, pools, first-call costs
                asyncio.run(load(ports[name], message, 20, 2))
            for _ in range(args.rounds):
                for name in names:
                    rate, lat = asyncio.run(
                        load(ports[name], message, args.messages, args.concurrency)
                    )
                    rates[name].append(rate)
                    latencies[name].extend(lat)
        finally:
            for child in children:
                child.stop()
        results = {name: summarize(rates[name], latencies[name]) for name in names}
        for name in names:
            r = results[name]
            print(
                f"  {name:10s} {r['msgs_per_s']:8.1f} msgs/s   p50 {r['p50_ms']:7.2f} ms"
                f"   p99 {r['p99_ms']:7.2f} ms   (rounds: "
                + ", ".join(f"{x:.0f}" for x in rates[name])
                + ")"
            )
        on, off, direct = results["proxy-on"], results["proxy-off"], results["direct"]
        ratio_direct = on["msgs_per_s"] / direct["msgs_per_s"]
        ratio_off = on["msgs_per_s"] / off["msgs_per_s"]
        print(
            f"rewriting vs direct:     {ratio_direct:6.1%}  (target >= 50%)"
            f"  {'OK' if ratio_direct >= 0.5 else 'MISSED'}"
        )
        print(
            f"rewriting vs no-rewrite: {ratio_off:6.1%}  (target >= 80%)"
            f"  {'OK' if ratio_off >= 0.8 else 'MISSED'}"
        )
        summary: dict[str, Any] = {"throughput": results}
        if not args.no_memory:
            summary["memory"] = memory(workdir, html, args.loop)
        print(json.dumps(summary, sort_keys=True))


def big_messages(html: str) -> dict[str, bytes]:
    """Two ~25 MB messages: the usual shape (a newsletter plus a large attachment) and
    the worst case for the rewriter (25 MB of HTML: the newsletter repeated)."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = "news@example.com"
    msg["To"] = "reader@example.org"
    msg["Subject"] = "Newsletter with the annual report"
    msg.set_content(html, subtype="html", cte="quoted-printable")
    blob = bytes(range(256)) * (BIG_SIZE * 3 // 4 // 256)  # base64 makes it ~25 MB
    msg.add_attachment(blob, maintype="application", subtype="pdf", filename="report.pdf")
    body = html
    while len(body) < BIG_SIZE:
        body += html
    return {"attachment": msg.as_bytes(), "all-html": build_message(body[:BIG_SIZE])}


def memory(workdir: Path, html: str, loop: str) -> dict[str, dict[str, float]]:
    """Peak RSS growth of a fresh rewriting proxy while one ~25 MB message passes."""
    import aiosmtplib

    results: dict[str, dict[str, float]] = {}
    for name, big in big_messages(html).items():
        sink = Child(["--sink"], workdir, "sink", loop)
        proxy = None
        try:
            config = write_config(workdir, sink.port, rewriting=True)
            proxy = Child(["--proxy", str(config)], workdir, "proxy", loop)
            port = proxy.port

            async def send(data: bytes, count: int = 1, port: int = port) -> float:
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=300) as smtp:
                    started = time.perf_counter()
                    for _ in range(count):
                        await smtp.sendmail("news@example.com", ["reader@example.org"], data)
                    return time.perf_counter() - started

            asyncio.run(send(build_message(html), 5))  # warm up: imports, pool, caches
            before = proxy.status("VmRSS")
            seconds = asyncio.run(send(big))
            peak = proxy.status("VmHWM")
        finally:
            if proxy is not None:
                proxy.stop()
            sink.stop()
        growth = peak - before
        ratio = growth / len(big)
        print(
            f"memory ({name}): {len(big) / 1e6:.1f} MB message in {seconds:.1f} s; proxy RSS "
            f"before {before / 1e6:.0f} MB, peak {peak / 1e6:.0f} MB, growth "
            f"{growth / 1e6:.0f} MB = {ratio:.2f}x the message (target < 4x)  "
            f"{'OK' if ratio < 4 else 'MISSED'}"
        )
        results[name] = {"size": len(big), "growth": growth, "ratio": ratio, "seconds": seconds}
    return results


if __name__ == "__main__":
    main()
