"""Tags and metadata end to end: each ESP's headers through the real proxy to a sink.

Upstream, the tag headers are gone and every other byte of the header block is as sent;
every tracked link's token carries the tag and metadata, and a click on one reaches the
application's webhook receiver with them.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import aiohttp
import pytest

from redirector.config import RedirectorConfig
from redirector.service import RedirectorService
from redirector.tokens import Keyring
from redirector.webhooks.config import WebhookConfig
from tests.support.polling import until
from tests.support.proxy_helpers import (
    SIMPLE_HTML,
    TOKEN_RE,
    ProxyLab,
    html_message,
    smtp_client,
)
from tests.support.webhook_receiver import WebhookReceiver, new_secret

META = {"user_id": "42", "campaign": "spring"}

#: (name, headers to add, expected tag, expected metadata)
ESP_FORMATS = [
    (
        "clickrelay",
        [
            "X-Clickrelay-Tag: spring-sale",
            'X-Clickrelay-Metadata: {"user_id": "42", "campaign": "spring"}',
        ],
        "spring-sale",
        META,
    ),
    (
        "mailgun",
        [
            "X-Mailgun-Tag: spring-sale",
            'X-Mailgun-Variables: {"user_id": "42",\r\n "campaign": "spring"}',
        ],
        "spring-sale",
        META,
    ),
    (
        "postmark",
        ["X-PM-Tag: spring-sale", "X-PM-Metadata-user_id: 42", "X-PM-Metadata-campaign: spring"],
        "spring-sale",
        META,
    ),
    ("ses", ["X-SES-MESSAGE-TAGS: user_id=42, campaign=spring"], None, META),
    (
        "sendgrid",
        [
            'X-SMTPAPI: {"category": ["spring-sale"], "unique_args":'
            ' {"user_id": "42", "campaign": "spring"}}'
        ],
        "spring-sale",
        META,
    ),
]


def tagged(message: bytes, headers: list[str]) -> bytes:
    return "".join(h + "\r\n" for h in headers).encode() + message


def tokens_of(keyring: Keyring, data: bytes) -> list[tuple[str | None, dict[str, str] | None]]:
    text = data.replace(b"=\r\n", b"").decode("ascii", "replace")
    out = []
    for token in TOKEN_RE.findall(text):
        link = keyring.open(token, "127.0.0.1")
        out.append((link.tag, dict(link.metadata) if link.metadata else None))
    return out


@pytest.mark.parametrize(("esp", "headers", "tag", "metadata"), ESP_FORMATS)
async def test_esp_headers_are_sealed_into_links_and_removed(
    lab: ProxyLab, esp: str, headers: list[str], tag: str | None, metadata: dict[str, str]
) -> None:
    sink = await lab.sink()
    plain = html_message(SIMPLE_HTML)
    async with lab.proxy(lab.config(sink.url)) as proxy:
        async with smtp_client(proxy.port) as client:
            await client.sendmail(
                "news@example.com", ["reader@example.org"], tagged(plain, headers)
            )
    got = sink.messages[0].data
    head = got.split(b"\r\n\r\n", 1)[0]
    # The tag headers are gone; the rest of the header block is byte-identical.
    assert head == plain.split(b"\r\n\r\n", 1)[0]
    assert tokens_of(lab.keys, got) == [(tag, metadata)] * 2


@pytest.mark.parametrize(
    "switch",
    [
        "X-Mailgun-Track-Clicks: no",
        "X-PM-TrackLinks: None",
        'X-SMTPAPI: {"filters": {"clicktrack": {"settings": {"enable": 0}}}}',
        "X-Clickrelay-Track: off",
    ],
)
async def test_esp_click_tracking_switch_leaves_links_alone(lab: ProxyLab, switch: str) -> None:
    sink = await lab.sink()
    plain = html_message(SIMPLE_HTML)
    async with lab.proxy(lab.config(sink.url)) as proxy:
        async with smtp_client(proxy.port) as client:
            await client.sendmail(
                "news@example.com",
                ["reader@example.org"],
                tagged(plain, [switch, "X-Clickrelay-Tag: t"]),
            )
    assert sink.messages[0].data == plain  # links untouched, switch and tag headers gone


#: About 4.5 KB of random hex (tokens compress: it must not), folded over lines: past
#: the 2048-character link budget.
BIG_METADATA = "{" + ",\r\n ".join(f'"k{i}": "{secrets.token_hex(32)}"' for i in range(60)) + "}"


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ('{"user_id": {"nested": 1}}', "metadata-invalid"),
        (BIG_METADATA, "metadata-too-large"),  # never truncated: untracked instead
    ],
)
async def test_unusable_metadata_relays_untracked_with_reason(
    lab: ProxyLab, caplog: pytest.LogCaptureFixture, metadata: str, reason: str
) -> None:
    sink = await lab.sink()
    plain = html_message(SIMPLE_HTML)
    caplog.set_level(logging.INFO, logger="clickrelay.proxy")
    async with lab.proxy(lab.config(sink.url)) as proxy:
        async with smtp_client(proxy.port) as client:
            await client.sendmail(
                "news@example.com",
                ["reader@example.org"],
                tagged(plain, [f"X-Clickrelay-Metadata: {metadata}"]),
            )
    assert sink.messages[0].data == plain
    assert any(
        "event=message" in r.getMessage() and f"rewrite={reason}" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize(("esp", "headers", "tag", "metadata"), ESP_FORMATS)
async def test_esp_headers_reach_the_application_in_the_click_webhook(
    lab: ProxyLab,
    tmp_path: Path,
    esp: str,
    headers: list[str],
    tag: str | None,
    metadata: dict[str, str],
) -> None:
    """Mail with an ESP's headers through the proxy, its link clicked on a redirector,
    the click POSTed to a receiver that verifies it with ``standardwebhooks``."""
    receiver = WebhookReceiver(new_secret())
    await receiver.start()
    sink = await lab.sink()
    redirector = RedirectorService(
        RedirectorConfig(
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            store=f"sqlite:{tmp_path / 'clicks.sqlite3'}",
            flush_interval=0.02,
            bot_seconds_after_send=0,  # the click follows the sending at once
        ),
        lab.keys,
        # settled_only=False: the test is about the tags, sent as soon as committed.
        webhooks=(WebhookConfig(url=receiver.url, secret=receiver.secret, settled_only=False),),
    )
    await redirector.start()
    try:
        async with lab.proxy(lab.config(sink.url)) as proxy:
            async with smtp_client(proxy.port) as client:
                await client.sendmail(
                    "news@example.com",
                    ["reader@example.org"],
                    tagged(html_message(SIMPLE_HTML), headers),
                )
        token = TOKEN_RE.findall(sink.messages[0].data.replace(b"=\r\n", b"").decode())[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"http://127.0.0.1:{redirector.public_port}/c/{token}",
                allow_redirects=False,
                headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"},
            ) as resp:
                assert resp.status == 302
        await until(lambda: len(receiver.deliveries) == 1, "the click's webhook")
        (payloads,) = receiver.deliveries.values()
        data = payloads[0]["data"]
        assert (data["tag"], data["metadata"]) == (tag, metadata)
        assert data["recipient"] == "reader@example.org"
        assert data["url"] == "https://shop.example.net/sale?id=1&x=2"
        assert receiver.rejected == []
    finally:
        await redirector.stop()
        await receiver.stop()
