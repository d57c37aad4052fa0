"""Certificates as data: parse a PEM bundle, say which hosts it covers, judge its expiry.

Pure: no files, no sockets, no clock of its own (``now`` is always passed in), so every
rule here is tested with hand-made certificates and fixed times.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from clickrelay.common.errors import ClickrelayError
from redirector.location import ascii_host

#: Who put a certificate in place: a PEM file you bring, or our ACME client.
FILE = "file"
ACME = "acme"

_PEM_BLOCK_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL
)


class CertError(ClickrelayError):
    """A certificate bundle cannot be used (not PEM, no key, key does not match, …)."""


def tls_host(host: str) -> str:
    """The form a host is compared in: lower case, punycode, no trailing dot.

    TLS clients send SNI in this form (Python's ``sni_callback`` receives it so too).
    """
    return ascii_host(host.strip().rstrip(".")).lower()


@dataclass(frozen=True)
class CertBundle:
    """One certificate with its chain and private key, ready for an ``SSLContext``.

    ``names`` are the subjectAltName DNS names (lower case, punycode): browsers ignore
    the subject CN, so a certificate without SANs covers nothing. ``origin`` says where
    it came from (a file path, or ``acme``) for ``clickrelay check`` and the logs.
    """

    names: tuple[str, ...]
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    fingerprint: str
    chain_pem: bytes
    key_pem: bytes
    source: str
    origin: str

    def covers(self, host: str) -> bool:
        wanted = tls_host(host)
        return any(name_matches(name, wanted) for name in self.names)

    def seconds_left(self, now: datetime.datetime) -> float:
        return (self.not_after - now).total_seconds()

    def days_left(self, now: datetime.datetime) -> float:
        return self.seconds_left(now) / 86400

    def valid_at(self, now: datetime.datetime) -> bool:
        return self.not_before <= now < self.not_after


def name_matches(pattern: str, host: str) -> bool:
    """RFC 6125: exact, or ``*.`` standing for exactly one leftmost label."""
    if pattern == host:
        return True
    if pattern.startswith("*."):
        head, dot, rest = host.partition(".")
        return bool(head) and bool(dot) and rest == pattern[2:]
    return False


def issuer_text(cert: x509.Certificate) -> str:
    names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return cert.issuer.rfc4514_string()


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(dict.fromkeys(tls_host(n) for n in san.value.get_values_for_type(x509.DNSName)))


def _public_der(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def parse_bundle(data: bytes, *, source: str, origin: str) -> CertBundle:
    """A PEM blob holding one private key and the certificate chain (leaf first).

    Raises :class:`CertError` saying what is wrong: no certificate, no key, several
    keys, a key that does not belong to the leaf certificate, or unparsable PEM.
    """
    keys: list[bytes] = []
    certs: list[bytes] = []
    for match in _PEM_BLOCK_RE.finditer(data):
        label = match.group(1)
        if label.endswith(b"PRIVATE KEY"):
            keys.append(match.group(0))
        elif label == b"CERTIFICATE":
            certs.append(match.group(0))
    if not certs:
        raise CertError("no certificate (-----BEGIN CERTIFICATE-----) in the PEM data")
    if not keys:
        raise CertError("no private key (-----BEGIN PRIVATE KEY-----) in the PEM data")
    if len(keys) > 1:
        raise CertError(f"{len(keys)} private keys in the PEM data, expected one")
    try:
        key = serialization.load_pem_private_key(keys[0], password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"unreadable private key: {exc}") from None
    try:
        chain = [x509.load_pem_x509_certificate(block) for block in certs]
    except ValueError as exc:
        raise CertError(f"unreadable certificate: {exc}") from None
    leaf = chain[0]
    leaf_public = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if _public_der(key) != leaf_public:
        raise CertError("the private key does not belong to the first certificate")
    return CertBundle(
        names=dns_names(leaf),
        issuer=issuer_text(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        chain_pem=b"".join(certs),
        key_pem=keys[0],
        source=source,
        origin=origin,
    )


def new_key_pem() -> bytes:
    """A fresh ECDSA P-256 private key (PKCS#8 PEM) for one host's certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def select(bundles: Iterable[CertBundle], host: str, now: datetime.datetime) -> CertBundle | None:
    """The certificate to serve for ``host``.

    A currently valid certificate wins over an expired or not-yet-valid one; among valid
    ones a file you placed wins over ACME for the names it covers, then the one that lasts
    longest. A covering certificate that is no longer valid is still returned when there
    is nothing better (a client then sees *why* it fails, and ``check`` says so).
    """
    covering = [b for b in bundles if b.covers(host)]
    if not covering:
        return None

    def rank(bundle: CertBundle) -> tuple[bool, bool, datetime.datetime]:
        return (bundle.valid_at(now), bundle.source == FILE, bundle.not_after)

    return max(covering, key=rank)


class Health(enum.Enum):
    """How a certificate stands for one host at one moment."""

    OK = "ok"
    #: Inside the renewal window (see :func:`renewal_due`), still valid.
    RENEW = "renew"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    NAME_MISMATCH = "name-mismatch"


def health(
    bundle: CertBundle, host: str, now: datetime.datetime, renew_before: datetime.timedelta
) -> Health:
    if not bundle.covers(host):
        return Health.NAME_MISMATCH
    if now >= bundle.not_after:
        return Health.EXPIRED
    if now < bundle.not_before:
        return Health.NOT_YET_VALID
    if now >= renewal_due(bundle, renew_before):
        return Health.RENEW
    return Health.OK


def renewal_due(bundle: CertBundle, renew_before: datetime.timedelta) -> datetime.datetime:
    """When renewal should start: ``renew_before`` before expiry, or the last third of a
    certificate's life when that is shorter (a test CA's validity of minutes, or a CA
    issuing certificates shorter than the renewal window)."""
    lifetime = bundle.not_after - bundle.not_before
    return bundle.not_after - min(renew_before, lifetime / 3)
