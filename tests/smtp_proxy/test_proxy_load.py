"""Load: 20 concurrent clients × 50 corpus newsletters each through the rewriting proxy.

Every message must arrive exactly once, and be exactly what the rewriting engine itself
produces for that message, queue id (taken from the proxy's reply) and recipient. Link
tokens are sealed with a random nonce, so two rewrites of one message differ only inside
the tokens: both sides are compared after replacing each token by what it decodes to
(URL, queue id, link index, recipient), and their raw lengths must be equal too.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import aiosmtplib

from redirector.hosts import base_url_host
from redirector.tokens import Keyring
from smtp_proxy.engine.rewriter import rewrite_message
from smtp_proxy.smtp.tracking import tracking_settings
from tests.support.config import BASE_URL, proxy_config
from tests.support.corpus import corpus_html_files
from tests.support.proxy_helpers import QID_RE, TOKEN_RE, html_message, running_proxy
from tests.support.smtp_sink import SinkFactory

CLIENTS = 20
MESSAGES_PER_CLIENT = 50
MESSAGE_ID_RE = re.compile(rb"^Message-ID: (<[^>\r\n]+>)", re.M | re.I)


def canonical(keyring: Keyring, data: bytes) -> bytes:
    """QP soft line breaks removed and every token replaced by its decoded contents."""
    text = data.replace(b"=\r\n", b"").decode("utf-8", "surrogateescape")

    def decoded(match: re.Match[str]) -> str:
        link = keyring.open(match.group(1), base_url_host(BASE_URL))
        return f"<{link.url}|{link.queue_id}|{link.link_index}|{link.recipient}>"

    return TOKEN_RE.sub(decoded, text).encode("utf-8", "surrogateescape")


async def test_concurrent_clients_every_message_once_and_byte_exact(
    tmp_path: Path,
    key_file: Path,
    keys: Keyring,
    smtp_sink_factory: SinkFactory,
    corpus: Path,
) -> None:
    files = corpus_html_files()
    assert files, "corpus has no HTML files"
    htmls = [f.read_text("utf-8", "replace") for f in files]
    sink = await smtp_sink_factory()
    config = proxy_config(
        tmp_path, sink.url, key_file, upstream={"pool_size": 8}, max_connections=CLIENTS + 5
    )
    originals: dict[str, bytes] = {}
    recipients: dict[str, str] = {}
    queue_ids: dict[str, str] = {}

    async def client(number: int) -> None:
        rcpt = f"reader{number}@example.org"
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=proxy.port, timeout=120) as smtp:
            for i in range(MESSAGES_PER_CLIENT):
                message_id = f"<load-{number}-{i}@example.com>"
                html = htmls[(number * MESSAGES_PER_CLIENT + i) % len(htmls)]
                data = html_message(html, to=rcpt, message_id=message_id, subject=f"n{i}")
                originals[message_id] = data
                recipients[message_id] = rcpt
                errors, text = await smtp.sendmail("news@example.com", [rcpt], data)
                assert errors == {}
                match = QID_RE.search(text)
                assert match, text
                queue_ids[message_id] = match.group(1)

    async with running_proxy(config, keys) as proxy:
        async with asyncio.timeout(280):
            await asyncio.gather(*(client(n) for n in range(CLIENTS)))

    total = CLIENTS * MESSAGES_PER_CLIENT
    assert len(sink.messages) == total
    seen: Counter[str] = Counter()
    for message in sink.messages:
        match = MESSAGE_ID_RE.search(message.data)
        assert match, message.data[:200]
        seen[match.group(1).decode()] += 1
    assert set(seen) == set(originals)
    assert set(seen.values()) == {1}
    assert len(set(queue_ids.values())) == total

    settings = tracking_settings(config, keys, {})
    rewritten = 0
    for message in sink.messages:
        match = MESSAGE_ID_RE.search(message.data)
        assert match
        message_id = match.group(1).decode()
        assert message.rcpt_tos == [recipients[message_id]]
        assert message.mail_from == "news@example.com"
        expected = rewrite_message(
            originals[message_id],
            settings,
            queue_id=queue_ids[message_id],
            recipient=recipients[message_id],
        )
        assert len(message.data) == len(expected.data), message_id
        assert canonical(keys, message.data) == canonical(keys, expected.data), message_id
        rewritten += expected.changed
    # The corpus is newsletters: most of them must actually have been rewritten.
    assert rewritten > total // 2
