"""One module per ``clickrelay`` subcommand: ``add_arguments(parser)`` and ``run(args)``."""

import argparse
from pathlib import Path

from clickrelay.common.errors import ClickrelayError


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="TOML config file (default: $CLICKRELAY_CONFIG, else quick-start defaults)",
    )


def require_sqlite_file(store_url: str) -> None:
    """Commands that read the store must not create an empty SQLite database: a missing
    file means a wrong config (or a redirector that never ran), which the user should
    hear about."""
    if store_url.startswith("sqlite:"):
        path = Path(store_url[len("sqlite:") :])
        if not path.is_file():
            raise ClickrelayError(
                f"no click store at {path} (has the redirector run with this config?)"
            )
