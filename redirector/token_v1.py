"""Version 1 link tokens: still decoded (links already sent keep working), no longer
minted except by :func:`seal` for tests and the length benchmark.

Layout (before base64url without padding)::

    version (1) | key id (4) | nonce (12) | AES-GCM-SIV ciphertext + tag (16)

The header (version + key id) is the associated data. The plaintext is::

    flags (1) | sent_at (u32, unix s) | link index (u32) | len(queue id) (u8) | queue id
              | len(recipient) (u16) | recipient | url (rest, utf-8; zlib when flags & 1)

Not bound to a tracking host: a version 1 token redirects on any host the redirector
answers for.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import zlib

from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from clickrelay.common.errors import TokenError
from redirector.token_types import MAX_URL_BYTES, LinkData, url_is_sealable

VERSION = 1
KEY_ID_LEN = 4
NONCE_LEN = 12
TAG_LEN = 16
HEADER = struct.Struct(">B4s")
#: flags, sent_at, link index and the queue id length: packed and read in one call.
_FIXED_QLEN = struct.Struct(">BIIB")
#: The recipient length.
_U16 = struct.Struct(">H")
_FLAG_ZLIB = 1
MIN_TOKEN_BYTES = HEADER.size + NONCE_LEN + TAG_LEN + _FIXED_QLEN.size + _U16.size + len("http://x")
#: Upper bound on a token we are willing to decode; longer input is rejected before base64.
MAX_TOKEN_CHARS = 4 * (MAX_URL_BYTES + 1024) // 3


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: base64url -> standard alphabet for binascii; "+", "/" and "=" (not base64url) become
#: "*", which binascii's strict mode refuses like any other stray character.
_URLSAFE_TO_STD = bytes.maketrans(b"-_+/=", b"+/***")
#: The padding a token of length ``n`` needs, by ``n % 4`` (1 is never valid).
_PADDING = (b"", b"", b"==", b"=")
#: The characters a canonical encoding can end with, by ``len % 4``: the last character
#: of a 2-char (3-char) tail carries 4 (2) unused bits, which must be zero. Any other
#: last character decodes to the same bytes as a canonical one, so it is refused: a
#: changed character must never decode.
_CANONICAL_LAST: tuple[frozenset[str], ...] = (
    frozenset(_B64URL_ALPHABET),
    frozenset(),
    frozenset(_B64URL_ALPHABET[::16]),
    frozenset(_B64URL_ALPHABET[::4]),
)


def b64decode(token: str) -> bytes:
    """Decode canonical unpadded base64url; anything else raises TokenError.

    One C call (``a2b_base64`` in strict mode) instead of a regex check, a decode and an
    encode back for the canonical check.
    """
    rem = len(token) % 4
    if rem == 1 or (rem and token[-1] not in _CANONICAL_LAST[rem]):
        raise TokenError("malformed token")
    try:
        data = token.encode("ascii").translate(_URLSAFE_TO_STD) + _PADDING[rem]
        return binascii.a2b_base64(data, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise TokenError("malformed token") from None


def seal(
    aead: AESGCMSIV,
    key_id: bytes,
    url: str,
    *,
    queue_id: str,
    link_index: int,
    recipient: str | None,
    sent_at: int,
) -> str:
    """A version 1 token, exactly as the code before version 2 minted it."""
    if not url_is_sealable(url):
        raise TokenError("only http(s) URLs without control characters can be tracked", "not-http")
    qid = queue_id.encode("utf-8")
    rcpt = (recipient or "").encode("utf-8")
    if len(qid) > 255 or len(rcpt) > 65535 or not 0 <= link_index <= 0xFFFFFFFF:
        raise TokenError("queue id, recipient or link index out of range", "out-of-range")
    raw_url = url.encode("utf-8", "surrogatepass")
    flags = 0
    packed_url = _compress(raw_url) if len(raw_url) > 96 else raw_url
    if len(packed_url) < len(raw_url):
        flags |= _FLAG_ZLIB
    else:
        packed_url = raw_url
    plaintext = b"".join(
        (
            _FIXED_QLEN.pack(flags, sent_at & 0xFFFFFFFF, link_index, len(qid)),
            qid,
            _U16.pack(len(rcpt)),
            rcpt,
            packed_url,
        )
    )
    header = HEADER.pack(VERSION, key_id)
    nonce = os.urandom(NONCE_LEN)
    return b64encode(header + nonce + aead.encrypt(nonce, plaintext, header))


def split(token: str) -> tuple[bytes, bytes, bytes, bytes]:
    """(key id, nonce, ciphertext + tag, associated data) of a version 1 token."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("malformed token")
    raw = b64decode(token)  # refuses anything but canonical base64url
    if len(raw) < MIN_TOKEN_BYTES:
        raise TokenError("malformed token")
    version, key_id = HEADER.unpack_from(raw)
    if version != VERSION:
        raise TokenError("unknown token version", "unknown-version")
    end = HEADER.size
    return key_id, raw[end : end + NONCE_LEN], raw[end + NONCE_LEN :], raw[:end]


def _compress(data: bytes) -> bytes:
    """zlib with a 1 KiB window and a small hash table (memLevel 2): as cheap as zlib
    gets for a URL, and any zlib decoder reads it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 10, 2)
    return compressor.compress(data) + compressor.flush()


def unpack(plaintext: bytes, key_id: str) -> LinkData:
    # Authenticated, so well-formed unless our own minting was wrong; still, never crash.
    try:
        flags, sent_at, link_index, qlen = _FIXED_QLEN.unpack_from(plaintext)
        pos = _FIXED_QLEN.size + qlen
        queue_id = plaintext[_FIXED_QLEN.size : pos].decode("utf-8")
        (rlen,) = _U16.unpack_from(plaintext, pos)
        pos += _U16.size
        recipient = plaintext[pos : pos + rlen].decode("utf-8")
        packed = plaintext[pos + rlen :]
        raw_url = zlib.decompress(packed, bufsize=len(packed) * 4) if flags & _FLAG_ZLIB else packed
        url = raw_url.decode("utf-8", "surrogatepass")
    except (struct.error, IndexError, UnicodeDecodeError, zlib.error):
        raise TokenError("malformed token payload", "bad-payload") from None
    if not url_is_sealable(url):
        raise TokenError("token target is not an http(s) URL", "not-http")
    return LinkData(url, queue_id, link_index, recipient or None, sent_at, key_id, 1, None)
