"""The Standard Webhooks wire format of one click (pure).

Headers: ``webhook-id`` (the click id: a receiver deduplicates on it), ``webhook-timestamp``
(unix seconds of this attempt), ``webhook-signature: v1,<base64 HMAC-SHA256>`` of
``<id>.<timestamp>.<body>`` keyed with the secret's bytes. Body::

    {"type": "click", "timestamp": "<click time>",
     "data": {"click_id", "url", "queue_id", "link_index", "recipient", "tag", "metadata",
              "classification", "reason", "settled", "user_agent", "ip", "sent_at",
              "clicked_at"}}

``settled`` is true when the label is final (the default ``settled_only`` endpoints get
nothing else); false when an endpoint with ``settled_only = false`` got the click before
the walk rules had their last word, so a ``human`` may still turn out a scanner.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from redirector.store.records import StoredClick
from redirector.store.stats import iso

#: Longest back-off between two attempts (seconds).
MAX_DELAY = 3600.0


def click_payload(click: StoredClick, *, settled: bool) -> dict[str, Any]:
    return {
        "type": "click",
        "timestamp": iso(click.time),
        "data": {
            "click_id": click.id,
            "url": click.url,
            "queue_id": click.queue_id,
            "link_index": click.link_index,
            "recipient": click.recipient,
            "tag": click.tag,
            "metadata": dict(click.metadata) if click.metadata else {},
            "classification": click.classification,
            "reason": click.reason,
            "settled": settled,
            "user_agent": click.user_agent,
            "ip": click.client_ip,
            "sent_at": iso(click.sent_at) if click.sent_at else None,
            "clicked_at": iso(click.time),
        },
    }


def body_bytes(click: StoredClick, *, settled: bool) -> bytes:
    return json.dumps(
        click_payload(click, settled=settled), ensure_ascii=False, separators=(",", ":")
    ).encode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signed_headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }


def retry_delay(first: float, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: doubling, capped."""
    return min(first * 2 ** max(attempts - 1, 0), MAX_DELAY) if attempts < 64 else MAX_DELAY


def gives_up(
    *, attempts: int, max_attempts: int, enqueued_at: float, retry_for: float, now: float
) -> bool:
    """Whether the retry budget is spent after ``attempts`` failed attempts."""
    if max_attempts and attempts >= max_attempts:
        return True
    return now - enqueued_at >= retry_for
