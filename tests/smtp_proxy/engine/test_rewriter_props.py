"""Property tests: random HTML fragments, URLs, charsets and encodings through rewrite_message.

(The quoted-printable codec's own properties are in test_qp.py.)

Whatever comes in: no exception, and every acceptance check of the corpus test holds
(bytes outside href values identical, tokens decode to the exact URL, lxml sees the same
anchors, no new MIME defects, second rewrite a no-op).
"""

from __future__ import annotations

import base64
import html as htmllib
import quopri

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clickrelay.config import load_config_text
from smtp_proxy.engine.rewriter import TrackingSettings, rewrite_message
from smtp_proxy.smtp.tracking import tracking_settings
from tests.support.rewrite_checks import BASE, KEYRING, check_rewrite, fits
from tests.support.tracked_links import open_tracked

PROFILE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> TrackingSettings:
    base = tmp_path_factory.mktemp("cfg")
    config = load_config_text(f'[tracking]\nbase_url = "{BASE}"\n', base_dir=base)
    return tracking_settings(config, KEYRING, {})


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
