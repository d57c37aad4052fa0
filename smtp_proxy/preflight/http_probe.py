"""The HTTP half of preflight: does ``GET <base_url>/healthz`` reach *our* redirector?

The connection goes to the addresses the preflight's own DNS step found (a pinned
aiohttp resolver), not to whatever the system resolver says, while the URL — and so the
``Host`` header, TLS SNI and certificate check — keeps the tracking host name.

The redirector's ``/healthz`` contract: HTTP 200 with a JSON object
``{"service": "clickrelay-redirector", "version": "…", "key_ids": ["<8-hex>", …],
"store": {"state": "ok" | "down" | …}}``. A store outage is reported but is not a
failure: redirects never need the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from clickrelay.common import __version__
from smtp_proxy.preflight.verdicts import ProbeResult, Verdict

SERVICE = "clickrelay-redirector"
#: A /healthz answer is small; more than this is not our redirector.
MAX_BODY = 65536


class PinnedResolver(AbstractResolver):
    """An aiohttp resolver that answers every lookup with the addresses given up front."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self._addresses = tuple(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for address in self._addresses:
            fam = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, fam):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port,
                    family=fam,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        if not results:
            raise OSError(f"no address found for {host}")
        return results

    async def close(self) -> None:
        return None


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate verification against ``ca_file``, or the system CAs when None."""
    if ca_file is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_file))


def healthz_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/healthz"


def _judge(url: str, address: str | None, status: int, body: bytes, key_id: str) -> ProbeResult:
    """Pure: the verdict for an HTTP answer."""
    if status != 200:
        return ProbeResult(url, Verdict.PROBE_HTTP_STATUS, f"HTTP {status}", address, status)
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        snippet = body[:60].decode("utf-8", "replace")
        return ProbeResult(
            url, Verdict.WRONG_RESPONDER, f"HTTP 200 but not JSON: {snippet!r}", address, status
        )
    if not isinstance(doc, dict) or doc.get("service") != SERVICE:
        service = doc.get("service") if isinstance(doc, dict) else None
        return ProbeResult(
            url,
            Verdict.WRONG_RESPONDER,
            f"HTTP 200 but service is {service!r}, expected {SERVICE!r}",
            address,
            status,
            service=str(service) if service is not None else None,
        )
    raw_ids = doc.get("key_ids")
    key_ids = tuple(str(k) for k in raw_ids) if isinstance(raw_ids, list) else ()
    version = str(doc.get("version", "")) or None
    store = doc.get("store")
    store_state = str(store.get("state")) if isinstance(store, dict) else None
    if key_id in key_ids:
        verdict = Verdict.OK
        detail = f"HTTP 200 {SERVICE} {version or '?'}, key {key_id} held, store {store_state}"
    else:
        verdict = Verdict.KEY_MISMATCH
        held = ", ".join(key_ids) or "none"
        detail = f"redirector holds keys [{held}], not the minting key {key_id}"
    return ProbeResult(
        url,
        verdict,
        detail,
        address,
        status,
        service=SERVICE,
        version=version,
        key_ids=key_ids,
        store_state=store_state,
    )


async def probe(
    base_url: str,
    *,
    key_id: str,
    addresses: Sequence[str] | None,
    time_limit: float,
    ca_file: Path | None = None,
) -> ProbeResult:
    """GET ``<base_url>/healthz`` and judge the answer.

    ``addresses``: where to connect (from the preflight resolver), tried in order while
    connections are refused, so the report names the address that answered; None lets
    aiohttp resolve the host itself (IP literals and ``localhost``). ``time_limit``
    bounds the whole probe. Never raises for network trouble: every failure is a verdict.
    """
    url = healthz_url(base_url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + time_limit
    targets: list[str | None] = list(addresses) if addresses else [None]
    refused: list[str] = []
    result: ProbeResult | None = None
    for address in targets:
        remaining = deadline - loop.time()
        if result is not None and remaining <= 0:
            break
        result = await _attempt(url, address, key_id, max(remaining, 0.001), ca_file)
        if result.verdict is not Verdict.PROBE_REFUSED:
            return result
        if address is not None:
            refused.append(address)
    assert result is not None
    if len(refused) > 1:
        result = dataclasses.replace(result, address=", ".join(refused))
    return result


async def _attempt(
    url: str, address: str | None, key_id: str, time_limit: float, ca_file: Path | None
) -> ProbeResult:
    """One GET, connecting to ``address`` (or wherever aiohttp resolves the host)."""
    resolver = PinnedResolver([address]) if address else None
    connector = aiohttp.TCPConnector(resolver=resolver, force_close=True, limit=1)
    context: ssl.SSLContext | bool = ssl_context(ca_file) if url.startswith("https:") else True
    headers = {"User-Agent": f"clickrelay-preflight/{__version__}", "Accept": "application/json"}
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=time_limit),
                headers=headers,
            ) as session,
            session.get(url, allow_redirects=False, ssl=context) as response,
        ):
            body = await response.content.read(MAX_BODY)
            return _judge(url, address, response.status, body, key_id)
    except TimeoutError:
        return ProbeResult(
            url, Verdict.PROBE_TIMEOUT, f"no complete answer within {time_limit:g}s", address
        )
    except aiohttp.ClientSSLError as exc:
        return ProbeResult(url, Verdict.PROBE_TLS_ERROR, f"TLS error: {exc}", address)
    except aiohttp.ClientConnectorError as exc:
        return ProbeResult(
            url, Verdict.PROBE_REFUSED, f"cannot connect: {exc.strerror or exc}", address
        )
    except ssl.SSLError as exc:
        return ProbeResult(url, Verdict.PROBE_TLS_ERROR, f"TLS error: {exc}", address)
    except aiohttp.ClientError as exc:
        detail = f"did not answer HTTP properly: {type(exc).__name__}: {exc}"
        return ProbeResult(url, Verdict.WRONG_RESPONDER, detail, address)
