"""``clickrelay decode``: turn tracked links (or bare tokens) back into what they carry.

One JSON object per input, one per line: ``url``, ``queue_id``, ``link``, ``recipient``,
``sent_at`` (ISO 8601, UTC), ``key_id``, and the message's ``tag`` and ``metadata`` when
it had some; for input that is not one of our links,
``{"input": …, "error": …}``. Exit status 1 when any input failed. ``-`` (or no
argument) reads one link per line from stdin.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import urlsplit

from clickrelay.commands import add_config_argument
from clickrelay.common.errors import TokenError
from clickrelay.config import config_from_cli
from redirector.tokens import Keyring, load_keyring


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("urls", nargs="*", metavar="URL", help="tracked links or tokens; - = stdin")


def token_of(text: str) -> str:
    """The token in a tracked URL (``…/c/<token>``), or ``text`` itself when it is bare."""
    text = text.strip()
    if "/c/" not in text:
        return text
    try:
        path = urlsplit(text).path if "://" in text else text.split("?", 1)[0].split("#", 1)[0]
    except ValueError:
        return text
    return path.rsplit("/c/", 1)[-1].rstrip("/")


def decode_one(keyring: Keyring, text: str) -> dict[str, Any]:
    """The JSON object for one input line."""
    try:
        data = keyring.open(token_of(text))
    except TokenError as exc:
        return {"input": text, "error": str(exc)}
    record: dict[str, Any] = {
        "url": data.url,
        "queue_id": data.queue_id,
        "link": data.link_index,
        "recipient": data.recipient,
        "sent_at": data.sent_at_datetime.isoformat(),
        "key_id": data.key_id,
    }
    if data.tag is not None:
        record["tag"] = data.tag
    if data.metadata:
        record["metadata"] = dict(data.metadata)
    return record


def run(args: argparse.Namespace) -> int:
    config = config_from_cli(args.config)
    keyring = load_keyring(config.tracking.key_file)
    inputs: list[str] = []
    for item in args.urls or ["-"]:
        if item == "-":
            inputs.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            inputs.append(item)
    failed = 0
    for text in inputs:
        record = decode_one(keyring, text)
        failed += "error" in record
        print(json.dumps(record, ensure_ascii=False), flush=True)
    return 1 if failed else 0
