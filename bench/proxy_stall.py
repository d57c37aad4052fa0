"""How long does one hostile message keep the proxy's other clients waiting?

    .venv/bin/python bench/proxy_stall.py [--parts N] [--rounds R]

While a message of N tiny MIME parts (each with a link; default 14,075, ~1 MB) goes
through a rewriting proxy, another client sends NOOP after NOOP; printed is the longest
NOOP round trip (ms, median over R rounds), for three proxies in the same run:

1. baseline — a one-part message of the same size (what any message of that size costs);
2. inline   — the rewriter as it was: every part parsed and rewritten on the event
   loop (``max_parts`` unbounded, the worker thread only for messages over 1 MB);
3. now      — the defaults: ``[tracking] max_parts = 1000`` and the thread chosen by
   estimated work (parts and links), not only by size.

Everything runs in this process on loopback (sink, proxy, clients): the NOOP client
waits for the same event loop the proxy rewrites on, which is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redirector.tokens import load_keyring, new_key_line
from smtp_proxy.smtp import rewriting
from tests.support.config import proxy_config
from tests.support.proxy_helpers import LineClient, running_proxy
from tests.support.smtp_sink import SmtpSink


def many_parts(count: int) -> bytes:
    part = b"--mp\r\nContent-Type: text/plain\r\n\r\nhttps://example.com/p?%d\r\n"
    body = b"".join(part % i for i in range(count)) + b"--mp--\r\n"
    return (
        b"From: a@example.com\r\nTo: b@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="mp"\r\n\r\n' + body
    )


def one_part(size: int) -> bytes:
    line = b"Plain text without links, just filling the message up to size.\r\n"
    body = line * (size // len(line))
    return b"From: a@example.com\r\nTo: b@example.org\r\nSubject: one\r\n\r\n" + body


@contextlib.contextmanager
def inline_rewriting() -> Iterator[None]:
    """The rewriter as before: the thread only for messages over 1 MB, whatever inside."""
    saved = rewriting.PART_COST, rewriting.LINK_COST
    rewriting.PART_COST = rewriting.LINK_COST = 0
    try:
        yield
    finally:
        rewriting.PART_COST, rewriting.LINK_COST = saved


async def worst_noop(port: int, message: bytes) -> float:
    """The longest NOOP round trip of one client while another sends ``message``."""
    loop = asyncio.get_running_loop()
    prober = await LineClient.start(port)
    worst = 0.0
    done = asyncio.Event()

    async def probe() -> None:
        nonlocal worst
        while not done.is_set():
            started = loop.time()
            await prober.cmd("NOOP", 60)
            worst = max(worst, loop.time() - started)
            await asyncio.sleep(0.005)  # a client pacing its NOOPs

    task = asyncio.create_task(probe())
    sender = await LineClient.start(port)
    code, text = await sender.transaction(message.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    assert code == 250, (code, text)
    done.set()
    await task
    await sender.close()
    await prober.close()
    return worst


async def measure(workdir: Path, parts: int, rounds: int) -> dict[str, list[float]]:
    key_file = workdir / "keys"
    key_file.write_text(new_key_line() + "\n")
    key_file.chmod(0o600)
    keyring = load_keyring(key_file)
    hostile = many_parts(parts)
    plain = one_part(len(hostile))
    sink = SmtpSink(data_size_limit=None)
    await sink.start()
    results: dict[str, list[float]] = {"baseline": [], "inline": [], "now": []}
    try:
        for _ in range(rounds):
            for name in results:
                limit = 10**9 if name == "inline" else 1000
                config = proxy_config(workdir, sink.url, key_file, tracking={"max_parts": limit})
                message = plain if name == "baseline" else hostile
                context = inline_rewriting() if name == "inline" else contextlib.nullcontext()
                with context:
                    async with running_proxy(config, keyring) as proxy:
                        results[name].append(await worst_noop(proxy.port, message))
    finally:
        await sink.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=14_075)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(measure(Path(tmp), args.parts, args.rounds))
    size = len(many_parts(args.parts))
    print(f"message: {args.parts:,} parts, {size:,} bytes; {args.rounds} rounds")
    base = statistics.median(results["baseline"])
    for name, values in results.items():
        worst = statistics.median(values)
        print(
            f"{name:>8}: longest NOOP wait {worst * 1000:7.1f} ms"
            f"  ({worst / base:5.1f}x the one-part baseline)"
        )


if __name__ == "__main__":
    main()
