"""``clickrelay adduser [-c FILE] [--file PATH] [--domains D,…] USER``: add or replace an
SMTP AUTH user.

The password is read from the terminal (asked twice, not echoed) or, when stdin is not a
terminal, from the first line of stdin (``printf '%s\\n' "$PW" | clickrelay adduser app``).
It is stored as an argon2id hash in ``[proxy] users_file`` (or ``--file``); a running
proxy picks the change up on reload (SIGHUP). ``--domains`` lists the sender domains
whose DKIM signatures the proxy may renew for this user after rewriting (a user named
like an address, ``app@example.com``, may always have its own domain's).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from clickrelay.commands import add_config_argument
from clickrelay.common.errors import ClickrelayError, ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--file",
        metavar="PATH",
        help="users file to write (default: [proxy] users_file of the config)",
    )
    parser.add_argument(
        "--domains",
        metavar="D,…",
        default="",
        help="sender domains this user may have DKIM re-signed (comma-separated)",
    )
    parser.add_argument("user", metavar="USER", help="the AUTH username")
    parser.epilog = (
        "The password is asked twice on a terminal, else read from the first line of stdin."
    )


def _read_password() -> str:
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Password (again): ")
        if first != second:
            raise ClickrelayError("the passwords do not match")
        return first
    line = sys.stdin.readline() if sys.stdin is not None else ""
    return line.rstrip("\r\n")


def _users_file(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file).expanduser().resolve()
    from clickrelay.config import config_from_cli

    config = config_from_cli(args.config)
    if config.proxy.users_file is None:
        where = str(config.source) if config.source else "the quick-start defaults"
        raise ConfigError(
            f"{where}: proxy.users_file is not set; set it in [proxy] or pass --file PATH"
        )
    return config.proxy.users_file


def run(args: argparse.Namespace) -> int:
    from smtp_proxy.smtp.users import add_user, username_problem

    problem = username_problem(args.user)
    if problem:
        raise ClickrelayError(f"{problem}: {args.user!r}")
    path = _users_file(args)
    password = _read_password()
    if not password:
        raise ClickrelayError("empty password; nothing written")
    replaced = add_user(path, args.user, password, args.domains.split(","))
    action = "replaced the password of" if replaced else "added"
    print(f"{action} user {args.user!r} in {path} (reload the proxy to apply: SIGHUP)")
    return 0
