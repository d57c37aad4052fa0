"""Refused redirects: counted by reason, logged at once after a quiet spell, then in
rate-limited summary lines; and each TokenError reason as the app sees it."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct

import pytest
from prometheus_client import CollectorRegistry

from clickrelay.common.errors import TokenError
from redirector.blocklist import parse_blocklist
from redirector.config import RedirectorConfig
from redirector.http.admin import create_admin_app
from redirector.http.app import MAX_TOKEN_CHARS, create_app
from redirector.http.refusals import MAX_KEY_IDS, RefusalLog
from redirector.tokens import Key, Keyring
from tests.support.polling import until
from tests.support.redirector_client import (
    TEST_HOST,
    assert_not_found,
    client_for,
    get,
    raw_token,
    seal,
)

LOGGER = "clickrelay.test-refusals"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def refusal_log(caplog: pytest.LogCaptureFixture, clock: FakeClock) -> RefusalLog:
    """A RefusalLog on a fake clock (10 s interval), its lines captured."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    return RefusalLog(logging.getLogger(LOGGER), interval=10.0, clock=clock)


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "event=redirects-refused" in r.getMessage()]


def test_first_refusal_is_logged_at_once_then_summarised(
    refusal_log: RefusalLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    log = refusal_log
    log.note("malformed")
    first = lines(caplog)
    assert len(first) == 1
    assert first[0].levelno == logging.INFO
    assert "count=1 reasons=malformed:1" in first[0].getMessage()
    # Within the interval: counted, not logged (no event loop here, so no timer either).
    for _ in range(500):
        log.note("malformed")
    log.note("forged")
    assert len(lines(caplog)) == 1
    # Once the interval has passed, the next refusal brings out the summary.
    clock.now += 10.0
    log.note("forged")
    summary = lines(caplog)[1].getMessage()
    assert "count=502 reasons=malformed:500,forged:2" in summary
    assert "unknown_key_ids" not in summary
    assert log.totals == {"malformed": 501, "forged": 2}
    # Nothing pending: flush() adds no line.
    log.flush()
    assert len(lines(caplog)) == 2


def test_unknown_keys_are_a_warning_naming_a_bounded_set_of_ids(
    refusal_log: RefusalLog, caplog: pytest.LogCaptureFixture
) -> None:
    log = refusal_log
    log.note("malformed")
    for i in range(20):  # ids are the attacker's to choose: only a few are named
        log.note("unknown-key", f"{i:08x}")
        log.note("unknown-key", "0a1b2c3d")
    log.flush()  # at shutdown, what is pending is logged
    record = lines(caplog)[-1]
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "count=40 reasons=unknown-key:40" in message
    assert "unknown_key_ids=0a1b2c3d:20," in message
    ids = message.split("unknown_key_ids=")[1].split()[0].split(",")
    assert len(ids) == MAX_KEY_IDS
    assert "key file" in message  # the hint says what to do


async def test_the_summary_comes_by_itself_when_refusals_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    loop = asyncio.get_running_loop()
    log = RefusalLog(logging.getLogger(LOGGER), interval=0.05, clock=loop.time)
    log.note("malformed")
    log.note("unknown-key", "0a1b2c3d")
    assert len(lines(caplog)) == 1
    # No further refusal arrives: the timer set by the second one logs it.
    await until(lambda: len(lines(caplog)) == 2, "the summary line", within=10)
    assert "reasons=unknown-key:1" in lines(caplog)[1].getMessage()


def token_with_version(keyring: Keyring, version: int) -> str:
    header = struct.pack(">B4s", version, keyring.keys[0].key_id)
    raw = header + bytes(80)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


async def test_each_refusal_reason_through_the_app(
    keyring: Keyring, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clickrelay.redirector")
    registry = CollectorRegistry()
    blocklist = parse_blocklist("queue BLOCKED1\n")
    public = create_app(RedirectorConfig(), keyring, None, registry=registry, blocklist=blocklist)
    admin = create_admin_app(None, registry=registry)
    # A key whose id differs in the first byte (version 2 tokens name only that byte).
    other_id = bytes((keyring.keys[0].key_id[0] ^ 0xFF,)) + b"abc"
    stranger = Keyring([Key(other_id, os.urandom(32))])
    good = seal(keyring, "https://example.com/x")
    flipped = good[:20] + ("0" if good[20] != "0" else "1") + good[21:]  # in the nonce
    cases = {
        "malformed": "x",
        "too-long": "A" * (MAX_TOKEN_CHARS + 4),
        "unknown-version": token_with_version(keyring, 2),
        "unknown-key": seal(stranger, "https://example.com/x"),
        "wrong-host": seal(keyring, "https://example.com/x", host="links.other.example"),
        "forged": flipped,
        "bad-payload": raw_token(keyring, b"https://example.com/\xff"),
        "not-http": raw_token(keyring, b"javascript:alert(1)"),
        "blocked": seal(keyring, "https://example.com/x", queue_id="BLOCKED1"),
    }
    for reason, token in cases.items():
        if reason in ("too-long", "malformed", "blocked"):
            continue
        with pytest.raises(TokenError) as info:
            keyring.open(token, TEST_HOST)
        assert info.value.reason == reason
    async with client_for(public) as client, client_for(admin) as admin_client:
        for token in cases.values():
            assert_not_found(await get(client, f"/c/{token}"))
        assert (await get(client, f"/c/{good}")).status == 302
        text = (await get(admin_client, "/metrics")).body.decode()
    for reason in cases:
        assert f'clickrelay_redirects_refused_total{{reason="{reason}"}} 1.0' in text
    assert f'clickrelay_redirects_total{{result="404"}} {len(cases)}.0' in text
    # The first refusal was logged at once; the app's cleanup logged the rest.
    messages = [r.getMessage() for r in lines(caplog)]
    assert messages[0].endswith("count=1 reasons=malformed:1")
    assert f"count={len(cases) - 1} " in messages[-1]
    # A version 2 token names only the first byte of its key id.
    assert f"unknown_key_ids={stranger.keys[0].id_hex[:2]}??????:1" in messages[-1]
