"""How cheap is ``PreflightMonitor.may_rewrite``? (the proxy asks it for every message)

Baseline, measured in the same run: a plain ``dict.get`` of a bool by base URL — the
least any "is this domain verified?" lookup could cost. Prints calls per second of both
and the ratio. No network: the verdict is seeded through a loopback DNS test server once.

    .venv/bin/python bench/bench_preflight.py
"""

from __future__ import annotations

import asyncio
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redirector.tokens import new_key_line, parse_keys
from smtp_proxy.preflight import PreflightMonitor
from tests.support.config import preflight_config
from tests.support.dns_server import DnsServer

BASE = "https://links.example.com"
CALLS = 500_000


def main() -> None:
    with DnsServer() as dns:
        dns.add("links.example.com", "CNAME", "track.example.net", ttl=3600)
        config = preflight_config(
            BASE, nameserver=dns.nameserver, cname_target="track.example.net", http_probe=False
        )
        monitor = PreflightMonitor(config, parse_keys(new_key_line()))
        asyncio.run(monitor.refresh())
    assert monitor.may_rewrite(BASE)
    table = {BASE: True}
    baseline = min(timeit.repeat(lambda: table.get(BASE, False), number=CALLS, repeat=5))
    measured = min(timeit.repeat(lambda: monitor.may_rewrite(BASE), number=CALLS, repeat=5))
    print(f"dict.get baseline : {CALLS / baseline:,.0f} calls/s")
    print(f"may_rewrite       : {CALLS / measured:,.0f} calls/s")
    print(f"ratio             : may_rewrite costs {measured / baseline:.1f}x a dict.get")


if __name__ == "__main__":
    main()
