"""DKIM key pairs for tests: a private key as PEM and its DNS TXT record value; a small
message signed with one."""

from __future__ import annotations

import base64

import dkim
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


def signed_sale_message(pem: bytes) -> bytes:
    """A small HTML message from news@shop.example with one link, DKIM-signed with ``pem``
    as shop.example (selector s1; From and Subject signed)."""
    data = (
        b"From: Shop <news@shop.example>\r\nTo: b@example.org\r\nSubject: Sale\r\n"
        b"Date: Thu, 26 Nov 2026 07:00:00 +0000\r\nMessage-ID: <1@shop.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<p>Sale!</p><a href="https://shop.example/sale">buy</a>\r\n'
    )
    sig = dkim.sign(data, b"s1", b"shop.example", pem, include_headers=[b"from", b"subject"])
    return bytes(sig) + data
