"""Checks shared by the HTML scanner and lxml cross-check tests: the links a scan finds
(each at its exact place in the source) and the hrefs lxml's parser sees."""

from __future__ import annotations

from lxml import etree

from smtp_proxy.engine.html_scan import HtmlScan
from smtp_proxy.engine.html_verify import check_links, find_html_links


def checked(html: str) -> HtmlScan:
    """A scan with the lxml cross-check forced, whatever the links are."""
    scan = find_html_links(html, check=False)
    return HtmlScan(scan.links, check_links(html, scan), scan.hidden)


def links(html: str) -> list[tuple[str, str]]:
    scan = find_html_links(html)
    assert scan.problem is None, scan.problem
    for link in scan.links:
        assert html[link.start : link.end] == link.raw
    return [(link.kind, link.url) for link in scan.links]


def lxml_hrefs(html: str) -> list[str]:
    root = etree.fromstring(html.encode("utf-8", "replace"), etree.HTMLParser(encoding="utf-8"))
    if root is None:
        return []
    return [v.strip("\t\n\f\r ") for e in root.iter("a", "area") if (v := e.get("href"))]
