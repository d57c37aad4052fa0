"""UTM parameters: the pure URL edit (properties), the rewriter sealing them into tracked
links only, and ``[tracking.utm]`` with a per-sender-domain override."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from clickrelay.config import load_config_text
from redirector.tokens import Keyring
from smtp_proxy.engine.rewriter import rewrite_message
from smtp_proxy.engine.utm import add_utm, utm_params
from smtp_proxy.smtp.tracking import tracking_settings, utm_values

PARAMS = {"utm_source": "newsletter", "utm_medium": "e mail", "utm_campaign": "spring"}

segment = st.text(st.sampled_from("abcXYZ019-._~%/=+"), min_size=0, max_size=12)
query_item = st.tuples(st.sampled_from(["a", "b", "utm_source", "UTM_MEDIUM", "x"]), segment).map(
    lambda kv: f"{kv[0]}={kv[1]}"
)
urls = st.builds(
    lambda path, items, frag: (
        "https://shop.example.com/"
        + path
        + ("?" + "&".join(items) if items is not None else "")
        + ("#" + frag if frag is not None else "")
    ),
    segment,
    st.one_of(st.none(), st.lists(query_item, max_size=4)),
    st.one_of(st.none(), segment),
)


def test_examples() -> None:
    assert add_utm("https://a.example/p", {"utm_source": "n"}) == "https://a.example/p?utm_source=n"
    assert (
        add_utm("https://a.example/p?x=1#top", {"utm_source": "n l"})
        == "https://a.example/p?x=1&utm_source=n%20l#top"
    )
    # Already there (any case): the sender's value stands.
    assert add_utm("https://a.example/?UTM_SOURCE=own", {"utm_source": "n"}) == (
        "https://a.example/?UTM_SOURCE=own"
    )
    assert add_utm("https://a.example/?", {"utm_source": "n"}) == "https://a.example/?utm_source=n"
    assert utm_params({"utm_campaign": "{tag}", "utm_source": "n"}, None) == {"utm_source": "n"}
    assert utm_params({"utm_campaign": "c-{tag}"}, "spring") == {"utm_campaign": "c-spring"}


@given(urls)
def test_added_only_when_absent_fragment_last_rest_unchanged(url: str) -> None:
    out = add_utm(url, PARAMS)
    head, _, fragment = url.partition("#")
    out_head, _, out_fragment = out.partition("#")
    assert out_fragment == fragment  # fragment kept, after the query
    assert out_head.startswith(head.rstrip("?"))  # the original bytes come first
    query = {k.lower(): v for k, v in parse_qsl(urlsplit(out_head).query, keep_blank_values=True)}
    original = {item.split("=")[0].lower() for item in urlsplit(head).query.split("&")}
    for name, value in PARAMS.items():
        assert name in query
        if name not in original:
            assert query[name] == value
    assert add_utm(out, PARAMS) == out  # idempotent


def test_rewriter_seals_utm_into_tracked_links_only(keyring: Keyring, tmp_path: Path) -> None:
    config = load_config_text(
        '[tracking]\nbase_url = "https://t.example.net"\nskip_domains = ["skip.example"]\n',
        base_dir=tmp_path,
    )
    settings = tracking_settings(config, keyring, {})
    html = (
        '<a href="https://shop.example/a?utm_source=own#x">a</a>'
        ' <a href="https://skip.example/b">b</a>'
    )
    message = (
        "X-Clickrelay-Tag: spring\r\nContent-Type: text/html\r\n\r\n" + html + "\r\n"
    ).encode()
    result = rewrite_message(
        message,
        settings,
        queue_id="Q1",
        utm_values={"utm_source": "news", "utm_campaign": "{tag}"},
    )
    tokens = re.findall(rb"https://t\.example\.net/c/([A-Za-z0-9_-]+)", result.data)
    assert len(tokens) == 1
    link = keyring.open(tokens[0].decode(), "t.example.net")
    assert link.url == "https://shop.example/a?utm_source=own&utm_campaign=spring#x"
    assert result.links[0].url == "https://shop.example/a?utm_source=own#x"  # as written
    assert b"https://skip.example/b" in result.data  # not tracked: no parameters


def test_config_defaults_and_sender_domain_override(tmp_path: Path) -> None:
    off = load_config_text("", base_dir=tmp_path)
    assert utm_values(off, "a@shop.example", b"") == {}
    config = load_config_text(
        "[tracking.utm]\n"
        'utm_source = "newsletter"\nutm_medium = "email"\nutm_campaign = "{tag}"\n'
        '[tracking.utm.sender_domains."shop.example"]\nutm_source = "shop"\n',
        base_dir=tmp_path,
    )
    assert utm_values(config, "a@other.example", b"") == {
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "{tag}",
    }
    assert utm_values(config, "a@mail.shop.example", b"")["utm_source"] == "shop"
