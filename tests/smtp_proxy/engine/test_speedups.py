"""The C link scanner (``smtp_proxy.engine._speedups.c``) against the Python one it copies.

``html_scan._scan`` is the reference: on every corpus part and on generated HTML the C
walk must find the same links, with the same conditional-comment flags and tag ends, or
give the text back to Python (None) — which it may only do where ``re``'s Unicode case
folding is involved.
"""

from __future__ import annotations

import email
import email.policy
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_proxy.engine import html_scan
from smtp_proxy.engine.html_scan import FoundLink, scan_links
from smtp_proxy.engine.speedups import speedups
from tests.support.html_pieces import LINK_PIECES


@pytest.fixture(autouse=True, scope="module")
def c_extension() -> ModuleType:
    """Every test here runs the C code. Without the extension they are skipped, saying
    why; where it must be built (CI sets ``CLICKRELAY_REQUIRE_EXTENSIONS=1``) they fail,
    so a silent fall back to Python cannot go unnoticed."""
    if speedups is None:
        why = (
            "CLICKRELAY_NO_EXTENSIONS is set"
            if os.environ.get("CLICKRELAY_NO_EXTENSIONS")
            else "the C extension is not built (no C compiler at install?)"
        )
        if os.environ.get("CLICKRELAY_REQUIRE_EXTENSIONS"):
            pytest.fail(f"CLICKRELAY_REQUIRE_EXTENSIONS=1, but {why}", pytrace=False)
        pytest.skip(why)
    return speedups


#: The characters ``re`` matches case-insensitively to an ASCII letter (i, k, s).
FOLDED = "\u0130\u0131\u212a\u017f"


def python_scan(html: str) -> list[tuple[FoundLink, bool, int]]:
    found: list[tuple[FoundLink, bool, int]] = []
    html_scan._scan(html, 0, len(html), False, found)
    return found


def c_scan(html: str) -> list[tuple[FoundLink, bool, int]] | None:
    return html_scan._scan_in_c(html)


def test_the_link_scan_runs_in_c(c_extension: ModuleType) -> None:
    """html_scan is wired to the extension's scanner, and the scanner answers."""
    assert html_scan._c_scan is c_extension.scan
    assert c_scan('<a href="https://x.example/">x</a>') is not None


def test_can_be_switched_off() -> None:
    code = "from smtp_proxy.engine.speedups import speedups; print(speedups is not None)"
    env = dict(os.environ, CLICKRELAY_NO_EXTENSIONS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_bad_arguments_are_errors_not_crashes() -> None:
    from smtp_proxy.engine import _speedups

    with pytest.raises(ValueError):
        _speedups.scan("<a href=x>", 0, 99)
    with pytest.raises(ValueError):
        _speedups.scan("<a href=x>", 5, 2)
    with pytest.raises(TypeError):
        _speedups.scan(b"<a href=x>", 0, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "html",
    [
        '<a href="https://x.example/">x</a>',
        "<AREA\thref = 'y' ><A HREF=z>",
        "<!--[if mso]><v:roundrect href='https://v.example/'/><![endif]-->",
        "<script><!--<script></script>--><a href=a></script><a href=b>",
        "<p title='<a href=no>'><a href=yes>",
        '<a data-clickrelay="off" href="https://o.example/">',
        "<a name=top><a href>bare</a><a href=ok>",
        "<textarea><a href=no></textarea ><a href=yes>",
        "<style><a href=no></style><a href=yes>",
        '<a href="unterminated',
        "<plaintext><a href=no>",
        "<a href=x ü=1>",
    ],
)
def test_examples_agree(html: str) -> None:
    assert c_scan(html) == python_scan(html)


@pytest.mark.parametrize("char", FOLDED)
def test_unicode_case_folding_is_left_to_python(char: str) -> None:
    """``re`` reads "<ſtyle>" as <style> and "</scrİpt>" as </script>: the C scanner
    does not reproduce that and says so; scan_links then gives Python's answer."""
    html = {
        "\u017f": "<\u017ftyle><a href=a></style><a href=b>",
        "\u0130": "<script>x</scr\u0130pt><a href=a></script><a href=b>",
        "\u0131": "<!--[\u0131f mso]><a href=a><![endif]--><a href=b>",
        "\u212a": "<a data-clic\u212arelay=off href=a><a href=b>",
    }[char]
    c = c_scan(html)
    assert c is None or c == python_scan(html)
    assert scan_links(html) == python_scan(html)


def test_corpus_parts_agree(corpus: Path) -> None:
    texts: list[str] = [p.read_text("utf-8", "replace") for p in corpus.glob("html/**/*.html")]
    for path in corpus.glob("eml/**/*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        for part in msg.walk():
            if part.get_content_type() == "text/html" and not part.is_multipart():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    texts.append(payload.decode("utf-8", "replace"))
    assert len(texts) > 150
    links = 0
    for text in texts:
        c = c_scan(text)
        assert c is not None  # real mail never needs the fallback
        assert c == python_scan(text)
        links += len(c)
    assert links > 1000


# The pieces test_html_scan generates random fragments from, and more of what the C
# walk decides on its own: every raw-text element, comment and tag ending.
_PIECES = st.one_of(
    LINK_PIECES,
    st.sampled_from(
        [
            "<a",
            "<area href='y'",
            "<AREA\thref=r>",
            "<V:X href=s>",
            "--!>",
            "<!-->",
            "<!--->",
            "<!--[iF]>",
            "[if ",
            "<SCRIPT>",
            "</ScRiPt>",
            "</script",
            "<!--<script>",
            "</style",
            "</textarea >",
            "<xmp>",
            "</xmp/>",
            "<iframe>",
            "<noembed>",
            "</noframes>",
            "<plaintext>",
            "<!",
            "<?",
            "</",
            "</>",
            "\t",
            "href",
            "hrefx=1 href = w",
            " clicktracking=OFF",
            " ses:no-track",
            "<p title='<a href=q>'>",
            "\u2019",
            "\U0001f600",
            *FOLDED,
        ]
    ),
)
_HTML = st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=40).map("".join)


@settings(max_examples=1500, deadline=None)
@given(_HTML)
def test_generated_html_agrees(html: str) -> None:
    c = c_scan(html)
    if c is None:
        # Only a character that re folds to an ASCII letter may send it back.
        assert any(ch in html for ch in FOLDED)
    else:
        assert c == python_scan(html)
    assert scan_links(html) == python_scan(html)


@settings(max_examples=300, deadline=None)
@given(_HTML, st.integers(0, 60), st.integers(0, 60))
def test_bounded_scans_stay_inside_their_bounds(html: str, a: int, b: int) -> None:
    from smtp_proxy.engine import _speedups

    start, end = sorted((min(a, len(html)), min(b, len(html))))
    records = _speedups.scan(html, start, end)
    if records is None:
        # Only a character that re folds to an ASCII letter may send it back.
        assert any(ch in html for ch in FOLDED)
        return
    for _code, value_start, value_end, _in_comment, tag_end in records:
        assert start <= value_start <= value_end <= end
        assert tag_end <= end


def test_qp_helpers_refuse_bad_arguments() -> None:
    from smtp_proxy.engine import _speedups

    with pytest.raises(ValueError):
        _speedups.qp_line_starts(b"a\nb", [1, 0])
    with pytest.raises(TypeError):
        _speedups.qp_line_starts("a\nb", [0])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _speedups.qp_valid("=3D")  # type: ignore[arg-type]
    assert _speedups.qp_line_starts(b"a=\nb\nc", [0, 1, 2]) is None  # no third line
    assert _speedups.qp_line_starts(b"a=\nb\nc", [0, 1]) == [0, 5]
    assert _speedups.qp_line_starts(b"a=0Ab\nc", [1]) is None  # an escaped line feed


_MUTATION_PIECES = [
    "<a href=x>",
    "<!--",
    "-->",
    "<!--[if mso]>",
    "<![endif]-->",
    "<script>",
    "</style",
    '"',
    "'",
    "<",
    ">",
    "</",
    " data-clickrelay=off",
    "\u2019",
    "\x00",
    "</html>",
]


@settings(max_examples=150, deadline=None)
@given(rnd=st.randoms(use_true_random=False))
def test_damaged_corpus_templates_agree(corpus: Path, rnd: random.Random) -> None:
    """Real templates with markup inserted, cut out or copied elsewhere: the two walks
    still agree (12,000 such damages were checked once offline)."""
    paths = sorted(corpus.glob("html/**/*.html"))
    text = rnd.choice(paths).read_text("utf-8", "replace")
    for _ in range(rnd.randint(1, 6)):
        pos = rnd.randint(0, len(text))
        action = rnd.random()
        if action < 0.5:
            text = text[:pos] + rnd.choice(_MUTATION_PIECES) + text[pos:]
        elif action < 0.8:
            text = text[:pos] + text[pos + rnd.randint(1, 40) :]
        else:
            src = rnd.randint(0, len(text))
            text = text[:pos] + text[src : src + rnd.randint(1, 200)] + text[pos:]
    c = c_scan(text)
    assert c is not None
    assert c == python_scan(text)
