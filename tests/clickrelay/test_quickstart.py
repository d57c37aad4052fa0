"""The README's two-minute walk-through, run as written against a real ``clickrelay serve``.

A child process in a temporary directory (ready when it says ``READY=1`` on
``$NOTIFY_SOCKET``), the README's own Python snippet to send the message, the outbox
maildir, the README's grep pattern for the link, a real HTTP client that does not follow
redirects, and ``clickrelay stats --json`` / ``decode``.

``test_walkthrough_with_a_config`` uses free ports from a config file (always runs);
``test_walkthrough_with_no_config_at_all`` is the literal quick start on the default
ports 2525/8080/8081 and runs when those are free.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.config import write_config
from tests.support.net import free_ports
from tests.support.processes import ClickrelayProcess, run_cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARTICLE = "https://example.com/article"


def readme_snippet(smtp_port: int) -> str:
    (snippet,) = re.findall(r"```python\n(.*?)```", README, re.S)
    assert isinstance(snippet, str) and '"127.0.0.1", 2525' in snippet
    return snippet.replace('"127.0.0.1", 2525', f'"127.0.0.1", {smtp_port}')


def readme_link_pattern(http_port: int) -> str:
    """The README's ``grep -ho '…'`` pattern, for this redirector port."""
    assert "grep -ho 'http://127.0.0.1:8080/c/[A-Za-z0-9_-]*'" in README
    return re.escape(f"http://127.0.0.1:{http_port}/c/") + r"[A-Za-z0-9_-]*"


async def fetch(url: str, *, method: str = "GET") -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            url,
            allow_redirects=False,
            headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) quickstart-test"},
        ) as response,
    ):
        body = await response.text()
        return response.status, dict(response.headers), body


def poll_stats(directory: Path, config: list[str], deadline_s: float = 30.0) -> dict[str, object]:
    """``clickrelay stats --json`` until it shows a click (clicks are written in batches)."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = run_cli("stats", "--json", *config, cwd=directory)
        assert result.returncode == 0, result.stderr
        document: dict[str, object] = json.loads(result.stdout)
        totals = document["totals"]
        assert isinstance(totals, dict)
        if totals["human_clicks"] + totals["bot_clicks"] >= 1:
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"no click in the store after {deadline_s}s: {document}")
        time.sleep(0.1)  # polling a condition with a deadline


def walk_through(
    directory: Path, config: list[str], smtp_port: int, http_port: int, admin_port: int
) -> None:
    with ClickrelayProcess(["serve", *config], cwd=directory) as proc:
        ready = proc.wait_ready()
        assert f"smtp 127.0.0.1:{smtp_port}" in ready["STATUS"]
        banner = proc.stdout()
        assert f"smtp://127.0.0.1:{smtp_port}" in banner
        assert f"http://127.0.0.1:{http_port}  (clicks land here)" in banner
        outbox = directory / "clickrelay-data" / "outbox"
        assert f"maildir {outbox}/new/" in banner
        # Preflight of our own redirector passed before READY, so links get rewritten.
        assert f"preflight: http://127.0.0.1:{http_port} verified" in banner

        # 1. Send with the README's snippet.
        sent = subprocess.run(
            [sys.executable, "-c", readme_snippet(smtp_port)],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr

        # 2. Find it in the outbox, and the link in it.
        (message,) = sorted((outbox / "new").iterdir())
        text = message.read_text()
        assert "Subject: Hello" in text
        (link,) = re.findall(readme_link_pattern(http_port), text)
        assert ARTICLE not in text

        # 3. Click it.
        status, headers, body = asyncio.run(fetch(link))
        assert status == 302, body
        assert headers["Location"] == ARTICLE
        assert headers["Cache-Control"] == "no-store"
        # A link we did not mint is a 404 without a Location (promise 3).
        status, headers, _ = asyncio.run(fetch(link[:-4] + "AAAA"))
        assert status == 404 and "Location" not in headers

        # 4. See the click.
        document = poll_stats(directory, config)
        messages = document["messages"]
        assert isinstance(messages, list) and len(messages) == 1
        (link_stats,) = messages[0]["links"]
        assert link_stats["url"] == ARTICLE
        assert link_stats["link_index"] == 0

        decoded = run_cli("decode", *config, link, cwd=directory)
        assert decoded.returncode == 0, decoded.stderr
        info = json.loads(decoded.stdout)
        assert info["url"] == ARTICLE and info["recipient"] == "you@example.org"
        assert info["queue_id"] == messages[0]["queue_id"]

        # One registry: proxy, preflight and redirector metrics on the admin listener.
        status, _, metrics = asyncio.run(fetch(f"http://127.0.0.1:{admin_port}/metrics"))
        assert status == 200
        for name in (
            "clickrelay_proxy_messages",
            "clickrelay_tracking_domain_verified",
            "clickrelay_clicks",
        ):
            assert name in metrics, name

        proc.send_signal(signal.SIGTERM)
        proc.wait_for("STOPPING")
        assert proc.wait_exit() == 0
    # Stats still readable after exit (the store is a file in ./clickrelay-data).
    after = run_cli("stats", *config, cwd=directory)
    assert after.returncode == 0 and ARTICLE in after.stdout


def test_walkthrough_with_a_config(tmp_path: Path) -> None:
    smtp_port, http_port, admin_port = free_ports(3)
    config = write_config(tmp_path, smtp_port=smtp_port, http_port=http_port, admin_port=admin_port)
    walk_through(tmp_path, ["-c", str(config)], smtp_port, http_port, admin_port)
    assert (tmp_path / "clickrelay-data" / "keys").stat().st_mode & 0o777 == 0o600


def default_ports_free() -> bool:
    for port in (2525, 8080, 8081):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def test_walkthrough_with_no_config_at_all(tmp_path: Path) -> None:
    if not default_ports_free():
        pytest.skip("one of the quick-start ports 2525/8080/8081 is in use on this machine")
    walk_through(tmp_path, [], 2525, 8080, 8081)
    assert (tmp_path / "clickrelay-data" / "clicks.sqlite3").exists()


def test_serve_explains_how_to_configure_when_run_without_config(tmp_path: Path) -> None:
    """The banner says how to change things; a config run says where its file is."""
    smtp_port, http_port, admin_port = free_ports(3)
    config = write_config(tmp_path, smtp_port=smtp_port, http_port=http_port, admin_port=admin_port)
    with ClickrelayProcess(["serve", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        assert f"config          {config}" in proc.stdout()
        assert "SIGHUP" in proc.stdout()
        assert proc.stop() == 0
    if default_ports_free():
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        with ClickrelayProcess(["serve"], cwd=fresh) as proc:
            proc.wait_ready()
            assert "copy conf/clickrelay.toml" in proc.stdout()
            assert proc.stop() == 0


def readme_swaks_command(smtp_port: int) -> list[str]:
    match = re.search(r"```sh\n(swaks .*?)```", README, re.S)
    assert match, "README lost its swaks example"
    command = match.group(1).replace("\\\n", " ")
    assert "127.0.0.1:2525" in command
    return shlex.split(command.replace("127.0.0.1:2525", f"127.0.0.1:{smtp_port}"))


def test_readme_swaks_example(tmp_path: Path) -> None:
    if shutil.which("swaks") is None:
        pytest.skip("swaks not installed (apt-get install swaks)")
    smtp_port, http_port, admin_port = free_ports(3)
    config = write_config(tmp_path, smtp_port=smtp_port, http_port=http_port, admin_port=admin_port)
    with ClickrelayProcess(["serve", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        sent = subprocess.run(
            readme_swaks_command(smtp_port),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert proc.stop() == 0
    (message,) = sorted((tmp_path / "clickrelay-data" / "outbox" / "new").iterdir())
    text = message.read_text()
    (link,) = re.findall(readme_link_pattern(http_port), text)
    assert ARTICLE not in text
    assert "X-Mailer: swaks" in text
    decoded = run_cli("decode", "-c", str(config), link, cwd=tmp_path)
    assert json.loads(decoded.stdout)["url"] == ARTICLE
