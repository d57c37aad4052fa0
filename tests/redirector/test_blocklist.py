"""The blocklist: links switched off by queue id or destination host, without a new key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickrelay.common.errors import ConfigError
from redirector.blocklist import EMPTY, destination_host, load_blocklist, parse_blocklist
from redirector.token_types import LinkData
from redirector.tokens import Keyring
from tests.support.redirector_client import (
    TEST_HOST,
    assert_not_found,
    client_for,
    get,
    public_app,
    seal,
)


def link(url: str, queue_id: str = "Q1") -> LinkData:
    return LinkData(url, queue_id, 0, None, 0, "00000000", 2, "links.example.com")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://Phish.Example/login", "phish.example"),
        ("https://phish.example./", "phish.example"),
        ("https://user:pw@phish.example:8443/x", "phish.example"),
        ("https://good.example@phish.example/", "phish.example"),
        # A browser ends the authority at a backslash (urlsplit would say good.example).
        ("https://phish.example\\@good.example/", "phish.example"),
        ("https://phish%2Eexample/", "phish.example"),
        ("https://bücher.example/", "xn--bcher-kva.example"),
        ("https://[2001:db8::1]:8080/p", "2001:db8::1"),
        ("http://phish.example?x=1", "phish.example"),
        ("http://phish.example#f", "phish.example"),
    ],
)
def test_destination_host_is_the_host_a_browser_goes_to(url: str, host: str) -> None:
    assert destination_host(url) == host


def test_rules_match_queue_ids_and_hosts_with_their_subdomains() -> None:
    blocklist = parse_blocklist(
        "# phishing sent through us\nqueue 1m918sja48yfb3\nhost Phish.Example.  # and below\n"
    )
    assert blocklist.blocks(link("https://ok.example/", queue_id="1m918sja48yfb3"))
    assert blocklist.blocks(link("https://phish.example/a"))
    assert blocklist.blocks(link("https://www.login.phish.example/a"))
    assert not blocklist.blocks(link("https://notphish.example/a"))
    assert not blocklist.blocks(link("https://phish.example.org/a"))
    assert not blocklist.blocks(link("https://ok.example/", queue_id="1m918sja48yfb4"))
    assert not EMPTY and not EMPTY.blocks(link("https://phish.example/"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("queue\n", "expected 'queue <queue id>'"),
        ("domain phish.example\n", "expected 'queue <queue id>'"),
        ("host a b\n", "expected 'queue <queue id>'"),
        ("host https://phish.example/x\n", "expected a host name"),
    ],
)
def test_malformed_lines_are_errors_with_the_line_number(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_blocklist("# ok\n" + text, "blocklist")
    assert str(info.value).startswith("blocklist:2:")


def test_missing_file_is_an_error_and_none_blocks_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_blocklist(tmp_path / "nope")
    assert load_blocklist(None) is EMPTY
    (tmp_path / "bl").write_text("host phish.example\n")
    assert load_blocklist(tmp_path / "bl").hosts == {"phish.example"}


@settings(max_examples=300, deadline=None)
@given(url=st.text(max_size=200))
def test_any_url_is_judged_without_a_crash(url: str) -> None:
    blocklist = parse_blocklist("host phish.example\n")
    assert isinstance(blocklist.blocks(link("https://" + url)), bool)


async def test_blocked_links_get_the_one_404_through_the_app(keyring: Keyring) -> None:
    blocklist = parse_blocklist("queue BADQ\nhost phish.example\n")
    app = public_app(keyring, blocklist=blocklist)
    by_queue = seal(keyring, "https://ok.example/", queue_id="BADQ")
    by_host = seal(keyring, "https://www.phish.example/login", queue_id="GOODQ")
    good = seal(keyring, "https://ok.example/", queue_id="GOODQ")
    async with client_for(app) as client:
        assert_not_found(await get(client, f"/c/{by_queue}"))
        assert_not_found(await get(client, f"/c/{by_host}"))
        resp = await get(client, f"/c/{good}")
        assert (resp.status, resp.headers["Location"]) == (302, "https://ok.example/")
    assert keyring.open(by_host, TEST_HOST).url == "https://www.phish.example/login"
