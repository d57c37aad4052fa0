"""rewrite_message: byte preservation, encodings, message-level skips, DKIM, malformed MIME."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email
import email.policy
import quopri
import re
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest

from clickrelay.config import load_config_text
from redirector.tokens import MAX_URL_BYTES, Keyring
from smtp_proxy.engine import b64, dkim_sign, qp
from smtp_proxy.engine.dkim_sign import DkimKey, DkimVerdict, keys_by_domain
from smtp_proxy.engine.rewriter import RewriteResult, TrackingSettings, rewrite_message
from smtp_proxy.smtp.tracking import tracking_settings
from tests.support.dkim_keys import new_dkim_key, signed_sale_message
from tests.support.tracked_links import open_tracked

BASE = "https://t.example.net"
TRACKED_RE = re.compile(rb"https://t\.example\.net/c/[A-Za-z0-9_-]+")


@pytest.fixture
def settings(keyring: Keyring, tmp_path: Path) -> TrackingSettings:
    config = load_config_text(f'[tracking]\nbase_url = "{BASE}"\n', base_dir=tmp_path)
    return tracking_settings(config, keyring, {})


def rw(data: bytes, settings: TrackingSettings, **kw: object) -> RewriteResult:
    return rewrite_message(data, settings, queue_id="Q123", **kw)  # type: ignore[arg-type]


def msg(headers: str, body: bytes, eol: bytes = b"\r\n") -> bytes:
    head = "".join(line + "\n" for line in headers.strip().splitlines()).encode()
    return head.replace(b"\n", eol) + eol + body


HTML = (
    b'<html><body><p>Hello <a href="https://example.com/a?x=1&amp;y=2">one</a>'
    b" <a href='mailto:x@example.com'>mail</a>"
    b' <a href="https://example.org/b#frag">two</a></p></body></html>\r\n'
)


def restore(out: bytes, result: RewriteResult, raws: dict[str, bytes]) -> bytes:
    """``out`` with every tracked URL replaced by the raw href it replaced."""
    for d in result.links:
        if d.tracked_url:
            out = out.replace(d.tracked_url.encode(), raws[d.url], 1)
    return out


# --- single part and simple multipart ------------------------------------------------


def test_single_html_part_only_href_values_change(
    settings: TrackingSettings, keyring: Keyring
) -> None:
    data = msg(
        "From: a@example.com\nTo: b@example.org\nContent-Type: text/html; charset=utf-8", HTML
    )
    sent = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    result = rw(data, settings, recipient="b@example.org", sent_at=sent)
    assert result.changed and result.reason == "rewritten"
    tracked = [d for d in result.links if d.action == "tracked"]
    assert [d.url for d in tracked] == [
        "https://example.com/a?x=1&y=2",
        "https://example.org/b#frag",
    ]
    skipped = [d for d in result.links if d.action == "skipped"]
    assert [(d.url, d.reason) for d in skipped] == [("mailto:x@example.com", "not-http")]
    assert [d.index for d in result.links] == [0, 1, 2]
    raws = {
        "https://example.com/a?x=1&y=2": b"https://example.com/a?x=1&amp;y=2",
        "https://example.org/b#frag": b"https://example.org/b#frag",
    }
    assert restore(result.data, result, raws) == data
    for d in tracked:
        assert d.tracked_url is not None and d.tracked_url.startswith(BASE + "/c/")
        link = open_tracked(keyring, d.tracked_url)
        assert link.url == d.url
        assert (link.queue_id, link.link_index) == ("Q123", d.index)
        assert link.recipient == "b@example.org"
        assert link.sent_at == int(sent.timestamp())


def test_lf_only_message_keeps_lf(settings: TrackingSettings) -> None:
    data = msg("Content-Type: text/html", HTML.replace(b"\r\n", b"\n"), eol=b"\n")
    result = rw(data, settings)
    assert result.changed
    assert b"\r" not in result.data
    assert result.data.split(b"\n\n", 1)[0] == data.split(b"\n\n", 1)[0]


def test_multipart_qp_keeps_unchanged_lines_and_line_limits(
    settings: TrackingSettings, keyring: Keyring
) -> None:
    html = (
        "<p>Caf\u00e9 \u2014 long paragraph " + "lorem ipsum " * 20 + "</p>\n"
        '<p><a href="https://example.com/path?q=caf%C3%A9&amp;z=1">link</a></p>\n'
        "<p>tail \u00e9</p>\n"
    ).encode()
    qp = quopri.encodestring(html).replace(b"\n", b"\r\n")
    text = b"See https://example.com/text-link for more.\r\n"
    body = (
        b"preamble\r\n--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        + text
        + b"--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
        + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + qp
        + b"--b1--\r\nepilogue\r\n"
    )
    data = msg('MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="b1"', body)
    result = rw(data, settings)
    assert result.reason == "rewritten"
    assert [d.part for d in result.links] == ["1", "2"]
    out = email.message_from_bytes(result.data, policy=email.policy.compat32)
    html_part = out.get_payload()[1]
    new_html = html_part.get_payload(decode=True)
    tracked = result.links[1].tracked_url
    assert tracked is not None
    old_html = email.message_from_bytes(data).get_payload()[1].get_payload(decode=True)
    assert new_html == old_html.replace(
        b"https://example.com/path?q=caf%C3%A9&amp;z=1", tracked.encode()
    )
    assert open_tracked(keyring, tracked).url == "https://example.com/path?q=caf%C3%A9&z=1"
    new_qp = result.data.split(b"quoted-printable\r\n\r\n", 1)[1].split(b"--b1--")[0]
    assert all(len(line) <= 76 for line in new_qp.split(b"\r\n"))
    old_lines = qp.split(b"\r\n")
    # Lines before and after the changed one are the original encoded lines.
    assert new_qp.startswith(b"\r\n".join(old_lines[:4]))
    assert new_qp.endswith(b"\r\n" + b"\r\n".join(old_lines[-2:]))
    assert result.data.startswith(
        data.split(b"--b1\r\nContent-Type: text/html")[0].split(b"See ")[0]
    )
    assert result.data.endswith(b"--b1--\r\nepilogue\r\n")


def test_base64_keeps_line_length(settings: TrackingSettings) -> None:
    html = b'<p>x</p><a href="https://example.com/' + b"p" * 200 + b'">y</a>' + b"z" * 300
    encoded = base64.b64encode(html)
    lines = [encoded[i : i + 60] for i in range(0, len(encoded), 60)]
    body = b"\r\n".join(lines) + b"\r\n"
    data = msg("Content-Type: text/html\nContent-Transfer-Encoding: base64", body)
    result = rw(data, settings)
    assert result.changed
    new_body = result.data.split(b"\r\n\r\n", 1)[1]
    new_lines = new_body.split(b"\r\n")
    assert new_lines[-1] == b""  # trailing line break kept
    assert all(len(line) == 60 for line in new_lines[:-2])
    assert 0 < len(new_lines[-2]) <= 60
    decoded = base64.b64decode(new_body)
    assert decoded.startswith(b'<p>x</p><a href="https://t.example.net/c/')
    assert decoded.endswith(b'">y</a>' + b"z" * 300)


def test_7bit_line_over_998_switches_to_quoted_printable(settings: TrackingSettings) -> None:
    html = b'<a href="https://example.com/">x</a>' + b"y" * 950 + b"\r\n<p>end</p>\r\n"
    data = msg(
        "Subject: long\nContent-Type: text/html; charset=us-ascii\nContent-Transfer-Encoding: 7bit",
        html,
    )
    result = rw(data, settings)
    assert result.changed
    head, body = result.data.split(b"\r\n\r\n", 1)
    assert head == (
        b"Subject: long\r\nContent-Type: text/html; charset=us-ascii\r\n"
        b"Content-Transfer-Encoding: quoted-printable"
    )
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    tracked = result.links[0].tracked_url
    assert tracked is not None
    assert binascii.a2b_qp(body) == html.replace(b"https://example.com/", tracked.encode())


def test_7bit_without_cte_header_gets_one_when_switching(settings: TrackingSettings) -> None:
    html = b'<a href="https://example.com/">x</a>' + b"y" * 960 + b"\r\n"
    data = msg("Content-Type: text/html", html)
    result = rw(data, settings)
    head = result.data.split(b"\r\n\r\n", 1)[0]
    assert head == b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable"


def test_parts_without_links_and_attachments_are_byte_identical(
    settings: TrackingSettings,
) -> None:
    attachment_html = base64.encodebytes(b'<a href="https://example.com/att">a</a>')
    pdf = base64.encodebytes(b"%PDF href=https://example.com/pdf " * 50)
    body = (
        b"--zz\r\nContent-Type: text/plain\r\n\r\nno links here\r\n"
        b'--zz\r\nContent-Type: text/html\r\n\r\n<a href="https://example.com/x">x</a>\r\n'
        b"--zz\r\nContent-Type: text/html; name=a.html\r\nContent-Disposition: attachment; "
        b'filename="a.html"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + attachment_html
        + b"--zz\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + pdf
        + b"--zz\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: text/html\r\n\r\n"
        b'<a href="https://example.com/inner">i</a>\r\n'
        b"--zz--\r\n"
    )
    data = msg("Content-Type: multipart/mixed; boundary=zz", body)
    result = rw(data, settings)
    assert [d.url for d in result.links] == ["https://example.com/x"]
    tracked = result.links[0].tracked_url
    assert tracked is not None
    assert result.data == data.replace(b"https://example.com/x", tracked.encode())


def test_nested_multipart_part_numbers(settings: TrackingSettings) -> None:
    inner = (
        b"--in\r\nContent-Type: text/plain\r\n\r\nhttps://example.com/t\r\n"
        b'--in\r\nContent-Type: text/html\r\n\r\n<a href="https://example.com/h">h</a>\r\n'
        b"--in--\r\n"
    )
    body = (
        b"--out\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n"
        + inner
        + b"--out\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBO\r\n"
        + b"--out--\r\n"
    )
    data = msg("Content-Type: multipart/mixed; boundary=out", body)
    result = rw(data, settings)
    assert [(d.part, d.index, d.action) for d in result.links] == [
        ("1.1", 0, "tracked"),
        ("1.2", 1, "tracked"),
    ]


# --- opt-outs, skips, idempotence -----------------------------------------------------


def _alternative(text: bytes, html: bytes, extra_headers: str = "") -> bytes:
    body = (
        b"--a\r\nContent-Type: text/plain\r\n\r\n"
        + text
        + b"\r\n--a\r\nContent-Type: text/html\r\n\r\n"
        + html
        + b"\r\n--a--\r\n"
    )
    return msg(extra_headers + "Content-Type: multipart/alternative; boundary=a", body)


def test_opted_out_url_is_left_in_text_part_too(settings: TrackingSettings) -> None:
    data = _alternative(
        b"Private: https://example.com/private and https://example.com/public",
        b'<a data-clickrelay="off" href="https://example.com/private">p</a>'
        b'<a href="https://example.com/public">q</a>',
    )
    result = rw(data, settings)
    by = [(d.part, d.url, d.reason) for d in result.links]
    assert by == [
        ("1", "https://example.com/private", "opted-out"),
        ("1", "https://example.com/public", "tracked"),
        ("2", "https://example.com/private", "opted-out"),
        ("2", "https://example.com/public", "tracked"),
    ]
    assert result.data.count(b"https://example.com/private") == 2


def test_opt_out_header_removes_header_and_changes_nothing_else(
    settings: TrackingSettings,
) -> None:
    data = _alternative(
        b"https://example.com/t",
        b'<a href="https://example.com/h">h</a>',
        extra_headers="X-Clickrelay-Track: off\nList-Unsubscribe: <https://example.com/u>\n",
    )
    result = rw(data, settings)
    assert result.reason == "opt-out-header"
    assert result.changed
    assert result.data == data.replace(b"X-Clickrelay-Track: off\r\n", b"")
    assert [d.reason for d in result.links] == ["opt-out-header", "opt-out-header"]
    assert all(d.tracked_url is None for d in result.links)


def test_tracking_header_other_than_off_is_kept(settings: TrackingSettings) -> None:
    data = msg("X-Clickrelay-Track: on\nContent-Type: text/html", b'<a href="https://e.com/">x</a>')
    result = rw(data, settings)
    assert result.reason == "rewritten"
    assert result.data.startswith(b"X-Clickrelay-Track: on\r\n")


def test_second_rewrite_is_a_no_op(settings: TrackingSettings) -> None:
    data = _alternative(b"https://example.com/t", HTML)
    first = rw(data, settings)
    assert first.changed
    second = rw(first.data, settings)
    assert not second.changed
    assert second.data == first.data
    assert {d.reason for d in second.links if d.url.startswith(BASE)} == {"already-tracked"}
    assert all(d.action == "skipped" for d in second.links)


def test_too_long_links_are_left(keyring: Keyring, tmp_path: Path) -> None:
    config = load_config_text(
        f'[tracking]\nbase_url = "{BASE}"\nmax_link_length = 60\n', base_dir=tmp_path
    )
    settings = tracking_settings(config, keyring, {})
    data = msg("Content-Type: text/html", b'<a href="https://example.com/">x</a>')
    result = rw(data, settings)
    assert not result.changed and result.data == data
    assert [(d.action, d.reason) for d in result.links] == [("skipped", "too-long")]


def test_destination_url_over_max_url_length_stays_untracked(settings: TrackingSettings) -> None:
    # 60,000 characters compress into a token far under max_link_length: the URL's own
    # length is what a stored click would carry.
    long_url = "https://example.com/?q=" + "a" * 60_000
    at_limit = "https://example.com/?q=" + "b" * (settings.max_url_length - 23)
    assert settings.max_url_length == 8192 and len(at_limit) == 8192
    html = f'<a href="{long_url}">x</a> <a href="{at_limit}">y</a>'.encode()
    result = rw(msg("Content-Type: text/html", html), settings)
    assert [(d.action, d.reason) for d in result.links] == [
        ("skipped", "too-long"),
        ("tracked", "tracked"),
    ]
    assert result.changed  # the other link is tracked; the long one is left as written


def test_url_a_token_cannot_carry_is_malformed(settings: TrackingSettings) -> None:
    # Over MAX_URL_BYTES: the rules pass it, the keyring refuses to seal it.
    long_url = "https://example.com/" + "a" * MAX_URL_BYTES
    settings = dataclasses.replace(
        settings, max_link_length=10 * MAX_URL_BYTES, max_url_length=10 * MAX_URL_BYTES
    )
    data = msg("Content-Type: text/html", f'<a href="{long_url}">x</a>'.encode())
    result = rw(data, settings)
    assert not result.changed and result.data == data
    assert [(d.action, d.reason) for d in result.links] == [("skipped", "malformed")]


def test_text_links_can_be_turned_off(settings: TrackingSettings) -> None:
    off = dataclasses.replace(settings, text_links=False)
    data = _alternative(b"https://example.com/t", b'<a href="https://example.com/h">h</a>')
    result = rw(data, off)
    assert [d.part for d in result.links] == ["2"]
    assert b"https://example.com/t" in result.data


def test_skip_domains_and_placeholders(keyring: Keyring, tmp_path: Path) -> None:
    config = load_config_text(
        f'[tracking]\nbase_url = "{BASE}"\nskip_domains = ["skip.example"]\n', base_dir=tmp_path
    )
    settings = tracking_settings(config, keyring, {})
    html = (
        b'<a href="https://a.skip.example/x">s</a><a href="https://e.com/{{ id }}">p</a>'
        b'<a href="#top">f</a><a href="https://e.com/unsubscribe?u=1">u</a>'
    )
    data = msg("Content-Type: text/html", html)
    result = rw(data, settings)
    assert [d.reason for d in result.links] == [
        "skip-domain",
        "placeholder",
        "fragment",
        "unsubscribe",
    ]
    assert result.data == data and not result.changed
    assert result.reason == "no-trackable-links"


def test_no_links(settings: TrackingSettings) -> None:
    data = msg("Content-Type: text/plain", b"hello\r\n")
    result = rw(data, settings)
    assert (result.data, result.changed, result.reason, result.links) == (
        data,
        False,
        "no-links",
        (),
    )


# --- charsets -------------------------------------------------------------------------


def test_legacy_charset_part_keeps_its_bytes(settings: TrackingSettings) -> None:
    html = '<p>Gr\u00fc\u00dfe \u20ac</p><a href="https://example.com/\u00e9">x</a>'.encode(
        "cp1252"
    )
    data = msg(
        "Content-Type: text/html; charset=windows-1252\nContent-Transfer-Encoding: 8bit", html
    )
    result = rw(data, settings)
    assert result.links[0].url == "https://example.com/\u00e9"
    tracked = result.links[0].tracked_url
    assert tracked is not None
    assert result.data == data.replace(
        "https://example.com/\u00e9".encode("cp1252"), tracked.encode()
    )


def test_missing_charset_with_8bit_bytes(settings: TrackingSettings) -> None:
    html = b'<p>\xe9t\xe9</p><a href="https://example.com/\xe9">a</a><a href="https://example.com/ok">b</a>'
    data = msg("Content-Type: text/html", html)
    result = rw(data, settings)
    assert [(d.action, d.reason) for d in result.links] == [
        ("skipped", "malformed"),
        ("tracked", "tracked"),
    ]
    tracked = result.links[1].tracked_url
    assert tracked is not None
    assert result.data == data.replace(b"https://example.com/ok", tracked.encode())


@pytest.mark.parametrize(
    ("ctype", "body", "reason"),
    [
        (
            "text/html; charset=x-no-such-charset",
            b'<a href="https://e.com/">x</a>',
            "unknown-charset",
        ),
        (
            "text/html; charset=utf-8",
            b'<a href="https://e.com/">\xff\xfe</a>',
            "charset-decode-error",
        ),
    ],
)
def test_charset_trouble_leaves_part(
    settings: TrackingSettings, ctype: str, body: bytes, reason: str
) -> None:
    data = msg(f"Content-Type: {ctype}", body)
    result = rw(data, settings)
    assert result.data == data and not result.changed
    assert result.reason == reason
    assert result.notes == (f"1:{reason}",)


# --- never touched ---------------------------------------------------------------------


def test_multipart_signed_is_untouched(settings: TrackingSettings) -> None:
    body = (
        b'--s\r\nContent-Type: text/html\r\n\r\n<a href="https://e.com/">x</a>\r\n'
        b"--s\r\nContent-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n"
        b"--s--\r\n"
    )
    data = msg(
        'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary=s', body
    )
    result = rw(data, settings)
    assert (result.data, result.reason, result.changed) == (data, "signed", False)


def test_signed_part_inside_mixed_is_untouched(settings: TrackingSettings) -> None:
    signed = (
        b"Content-Type: multipart/signed; boundary=s\r\n\r\n"
        b'--s\r\nContent-Type: text/html\r\n\r\n<a href="https://e.com/signed">x</a>\r\n'
        b"--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s--\r\n"
    )
    body = (
        b'--m\r\nContent-Type: text/html\r\n\r\n<a href="https://e.com/outer">x</a>\r\n--m\r\n'
        + signed
        + b"--m--\r\n"
    )
    data = msg("Content-Type: multipart/mixed; boundary=m", body)
    result = rw(data, settings)
    assert [d.url for d in result.links] == ["https://e.com/outer"]
    assert b"https://e.com/signed" in result.data


@pytest.mark.parametrize(
    ("ctype", "reason"),
    [
        ("application/pkcs7-mime; smime-type=enveloped-data", "encrypted"),
        ('multipart/encrypted; protocol="application/pgp-encrypted"; boundary=e', "encrypted"),
    ],
)
def test_encrypted_is_untouched(settings: TrackingSettings, ctype: str, reason: str) -> None:
    body = b"--e\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--e--\r\n"
    data = msg(f"Content-Type: {ctype}", body)
    result = rw(data, settings)
    assert (result.data, result.reason, result.changed) == (data, reason, False)


def test_inline_pgp_is_untouched(settings: TrackingSettings) -> None:
    text = (
        b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhttps://example.com/x\r\n"
        b"-----BEGIN PGP SIGNATURE-----\r\nabc\r\n-----END PGP SIGNATURE-----\r\n"
    )
    data = msg("Content-Type: text/plain", text)
    result = rw(data, settings)
    assert result.data == data
    assert result.reason == "inline-pgp"


# --- DKIM -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, bytes]:
    return new_dkim_key()


def _dnsfunc(txt: bytes):  # type: ignore[no-untyped-def]
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s2._domainkey.shop.example." or name.startswith(b"s1._domainkey")
        return txt

    return dnsfunc


def test_dkim_signed_message_is_unchanged_without_key(
    settings: TrackingSettings, dkim_key: tuple[bytes, bytes]
) -> None:
    data = signed_sale_message(dkim_key[0])
    assert dkim.verify(data, dnsfunc=_dnsfunc(dkim_key[1]))
    result = rw(data, settings)
    assert (result.data, result.reason, result.changed) == (data, "dkim-signed", False)


DKIM_HEADERS = ("from", "to", "subject", "date", "message-id", "mime-version", "content-type")


def dkim_keys(domain: str, pem: bytes) -> dict[str, DkimKey]:
    return keys_by_domain([DkimKey(domain, "s2", pem, "relaxed/relaxed", DKIM_HEADERS)])


def test_dkim_resigned_when_domain_has_a_key(
    settings: TrackingSettings, dkim_key: tuple[bytes, bytes]
) -> None:
    pem, txt = dkim_key
    with_key = dataclasses.replace(settings, dkim_keys=dkim_keys("Shop.Example", pem))
    data = signed_sale_message(pem)
    # Without a verdict saying its signature verified, the key is never used.
    assert rw(data, with_key).reason == "dkim-unverified"
    verdict = DkimVerdict(verified=frozenset({"shop.example"}))
    result = rewrite_message(data, with_key, queue_id="Q1", dkim_verdict=verdict)
    assert result.reason == "rewritten" and result.changed
    assert result.data.count(b"DKIM-Signature:") == 1
    assert b"s=s2" in result.data and b"s=s1" not in result.data
    assert dkim.verify(result.data, dnsfunc=_dnsfunc(txt))
    # Everything but the signature and the href is the original.
    tracked = result.links[0].tracked_url
    assert tracked is not None
    unsigned = data.split(b"\r\n", 1)[1]
    while unsigned.startswith((b" ", b"\t")):
        unsigned = unsigned.split(b"\r\n", 1)[1]
    assert result.data.endswith(unsigned.replace(b"https://shop.example/sale", tracked.encode()))


def test_dkim_bad_key_relays_original(
    settings: TrackingSettings, dkim_key: tuple[bytes, bytes]
) -> None:
    bad = dkim_keys("shop.example", b"-----BEGIN RSA PRIVATE KEY-----\nnot a key\n")
    data = signed_sale_message(dkim_key[0])
    verdict = DkimVerdict(verified=frozenset({"shop.example"}))
    result = rewrite_message(
        data, dataclasses.replace(settings, dkim_keys=bad), queue_id="Q1", dkim_verdict=verdict
    )
    assert result.data == data and not result.changed
    assert result.reason.startswith("dkim-error")


@pytest.mark.parametrize(
    ("verified", "sender", "user", "may"),
    [
        ({"shop.example"}, "news@shop.example", None, True),
        ({"shop.example"}, "news@mail.shop.example", None, True),
        (set(), "news@shop.example", None, False),  # the signature did not verify
        ({"other.example"}, "news@shop.example", None, False),
        ({"shop.example"}, "ceo@bank.example", None, False),  # From outside the domain
        ({"shop.example"}, "news@evilshop.example", None, False),  # not a subdomain
        ({"shop.example"}, "news@shop.example", "app@shop.example", True),
        ({"shop.example"}, "news@shop.example", "app@eu.shop.example", True),
        ({"shop.example"}, "news@shop.example", "mailer", False),  # no domain: never
        ({"shop.example"}, "news@shop.example", "app@attacker.test", False),
    ],
)
def test_may_resign_needs_a_verified_signature_from_and_user_in_the_domain(
    verified: set[str], sender: str, user: str | None, may: bool
) -> None:
    keys = [DkimKey("shop.example", "s2", b"", "relaxed/relaxed", DKIM_HEADERS)]
    verdict = DkimVerdict(verified=frozenset(verified), auth_user=user)
    domain = sender.rpartition("@")[2]
    assert dkim_sign.may_resign(keys, verdict, [domain]) is may
    assert dkim_sign.may_resign(keys, None, [domain]) is False
    assert dkim_sign.may_resign(keys, verdict, []) is False


# --- malformed MIME ---------------------------------------------------------------------


def _deep(n: int) -> bytes:
    head = b'Content-Type: text/html\r\n\r\n<a href="https://e.com/">x</a>\r\n'
    for i in range(n):
        head = (
            f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n".encode()
            + head
            + f"--b{i}--\r\n".encode()
        )
    return head


MALFORMED = {
    "missing-boundary": msg(
        "Content-Type: multipart/mixed; boundary=x",
        b'--x\r\nContent-Type: text/html\r\n\r\n<a href="https://e.com/">x</a>\r\n',
    ),
    "missing-boundary-param": msg(
        "Content-Type: multipart/mixed", b'--x\r\n\r\n<a href="https://e.com/">x</a>\r\n--x--\r\n'
    ),
    "bad-base64": msg(
        "Content-Type: text/html\nContent-Transfer-Encoding: base64",
        base64.b64encode(b'<a href="https://e.com/">x</a>')[:-3] + b"!\r\n",
    ),
    "bad-quoted-printable": msg(
        "Content-Type: text/html\nContent-Transfer-Encoding: quoted-printable",
        b'<a href=3D"https://e.com/">x</a> =ZZ\r\n',
    ),
    "8bit-headers": b"Subject: caf\xe9\r\nContent-Type: text/html\r\n\r\n"
    b'<a href="https://e.com/">x</a>',
    "too-deep": _deep(100),
    "nul-bytes": msg("Content-Type: text/html", b'<a href="https://e.com/">x</a>\x00'),
    "unknown-transfer-encoding": msg(
        "Content-Type: text/html\nContent-Transfer-Encoding: x-uuencode",
        b'<a href="https://e.com/">x</a>',
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_mime_gives_original_bytes(settings: TrackingSettings, name: str) -> None:
    data = MALFORMED[name]
    result = rw(data, settings)
    assert result.data == data
    assert not result.changed
    assert not any(d.action == "tracked" for d in result.links)
    expected = "missing-boundary" if name == "missing-boundary-param" else name
    assert result.reason == expected


def test_moderate_nesting_is_fine(settings: TrackingSettings) -> None:
    result = rw(_deep(20), settings)
    assert result.reason == "rewritten"


def test_never_raises(settings: TrackingSettings) -> None:
    result = rewrite_message("not bytes", settings, queue_id="Q")  # type: ignore[arg-type]
    assert result.reason == "error:TypeError"
    assert result.data == b"" and not result.changed


# --- links the finders report in odd places ---------------------------------------------


def test_vml_button_in_conditional_comment_is_tracked(settings: TrackingSettings) -> None:
    html = (
        b'<!--[if mso]><v:roundrect href="https://example.com/buy?a=1&amp;b=2" '
        b'style="height:40px"><w:anchorlock/></v:roundrect><![endif]-->'
        b'<a href="https://example.com/buy?a=1&amp;b=2">Buy</a>'
    )
    data = msg("Content-Type: text/html", html)
    result = rw(data, settings)
    assert [(d.url, d.action) for d in result.links] == [
        ("https://example.com/buy?a=1&b=2", "tracked"),
        ("https://example.com/buy?a=1&b=2", "tracked"),
    ]
    assert result.data.count(b"https://t.example.net/c/") == 2
    assert b"<![endif]-->" in result.data and b"<!--[if mso]>" in result.data


def test_part_where_lxml_disagrees_is_left_alone(settings: TrackingSettings) -> None:
    # lxml drops elements nested thousands deep; the splicer still sees the link.
    html = b"<div>" * 6000 + b'<a href="https://deep.example/">x</a>'
    data = _alternative(b"https://example.com/text", html)
    result = rw(data, settings)
    assert [(d.part, d.action, d.reason) for d in result.links] == [
        ("1", "tracked", "tracked"),
        ("2", "skipped", "html-disagrees"),
    ]
    assert "2:html-disagrees" in result.notes
    tracked = result.links[0].tracked_url
    assert tracked is not None
    assert result.data == data.replace(b"https://example.com/text", tracked.encode())


def test_href_split_by_a_soft_line_break(settings: TrackingSettings, keyring: Keyring) -> None:
    body = (
        b"<p>first line</p>\r\n"
        b'<a href=3D"https://example.com/a-long-path/that-is-split-across-two-qp-l=\r\n'
        b'ines?x=3D1">go</a>\r\n'
        b"<p>last =C3=A9 line</p>\r\n"
    )
    data = msg(
        "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable",
        body,
    )
    result = rw(data, settings)
    url = "https://example.com/a-long-path/that-is-split-across-two-qp-lines?x=1"
    assert [(d.url, d.action) for d in result.links] == [(url, "tracked")]
    new_body = result.data.split(b"\r\n\r\n", 1)[1]
    assert new_body.startswith(b'<p>first line</p>\r\n<a href=3D"https://t.example.net/c/')
    assert new_body.endswith(b'">go</a>\r\n<p>last =C3=A9 line</p>\r\n')
    assert all(len(line) <= 76 for line in new_body.split(b"\r\n"))
    tracked = result.links[0].tracked_url
    assert tracked is not None
    assert binascii.a2b_qp(new_body) == binascii.a2b_qp(body).replace(
        url.encode(), tracked.encode()
    )
    assert open_tracked(keyring, tracked).url == url


def test_same_html_again_gives_fresh_tokens(settings: TrackingSettings) -> None:
    # Scans are cached by text (campaigns); tokens never are.
    data = msg("Content-Type: text/html", b'<a href="https://example.com/">x</a>')
    first = rw(data, settings, recipient="a@example.org")
    second = rw(data, settings, recipient="b@example.org")
    assert first.links[0].tracked_url != second.links[0].tracked_url
    assert first.data != second.data


def test_charset_that_does_not_round_trip_leaves_part(settings: TrackingSettings) -> None:
    # UTF-7 lets "B" be written as "+AEI-"; encoding the decoded text gives "B" back, so
    # the part cannot be re-encoded byte for byte.
    html = b'<a href="https://example.com/">+AEI-</a>'
    data = msg("Content-Type: text/html; charset=utf-7", html)
    result = rw(data, settings)
    assert result.data == data and not result.changed
    assert [(d.action, d.reason) for d in result.links] == [("skipped", "charset-not-roundtrip")]
    assert result.reason == "charset-not-roundtrip"


@pytest.mark.parametrize("cte", ["quoted-printable", "8bit", "base64"])
def test_large_part_with_links_throughout_round_trips(settings: TrackingSettings, cte: str) -> None:
    """A part of several QP chunks (and encoding slices) with a link in every paragraph:
    everything but the href values comes back, lines after the last link unchanged."""
    paragraphs = "".join(
        f'<p>Item {i} caf\u00e9: <a href="https://shop.example/i/{i}?a=1&amp;b=2">x</a>\n'
        + "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 20
        + "</p>\n"
        for i in range(300)
    )
    html = ("<html><body>\n" + paragraphs + "<p>end</p>\n</body></html>\n").encode()
    if cte == "quoted-printable":
        body = quopri.encodestring(html)
    elif cte == "base64":
        body = base64.encodebytes(html)
    else:
        body = html
    data = msg(
        f"From: a@example.com\nContent-Type: text/html; charset=utf-8\n"
        f"Content-Transfer-Encoding: {cte}",
        body.replace(b"\n", b"\r\n"),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qp, "_ENCODE_SLICE", 4096)
        mp.setattr(b64, "_ENCODE_SLICE", 4096)
        result = rw(data, settings)
    assert result.reason == "rewritten"
    tracked = [d for d in result.links if d.action == "tracked"]
    assert len(tracked) == 300
    raws = {d.url: d.url.replace("&", "&amp;").encode() for d in tracked}
    new = email.message_from_bytes(result.data, policy=email.policy.compat32)
    decoded = new.get_payload(decode=True)
    assert isinstance(decoded, bytes)
    for d in tracked:
        assert d.tracked_url is not None
        decoded = decoded.replace(d.tracked_url.encode(), raws[d.url], 1)
    assert decoded == (html if cte == "base64" else html.replace(b"\n", b"\r\n"))
    if cte != "base64":  # the lines after the last link are the original bytes
        assert result.data.endswith(data[data.rindex(b"<p>end</p>") - 2 :])


@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-1"])
def test_large_part_still_cross_checked_with_lxml(settings: TrackingSettings, charset: str) -> None:
    """Parts too large for the scan cache are checked against lxml too (reading the
    part's own bytes when they are ASCII UTF-8): a disagreement leaves the part alone."""
    padding = "<p>Lorem ipsum dolor sit amet.</p>\n" * 10_000  # > 256 K characters
    good = f"<a href=https://x.example/>x</a>\n{padding}<a href=https://y.example/>y</a>\n"
    bad = good + "<script>w('</html><a href=https://z.example/>')</script>"
    bad += "<a href=https://w.example/>w</a>\n"
    head = f"From: a@example.com\nContent-Type: text/html; charset={charset}"
    result = rw(msg(head, good.encode()), settings)
    assert result.reason == "rewritten"
    assert sum(d.action == "tracked" for d in result.links) == 2
    result = rw(msg(head, bad.encode()), settings)
    assert result.reason == "html-disagrees" and not result.changed
    assert all(d.reason == "html-disagrees" for d in result.links)


@pytest.mark.parametrize(
    ("allowed", "may"),
    [
        ({"shop.example"}, True),
        ({"example"}, True),  # a parent domain allows its subdomains
        ({"eu.shop.example"}, False),  # a subdomain does not allow its parent
        ({"other.example"}, False),
        (set(), False),
    ],
)
def test_may_resign_for_a_user_the_users_file_allows_the_domain(
    allowed: set[str], may: bool
) -> None:
    keys = [DkimKey("shop.example", "s2", b"", "relaxed/relaxed", DKIM_HEADERS)]
    verdict = DkimVerdict(
        verified=frozenset({"shop.example"}), auth_user="mailer", auth_domains=frozenset(allowed)
    )
    assert dkim_sign.may_resign(keys, verdict, ["shop.example"]) is may
