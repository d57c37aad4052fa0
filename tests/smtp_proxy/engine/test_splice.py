"""splice: new values go exactly where the links were, nothing else changes."""

from __future__ import annotations

import pytest

from smtp_proxy.engine.html_scan import FoundLink
from smtp_proxy.engine.html_verify import find_html_links
from smtp_proxy.engine.splice import Edit, assemble, splice, spliced_decoded


def test_splice_replaces_only_the_values() -> None:
    html = (
        '<a  href="https://a.example/?x=1&amp;y=2" class=b>A</a>\n'
        "<A HREF='https://b.example/'>B</A><area href=https://c.example/>"
    )
    scan = find_html_links(html)
    out = splice(html, [(link, f"https://t.example/c/T{i}") for i, link in enumerate(scan.links)])
    assert out == (
        '<a  href="https://t.example/c/T0" class=b>A</a>\n'
        "<A HREF='https://t.example/c/T1'>B</A><area href=https://t.example/c/T2>"
    )
    assert splice(html, []) == html
    assert splice(html, [(link, link.raw) for link in scan.links]) == html


def test_splice_keeps_trimmed_whitespace() -> None:
    html = '<a href="  https://a.example/\n">x</a>'
    (link,) = find_html_links(html).links
    assert splice(html, [(link, "https://t.example/c/X")]) == (
        '<a href="  https://t.example/c/X\n">x</a>'
    )


def test_splice_rejects_overlap_and_disorder() -> None:
    text = "0123456789"
    a = FoundLink(2, 5, "234", "234", "text", None)
    b = FoundLink(4, 7, "456", "456", "text", None)
    with pytest.raises(ValueError):
        splice(text, [(a, "x"), (b, "y")])
    with pytest.raises(ValueError):
        splice(text, [(b, "y"), (FoundLink(0, 1, "0", "0", "text", None), "z")])
    with pytest.raises(ValueError):
        splice(text, [(FoundLink(8, 12, "89", "89", "text", None), "z")])


def _text_link(text: str, url: str) -> FoundLink:
    start = text.index(url)
    return FoundLink(start, start + len(url), url, url, "text", None)


def test_spliced_decoded_maps_text_offsets_to_bytes() -> None:
    text = "Grüße: https://a.example/x and more"
    decoded = text.encode("utf-8")
    link = _text_link(text, "https://a.example/x")
    new = "https://t.example/c/T"
    got = spliced_decoded(decoded, text, "utf-8", "strict", [(link, new)], False)
    assert got is not None
    new_bytes, changes = got
    assert new_bytes == splice(text, [(link, new)]).encode("utf-8")
    start = decoded.index(b"https://")
    assert changes == [(start, start + len(link.raw), new.encode())]
    # Quoted-printable in a stateless charset: only the changes, no copy of the content.
    assert spliced_decoded(decoded, text, "utf-8", "strict", [(link, new)], True) == (
        None,
        changes,
    )


def test_spliced_decoded_refuses_what_does_not_round_trip() -> None:
    text = "see https://a.example/x"
    link = _text_link(text, "https://a.example/x")
    new = [(link, "https://t.example/c/T")]
    # The decoded bytes are not what the text encodes to: refuse rather than guess.
    assert spliced_decoded(b"SEE https://a.example/x", text, "ascii", "strict", new, False) is None
    assert spliced_decoded(b"see https://a.example/x!", text, "ascii", "strict", new, False) is None
    overlapping = [(link, "x"), (_text_link(text, "a.example"), "y")]
    assert spliced_decoded(text.encode(), text, "ascii", "strict", overlapping, False) is None


def test_assemble_applies_edits_in_order() -> None:
    data = b"0123456789"
    edits = [Edit(6, 8, b"XY"), Edit(0, 2, b"ab"), Edit(4, 4, b"+")]
    assert assemble(data, edits) == b"ab23+45XY89"
    assert assemble(data, []) == data
