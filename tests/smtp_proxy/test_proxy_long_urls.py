"""A destination URL longer than ``[tracking] max_url_length`` is relayed untracked,
end to end over real sockets (SMTP client → proxy → sink)."""

from __future__ import annotations

import email
from email import policy

from tests.support.proxy_helpers import ProxyLab, decode_links, html_message, smtp_client


async def test_a_60k_url_in_a_quoted_printable_part_stays_untracked(lab: ProxyLab) -> None:
    long_url = "https://example.com/landing?q=" + "a" * 60_000
    short_url = "https://example.com/short"
    html = (
        f'<html><body><a href="{long_url}">long</a> <a href="{short_url}">short</a></body></html>\n'
    )
    sink = await lab.sink()
    async with lab.proxy(lab.config(sink.url)) as proxy:
        async with smtp_client(proxy.port) as client:
            errors, _ = await client.sendmail(
                "news@example.com", ["reader@example.org"], html_message(html)
            )
    assert errors == {}
    (got,) = sink.messages
    # The short link is tracked; the long one is no token at all (it would have
    # compressed into a ~260-character link, each click storing the 60 KB URL).
    assert [url for url, *_ in decode_links(lab.keys, got.data)] == [short_url]
    body = email.message_from_bytes(got.data, policy=policy.default).get_content()
    assert f'href="{long_url}"' in body
