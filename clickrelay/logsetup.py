"""Logging for the services: one logfmt line per event on stderr (journald adds time)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosmtpd logs every command at INFO under "mail.log"; our per-message line suffices.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
