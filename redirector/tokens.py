"""Sealed link tokens: ``<base_url>/c/<token>`` carries everything a redirect needs.

The keyring mints version 2 tokens (:mod:`redirector.token_v2`: base36 after a ``k``,
bound to the tracking host through the AEAD's associated data) and decodes both those
and version 1 tokens (:mod:`redirector.token_v1`: base64url starting with ``A``, not
host-bound), so links sent before version 2 keep working.

AES-GCM-SIV is used because nonces are random: it stays safe even if a nonce repeats,
which matters at billions of links per key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from clickrelay.common.errors import KeyFileError, TokenError
from clickrelay.common.secretfiles import GROUP_OR_OTHERS, check_secret_file
from redirector import token_v1, token_v2
from redirector.hosts import normalize_host
from redirector.token_types import MAX_URL_BYTES as MAX_URL_BYTES
from redirector.token_types import LinkData as LinkData
from redirector.token_types import encode_extras as encode_extras
from redirector.token_types import url_is_sealable as url_is_sealable

KEY_ID_LEN = 4
#: Characters a token of either version is made of (both need no escaping anywhere).
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
#: Upper bound on a token we are willing to decode (either version).
MAX_TOKEN_CHARS = max(token_v1.MAX_TOKEN_CHARS, token_v2.MAX_TOKEN_CHARS)


class Key(NamedTuple):
    """One key of a key file (a named tuple: ``clickrelay decode`` imports no
    :mod:`dataclasses`)."""

    key_id: bytes
    secret: bytes

    @property
    def id_hex(self) -> str:
        return self.key_id.hex()


#: What the keyring keeps per key: the AEAD (built once: its key schedule costs more
#: than decrypting a token) and the hex id LinkData carries.
_Entry = tuple[AESGCMSIV, str]


def _bound_host(host: str) -> bytes:
    return normalize_host(host).encode("utf-8")


class Keyring:
    """The keys of a key file: the first one mints, every one decodes (rotation)."""

    def __init__(self, keys: Iterable[Key]) -> None:
        self.keys = tuple(keys)
        if not self.keys:
            raise KeyFileError("key file holds no keys")
        self._by_id: dict[bytes, _Entry] = {
            k.key_id: (AESGCMSIV(k.secret), k.id_hex) for k in self.keys
        }
        by_hint: dict[int, list[_Entry]] = {}
        for key in self.keys:
            by_hint.setdefault(key.key_id[0], []).append(self._by_id[key.key_id])
        #: Version 2 tokens name their key by its id's first byte: the keys to try.
        self._by_hint = {hint: tuple(entries) for hint, entries in by_hint.items()}
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
        host: str,
        queue_id: str,
        link_index: int,
        recipient: str | None = None,
        sent_at: int | None = None,
        extras: bytes = b"",
        trap: bool = False,
    ) -> str:
        """Mint a version 2 token for ``url``, valid when requested on ``host`` (the
        tracking base URL's host); raises TokenError for anything we would not redirect
        to. ``extras``: :func:`encode_extras` of the message's tag and metadata; ``trap``
        marks the invisible trap link's token (``[tracking] bot_trap``)."""
        bound = _bound_host(host)
        if not bound:
            raise TokenError("a token must be bound to a tracking host", "no-host")
        when = int(sent_at if sent_at is not None else datetime.now(UTC).timestamp())
        return token_v2.seal(
            self._mint_aead,
            self._minting.key_id[0],
            bound,
            url,
            queue_id=queue_id,
            link_index=link_index,
            recipient=recipient,
            sent_at=when,
            extras=extras,
            trap=trap,
        )

    def seal_v1(
        self,
        url: str,
        *,
        queue_id: str,
        link_index: int,
        recipient: str | None = None,
        sent_at: int | None = None,
    ) -> str:
        """Mint a version 1 token (not host-bound) as the code before version 2 did.

        For tests and the length benchmark only: links in mail are always version 2.
        """
        when = int(sent_at if sent_at is not None else datetime.now(UTC).timestamp())
        return token_v1.seal(
            self._mint_aead,
            self._minting.key_id,
            url,
            queue_id=queue_id,
            link_index=link_index,
            recipient=recipient,
            sent_at=when,
        )

    def open(self, token: str, host: str) -> LinkData:
        """Decode a token we minted, requested on ``host`` (normalised; aliases already
        resolved by the caller). Anything else raises TokenError (and only that): a
        version 2 token bound to another host with reason ``wrong-host``."""
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            raise TokenError("malformed token")
        if token_v2.is_v2(token):
            return self._open_v2(token, _bound_host(host))
        # Everything else is read as version 1: junk is "malformed", a well-formed header
        # with another version byte "unknown-version".
        return self._open_v1(token)

    def _open_v2(self, token: str, host: bytes) -> LinkData:
        header, nonce, sealed = token_v2.split(token)
        entries = self._by_hint.get(header[0])
        if entries is None:
            key_id = f"{header[0]:02x}??????"
            raise TokenError(
                f"unknown key {key_id} (a version 2 token names its key id's first byte)",
                "unknown-key",
                key_id,
            )
        if header[1] != token_v2.host_tag(host):
            raise TokenError("token is bound to another host", "wrong-host")
        aad = token_v2.associated_data(header, host)
        for aead, key_hex in entries:
            try:
                plaintext = aead.decrypt(nonce, sealed, aad)
            except InvalidTag:
                continue
            return token_v2.unpack(plaintext, key_hex, host.decode("utf-8"))
        raise TokenError("token failed authentication", "forged")

    def _open_v1(self, token: str) -> LinkData:
        key_id, nonce, sealed, aad = token_v1.split(token)
        known = self._by_id.get(key_id)
        if known is None:
            raise TokenError(f"unknown key {key_id.hex()}", "unknown-key", key_id.hex())
        aead, key_hex = known
        try:
            plaintext = aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise TokenError("token failed authentication", "forged") from None
        return token_v1.unpack(plaintext, key_hex)


# --- key files ------------------------------------------------------------------------

_KEY_LINE_RE = re.compile(r"^([0-9a-f]{8})\s+([A-Za-z0-9_-]{43})$")


def new_key_line() -> str:
    """A fresh key line for a key file: ``<8 hex key id> <base64url 32-byte key>``."""
    # os.urandom is what secrets.token_bytes returns, without importing secrets' hmac.
    return f"{os.urandom(KEY_ID_LEN).hex()} {token_v1.b64encode(os.urandom(32))}"


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
        secret = token_v1.b64decode(text)
    except TokenError:
        raise KeyFileError(f"{source}:{lineno}: key is not valid base64url") from None
    if len(secret) != 32:
        raise KeyFileError(f"{source}:{lineno}: key must be 32 bytes")
    return secret


def load_keyring(path: Path) -> Keyring:
    """Read a key file, refusing one that other users can read or write."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: key file not found (create it with `clickrelay keygen > {path}`"
            f" and `chmod 600 {path}`)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror}") from None
    check_secret_file(path, "link key file", refuse_read=GROUP_OR_OTHERS, st=st, error=KeyFileError)
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
