"""One structured log line per event: ``event=name key=value …`` (logfmt).

logfmt keeps a line greppable by humans and parseable by Loki/Vector/journalctl
pipelines without a JSON dependency in the hot path.
"""

from __future__ import annotations

import logging
from typing import Any


def _quote(value: Any) -> str:
    text = "" if value is None else str(value)
    if text and not any(c in text for c in ' "=\\\n\r\t'):
        return text
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def format_event(event: str, **fields: Any) -> str:
    parts = [f"event={_quote(event)}"]
    parts.extend(f"{key}={_quote(value)}" for key, value in fields.items())
    return " ".join(parts)


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log one logfmt line; cheap when the level is disabled."""
    if logger.isEnabledFor(level):
        logger.log(level, format_event(event, **fields))
