"""Sealed link tokens: ``<base_url>/c/<token>`` carries everything a redirect needs.

Layout of a token (before base64url without padding)::

    version (1) | key id (4) | nonce (12) | AES-GCM-SIV ciphertext + tag (16)

The header (version + key id) is the associated data, so it cannot be swapped. The
plaintext is::

    flags (1) | sent_at (u32, unix s) | link index (u32) | len(queue id) (u8) | queue id
              | len(recipient) (u16) | recipient | url (rest, utf-8; zlib when flags & 1)

Flags: 1 = the url is zlib-compressed, 2 = the token is the invisible trap link.

AES-GCM-SIV is used because nonces are random: it stays safe even if a nonce repeats,
which matters at billions of links per key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from clickrelay.common.errors import KeyFileError, TokenError
from redirector.location import has_forbidden_char

VERSION = 1
KEY_ID_LEN = 4
NONCE_LEN = 12
TAG_LEN = 16
_HEADER = struct.Struct(">B4s")
#: flags, sent_at, link index and the queue id length: packed and read in one call.
_FIXED_QLEN = struct.Struct(">BIIB")
#: The recipient length.
_U16 = struct.Struct(">H")
_FLAG_ZLIB = 1
#: The token is the trap link: no person can see or reach it (``[tracking] bot_trap``).
_FLAG_TRAP = 2
#: Base64url alphabet only: a token needs no escaping in HTML, QP or plain text.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
_MIN_TOKEN_BYTES = (
    _HEADER.size + NONCE_LEN + TAG_LEN + _FIXED_QLEN.size + _U16.size + len("http://x")
)
#: A URL longer than this is never minted (tracked links are capped far below it anyway).
MAX_URL_BYTES = 65_536
#: Upper bound on a token we are willing to decode; longer input is rejected before base64.
MAX_TOKEN_CHARS = 4 * (MAX_URL_BYTES + 1024) // 3


def url_is_sealable(url: str) -> bool:
    """Only absolute http(s) URLs without control characters or spaces are ever minted."""
    if not url.startswith(("https://", "http://")):  # the common spelling, then any case
        lower = url[:8].lower()
        if not (lower.startswith("http://") or lower.startswith("https://")):
            return False
    if has_forbidden_char(url):
        return False
    if url.isascii():  # O(1) in CPython: no need to encode to know the byte length
        return len(url) <= MAX_URL_BYTES
    return len(url.encode("utf-8", "surrogatepass")) <= MAX_URL_BYTES


@dataclass(frozen=True)
class Key:
    key_id: bytes
    secret: bytes

    @property
    def id_hex(self) -> str:
        return self.key_id.hex()


class LinkData(NamedTuple):
    """What a token says: where to send the click and what to record about it.

    A named tuple (immutable) rather than a frozen dataclass: one is made per redirect,
    and the dataclass's ``__init__`` costs about 3x as much.
    """

    url: str
    queue_id: str
    link_index: int
    recipient: str | None
    sent_at: int
    key_id: str
    #: Minted for the invisible trap link: whoever fetches it is a scanner.
    trap: bool = False

    @property
    def sent_at_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.sent_at, UTC)


def _b64encode(data: bytes) -> str:
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


def _b64decode(token: str) -> bytes:
    """Decode canonical unpadded base64url; anything else raises TokenError.

    One C call (``a2b_base64`` in strict mode) instead of a regex check, a decode and an
    encode back for the canonical check: this runs for every click.
    """
    rem = len(token) % 4
    if rem == 1 or (rem and token[-1] not in _CANONICAL_LAST[rem]):
        raise TokenError("malformed token")
    try:
        data = token.encode("ascii").translate(_URLSAFE_TO_STD) + _PADDING[rem]
        return binascii.a2b_base64(data, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise TokenError("malformed token") from None


class Keyring:
    """The keys of a key file: the first one mints, every one decodes (rotation)."""

    def __init__(self, keys: Iterable[Key]) -> None:
        self.keys = tuple(keys)
        if not self.keys:
            raise KeyFileError("key file holds no keys")
        # Built once: constructing the AEAD (key schedule) per token would cost more than
        # decrypting it. The hex id is what LinkData carries.
        self._by_id = {k.key_id: (AESGCMSIV(k.secret), k.id_hex) for k in self.keys}
        self._minting = self.keys[0]
        self._mint_aead = self._by_id[self._minting.key_id][0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.id_hex for k in self.keys)

    @property
    def current_key_id(self) -> str:
        return self._minting.id_hex

    def seal(
        self,
        url: str,
        *,
        queue_id: str,
        link_index: int,
        recipient: str | None = None,
        sent_at: int | None = None,
        trap: bool = False,
    ) -> str:
        """Mint a token for ``url``; raises TokenError for anything we would not redirect to.

        ``trap`` marks the token of the invisible trap link (see ``[tracking] bot_trap``).
        """
        if not url_is_sealable(url):
            raise TokenError(
                "only http(s) URLs without control characters can be tracked", "not-http"
            )
        qid = queue_id.encode("utf-8")
        rcpt = (recipient or "").encode("utf-8")
        if len(qid) > 255 or len(rcpt) > 65535 or not 0 <= link_index <= 0xFFFFFFFF:
            raise TokenError("queue id, recipient or link index out of range", "out-of-range")
        when = int(sent_at if sent_at is not None else datetime.now(UTC).timestamp())
        raw_url = url.encode("utf-8", "surrogatepass")
        flags = _FLAG_TRAP if trap else 0
        packed_url = _compress(raw_url) if len(raw_url) > 96 else raw_url
        if len(packed_url) < len(raw_url):
            flags |= _FLAG_ZLIB
        else:
            packed_url = raw_url
        plaintext = b"".join(
            (
                _FIXED_QLEN.pack(flags, when & 0xFFFFFFFF, link_index, len(qid)),
                qid,
                _U16.pack(len(rcpt)),
                rcpt,
                packed_url,
            )
        )
        header = _HEADER.pack(VERSION, self._minting.key_id)
        nonce = os.urandom(NONCE_LEN)
        sealed = self._mint_aead.encrypt(nonce, plaintext, header)
        return _b64encode(header + nonce + sealed)

    def open(self, token: str) -> LinkData:
        """Decode a token we minted; anything else raises TokenError (and only that)."""
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            raise TokenError("malformed token")
        raw = _b64decode(token)  # refuses anything but canonical base64url (TOKEN_RE)
        if len(raw) < _MIN_TOKEN_BYTES:
            raise TokenError("malformed token")
        version, key_id = _HEADER.unpack_from(raw)
        if version != VERSION:
            raise TokenError("unknown token version", "unknown-version")
        known = self._by_id.get(key_id)
        if known is None:
            raise TokenError(f"unknown key {key_id.hex()}", "unknown-key", key_id.hex())
        aead, key_hex = known
        header_end = _HEADER.size
        nonce = raw[header_end : header_end + NONCE_LEN]
        try:
            plaintext = aead.decrypt(nonce, raw[header_end + NONCE_LEN :], raw[:header_end])
        except InvalidTag:
            raise TokenError("token failed authentication", "forged") from None
        return _unpack(plaintext, key_hex)


def _compress(data: bytes) -> bytes:
    """zlib with a 1 KiB window and a small hash table (memLevel 2).

    ``zlib.compress(data, 9)`` sets up 256 KiB of state per call, about 90 us for a
    100-byte URL; this is ~12 us with the same size for URLs (they are short, so a big
    window finds nothing more). The stream header records the window, and any zlib
    decoder (``zlib.decompress`` with its default 15-bit window) reads it, so tokens
    minted either way decode alike; the redirector's inflate also allocates only 1 KiB.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 10, 2)
    return compressor.compress(data) + compressor.flush()


def _unpack(plaintext: bytes, key_id: str) -> LinkData:
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
    return LinkData(
        url=url,
        queue_id=queue_id,
        link_index=link_index,
        recipient=recipient or None,
        sent_at=sent_at,
        key_id=key_id,
        trap=bool(flags & _FLAG_TRAP),
    )


# --- key files ------------------------------------------------------------------------

_KEY_LINE_RE = re.compile(r"^([0-9a-f]{8})\s+([A-Za-z0-9_-]{43})$")


def new_key_line() -> str:
    """A fresh key line for a key file: ``<8 hex key id> <base64url 32-byte key>``."""
    return f"{secrets.token_bytes(KEY_ID_LEN).hex()} {_b64encode(secrets.token_bytes(32))}"


def parse_keys(text: str, source: str = "<key file>") -> Keyring:
    keys: list[Key] = []
    seen: set[bytes] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _KEY_LINE_RE.match(stripped)
        if match is None:
            raise KeyFileError(
                f"{source}:{lineno}: expected '<8 hex key id> <base64url key>' "
                "(make one with `clickrelay keygen`)"
            )
        key_id = bytes.fromhex(match.group(1))
        if key_id in seen:
            raise KeyFileError(f"{source}:{lineno}: duplicate key id {match.group(1)}")
        seen.add(key_id)
        keys.append(Key(key_id, _b64decode_key(match.group(2), source, lineno)))
    if not keys:
        raise KeyFileError(f"{source}: holds no keys (add one with `clickrelay keygen`)")
    return Keyring(keys)


def _b64decode_key(text: str, source: str, lineno: int) -> bytes:
    try:
        secret = _b64decode(text)
    except TokenError:
        raise KeyFileError(f"{source}:{lineno}: key is not valid base64url") from None
    if len(secret) != 32:
        raise KeyFileError(f"{source}:{lineno}: key must be 32 bytes")
    return secret


def load_keyring(path: Path) -> Keyring:
    """Read a key file, refusing one that other users can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: key file not found (create it with `clickrelay keygen > {path}`"
            f" and `chmod 600 {path}`)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise KeyFileError(
            f"{path}: key file is readable by other users (mode {stat.S_IMODE(st.st_mode):04o});"
            f" run `chmod 600 {path}`"
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc}") from None
    return parse_keys(text, str(path))


def ensure_key_file(path: Path) -> Keyring:
    """Load the key file, creating it (mode 0600, one new key) when it does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_keyring(path)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write("# clickrelay link keys: the first mints, all decode. Keep secret.\n")
            fh.write(new_key_line() + "\n")
    return load_keyring(path)
