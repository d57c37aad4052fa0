"""`clickrelay redirector`: the click redirector alone.

Answers ``/c/<token>`` with a 302 and records clicks in ``[redirector] store``;
``/metrics`` and ``/api/stats`` on ``[redirector] admin_listen``. Under systemd:
clickrelay-redirector.service. See :mod:`clickrelay.supervisor`.
"""

from __future__ import annotations

import argparse

from clickrelay.commands import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    # Imported here: `clickrelay --help` should not pay for aiohttp and aiosmtpd.
    from clickrelay.supervisor import run_command

    return run_command("redirector", args.config)
