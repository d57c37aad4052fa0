"""One structured log line per event: ``event=name key=value …`` (logfmt).

logfmt keeps a line greppable by humans and parseable by Loki/Vector/journalctl
pipelines without a JSON dependency in the hot path.

Field values are often attacker-supplied (an SMTP user name, a user agent, a command
line), so every character that is not plainly printable is escaped: C0 and C1 controls
(ESC would drive the operator's terminal, VT/FF/U+0085 break lines in some viewers),
DEL, U+2028/U+2029, format characters such as bidi overrides (which reorder what the
operator reads), lone surrogates (which would not even encode to UTF-8) and any space
other than U+0020. A logged line is therefore always one line of printable text, and
:func:`parse_event` reads back exactly the fields that were written.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: Characters that make a value need quotes: separators, quote, backslash, and anything
#: not printable (``str.isprintable`` is False for Cc, Cf, Cs, Co, Cn, Zl, Zp and every
#: Zs but the plain space). Checked per character only when the fast test fails.
_NEEDS_QUOTES = frozenset(' "=\\')
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE = re.compile(r'[\\"]|[^ -~]')


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    if ch.isprintable():
        return ch  # printable non-ASCII (é, 日本) stays readable
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with backslash, quote and every non-printable character escaped."""
    return _UNSAFE.sub(_escape_char, text)


def _quote(value: Any) -> str:
    text = "" if value is None else str(value)
    if text and text.isprintable() and _NEEDS_QUOTES.isdisjoint(text):
        return text
    return f'"{escape(text)}"'


def format_event(event: str, **fields: Any) -> str:
    parts = [f"event={_quote(event)}"]
    parts.extend(f"{key}={_quote(value)}" for key, value in fields.items())
    return " ".join(parts)


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log one logfmt line; cheap when the level is disabled."""
    if logger.isEnabledFor(level):
        logger.log(level, format_event(event, **fields))


_PAIR = re.compile(r'([^ =]+)=(?:"((?:[^"\\]|\\.)*)"|([^ "]*))(?: |$)')
_UNESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8})|(.))")
_SHORT_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}


def _unescape_char(match: re.Match[str]) -> str:
    hex_code = match.group(1) or match.group(2) or match.group(3)
    if hex_code:
        return chr(int(hex_code, 16))
    return _SHORT_UNESCAPES[match.group(4)]


def parse_event(line: str) -> dict[str, str]:
    """The fields of a line :func:`format_event` wrote (for tests and log tooling).

    Raises ValueError for a line that is not such a line.
    """
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        match = _PAIR.match(line, pos)
        if match is None:
            raise ValueError(f"not a logfmt line at offset {pos}: {line!r}")
        key, quoted, bare = match.groups()
        fields[key] = _UNESCAPE.sub(_unescape_char, quoted) if quoted is not None else bare
        pos = match.end()
    return fields


class EscapingFilter(logging.Filter):
    """Escapes the message of every record it passes, for loggers we do not write
    ourselves (aiosmtpd's ``mail.log`` logs raw client input such as an unknown
    command): the record becomes one printable line, like our own events.

    Tracebacks (``exc_info``) are left alone: they come from our code paths, not from
    the client, and stay readable across lines.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log what we have, escaped
            message = f"{record.msg!r} % {record.args!r}"
        if not message.isprintable():
            message = escape(message)
        record.msg = message
        record.args = None
        return True
