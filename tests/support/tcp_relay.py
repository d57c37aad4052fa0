"""A TCP relay on 127.0.0.1 that a test can cut and restore: a real connection fault.

Put it between a client and a server (e.g. asyncpg and PostgreSQL); ``cut()`` aborts
every relayed connection (both sides see a reset) and from then on new connections are
either closed at once (``hold=False``, like a refused connection) or accepted and left
silent (``hold=True``, like a black-holed network: the client's own timeout fires).
``restore()`` relays new connections again (held ones are closed: their clients have
given up or will see a reset and reconnect).

Usage::

    async with TcpRelay(("127.0.0.1", 5432)) as relay:
        dsn = f"postgresql://user@127.0.0.1:{relay.port}/db"
        ...
        await relay.cut()
        ...
        relay.restore()
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.closing import AsyncRunning


class TcpRelay(AsyncRunning):
    """Forward 127.0.0.1:<port> (port 0 → chosen by the OS) to ``target``."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._server: asyncio.Server | None = None
        self._cut = False
        self._hold = False
        #: Relayed connections (client side, target side) and the task relaying each.
        self._pairs: dict[
            tuple[asyncio.StreamWriter, asyncio.StreamWriter], asyncio.Task[None]
        ] = {}
        self._held: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._restored = asyncio.Event()
        #: Connections accepted (whatever happened to them): lets tests see reconnects.
        self.accepted = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def active(self) -> int:
        """Connections currently relayed."""
        return len(self._pairs)

    async def start(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        try:
            if self._cut:
                if self._hold:
                    self._held.add(writer)
                    try:
                        await self._restored.wait()
                    finally:
                        self._held.discard(writer)
                await _close(writer)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                await _close(writer)
                return
            pair = (writer, up_writer)
            self._pairs[pair] = task
            try:
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            finally:
                self._pairs.pop(pair, None)
                await _close(up_writer)
                await _close(writer)
        finally:
            self._handlers.discard(task)

    async def cut(self, *, hold: bool = False) -> None:
        """Abort every relayed connection; refuse (or, with ``hold``, stall) new ones.

        Returns once every relayed connection is gone.
        """
        self._cut = True
        self._hold = hold
        self._restored.clear()
        tasks = list(self._pairs.values())
        for client, upstream in list(self._pairs):
            client.transport.abort()
            upstream.transport.abort()
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    def restore(self) -> None:
        """Relay new connections again; connections held during the cut are closed."""
        self._cut = False
        self._restored.set()

    async def close(self) -> None:
        self.restore()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for client, upstream in list(self._pairs):
            client.transport.abort()
            upstream.transport.abort()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until EOF (then pass the close on) or an error (then reset the other side)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        writer.transport.abort()
    else:
        writer.close()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()
