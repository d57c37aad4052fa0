"""What ``clickrelay check`` and a standalone proxy know about the tracking hosts'
certificates without running the redirector: the status records the redirector writes
to the TLS storage (ACME), or the certificate files of ``[redirector] tls_certificates``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

from clickrelay.common.errors import ConfigError
from clickrelay.common.logfmt import log_event
from clickrelay.config import Config
from redirector.tls import status as st
from redirector.tls.certs import CertBundle, select, tls_host
from redirector.tls.files import load_certificate_files
from redirector.tls.status import status_from_json
from redirector.tls.storage import STATUS, TlsStorage, TlsStorageError, open_tls_storage

log = logging.getLogger("clickrelay.tls")


class StoredTlsStatus:
    """``await source(host)`` → the redirector's status record for the host, if any.

    With ACME on, the record the redirector (any node) wrote to the TLS storage; else a
    record made from the certificate files that cover the host. ``aclose()`` at the end.
    """

    def __init__(self, config: Config) -> None:
        self._config = config
        self._storage: TlsStorage | None = None
        if config.acme.enabled:
            self._storage = open_tls_storage(config.redirector.store, config.data_dir)
        self._files: list[CertBundle] | None = None

    async def __call__(self, host: str) -> st.HostStatus | None:
        name = tls_host(host)
        if self._storage is not None:
            try:
                data = await self._storage.get(STATUS, name)
            except TlsStorageError as exc:
                log_event(log, logging.WARNING, "tls-status-unreadable", error=str(exc))
                data = None
            if data is not None:
                return status_from_json(data)
        if self._files is None:
            try:
                self._files = await asyncio.to_thread(
                    load_certificate_files, self._config.redirector.tls_certificates
                )
            except ConfigError as exc:
                log_event(log, logging.WARNING, "tls-files-unreadable", error=str(exc))
                self._files = []
        bundle = select(self._files, name, datetime.datetime.now(datetime.UTC))
        if bundle is None:
            return None
        return st.HostStatus(
            host=name,
            state=st.VALID,
            managed_by=bundle.source,
            names=bundle.names,
            issuer=bundle.issuer,
            not_after=bundle.not_after,
            origin=bundle.origin,
        )

    async def aclose(self) -> None:
        if self._storage is not None:
            await self._storage.close()
