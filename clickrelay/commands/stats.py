"""``clickrelay stats``: clicks per message and per link, humans and bots apart.

Reads the click store named by ``[redirector] store`` in the config (the same store the
redirector writes to; SQLite's WAL lets it read while the redirector runs). ``--json``
prints the document ``GET /api/stats`` returns; ``--since`` takes an ISO 8601 time or a
duration back from now (``24h``, ``7d``, ``30m``); ``--tag T`` counts only the clicks of
messages tagged ``T``. Per-tag totals close the report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime
from typing import Any

from clickrelay.commands import add_config_argument, require_sqlite_file
from clickrelay.common.errors import ClickrelayError
from clickrelay.config import config_from_cli
from redirector.store import StoreError, open_store
from redirector.store.stats import format_stats, parse_since


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the stats as JSON")
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="only clicks from WHEN on: ISO 8601 (2026-11-01T12:00Z) or 24h, 7d, 30m",
    )
    parser.add_argument("--tag", metavar="TAG", help="only clicks of messages tagged TAG")


async def read_stats(
    store_url: str, since: datetime | None, tag: str | None = None
) -> dict[str, Any]:
    """Open the store, read the stats, close it; StoreError names the store."""
    store = open_store(store_url)
    try:
        await store.open()
        return await store.stats(since, tag)
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    config = config_from_cli(args.config)
    since = None
    if args.since:
        try:
            since = parse_since(args.since)
        except ValueError as exc:
            raise ClickrelayError(str(exc)) from None
    store_url = config.redirector.store
    require_sqlite_file(store_url)
    try:
        doc = asyncio.run(read_stats(store_url, since, args.tag))
    except StoreError as exc:
        raise ClickrelayError(f"cannot read the click store: {exc}") from None
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print(format_stats(doc))
    return 0
