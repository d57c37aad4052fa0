"""``clickrelay decode``: turn tracked links (or bare tokens) back into what they carry.

One JSON object per input, one per line: ``url``, ``queue_id``, ``link``, ``recipient``,
``sent_at`` (ISO 8601, UTC), ``key_id``, ``version`` (1 or 2) and ``host`` (the tracking
host a version 2 token is bound to; null for version 1); for input that is not one of
our links, ``{"input": …, "error": …}``. Exit status 1 when any input failed. ``-`` (or no
argument) reads one link per line from stdin.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from clickrelay.commands import add_config_argument
from clickrelay.common.errors import TokenError
from clickrelay.config import Config, config_from_cli
from redirector.hosts import base_url_host, normalize_host
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


def hosts_of(text: str) -> list[str]:
    """The host of a tracked URL (a token alone has none)."""
    if "://" not in text:
        return []
    try:
        host = urlsplit(text.strip()).hostname
    except ValueError:
        return []
    return [host] if host else []


def decode_one(keyring: Keyring, text: str, hosts: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON object for one input line.

    A version 2 token is bound to a tracking host: it is tried with the host of the
    input URL, then with each of ``hosts`` (the configured tracking hosts and aliases),
    and the one it opens with is shown as ``host``. Version 1 tokens are not bound
    (``host`` null).
    """
    token = token_of(text)
    candidates = list(dict.fromkeys(normalize_host(h) for h in [*hosts_of(text), *hosts]))
    data = None
    error: TokenError | None = None
    for host in candidates or [""]:
        try:
            data = keyring.open(token, host)
            break
        except TokenError as exc:
            if error is None or error.reason == "wrong-host":
                error = exc
    if data is None:
        assert error is not None
        message = str(error)
        if error.reason == "wrong-host":
            tried = ", ".join(candidates) or "none"
            message = f"token is bound to a tracking host other than the ones tried ({tried})"
        return {"input": text, "error": message}
    return {
        "url": data.url,
        "queue_id": data.queue_id,
        "link": data.link_index,
        "recipient": data.recipient,
        "sent_at": data.sent_at_datetime.isoformat(),
        "key_id": data.key_id,
        "version": data.version,
        "host": data.host,
    }


def configured_hosts(config: Config) -> list[str]:
    """Tracking hosts a token of this configuration can be bound to."""
    hosts = [base_url_host(url) for url in config.tracking.base_urls()]
    hosts += config.redirector.host_aliases.values()
    return hosts


def run(args: argparse.Namespace) -> int:
    config = config_from_cli(args.config)
    keyring = load_keyring(config.tracking.key_file)
    hosts = configured_hosts(config)
    inputs: list[str] = []
    for item in args.urls or ["-"]:
        if item == "-":
            inputs.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            inputs.append(item)
    failed = 0
    for text in inputs:
        record = decode_one(keyring, text, hosts)
        failed += "error" in record
        print(json.dumps(record, ensure_ascii=False), flush=True)
    return 1 if failed else 0
