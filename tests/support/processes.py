"""Run the real ``clickrelay`` console script as a child process, the way systemd does.

:class:`NotifySocket` is a bound unix datagram socket passed as ``$NOTIFY_SOCKET``, so a
test learns that the service is ready (``READY=1``), reloading or stopping from the
process itself, not by sleeping. :class:`ClickrelayProcess` starts the command with its
stdout/stderr appended to files (never a full pipe), sends real signals, waits for the
exit and can start the same command again (restart scenarios). :func:`run_cli` runs a
one-shot subcommand to completion. Every failure message carries the process's log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.closing import Closing
from tests.support.polling import poll

CLICKRELAY = Path(sys.executable).parent / "clickrelay"


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without what would steer the child elsewhere: another config,
    systemd's watchdog or notify socket of the process running the tests."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WATCHDOG_") and k not in ("NOTIFY_SOCKET", "CLICKRELAY_CONFIG")
    }
    env.update(extra or {})
    return env


class NotifySocket:
    """systemd's side of sd_notify: collects the datagrams a service sends."""

    def __init__(self) -> None:
        # A short directory: AF_UNIX paths are limited to 107 bytes.
        self.directory = tempfile.mkdtemp(prefix="crn", dir="/tmp")
        self.path = os.path.join(self.directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[dict[str, str]] = []

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
        self.messages.append(fields)
        return fields

    def drain(self) -> list[dict[str, str]]:
        """Every datagram already waiting, without blocking."""
        drained = []
        while (fields := self._receive(0.001)) is not None:
            drained.append(fields)
        return drained

    def wait_for(
        self,
        key: str,
        process: subprocess.Popen[bytes] | None = None,
        timeout: float = 60.0,
    ) -> dict[str, str]:
        """The next datagram carrying ``key`` (e.g. ``READY``); fails if the process exits
        first or nothing comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {key}=1 within {timeout}s; got {self.messages}")
            fields = self._receive(min(remaining, 0.5))
            if fields is not None and key in fields:
                return fields
            if fields is None and process is not None and process.poll() is not None:
                raise AssertionError(
                    f"process exited ({process.returncode}) before {key}=1; got {self.messages}"
                )


class ClickrelayProcess(Closing):
    """``clickrelay <command> [-c config]`` as a child, with $NOTIFY_SOCKET."""

    def __init__(
        self,
        command: Sequence[str | Path],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.notify = NotifySocket()
        self.command = [str(CLICKRELAY), *map(str, command)]
        self.cwd = cwd
        self.stdout_path = cwd / f"clickrelay-{os.getpid()}-{id(self)}.stdout"
        self.stderr_path = cwd / f"clickrelay-{os.getpid()}-{id(self)}.stderr"
        self.env = _child_env({"NOTIFY_SOCKET": self.notify.path, **(env or {})})
        self.start()

    def start(self) -> None:
        """Start the command (again, after :meth:`stop`); its output is appended to the
        same files, so a failure shows every run."""
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def wait_ready(self, timeout: float = 60.0) -> dict[str, str]:
        return self.wait_for("READY", timeout)

    def wait_for(self, key: str, timeout: float = 60.0) -> dict[str, str]:
        try:
            return self.notify.wait_for(key, self.proc, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstderr:\n{self.stderr()}") from None

    def wait_for_status(self, text: str, timeout: float = 60.0) -> dict[str, str]:
        """The next datagram whose STATUS contains ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(deadline - time.monotonic(), 0.1)
            fields = self.wait_for("STATUS", remaining)
            if text in fields["STATUS"]:
                return fields

    def send_signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 90.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s\n{self.stderr()}") from None

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> str:
        """Poll stderr until it contains ``text``; returns the matching line."""

        def logged() -> str | None:
            for line in self.stderr().splitlines():
                if text in line:
                    return line
            if self.proc.poll() is not None:
                raise AssertionError(f"exited before logging {text!r}:\n{self.stderr()}")
            return None

        return poll(
            logged,
            timeout=timeout,
            interval=0.05,
            failure=lambda: f"{text!r} not logged within {timeout}s:\n{self.stderr()}",
        )

    def kill(self) -> None:
        """SIGKILL if still running, and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def close(self) -> None:
        self.kill()
        self.notify.close()


def run_cli(*args: str, cwd: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLICKRELAY), *args],
        cwd=cwd,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
