"""The health strip in a real browser: headless Chromium against ``clickrelay serve`` with
an HTTPS listener (certificate files of a throwaway CA: one valid, one about to expire)
and two ``[[webhooks]]`` endpoints on a loopback receiver (one answers 503, so a backlog
builds; one answers 410 Gone, so it is disabled). The strip shows days left on each
certificate and each endpoint's backlog, red where a person must act, with no console
error and no CSP violation."""

from __future__ import annotations

import datetime
import http.server
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lxml.html
import pytest

from redirector.tokens import load_keyring
from tests.support.browser import chromium, console_problems, require_chromium
from tests.support.config import config_text
from tests.support.net import free_ports
from tests.support.polling import wait_until
from tests.support.processes import ClickrelayProcess
from tests.support.tls_certs import CertAuthority
from tests.support.webhook_receiver import new_secret

LINKS = "links.dash.test"
SOON = "soon.dash.test"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


class Receiver(http.server.BaseHTTPRequestHandler):
    """``POST /down`` → 503, ``POST /gone`` → 410."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(410 if self.path == "/gone" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def write_cert(ca: CertAuthority, path: Path, host: str, days_left: float) -> None:
    end = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days_left)
    path.write_bytes(ca.bundle([host], not_before=end - datetime.timedelta(days=90), not_after=end))


def strip(admin_port: int) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/", timeout=10) as resp:
        return lxml.html.fromstring(resp.read()).get_element_by_id("health")


def test_health_strip_shows_certificate_days_and_webhook_backlog(
    tmp_path: Path, receiver: int
) -> None:
    require_chromium()
    http_port, https_port, admin_port = free_ports(3)
    ca = CertAuthority()
    (tmp_path / "tls").mkdir()
    write_cert(ca, tmp_path / "tls" / "links.pem", LINKS, 60)
    write_cert(ca, tmp_path / "tls" / "soon.pem", SOON, 3)
    hooks = "".join(
        f'[[webhooks]]\nname = "{name}"\nurl = "http://127.0.0.1:{receiver}/{path}"\n'
        # settled_only = false: a click becomes a (failing) event at once, not a
        # classification_settle later.
        f'secret = "{new_secret()}"\nretry_delay = 0.2\nsettled_only = false\n'
        for name, path in (("crm", "down"), ("old-crm", "gone"))
    )
    tables = {
        "proxy": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"},
        "tracking": {
            "base_url": f"https://{LINKS}",
            "sender_domains": {"soon.example": f"https://{SOON}"},
        },
        # No DNS lookup leaves this machine: the preflight is off.
        "preflight": {"enabled": False},
        "redirector": {
            "listen": f"127.0.0.1:{http_port}",
            "https_listen": f"127.0.0.1:{https_port}",
            "admin_listen": f"127.0.0.1:{admin_port}",
            "tls_certificates": ["tls/*.pem"],
        },
    }
    config = tmp_path / "clickrelay.toml"
    config.write_text(config_text(tables) + hooks, encoding="utf-8")
    with ClickrelayProcess(["serve", "-c", str(config)], cwd=tmp_path) as process:
        process.wait_ready()
        keyring = load_keyring(tmp_path / "clickrelay-data" / "keys")
        token = keyring.seal(
            "https://example.com/spring",
            host=LINKS,
            queue_id="HEALTHQ",
            link_index=0,
            recipient="reader@example.org",
            sent_at=int(time.time()) - 3600,
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/c/{token}",
            headers={"Host": LINKS, "User-Agent": BROWSER_UA},
        )
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(request, timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 302
        wait_until(
            lambda: all(t in strip(admin_port).text_content() for t in ("1 pending", "disabled")),
            30,
            failure=lambda: strip(admin_port).text_content() + process.stderr(),
        )
        with chromium() as driver:
            driver.get(f"http://127.0.0.1:{admin_port}/")
            driver.save_screenshot(str(tmp_path / "health.png"))
            assert (tmp_path / "health.png").stat().st_size > 10_000
            problems = console_problems(driver)
            assert not problems, problems
            health = driver.find_element("id", "health")
            assert "needs-action" in health.get_attribute("class")
            lines = {
                li.find_element("css selector", ".h-name").text: li
                for li in health.find_elements("css selector", "li")
            }
            links = lines[f"certificate: {LINKS}"]
            assert links.get_attribute("class") == "h-ok"
            assert links.find_element("css selector", ".h-state").text in (
                "59 days left",
                "60 days left",
            )
            soon = lines[f"certificate: {SOON}"]
            assert soon.get_attribute("class") == "h-bad"
            assert soon.find_element("css selector", ".h-state").text.startswith("expiring: ")
            assert "tls_certificates" in soon.find_element("css selector", ".h-fix").text
            crm = lines["webhook: crm"]
            assert "1 pending" in crm.text and "HTTP 503" in crm.text
            old = lines["webhook: old-crm"]
            assert old.get_attribute("class") == "h-bad"
            assert old.find_element("css selector", ".h-state").text == "disabled"
            assert "410 Gone" in old.find_element("css selector", ".h-fix").text


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
