"""Pure tests of bare CR/LF detection and normalisation, and of the relay policy helpers.

The end-to-end smuggling tests (raw sockets through the proxy to a sink) are in
tests/smtp_proxy/smtp/test_proxy_security.py.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_proxy.engine.newlines import find_bare_newline, has_bare_newline, normalize_newlines
from smtp_proxy.smtp.relay_policy import (
    AuthFailureLimiter,
    RelayPolicy,
    is_loopback,
    limiter_key,
    parse_address,
    peer_host,
)

# --- smuggling ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b"", -1),
        (b"Subject: x\r\n\r\nbody\r\n", -1),
        (b"a\nb\r\n", 1),
        (b"a\rb\r\n", 1),
        (b"body\r\n\n.\nMAIL FROM:<x@y>\r\n", 6),  # \n.\n after a good line
        (b"body\r\r\n", 4),  # CR CR LF: the first CR is bare
        (b"body\r\n\r.\rMAIL\r\n", 6),  # \r.\r
        (b"x\n.\r\n", 1),  # \n.\r\n
        (b"x\r\n.\nMAIL\r\n", 4),  # \r\n.\n
        (b"ends with bare cr\r", 17),
        (b"\nstarts with bare lf\r\n", 0),
    ],
)
def test_find_bare_newline(data: bytes, offset: int) -> None:
    assert find_bare_newline(data) == offset
    assert has_bare_newline(data) is (offset >= 0)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\r\n", b"a\r\nb\r\n"),
        (b"a\rb\r\n", b"a\r\nb\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb"),
        (b"a\n\rb", b"a\r\n\r\nb"),  # LF then CR: two bare endings, not one CRLF
        (b"x\r\n.\nMAIL FROM:<a@b>\r\n", b"x\r\n.\r\nMAIL FROM:<a@b>\r\n"),
    ],
)
def test_normalize_newlines(data: bytes, expected: bytes) -> None:
    assert normalize_newlines(data) == expected


def test_normalize_returns_clean_input_itself() -> None:
    data = b"Subject: x\r\n\r\nclean\r\n"
    assert normalize_newlines(data) is data


_line_bytes = st.binary(max_size=200)


@settings(max_examples=200, deadline=None)
@given(_line_bytes)
def test_normalized_output_has_no_bare_newlines(data: bytes) -> None:
    out = normalize_newlines(data)
    assert not has_bare_newline(out)
    assert find_bare_newline(out) == -1
    # Only line endings change: the non-newline bytes are the same, in the same order.
    assert out.replace(b"\r", b"").replace(b"\n", b"") == data.replace(b"\r", b"").replace(
        b"\n", b""
    )
    # Idempotent.
    assert normalize_newlines(out) == out


@settings(max_examples=200, deadline=None)
@given(_line_bytes)
def test_detection_matches_a_naive_scan(data: bytes) -> None:
    naive = -1
    for i, byte in enumerate(data):
        if byte == 0x0D and data[i + 1 : i + 2] != b"\n":
            naive = i
            break
        if byte == 0x0A and (i == 0 or data[i - 1] != 0x0D):
            naive = i
            break
    assert find_bare_newline(data) == naive


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))))
def test_crlf_lines_are_clean(lines: list[bytes]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    assert find_bare_newline(data) == -1
    assert normalize_newlines(data) is data


def test_normalized_smuggling_payload_keeps_one_message_worth_of_lines() -> None:
    payload = b"Subject: a\r\n\r\nhello\n.\nMAIL FROM:<evil@x>\nRCPT TO:<v@y>\nDATA\nevil\r\n"
    out = normalize_newlines(payload)
    assert re.findall(rb"(?<!\r)\n|\r(?!\n)", out) == []
    assert out.count(b"\r\n") == payload.count(b"\n")


# --- relay policy -------------------------------------------------------------------------


def test_trusted_networks() -> None:
    policy = RelayPolicy.from_networks(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])
    assert policy.is_trusted("127.0.0.1")
    assert not policy.is_trusted("127.0.0.2")
    assert policy.is_trusted("10.200.3.4")
    assert policy.is_trusted("::ffff:10.1.2.3")  # IPv4-mapped IPv6 counts as IPv4
    assert policy.is_trusted("fd12::1")
    assert policy.is_trusted("fd12::1%eth0")
    assert not policy.is_trusted("fe80::1")
    assert not policy.is_trusted(None)
    assert not policy.is_trusted("")
    assert not policy.is_trusted("not-an-ip")
    assert not RelayPolicy.from_networks([]).is_trusted("127.0.0.1")


def test_peer_helpers() -> None:
    assert peer_host(("127.0.0.1", 2525)) == "127.0.0.1"
    assert peer_host(("::1", 25, 0, 0)) == "::1"
    assert peer_host(None) is None
    assert peer_host("/run/sock") is None
    assert is_loopback("127.0.0.5")
    assert is_loopback("::1")
    assert not is_loopback("192.0.2.1")
    assert not is_loopback(None)
    assert parse_address("garbage") is None
    assert limiter_key("192.0.2.7") == "192.0.2.7"
    assert limiter_key("2001:db8:1:2:aaaa::1") == limiter_key("2001:db8:1:2:bbbb::9")
    assert limiter_key("2001:db8:1:2::1") != limiter_key("2001:db8:1:3::1")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_auth_limiter_blocks_at_limit_and_recovers() -> None:
    clock = FakeClock()
    limiter = AuthFailureLimiter(3, 60.0, clock=clock)
    assert not limiter.blocked("a")
    assert limiter.record_failure("a") is False
    clock.now += 10
    assert limiter.record_failure("a") is False
    assert not limiter.blocked("a")
    clock.now += 10
    assert limiter.record_failure("a") is True
    assert limiter.blocked("a")
    assert not limiter.blocked("b")  # per client
    clock.now += 41  # the first failure (t=1000) is now 61 s old
    assert not limiter.blocked("a")
    assert limiter.failures("a") == 2
    clock.now += 100
    assert limiter.failures("a") == 0


def test_auth_limiter_memory_is_bounded() -> None:
    limiter = AuthFailureLimiter(2, 60.0, clock=FakeClock(), max_keys=10)
    for i in range(100):
        limiter.record_failure(f"10.0.0.{i}")
        limiter.record_failure(f"10.0.0.{i}")
    assert limiter.blocked("10.0.0.99")
    assert not limiter.blocked("10.0.0.0")  # forgotten, oldest first
    assert len(limiter._failures) == 10


def test_auth_limiter_reconfigure() -> None:
    limiter = AuthFailureLimiter(5, 60.0, clock=FakeClock())
    limiter.record_failure("k")
    limiter.record_failure("k")
    assert not limiter.blocked("k")
    limiter.reconfigure(2, 60.0)
    assert limiter.blocked("k")


# --- small pure helpers of the handler ----------------------------------------------------


def test_queue_ids_are_short_unique_and_time_ordered() -> None:
    from smtp_proxy.smtp.server import new_queue_id

    # Many ids per millisecond: a random-only low part collided here about once in
    # 25 runs at 5000 ids, which is what this test caught in CI.
    ids = [new_queue_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-hjkmnp-tv-z]{14}", i) for i in ids)
    assert ids == sorted(ids)  # fixed width, ascending alphabet: minting order


def test_queue_ids_stay_unique_when_the_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from smtp_proxy.smtp import server

    clock = server._QueueIdClock()
    now = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    values = [clock.next_value() for _ in range(1000)]
    now[0] -= 3600.0  # NTP steps the wall clock back an hour
    values += [clock.next_value() for _ in range(1000)]
    assert values == sorted(set(values))


def test_upstream_mail_options_are_rebuilt() -> None:
    from smtp_proxy.smtp.server import upstream_mail_options

    assert upstream_mail_options(["SIZE=00123", "BODY=8BITMIME", "SMTPUTF8"]) == [
        "SIZE=123",
        "BODY=8BITMIME",
        "SMTPUTF8",
    ]
    assert upstream_mail_options(["BODY=7BIT"]) == []
    assert upstream_mail_options(["SIZE=12x", "SIZE=", "RET=HDRS", "ENVID=<x>", "X=Y"]) == []
    assert upstream_mail_options(["SIZE=" + "9" * 21, "SMTPUTF8=1"]) == []


def test_format_reply() -> None:
    from smtp_proxy.smtp.server import format_reply
    from smtp_proxy.upstream import Reply

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
