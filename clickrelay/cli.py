"""``clickrelay`` command line: one subcommand per module in :mod:`clickrelay.commands`.

Each command module provides ``add_arguments(parser)`` and ``run(args) -> int``; modules
are imported only when their command runs, so ``clickrelay keygen`` does not pay for
aiohttp and lxml imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from clickrelay import __version__
from clickrelay.common.errors import ClickrelayError

COMMANDS: dict[str, str] = {
    "serve": "proxy + redirector in one process (quick start)",
    "proxy": "run the SMTP proxy",
    "redirector": "run the click redirector",
    "check": "preflight every tracking domain; exit 0 ok, 1 problem",
    "rewrite": "rewrite messages as the proxy would (test before sending)",
    "decode": "decode tracked links back to their original URLs",
    "stats": "click statistics per message and link",
    "export": "every stored click as CSV or JSON lines (stdout)",
    "webhooks": "webhook endpoints: backlog, failures; replay",
    "keygen": "print a new link key line for the key file",
    "adduser": "add or replace an SMTP AUTH user in the users file",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clickrelay",
        description="Self-hosted link-tracking SMTP proxy and click redirector.",
    )
    parser.add_argument("--version", action="version", version=f"clickrelay {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"clickrelay.commands.{name}")
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args._module.run(args)
    except ClickrelayError as exc:
        print(f"clickrelay {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
