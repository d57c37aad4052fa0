"""Hypothesis material for the HTML link finders: pieces of markup that decide what a
scanner sees as a link (tags, quotes, comments, raw-text elements, entities, opt-outs),
joined at random by the Python-scanner and the C-scanner property tests."""

from __future__ import annotations

from hypothesis import strategies as st

LINK_PIECES = st.sampled_from(
    [
        "<a href=",
        "<a href='https://x.example/'>",
        '<a href="https://x.example/?a=1&amp;b=2">',
        "<area href=http://y.example/p?q>",
        "<A HREF = x>",
        "<v:rect href='https://v.example/'>",
        "<!--[if mso]>",
        "<![endif]-->",
        "<!--",
        "-->",
        "<script>",
        "</script>",
        "<style>",
        "</style>",
        "<p title='",
        '"',
        "'",
        ">",
        "<",
        "</a>",
        "&amp;",
        "&copy=",
        "=",
        " ",
        "\n",
        "text",
        "<b>",
        "<!DOCTYPE html>",
        " data-clickrelay=off ",
        "<title>",
        "</title>",
        "<textarea>",
        "/",
        "é",
    ]
)
