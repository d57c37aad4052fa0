"""clickrelay next to the real Postfix (Debian's package), both integrations of docs/postfix.md.

1. Apps → clickrelay → Postfix: clickrelay's ``[upstream]`` is Postfix's smtpd.
2. Postfix → clickrelay → Postfix: a ``content_filter`` hands every message received on
   the submission port to clickrelay, which reinjects it into a second smtpd that has no
   filter.

Each test starts a throwaway Postfix (tests/support/postfix_harness.py) and ``clickrelay proxy``
as a real process, sends with smtplib and reads the file Postfix's virtual(8) agent
delivered. Skipped when Postfix is not installed, except in CI (.ci/run installs it).
"""

from __future__ import annotations

import re
import smtplib
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest

from redirector.tokens import load_keyring
from tests.support.config import write_config
from tests.support.net import free_ports
from tests.support.postfix_harness import FILTER_MASTER_CF, PostfixInstance, require_postfix
from tests.support.processes import ClickrelayProcess
from tests.support.tracked_links import open_tracked

pytestmark = pytest.mark.postfix

ORIGINAL = "https://www.example.com/offer?id=1&amp;src=mail"
ORIGINAL_URL = "https://www.example.com/offer?id=1&src=mail"
HTML_MESSAGE = (
    "From: News <news@sender.test>\r\n"
    "To: rcpt@example.test\r\n"
    "Subject: Postfix integration\r\n"
    "Message-ID: <postfix-test@sender.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "\r\n"
    f'<html><body><p>Hello</p><a href="{ORIGINAL}">Our offer</a>\r\n'
    '<a href="mailto:help@sender.test">Help</a></body></html>\r\n'
).encode()


@pytest.fixture(autouse=True)
def _postfix_available() -> None:
    require_postfix()


def proxy_config(directory: Path, *, smtp_port: int, upstream_port: int) -> Path:
    # The tracking domain is a loopback redirector that is not running here: preflight
    # is off so that these tests are about Postfix, not about DNS.
    (http_port,) = free_ports(1)
    return write_config(
        directory,
        smtp_port=smtp_port,
        http_port=http_port,
        upstream={"url": f"smtp://127.0.0.1:{upstream_port}"},
        preflight={"enabled": False},
    )


def tracked_links(message: Message, base_url: str) -> list[str]:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    return re.findall(re.escape(base_url) + r"/c/[A-Za-z0-9_-]+", body.decode())


def check_rewritten(path: Path, config: Path) -> Message:
    """The delivered file holds the message with its link tracked, and only that link."""
    message = message_from_bytes(path.read_bytes())
    base_url = re.search(r'base_url = "([^"]+)"', config.read_text())
    assert base_url is not None
    links = tracked_links(message, base_url.group(1))
    assert len(links) == 1, message.as_string()
    keyring = load_keyring(config.parent / "clickrelay-data" / "keys")
    link = open_tracked(keyring, links[0])
    assert link.url == ORIGINAL_URL
    assert link.recipient == "rcpt@example.test"
    text = path.read_text()
    assert ORIGINAL not in text
    assert "mailto:help@sender.test" in text  # not a web link: left as written
    assert message["Message-ID"] == "<postfix-test@sender.test>"
    return message


def test_apps_send_to_clickrelay_which_relays_to_postfix(tmp_path: Path) -> None:
    postfix_port, smtp_port = free_ports(2)
    postfix = PostfixInstance.create(
        f"127.0.0.1:{postfix_port} inet n - n - - smtpd\n",
        # No permit_mynetworks: a recipient outside example.test is refused by Postfix,
        # and that refusal must reach the client through clickrelay, per recipient.
        main_cf_extra=["smtpd_relay_restrictions = reject_unauth_destination"],
        listen_ports=[postfix_port],
    )
    config = proxy_config(tmp_path, smtp_port=smtp_port, upstream_port=postfix_port)
    with postfix, ClickrelayProcess(["proxy", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as client:
            refused = client.sendmail(
                "news@sender.test", ["rcpt@example.test", "someone@elsewhere.test"], HTML_MESSAGE
            )
        assert set(refused) == {"someone@elsewhere.test"}
        code, reason = refused["someone@elsewhere.test"]
        assert code == 554 and b"Relay access denied" in reason

        (delivered,) = postfix.wait_for_messages(1)
        message = check_rewritten(delivered, config)
        assert message["Delivered-To"] == "rcpt@example.test"
        assert "by postfix.test (Postfix)" in message["Received"]
        assert proc.stop() == 0
        assert "status=sent (delivered to maildir)" in postfix.log()


def test_postfix_content_filter_through_clickrelay_and_back(tmp_path: Path) -> None:
    submit, reinject, smtp_port = free_ports(3)
    postfix = PostfixInstance.create(
        FILTER_MASTER_CF.format(submit=submit, clickrelay=smtp_port, reinject=reinject),
        listen_ports=[submit, reinject],
    )
    config = proxy_config(tmp_path, smtp_port=smtp_port, upstream_port=reinject)
    with postfix, ClickrelayProcess(["proxy", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        with smtplib.SMTP("127.0.0.1", submit, timeout=60) as client:
            assert client.sendmail("news@sender.test", ["rcpt@example.test"], HTML_MESSAGE) == {}
        (delivered,) = postfix.wait_for_messages(1)
        message = check_rewritten(delivered, config)
        # Received by Postfix twice: once from the app, once from clickrelay's reinjection.
        received = message.get_all("Received") or []
        assert len(received) == 2, received
        log = postfix.log()
        assert f"relay=127.0.0.1[127.0.0.1]:{smtp_port}" in log  # handed to clickrelay
        assert proc.stop() == 0


def test_content_filter_defers_while_clickrelay_is_down(tmp_path: Path) -> None:
    """Postfix keeps the message queued while clickrelay is stopped and delivers it,
    rewritten, once clickrelay is back: a filter outage loses nothing."""
    submit, reinject, smtp_port = free_ports(3)
    postfix = PostfixInstance.create(
        FILTER_MASTER_CF.format(submit=submit, clickrelay=smtp_port, reinject=reinject),
        listen_ports=[submit, reinject],
    )
    config = proxy_config(tmp_path, smtp_port=smtp_port, upstream_port=reinject)
    with postfix:
        with smtplib.SMTP("127.0.0.1", submit, timeout=60) as client:
            assert client.sendmail("news@sender.test", ["rcpt@example.test"], HTML_MESSAGE) == {}
        postfix.wait_for_log("status=deferred")
        assert postfix.delivered() == []
        with ClickrelayProcess(["proxy", "-c", str(config)], cwd=tmp_path) as proc:
            proc.wait_ready()
            postfix.postfix("flush")
            (delivered,) = postfix.wait_for_messages(1)
            check_rewritten(delivered, config)
            assert proc.stop() == 0
