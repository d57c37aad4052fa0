"""Shared machinery of the reliability suite: scale knobs, figures, processes, clients.

* :data:`FULL` / :func:`scale` — the quick subset (default ``pytest`` run, CI) and the
  full run (``CLICKRELAY_RELIABILITY_FULL=1``) share every scenario; only counts differ.
* :func:`need` — import a component under test, or skip the test saying which one is
  missing (the suite is written against ``/work/briefs/contracts.md``).
* :class:`Figures` — one row of the table ``bench/reliability.py`` prints.
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
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.proxy_helpers import LineClient

VENV_BIN = Path(sys.executable).parent

#: The full run: every scenario at its full size (``bench/reliability.py`` sets it).
FULL = (
    os.environ.get("CLICKRELAY_RELIABILITY_FULL") == "1" or os.environ.get("CLICKRELAY_FULL") == "1"
)
#: JSON-lines file the figures and test outcomes go to (set by ``bench/reliability.py``).
RESULTS_ENV = "CLICKRELAY_RELIABILITY_RESULTS"

full_only = pytest.mark.skipif(
    not FULL, reason="full reliability run only: set CLICKRELAY_RELIABILITY_FULL=1"
)


def scale(quick: int, full: int) -> int:
    """``quick`` in the default run, ``full`` in the full run."""
    return full if FULL else quick


def need(module: str, component: str | None = None) -> ModuleType:
    """Import ``module``. Every component has landed, so an import failure is a test error,
    never a skip (``component`` is kept for the callers' readability)."""
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


# --- waiting -----------------------------------------------------------------------------


async def eventually(
    condition: Callable[[], bool], within: float = 30.0, step: float = 0.02
) -> None:
    """Poll ``condition`` until it holds; fail (TimeoutError) after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling a condition with a bounded deadline
            await asyncio.sleep(step)


def wait_until(condition: Callable[[], bool], within: float = 30.0, what: str = "") -> None:
    """Synchronous :func:`eventually` for tests driving subprocesses."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or condition}")
        time.sleep(0.02)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for subprocesses that cannot report theirs)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


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


# --- configs -----------------------------------------------------------------------------------


def toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(sections: dict[str, dict[str, Any]]) -> str:
    """TOML from ``{"proxy": {"listen": "127.0.0.1:0"}, …}`` (flat sections only)."""
    out: list[str] = []
    for name, table in sections.items():
        out.append(f"[{name}]")
        for key, value in table.items():
            out.append(f"{key} = {_toml_value(value)}")
    return "\n".join(out) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return toml_str(str(value))
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def clickrelay_cmd(*args: str) -> list[str]:
    """``clickrelay …`` from this venv (console script, else ``python -m smtp_proxy``)."""
    script = VENV_BIN / "clickrelay"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "smtp_proxy", *args]


class CommandProcess:
    """``clickrelay COMMAND -c CFG`` as a real child process, its output appended to ``log``;
    started again after :meth:`terminate` (SIGTERM) for restart scenarios."""

    def __init__(
        self, command: str, cfg: Path, ports: tuple[int, ...], log: Path, start_within: float
    ) -> None:
        self.command = command
        self.start_within = start_within
        self.cfg = cfg
        self.ports = ports
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until every port listens; fail with the log's tail if it exits."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                clickrelay_cmd(self.command, "-c", str(self.cfg)),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        wait_until(
            lambda: all(port_open(p) for p in self.ports) or proc.poll() is not None,
            self.start_within,
            f"clickrelay {self.command} to listen",
        )
        if proc.poll() is not None:
            raise AssertionError(
                f"clickrelay {self.command} exited {proc.returncode}: "
                f"{self.log.read_text()[-2000:]}"
            )

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# --- the proxy under test ------------------------------------------------------------------------

PROXY_BASE_URL = "http://127.0.0.1:8080"


def proxy_config(
    tmp_path: Path,
    upstream_url: str,
    key_file: Path,
    *,
    preflight: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    tracking: dict[str, Any] | None = None,
    **proxy: Any,
) -> Any:
    """A :class:`smtp_proxy.config.Config` for a proxy on 127.0.0.1:0 → ``upstream_url``.

    Preflight is off unless a ``preflight`` table is given (off = rewriting allowed).
    """
    from clickrelay.config import load_config_text

    return load_config_text(
        proxy_config_text(
            upstream_url,
            key_file,
            preflight=preflight,
            upstream=upstream,
            tracking=tracking,
            **proxy,
        ),
        "<reliability>",
        tmp_path,
    )


@contextlib.asynccontextmanager
async def running_proxy(
    tmp_path: Path, upstream_url: str, key_file: Path, **config: Any
) -> AsyncIterator[Any]:
    """A started ``ProxyService`` (no admin listener) on :func:`proxy_config`'s config,
    stopped with a 5 s grace on the way out."""
    service_mod = need("smtp_proxy.service", "proxy (smtp_proxy/service.py ProxyService)")
    from prometheus_client import CollectorRegistry

    from redirector.tokens import load_keyring

    service = service_mod.ProxyService(
        proxy_config(tmp_path, upstream_url, key_file, **config),
        load_keyring(key_file),
        registry=CollectorRegistry(),
        admin=False,
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=5)


def proxy_config_text(
    upstream_url: str,
    key_file: Path,
    *,
    preflight: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    tracking: dict[str, Any] | None = None,
    **proxy: Any,
) -> str:
    proxy_table: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin_listen": "",
        "hostname": "proxy.test",
        "trusted_networks": ["127.0.0.1/32"],
        "command_timeout": 60,
        "data_timeout": 60,
        "shutdown_grace": 10,
    }
    proxy_table.update(proxy)
    upstream_table: dict[str, Any] = {
        "url": upstream_url,
        "pool_size": 4,
        "connect_timeout": 3,
        "timeout": 10,
    }
    upstream_table.update(upstream or {})
    tracking_table: dict[str, Any] = {"base_url": PROXY_BASE_URL, "key_file": key_file}
    tracking_table.update(tracking or {})
    return config_text(
        {
            "proxy": proxy_table,
            "upstream": upstream_table,
            "tracking": tracking_table,
            "preflight": preflight if preflight is not None else {"enabled": False},
        }
    )


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
