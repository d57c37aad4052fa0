"""Link token lengths: version 1 (base64url) against version 2 (base36, host-bound).

    python bench/token_length.py

1. What each part of a token costs in characters for a typical link (a 40-character
   destination, one recipient, one of our queue ids), in both versions.
2. Over the corpus (``$CLICKRELAY_CORPUS``: messages in ``eml/``, HTML templates in
   ``html/`` wrapped as messages): every message is rewritten once minting version 1 and
   once minting version 2 (same base URL, queue id and recipient); printed are the
   token and tracked-URL lengths (mean, p50, p95, max) and, for plain-text parts, the
   share of lines holding a tracked link that stay under 78 characters (RFC 5322's
   recommended line length).

Deterministic apart from the random nonces, which do not change lengths.
"""

from __future__ import annotations

import email
import email.policy
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus_mail import corpus_dir, wrap  # noqa: E402
from clickrelay.config import load_config_text  # noqa: E402
from redirector import base36, token_v2  # noqa: E402
from redirector.tokens import Keyring, new_key_line, parse_keys  # noqa: E402
from smtp_proxy.engine.rewriter import rewrite_message  # noqa: E402
from smtp_proxy.smtp.queue_id import new_queue_id  # noqa: E402
from smtp_proxy.smtp.tracking import tracking_settings  # noqa: E402

BASE_URL = "https://links.example.com"
HOST = "links.example.com"
URL_40 = "https://shop.example.com/sale/shoes?id=7"
#: Neither in the DEFLATE dictionary nor sharing a domain with the URL: no free matches.
RECIPIENT = "jane.doe@mailbox.org"
#: Now: the proxy mints a queue id when a message arrives and seals its links then.
SENT_AT = int(time.time())
SENT_AT_DT = datetime.fromtimestamp(SENT_AT, UTC)
LINE_LIMIT = 78
B64_PER_BYTE = 4 / 3
B36_PER_BYTE = 8 / math.log2(36)


class V1Keyring(Keyring):
    """Mints version 1 tokens (the code path before version 2), for the comparison."""

    def seal(  # type: ignore[override]
        self, url: str, *, host: str, extras: bytes = b"", trap: bool = False, **fields: Any
    ) -> str:
        """What :meth:`Keyring.seal` gets, minus what version 1 cannot carry: the host
        binding, extras and the trap flag (this bench mints neither)."""
        return self.seal_v1(url, **fields)


def parts_table(keyring: Keyring) -> None:
    qid = new_queue_id()
    v1 = keyring.seal_v1(URL_40, queue_id=qid, link_index=3, recipient=RECIPIENT, sent_at=SENT_AT)
    v2 = keyring.seal(
        URL_40, host=HOST, queue_id=qid, link_index=3, recipient=RECIPIENT, sent_at=SENT_AT
    )
    raw2 = base36.decode(v2[1:])
    # v2 plaintext: flags, link index (1 byte here), packed queue id, send time relative
    # to the queue id's own time (1 byte when within a minute), then the packed body.
    fixed2 = 1 + 1 + 9 + 1
    body2 = len(raw2) - token_v2.HEADER_LEN - token_v2.NONCE_LEN - token_v2.TAG_LEN - fixed2
    rows: list[tuple[str, float, float]] = [
        ("version", 1, 0),  # v2: the leading "k" (one character, in the total)
        ("key id / key hint", 4, 1),
        ("host tag", 0, 1),
        ("nonce", 12, 12),
        ("AEAD tag", 16, 16),
        ("flags", 1, 1),
        ("send time", 4, 1),
        ("link index", 4, 1),
        ("queue id (+ length)", 1 + len(qid), 9),
        ("recipient (+ length)", 2 + len(RECIPIENT), math.nan),
        ("URL", len(URL_40), math.nan),
        ("recipient + URL, packed", math.nan, body2),
    ]
    print(
        f"typical link: {len(URL_40)}-char destination {URL_40!r}, recipient {RECIPIENT!r},"
        f" queue id {qid!r}"
    )
    print(f"{'part':28} {'v1 bytes':>9} {'v1 chars':>9} {'v2 bytes':>9} {'v2 chars':>9}")
    for name, b1, b2 in rows:
        c1 = b1 * B64_PER_BYTE
        c2 = b2 * B36_PER_BYTE
        print(f"{name:28} {_num(b1):>9} {_num(c1):>9} {_num(b2):>9} {_num(c2):>9}")
    print(
        f"{'token':28} {'':>9} {len(v1):>9} {'':>9} {len(v2):>9}"
        f"   (v2: 'k' + base36 of {len(raw2)} bytes)"
    )
    print(
        f"tracked URL {BASE_URL}/c/…: v1 {len(BASE_URL) + 3 + len(v1)} chars,"
        f" v2 {len(BASE_URL) + 3 + len(v2)} chars"
    )
    print(
        f"the same {len(raw2)} bytes in base62 (case-sensitive, decoded in Python) would be"
        f" {1 + math.ceil(len(raw2) * 8 / math.log2(62))} chars; nonce + AEAD tag alone are"
        f" {base36.encoded_length(28)} base36 chars"
    )


def _num(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def stats(values: Sequence[int]) -> str:
    ordered = sorted(values)
    p50 = ordered[len(ordered) // 2]
    p95 = ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.95) - 1)]
    mean = statistics.fmean(ordered)
    return f"mean {mean:6.1f}  p50 {p50:4d}  p95 {p95:4d}  max {ordered[-1]:5d}"


def plain_lines(message: bytes) -> list[str]:
    """Lines of the text/plain parts (decoded) that hold a tracked link."""
    msg = email.message_from_bytes(message, policy=email.policy.compat32)
    lines: list[str] = []
    for part in msg.walk():
        if part.get_content_type() != "text/plain" or part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            text = payload.decode(part.get_content_charset() or "utf-8", "replace")
        except LookupError:
            text = payload.decode("latin-1")
        lines += [line for line in text.splitlines() if BASE_URL + "/c/" in line]
    return lines


def corpus_table(keyring: Keyring) -> None:
    corpus = corpus_dir()
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    config = load_config_text(f'[tracking]\nbase_url = "{BASE_URL}"\n', base_dir=tmp)
    messages = [p.read_bytes() for p in sorted(corpus.glob("eml/**/*.eml"))]
    for path in sorted(corpus.glob("html/**/*.html")):
        messages.append(wrap(path.read_bytes(), "8bit"))
    v1_ring = V1Keyring(keyring.keys)
    tokens: dict[str, list[int]] = {"v1": [], "v2": []}
    urls: dict[str, list[int]] = {"v1": [], "v2": []}
    lines: dict[str, list[int]] = {"v1": [], "v2": []}
    qid = new_queue_id()
    for message in messages:
        for name, ring in (("v1", v1_ring), ("v2", keyring)):
            settings = tracking_settings(config, ring, {})
            result = rewrite_message(
                message, settings, queue_id=qid, recipient=RECIPIENT, sent_at=SENT_AT_DT
            )
            for decision in result.links:
                if decision.tracked_url is not None:
                    urls[name].append(len(decision.tracked_url))
                    tokens[name].append(len(decision.tracked_url.rsplit("/c/", 1)[1]))
            lines[name] += [len(line) for line in plain_lines(result.data)]
    print(
        f"corpus: {len(messages)} messages, {len(tokens['v2'])} tracked links"
        f" (base URL {BASE_URL}, recipient {RECIPIENT!r})"
    )
    for name in ("v1", "v2"):
        print(f"  {name} token length        {stats(tokens[name])}")
    for name in ("v1", "v2"):
        print(f"  {name} tracked URL length  {stats(urls[name])}")
    ratio = statistics.fmean(tokens["v2"]) / statistics.fmean(tokens["v1"])
    print(f"  v2/v1 mean token length: {ratio:.2f}")
    for name in ("v1", "v2"):
        found = lines[name]
        short = sum(n <= LINE_LIMIT for n in found)
        share = short / len(found) if found else math.nan
        print(
            f"  {name} plain-text lines with a tracked link: {len(found)},"
            f" <= {LINE_LIMIT} chars: {short} ({share:.0%})"
        )


def main() -> int:
    keyring = parse_keys(new_key_line())
    parts_table(keyring)
    print()
    corpus_table(keyring)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
