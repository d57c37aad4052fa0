"""One module per ``clickrelay`` subcommand: ``add_arguments(parser)`` and ``run(args)``."""

import argparse


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="TOML config file (default: $CLICKRELAY_CONFIG, else quick-start defaults)",
    )
