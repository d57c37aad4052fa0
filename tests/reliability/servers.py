"""Raw HTTP for attacks on the redirector.

:func:`raw_http` sends bytes as they are (no client-side normalisation of the path or
headers) and parses the reply head; attacks are written byte for byte.
:func:`forge_token` seals arbitrary bytes with our own key (a stand-in for a minting bug).
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import zlib
from dataclasses import dataclass

from redirector.tokens import Keyring


@dataclass(frozen=True)
class RawReply:
    status: int
    head: bytes  # status line + headers, raw
    body: bytes

    def header(self, name: str) -> list[bytes]:
        """Every value of header ``name`` (raw bytes, case-insensitive name)."""
        out: list[bytes] = []
        for line in self.head.split(b"\r\n")[1:]:
            key, sep, value = line.partition(b":")
            if sep and key.strip().lower() == name.lower().encode():
                out.append(value.strip())
        return out


def raw_http(port: int, request: bytes, *, timeout: float = 20.0) -> RawReply | None:
    """Send ``request`` verbatim; the first reply, or None if the server closed without one.

    Reads until the reply head and its ``Content-Length`` body are in (or the server
    closes). The write side is left open: aiohttp treats a half-close as a client that
    went away.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused part way; it may still have answered
        data = b""
        while True:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                head = data[:head_end]
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length" and value.strip().isdigit():
                        length = int(value.strip())
                if request.startswith(b"HEAD") or len(data) - head_end - 4 >= length:
                    break
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise AssertionError(f"not an HTTP reply: {data[:200]!r}")
    return RawReply(int(parts[1]), head, body)


def get(path: str | bytes, extra_headers: bytes = b"") -> bytes:
    target = path.encode("latin-1") if isinstance(path, str) else path
    return (
        b"GET "
        + target
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + extra_headers
        + b"\r\n"
    )


def forge_token(keyring: Keyring, url_bytes: bytes, *, queue_id: str = "FORGED") -> str:
    """A token sealed with OUR key around ANY bytes, bypassing ``seal``'s URL checks.

    Mirrors the documented layout in ``redirector/tokens.py``: it stands for a bug in a
    future minting path, so the redirector's own refusal (not ``seal``'s) is what is tested.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

    key = keyring.keys[0]
    qid = queue_id.encode()
    flags = 0
    packed = url_bytes
    if len(url_bytes) > 96:
        packed = zlib.compress(url_bytes, 9)
        flags = 1
    plaintext = (
        struct.pack(">BII", flags, 1_700_000_000, 0)
        + bytes((len(qid),))
        + qid
        + struct.pack(">H", 0)
        + packed
    )
    header = struct.pack(">B4s", 1, key.key_id)
    nonce = os.urandom(12)
    sealed = AESGCMSIV(key.secret).encrypt(nonce, plaintext, header)
    return base64.urlsafe_b64encode(header + nonce + sealed).rstrip(b"=").decode("ascii")
