"""logfmt lines: one printable line per event whatever the field values hold."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from clickrelay.common.logfmt import EscapingFilter, escape, format_event, parse_event

#: Every character that breaks a line or drives a terminal, named in the threat model.
HOSTILE = "\x00\x07\x08\t\n\x0b\x0c\r\x1b\x1c\x1d\x1e\x1f\x7f\x80\x85\x9b\u2028\u2029\u202e\ufeff"

#: Line breaks as str.splitlines() sees them (journald, Python tools, many viewers).
_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def assert_one_clean_line(line: str) -> None:
    assert len(line.splitlines()) <= 1, line
    assert not any(c in _BREAKS for c in line), repr(line)
    assert all(c.isprintable() for c in line), repr(line)


def test_hostile_characters_are_all_escaped() -> None:
    line = format_event("auth-failed", user=f"a{HOSTILE}b", client="127.0.0.1")
    assert_one_clean_line(line)
    assert "\\x1b" in line and "\\u2028" in line and "\\x85" in line and "\\x0b" in line
    assert parse_event(line) == {
        "event": "auth-failed",
        "user": f"a{HOSTILE}b",
        "client": "127.0.0.1",
    }


def test_lone_surrogates_are_escaped_not_a_crash_of_the_log_handler() -> None:
    # "surrogateescape" turns undecodable client bytes into lone surrogates, which would
    # not even encode to UTF-8 on stderr.
    line = format_event("x", user="a\udcff\ud800b")
    assert line == 'event=x user="a\\udcff\\ud800b"'
    line.encode("utf-8")
    assert parse_event(line)["user"] == "a\udcff\ud800b"


def test_plain_values_stay_bare_and_readable() -> None:
    assert format_event("x", a="abc", b="é日本", c=3) == "event=x a=abc b=é日本 c=3"
    assert format_event("x", a="", b=None, c="a b") == 'event=x a="" b="" c="a b"'


@given(
    st.text(),
    st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), st.text(), max_size=4),
)
def test_any_text_is_one_printable_line_that_reads_back(event: str, fields: dict[str, str]) -> None:
    fields.pop("event", None)
    line = format_event(event, **fields)
    assert_one_clean_line(line)
    assert parse_event(line) == {"event": event, **fields}


@given(st.text())
def test_escape_leaves_no_unprintable_character(text: str) -> None:
    assert_one_clean_line(escape(text))


def test_filter_escapes_a_foreign_record() -> None:
    record = logging.LogRecord(
        "mail.log",
        logging.WARNING,
        __file__,
        1,
        "%r unrecognised: %s",
        ("peer", "FOO\rBAR\x1b"),
        None,
    )
    assert EscapingFilter().filter(record)
    message = record.getMessage()
    assert_one_clean_line(message)
    assert "FOO\\rBAR\\x1b" in message
