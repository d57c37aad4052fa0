"""`clickrelay check`: not built yet (see the open issues)."""

import argparse
import sys

from smtp_proxy.commands import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    print("clickrelay check: not available yet", file=sys.stderr)
    return 2
