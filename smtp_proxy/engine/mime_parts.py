"""Raw MIME structure, read from the original bytes without re-serialising anything.

The rewriter must leave every byte it does not mean to change exactly as it was, so it
never lets :mod:`email`'s generator write a message. Instead this module finds the
*offsets* of each entity's header block and body inside the original buffer: multipart
bodies are split on their exact boundary lines, and only the small header blocks are
handed to :mod:`email` to read Content-Type, boundary, charset, transfer encoding and
disposition. Large bodies (attachments) are never copied here; callers slice what they
need.

The transfer-encoding codecs are in :mod:`smtp_proxy.engine.qp` and
:mod:`smtp_proxy.engine.b64`, header editing in :mod:`smtp_proxy.engine.headers`.
"""

from __future__ import annotations

import email.parser
import email.policy
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import Message

#: Deeper nesting than this is treated as hostile (and left alone).
MAX_DEPTH = 50
#: RFC 5322: a line must not be longer than 998 octets (without CRLF).
MAX_LINE_OCTETS = 998

# A line that is neither "name:" nor a continuation nor empty.
_BAD_HEADER_LINE_RE = re.compile(rb"^(?![!-9;-~]+[ \t]*:|[ \t]|\r?$)", re.M)
_WANTED_FIELDS_RE = re.compile(
    rb"^(?:content-type|content-transfer-encoding|content-disposition|dkim-signature"
    rb"|x-clickrelay-track)[ \t]*:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*",
    re.M | re.I,
)
_BLANK_LINE_RE = re.compile(rb"\n\r?\n")
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
