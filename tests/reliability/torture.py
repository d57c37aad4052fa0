"""Generated MIME torture messages (bytes), each with a name, for the rewriter and the proxy.

Sizes follow :func:`~tests.reliability.harness.scale`: the full run builds the cases at
sizes past what real mail reaches (nesting depth 1000, a 10 MB header, 100,000 links in
one part), where a recursive or quadratic walk would show; the quick subset uses smaller
instances of the same shapes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from tests.reliability.harness import scale

CRLF = b"\r\n"


def _headers(extra: list[bytes] | None = None, *, mid: str = "torture") -> list[bytes]:
    return [
        b"From: sender@example.com",
        b"To: rcpt@example.net",
        b"Subject: torture " + mid.encode(),
        b"Message-ID: <" + mid.encode() + b"@torture.example>",
        b"MIME-Version: 1.0",
        *(extra or []),
    ]


def _msg(headers: list[bytes], body: bytes, eol: bytes = CRLF) -> bytes:
    return eol.join(headers) + eol + eol + body


def _html(n: int = 2) -> bytes:
    links = b"".join(
        b'<a href="https://example.com/p/%d?a=1&amp;b=2">l%d</a>\r\n' % (i, i) for i in range(n)
    )
    return b"<html><body>" + links + b"</body></html>\r\n"


def deep_nesting() -> bytes:
    depth = scale(200, 1000)
    parts: list[bytes] = []
    for level in range(depth):
        parts.append(
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level)
        )
    inner = b"Content-Type: text/html; charset=utf-8\r\n\r\n" + _html()
    closing = b"".join(b"\r\n--b%d--\r\n" % level for level in reversed(range(depth)))
    body = b"".join(parts) + inner + closing
    # The top level's own Content-Type is the first nested header block.
    first, rest = body.split(b"\r\n\r\n", 1)
    return _msg(_headers([first], mid="deep"), rest)


def huge_header() -> bytes:
    """A single header of 10 MB, folded into RFC 5322 lines (< 998 chars)."""
    size = scale(1_000_000, 10_000_000)
    line = b" " + b"h" * 900
    folds = CRLF.join([line] * (size // len(line)))
    return _msg(
        _headers([b"X-Huge:" + folds, b"Content-Type: text/html"], mid="hugeheader"), _html()
    )


def huge_unfolded_header() -> bytes:
    """One header line of 1 MB: longer than SMTP allows (the proxy may refuse it)."""
    size = scale(200_000, 1_000_000)
    return _msg(
        _headers([b"X-Long: " + b"L" * size, b"Content-Type: text/html"], mid="longline"), _html()
    )


def many_links() -> bytes:
    count = scale(10_000, 100_000)
    body = (
        b"<html><body>\r\n"
        + b"".join(
            b'<a href="https://example.com/item/%d">%d</a>\r\n' % (i, i) for i in range(count)
        )
        + b"</body></html>\r\n"
    )
    return _msg(_headers([b"Content-Type: text/html; charset=us-ascii"], mid="manylinks"), body)


def many_text_links() -> bytes:
    count = scale(10_000, 100_000)
    body = b"".join(b"see https://example.com/t/%d now\r\n" % i for i in range(count))
    return _msg(_headers([b"Content-Type: text/plain; charset=us-ascii"], mid="manytext"), body)


def mixed_line_endings() -> bytes:
    body = (
        b'<html>\n<body>\r<a href="https://example.com/lf">lf</a>\n'
        b'<a href="https://example.com/cr">cr</a>\r'
        b'<a href="https://example.com/crlf">crlf</a>\r\n.\n.\r\n</body></html>\r\n'
    )
    headers = (
        b"From: a@example.com\nTo: b@example.net\r\nSubject: mixed\r"
        b"Message-ID: <mixed@torture.example>\r\nContent-Type: text/html\n"
    )
    return headers + b"\r\n" + body


def nul_bytes() -> bytes:
    body = b'<html><body>\x00<a href="https://example.com/a\x00b">x</a>\x00<a href="https://example.com/ok">ok</a></body></html>\r\n'
    return _msg(_headers([b"Content-Type: text/html", b"X-Nul: a\x00b"], mid="nul"), body)


def invalid_encodings() -> bytes:
    boundary = b"XYZ"
    parts = [
        # base64 with garbage and wrong padding
        b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(_html())[:-3]
        + b"!!!***\r\n",
        # quoted-printable with bad escapes and a soft break inside an href
        b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b'<a href=3D"https://example.com/q=\r\np?x=3Dy=ZZ">q</a> =G1 =\r\n',
        # invalid UTF-8 in a utf-8 part
        b'Content-Type: text/html; charset=utf-8\r\n\r\n<a href="https://example.com/\xff\xfe">bad</a>\xc3\x28\r\n',
        # unknown charset and unknown transfer encoding
        b"Content-Type: text/html; charset=x-no-such-charset\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\n" + _html(),
    ]
    body = (
        b"".join(b"--" + boundary + CRLF + p + CRLF for p in parts) + b"--" + boundary + b"--\r\n"
    )
    return _msg(_headers([b'Content-Type: multipart/mixed; boundary="XYZ"'], mid="badenc"), body)


def lying_charset() -> bytes:
    boundary = b"LIE"
    parts = [
        # says us-ascii, is latin-1 and utf-8
        b"Content-Type: text/html; charset=us-ascii\r\n\r\n"
        b'<a href="https://example.com/caf\xe9">\xe9</a>'
        b'<a href="https://example.com/\xc3\xa9t\xc3\xa9">x</a>\r\n',
        # says utf-16, is ascii
        b"Content-Type: text/html; charset=utf-16\r\n\r\n" + _html(),
        # a lying Content-Length
        b"Content-Type: text/html\r\nContent-Length: 3\r\n\r\n" + _html(),
    ]
    body = (
        b"".join(b"--" + boundary + CRLF + p + CRLF for p in parts) + b"--" + boundary + b"--\r\n"
    )
    return _msg(
        _headers(
            [b"Content-Type: multipart/alternative; boundary=LIE", b"Content-Length: 999999"],
            mid="lying",
        ),
        body,
    )


def eight_bit_headers() -> bytes:
    parts = [
        # 8bit headers and an encoded-word that does not decode
        b"Content-Type: text/plain; charset=utf-8\r\nX-8bit: \xe9\xe8\r\n"
        b"Content-Disposition: inline; filename==?utf-8?B?!!!?=\r\n\r\n"
        b"https://example.com/t\r\n",
    ]
    body = b"".join(b"--XYZ" + CRLF + p + CRLF for p in parts) + b"--XYZ--\r\n"
    return _msg(_headers([b'Content-Type: multipart/mixed; boundary="XYZ"'], mid="8bit"), body)


def utf16_part() -> bytes:
    """A part that says utf-8 but is UTF-16 (NUL bytes in the body)."""
    body = '<a href="https://example.com/u16">x</a>'.encode("utf-16")
    return _msg(_headers([b"Content-Type: text/html; charset=utf-8"], mid="utf16"), body)


def broken_structure() -> bytes:
    """No closing boundary, a missing boundary parameter, an empty part, a bare header."""
    body = (
        b"--open\r\nContent-Type: text/html\r\n\r\n" + _html() + b"--open\r\n\r\n"
        b'--open\r\nContent-Type: multipart/mixed\r\n\r\n<a href="https://example.com/nb">x</a>\r\n'
    )
    return _msg(_headers([b"Content-Type: multipart/mixed; boundary=open"], mid="broken"), body)


def long_boundary_and_params() -> bytes:
    b = b"B" * 5000
    body = (
        b"--"
        + b
        + b"\r\nContent-Type: text/html; "
        + b"; ".join(b"p%d=v" % i for i in range(5000))
        + b"\r\n\r\n"
        + _html()
        + b"\r\n--"
        + b
        + b"--\r\n"
    )
    return _msg(
        _headers([b'Content-Type: multipart/mixed; boundary="' + b + b'"'], mid="longboundary"),
        body,
    )


def html_torture() -> bytes:
    html = (
        b"<html><body>"
        + b"<div>" * 5000
        + b"<a href='https://example.com/q'>q</a><a href=https://example.com/u>u</a>"
        b'<a href="https://example.com/&#x22;&quot;">e</a><a\nhref\n=\n"https://example.com/nl">n</a>'
        b'<a href="https://example.com/unterminated>x</a><!-- <a href="https://example.com/c"> -->'
        b"<script>var s='<a href=\"https://example.com/s\">';</script>"
        b'<![CDATA[<a href="https://example.com/cd">]]>'
        + b"</div>" * 5000
        + b'<a href="'
        + b"https://example.com/"
        + b"x" * 100_000
        + b'">long</a></body></html>\r\n'
    )
    return _msg(_headers([b"Content-Type: text/html"], mid="html"), html)


def many_parts() -> bytes:
    """A multipart of tiny parts (14,075 in the full run, ~1 MB: the count that kept
    another client's NOOP waiting 0.78 s when rewritten inline), every one with a link:
    beyond ``[tracking] max_parts`` (1000) it must be relayed unchanged."""
    count = scale(2_000, 14_075)
    part = b"--mp\r\nContent-Type: text/plain\r\n\r\nhttps://example.com/p?%d\r\n"
    body = b"".join(part % i for i in range(count)) + b"--mp--\r\n"
    return _msg(_headers([b'Content-Type: multipart/mixed; boundary="mp"'], mid="parts"), body)


def empty_and_headers_only() -> bytes:
    return b"Subject: no body, no blank line, no MIME\r\n"


CASES: dict[str, Callable[[], bytes]] = {
    "deep-nesting": deep_nesting,
    "huge-header": huge_header,
    "huge-unfolded-header": huge_unfolded_header,
    "many-links": many_links,
    "many-text-links": many_text_links,
    "mixed-line-endings": mixed_line_endings,
    "nul-bytes": nul_bytes,
    "invalid-encodings": invalid_encodings,
    "lying-charset": lying_charset,
    "eight-bit-headers": eight_bit_headers,
    "utf16-part": utf16_part,
    "broken-structure": broken_structure,
    "long-boundary-and-params": long_boundary_and_params,
    "html-torture": html_torture,
    "headers-only": empty_and_headers_only,
    "many-parts": many_parts,
}
