"""``clickrelay decode``: turn tracked links (or bare tokens) back into what they carry.

One JSON object per input, one per line: ``url``, ``queue_id``, ``link``, ``recipient``,
``sent_at`` (ISO 8601, UTC), ``key_id``, ``version`` (1 or 2), ``host`` (the tracking
host a version 2 token is bound to; null for version 1), and the message's ``tag`` and
``metadata`` when it had some; for input that is not one of our links,
``{"input": …, "error": …}``. Exit status 1 when any input failed. ``-`` (or no
argument) reads one link per line from stdin.

Of the configuration it reads what decoding needs (:func:`read_settings`), checked as
every command checks it, and no more: the command starts in a fraction of the time the
services' whole settings schema takes to import.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clickrelay.commands import add_config_argument
from clickrelay.common.errors import TokenError
from clickrelay.common.validators import check_base_url, check_sender_domains
from clickrelay.config_reading import ValueReader, config_path, parse_text, read_file
from redirector.hosts import base_url_host, check_host_aliases, normalize_host
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
    record: dict[str, Any] = {
        "url": data.url,
        "queue_id": data.queue_id,
        "link": data.link_index,
        "recipient": data.recipient,
        "sent_at": data.sent_at_datetime.isoformat(),
        "key_id": data.key_id,
        "version": data.version,
        "host": data.host,
    }
    if data.tag is not None:
        record["tag"] = data.tag
    if data.metadata:
        record["metadata"] = dict(data.metadata)
    return record


#: The quick-start values of ``[tracking] key_file`` and ``base_url`` (those of
#: :class:`smtp_proxy.config.TrackingConfig`; a test keeps them equal).
DEFAULT_KEY_FILE = Path("clickrelay-data") / "keys"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"


def read_settings(path: str | None) -> tuple[Path, list[str]]:
    """The link key file and the tracking hosts a token can be bound to (the base URLs'
    hosts, then the host aliases' targets), from ``-c FILE``, else
    ``$CLICKRELAY_CONFIG``, else the quick-start defaults.

    Only ``[tracking] key_file``, ``base_url``, ``sender_domains`` and ``[redirector]
    host_aliases`` are read, with the conversions, checks and messages of
    :mod:`clickrelay.config`; the other keys are for the services to check.
    """
    chosen = config_path(path)
    table: dict[str, Any] = {}
    base_dir, source = Path.cwd().resolve(), "<defaults>"
    if chosen:
        text, base_dir = read_file(chosen)
        source = str(Path(chosen))
        table = parse_text(text, source)
    reader = ValueReader(source, base_dir)
    tracking = reader.table(table, "tracking")
    redirector = reader.table(table, "redirector")
    key_file: Path = base_dir / DEFAULT_KEY_FILE
    if "key_file" in tracking:
        key_file = reader.value(Path, tracking["key_file"], "tracking.key_file")
    base_url = reader.value(
        str, tracking.get("base_url", DEFAULT_BASE_URL), "tracking.base_url", check_base_url
    )
    senders = reader.value(
        dict[str, str],
        tracking.get("sender_domains", {}),
        "tracking.sender_domains",
        check_sender_domains,
    )
    aliases = reader.value(
        dict[str, str],
        redirector.get("host_aliases", {}),
        "redirector.host_aliases",
        check_host_aliases,
    )
    base_urls = dict.fromkeys([base_url, *senders.values()])
    return key_file, [*(base_url_host(url) for url in base_urls), *aliases.values()]


def run(args: argparse.Namespace) -> int:
    key_file, hosts = read_settings(args.config)
    keyring = load_keyring(key_file)
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
