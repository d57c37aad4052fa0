"""Scanner network ranges: the bundled file, a site's file, and the address lookup."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickrelay.common.errors import ConfigError
from redirector.clicks.networks import (
    NetworkMatcher,
    bundled_networks,
    load_networks,
    parse_networks,
)


def test_the_bundled_file_parses_and_every_range_has_a_name() -> None:
    networks = bundled_networks()
    assert {"microsoft-eop", "proofpoint", "mimecast", "barracuda"} <= {n for n, _ in networks}
    matcher = NetworkMatcher(networks)
    assert matcher("40.107.3.4") == "microsoft-eop"
    assert matcher("2a01:111:f400::1") == "microsoft-eop"
    assert matcher("148.163.130.7") == "proofpoint"
    assert matcher("81.2.69.160") is None  # an ordinary address


def test_the_bundled_file_names_a_source_for_every_block() -> None:
    text = (
        Path(__file__).resolve().parents[3] / "redirector/clicks/data/scanner_networks.txt"
    ).read_text("utf-8")
    blocks = [b for b in text.split("\n\n") if any(not ln.startswith("#") for ln in b.split("\n"))]
    for block in blocks:
        assert "# Source:" in block, block


def test_lookup_edges_and_ipv4_mapped_ipv6() -> None:
    m = NetworkMatcher(parse_networks("a 10.0.0.0/24\nb 10.0.1.0/24\nc 2001:db8::/32"))
    assert m("10.0.0.0") == "a"
    assert m("10.0.0.255") == "a"
    assert m("10.0.1.0") == "b"
    assert m("10.0.2.0") is None
    assert m("9.255.255.255") is None
    assert m("::ffff:10.0.1.9") == "b"
    assert m("2001:db8:1::1") == "c"
    assert m("not an address") is None
    assert m(None) is None


def test_overlapping_ranges_keep_the_wider_one_first_listed() -> None:
    m = NetworkMatcher(parse_networks("wide 10.0.0.0/16\nnarrow 10.0.5.0/24\nlater 10.1.0.0/24"))
    assert m("10.0.5.1") == "wide"
    assert m("10.1.0.1") == "later"


def test_a_bad_line_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":2: .*does not appear"):
        parse_networks("ok 10.0.0.0/8\nbad 300.1.1.1/8\n", "site.txt")
    with pytest.raises(ConfigError, match="expected '<name> <CIDR>'"):
        parse_networks("10.0.0.0/8\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_networks(tmp_path / "missing.txt")


def test_a_sites_file_adds_to_the_bundled_list(tmp_path: Path) -> None:
    site = tmp_path / "nets.txt"
    site.write_text("# our own sandbox\nsandbox 198.51.100.0/24\n", "utf-8")
    m = NetworkMatcher(load_networks(site))
    assert m("198.51.100.9") == "sandbox"
    assert m("40.107.0.1") == "microsoft-eop"


@given(
    nets=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)), min_size=1, max_size=20
    ),
    probe=st.integers(0, 2**32 - 1),
)
def test_lookup_matches_a_linear_scan(nets: list[tuple[int, int]], probe: int) -> None:
    pairs = [
        (f"n{i}", ipaddress.ip_network(f"{ipaddress.IPv4Address(a)}/{p}", strict=False))
        for i, (a, p) in enumerate(nets)
    ]
    address = ipaddress.IPv4Address(probe)
    found = NetworkMatcher(pairs)(str(address))
    holders = [net for _, net in pairs if address in net]
    assert (found is not None) == bool(holders)
