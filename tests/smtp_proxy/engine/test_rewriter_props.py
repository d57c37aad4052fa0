"""Property tests: random HTML fragments, URLs, charsets and encodings through rewrite_message.

Whatever comes in: no exception, and every acceptance check of the corpus test holds
(bytes outside href values identical, tokens decode to the exact URL, lxml sees the same
anchors, no new MIME defects, second rewrite a no-op).
"""

from __future__ import annotations

import base64
import binascii
import html as htmllib
import itertools
import quopri

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clickrelay.config import load_config_text
from smtp_proxy.engine import mime_parts
from smtp_proxy.engine.rewriter import TrackingSettings, rewrite_message
from smtp_proxy.engine.speedups import speedups
from tests.smtp_proxy.engine.test_rewriter_corpus import BASE, KEYRING, check_rewrite, fits
from tests.support.tracked_links import open_tracked

PROFILE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> TrackingSettings:
    base = tmp_path_factory.mktemp("cfg")
    config = load_config_text(f'[tracking]\nbase_url = "{BASE}"\n', base_dir=base)
    return TrackingSettings.from_config(config, KEYRING)


# --- strategies --------------------------------------------------------------------------

_PATH_CHARS = "abcXYZ019-._~!$&'()*+,;=:@[]%/é€ü"
hosts = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){1,2}\Z")
urls = st.builds(
    lambda scheme, host, path, query, frag: f"{scheme}://{host}/{path}{query}{frag}",
    st.sampled_from(["http", "https", "HTTPS"]),
    hosts,
    st.text(_PATH_CHARS, max_size=30),
    st.one_of(st.just(""), st.text(_PATH_CHARS + "?=&", max_size=30).map(lambda q: "?" + q)),
    st.one_of(st.just(""), st.text("abc-#", max_size=8).map(lambda f: "#" + f)),
)
other_hrefs = st.sampled_from(
    ["#top", "mailto:a@example.com", "", "{{ url }}", "http://", "tel:123", "javascript:x()"]
)
words = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="<>&\r\n"),
    max_size=20,
)


@st.composite
def anchors(draw: st.DrawFn) -> str:
    href = draw(st.one_of(urls, other_hrefs))
    quote = draw(st.sampled_from(['"', "'"]))
    escaped = htmllib.escape(href, quote=True)
    if draw(st.booleans()):
        escaped = escaped.replace("&#x27;", "&#39;")
    attr = draw(st.sampled_from(["", ' class="btn"', ' data-clickrelay="off"', " target=_blank"]))
    tag = draw(st.sampled_from(["a", "A", "area"]))
    if tag == "area":
        return f"<area{attr} href={quote}{escaped}{quote} alt=x>"
    return f"<{tag}{attr} href={quote}{escaped}{quote}>{draw(words)}</{tag}>"


fragments = st.lists(
    st.one_of(
        words,
        anchors(),
        st.sampled_from(["<p>", "</p>", "<br>", "&amp;", "&nbsp;", "\n", "<!-- c -->", "<b>x</b>"]),
    ),
    max_size=12,
).map("".join)


def _message(html: str, charset: str, cte: str, text_part: str | None) -> bytes:
    raw = html.replace("\n", "\r\n").encode(charset)
    if cte == "base64":
        body = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    elif cte == "quoted-printable":
        body = quopri.encodestring(raw.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    else:
        body = raw
    part = (
        f"Content-Type: text/html; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    ).encode() + body
    head = b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
    if text_part is None:
        return head + part
    text = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text_part.encode("utf-8") + b"\r\n"
    return (
        head
        + b"Content-Type: multipart/alternative; boundary=XyZ\r\n\r\n--XyZ\r\n"
        + text
        + b"--XyZ\r\n"
        + part
        + b"\r\n--XyZ--\r\n"
    )


# --- properties --------------------------------------------------------------------------


@PROFILE
@given(
    html=fragments,
    charset=st.sampled_from(
        ["utf-8", "iso-8859-1", "windows-1252", "koi8-r", "us-ascii", "iso-2022-jp", "shift_jis"]
    ),
    cte=st.sampled_from(["7bit", "8bit", "quoted-printable", "base64"]),
    text_urls=st.one_of(st.none(), st.lists(urls, max_size=3)),
)
def test_random_html_is_preserved(
    tracking: TrackingSettings,
    html: str,
    charset: str,
    cte: str,
    text_urls: list[str] | None,
) -> None:
    if not fits(html, charset):
        charset = "utf-8"
    if cte == "7bit" and not html.isascii():
        cte = "8bit"
    text = None if text_urls is None else "Links: " + " and ".join(text_urls) + "."
    data = _message(html, charset, cte, text)
    result = rewrite_message(data, tracking, queue_id="QP")
    assert not result.reason.startswith("error:"), result.reason
    if not result.changed:
        assert result.data == data
    check_rewrite(data, result, tracking)


@PROFILE
@given(url=urls, cte=st.sampled_from(["8bit", "quoted-printable", "base64"]))
def test_tracked_url_decodes_exactly(tracking: TrackingSettings, url: str, cte: str) -> None:
    html = f'<p>x</p><a href="{htmllib.escape(url)}">y</a>'
    data = _message(html, "utf-8", cte, None)
    result = rewrite_message(data, tracking, queue_id="QU")
    decisions = result.links
    assert [d.url for d in decisions] == [url]
    if decisions[0].action == "tracked":
        assert decisions[0].tracked_url is not None
        assert open_tracked(KEYRING, decisions[0].tracked_url).url == url
    check_rewrite(data, result, tracking)


@PROFILE
@given(data=st.binary(max_size=400))
def test_random_bytes_never_raise(tracking: TrackingSettings, data: bytes) -> None:
    for blob in (data, b"Content-Type: text/html\r\n\r\n" + data):
        result = rewrite_message(blob, tracking, queue_id="QB")
        assert not result.reason.startswith("error:"), result.reason
        if not result.changed:
            assert result.data == blob


@PROFILE
@given(data=st.binary(max_size=300), crlf=st.booleans())
def test_qp_encode_round_trip(data: bytes, crlf: bool) -> None:
    eol = b"\r\n" if crlf else b"\n"
    encoded = mime_parts.qp_encode(data, eol)
    assert binascii.a2b_qp(encoded) == data
    assert all(len(line) <= mime_parts.QP_LINE for line in encoded.split(eol))
    lines = mime_parts.qp_logical_lines(encoded)
    assert b"".join(lines) == encoded
    assert b"".join(map(binascii.a2b_qp, lines)) == data == mime_parts.qp_decode(encoded)


_ANY_LINE = st.binary(max_size=120)


@st.composite
def qp_edits(
    draw: st.DrawFn,
    line: st.SearchStrategy[bytes] = _ANY_LINE,
    new_chars: str = "abc:/._-",
) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """CRLF-separated ``line``s and sorted, disjoint changes of some of their bytes."""
    lines = draw(st.lists(line, min_size=1, max_size=30))
    data = b"\r\n".join(lines) + draw(st.sampled_from([b"", b"\r\n"]))
    cuts = sorted(draw(st.sets(st.integers(0, len(data)), max_size=8)))
    changes = []
    for start, end in itertools.pairwise(cuts):
        if end > start and draw(st.booleans()):
            changes.append((start, end, draw(st.text(new_chars, min_size=1)).encode()))
    return data, changes


@PROFILE
@given(edit=qp_edits(), chunk=st.sampled_from([16, 100, 8192]), pure_python=st.booleans())
def test_qp_reencode_changes_only_what_it_must(
    edit: tuple[bytes, list[tuple[int, int, bytes]]], chunk: int, pure_python: bool
) -> None:
    data, changes = edit
    body = mime_parts.qp_encode(data, b"\r\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mime_parts, "_QP_CHUNK", chunk)
        if pure_python:  # the general path (the only one without the C extension)
            mp.setattr(mime_parts, "_qp_line_starts", None)
        out = mime_parts.qp_reencode(body, data, changes, b"\r\n")
    expected = bytearray(data)
    for start, end, new in reversed(changes):
        expected[start:end] = new
    assert binascii.a2b_qp(out) == bytes(expected)
    assert all(len(line) <= mime_parts.QP_LINE for line in out.split(b"\r\n"))
    if not changes:
        assert out == body
    else:  # lines before the first change are the original encoded lines
        untouched = data[: changes[0][0]].count(b"\r\n")
        head = b"\r\n".join(body.split(b"\r\n")[:untouched])
        assert out.startswith(head)


LINE_STARTS = speedups.qp_line_starts if speedups else None
needs_speedups = pytest.mark.skipif(speedups is None, reason="C extension not built")


def qp_text_edits() -> st.SearchStrategy[tuple[bytes, list[tuple[int, int, bytes]]]]:
    """Text-like content (what HTML parts hold): long and short lines, "=" and 8-bit
    bytes to escape, no CR or LF inside a line; so its encoding maps line to line."""
    line = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    return qp_edits(line=line, new_chars="abc:/._=-")


@needs_speedups
@PROFILE
@given(edit=qp_text_edits(), trailing_soft_break=st.booleans())
def test_qp_reencode_line_mapping_matches_the_general_path(
    edit: tuple[bytes, list[tuple[int, int, bytes]]], trailing_soft_break: bool
) -> None:
    """The fast path (lines found by counting line breaks, only touched lines decoded)
    gives the very bytes of the general one (every piece decoded and compared)."""
    data, changes = edit
    body = mime_parts.qp_encode(data, b"\r\n") + (b"=" if trailing_soft_break else b"")
    assert mime_parts.qp_decode(body) == data
    mapped = None
    if changes:
        mapped = mime_parts._qp_reencode_mapped(body, data, changes, b"\r\n", LINE_STARTS)
        assert mapped is not None  # text content always maps line to line
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mime_parts, "_qp_line_starts", None)
        general = mime_parts.qp_reencode(body, data, changes, b"\r\n")
    assert bytes(mime_parts.qp_reencode(body, data, changes, b"\r\n")) == bytes(general)
    if mapped is not None:
        assert bytes(mapped) == bytes(general)


@needs_speedups
@pytest.mark.parametrize(
    "body",
    [
        b'a=3Db=0Ac\r\nhref=3D"x"\r\n',  # an escaped line feed: lines do not map
        b'a=0a\nhref=3D"x"\n',
    ],
)
def test_qp_reencode_line_mapping_declines_bodies_it_cannot_map(body: bytes) -> None:
    decoded = mime_parts.qp_decode(body)
    start = decoded.index(b"x")
    changes = [(start, start + 1, b"https://t.example/c/T")]
    assert mime_parts._qp_reencode_mapped(body, decoded, changes, b"\r\n", LINE_STARTS) is None
    out = mime_parts.qp_reencode(body, decoded, changes, b"\r\n")  # the general path
    assert binascii.a2b_qp(bytes(out)) == decoded.replace(b"x", b"https://t.example/c/T")


@PROFILE
@given(edit=qp_edits(), chunk=st.sampled_from([16, 100, 8192]), small_run=st.sampled_from([0, 64]))
def test_qp_reencode_of_a_view_keeps_the_lines_after_the_last_change(
    edit: tuple[bytes, list[tuple[int, int, bytes]]], chunk: int, small_run: int
) -> None:
    """The rewriter passes a memoryview into the whole message; pieces after the last
    change are copied without being decoded: they must come out as they were.
    ``small_run``: below this decoded size pieces are decoded all at once, above it
    one by one, only up to the last change (the path of large parts)."""
    data, changes = edit
    body = mime_parts.qp_encode(data, b"\r\n")
    message = b"head\r\n\r\n" + body + b"\r\n--tail--\r\n"
    view = memoryview(message)[8 : 8 + len(body)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mime_parts, "_QP_CHUNK", chunk)
        mp.setattr(mime_parts, "_SMALL_RUN", small_run)
        reference = mime_parts.qp_reencode(body, data, changes, b"\r\n")
        mp.setattr(mime_parts, "_SMALL_RUN", 1 << 30)
        assert bytes(mime_parts.qp_reencode(body, data, changes, b"\r\n")) == bytes(reference)
        mp.setattr(mime_parts, "_SMALL_RUN", small_run)
        from_view = mime_parts.qp_reencode(view, data, changes, b"\r\n")
        from_bytes = mime_parts.qp_reencode(body, data, changes, b"\r\n")
    assert bytes(from_view) == bytes(from_bytes)
    if changes:
        after = data[changes[-1][1] :]
        if b"\r\n" in after:  # the whole lines after the last change's line
            tail_lines = after.split(b"\r\n", 1)[1]
            assert binascii.a2b_qp(bytes(from_view)).endswith(tail_lines)
            encoded_tail = mime_parts.qp_encode(tail_lines, b"\r\n")
            assert bytes(from_view).endswith(encoded_tail)


@PROFILE
@given(data=st.binary(max_size=600), crlf=st.booleans(), size=st.integers(1, 64))
def test_qp_encode_in_slices_is_the_same_as_whole(data: bytes, crlf: bool, size: int) -> None:
    eol = b"\r\n" if crlf else b"\n"
    whole = mime_parts.qp_encode(data, eol)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mime_parts, "_ENCODE_SLICE", size)
        sliced = mime_parts.qp_encode(data, eol)
    assert sliced == whole
    assert binascii.a2b_qp(sliced) == data


@PROFILE
@given(
    data=st.binary(max_size=2000),
    length=st.sampled_from([4, 64, 76, 996]),
    size=st.integers(1, 5000),
)
def test_b64_encode_in_slices_is_the_same_as_whole(data: bytes, length: int, size: int) -> None:
    encoded = base64.b64encode(data)
    expected = (
        b"\r\n".join(encoded[i : i + length] for i in range(0, len(encoded), length)) + b"\r\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mime_parts, "_ENCODE_SLICE", size)
        assert mime_parts.b64_encode(data, length, b"\r\n", b"\r\n") == expected
    assert mime_parts.b64_encode(data, length, b"\r\n", b"\r\n") == expected


@needs_speedups
@PROFILE
@given(body=st.binary(max_size=300).map(lambda b: b.replace(b"\0", b"=")))
def test_qp_line_starts_agree_with_decoding_line_by_line(body: bytes) -> None:
    """Any bytes, soft breaks and "==" included: where the C helper says decoded line
    n starts, decoding the body from there gives the decoded content from line n on."""
    decoded = binascii.a2b_qp(body)
    count = decoded.count(b"\n")
    starts = LINE_STARTS(body, list(range(count + 1)))
    if starts is None:
        assert b"=0a" in body.lower()  # only an escaped line feed may refuse
        return
    assert starts[0] == 0
    for n, start in enumerate(starts):
        expected = decoded.split(b"\n", n)[n] if n else decoded
        assert binascii.a2b_qp(body[start:]) == expected


@needs_speedups
@PROFILE
@given(body=st.binary(max_size=200).map(lambda b: b.replace(b"\0", b"=")))
def test_qp_valid_is_the_regex(body: bytes) -> None:
    assert speedups is not None
    assert speedups.qp_valid(body) == (mime_parts._BAD_QP_RE.search(body) is None)
    assert speedups.qp_valid(memoryview(body)) == speedups.qp_valid(body)
