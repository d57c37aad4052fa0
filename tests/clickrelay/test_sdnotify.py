"""sd_notify over a real unix datagram socket (path and abstract), as systemd provides it."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickrelay.sdnotify import Notifier, socket_address, watchdog_interval


class Receiver:
    """A bound datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str, env_value: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(10)
        self.env_value = env_value

    def recv(self) -> list[str]:
        return self.sock.recv(65536).decode("utf-8").split("\n")

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(65536, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(10)
        return True


@pytest.fixture
def path_receiver() -> Iterator[Receiver]:
    # A short directory: AF_UNIX paths are limited to 107 bytes.
    directory = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
    path = os.path.join(directory, "notify")
    receiver = Receiver(path, path)
    yield receiver
    receiver.sock.close()
    shutil.rmtree(directory)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"clickrelay-test-{uuid.uuid4().hex}"
    receiver = Receiver("\0" + name, "@" + name)
    yield receiver
    receiver.sock.close()


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == "\0abc"
    assert socket_address("@") is None
    assert socket_address("") is None
    assert socket_address("relative/path") is None
    assert socket_address("vsock:2:1234") is None


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "ten"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"},  # meant for another process
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"},
    ],
)
def test_no_watchdog_when_not_meant_for_us(env: dict[str, str]) -> None:
    assert watchdog_interval(env, 42) is None


def test_without_notify_socket_everything_is_a_noop() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.stopping() is False
    assert notifier.sent == 0


def test_ready_with_status_on_a_path_socket(path_receiver: Receiver) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": path_receiver.env_value})
    assert notifier.enabled
    assert notifier.ready("listening on 127.0.0.1:2525") is True
    assert path_receiver.recv() == ["READY=1", "STATUS=listening on 127.0.0.1:2525"]
    assert notifier.sent == 1


def test_abstract_socket(abstract_receiver: Receiver) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": abstract_receiver.env_value})
    assert notifier.stopping("draining") is True
    assert abstract_receiver.recv() == ["STOPPING=1", "STATUS=draining"]


def test_reloading_carries_monotonic_usec(path_receiver: Receiver) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": path_receiver.env_value})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = path_receiver.recv()
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_status_and_watchdog_messages(path_receiver: Receiver) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": path_receiver.env_value})
    notifier.status("a\nREADY=1")  # a newline must not smuggle a second assignment
    assert path_receiver.recv() == ["STATUS=a READY=1"]
    notifier.watchdog()
    assert path_receiver.recv() == ["WATCHDOG=1"]


def test_missing_socket_returns_false_without_raising(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert notifier.ready() is False
    assert notifier.sent == 0


@settings(max_examples=60, deadline=None)
@given(st.text())
def test_any_status_text_stays_one_assignment(text: str) -> None:
    name = f"clickrelay-prop-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready(text)
        lines = sock.recv(65536).decode("utf-8").split("\n")
    assert lines[0] == "READY=1"
    assert len(lines) <= 2
    if len(lines) == 2:
        assert lines[1].startswith("STATUS=")


async def test_watchdog_loop_pings_until_cancelled(path_receiver: Receiver) -> None:
    notifier = Notifier(
        {
            "NOTIFY_SOCKET": path_receiver.env_value,
            "WATCHDOG_USEC": "20000",
            "WATCHDOG_PID": str(os.getpid()),
        }
    )
    assert notifier.watchdog_interval == 0.01
    task = asyncio.create_task(notifier.watchdog_loop())
    loop = asyncio.get_running_loop()
    path_receiver.sock.setblocking(False)
    pings = [await loop.sock_recv(path_receiver.sock, 100) for _ in range(3)]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pings == [b"WATCHDOG=1"] * 3


async def test_watchdog_loop_returns_when_not_configured(path_receiver: Receiver) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": path_receiver.env_value})
    async with asyncio.timeout(10):
        await notifier.watchdog_loop()
    assert not path_receiver.pending()
