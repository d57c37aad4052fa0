"""Splicing new link values into a part: its text, its bytes, its transfer encoding.

:func:`splice` is the reference on text. :func:`spliced_decoded` does the same on the
part's decoded bytes (only the changed ranges are encoded again, every other byte is
compared in place) and :func:`encode_part` turns the result into byte edits of the
message in the part's own transfer encoding; :func:`assemble` applies them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smtp_proxy.engine import b64, headers, mime_parts, qp
from smtp_proxy.engine.html_scan import FoundLink
from smtp_proxy.engine.mime_parts import Entity

#: A change of a part's decoded content: (start, end) in the old bytes, new bytes.
Change = tuple[int, int, bytes]

#: Charsets (Python codec names) in which every byte < 0x80 is that ASCII character on its
#: own, whatever comes before or after it.
_STATELESS_ASCII_CODECS = frozenset(
    {"ascii", "utf-8", "iso8859-1", "iso8859-15", "cp1252", "cp1250", "cp1251", "koi8-r"}
)


def splice(text: str, replacements: Sequence[tuple[FoundLink, str]]) -> str:
    """``text`` with each link's span replaced by its new value, all else unchanged.

    ``replacements`` must be sorted by ``link.start`` and must not overlap (the finders
    never produce overlapping links); a violation raises ``ValueError``.
    """
    pieces: list[str] = []
    pos = 0
    for link, value in replacements:
        if link.start < pos or link.end < link.start or link.end > len(text):
            raise ValueError(f"bad or overlapping link span {link.start}:{link.end}")
        pieces.append(text[pos : link.start])
        pieces.append(value)
        pos = link.end
    pieces.append(text[pos:])
    return "".join(pieces)


def spliced_decoded(
    decoded: bytes,
    text: str,
    enc: str,
    errors: str,
    tracked: list[tuple[FoundLink, str]],
    quoted_printable: bool,
) -> tuple[bytes | None, list[Change]] | None:
    """The part's new decoded bytes and the byte ranges (in the old ones) that changed;
    None when the charset does not let us map text offsets to bytes exactly.

    ``decoded`` is the part's content after transfer decoding, ``text`` that content
    decoded with codec ``enc`` and error handler ``errors``; ``tracked`` pairs each
    changed link of ``text`` with its new value.

    The new bytes are None for a quoted-printable part in a charset in which every byte
    < 0x80 is ASCII: re-encoding needs only the changes there, and a large part then
    costs no copy of its content.
    """
    tracked = sorted(tracked, key=lambda item: item[0].start)
    stateless = enc in _STATELESS_ASCII_CODECS
    want_bytes = not stateless or not quoted_printable
    old = memoryview(decoded)
    # Unchanged stretches are compared with the old bytes in place (no copies) and, when
    # the new content is wanted, taken from there as memoryview slices.
    pieces: list[bytes | memoryview] = []
    changes: list[Change] = []
    text_pos = 0
    byte_pos = 0
    for link, new_url in tracked:
        if link.start < text_pos:
            return None  # overlapping links: refuse rather than guess
        before = text[text_pos : link.start].encode(enc, errors)
        raw = link.raw.encode(enc, errors)
        start = byte_pos + len(before)
        # startswith compares in place (memcmp), without a copy of the old bytes.
        if not decoded.startswith(before, byte_pos) or not decoded.startswith(raw, start):
            return None
        new = new_url.encode(enc)
        if want_bytes:
            pieces += (old[byte_pos:start], new)
        changes.append((start, start + len(raw), new))
        byte_pos = start + len(raw)
        text_pos = link.end
    # The tail; in a stateless charset compared in slices, so that a large part is not
    # encoded again whole (a stateful one must be encoded in one go).
    step = 1 << 20 if stateless else max(1, len(text))
    tail_start = byte_pos
    while text_pos < len(text):
        chunk = text[text_pos : text_pos + step].encode(enc, errors)
        if not decoded.startswith(chunk, byte_pos):
            return None
        text_pos += step
        byte_pos += len(chunk)
    if byte_pos != len(old):
        return None
    if not want_bytes:
        # Every unchanged byte was compared above and the new values are ASCII: in these
        # charsets the bytes with the changes applied decode to exactly the spliced text.
        return None, changes
    pieces.append(old[tail_start:])
    new_decoded = b"".join(pieces)
    del pieces
    if stateless:
        return new_decoded, changes
    # Other charsets (stateful ones like ISO-2022-JP): check against the reference, what
    # the link finder's own splice says the text must become.
    expected = splice(text, tracked)
    try:
        if new_decoded.decode(enc, errors) != expected:
            return None
    except UnicodeDecodeError:
        return None
    return new_decoded, changes


@dataclass(frozen=True)
class Edit:
    """Replace ``data[start:end]`` with ``new``."""

    start: int
    end: int
    new: bytes | bytearray


def encode_part(
    data: bytes,
    entity: Entity,
    body: bytes | memoryview,
    decoded: bytes,
    new_decoded: bytes | None,
    changes: list[Change],
) -> list[Edit] | str:
    """Byte edits that put a part's new content into ``data`` in the part's transfer
    encoding, or a reason to leave it alone. ``body`` is the encoded body, ``decoded``
    the old content, ``new_decoded``/``changes`` what :func:`spliced_decoded` gave."""
    cte = entity.headers.transfer_encoding
    eol = _body_eol(data, entity.body_start, entity.end, entity.eol)
    edits: list[Edit] = []
    if cte == "quoted-printable":
        new_body: bytes | bytearray = qp.qp_reencode(body, decoded, changes, eol)
    elif new_decoded is None:  # only quoted-printable parts go without new bytes
        return "charset-not-roundtrip"
    elif cte == "base64":
        old_body = bytes(body)
        trailer = old_body[len(old_body.rstrip()) :]
        length = b64.b64_line_length(old_body)
        new_body = b64.b64_encode(new_decoded, length, eol, trailer)
    elif mime_parts.has_long_line(new_decoded, _new_offsets(changes)):
        # A 7bit/8bit line would grow past 998 octets: switch this part to QP.
        new_body = qp.qp_encode(new_decoded, eol)
        block = data[entity.start : entity.header_end]
        new_block = headers.replace_header(
            block, "Content-Transfer-Encoding", "quoted-printable", entity.eol
        )
        edits.append(Edit(entity.start, entity.header_end, new_block))
    else:
        new_body = new_decoded
    edits.append(Edit(entity.body_start, entity.end, new_body))
    return edits


def _new_offsets(changes: Sequence[Change]) -> list[int]:
    """Where each change starts in the new content (only lines with a change can have
    grown past the line limit)."""
    out = []
    delta = 0
    for start, end, new in changes:
        out.append(start + delta)
        delta += len(new) - (end - start)
    return out


def _body_eol(data: bytes, start: int, end: int, default: bytes) -> bytes:
    """The line ending of the body ``data[start:end]`` (``default`` if it has none)."""
    nl = data.find(b"\n", start, end)
    if nl < 0:
        return default
    return b"\r\n" if nl > start and data[nl - 1] == 0x0D else b"\n"


def assemble(data: bytes, edits: Sequence[Edit]) -> bytes:
    view = memoryview(data)
    pieces: list[bytes | bytearray | memoryview] = []
    pos = 0
    for edit in sorted(edits, key=lambda e: e.start):
        pieces.append(view[pos : edit.start])
        pieces.append(edit.new)
        pos = edit.end
    pieces.append(view[pos:])
    return b"".join(pieces)
