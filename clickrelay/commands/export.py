"""``clickrelay export``: every stored click to stdout, CSV or JSON lines, in constant memory.

Pages of :data:`PAGE` clicks are read in commit order (keyset pagination on the store's
``seq``: each page starts after the last one, no OFFSET), written, and let go, so any
number of clicks streams in the memory of one page. ``--since``/``--until`` bound the
click time (ISO 8601 or a duration back from now), ``--tag`` keeps one tag's clicks.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from collections.abc import Callable
from typing import TextIO

from clickrelay.commands import add_config_argument, require_sqlite_file
from clickrelay.common.errors import ClickrelayError
from clickrelay.config import config_from_cli
from redirector.store import ClickStore, StoreError, open_store
from redirector.store.records import ClickFilter, StoredClick, click_record
from redirector.store.stats import parse_since

#: Clicks per page.
PAGE = 5000

FIELDS = (
    "click_id",
    "clicked_at",
    "queue_id",
    "link_index",
    "url",
    "recipient",
    "classification",
    "reason",
    "tag",
    "metadata",
    "user_agent",
    "ip",
    "method",
    "sent_at",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--since", metavar="WHEN", help="clicks from WHEN (ISO 8601 or 7d, 24h)")
    parser.add_argument("--until", metavar="WHEN", help="clicks before WHEN")
    parser.add_argument("--tag", metavar="TAG", help="only clicks of messages tagged TAG")
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")


def _writer(fmt: str, out: TextIO) -> Callable[[StoredClick], None]:
    if fmt == "jsonl":

        def line(click: StoredClick) -> None:
            out.write(json.dumps(click_record(click), ensure_ascii=False) + "\n")

        return line
    writer = csv.DictWriter(out, FIELDS, lineterminator="\n")
    writer.writeheader()

    def row(click: StoredClick) -> None:
        record = click_record(click)
        record["metadata"] = json.dumps(record["metadata"], ensure_ascii=False)
        writer.writerow(record)

    return row


async def export(store: ClickStore, flt: ClickFilter, write: Callable[[StoredClick], None]) -> int:
    """Write every matching click; the next page is read (on the store's thread) while
    this one is written, so at most two pages are in memory."""
    total = 0
    pending = asyncio.ensure_future(store.export_page(flt, 0, PAGE))
    while True:
        page = await pending
        if len(page) == PAGE:
            pending = asyncio.ensure_future(store.export_page(flt, page[-1].seq, PAGE))
        for click in page:
            write(click)
        total += len(page)
        if len(page) < PAGE:
            return total


def run(args: argparse.Namespace) -> int:
    config = config_from_cli(args.config)
    try:
        since = parse_since(args.since) if args.since else None
        until = parse_since(args.until) if args.until else None
    except ValueError as exc:
        raise ClickrelayError(str(exc).replace("--since", "--since/--until")) from None
    require_sqlite_file(config.redirector.store)
    flt = ClickFilter(since=since, until=until, tag=args.tag)
    write = _writer(args.format, sys.stdout)

    async def main() -> int:
        store = open_store(config.redirector.store)
        try:
            await store.open()
            return await export(store, flt, write)
        finally:
            await store.close()

    try:
        asyncio.run(main())
    except StoreError as exc:
        raise ClickrelayError(f"cannot read the click store: {exc}") from None
    except BrokenPipeError:  # `| head`: not an error
        return 0
    sys.stdout.flush()
    return 0
