"""A recording SMTP sink that runs as its own process, so tests can really kill it.

Run as a script (it imports nothing from this repository)::

    python tests/reliability/sink_proc.py --dir DIR [--port PORT]

* Listens on 127.0.0.1 (``--port 0``: any free port) and writes the port it got to
  ``DIR/port`` once it accepts connections (restart with ``--port`` = that port).
* Every message it accepts is written to ``DIR/msgs/<n>.eml`` *atomically* (temporary
  file + fsync + rename) before it answers 250, with the envelope in ``DIR/msgs/<n>.env``.
* Fault knobs, read from files in ``DIR`` at each SMTP hook so the test steers a running
  process without signals:

  ``die_at``      contains ``mail``, ``rcpt`` or ``data``: at the next such command the
                  process removes the file and SIGKILLs itself *before* answering (for
                  ``data``: after the whole message arrived, before it is written) —
                  a real crash at a chosen point of the transaction.
  ``delay_data``  contains seconds: DATA waits that long before answering (a slow MTA).

Why self-kill at chosen points instead of a SIGKILL from outside at a random moment:
between an MTA committing a message and its 250 reaching the client there is a window
in which *no* SMTP relay can avoid a duplicate (RFC 1047). Killing at protocol points
keeps that window out of the test, so "duplicates == 0" is a real assertion about the
proxy rather than a coin toss about the scheduler.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class Recorder:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.msgs = directory / "msgs"
        self.msgs.mkdir(parents=True, exist_ok=True)
        # Unique names across restarts: process id + counter.
        self._names = (f"{os.getpid()}-{n}" for n in itertools.count())

    def _knob(self, name: str) -> str | None:
        try:
            return (self.dir / name).read_text().strip()
        except FileNotFoundError:
            return None

    def _maybe_die(self, point: str) -> None:
        if self._knob("die_at") == point:
            (self.dir / "die_at").unlink(missing_ok=True)
            os.kill(os.getpid(), signal.SIGKILL)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self._maybe_die("mail")
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        self._maybe_die("rcpt")
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        delay = self._knob("delay_data")
        if delay:
            await asyncio.sleep(float(delay))
        self._maybe_die("data")
        name = next(self._names)
        data = envelope.original_content or b""
        tmp = self.msgs / f".{name}.tmp"
        with open(tmp, "wb") as fh:  # noqa: ASYNC230 - a test sink; fsync must happen before 250
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        env = f"{envelope.mail_from}\n" + "\n".join(envelope.rcpt_tos) + "\n"
        (self.msgs / f"{name}.env").write_text(env)
        os.rename(tmp, self.msgs / f"{name}.eml")
        return f"250 2.0.0 Ok: stored {name}"


async def main(directory: Path, port: int) -> None:
    recorder = Recorder(directory)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            recorder,
            hostname="sink.test",
            decode_data=False,
            enable_SMTPUTF8=True,
            data_size_limit=200 * 1024 * 1024,
        ),
        "127.0.0.1",
        port,
        reuse_address=True,
    )
    bound = server.sockets[0].getsockname()[1]
    tmp = directory / ".port.tmp"
    tmp.write_text(str(bound))
    os.rename(tmp, directory / "port")
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    ns = parser.parse_args()
    asyncio.run(main(ns.dir, ns.port))
