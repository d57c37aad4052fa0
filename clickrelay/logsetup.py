"""Logging for the services: one logfmt line per event on stderr (journald adds time)."""

from __future__ import annotations

import logging
import sys

from clickrelay.common.logfmt import EscapingFilter


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosmtpd logs every command at INFO under "mail.log"; our per-message line suffices.
    mail_log = logging.getLogger("mail.log")
    mail_log.setLevel(logging.WARNING)
    # aiosmtpd writes raw client input (an unknown command, a PROXY header) into its
    # messages: escape them like our own fields so a client cannot forge or split lines.
    if not any(isinstance(f, EscapingFilter) for f in mail_log.filters):
        mail_log.addFilter(EscapingFilter())
