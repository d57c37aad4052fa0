"""What the proxy answers its SMTP clients: its own fixed replies, and upstream replies
passed on (made printable, 421 turned into 451, our queue id appended)."""

from __future__ import annotations

from smtp_proxy.upstream import Reply

REPLY_RELAY_AUTH = "530 5.7.0 Authentication required"
REPLY_RELAY_DENIED = "554 5.7.1 relay access denied"
REPLY_UPSTREAM_DOWN = "451 4.4.1 upstream unavailable, try again later"
REPLY_TOO_MANY_RCPTS = "452 4.5.3 Too many recipients"
REPLY_BARE_NEWLINE = "550 5.6.0 bare CR or LF not allowed"
REPLY_AUTH_BLOCKED = "421 4.7.0 Too many failed authentication attempts, try again later"
REPLY_AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
REPLY_INTERNAL = "451 4.3.0 internal error, try again later"
REPLY_SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
REPLY_NO_8BITMIME = "555 5.5.4 BODY=8BITMIME not supported by the next hop"
REPLY_NO_SMTPUTF8 = "550 5.6.7 SMTPUTF8 not supported by the next hop"


def format_reply(reply: Reply, queue_id: str | None = None) -> str:
    """An upstream reply as an SMTP status for aiosmtpd (multi-line joined with CRLF).

    Our queue id is appended to the last line. A 421 from the upstream ("closing
    connection") becomes 451: *our* connection to the client stays open.
    """
    code = reply.code if 200 <= reply.code <= 599 else 451
    if code == 421:
        code = 451
    lines = [line.strip() for line in reply.message.splitlines()] or [""]
    lines = [_printable(line) for line in lines]
    if queue_id:
        lines[-1] = f"{lines[-1]} (clickrelay id {queue_id})".lstrip()
    # _printable left no newline inside a line, so Reply splits them back as they are.
    return str(Reply(code, "\n".join(lines)))


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def with_queue_id(status: str, queue_id: str) -> str:
    """One of our own replies, naming the message it is about."""
    return f"{status} (clickrelay id {queue_id})"
