"""``clickrelay keygen``: print a key line; put it first in the key file to rotate."""

import argparse

from redirector.tokens import new_key_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Rotation: put the new line first in the key file (it mints) and keep the old"
        " lines below it (they still decode links already sent)."
    )


def run(args: argparse.Namespace) -> int:
    print(new_key_line())
    return 0
