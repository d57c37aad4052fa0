"""MIME torture and link abuse through ``rewrite_message``: it never raises, never hangs
(pytest-timeout per case), and returns either the original bytes or a valid rewrite whose
links only ever decode to URLs of the original message."""

from __future__ import annotations

import html as html_mod
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redirector.hosts import base_url_host
from redirector.tokens import Keyring
from tests.reliability import torture
from tests.reliability.checks import check_relayed, check_tracked_links, tokens_in
from tests.reliability.harness import FULL, Figures, need, scale
from tests.support.corpus import corpus_eml_files
from tests.support.tracked_links import open_tracked

pytestmark = [pytest.mark.reliability]

BASE = "https://links.example.com"


def tracking(keyring: Keyring) -> Any:
    rewriter = need("smtp_proxy.engine.rewriter", "rewriter (smtp_proxy/engine/rewriter.py)")
    linkrules = need("smtp_proxy.engine.linkrules", "link rules (smtp_proxy/engine/linkrules.py)")
    return rewriter.TrackingSettings(
        base_url=BASE, keyring=keyring, policy=linkrules.LinkPolicy.from_base_urls([BASE], ())
    )


#: The host every token minted here is bound to.
HOST = base_url_host(BASE)


def token_of(decision: Any) -> str:
    """The token of a tracked link's URL."""
    assert decision.tracked_url is not None
    return str(decision.tracked_url).rsplit("/c/", 1)[1]


@pytest.mark.timeout(600 if FULL else 120)
@pytest.mark.parametrize("case", sorted(torture.CASES))
def test_torture_case_through_rewriter(keyring: Keyring, figures: list[Figures], case: str) -> None:
    rewriter = need("smtp_proxy.engine.rewriter", "rewriter")
    settings_ = tracking(keyring)
    original = torture.CASES[case]()
    result = rewriter.rewrite_message(original, settings_, queue_id="TORTURE", recipient=None)
    assert isinstance(result.data, bytes)
    outcome = check_relayed(result.data, original, keyring)
    assert result.changed == (outcome == "rewrite")
    tracked = [d for d in result.links if d.action == "tracked"]
    if outcome == "original":
        # Relayed as sent: no link may be reported as tracked.
        assert not tracked, [d.url for d in tracked]
    else:
        # Each link reported as tracked is in the message as relayed and decodes to its
        # URL, and every new /c/ link in it is one of them (nothing else was altered
        # into a tracked link).
        minted = {token_of(d): d.url for d in tracked}
        assert set(tokens_in(result.data)) - set(tokens_in(original)) == set(minted)
        for token, url in minted.items():
            assert keyring.open(token, HOST).url == url
    figures.append(
        Figures(
            f"mime torture (engine): {case}",
            load=f"{len(original):,} bytes",
            faults=case,
            notes=f"{outcome}, reason={result.reason}, tracked={len(tracked)}",
            extra={"error": result.reason.startswith("error:")},
        )
    )
    # Fail-open is allowed (never crash), but an internal exception is a bug to report.
    assert not result.reason.startswith("error:"), f"engine raised internally: {result.reason}"


def test_corpus_through_rewriter(corpus: Any, keyring: Keyring, figures: list[Figures]) -> None:
    rewriter = need("smtp_proxy.engine.rewriter", "rewriter")
    settings_ = tracking(keyring)
    files = corpus_eml_files()
    assert files
    outcomes = {"original": 0, "rewrite": 0}
    for path in files:
        original = path.read_bytes()
        result = rewriter.rewrite_message(original, settings_, queue_id="CORPUS")
        outcomes[check_relayed(result.data, original, keyring)] += 1
        assert not result.reason.startswith("error:"), (path.name, result.reason)
    figures.append(
        Figures(
            "mime corpus (engine)",
            load=f"{len(files)} corpus messages",
            notes=f"rewritten={outcomes['rewrite']} unchanged={outcomes['original']}",
        )
    )


# --- link abuse: hypothesis over HTML ------------------------------------------------------------

URL_CHARS = st.sampled_from(
    [*"abcxyz019-._~%/?#&=;:@!$'()*+,\"<> \t\r\n", "&amp;", "&#x27;", "é", "{{", "}}"]
)
url_text = st.lists(URL_CHARS, max_size=30).map("".join)
scheme = st.sampled_from(
    ["https://", "http://", "HTTP://", "javascript:", "mailto:", "", "//", "data:", " https://"]
)
host = st.sampled_from(["example.com", "a.example.org", "links.example.com", "例え.jp", "", "x"])
href = st.builds(lambda s, h, p: s + h + "/" + p, scheme, host, url_text)
quote = st.sampled_from(['"', "'", ""])
tag = st.sampled_from(["a", "A", "area", "link", "img", "v:roundrect", "base"])


@st.composite
def html_doc(draw: st.DrawFn) -> str:
    pieces = ["<html><body>"]
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 5))
        if kind <= 2:
            q = draw(quote)
            attr = draw(st.sampled_from(["href", "HREF", "data-href", "href ", "xhref"]))
            extra = draw(
                st.sampled_from(
                    [
                        "",
                        ' data-clickrelay="off"',
                        " title='a>b'",
                        " href='https://example.net/dup'",
                    ]
                )
            )
            pieces.append(f"<{draw(tag)} {attr}={q}{draw(href)}{q}{extra}>t</a>")
        elif kind == 3:
            pieces.append(draw(href))  # bare URL text
        elif kind == 4:
            pieces.append(
                draw(
                    st.sampled_from(
                        ["<!--", "-->", "<![if mso]>", "<script>", "</script>", "<p>", "&", "<"]
                    )
                )
            )
        else:
            pieces.append(draw(st.text(max_size=20)))
    pieces.append("</body></html>")
    return "".join(pieces)


def message_of(html: str, cte: str, text_part: str | None) -> bytes:
    from email.message import EmailMessage
    from email.policy import SMTP

    msg = EmailMessage(policy=SMTP)
    msg["From"] = "news@example.com"
    msg["To"] = "reader@example.org"
    msg["Subject"] = "property"
    if text_part is not None:
        msg.set_content(text_part, cte=cte)
        msg.add_alternative(html, subtype="html", cte=cte)
    else:
        msg.set_content(html, subtype="html", cte=cte)
    return msg.as_bytes()


def test_links_only_decode_to_urls_of_the_original(
    keyring: Keyring, figures: list[Figures]
) -> None:
    rewriter = need("smtp_proxy.engine.rewriter", "rewriter")
    settings_ = tracking(keyring)
    stats = {"messages": 0, "rewritten": 0, "tracked": 0}

    @settings(
        max_examples=scale(300, 5000),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        doc=html_doc(),
        cte=st.sampled_from(["quoted-printable", "base64", "8bit", "7bit"]),
        text=st.one_of(st.none(), st.lists(href, max_size=5).map(" \n".join)),
    )
    def prop(doc: str, cte: str, text: str | None) -> None:
        try:
            original = message_of(doc, cte, text)
        except (ValueError, UnicodeError):
            return  # not representable in that CTE (e.g. non-ASCII in 7bit)
        result = rewriter.rewrite_message(original, settings_, queue_id="PROP", recipient="r@x.org")
        stats["messages"] += 1
        assert not result.reason.startswith("error:"), result.reason
        if not result.changed:
            assert result.data == original
            return
        stats["rewritten"] += 1
        for decision in result.links:
            if decision.action != "tracked":
                continue
            stats["tracked"] += 1
            assert decision.tracked_url is not None
            link = open_tracked(keyring, decision.tracked_url)
            assert link.url == decision.url
            # The decoded URL is in the original (HTML-unescaped) document or text part.
            sources = [doc, html_mod.unescape(doc), text or ""]
            assert any(link.url in s for s in sources), f"link abuse: {link.url!r}"
        check_tracked_links(result.data, original, keyring)

    prop()
    assert stats["messages"] > 0
    figures.append(
        Figures(
            "link abuse (hypothesis over HTML)",
            load=f"{stats['messages']} generated messages",
            faults="odd schemes, quotes, entities, opt-outs, comments, CTEs",
            notes=f"rewritten={stats['rewritten']} tracked links={stats['tracked']}; "
            "every tracked link decodes to a URL of the original",
        )
    )
