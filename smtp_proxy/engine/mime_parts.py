"""Raw MIME structure, read from the original bytes without re-serialising anything.

The rewriter must leave every byte it does not mean to change exactly as it was, so it
never lets :mod:`email`'s generator write a message. Instead this module finds the
*offsets* of each entity's header block and body inside the original buffer: multipart
bodies are split on their exact boundary lines, and only the small header blocks are
handed to :mod:`email` to read Content-Type, boundary, charset, transfer encoding and
disposition. Large bodies (attachments) are never copied here; callers slice what they
need.

It also holds the transfer-encoding codecs the rewriter needs: quoted-printable decoded
*per logical line* (so unchanged lines can be written back byte for byte) and re-encoded
with lines of at most 76 characters, and base64 re-encoded with the original line length.
"""

from __future__ import annotations

import binascii
import bisect
import email.parser
import email.policy
import functools
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import Message

from smtp_proxy.engine.speedups import speedups

_qp_valid = speedups.qp_valid if speedups else None
_qp_line_starts = speedups.qp_line_starts if speedups else None

#: Deeper nesting than this is treated as hostile (and left alone).
MAX_DEPTH = 50
#: RFC 5322: a line must not be longer than 998 octets (without CRLF).
MAX_LINE_OCTETS = 998
#: RFC 2045: quoted-printable lines are at most 76 characters (without CRLF).
QP_LINE = 76

# A line that is neither "name:" nor a continuation nor empty.
_BAD_HEADER_LINE_RE = re.compile(rb"^(?![!-9;-~]+[ \t]*:|[ \t]|\r?$)", re.M)
_WANTED_FIELDS_RE = re.compile(
    rb"^(?:content-type|content-transfer-encoding|content-disposition|dkim-signature"
    rb"|x-clickrelay-track)[ \t]*:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*",
    re.M | re.I,
)
_BLANK_LINE_RE = re.compile(rb"\n\r?\n")
_BAD_QP_RE = re.compile(rb"=(?![0-9A-Fa-f]{2}|[ \t]*(?:\r?\n|\Z))")
_B64_CHARS_RE = re.compile(rb"[A-Za-z0-9+/=\s]*")
_WS_RE = re.compile(rb"\s+")
_SIGNED_OR_ENCRYPTED = {
    "multipart/signed": "signed",
    "multipart/encrypted": "encrypted",
    "application/pkcs7-mime": "encrypted",
    "application/x-pkcs7-mime": "encrypted",
    "application/pgp-encrypted": "encrypted",
    "application/pgp-signature": "signed",
    "application/pkcs7-signature": "signed",
}


class MimeError(Exception):
    """The message's structure cannot be trusted; ``reason`` says why (never leaves the engine)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PartHeaders:
    """What the rewriter needs from one entity's header block."""

    content_type: str  # "maintype/subtype", lower case
    boundary: str | None
    charset: str | None  # raw parameter value, lower case; None when absent
    transfer_encoding: str  # lower case; "" when absent
    disposition: str  # "attachment", "inline" or "" (lower case)
    message: Message = field(repr=False)

    @property
    def protection(self) -> str | None:
        """ "signed"/"encrypted" for entities that must never be touched, else None."""
        return _SIGNED_OR_ENCRYPTED.get(self.content_type)


@dataclass(frozen=True)
class Entity:
    """One MIME entity as offsets into the original message buffer."""

    path: str  # IMAP-style part number: "1", "2.1", …
    start: int  # first byte of the header block
    header_end: int  # end of the header block (start of the blank line)
    body_start: int  # first byte of the body
    end: int  # end of the body (excludes the line break before the next boundary)
    eol: bytes  # b"\r\n" or b"\n", as this entity's header block uses
    headers: PartHeaders
    depth: int


def detect_eol(data: bytes | memoryview, start: int = 0) -> bytes:
    """The line ending the first line uses (CRLF unless that line ends in a bare LF)."""
    nl = bytes(data[start : start + 4096]).find(b"\n")
    if nl > 0 and data[start + nl - 1] == 0x0D:
        return b"\r\n"
    return b"\n" if nl >= 0 else b"\r\n"


def split_entity(data: bytes, start: int, end: int) -> tuple[int, int, bytes]:
    """(header_end, body_start, eol) of the entity in ``data[start:end]``.

    Headers end at the first empty line; with no empty line the entity is all headers.
    """
    if data.startswith(b"\r\n", start) and start + 2 <= end:
        return start, start + 2, b"\r\n"
    if data.startswith(b"\n", start) and start + 1 <= end:
        return start, start + 1, b"\n"
    m = _BLANK_LINE_RE.search(data, start, end)
    if m is None:
        return end, end, detect_eol(data, start)
    header_end = m.start() + 1
    eol = b"\r\n" if m.start() > start and data[m.start() - 1] == 0x0D else b"\n"
    return header_end, m.end(), eol


_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def read_headers(block: bytes) -> Message:
    """Parse a header block with the email package (compat32: values as written)."""
    return _PARSER.parsebytes(block)


def parse_headers(block: bytes, default_type: str = "text/plain") -> PartHeaders:
    """Read the MIME headers of one header block; raises MimeError for unusable blocks."""
    if block and not block.isascii():
        try:
            block.decode("utf-8")  # RFC 6532 (SMTPUTF8) headers are fine; raw 8-bit is not
        except UnicodeDecodeError:
            raise MimeError("8bit-headers") from None
    start = block.find(b"\n") + 1 if block.startswith(b"From ") else 0  # mbox separator
    if _BAD_HEADER_LINE_RE.search(block, start) or block[start : start + 1] in (b" ", b"\t"):
        # A first line starting with whitespace continues no field: parsers disagree on
        # what it is (a defect, or the end of the headers), so the block is left alone.
        raise MimeError("bad-header-line")
    # The email package only gets the fields we read: parsing a long Received chain
    # would cost more than everything else the rewriter does with the headers.
    return _parse_fields(b"".join(_WANTED_FIELDS_RE.findall(block)), default_type)


@functools.lru_cache(maxsize=1024)
def _parse_fields(fields: bytes, default_type: str) -> PartHeaders:
    # Cached: part headers repeat from message to message (same mailer, same template).
    # The Message inside is shared, so callers only ever read it.
    msg = _PARSER.parsebytes(fields)
    if default_type != "text/plain":
        msg.set_default_type(default_type)
    ctype = msg.get_content_type()
    boundary = msg.get_boundary() if ctype.startswith("multipart/") else None
    charset_param = msg.get_param("charset")
    charset: str | None = None
    if isinstance(charset_param, tuple):  # RFC 2231 encoded parameter
        charset = str(charset_param[2] or "").strip().lower() or None
    elif isinstance(charset_param, str):
        charset = charset_param.strip().strip('"').lower() or None
    cte = str(msg.get("Content-Transfer-Encoding", "")).strip().lower()
    disposition = (msg.get_content_disposition() or "").lower()
    return PartHeaders(ctype, boundary, charset, cte, disposition, msg)


def _boundary_re(boundary: str) -> re.Pattern[bytes]:
    # A delimiter line: "--boundary" (or the close "--boundary--"), optional transport
    # padding, then the end of the line. The line break before it belongs to it.
    return re.compile(
        rb"^--"
        + re.escape(boundary.encode("ascii", "surrogateescape"))
        + rb"(--)?[ \t]*(?:\r?\n|\Z)",
        re.M,
    )


def split_multipart(data: bytes, body_start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """(start, end) of each body part of a multipart body; MimeError when boundaries are bad."""
    if not boundary or len(boundary) > 200:
        raise MimeError("bad-boundary")
    pattern = _boundary_re(boundary)
    parts: list[tuple[int, int]] = []
    pos = body_start
    part_start: int | None = None
    while True:
        m = pattern.search(data, pos, end)
        if m is None:
            raise MimeError("missing-boundary")
        if part_start is not None:
            part_end = m.start()
            if data[part_end - 2 : part_end] == b"\r\n" and part_end - 2 >= part_start:
                part_end -= 2
            elif data[part_end - 1 : part_end] == b"\n" and part_end - 1 >= part_start:
                part_end -= 1
            parts.append((part_start, part_end))
        if m.group(1):  # close delimiter
            if part_start is None:
                raise MimeError("missing-boundary")
            return parts
        part_start = m.end()
        pos = m.end()


def walk(data: bytes, max_parts: int | None = None) -> list[Entity]:
    """Every entity of the message in document order (multiparts before their children).

    Raises MimeError for structure the rewriter must not touch: NUL bytes, 8-bit headers,
    missing boundaries, nesting deeper than :data:`MAX_DEPTH`, more than ``max_parts``
    entities (``too-many-parts``, found before their headers are parsed).
    """
    if b"\x00" in data:
        raise MimeError("nul-bytes")
    out: list[Entity] = []
    _walk(data, 0, len(data), "", 0, "text/plain", out, max_parts or 0)
    return out


def _walk(
    data: bytes,
    start: int,
    end: int,
    path: str,
    depth: int,
    default_type: str,
    out: list[Entity],
    max_parts: int,
) -> None:
    if depth > MAX_DEPTH:
        raise MimeError("too-deep")
    if max_parts and len(out) >= max_parts:
        raise MimeError("too-many-parts")
    header_end, body_start, eol = split_entity(data, start, end)
    headers = parse_headers(data[start:header_end], default_type)
    entity = Entity(path or "1", start, header_end, body_start, end, eol, headers, depth)
    out.append(entity)
    if not headers.content_type.startswith("multipart/"):
        return
    if headers.protection is not None:
        return  # never looked into
    if headers.transfer_encoding not in ("", "7bit", "8bit", "binary"):
        raise MimeError("encoded-multipart")
    if headers.boundary is None:
        raise MimeError("missing-boundary")
    child_default = "message/rfc822" if headers.content_type == "multipart/digest" else "text/plain"
    parts = split_multipart(data, body_start, end, headers.boundary)
    if max_parts and len(out) + len(parts) > max_parts:
        raise MimeError("too-many-parts")
    for i, (pstart, pend) in enumerate(parts):
        child_path = f"{path}.{i + 1}" if path else str(i + 1)
        _walk(data, pstart, pend, child_path, depth + 1, child_default, out, max_parts)


# --- quoted-printable ---------------------------------------------------------------------


# A logical line: physical lines ending in a soft break ("=" + optional whitespace), then
# one that does not (or the end of the body).
_QP_LOGICAL_RE = re.compile(rb"(?:[^\n]*=[ \t\r]*\n)*[^\n]*(?:\n|\Z)")


def qp_decode(body: bytes | memoryview) -> bytes:
    """Decode a quoted-printable body; MimeError("bad-quoted-printable") when an ``=`` is
    neither an escape nor a soft line break."""
    valid = _qp_valid(body) if _qp_valid is not None else _BAD_QP_RE.search(body) is None
    if not valid:
        raise MimeError("bad-quoted-printable")
    return binascii.a2b_qp(body)


def qp_logical_lines(body: bytes) -> list[bytes]:
    """The encoded logical lines of a quoted-printable body (soft breaks join physical
    lines); joined they give ``body`` back."""
    lines: list[bytes] = _QP_LOGICAL_RE.findall(body)
    if lines and not lines[-1]:
        lines.pop()  # only the match at the very end can be empty
    return lines


Change = tuple[int, int, bytes]
#: QP bodies are cut into chunks of about this many bytes (at hard line breaks) first, so
#: only the chunks holding a change are split into lines.
_QP_CHUNK = 8192


def qp_reencode(
    body: bytes | memoryview, decoded: bytes, changes: Sequence[Change], eol: bytes
) -> bytes | bytearray:
    """``body`` (quoted-printable, decoding to ``decoded``) with the byte ranges
    ``changes`` = [(start, end, new)] of the decoded content replaced (sorted, disjoint).

    Only the logical lines a change touches are re-encoded; every other line keeps its
    original encoded bytes. Falls back to encoding everything anew if a split does not
    reproduce ``decoded`` (it always should). ``body`` may be a memoryview (of the whole
    message, say): it is never copied as a whole, except into the result, which is built
    in place (a bytearray: no list of pieces and a joined copy of them held at once).
    """
    if changes and _qp_line_starts is not None:
        mapped = _qp_reencode_mapped(body, decoded, changes, eol, _qp_line_starts)
        if mapped is not None:
            return mapped
    chunks = _qp_chunks(body)
    return _rewrite_pieces(
        chunks,
        decoded,
        changes,
        lambda enc, dec, local: _qp_reencode_lines(enc, dec, local, eol),
        lambda: qp_encode(_apply(decoded, changes), eol),
        eol,
    )


def _qp_reencode_mapped(
    body: bytes | memoryview,
    decoded: bytes,
    changes: Sequence[Change],
    eol: bytes,
    line_starts: Callable[[bytes | memoryview, Sequence[int]], list[int] | None],
) -> bytearray | None:
    """:func:`qp_reencode` without decoding any line no change touches.

    The n-th line of ``decoded`` is the n-th logical line of ``body`` unless an escaped
    line feed (``=0A``) comes before it: the lines holding a change are numbered by
    counting line breaks in ``decoded``, found in ``body`` by ``line_starts`` (the C
    helper, which also reports such an escape), checked by decoding them alone, and only
    they are encoded anew. None when the mapping does not hold: the caller then takes
    the general path.
    """
    runs: list[tuple[int, int, list[Change], int]] = []  # first, stop, changes, index
    lines: list[int] = []
    line = counted = 0
    i = 0
    while i < len(changes):
        start, end, new = changes[i]
        first = decoded.rfind(b"\n", 0, start) + 1
        stop = _line_end(decoded, max(start, end - 1))
        local = [(start - first, end - first, new)]
        i += 1
        while i < len(changes) and changes[i][0] < stop:  # more changes on these lines
            start, end, new = changes[i]
            stop = max(stop, _line_end(decoded, max(start, end - 1)))
            local.append((start - first, end - first, new))
            i += 1
        line += decoded.count(b"\n", counted, first)
        counted = first
        runs.append((first, stop, local, len(lines)))
        lines.append(line)
        if decoded[stop - 1 : stop] == b"\n":  # else the run is the body's last line
            lines.append(line + decoded.count(b"\n", first, stop))
    offsets = line_starts(body, lines)
    if offsets is None:
        return None
    offsets.append(len(body))  # where a run without a final line break ends
    out = bytearray()
    written = 0  # body bytes already copied or replaced
    for first, stop, local, index in runs:
        enc_start, enc_stop = offsets[index], offsets[index + 1]
        if decoded[stop - 1 : stop] != b"\n":
            enc_stop = len(body)
        if binascii.a2b_qp(body[enc_start:enc_stop]) != decoded[first:stop]:
            return None
        rendered = qp_encode(_apply(decoded[first:stop], local), eol)
        out += body[written:enc_start]
        out += rendered
        if enc_stop < len(body) and not rendered.endswith(b"\n"):
            out += b"=" + eol  # the next line must still start a physical line
        written = enc_stop
    out += body[written:]
    return out


def _line_end(data: bytes, pos: int) -> int:
    """The offset just after the line break ending the line that holds ``pos``."""
    nl = data.find(b"\n", pos)
    return len(data) if nl < 0 else nl + 1


def _qp_reencode_lines(
    body: bytes, decoded: bytes, changes: Sequence[Change], eol: bytes
) -> bytes | bytearray:
    return _rewrite_pieces(
        qp_logical_lines(body),
        decoded,
        changes,
        lambda _enc, dec, local: qp_encode(_apply(dec, local), eol),
        lambda: qp_encode(_apply(decoded, changes), eol),
        eol,
    )


_NL_RE = re.compile(rb"\n")


def _qp_chunks(body: bytes | memoryview) -> list[memoryview]:
    """``body`` cut after hard line breaks roughly every :data:`_QP_CHUNK` bytes (views
    into ``body``, not copies)."""
    view = memoryview(body)
    cuts = [0]
    pos = _QP_CHUNK
    n = len(view)
    find = _NL_RE.search  # (works on any buffer, a memoryview included)
    while pos < n:
        m = find(view, pos)
        while m is not None:
            nl = m.start()
            j = nl
            while j > 0 and view[j - 1] in b"\r \t":
                j -= 1
            if j == 0 or view[j - 1] != 0x3D:  # not "=": a hard line break
                break
            m = find(view, nl + 1)
        if m is None:
            break
        cuts.append(m.end())
        pos = m.end() + _QP_CHUNK
    cuts.append(n)
    return [view[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def _rewrite_pieces(
    pieces: Sequence[bytes | memoryview],
    decoded: bytes,
    changes: Sequence[Change],
    render: Callable[[bytes, bytes, list[Change]], bytes | bytearray],
    fallback: Callable[[], bytes],
    eol: bytes,
) -> bytes | bytearray:
    """``pieces`` (encoded, each decoding on its own) with every run of pieces touched by
    a change replaced by ``render(encoded run, decoded run, changes relative to it)``.

    Pieces are decoded (and compared with ``decoded``, without copying it) only as far
    as the changes reach: the pieces after the last change are copied as they are.
    """
    if not changes:
        return b"".join(pieces)
    if len(decoded) <= _SMALL_RUN:
        # Small (the lines of a chunk): decoding every piece in one C-level map and
        # comparing the join costs less than a Python loop over the pieces.
        parts = list(map(binascii.a2b_qp, pieces))
        if b"".join(parts) != decoded:
            return fallback()
        all_ends = list(itertools.accumulate(map(len, parts)))
        return _splice_pieces(pieces, all_ends, decoded, changes, render, eol, small=True)
    reach = max(max(start + 1, end) for start, end, _ in changes)
    ends: list[int] = []  # decoded end offset of each piece decoded so far
    pos = 0
    for piece in pieces:
        part = binascii.a2b_qp(piece)
        # (startswith compares in place, with memcmp: a memoryview comparison would go
        # byte by byte through the struct machinery, several times slower.)
        if not decoded.startswith(part, pos):
            return fallback()
        pos += len(part)
        ends.append(pos)
        if pos >= reach:
            break
    else:
        if pos != len(decoded):
            return fallback()
    return _splice_pieces(pieces, ends, decoded, changes, render, eol, small=False)


#: Decoded size up to which _rewrite_pieces decodes all pieces at once.
_SMALL_RUN = 4 * _QP_CHUNK


def _splice_pieces(
    pieces: Sequence[bytes | memoryview],
    ends: list[int],
    decoded: bytes,
    changes: Sequence[Change],
    render: Callable[[bytes, bytes, list[Change]], bytes | bytearray],
    eol: bytes,
    *,
    small: bool,
) -> bytearray:
    """The output of :func:`_rewrite_pieces`, given the decoded end offset of each
    piece up to (at least) the last one a change touches. ``small``: the pieces are
    few and short (lines), so unchanged stretches are joined before being appended;
    else (chunks of a large body) they are appended one by one, never copied twice."""
    out = bytearray()

    def put(stretch: Sequence[bytes | memoryview]) -> None:
        nonlocal out
        if small:
            out += b"".join(stretch)
        else:
            for piece in stretch:
                out += piece

    i = 0  # next piece not yet written
    ci = 0
    while ci < len(changes):
        first = bisect.bisect_right(ends, changes[ci][0], lo=i)
        put(pieces[i:first])
        # Pieces [first, last] form a run: extend it over every change that starts in it
        # (a change may reach into following pieces when an href spans a line break).
        last = first
        local: list[Change] = []
        region_start = ends[first - 1] if first else 0
        while ci < len(changes) and (last >= len(ends) or changes[ci][0] < ends[last]):
            last = max(last, bisect.bisect_left(ends, changes[ci][1], lo=last))
            start, end, new = changes[ci]
            local.append((start - region_start, end - region_start, new))
            ci += 1
        last = min(last, len(ends) - 1)
        run = b"".join(pieces[first : last + 1])
        rendered = render(run, decoded[region_start : ends[last]], local)
        i = last + 1
        if i < len(pieces) and not rendered.endswith(b"\n"):
            # A change took the run's final line break away: end it with a soft break so
            # the next piece still starts a physical line of its own.
            rendered += b"=" + eol
        out += rendered
    put(pieces[i:])
    return out


def _apply(data: bytes, changes: Sequence[Change]) -> bytes:
    """``data`` with the byte ranges ``changes`` = [(start, end, new)] replaced."""
    pieces: list[bytes] = []
    pos = 0
    for start, end, new in changes:
        pieces += (data[pos:start], new)
        pos = end
    pieces.append(data[pos:])
    return b"".join(pieces)


#: Large contents are encoded in slices of about this many bytes (cut after a line
#: break), so that only the result is ever held whole.
_ENCODE_SLICE = 1 << 20


def qp_encode(data: bytes, eol: bytes) -> bytes:
    """Quoted-printable encode ``data`` whose hard line breaks are ``eol``; physical lines
    are at most 76 characters, soft breaks never split an escape, and a CR or LF that is
    not part of ``eol`` is escaped (so decoding gives back exactly ``data``)."""
    if len(data) <= _ENCODE_SLICE:
        return _qp_encode_lines(data, eol)
    # Cut right after a line break: each slice then encodes exactly as it would within
    # the whole (lines are encoded one by one).
    pieces: list[bytes] = []
    pos = 0
    while pos < len(data):
        cut = data.find(eol, pos + _ENCODE_SLICE)
        stop = len(data) if cut < 0 else cut + len(eol)
        pieces.append(_qp_encode_lines(data[pos:stop], eol))
        pos = stop
    return b"".join(pieces)


def _qp_encode_lines(data: bytes, eol: bytes) -> bytes:
    lines = data.split(eol)
    if lines[-1] == b"":
        lines.pop()  # data ended with a line break: no partial last line
        trailer = eol
    else:
        trailer = b""
    soft = b"=" + eol
    out = []
    for line in lines:
        # istext=False: CR and LF inside a line are data, escaped as =0D/=0A.
        encoded = binascii.b2a_qp(line, quotetabs=False, istext=False, header=False)
        out.append(encoded if eol == b"\n" else encoded.replace(b"=\n", soft))
    return eol.join(out) + trailer if out else b""


# --- base64 ---------------------------------------------------------------------------------


def b64_decode(body: bytes) -> bytes:
    """Strictly decode a base64 body; MimeError("bad-base64") on anything irregular."""
    if not _B64_CHARS_RE.fullmatch(body):
        raise MimeError("bad-base64")
    compact = _WS_RE.sub(b"", body)
    try:
        return binascii.a2b_base64(compact, strict_mode=True) if compact else b""
    except binascii.Error:
        raise MimeError("bad-base64") from None


def b64_line_length(body: bytes) -> int:
    """The encoded line length the original used (76 when it cannot be told)."""
    stripped = body.strip()
    if b"\n" not in stripped:
        return 76  # one line only: nothing to imitate
    n = len(stripped.split(b"\n", 1)[0].rstrip(b"\r \t"))
    return n if 0 < n <= 996 and n % 4 == 0 else 76


def b64_encode(data: bytes, line_length: int, eol: bytes, trailer: bytes) -> bytes:
    """Base64 in lines of ``line_length`` characters joined by ``eol``, then ``trailer``
    (the whitespace the original body ended with)."""
    # Slices of whole lines' worth of input (a multiple of 3 bytes), so that only the
    # result is ever held whole.
    step = max(1, _ENCODE_SLICE // (line_length * 3)) * line_length * 3
    view = memoryview(data)
    pieces: list[bytes] = []
    for pos in range(0, len(data), step):
        encoded = binascii.b2a_base64(view[pos : pos + step], newline=False)
        pieces.append(
            eol.join([encoded[i : i + line_length] for i in range(0, len(encoded), line_length)])
        )
    return eol.join(pieces) + trailer


def has_long_line(data: bytes, around: Sequence[int]) -> bool:
    """Whether one of the lines of ``data`` holding the offsets ``around`` is longer than
    998 octets (without its CRLF/LF): only lines with a change can have grown."""
    if len(data) <= MAX_LINE_OCTETS:
        return False
    for pos in around:
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        line = data[start : len(data) if end < 0 else end]
        if len(line.rstrip(b"\r")) > MAX_LINE_OCTETS:
            return True
    return False


def replace_header(block: bytes, name: str, value: str, eol: bytes) -> bytes:
    """``block`` with header ``name`` (every occurrence, folded lines included) replaced by
    one ``name: value`` line, or with that line appended when absent."""
    pattern = _header_re(name)
    new_line = f"{name}: {value}".encode("ascii") + eol
    if not block.endswith(b"\n"):
        block += eol
    if pattern.search(block):
        done = False

        def sub(_m: re.Match[bytes]) -> bytes:
            nonlocal done
            if done:
                return b""
            done = True
            return new_line

        return pattern.sub(sub, block)
    return block + new_line


def remove_header(block: bytes, name: str) -> bytes:
    """``block`` without any occurrence of header ``name`` (folded lines included)."""
    return _header_re(name).sub(b"", block)


def _header_re(name: str) -> re.Pattern[bytes]:
    """Every occurrence of header ``name``: its line and its folded continuation lines."""
    return re.compile(
        rb"(?im)^"
        + re.escape(name.encode("ascii"))
        + rb"[ \t]*:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*"
    )
