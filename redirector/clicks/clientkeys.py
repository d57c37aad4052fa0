"""Keyed hashes of a client's full address and of its /24 (IPv6 /48), for the walk rules.

The walk rules need to know that two clicks came from the same address, or the same /24,
even when the stored address is truncated or not stored at all (``ip_mode``). So each
click carries two short keyed hashes instead: BLAKE2b keyed with a secret every node
shares (derived from the link key file's minting key) and the UTC day, so they tell
addresses apart within a day, cannot be reversed by hashing all IPv4 addresses without
the key, and do not link one client's clicks across days.
"""

from __future__ import annotations

import hashlib
import ipaddress

_MEMO_SIZE = 4096


class ClientKeys:
    """``keys(address, now)`` → ``(client_key, net_key)``; memoised per day (bounded)."""

    def __init__(self, secret: bytes) -> None:
        # Never the link key itself: a hash of it with a purpose of its own.
        self._key = hashlib.blake2b(secret, person=b"clickrelay-ck", digest_size=32).digest()
        self._memo: dict[tuple[str, int], tuple[str | None, str | None]] = {}

    def _hash(self, day: int, kind: bytes, text: str) -> str:
        h = hashlib.blake2b(key=self._key, digest_size=8)
        h.update(day.to_bytes(4, "big") + kind + text.encode("ascii", "replace"))
        return h.hexdigest()

    def keys(self, address: str | None, now: float) -> tuple[str | None, str | None]:
        if address is None:
            return None, None
        day = int(now // 86_400)
        known = self._memo.get((address, day))
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None, None
        prefix = 24 if ip.version == 4 else 48
        net = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
        answer = (self._hash(day, b"a", str(ip)), self._hash(day, b"n", str(net)))
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[(address, day)] = answer
        return answer
