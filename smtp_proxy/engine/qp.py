"""Quoted-printable bodies: decoded, re-encoded around changes, and encoded.

A body is decoded *per logical line* (soft breaks join physical lines), so that after a
link changes only the lines holding a change are encoded again and every other line is
written back byte for byte. New lines are at most 76 characters. The C speedups (when
built) check a body and map its logical lines; the Python code here is the reference and
the fallback.
"""

from __future__ import annotations

import binascii
import bisect
import itertools
import re
from collections.abc import Callable, Sequence

from smtp_proxy.engine.mime_parts import MimeError
from smtp_proxy.engine.speedups import speedups

_qp_valid = speedups.qp_valid if speedups else None
_qp_line_starts = speedups.qp_line_starts if speedups else None

#: RFC 2045: quoted-printable lines are at most 76 characters (without CRLF).
QP_LINE = 76

_BAD_QP_RE = re.compile(rb"=(?![0-9A-Fa-f]{2}|[ \t]*(?:\r?\n|\Z))")

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
