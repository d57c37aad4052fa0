"""URLs in plain text: where they start and end."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_proxy.engine.splice import splice
from smtp_proxy.engine.text_links import find_text_links
from tests.support.corpus import corpus_eml_files


def urls(text: str) -> list[str]:
    found = find_text_links(text)
    for link in found:
        assert text[link.start : link.end] == link.raw == link.url
        assert link.kind == "text"
        assert link.opt_out is None
    return [link.url for link in found]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://x.example/", ["https://x.example/"]),
        ("Go to https://x.example/a now", ["https://x.example/a"]),
        ("HTTP://X.EXAMPLE/Up", ["HTTP://X.EXAMPLE/Up"]),
        ("http://x.example", ["http://x.example"]),
        # angle brackets
        ("<https://x.example/b>", ["https://x.example/b"]),
        ("Link: <https://x.example/b?c=d>.", ["https://x.example/b?c=d"]),
        # trailing punctuation
        ("See https://x.example/a.", ["https://x.example/a"]),
        (
            "https://x.example/a, https://y.example/b;",
            ["https://x.example/a", "https://y.example/b"],
        ),
        ("Really https://x.example/?! Yes", ["https://x.example/"]),
        ("at https://x.example/a: done", ["https://x.example/a"]),
        ("end https://x.example/a...", ["https://x.example/a"]),
        ("**https://x.example/bold**", ["https://x.example/bold"]),
        # parentheses: balanced ones are part of the URL
        ("(https://x.example/a)", ["https://x.example/a"]),
        ("(see https://x.example/a_(b))", ["https://x.example/a_(b)"]),
        ("https://x.example/wiki/Foo_(bar)", ["https://x.example/wiki/Foo_(bar)"]),
        ("(https://x.example/wiki/Foo_(bar)).", ["https://x.example/wiki/Foo_(bar)"]),
        ("[https://x.example/a]", ["https://x.example/a"]),
        ("https://x.example/?a[]=1&b[0]=2", ["https://x.example/?a[]=1&b[0]=2"]),
        # quotes
        ('"https://x.example/q"', ["https://x.example/q"]),
        ("'https://x.example/q'", ["https://x.example/q"]),
        ("'https://x.example/it's'", ["https://x.example/it's"]),
        # characters that survive inside a URL
        (
            "https://x.example/p?a=1&b=%20&c=@&d=!&e=*&f=$&g='x'#frag",
            ["https://x.example/p?a=1&b=%20&c=@&d=!&e=*&f=$&g='x'#frag"],
        ),
        ("https://user:pw@x.example:8080/", ["https://user:pw@x.example:8080/"]),
        ("https://x.example/{{id}}/*|X|*", ["https://x.example/{{id}}/*|X|*"]),
        ("https://x.example/?e=*|EMAIL|*.", ["https://x.example/?e=*|EMAIL|*"]),
        # nested URL: one link
        (
            "https://x.example/r?to=https://y.example/?a=1&b=2 ok",
            ["https://x.example/r?to=https://y.example/?a=1&b=2"],
        ),
        (
            "https://x.example/r?to=https%3A%2F%2Fy.example",
            ["https://x.example/r?to=https%3A%2F%2Fy.example"],
        ),
        # stops
        ("https://x.example/a\nb", ["https://x.example/a"]),
        ("https://x.example/a\tb", ["https://x.example/a"]),
        ("https://x.example/a<b>", ["https://x.example/a"]),
        ('https://x.example/a"b', ["https://x.example/a"]),
        ("https://x.example/a\u00a0b", ["https://x.example/a"]),
        ("https://x.example/a。次", ["https://x.example/a"]),
        ("two https://a.example/https://b.example/", ["https://a.example/https://b.example/"]),
        ("https://a.example/ https://b.example/", ["https://a.example/", "https://b.example/"]),
        # not URLs
        ("http://", []),
        ("http://.", []),
        ("https://)", []),
        ("ftp://x.example/", []),
        ("ftp://x.example/?u=https://y.example/", []),  # nested in another scheme's URL
        ("mailto:a@x.example", []),
        ("xhttp://x.example/", []),
        ("www.x.example", []),
        ("http:/x.example", []),
        ("", []),
        # glued to non-ASCII letters: ambiguous, left alone
        ("https://bücher.example/", []),
        ("詳細はhttps://x.example/をご覧ください", []),
        ("詳細は https://x.example/ をご覧ください", ["https://x.example/"]),
    ],
)
def test_text_links(text: str, expected: list[str]) -> None:
    assert urls(text) == expected


def test_url_broken_across_lines_is_not_joined() -> None:
    text = "Click https://x.example/very/long/\npath/continued here"
    assert urls(text) == ["https://x.example/very/long/"]


def test_offsets_and_splice() -> None:
    text = "A <https://a.example/x>, B (https://b.example/y).\r\nC https://c.example/z."
    found = find_text_links(text)
    out = splice(text, [(link, f"https://t.example/c/{i}") for i, link in enumerate(found)])
    assert out == (
        "A <https://t.example/c/0>, B (https://t.example/c/1).\r\nC https://t.example/c/2."
    )


_TEXT_PIECES = st.sampled_from(
    [
        "https://",
        "http://",
        "HTTPS://",
        "x.example",
        "/path",
        "?a=1&b=2",
        "#f",
        "(",
        ")",
        "[",
        "]",
        "<",
        ">",
        '"',
        "'",
        ".",
        ",",
        ";",
        " ",
        "\n",
        "é",
        "日本",
        "%20",
        "*",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_TEXT_PIECES, st.text(max_size=3)), max_size=25).map("".join))
def test_random_text(text: str) -> None:
    found = find_text_links(text)
    previous = 0
    for link in found:
        assert previous <= link.start < link.end <= len(text)
        assert text[link.start : link.end] == link.raw
        assert link.raw.lower().startswith(("http://", "https://"))
        assert len(link.raw) > len("https://") - (1 if link.raw[4] in ":" else 0)
        assert link.raw.isascii()
        assert not any(c in link.raw for c in ' \t\r\n<>"')
        assert link.raw[-1] not in ".,;:!?'*"
        previous = link.end
    assert splice(text, [(link, link.raw) for link in found]) == text
    out = splice(text, [(link, "https://t.example/c/X") for link in found])
    assert out.count("https://t.example/c/X") >= len(found)
    # Found links are found again, in the same places, after rewriting.
    assert len(find_text_links(out)) == len(found) + text.count("https://t.example/c/X")


def test_corpus_text_parts(corpus: Path) -> None:
    files = corpus_eml_files()
    assert files, f"no corpus files under {corpus}"
    found = 0
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        for part in message.walk():
            if part.get_content_type() != "text/plain":
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            text = payload.decode("latin-1")
            for link in find_text_links(text):
                assert text[link.start : link.end] == link.raw
                assert link.raw[-1] not in ".,;:!?'"
                assert "://" in link.raw
                found += 1
    print(f"corpus text parts: {found} links")
    assert found > 10


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("https://x.example/" + ")" * 100_000, 1),
        ("https://x.example/" + "." * 100_000, 1),
        ("https://x.example/" + ".)" * 50_000, 1),
        ("https://" * 50_000, 1),  # one (odd) URL: host "https"
        ("http://x " * 50_000, 50_000),
        ("://" * 100_000, 0),
    ],
    ids=lambda v: v[:20] if isinstance(v, str) else str(v),
)
def test_pathological_text(text: str, count: int) -> None:
    found = find_text_links(text)
    assert len(found) == count
    assert all(not link.raw.endswith((".", ")")) for link in found)
