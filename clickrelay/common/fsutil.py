"""Crash-safe file writes shared by the maildir upstream and the users file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(
    tmp: Path, target: Path, data: bytes, *, prepare: Callable[[int], None] | None = None
) -> None:
    """Write ``data`` to the new file ``tmp`` (mode 0600), fsync it, rename it onto ``target``
    and fsync ``target``'s directory, so after a crash ``target`` is absent, old or complete —
    never partial. ``prepare(fd)`` runs before the data is written (ownership, mode).
    ``tmp`` must be on ``target``'s filesystem; it is removed if anything fails. Blocking.
    """
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            if prepare is not None:
                prepare(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
