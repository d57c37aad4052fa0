"""Skip rules: each rule with its reason string, and what is still tracked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redirector.location import location_for
from redirector.tokens import url_is_sealable
from smtp_proxy.engine.linkrules import LinkPolicy, link_skip_reason, normalize_host

POLICY = LinkPolicy(
    tracking_hosts=frozenset({"track.example.net", "Links.Bücher.example"}),
    skip_domains=("skip.example", "Other.Example."),
)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # empty
        ("", "empty"),
        ("   ", "empty"),
        ("\n\t", "empty"),
        # placeholders, raw and percent-encoded (once and twice)
        ("{{unsubscribe_url}}", "placeholder"),
        ("https://example.com/?u={{ user.id }}", "placeholder"),
        ("https://example.com/{% url 'x' %}", "placeholder"),
        ("*|ARCHIVE|*", "placeholder"),
        ("https://example.com/?e=*|EMAIL|*", "placeholder"),
        ("https://example.com/%%user%%", "placeholder"),
        ("https://example.com/[[name]]", "placeholder"),
        ("https://example.com/?u=%7B%7Bid%7D%7D", "placeholder"),
        ("https://example.com/?u=%7b%7bid%7d%7d", "placeholder"),
        ("https://example.com/%7B%25url%25%7D", "placeholder"),
        ("https://example.com/?e=*%7CEMAIL%7C*", "placeholder"),
        ("https://example.com/%25%25user%25%25", "placeholder"),
        ("https://example.com/%5B%5Bname%5D%5D", "placeholder"),
        ("https://example.com/?u=%257B%257Bid%257D%257D", "placeholder"),
        # fragments
        ("#", "fragment"),
        ("#top", "fragment"),
        # other schemes, or none
        ("mailto:someone@example.com", "not-http"),
        ("MAILTO:someone@example.com", "not-http"),
        ("tel:+15555550100", "not-http"),
        ("sms:+15555550100", "not-http"),
        ("javascript:alert(1)", "not-http"),
        ("data:text/html,hi", "not-http"),
        ("cid:part1@example.com", "not-http"),
        ("ftp://example.com/file", "not-http"),
        ("/relative/path", "not-http"),
        ("www.example.com", "not-http"),
        ("//example.com/x", "not-http"),
        ("mailto:John Doe <john@example.com>", "not-http"),
        # malformed http(s)
        ("http://", "malformed"),
        ("https:///path", "malformed"),
        ("http:example.com", "malformed"),
        ("http:/example.com", "malformed"),
        ("https://exa mple.com/", "malformed"),
        ("https://example.com/a b", "malformed"),
        (" https://example.com/", "malformed"),
        ("https://example.com/\n", "malformed"),
        ("https://example.com/a\r\nb", "malformed"),
        ("https://example.com/a\tb", "malformed"),
        ("https://example.com/a\x00b", "malformed"),
        ("https://example.com/a\x7fb", "malformed"),
        ("https://example.com/\udcff", "malformed"),
        ("https://example.com:99999/", "malformed"),
        ("https://example.com:http/", "malformed"),
        ("https://example.com:-1/", "malformed"),
        ("https://user@/", "malformed"),
        ("https://[::1/", "malformed"),
        ("https://exa<mple.com/", "malformed"),
        ("https://example.com\\@evil.com/", "malformed"),
        ("https://[x]@example.com/", "malformed"),
        ("https://exa\uff0fmple.com/", "malformed"),
        # already tracked: any URL on a tracking host, whatever the case, dot or IDN form
        ("https://track.example.net/c/AAAA", "already-tracked"),
        ("http://TRACK.Example.NET./c/AAAA", "already-tracked"),
        ("https://track.example.net:8443/other", "already-tracked"),
        ("https://links.xn--bcher-kva.example/c/x", "already-tracked"),
        ("https://LINKS.bücher.example/c/x", "already-tracked"),
        # unsubscribe
        ("https://example.com/unsubscribe?id=1", "unsubscribe"),
        ("https://example.com/UnSubscribe", "unsubscribe"),
        ("https://example.com/list?action=optout", "unsubscribe"),
        ("https://example.com/opt-out/1", "unsubscribe"),
        ("https://example.com/OPT_OUT", "unsubscribe"),
        ("https://example.com/un%73ubscribe", "unsubscribe"),
        # skip domains: the domain itself and any subdomain
        ("https://skip.example/x", "skip-domain"),
        ("https://a.b.SKIP.example/x", "skip-domain"),
        ("https://other.example/", "skip-domain"),
        ("https://www.other.example./", "skip-domain"),
    ],
)
def test_skip_reasons(url: str, reason: str) -> None:
    assert link_skip_reason(url, POLICY) == reason


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "http://example.com/",
        "HTTPS://EXAMPLE.COM/Path",
        "https://example.com/a?b=1&c=2#frag",
        "https://example.com/p?q=[1]&at=@&bang=!&star=*&d=$&apos='",
        "https://example.com/%E2%82%AC?x=%2F",
        "https://example.com/?next=https://other.com/?a=1%26b=2",
        "https://user:pass@example.com:8080/x",
        "https://[2001:db8::1]:443/x",
        "https://bücher.example/straße",
        "https://example.com:/x",
        "https://notskip.example/x",  # a suffix of the name is not a subdomain
        "https://skip.example.evil.com/x",
        "https://example.com/subscribe",
        "https://example.com/50%off",  # stray % is no placeholder
        "https://example.com/{single}",
        "https://track.example.net.evil.com/c/x",
    ],
)
def test_trackable(url: str) -> None:
    assert link_skip_reason(url, POLICY) is None
    assert url_is_sealable(url)


def test_policy_normalises_entries() -> None:
    policy = LinkPolicy(
        frozenset({"HTTPS://Track.Example.NET:8443/base", "127.0.0.1:8080", "[::1]:99"}),
        ("Skip.Example.", "  "),
    )
    assert policy.tracking_hosts == {"track.example.net", "127.0.0.1", "::1"}
    assert policy.skip_domains == ("skip.example",)
    assert link_skip_reason("http://127.0.0.1:8080/c/x", policy) == "already-tracked"
    assert link_skip_reason("http://[::1]/c/x", policy) == "already-tracked"


def test_from_base_urls() -> None:
    policy = LinkPolicy.from_base_urls(
        ["http://127.0.0.1:8080", "https://t.example.com"], ["example.org"]
    )
    assert policy.tracking_hosts == {"127.0.0.1", "t.example.com"}
    assert link_skip_reason("https://t.example.com/c/abc", policy) == "already-tracked"
    assert link_skip_reason("https://www.example.org/", policy) == "skip-domain"
    assert link_skip_reason("https://example.com/", policy) is None


def test_normalize_host() -> None:
    assert normalize_host("Bücher.Example.") == "xn--bcher-kva.example"
    assert normalize_host("[::1]") == "::1"
    # Label by label, as the Location header is written: an over-long ASCII label stays.
    assert normalize_host("x" * 70 + ".ünï") == "x" * 70 + ".xn--n-nga1b"


@pytest.mark.parametrize(
    "host",
    [
        "straße.example",
        "bücher.example",
        "ﬁle.example",
        "例え.テスト",
        "a\u3002bü.example",
        "ü" * 70,
    ],
)
def test_hosts_are_compared_as_the_redirect_sends_them(host: str) -> None:
    # The link rules and the Location header agree on every IDN host (UTS 46, as
    # browsers): a skip domain written in punycode matches the Unicode spelling.
    location = location_for(f"https://{host}/x")
    assert location is not None
    assert location.lower() == f"https://{normalize_host(host)}/x"
    policy = LinkPolicy(frozenset(), (normalize_host(host),))
    assert link_skip_reason(f"https://{host}/x", policy) == "skip-domain"


def test_sharp_s_is_not_folded_to_ss() -> None:
    # IDNA 2003 would map straße to strasse, a different domain the browser never visits.
    policy = LinkPolicy(frozenset(), ("xn--strae-oqa.de",))
    assert link_skip_reason("https://straße.de/", policy) == "skip-domain"
    assert link_skip_reason("https://strasse.de/", policy) is None
    assert link_skip_reason("https://strasse.de/", LinkPolicy(frozenset(), ("straße.de",))) is None


def test_empty_policy_tracks_ordinary_links() -> None:
    assert link_skip_reason("https://example.com/", LinkPolicy(frozenset())) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_total_on_any_text(text: str) -> None:
    for url in (text, "https://example.com/" + text, "http://" + text):
        reason = link_skip_reason(url, POLICY)
        assert reason in {
            None,
            "empty",
            "placeholder",
            "fragment",
            "not-http",
            "malformed",
            "already-tracked",
            "unsubscribe",
            "skip-domain",
        }
        if reason is None:
            assert url_is_sealable(url)


_URL_PIECES = st.sampled_from(
    [
        "https://",
        "http://",
        "user",
        ":",
        "@",
        "example",
        ".",
        "com",
        "[",
        "]",
        "::1",
        "8080",
        "/",
        "?",
        "#",
        "a=b",
        "&",
        "%41",
        "\\",
        "BÜCHER",
        "-",
        "99999",
        "0",
        "\uff0f",  # FULLWIDTH SOLIDUS: NFKC makes it "/"
        "\uff20",  # FULLWIDTH COMMERCIAL AT
        "\u3002",  # IDEOGRAPHIC FULL STOP (a label separator for IDNA)
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_URL_PIECES, max_size=10).map("".join))
def test_host_agrees_with_urlsplit(url: str) -> None:
    # The hand-written authority split must never see a different host than urllib.
    from urllib.parse import urlsplit

    from smtp_proxy.engine.linkrules import _host_and_tail

    if not url.startswith(("http://", "https://")):
        return
    split = _host_and_tail(url, url.index(":") + 1)
    try:
        parts = urlsplit(url)
    except ValueError:
        assert split is None  # never more lenient than urllib
        return
    if split is None:
        return
    assert parts.hostname is not None
    assert split[0] == normalize_host(parts.hostname)
    assert split[1] == parts.path + ("?" + parts.query if "?" in url.split("#")[0] else "")
