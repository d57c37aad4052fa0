"""`clickrelay proxy`: the SMTP proxy (with its preflight monitor) alone.

Rewrites links and relays to ``[upstream]``; ``/metrics`` on ``[proxy] admin_listen``.
Under systemd: clickrelay-proxy.service. See :mod:`clickrelay.supervisor`.
"""

from __future__ import annotations

import argparse

from clickrelay.commands import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    # Imported here: `clickrelay --help` should not pay for aiohttp and aiosmtpd.
    from clickrelay.supervisor import run_command

    return run_command("proxy", args.config)
