"""The ``with`` protocols of the test peers, closed on the way out whatever happened inside.

* :class:`Closing` — peers that run once made (DNS server, Postfix, ``clickrelay``
  processes): ``with`` closes them.
* :class:`Running` — peers that ``with`` also starts (Pebble): ``start()`` on the way in,
  ``stop()`` on the way out.
* :class:`AsyncRunning` — the same for asyncio peers (SMTP sink, TCP relay): ``await
  start()`` on the way in, ``await close()`` on the way out.
"""

from __future__ import annotations

from typing import Self


class Closing:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Running(Closing):
    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        self.start()
        return self


class AsyncRunning:
    async def start(self) -> object:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
