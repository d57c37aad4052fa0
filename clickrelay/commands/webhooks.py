"""``clickrelay webhooks``: the ``[[webhooks]]`` endpoints and their delivery state.

``clickrelay webhooks [-c FILE]`` lists every endpoint with its backlog (events pending),
failed events, the oldest pending event's age and the last error, read from the click
store (the redirector need not run). ``clickrelay webhooks replay --since WHEN
[--endpoint NAME]`` makes every click since WHEN that the endpoint's cursor has passed
pending again (failed, delivered or never sent because it was a bot at the time); the
running redirector sends them — with their click id as ``webhook-id``, so a receiver
that deduplicates sees each once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from clickrelay.commands import add_config_argument, require_sqlite_file
from clickrelay.common.errors import ClickrelayError
from clickrelay.config import Config, config_from_cli
from redirector.store import ClickStore, StoreError, open_store
from redirector.store.stats import parse_since


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    sub = parser.add_subparsers(
        dest="action", metavar="ACTION", parser_class=argparse.ArgumentParser
    )
    replay = sub.add_parser("replay", help="send the clicks since WHEN again")
    # SUPPRESS: without -c after "replay", the one given before it stands.
    replay.add_argument(
        "-c", "--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML config file"
    )
    replay.add_argument(
        "--since", required=True, metavar="WHEN", help="ISO 8601 time or 24h, 7d, 30m back"
    )
    replay.add_argument("--endpoint", metavar="NAME", help="only this endpoint (default: all)")


async def _with_store(config: Config, fn: Any) -> Any:
    store: ClickStore = open_store(config.redirector.store)
    try:
        await store.open()
        return await fn(store)
    finally:
        await store.close()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def run(args: argparse.Namespace) -> int:
    config = config_from_cli(args.config)
    names = [w.key for w in config.webhooks]
    if not names:
        raise ClickrelayError("no [[webhooks]] in the config")
    require_sqlite_file(config.redirector.store)
    try:
        if args.action == "replay":
            return _replay(args, config, names)
        statuses = asyncio.run(_with_store(config, lambda s: s.webhook_status(names)))
    except StoreError as exc:
        raise ClickrelayError(f"cannot read the click store: {exc}") from None
    now = time.time()
    urls = {w.key: w.url for w in config.webhooks}
    if args.json:
        for st in statuses:
            oldest = None if st.oldest_pending is None else now - st.oldest_pending
            doc = {
                "endpoint": st.endpoint,
                "url": urls[st.endpoint],
                "pending": st.pending,
                "failed": st.failed,
                "oldest_pending_seconds": oldest,
                "last_error": st.last_error,
            }
            print(json.dumps(doc, ensure_ascii=False))
        return 0
    print(f"{'endpoint':<40} {'pending':>8} {'failed':>7} {'oldest':>7}  last error")
    for st in statuses:
        oldest = None if st.oldest_pending is None else now - st.oldest_pending
        print(
            f"{st.endpoint:<40} {st.pending:>8} {st.failed:>7} {_age(oldest):>7}"
            f"  {st.last_error or '-'}"
        )
    return 0


def _replay(args: argparse.Namespace, config: Config, names: list[str]) -> int:
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise ClickrelayError(str(exc)) from None
    if args.endpoint is not None:
        if args.endpoint not in names:
            raise ClickrelayError(f"no endpoint {args.endpoint!r} (known: {', '.join(names)})")
        names = [args.endpoint]

    include_bots = {w.key: w.include_bots for w in config.webhooks}

    async def replay(store: ClickStore) -> list[int]:
        return [
            await store.webhook_replay(name, since, time.time(), include_bots=include_bots[name])
            for name in names
        ]

    counts = asyncio.run(_with_store(config, replay))
    for name, count in zip(names, counts, strict=True):
        print(f"{name}: {count} events pending again")
    return 0
