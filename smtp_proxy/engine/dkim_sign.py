"""DKIM: find the signatures a message carries, and re-sign a rewritten message.

Rewriting links changes the body, which breaks any DKIM signature made before clickrelay
saw the message. So a signed message is relayed unchanged, unless there is a key for
*every* signing domain (``d=``): then the message is rewritten, the old signatures are
removed and new ones are made with dkimpy, with the key's selector, canonicalization and
signed headers.

The keys come in as :class:`DkimKey` values (private key bytes, read from disk once by
the caller): the engine reads no file and no configuration.

Re-signing must not turn the proxy into a signing oracle (anyone who may relay sending a
made-up ``DKIM-Signature: d=example.com`` and getting a real one back). So a domain's
key is only used when :func:`may_resign` agrees, on a :class:`DkimVerdict` the SMTP
layer established before (the DNS lookups are its I/O): the message's own signature for
that domain verified on the bytes received, every ``From`` address is in that domain (or
a subdomain), and an authenticated user is allowed that domain: their name is an address
in it, or the users file lists it (or a parent) for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message

import dkim

from smtp_proxy.engine.headers import remove_header

_TAG_RE = re.compile(r"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)", re.I)


@dataclass(frozen=True)
class Signature:
    """What the rewriter needs from one DKIM-Signature header."""

    domain: str  # d=, lower case
    signed_headers: frozenset[str]  # h=, lower case
    selector: str = ""  # s=, lower case


@dataclass(frozen=True)
class DkimVerdict:
    """What the SMTP layer found out about a message before it is rewritten."""

    #: The ``d=`` domains (lower case) whose signature verified on the bytes received.
    verified: frozenset[str] = frozenset()
    #: The AUTH user name; None for a client relaying as a trusted network.
    auth_user: str | None = None
    #: The sender domains the users file allows that user (``clickrelay adduser
    #: --domains``), besides the domain of a user name that is an address.
    auth_domains: frozenset[str] = frozenset()


def signatures(headers: Message) -> list[Signature]:
    """The DKIM signatures in a parsed header block (unparseable ones have domain "")."""
    out = []
    for value in headers.get_all("DKIM-Signature") or []:
        tags = {k.lower(): re.sub(r"\s+", "", v) for k, v in _TAG_RE.findall(str(value))}
        signed = frozenset(h.strip().lower() for h in tags.get("h", "").split(":") if h.strip())
        selector = tags.get("s", "").lower()
        out.append(Signature(normalize_domain(tags.get("d", "")), signed, selector))
    return out


def in_domain(domain: str, parent: str) -> bool:
    """True when ``domain`` is ``parent`` or one of its subdomains (case-insensitive)."""
    domain, parent = normalize_domain(domain), normalize_domain(parent)
    return bool(parent) and (domain == parent or domain.endswith("." + parent))


def may_resign(
    keys: Sequence[DkimKey], verdict: DkimVerdict | None, from_domains: Sequence[str]
) -> bool:
    """Whether the message may be re-signed with ``keys`` (see the module docstring)."""
    if verdict is None or not from_domains:
        return False
    for key in keys:
        domain = normalize_domain(key.domain)
        if domain not in verdict.verified:
            return False
        if not all(in_domain(f, domain) for f in from_domains):
            return False
        if verdict.auth_user is not None:
            _, at, user_domain = verdict.auth_user.rpartition("@")
            named = bool(at) and in_domain(user_domain, domain)
            listed = any(in_domain(domain, allowed) for allowed in verdict.auth_domains)
            if not (named or listed):
                return False
    return True


def normalize_domain(domain: str) -> str:
    """A signing domain as signatures are compared: lower case, no trailing dot."""
    return domain.lower().rstrip(".")


@dataclass(frozen=True)
class DkimKey:
    """One re-signing key: what ``dkim.sign`` needs for one signing domain."""

    domain: str  # d=, as normalize_domain() gives it
    selector: str
    private_key: bytes  # PEM, as in the key file
    canonicalization: str  # "relaxed/relaxed", "simple/relaxed", …
    headers: tuple[str, ...]  # h=: the headers to sign


def keys_by_domain(keys: Sequence[DkimKey]) -> dict[str, DkimKey]:
    """``keys`` as the mapping :class:`TrackingSettings` holds (by normalised domain)."""
    return {normalize_domain(key.domain): key for key in keys}


def resign_keys(sigs: list[Signature], keys: Mapping[str, DkimKey]) -> list[DkimKey]:
    """The keys to re-sign with, or [] when any signature's domain has no key.

    ``keys`` is by normalised domain (:func:`keys_by_domain`)."""
    chosen: dict[str, DkimKey] = {}
    for sig in sigs:
        key = keys.get(sig.domain)
        if key is None:
            return []
        chosen[sig.domain] = key
    return list(chosen.values())


def sign_headers(message: bytes, key: DkimKey, eol: bytes = b"\r\n") -> bytes:
    """The DKIM-Signature header ``key`` makes for ``message`` (raises on a bad key)."""
    header_c, _, body_c = key.canonicalization.partition("/")
    sig = dkim.sign(
        message,
        key.selector.encode("ascii"),
        normalize_domain(key.domain).encode("ascii"),
        key.private_key,
        canonicalize=(header_c.encode("ascii"), body_c.encode("ascii")),
        include_headers=[h.lower().encode("ascii") for h in key.headers],
        linesep=eol,
    )
    if not isinstance(sig, bytes) or not sig:
        raise ValueError("dkim.sign returned no signature")
    return sig


def resign(data: bytes, header_end: int, keys: Sequence[DkimKey]) -> bytes:
    """``data`` without its DKIM-Signature headers, signed anew with each key.

    ``header_end`` is where the top-level header block ends. Raises on a bad key or
    signing error (the rewriter turns that into "relay unchanged").
    """
    eol = b"\r\n" if data[:header_end].endswith(b"\r\n") else b"\n"
    message = remove_header(data[:header_end], "DKIM-Signature") + data[header_end:]
    new_headers: list[bytes] = []
    for key in keys:
        sig = sign_headers(message, key, eol)
        if not sig.endswith(eol):
            sig = sig.rstrip(b"\r\n") + eol
        new_headers.append(sig)
    # Each signature goes on top, like any MTA adds it.
    return b"".join(reversed(new_headers)) + message
