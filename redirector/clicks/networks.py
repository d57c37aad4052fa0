"""Address ranges of mail security scanners: which named network, if any, holds an address.

The bundled list (``redirector/clicks/data/scanner_networks.txt``, with the source of each
range) plus ``[redirector] scanner_networks_file``, same format: ``<name> <CIDR>`` per
line, ``#`` comments. Matched on the client's full address, before it is truncated for
storage; only the network's name is kept with the click.
"""

from __future__ import annotations

import bisect
import ipaddress
from importlib import resources
from pathlib import Path

from clickrelay.common.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str, source: str = "<scanner networks>") -> list[tuple[str, IPNetwork]]:
    """``(name, network)`` pairs; a malformed line is a ConfigError naming it."""
    out: list[tuple[str, IPNetwork]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        entry = line.partition("#")[0].split()
        if not entry:
            continue
        if len(entry) != 2:
            raise ConfigError(f"{source}:{lineno}: expected '<name> <CIDR>', got {line.strip()!r}")
        name, cidr = entry
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{source}:{lineno}: {exc}") from None
        out.append((name.lower(), network))
    return out


def bundled_networks() -> list[tuple[str, IPNetwork]]:
    data = resources.files("redirector.clicks").joinpath("data/scanner_networks.txt")
    return parse_networks(data.read_text("utf-8"), "scanner_networks.txt")


def load_networks(extra_file: Path | None = None) -> list[tuple[str, IPNetwork]]:
    """The bundled ranges plus the site's file; an unreadable or malformed file is an error."""
    networks = bundled_networks()
    if extra_file is None:
        return networks
    try:
        text = extra_file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"[redirector] scanner_networks_file: cannot read {extra_file}: {exc}"
        ) from None
    return networks + parse_networks(text, str(extra_file))


class NetworkMatcher:
    """Which named network holds an address: a binary search over sorted ranges.

    Ranges are merged per IP version into sorted, non-overlapping ``(first, last, name)``
    intervals (a later, narrower range inside a wider one keeps the wider one's name:
    the first listed wins), so a lookup is one ``bisect``.
    """

    def __init__(self, networks: list[tuple[str, IPNetwork]], *, memo_size: int = 4096) -> None:
        #: Answers by address text: a few busy clients make most requests (bounded).
        self._memo: dict[str, str | None] = {}
        self._memo_size = memo_size
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ranges: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        for version in (4, 6):
            spans = sorted(
                (int(net.network_address), int(net.broadcast_address), name)
                for name, net in networks
                if net.version == version
            )
            merged: list[tuple[int, int, str]] = []
            for first, last, name in spans:
                if merged and first <= merged[-1][1]:
                    if last > merged[-1][1]:
                        merged.append((merged[-1][1] + 1, last, name))
                    continue
                merged.append((first, last, name))
            self._ranges[version] = merged
            self._starts[version] = [first for first, _, _ in merged]

    def __len__(self) -> int:
        return len(self._ranges[4]) + len(self._ranges[6])

    def __call__(self, address: str | None) -> str | None:
        """The network's name for an address (text), None when no range holds it."""
        if address is None:
            return None
        try:
            return self._memo[address]
        except KeyError:
            pass
        answer = self._lookup(address)
        if len(self._memo) >= self._memo_size:
            self._memo.clear()  # crude but bounded; refills with the busy clients at once
        self._memo[address] = answer
        return answer

    def _lookup(self, address: str) -> str | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        value = int(ip)
        starts = self._starts[ip.version]
        at = bisect.bisect_right(starts, value) - 1
        if at < 0:
            return None
        first, last, name = self._ranges[ip.version][at]
        return name if first <= value <= last else None
