"""Loopback ports for tests that run real servers: free ones, refusing ones, open ones."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.polling import wait_until


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports that were free a moment ago, all different (for settings that must be known
    before a server starts, such as a base URL naming its port, or Postfix, which cannot
    be told to use port 0). All sockets are bound before any is closed, so the ports
    differ."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port that was free a moment ago (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


@contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port where connections are refused for the whole ``with`` block.

    A port from :func:`free_ports` is free only a moment: under load another process may
    listen on it, or the kernel may hand it out as the source port of a connection to
    itself (a TCP self-connect), and then it answers. A socket bound but not listening
    keeps the port taken and refuses every connection.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts a TCP connection on ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on ``host:port``."""
    wait_until(
        lambda: port_open(port, host), timeout, f"a listener on {host}:{port}", interval=0.05
    )
