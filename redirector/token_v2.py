"""Version 2 link tokens: bound to the tracking host, short, and shaped like nothing.

A token is ``k`` followed by the fixed-length base36 (:mod:`redirector.base36`) of::

    key hint (1) | host tag (1) | nonce (12) | AES-GCM-SIV ciphertext + tag (16)

* ``k`` says "version 2" (version 1 tokens always start with ``A``). As the first
  character of a one-word token it also keeps every word-anchored content pattern of
  mail filters from starting at the token: Bitcoin (``1``/``3``/``bc1``), Litecoin
  (``L``/``M``/``3``), Monero (``4``), hex runs (``0-9a-f``), IBAN (upper case).
* The key hint is the first byte of the minting key's id: the keyring tries the keys
  whose id starts with it (usually one).
* The host tag is one byte of a CRC of the tracking host, so that a token requested on
  another host is told apart from a forged one (reason ``wrong-host``) without a
  decryption. It is a hint only: the host itself is authenticated.
* The associated data is ``k``, the key hint, the host tag and the normalised tracking
  host (:func:`redirector.hosts.normalize_host`): the token decrypts only when the host
  it is requested on (or an alias of it) is the one it was minted for. The host is not
  in the token; it is in the link.

The plaintext::

    flags (1) | link index (varint) | queue id | sent_at (zigzag varint) | body
    queue id: 9 bytes when it is a 14-character Crockford base32 id (flags & 8: our own
              queue ids, whose top 45 bits are the milliseconds they were minted at),
              else varint length + UTF-8
    sent_at:  seconds relative to the packed queue id's own time (the message was
              received then, so this is one byte), else to 2024-01-01 UTC
    body:     varint len(recipient) | recipient
              | [varint len(extras) | extras: the message's tag and metadata as compact
                 JSON (:func:`redirector.token_types.encode_extras`), only when flags & 32]
              | the URL without its scheme prefix,
              raw DEFLATE with a preset dictionary of common URL and address parts when
              that is shorter (flags & 16)
    flags & 7: the scheme prefix taken off the URL ("", "https://", "http://",
              "https://www.", "http://www.")
    flags & 64: the token is the invisible trap link (``[tracking] bot_trap``)

Nonces stay 96 bits and random (AES-GCM-SIV stays safe if one repeats), tags 128 bits.
"""

from __future__ import annotations

import os
import zlib

from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

from clickrelay.common.errors import TokenError
from redirector import base36
from redirector.token_types import MAX_URL_BYTES, LinkData, decode_extras, url_is_sealable

MARK = "k"
_MARKS = frozenset("kK")  # base36 is case-insensitive, and so is the mark
NONCE_LEN = 12
TAG_LEN = 16
HEADER_LEN = 2
EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z: send times of the next years fit 4 bytes
#: flags (1), sent_at (>= 1), link index (1), queue id length (1), recipient length (1),
#: "x" (the shortest URL rest).
_MIN_PLAINTEXT = 6
MIN_TOKEN_BYTES = HEADER_LEN + NONCE_LEN + TAG_LEN + _MIN_PLAINTEXT
#: Longest token we mint or decode (bytes before base36: about 12,700 characters).
MAX_TOKEN_BYTES = base36.MAX_BYTES
MAX_TOKEN_CHARS = 1 + base36.encoded_length(MAX_TOKEN_BYTES)

_PREFIXES = ("", "https://", "http://", "https://www.", "http://www.")
_PREFIX_MASK = 7
_FLAG_QID_PACKED = 8
_FLAG_DEFLATED = 16
_FLAG_EXTRAS = 32
#: The token is the invisible trap link (``[tracking] bot_trap``): no person fetches it.
_FLAG_TRAP = 64
_KNOWN_FLAGS = _PREFIX_MASK | _FLAG_QID_PACKED | _FLAG_DEFLATED | _FLAG_EXTRAS | _FLAG_TRAP
#: Our queue ids (``smtp_proxy.smtp.queue_id.new_queue_id``): 14 Crockford base32 digits.
_QID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_QID_LEN = 14
_QID_BYTES = 9
_QID_LOW_BITS = 25  # below the milliseconds
#: Crockford digits -> int()'s base-32 digits; anything else -> "!", which int() refuses.
_QID_TO_BASE32 = str.maketrans(
    {
        **{c: "!" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"},
        **dict(zip(_QID_ALPHABET, "0123456789abcdefghijklmnopqrstuv", strict=True)),
    }
)
_QID_PAIRS = tuple(a + b for a in _QID_ALPHABET for b in _QID_ALPHABET)

#: Preset dictionary for DEFLATE: parts of URLs and addresses that recur in mail. Only
#: ever appended to (a changed dictionary would not decode tokens already sent), and the
#: most common parts last (shorter match distances).
ZDICT = (
    b"yahoo.comhotmail.comicloud.comoutlook.comgmail.com"
    b".jpg.png.pdf.php.aspx.htmlindex.html"
    b"?id=&id=?ref=&ref=?lang=en&lang=en/en/de/fr/es/"
    b"/products/product/item/article/articles/blog/news/event/events/"
    b"/account/login/signin/download/view/watch?v=/p/"
    b"/newsletter/email/campaign/promo/offer/sale/shop/store/"
    b"&utm_content=&utm_term=?utm_source=newsletter&utm_medium=email&utm_campaign="
    b"&utm_source=&utm_medium=email&utm_campaign="
    b".co.uk/.de/.org/.net/.io/.com/"
)
#: DEFLATE window: 1 KiB (part of the format: the decoder uses the same), enough for a
#: URL and the dictionary; a small window and hash table (memLevel 2) make the
#: per-link compressor and decompressor cheap to set up.
WINDOW_BITS = 10
_MAX_BODY = MAX_URL_BYTES + 70_000  # URL + recipient + lengths, before compression


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); IndexError past the end, ValueError when too long."""
    byte = data[pos]
    if byte < 0x80:  # the usual case: one byte
        return byte, pos + 1
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def host_tag(host: bytes) -> int:
    return zlib.crc32(host) & 0xFF


def associated_data(header: bytes, host: bytes) -> bytes:
    return b"k" + header + host


def _packed_queue_id(queue_id: str) -> int | None:
    """The 70-bit value of one of our queue ids; None for any other queue id."""
    if len(queue_id) != _QID_LEN or not (queue_id.isascii() and queue_id.isalnum()):
        return None
    digits = queue_id.translate(_QID_TO_BASE32)  # letters we never use become "!"
    try:
        return int(digits, 32)
    except ValueError:
        return None


def _queue_id_seconds(value: int) -> int:
    return (value >> _QID_LOW_BITS) // 1000


def _unpack_queue_id(value: int) -> str:
    # Seven 2-digit pairs, most significant first.
    pairs = _QID_PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in range(60, -1, -10)])


#: Primed with the dictionary once and copied per token: copying the small state is
#: cheaper than loading the dictionary again (never used directly, so never changed).
_COMPRESSOR = zlib.compressobj(9, zlib.DEFLATED, -WINDOW_BITS, 2, zdict=ZDICT)
_DECOMPRESSOR = zlib.decompressobj(-WINDOW_BITS, zdict=ZDICT)


def _deflate(data: bytes) -> bytes:
    compressor = _COMPRESSOR.copy()
    return compressor.compress(data) + compressor.flush()


def _inflate(data: bytes) -> bytes:
    decompressor = _DECOMPRESSOR.copy()
    out = decompressor.decompress(data, _MAX_BODY)
    if decompressor.unconsumed_tail or not decompressor.eof:
        raise ValueError("deflated body too long or truncated")
    return out


def seal(
    aead: AESGCMSIV,
    key_hint: int,
    host: bytes,
    url: str,
    *,
    queue_id: str,
    link_index: int,
    recipient: str | None,
    sent_at: int,
    extras: bytes = b"",
    trap: bool = False,
) -> str:
    """A version 2 token for ``url``, bound to ``host`` (normalised, ASCII); ``extras``
    is the message's tag and metadata (:func:`redirector.token_types.encode_extras`);
    ``trap`` marks the invisible trap link's token."""
    if not url_is_sealable(url):
        raise TokenError("only http(s) URLs without control characters can be tracked", "not-http")
    if not 0 <= link_index <= 0xFFFFFFFF or len(queue_id) > 255 or len(extras) > 16_384:
        raise TokenError("queue id or link index out of range", "out-of-range")
    prefix_code = 0
    for code in (3, 4, 1, 2):  # the longer spellings first
        if url.startswith(_PREFIXES[code]):
            prefix_code = code
            break
    rest = url[len(_PREFIXES[prefix_code]) :].encode("utf-8", "surrogatepass")
    rcpt = (recipient or "").encode("utf-8")
    extra = _varint(len(extras)) + extras if extras else b""
    body = b"".join((_varint(len(rcpt)), rcpt, extra, rest))
    flags = prefix_code | (_FLAG_EXTRAS if extras else 0) | (_FLAG_TRAP if trap else 0)
    if len(body) > 12:  # shorter ones never shrink: the block header alone costs 3 bits
        packed = _deflate(body)
        if len(packed) < len(body):
            body = packed
            flags |= _FLAG_DEFLATED
    qid_value = _packed_queue_id(queue_id)
    if qid_value is None:
        raw_qid = queue_id.encode("utf-8")
        qid = _varint(len(raw_qid)) + raw_qid
        delta = sent_at - EPOCH
    else:
        flags |= _FLAG_QID_PACKED
        qid = qid_value.to_bytes(_QID_BYTES, "big")
        delta = sent_at - _queue_id_seconds(qid_value)
    plaintext = b"".join(
        (
            bytes((flags,)),
            _varint(link_index),
            qid,
            _varint(delta << 1 if delta >= 0 else (-delta << 1) - 1),
            body,
        )
    )
    header = bytes((key_hint, host_tag(host)))
    nonce = os.urandom(NONCE_LEN)
    raw = header + nonce + aead.encrypt(nonce, plaintext, associated_data(header, host))
    if len(raw) > MAX_TOKEN_BYTES:
        raise TokenError("URL too long for a token", "too-long")
    return MARK + base36.encode(raw)


def is_v2(token: str) -> bool:
    return token[:1] in _MARKS


def split(token: str) -> tuple[bytes, bytes, bytes]:
    """(header, nonce, ciphertext + tag) of a version 2 token; TokenError if malformed."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("malformed token")
    try:
        raw = base36.decode(token[1:])
    except ValueError:
        raise TokenError("malformed token") from None
    if len(raw) < MIN_TOKEN_BYTES:
        raise TokenError("malformed token")
    return raw[:HEADER_LEN], raw[HEADER_LEN : HEADER_LEN + NONCE_LEN], raw[HEADER_LEN + NONCE_LEN :]


def unpack(plaintext: bytes, key_id: str, host: str) -> LinkData:
    # Authenticated, so well-formed unless our own minting was wrong; still, never crash.
    try:
        flags = plaintext[0]
        if flags & ~_KNOWN_FLAGS or (flags & _PREFIX_MASK) >= len(_PREFIXES):
            raise ValueError("unknown flags")
        link_index, pos = _read_varint(plaintext, 1)
        if flags & _FLAG_QID_PACKED:
            end = pos + _QID_BYTES
            if end > len(plaintext):
                raise ValueError("truncated queue id")
            qid_value = int.from_bytes(plaintext[pos:end], "big")
            queue_id = _unpack_queue_id(qid_value)
            base = _queue_id_seconds(qid_value)
        else:
            qlen, pos = _read_varint(plaintext, pos)
            end = pos + qlen
            queue_id = plaintext[pos:end].decode("utf-8")
            base = EPOCH
        zigzag, pos = _read_varint(plaintext, end)
        sent_at = base + (zigzag >> 1 if not zigzag & 1 else -((zigzag + 1) >> 1))
        body = plaintext[pos:]
        if flags & _FLAG_DEFLATED:
            body = _inflate(body)
        rlen, pos = _read_varint(body, 0)
        recipient = body[pos : pos + rlen].decode("utf-8")
        pos += rlen
        tag = metadata = None
        if flags & _FLAG_EXTRAS:
            elen, pos = _read_varint(body, pos)
            tag, metadata = decode_extras(body[pos : pos + elen])
            pos += elen
        url = _PREFIXES[flags & _PREFIX_MASK] + body[pos:].decode("utf-8", "surrogatepass")
    except (IndexError, ValueError, zlib.error):  # (UnicodeDecodeError is a ValueError)
        raise TokenError("malformed token payload", "bad-payload") from None
    if not url_is_sealable(url):
        raise TokenError("token target is not an http(s) URL", "not-http")
    trap = bool(flags & _FLAG_TRAP)
    return LinkData(
        url, queue_id, link_index, recipient or None, sent_at, key_id, 2, host, tag, metadata, trap
    )
