"""`clickrelay serve`: SMTP proxy + click redirector + preflight monitor in one process.

The quick start: with no config it listens for mail on 127.0.0.1:2525, rewrites links to
http://127.0.0.1:8080 (its own redirector), delivers into ./clickrelay-data/outbox/ and
records clicks in ./clickrelay-data/clicks.sqlite3. Under systemd: clickrelay.service.
See :mod:`clickrelay.supervisor` for signals and reload.
"""

from __future__ import annotations

import argparse

from clickrelay.commands import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    # Imported here: `clickrelay --help` should not pay for aiohttp and aiosmtpd.
    from clickrelay.supervisor import run_command

    return run_command("serve", args.config)
