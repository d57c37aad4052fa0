"""What only the reliability suite needs: scale knobs, figures, a killable MTA, clients.

Ports, polling, configs and ``clickrelay`` processes come from ``tests/support``.

* :data:`FULL` / :func:`scale` — the quick subset (default ``pytest`` run, CI) and the
  full run (``CLICKRELAY_FULL=1``) share every scenario; only counts differ.
* :func:`need` — import a component under test, naming it for the reader.
* :class:`Figures` — one row of the table ``bench/reliability.py`` prints.
* :data:`UNDER_LOAD` — proxy settings for a loaded machine.
* :class:`SinkProcess` — the upstream MTA as a real process that tests kill and restart.
* :func:`send_with_retry` — an SMTP client that behaves like a real MTA queue: a 4xx or
  a broken connection means "keep the message and try again".
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.polling import wait_until
from tests.support.proxy_helpers import LineClient

VENV_BIN = Path(sys.executable).parent

#: The full run: every scenario at its full size (``bench/reliability.py`` sets it).
FULL = os.environ.get("CLICKRELAY_FULL") == "1"
#: JSON-lines file the figures and test outcomes go to (set by ``bench/reliability.py``).
RESULTS_ENV = "CLICKRELAY_RELIABILITY_RESULTS"

full_only = pytest.mark.skipif(not FULL, reason="full reliability run only: set CLICKRELAY_FULL=1")


def scale(quick: int, full: int) -> int:
    """``quick`` in the default run, ``full`` in the full run."""
    return full if FULL else quick


def need(module: str, component: str | None = None) -> ModuleType:
    """Import ``module``; an import failure is a test error, never a skip
    (``component`` names the part under test for the reader)."""
    return importlib.import_module(module)


# --- figures -----------------------------------------------------------------------------


@dataclass
class Figures:
    """One scenario's counts; ``None`` = not applicable (printed as ``-``)."""

    scenario: str
    load: str = ""
    faults: str = ""
    sent: int | None = None
    delivered: int | None = None
    refused: int | None = None
    lost: int | None = None
    duplicated: int | None = None
    clicks_served: int | None = None
    clicks_recorded: int | None = None
    clicks_lost: int | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, nodeid: str) -> None:
        path = os.environ.get(RESULTS_ENV)
        if not path:
            return
        row = {"kind": "figures", "nodeid": nodeid, **asdict(self)}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


# --- the upstream MTA as a process -----------------------------------------------------------

MESSAGE_ID_RE = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


class SinkProcess:
    """``tests/reliability/sink_proc.py`` in a subprocess; see that module for the knobs."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> None:
        (self.dir / "port").unlink(missing_ok=True)
        with open(self.dir / "stderr.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("sink_proc.py")),
                    "--dir",
                    str(self.dir),
                    "--port",
                    str(self.port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.starts += 1
        proc = self.proc
        wait_until(
            lambda: (self.dir / "port").exists() or proc.poll() is not None, 20, "sink to listen"
        )
        if proc.poll() is not None:
            raise RuntimeError(
                f"sink exited with {proc.returncode}: {(self.dir / 'stderr.log').read_text()}"
            )
        self.port = int((self.dir / "port").read_text())

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def die_at(self, point: str) -> None:
        """Make the running sink SIGKILL itself at the next ``mail``/``rcpt``/``data``."""
        tmp = self.dir / ".die_at.tmp"
        tmp.write_text(point)
        os.rename(tmp, self.dir / "die_at")

    def set_delay(self, seconds: float | None) -> None:
        path = self.dir / "delay_data"
        if seconds is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(str(seconds))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.kills += 1
        self.reap()

    def reap(self) -> None:
        if self.proc is not None:
            self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        (self.dir / "die_at").unlink(missing_ok=True)

    def messages(self) -> list[bytes]:
        msgs = self.dir / "msgs"
        if not msgs.is_dir():
            return []
        return [p.read_bytes() for p in sorted(msgs.glob("*.eml"))]

    def message_ids(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for data in self.messages():
            match = MESSAGE_ID_RE.search(data)
            found[match.group(1).decode("ascii", "replace") if match else "<none>"] += 1
        return found


@contextlib.contextmanager
def sink_process(directory: Path) -> Iterator[SinkProcess]:
    sink = SinkProcess(directory)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


# --- an MTA-like SMTP client ------------------------------------------------------------------


@dataclass
class SendStats:
    """What a retrying client saw, counted per attempt and per message."""

    sent: int = 0  # distinct messages handed to the client
    delivered: int = 0  # messages that finally got a 250
    refused_4xx: int = 0  # attempts answered with a 4xx (client kept the message)
    connection_errors: int = 0  # attempts that broke off without an SMTP reply
    permanent: int = 0  # messages answered with a 5xx (not retried)
    gave_up: int = 0  # messages still not delivered at the deadline
    codes: Counter[int] = field(default_factory=Counter)
    error_types: Counter[str] = field(default_factory=Counter)
    delivered_ids: set[str] = field(default_factory=set)


def make_message(message_id: str, *, body_html: str | None = None, size: int = 0) -> bytes:
    """A small HTML message with a unique Message-ID (and links, so the rewriter works)."""
    html = body_html or (
        "<html><body><p>Hello</p>"
        f'<a href="https://example.com/offer?id={message_id.strip("<>")}">offer</a> '
        '<a href="https://example.org/news">news</a>'
        "</body></html>"
    )
    if size:
        html += "<!--" + "x" * size + "-->"
    lines = [
        "From: sender@example.com",
        "To: rcpt@example.net",
        "Subject: reliability",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        'Content-Type: text/html; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
        "",
        html,
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


async def send_with_retry(
    port: int,
    messages: list[tuple[str, bytes]],
    stats: SendStats,
    *,
    deadline: float,
    retry_pause: float = 0.05,
    timeout: float = 30.0,  # noqa: ASYNC109 - per-command SMTP timeout, not a wrapper
    on_attempt: Callable[[], Awaitable[None]] | None = None,
    host: str = "127.0.0.1",
    reuse_connection: bool = True,
) -> None:
    """Send each message, retrying 4xx/broken attempts; over one reused connection, or
    (``reuse_connection=False``) a new connection per message, as many apps do.

    ``deadline`` is a ``time.monotonic()`` bound; what is not delivered by then is
    counted as ``gave_up`` (and the test fails on it).
    """
    import aiosmtplib

    client: aiosmtplib.SMTP | None = None
    try:
        for message_id, data in messages:
            stats.sent += 1
            while True:
                if time.monotonic() > deadline:
                    stats.gave_up += 1
                    break
                if on_attempt is not None:
                    await on_attempt()
                try:
                    if client is None or not client.is_connected:
                        client = aiosmtplib.SMTP(hostname=host, port=port, timeout=timeout)
                        await client.connect()
                    await client.sendmail("sender@example.com", ["rcpt@example.net"], data)
                    stats.codes[250] += 1
                    stats.delivered += 1
                    stats.delivered_ids.add(message_id)
                    if not reuse_connection:
                        with contextlib.suppress(Exception):
                            await client.quit()
                        client.close()
                        client = None
                    break
                except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
                    # All recipients refused arrives as SMTPRecipientsRefused (no .code).
                    code = (
                        exc.code
                        if isinstance(exc, aiosmtplib.SMTPResponseException)
                        else min(r.code for r in exc.recipients)
                    )
                    stats.codes[code] += 1
                    if 400 <= code < 500:
                        stats.refused_4xx += 1
                        await _reset(client)
                        await asyncio.sleep(retry_pause)
                        continue
                    stats.permanent += 1
                    await _reset(client)
                    break
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    stats.connection_errors += 1
                    stats.error_types[type(exc).__name__] += 1
                    if client is not None:
                        client.close()
                    client = None
                    await asyncio.sleep(retry_pause)
    finally:
        if client is not None and client.is_connected:
            with contextlib.suppress(Exception):
                await client.quit()
            client.close()


async def _reset(client: Any) -> None:
    with contextlib.suppress(Exception):
        if client is not None and client.is_connected:
            await client.rset()


# --- the proxy under test ------------------------------------------------------------------------

#: :func:`tests.support.config.proxy_config` settings for this suite, which loads the
#: machine harder than the unit tests do: longer SMTP timeouts and shutdown grace, and
#: more upstream connections.
UNDER_LOAD: dict[str, Any] = {
    "command_timeout": 60,
    "data_timeout": 60,
    "shutdown_grace": 10,
    "upstream": {"pool_size": 4, "connect_timeout": 3, "timeout": 10},
}


class RawSmtp(LineClient):
    """The proxy tests' raw SMTP client, waiting up to 30 s for a reply by default: the
    suite loads the machine harder than the unit tests do."""

    reply_timeout = 30.0


def dot_stuff(data: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2) on CRLF lines only, bytes otherwise untouched."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed


async def raw_send(
    port: int, data: bytes, *, rcpts: tuple[str, ...] = ("rcpt@example.net",), within: float = 120
) -> tuple[int, str]:
    """Send one message byte-exact (no line-ending normalisation); the final reply."""
    client = await RawSmtp.connect(port)
    try:
        await client.reply(within)
        code, text = await client.cmd("EHLO client.test", within)
        code, text = await client.cmd("MAIL FROM:<sender@example.com>", within)
        if code != 250:
            return code, text
        for rcpt in rcpts:
            code, text = await client.cmd(f"RCPT TO:<{rcpt}>", within)
            if code not in (250, 251):
                return code, text
        code, text = await client.cmd("DATA", within)
        if code != 354:
            return code, text
        await client.send(dot_stuff(data) + b".\r\n")
        result = await client.reply(within)
        with contextlib.suppress(Exception):
            await client.cmd("QUIT", 5)
        return result
    finally:
        await client.close()
