"""Floods against the real redirector: held connections (slowloris, descriptor
exhaustion) and click-storage amplification.

The redirector runs as its own process (``redirector_proc``) under a lowered
``RLIMIT_NOFILE`` and lowered caps, so a bounded attack of a few hundred connections
reproduces what thousands do to a default install.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from redirector.tokens import Keyring, load_keyring
from tests.reliability.harness import Figures
from tests.support.config import config_text
from tests.support.polling import poll

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
ATTACKER = "127.0.0.2"
CLIENT = "127.0.0.1"


@dataclass
class RedirectorProc:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    keyring: Keyring
    stderr: Path
    db: Path

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


@contextlib.contextmanager
def redirector_proc(
    tmp_path: Path, key_file: Path, *, nofile: int, loop: str, **settings: object
) -> Iterator[RedirectorProc]:
    db = tmp_path / "clicks.sqlite3"
    cfg = tmp_path / "redirector.toml"
    cfg.write_text(
        config_text(
            {
                "tracking": {"key_file": key_file},
                "redirector": {
                    "listen": f"{CLIENT}:0",
                    "admin_listen": f"{CLIENT}:0",
                    "store": f"sqlite:{db}",
                    **settings,
                },
            }
        )
    )
    stderr = tmp_path / "redirector.stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.redirector_proc",
                str(cfg),
                str(nofile),
                loop,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        assert proc.stdout is not None
        ports = proc.stdout.readline().split()
        assert len(ports) == 2, stderr.read_text()[-3000:]
        yield RedirectorProc(proc, int(ports[0]), int(ports[1]), load_keyring(key_file), stderr, db)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, stderr.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def click(port: int, path: str, *, user_agent: str = "Mozilla/5.0 (flood test)") -> int | None:
    """One real click from CLIENT: the status, or None when it failed or timed out."""
    conn = http.client.HTTPConnection(CLIENT, port, timeout=15, source_address=(CLIENT, 0))
    try:
        conn.request("GET", path, headers={"User-Agent": user_agent})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed ``sock`` (EOF or reset); data before that is read."""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if not data:
            return True


# --- slowloris and descriptor exhaustion ----------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_held_half_sent_requests_neither_starve_clicks_nor_flood_the_log(
    tmp_path: Path, key_file: Path, loop: str, figures: list[Figures]
) -> None:
    attack = 300  # held connections: more than the server's 256 descriptors
    with redirector_proc(
        tmp_path,
        key_file,
        nofile=256,
        loop=loop,
        header_timeout=2.0,
        max_connections=150,
        max_connections_per_client=60,
    ) as red:
        token = red.keyring.seal(
            "https://example.com/landing", host=CLIENT, queue_id="Q1", link_index=0
        )
        head = f"GET /c/{token} HTTP/1.1\r\nHost: links.test\r\nUser-Agent: slow".encode()
        held: list[socket.socket] = []
        try:
            started = time.monotonic()
            for _ in range(attack):
                sock = socket.socket()
                sock.settimeout(2)
                sock.bind((ATTACKER, 0))
                try:
                    sock.connect((CLIENT, red.port))
                    sock.sendall(head)
                except OSError:
                    pass  # refused or never accepted: still part of the flood
                sock.setblocking(False)
                held.append(sock)
            # Real clicks from another address while the attacker holds its connections.
            statuses = [click(red.port, f"/c/{token}") for _ in range(20)]

            def all_closed() -> float | None:
                still_open = [s for s in held if s.fileno() != -1 and not closed_by_server(s)]
                for sock in still_open:
                    with contextlib.suppress(OSError):
                        sock.send(b"x")  # slowloris: a trickle must not extend the deadline
                return time.monotonic() - started if not still_open else None

            closed_after = poll(
                all_closed,
                timeout=60,
                interval=0.2,
                failure=lambda: f"attacker connections still open after 60 s\n{red.log()[-2000:]}",
            )
        finally:
            for sock in held:
                sock.close()
        assert statuses == [302] * 20, statuses
        log = red.log()
    log_bytes = len(log.encode())
    accept_lines = [line for line in log.splitlines() if "accept" in line]
    figures.append(
        Figures(
            f"redirector: {attack} held half-sent requests ({loop})",
            load=f"{attack} conns from one address + 20 clicks",
            faults="nofile=256 max_connections=150 per_client=60 header_timeout=2",
            clicks_served=statuses.count(302),
            notes=f"all attacker conns closed after {closed_after:.1f}s; stderr {log_bytes} B",
        )
    )
    # One summary line per ten seconds at most, never a line per failed accept().
    assert len(accept_lines) <= 10, accept_lines[:20]
    assert log_bytes < 64 * 1024, log[-3000:]
    assert "connections-refused" in log


def test_descriptor_exhaustion_is_logged_in_summaries_and_recovers(
    tmp_path: Path, key_file: Path, figures: list[Figures]
) -> None:
    """Caps set above the descriptor limit (a misconfiguration): accept() fails with
    EMFILE. asyncio's loop reports each failure; they must come out as summary lines,
    not one traceback each, and the listener must recover once the held connections
    reach their header deadline."""
    attack = 300
    with redirector_proc(
        tmp_path,
        key_file,
        nofile=128,
        loop="asyncio",
        header_timeout=2.0,
        max_connections=1000,
        max_connections_per_client=1000,
    ) as red:
        token = red.keyring.seal(
            "https://example.com/landing", host=CLIENT, queue_id="Q1", link_index=0
        )
        held: list[socket.socket] = []
        try:
            for _ in range(attack):
                sock = socket.socket()
                sock.setblocking(False)
                sock.bind((ATTACKER, 0))
                with contextlib.suppress(BlockingIOError):
                    sock.connect((CLIENT, red.port))
                held.append(sock)
            poll(
                lambda: "accept-failed" in red.log() or None,
                timeout=30,
                interval=0.1,
                failure=lambda: f"no accept-failed summary\n{red.log()[-2000:]}",
            )

            def recovered() -> int | None:
                status = click(red.port, f"/c/{token}")
                return status if status == 302 else None

            assert poll(recovered, timeout=60, interval=0.5, failure=red.log) == 302
        finally:
            for sock in held:
                sock.close()
        log = red.log()
    accept_lines = [line for line in log.splitlines() if "accept" in line]
    figures.append(
        Figures(
            "redirector: descriptor exhaustion (caps above RLIMIT_NOFILE=128, asyncio)",
            load=f"{attack} connections from one address",
            faults="nofile=128 max_connections=1000",
            notes=f"{len(accept_lines)} accept log lines, stderr {len(log.encode())} B; recovered",
        )
    )
    assert 1 <= len(accept_lines) <= 10, accept_lines[:20]
    assert len(log.encode()) < 64 * 1024, log[-3000:]


# --- click-storage amplification --------------------------------------------------------


def store_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def metric(port: int, name: str) -> float:
    conn = http.client.HTTPConnection(CLIENT, port, timeout=15)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_replayed_long_link_does_not_grow_the_store(
    tmp_path: Path, key_file: Path, figures: list[Figures]
) -> None:
    """300 replays of one link carrying a 60,000-character URL, each with an 8 KB user
    agent: redirected and counted every time, stored a bounded number of times."""
    replays = 300
    url = "https://example.com/?q=" + "a" * 60_000
    user_agent = "Mozilla/5.0 " + "x" * 8000
    with redirector_proc(tmp_path, key_file, nofile=1024, loop="uvloop") as red:
        # Minted directly: a proxy of this version refuses such a URL (max_url_length),
        # an older one did not, and its links must not cost the store either.
        token = red.keyring.seal(
            url, host=CLIENT, queue_id="Q1", link_index=0, recipient="r@example.org"
        )
        assert len(token) < 1000
        before = store_bytes(red.db)
        statuses = [click(red.port, f"/c/{token}", user_agent=user_agent) for _ in range(replays)]
        assert statuses == [302] * replays
        counted = poll(
            lambda: metric(red.admin_port, "clickrelay_clicks_total") or None,
            timeout=30,
            interval=0.1,
            failure=lambda: "no clicks counted",
        )
        not_stored = metric(red.admin_port, "clickrelay_clicks_not_stored_total")
    after = store_bytes(red.db)
    grown = after - before
    with sqlite3.connect(red.db) as db:
        rows, longest_url, longest_agent = db.execute(
            "SELECT count(*), max(length(url)), max(length(user_agent)) FROM clicks"
        ).fetchone()
    db.close()
    figures.append(
        Figures(
            "redirector: 300 replays of a 60 KB-URL link with an 8 KB user agent",
            load=f"{replays} clicks, one address",
            clicks_served=statuses.count(302),
            clicks_recorded=rows,
            notes=f"store {before} B -> {after} B; {int(not_stored)} counted, not stored",
        )
    )
    assert counted == replays
    assert rows == 3 and not_stored == replays - 3
    assert longest_url <= 8192 and longest_agent <= 512
    assert grown < 1_000_000, grown
