"""The Standard Webhooks wire format, checked by the specification's reference library."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from clickrelay.common.errors import ConfigError
from clickrelay.config import load_config_text
from redirector.store.records import StoredClick
from redirector.webhooks.config import WebhookConfig, secret_bytes
from redirector.webhooks.payload import body_bytes, gives_up, retry_delay, signed_headers
from tests.support.webhook_receiver import new_secret

CLICK = StoredClick(
    seq=1,
    id="ab" * 16,
    time=datetime(2026, 11, 1, 12, 0, 5, tzinfo=UTC),
    queue_id="Q1",
    link_index=2,
    url="https://example.com/x",
    recipient="reader@example.org",
    client_ip="192.0.2.0",
    user_agent="Mozilla/5.0",
    method="GET",
    classification="human",
    reason=None,
    tag="spring",
    metadata={"user_id": "42"},
    sent_at=datetime(2026, 11, 1, 11, 0, tzinfo=UTC),
)


def test_signature_verifies_with_the_reference_library() -> None:
    secret = new_secret()
    body = body_bytes(CLICK, settled=True)
    now = int(datetime.now(UTC).timestamp())
    headers = signed_headers(secret_bytes(secret), CLICK.id, now, body)
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "click"
    assert payload["data"] == {
        "click_id": CLICK.id,
        "url": "https://example.com/x",
        "queue_id": "Q1",
        "link_index": 2,
        "recipient": "reader@example.org",
        "tag": "spring",
        "metadata": {"user_id": "42"},
        "classification": "human",
        "reason": None,
        "settled": True,
        "user_agent": "Mozilla/5.0",
        "ip": "192.0.2.0",
        "sent_at": "2026-11-01T11:00:00Z",
        "clicked_at": "2026-11-01T12:00:05Z",
    }
    # A changed body or another secret fails verification.
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"Q1", b"Q2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    json.loads(body)
    # Sent before the label was final (settled_only = false): the receiver can tell.
    early = body_bytes(CLICK, settled=False)
    assert json.loads(early)["data"]["settled"] is False


def test_back_off_doubles_and_budget_ends() -> None:
    assert [retry_delay(5, n) for n in (1, 2, 3)] == [5, 10, 20]
    assert retry_delay(5, 1000) == 3600
    assert gives_up(attempts=3, max_attempts=3, enqueued_at=0, retry_for=99, now=1)
    assert not gives_up(attempts=2, max_attempts=3, enqueued_at=0, retry_for=99, now=1)
    assert gives_up(attempts=1, max_attempts=0, enqueued_at=0, retry_for=10, now=10)


def _config(url: str, extra: str = "", secret: str | None = None) -> str:
    return f'[[webhooks]]\nurl = "{url}"\nsecret = "{secret or new_secret()}"\n{extra}\n'


def test_config_refuses_http_to_a_remote_host_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="allow_insecure"):
        load_config_text(_config("http://hooks.example.com/x"))
    cfg = load_config_text(_config("http://hooks.example.com/x", "allow_insecure = true"))
    assert cfg.webhooks[0].key == "hooks.example.com/x"
    assert load_config_text(_config("http://127.0.0.1:9/x")).webhooks[0].url.startswith("http:")
    assert load_config_text(_config("https://hooks.example.com/x")).webhooks


@pytest.mark.parametrize(
    ("url", "secret", "match"),
    [
        ("ftp://example.com/x", None, "http"),
        ("https://u:p@example.com/x", None, "user:password"),
        ("https://example.com/x", "nothex", "whsec_"),
        ("https://example.com/x", "whsec_%%%", "base64"),
        ("https://example.com/x", "whsec_AAAA", "24 to 64"),
    ],
)
def test_config_refuses_bad_urls_and_secrets(url: str, secret: str | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config_text(_config(url, secret=secret))


def test_two_endpoints_with_one_name_are_refused() -> None:
    text = _config("https://a.example/x") + _config("https://a.example/x")
    with pytest.raises(ConfigError, match="named"):
        load_config_text(text)
    WebhookConfig(url="https://a.example/x", secret=new_secret())
