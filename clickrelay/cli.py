"""``clickrelay`` command line: one subcommand per module in :mod:`clickrelay.commands`.

Each command module provides ``add_arguments(parser)`` and ``run(args) -> int``. The
top-level parser knows the commands only by name and help text (:data:`COMMANDS`), so
``clickrelay --help`` imports no command module; the chosen command's module alone is
imported, when argparse hands it its arguments. Command modules keep their heavy imports
(aiohttp, dnspython, lxml, asyncpg, …) inside ``run()``, so ``clickrelay decode`` does
not pay for the services it does not start.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

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
    "keygen": "print a new link key line for the key file",
    "adduser": "add or replace an SMTP AUTH user in the users file",
}


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that imports its module and adds its arguments only when
    argparse picks this command (argparse calls ``parse_known_args`` on the chosen
    subparser alone)."""

    def __init__(self, *args: Any, command: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._command = command
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        module = importlib.import_module(f"clickrelay.commands.{self._command}")
        module.add_arguments(self)
        self.set_defaults(_module=module)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._load()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clickrelay",
        description="Self-hosted link-tracking SMTP proxy and click redirector.",
    )
    parser.add_argument("--version", action="version", version=f"clickrelay {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser
    )
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, command=name)
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
