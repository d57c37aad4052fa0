"""``host:port`` parsing shared by every listener and by preflight's nameservers."""

from __future__ import annotations


def parse_hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or (with a default port) a bare host."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError("expected [ipv6]:port")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif text.count(":") > 1:
        host, port_text = text, ""
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError("expected host:port")
    if not port_text:
        if default_port is None:
            raise ValueError("expected host:port")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("expected a port number 0-65535")
    return host, int(port_text)
