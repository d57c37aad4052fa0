"""Which of a received message's DKIM signatures verify, before it is rewritten.

The engine re-signs a message only on a :class:`~smtp_proxy.engine.dkim_sign.DkimVerdict`
(see :func:`smtp_proxy.engine.dkim_sign.may_resign`). Establishing one takes I/O, so it
happens here: the public keys (``<s>._domainkey.<d>`` TXT) are fetched with the asyncio
resolver of ``[preflight] nameservers``, then dkimpy checks the signatures on the bytes
received in a worker thread (canonicalising a large body is CPU work), reading the keys
fetched before. Only signatures of domains ``[dkim]`` holds a key for are looked at: the
others do not matter (such a message is never re-signed).

Any failure — no key in DNS, a timeout, a signature that does not verify, a dkimpy
error — means "not verified": the message is relayed unchanged (``dkim-unverified``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import dkim
import dns.asyncresolver
import dns.exception
import dns.rdtypes.ANY.TXT

from clickrelay.common.errors import ConfigError
from clickrelay.common.logfmt import log_event
from smtp_proxy.config import ProxySettings
from smtp_proxy.engine import dkim_sign, mime_parts
from smtp_proxy.preflight.dns_check import make_resolver

logger = logging.getLogger("clickrelay.proxy")


class DkimChecker:
    """Verifies the signatures a re-signing decision depends on; one per proxy."""

    def __init__(self) -> None:
        self._resolvers: dict[tuple[tuple[str, ...], float], dns.asyncresolver.Resolver] = {}

    async def verdict(
        self,
        config: ProxySettings,
        dkim_keys: Mapping[str, dkim_sign.DkimKey],
        content: bytes,
        auth_user: str | None,
        auth_domains: Sequence[str] = (),
    ) -> dkim_sign.DkimVerdict:
        """The verdict on ``content`` (``dkim_keys``: the re-signing keys by domain;
        ``auth_user``: the AUTH user, None if trusted; ``auth_domains``: the sender
        domains the users file allows that user)."""
        empty = dkim_sign.DkimVerdict(auth_user=auth_user, auth_domains=frozenset(auth_domains))
        if not dkim_keys:
            return empty
        try:
            header_end, _, _ = mime_parts.split_entity(content, 0, len(content))
            sigs = dkim_sign.signatures(mime_parts.read_headers(content[:header_end]))
        except Exception:  # unreadable headers: the engine will leave the message alone
            return empty
        keys = {key.domain for key in dkim_sign.resign_keys(sigs, dkim_keys)}
        wanted = {(s.domain, s.selector) for s in sigs if s.domain in keys and s.selector}
        if not wanted:
            return empty
        try:
            resolver = await self._resolver(config)
        except ConfigError as exc:
            log_event(logger, logging.WARNING, "dkim-verify-failed", error=exc)
            return empty
        found = await asyncio.gather(
            *(_public_key(resolver, domain, selector) for domain, selector in wanted)
        )
        records = {name: txt for name, txt in found if txt is not None}
        verified = await asyncio.to_thread(_verify, content, records, len(sigs))
        return dkim_sign.DkimVerdict(
            verified=verified, auth_user=auth_user, auth_domains=frozenset(auth_domains)
        )

    async def _resolver(self, config: ProxySettings) -> dns.asyncresolver.Resolver:
        key = (tuple(config.preflight.nameservers), config.preflight.timeout)
        resolver = self._resolvers.get(key)
        if resolver is None:
            resolver = await make_resolver(*key)
            self._resolvers = {key: resolver}  # only the current config's is kept
        return resolver


def _key_name(domain: str, selector: str) -> bytes:
    return f"{selector}._domainkey.{domain}".lower().encode("ascii", "replace")


async def _public_key(
    resolver: dns.asyncresolver.Resolver, domain: str, selector: str
) -> tuple[bytes, bytes | None]:
    """(``<selector>._domainkey.<domain>``, its TXT value or None)."""
    name = _key_name(domain, selector)
    try:
        answer = await resolver.resolve(
            name.decode("ascii") + ".", "TXT", raise_on_no_answer=False, search=False
        )
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return name, None
    for rdata in answer.rrset or ():
        if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
            return name, b"".join(rdata.strings)
    return name, None


def _verify(content: bytes, records: dict[bytes, bytes], count: int) -> frozenset[str]:
    """The ``d=`` domains whose signature verifies, with the keys in ``records``."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.lower().rstrip(b"."))

    verified: set[str] = set()
    try:
        checker = dkim.DKIM(content)
    except Exception:
        return frozenset()
    for index in range(count):
        try:
            if checker.verify(idx=index, dnsfunc=dnsfunc) and checker.domain:
                verified.add(checker.domain.decode("ascii", "replace").lower().rstrip("."))
        except Exception:  # dkimpy raises on malformed signatures and missing keys
            continue
    return frozenset(verified)
