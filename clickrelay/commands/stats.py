"""``clickrelay stats``: clicks per message and per link, humans and bots apart.

Reads the click store named by ``[redirector] store`` in the config (the same store the
redirector writes to; SQLite's WAL lets it read while the redirector runs). ``--json``
prints the document ``GET /api/stats`` returns; ``--since`` takes an ISO 8601 time or a
duration back from now (``24h``, ``7d``, ``30m``); ``--tag T`` counts only the clicks of
messages tagged ``T``. Per-tag totals close the report. ``--settled`` counts only clicks
whose label is final; ``--explain-click ID`` prints one click with the evidence behind its
label and the other clicks of its message around it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

from clickrelay.commands import add_config_argument, require_sqlite_file
from clickrelay.common.errors import ClickrelayError
from clickrelay.config import config_from_cli
from redirector.clicks import Click
from redirector.clicks.rules import DEFAULT_RULES
from redirector.store import StoreError, open_store
from redirector.store.stats import format_stats, iso, parse_since


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the stats as JSON")
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="only clicks from WHEN on: ISO 8601 (2026-11-01T12:00Z) or 24h, 7d, 30m",
    )
    parser.add_argument("--tag", metavar="TAG", help="only clicks of messages tagged TAG")
    parser.add_argument(
        "--settled",
        action="store_true",
        help="only clicks whose label is final (settled); what automations should count",
    )
    parser.add_argument(
        "--explain-click",
        metavar="CLICK_ID",
        help="print one click, the evidence behind its label and its message's nearby clicks",
    )


async def read_stats(
    store_url: str, since: datetime | None, tag: str | None = None, *, settled_only: bool = False
) -> dict[str, Any]:
    """Open the store, read the stats, close it; StoreError names the store."""
    store = open_store(store_url)
    try:
        await store.open()
        return await store.stats(since, tag, settled_only=settled_only)
    finally:
        await store.close()


async def explain_click(store_url: str, click_id: str) -> dict[str, Any] | None:
    """The click, its evidence and its message's clicks within the rules' horizon."""
    store = open_store(store_url)
    try:
        await store.open()
        click = await store.click(click_id)
        if click is None:
            return None
        horizon = timedelta(seconds=DEFAULT_RULES.horizon)
        nearby = await store.message_clicks(
            [click.queue_id], click.time - horizon, click.time + horizon
        )
    finally:
        await store.close()
    return explanation(click, nearby)


def run(args: argparse.Namespace) -> int:
    config = config_from_cli(args.config)
    since = None
    if args.since:
        try:
            since = parse_since(args.since)
        except ValueError as exc:
            raise ClickrelayError(str(exc)) from None
    store_url = config.redirector.store
    if args.explain_click is not None:
        require_sqlite_file(store_url)
        try:
            doc = asyncio.run(explain_click(store_url, args.explain_click))
        except StoreError as exc:
            raise ClickrelayError(f"cannot read the click store: {exc}") from None
        if doc is None:
            raise ClickrelayError(f"no click {args.explain_click!r} in {store_url}")
        print(
            json.dumps(doc, ensure_ascii=False, indent=2) if args.json else format_explanation(doc)
        )
        return 0
    require_sqlite_file(store_url)
    try:
        doc = asyncio.run(read_stats(store_url, since, args.tag, settled_only=args.settled))
    except StoreError as exc:
        raise ClickrelayError(f"cannot read the click store: {exc}") from None
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print(format_stats(doc))
    return 0


def explanation(click: Click, nearby: list[Click]) -> dict[str, Any]:
    """The ``--explain-click`` document: the click, its evidence, its message's neighbours."""

    def row(c: Click) -> dict[str, Any]:
        return {
            "id": c.id,
            "time": iso(c.time),
            "link_index": c.link_index,
            "method": c.method,
            "classification": c.classification,
            "reason": c.reason,
            "settled": c.settled,
            "same_address": c.client_key is not None and c.client_key == click.client_key,
            "same_net": c.net_key is not None and c.net_key == click.net_key,
            "same_recipient": c.recipient == click.recipient,
            "trap": c.trap,
        }

    evidence: Any = None
    if click.evidence:
        try:
            evidence = json.loads(click.evidence)
        except ValueError:
            evidence = click.evidence
    return {
        "click": {
            **row(click),
            "queue_id": click.queue_id,
            "url": click.url,
            "recipient": click.recipient,
            "client_ip": click.client_ip,
            "user_agent": click.user_agent,
            "network": click.network,
            "evidence": evidence,
        },
        "nearby": [
            row(c) for c in sorted(nearby, key=lambda c: (c.time, c.id)) if c.id != click.id
        ],
    }


def format_explanation(doc: dict[str, Any]) -> str:
    c = doc["click"]
    label = c["classification"] + (f" ({c['reason']})" if c["reason"] else "")
    lines = [
        f"click {c['id']}: {label}, {'settled' if c['settled'] else 'not settled yet'}",
        f"  time        {c['time']}",
        f"  message     {c['queue_id']} link #{c['link_index']} {c['url']}",
        f"  recipient   {c['recipient'] or '-'}",
        f"  request     {c['method']} from {c['client_ip'] or '-'}"
        + (f" (scanner network {c['network']})" if c["network"] else ""),
        f"  user agent  {c['user_agent'] if c['user_agent'] is not None else '(none)'}",
        f"  evidence    {json.dumps(c['evidence'], sort_keys=True) if c['evidence'] else '-'}",
        "",
        f"other clicks of the message within {DEFAULT_RULES.horizon:g} s:",
    ]
    for n in doc["nearby"]:
        same = ", ".join(k for k in ("same_address", "same_net", "same_recipient") if n[k]).replace(
            "_", " "
        )
        label = n["classification"] + (f" ({n['reason']})" if n["reason"] else "")
        lines.append(
            f"  {n['time']}  #{n['link_index']:<3} {n['method']:<4} {label:<22} {same or '-'}"
        )
    if not doc["nearby"]:
        lines.append("  (none)")
    return "\n".join(lines)
