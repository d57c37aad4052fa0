"""DKIM key pairs for tests: a private key as PEM and its DNS TXT record value."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def new_dkim_key() -> tuple[bytes, bytes]:
    """A fresh 2048-bit RSA key: (private key PEM, ``v=DKIM1; k=rsa; p=…`` TXT value)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def txt_record(value: bytes) -> str:
    """``value`` as a TXT record's text for the test DNS server: quoted strings of at most
    200 characters (a TXT string holds 255 octets; a 2048-bit key needs two or more)."""
    text = value.decode()
    return " ".join(f'"{text[i : i + 200]}"' for i in range(0, len(text), 200))
