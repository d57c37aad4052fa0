"""The DNS check that must pass before a tracking host's certificate is ordered (so a CA
is never asked for a name that does not point at us yet)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from smtp_proxy.config import ProxySettings
from smtp_proxy.preflight.dns_check import check_dns, domain_skip_reason, make_resolver


def dns_gate(config: ProxySettings) -> Callable[[str], Awaitable[str | None]]:
    """``await gate(host)``: None when the host's DNS check passes (CNAME to
    ``[tracking] cname_target`` when set, and an address), else why it does not."""
    pre = config.preflight
    cname_target = config.tracking.cname_target

    async def gate(host: str) -> str | None:
        reason = domain_skip_reason(host)
        if reason is not None:
            return f"{reason}: no public CA certifies it"
        resolver = await make_resolver(pre.nameservers, pre.timeout)
        outcome = await check_dns(
            host, cname_target, resolver, want_addresses=True, nameservers=pre.nameservers
        )
        if outcome.verdict is not None:
            return f"{outcome.verdict.value}: {outcome.detail}"
        if not outcome.addresses:
            return f"{host} has no A or AAAA address"
        return None

    return gate
