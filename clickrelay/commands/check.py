"""``clickrelay check``: preflight every tracking domain once and say what to fix.

Exit 0 when every domain is ok, 1 when any is not (2 for a bad config or key file, via
the CLI's error handler). ``--json`` prints one JSON object per domain, one per line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING

from clickrelay.commands import add_config_argument
from clickrelay.config import config_from_cli
from redirector.tokens import load_keyring

if TYPE_CHECKING:
    from smtp_proxy.preflight import DomainReport


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per domain")


def format_report(report: DomainReport) -> str:
    """Human-readable: verdict, DNS evidence as dig shows it, probe result, fix."""
    status = "ok" if report.ok else f"FAIL {report.verdict.value}"
    lines = [f"{report.base_url}: {status} — {report.detail}"]
    if report.dns.skipped:
        lines.append(f"  dns    {report.dns.skipped}")
    else:
        servers = ", ".join(report.dns.nameservers) or "system resolver"
        lines.append(f"  dns    ;; {report.dns.qname} via {servers}")
        for record in report.dns.records:
            lines.append(f"         {record.dig()}")
        if not report.dns.records:
            lines.append("         (no records)")
        if report.expected_target:
            lines.append(f"         expected CNAME target: {report.expected_target}")
    if report.probe is not None:
        lines.append(f"  probe  {report.probe.summary()}")
    for note in report.notes:
        if note != report.dns.skipped:
            lines.append(f"  note   {note}")
    if report.fix:
        lines.append(f"  fix    {report.fix}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # Imported here: preflight pulls in dnspython and aiohttp's client.
    from smtp_proxy.preflight import check_all

    config = config_from_cli(args.config)
    keyring = load_keyring(config.tracking.key_file)
    reports = asyncio.run(check_all(config, keyring))
    if args.json:
        for report in reports:
            print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        if not config.preflight.enabled:
            print("note: [preflight] enabled = false: the proxy rewrites without these checks\n")
        print("\n\n".join(format_report(r) for r in reports))
        failing = sum(not r.ok for r in reports)
        print()
        print(
            f"{len(reports)} tracking domain(s) ok"
            if not failing
            else f"{failing} of {len(reports)} tracking domain(s) failing"
        )
    return 0 if all(r.ok for r in reports) else 1
