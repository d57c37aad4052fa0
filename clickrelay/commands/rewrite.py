"""``clickrelay rewrite``: rewrite messages exactly as the proxy would, to test before sending.

One file (or ``-``/nothing: stdin) → the rewritten message on stdout. Several files →
``--outdir DIR`` gets one rewritten file per input (same name). ``--explain`` prints one
JSON object per link instead (keys: file, part, index, url, action, reason, tracked_url);
with ``--outdir`` the messages are written as well. A one-line summary per message goes
to stderr. The tracking base URL is chosen as the proxy chooses it (per-sender mapping by
the From header, else the default); the key file is created when it does not exist yet.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clickrelay.commands import add_config_argument
from clickrelay.common.errors import ClickrelayError
from clickrelay.config import config_from_cli
from redirector.tokens import ensure_key_file

if TYPE_CHECKING:
    from smtp_proxy.engine.rewriter import RewriteResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--explain", action="store_true", help="print one JSON object per link instead"
    )
    parser.add_argument("--outdir", metavar="DIR", help="write rewritten messages here")
    parser.add_argument("files", nargs="*", metavar="FILE", help="message files; - is stdin")


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise ClickrelayError(f"{name}: cannot read: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    files: list[str] = list(args.files) or ["-"]
    if files.count("-") > 1:
        raise ClickrelayError("stdin (-) can be given only once")
    outdir = Path(args.outdir) if args.outdir else None
    if len(files) > 1 and outdir is None and not args.explain:
        raise ClickrelayError("several files need --outdir DIR (or --explain)")
    # The file name each input is written under in --outdir.
    names = [("stdin.eml" if f == "-" else Path(f).name) for f in files]
    if outdir is not None:
        if len(set(names)) != len(names):
            raise ClickrelayError("--outdir: two inputs have the same file name")
        outdir.mkdir(parents=True, exist_ok=True)
    # Imported here: the CLI builds every command's parser, and the engine pulls in lxml.
    from smtp_proxy.engine.rewriter import rewrite_message
    from smtp_proxy.smtp.tracking import (
        load_dkim_keys,
        sender_base_url,
        tracking_settings,
        utm_values,
    )

    config = config_from_cli(args.config)
    keyring = ensure_key_file(config.tracking.key_file)
    dkim_keys = load_dkim_keys(config.dkim)
    for name, out_name in zip(files, names, strict=True):
        data = _read(name)
        base_url = sender_base_url(config, "", data)
        settings = tracking_settings(config, keyring, dkim_keys, base_url)
        queue_id = "rewrite-" + secrets.token_hex(5)
        utm = utm_values(config, "", data) or None
        result = rewrite_message(data, settings, queue_id=queue_id, utm_values=utm)
        label = "<stdin>" if name == "-" else name
        _summary(label, result)
        if args.explain:
            for link in result.links:
                record = {
                    "file": label,
                    "part": link.part,
                    "index": link.index,
                    "url": link.url,
                    "action": link.action,
                    "reason": link.reason,
                    "tracked_url": link.tracked_url,
                }
                print(json.dumps(record, ensure_ascii=False), flush=True)
        if outdir is not None:
            (outdir / out_name).write_bytes(result.data)
        elif not args.explain:
            sys.stdout.flush()
            sys.stdout.buffer.write(result.data)
            sys.stdout.buffer.flush()
    return 0


def _summary(label: str, result: RewriteResult) -> None:
    tracked = sum(link.action == "tracked" for link in result.links)
    traps = sum(link.action == "trap" for link in result.links)
    skipped = len(result.links) - tracked - traps
    notes = f" ({', '.join(result.notes)})" if result.notes else ""
    trap_note = f", {traps} trap link{'s' if traps != 1 else ''}" if traps else ""
    print(
        f"{label}: {result.reason}: {tracked} tracked, {skipped} skipped{trap_note}{notes}",
        file=sys.stderr,
    )
