"""The services' log output over real sockets: hostile client input stays one escaped line."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

from smtp_proxy.smtp import users
from tests.support.config import write_config
from tests.support.net import free_ports
from tests.support.processes import ClickrelayProcess

#: ESC (a terminal colour sequence), VT, U+2028, U+0085: all arrived raw in the log before.
HOSTILE_USER = "mallory\x1b[31mRED\x0bvt\u2028ls\u0085nel"


def _reply(sock: socket.socket, buffer: bytearray) -> bytes:
    """One complete (possibly multi-line) SMTP reply."""
    while True:
        lines = bytes(buffer).split(b"\r\n")
        for i, line in enumerate(lines[:-1]):
            if len(line) < 4 or line[3:4] != b"-":
                del buffer[: sum(len(x) + 2 for x in lines[: i + 1])]
                return line
        chunk = sock.recv(65536)
        assert chunk, "server closed the connection"
        buffer += chunk


def test_hostile_auth_user_and_unknown_command_are_escaped_in_the_log(tmp_path: Path) -> None:
    users_file = tmp_path / "users"
    users.add_user(users_file, "alice", "correct horse battery staple")
    smtp_port, http_port = free_ports(2)
    config = write_config(
        tmp_path,
        smtp_port=smtp_port,
        http_port=http_port,
        proxy={
            "users_file": users_file,
            "allow_plain_auth_on_loopback": True,
            "trusted_networks": ["127.0.0.1/32"],
        },
    )
    with ClickrelayProcess(["proxy", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        with socket.create_connection(("127.0.0.1", smtp_port), timeout=30) as sock:
            buffer = bytearray()
            assert _reply(sock, buffer).startswith(b"220")
            sock.sendall(b"EHLO attacker.test\r\n")
            assert _reply(sock, buffer).startswith(b"250")
            sock.sendall(b"AUTH LOGIN\r\n")
            assert _reply(sock, buffer).startswith(b"334")
            sock.sendall(base64.b64encode(HOSTILE_USER.encode()) + b"\r\n")
            assert _reply(sock, buffer).startswith(b"334")
            sock.sendall(base64.b64encode(b"wrong") + b"\r\n")
            assert _reply(sock, buffer).startswith(b"535")
            # An unknown command with a raw CR inside: aiosmtpd logs it itself.
            sock.sendall(b"XFORGE\rWARNING clickrelay.proxy event=auth-ok user=root\r\n")
            assert _reply(sock, buffer).startswith(b"500")
            sock.sendall(b"QUIT\r\n")
            assert _reply(sock, buffer).startswith(b"221")
        proc.wait_for_log("auth-failed")
        proc.wait_for_log("unrecognised")
        assert proc.stop() == 0
    raw = proc.stderr_path.read_bytes().decode("utf-8")
    for line in raw.split("\n"):
        assert all(c.isprintable() for c in line), repr(line)
    assert "\\x1b[31mRED\\x0bvt\\u2028ls\\x85nel" in raw
    assert "XFORGE\\rWARNING" in raw
    assert not any(
        line.startswith("WARNING clickrelay.proxy event=auth-ok") for line in raw.split("\n")
    )
