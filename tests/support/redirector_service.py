"""A whole redirector service on loopback ports chosen by the kernel, with its click store
in the test's temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from redirector.config import RedirectorConfig
from redirector.service import RedirectorService
from redirector.tokens import Keyring


def loopback_config(store_dir: Path, **kwargs: Any) -> RedirectorConfig:
    """Public and admin listeners on 127.0.0.1 port 0, SQLite store in ``store_dir``."""
    return RedirectorConfig(
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        store=f"sqlite:{store_dir / 'clicks.sqlite3'}",
        **kwargs,
    )


@asynccontextmanager
async def running_redirector(
    config: RedirectorConfig, keyring: Keyring, **kwargs: Any
) -> AsyncIterator[RedirectorService]:
    """``RedirectorService(config, keyring, **kwargs)`` started, and stopped on the way out."""
    service = RedirectorService(config, keyring, **kwargs)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(5)
