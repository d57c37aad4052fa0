"""Upstream replies as the proxy passes them on, and our own replies naming a message."""

from __future__ import annotations

from smtp_proxy.smtp.replies import REPLY_UPSTREAM_DOWN, format_reply, with_queue_id
from smtp_proxy.upstream import Reply


def test_format_reply() -> None:
    assert format_reply(Reply(250, "2.0.0 Ok: queued as 7"), "q1") == (
        "250 2.0.0 Ok: queued as 7 (clickrelay id q1)"
    )
    assert format_reply(Reply(550, "5.1.1 no\n5.1.1 such user")) == (
        "550-5.1.1 no\r\n550 5.1.1 such user"
    )
    # 421 would tell our client we are closing: it becomes 451; junk codes too.
    assert format_reply(Reply(421, "4.3.2 bye")).startswith("451 4.3.2 bye")
    assert format_reply(Reply(999, "odd")).startswith("451 ")
    assert format_reply(Reply(250, "ok\x00\x1b[31m")) == "250 ok??[31m"
    assert format_reply(Reply(250, "")) == "250"


def test_queue_id_on_a_multi_line_reply_goes_on_the_last_line() -> None:
    assert format_reply(Reply(250, "first\nlast"), "q2") == (
        "250-first\r\n250 last (clickrelay id q2)"
    )
    assert format_reply(Reply(250, ""), "q3") == "250 (clickrelay id q3)"


def test_with_queue_id() -> None:
    assert with_queue_id(REPLY_UPSTREAM_DOWN, "q4") == (
        "451 4.4.1 upstream unavailable, try again later (clickrelay id q4)"
    )
