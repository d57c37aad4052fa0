"""What the certificate manager knows about one tracking host while it runs (the ACME
certificate it holds, its order history and back-off), and how that reads as the
:class:`~redirector.tls.status.HostStatus` record that ``clickrelay check``, preflight
and the metrics see."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass, field

from redirector.tls import status as st
from redirector.tls.certs import ACME, CertBundle, renewal_due


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class HostState:
    """One tracking host: ``acme`` is the newest ACME certificate known (served unless a
    file covers the host); ``wake`` cuts its ordering loop's wait short."""

    name: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    acme: CertBundle | None = None
    state: str = st.NONE
    detail: str | None = None
    last_attempt: datetime.datetime | None = None
    last_error: str | None = None
    failures: int = 0
    next_attempt: datetime.datetime | None = None
    orders: dict[str, int] = field(default_factory=dict)
    alarmed: bool = False


def host_status(
    name: str,
    entry: HostState | None,
    bundle: CertBundle | None,
    *,
    acme_enabled: bool,
    renew_before: datetime.timedelta,
) -> st.HostStatus:
    """The status of host ``name`` (normalised), ``bundle`` being what is served for it."""
    if entry is None:
        return st.HostStatus(host=name, state=st.NONE, detail="not a tracking host")
    state = entry.state
    if bundle is not None and bundle.source != ACME:
        state = st.VALID
    elif bundle is not None and state in (st.NONE, st.PENDING):
        state = st.VALID
    due = renewal_due(bundle, renew_before) if bundle and bundle.source == ACME else None
    return st.HostStatus(
        host=name,
        state=state,
        managed_by=bundle.source if bundle else (ACME if acme_enabled else None),
        names=bundle.names if bundle else (),
        issuer=bundle.issuer if bundle else None,
        not_after=bundle.not_after if bundle else None,
        origin=bundle.origin if bundle else None,
        detail=entry.detail,
        last_attempt=entry.last_attempt,
        last_error=entry.last_error,
        failures=entry.failures,
        next_attempt=entry.next_attempt,
        renewal_due=due,
    )
