"""Links switched off without rotating the key: by queue id (every link of one message)
or by destination host (and its subdomains).

A blocklist file (``[redirector] blocklist_file``), one rule per line, ``#`` comments::

    queue 1m918sja48yfb3       # every link of that message
    host  phish.example        # every link to phish.example or *.phish.example

It is consulted after a token decoded (so it costs nothing for junk), and a blocked link
gets the redirector's one 404 with refusal reason ``blocked``: to the outside it looks
like any link we do not know (a 410 would confirm to a prober that the token is real).
Read at start and again on SIGHUP; a file that does not parse keeps the old list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from clickrelay.common.errors import ConfigError
from redirector.hosts import normalize_host
from redirector.token_types import LinkData

#: Where a browser ends the authority of an http(s) URL (WHATWG: "\" is "/" there).
_AUTHORITY_END = "/\\?#"


def destination_host(url: str) -> str:
    """The host a browser sends the click to, normalised: userinfo and port dropped,
    percent-escapes decoded, IDN in punycode."""
    rest = url.partition("://")[2]
    end = len(rest)
    for sep in _AUTHORITY_END:
        pos = rest.find(sep)
        if pos != -1 and pos < end:
            end = pos
    authority = rest[:end].rpartition("@")[2]
    if authority.startswith("["):
        host = authority[: authority.find("]") + 1]
    else:
        host = authority.partition(":")[0]
    return normalize_host(unquote(host))


@dataclass(frozen=True)
class Blocklist:
    queue_ids: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()
    source: str = "<none>"

    def __bool__(self) -> bool:
        return bool(self.queue_ids or self.hosts)

    def blocks(self, link: LinkData) -> bool:
        if link.queue_id in self.queue_ids:
            return True
        if not self.hosts:
            return False
        host = destination_host(link.url)
        while host:
            if host in self.hosts:
                return True
            host = host.partition(".")[2]
        return False


EMPTY = Blocklist()


def parse_blocklist(text: str, source: str = "<blocklist>") -> Blocklist:
    queue_ids: set[str] = set()
    hosts: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.partition("#")[0].split()
        if not words:
            continue
        if len(words) != 2 or words[0] not in ("queue", "host"):
            raise ConfigError(
                f"{source}:{lineno}: expected 'queue <queue id>' or 'host <host name>',"
                f" got {line.strip()!r}"
            )
        kind, value = words
        if kind == "queue":
            queue_ids.add(value)
        else:
            host = normalize_host(value)
            if not host or "/" in host or "@" in host:
                raise ConfigError(f"{source}:{lineno}: expected a host name, got {value!r}")
            hosts.add(host)
    return Blocklist(frozenset(queue_ids), frozenset(hosts), source)


def load_blocklist(path: Path | None) -> Blocklist:
    """The blocklist in ``path`` (None: nothing blocked); ConfigError if unreadable."""
    if path is None:
        return EMPTY
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: blocklist file not found (create it, even empty, or unset"
            " [redirector] blocklist_file)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read blocklist file: {exc}") from None
    return parse_blocklist(text, str(path))
