"""The ``with`` protocol of the test peers that have a ``close()`` (DNS server, Postfix,
``clickrelay`` processes): closed on the way out, whatever happened inside."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
