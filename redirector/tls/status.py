"""What is known about one tracking host's certificate: the record ``clickrelay check``,
preflight and the metrics read (pure data; JSON both ways, so another process — the
proxy, ``check`` — reads the same record from the TLS storage)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

#: ``state`` values.
NONE = "none"  # nothing to serve and nothing under way (ACME off, no file)
PENDING = "pending"  # an order is under way or waiting for DNS
FAILED = "failed"  # the last order failed; ``last_error`` is the CA's message
VALID = "valid"  # a certificate is installed


def _time(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: Any) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class HostStatus:
    """``managed_by``: ``file``, ``acme`` or None. The certificate fields describe the
    certificate served now (None when there is none). ``failures`` counts orders failed
    in a row; ``next_attempt`` is when the next order may start (back-off)."""

    host: str
    state: str
    managed_by: str | None = None
    names: tuple[str, ...] = ()
    issuer: str | None = None
    not_after: datetime.datetime | None = None
    origin: str | None = None
    detail: str | None = None
    last_attempt: datetime.datetime | None = None
    last_error: str | None = None
    failures: int = 0
    next_attempt: datetime.datetime | None = None
    renewal_due: datetime.datetime | None = None

    @property
    def renewal_failing(self) -> bool:
        return self.failures > 0

    def days_left(self, now: datetime.datetime) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - now).total_seconds() / 86400

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "state": self.state,
            "managed_by": self.managed_by,
            "names": list(self.names),
            "issuer": self.issuer,
            "not_after": _time(self.not_after),
            "origin": self.origin,
            "detail": self.detail,
            "last_attempt": _time(self.last_attempt),
            "last_error": self.last_error,
            "failures": self.failures,
            "next_attempt": _time(self.next_attempt),
            "renewal_due": _time(self.renewal_due),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> HostStatus:
        return cls(
            host=str(doc["host"]),
            state=str(doc.get("state", NONE)),
            managed_by=doc.get("managed_by"),
            names=tuple(doc.get("names") or ()),
            issuer=doc.get("issuer"),
            not_after=_parse_time(doc.get("not_after")),
            origin=doc.get("origin"),
            detail=doc.get("detail"),
            last_attempt=_parse_time(doc.get("last_attempt")),
            last_error=doc.get("last_error"),
            failures=int(doc.get("failures") or 0),
            next_attempt=_parse_time(doc.get("next_attempt")),
            renewal_due=_parse_time(doc.get("renewal_due")),
        )


def status_from_json(data: bytes) -> HostStatus | None:
    """A status record read from the storage (None if it is not one)."""
    try:
        doc: Any = json.loads(data)
        return HostStatus.from_json(doc) if isinstance(doc, dict) else None
    except (ValueError, KeyError, TypeError):
        return None
