"""Certificate logic (pure): parsing PEM bundles, which names a certificate covers, which
certificate a host gets, when renewal is due."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redirector.tls.certs import (
    ACME,
    FILE,
    CertError,
    Health,
    health,
    name_matches,
    parse_bundle,
    renewal_due,
    select,
    tls_host,
)
from tests.support.tls_certs import CertAuthority

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
CA = CertAuthority()


def bundle(names: list[str], *, source: str = FILE, start: float = -10, end: float = 80):
    data = CA.bundle(names, not_before=NOW + start * DAY, not_after=NOW + end * DAY)
    return parse_bundle(data, source=source, origin=source)


def test_a_bundle_is_parsed_with_names_issuer_and_dates() -> None:
    parsed = bundle(["links.example.com", "*.shop.example.org"])
    assert parsed.names == ("links.example.com", "*.shop.example.org")
    assert parsed.issuer == "clickrelay test CA"
    assert parsed.covers("LINKS.example.com.")
    assert parsed.covers("a.shop.example.org")
    assert not parsed.covers("a.b.shop.example.org")
    assert not parsed.covers("shop.example.org")
    assert 79 < parsed.days_left(NOW) <= 80


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no certificate"),
        (CA.ca_pem, "no private key"),
        (CA.bundle(["a.test"]) + CA.bundle(["b.test"]), "2 private keys"),
    ],
)
def test_bad_bundles_are_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(CertError, match=message):
        parse_bundle(data, source=FILE, origin="x")


@given(st.binary(max_size=300))
def test_garbage_is_a_cert_error_never_a_crash(data: bytes) -> None:
    with pytest.raises(CertError):
        parse_bundle(data, source=FILE, origin="x")


def test_idn_hosts_compare_in_punycode() -> None:
    assert tls_host("Bücher.example.") == "xn--bcher-kva.example"
    assert name_matches("*.xn--bcher-kva.example", tls_host("links.bücher.example"))


def test_a_valid_file_wins_over_acme_but_not_an_expired_one() -> None:
    acme = bundle(["links.example.com"], source=ACME)
    good_file = bundle(["links.example.com"], end=20)
    expired_file = bundle(["links.example.com"], start=-100, end=-1)
    assert select([acme, good_file], "links.example.com", NOW) is good_file
    assert select([acme, expired_file], "links.example.com", NOW) is acme
    # Nothing better: the expired one is still served (and reported).
    assert select([expired_file], "links.example.com", NOW) is expired_file
    assert select([acme], "other.example.com", NOW) is None


def test_renewal_is_due_30_days_ahead_or_in_a_short_certificates_last_third() -> None:
    window = 30 * DAY
    long_lived = bundle(["a.test"], start=0, end=90)
    assert renewal_due(long_lived, window) == long_lived.not_after - window
    short = parse_bundle(
        CA.bundle(["a.test"], not_before=NOW, not_after=NOW + datetime.timedelta(seconds=60)),
        source=ACME,
        origin=ACME,
    )
    assert renewal_due(short, window) == short.not_before + datetime.timedelta(seconds=40)


@pytest.mark.parametrize(
    ("start", "end", "host", "expected"),
    [
        (-10, 80, "a.test", Health.OK),
        (-70, 20, "a.test", Health.RENEW),
        (-100, -1, "a.test", Health.EXPIRED),
        (1, 90, "a.test", Health.NOT_YET_VALID),
        (-10, 80, "b.test", Health.NAME_MISMATCH),
    ],
)
def test_health(start: float, end: float, host: str, expected: Health) -> None:
    assert health(bundle(["a.test"], start=start, end=end), host, NOW, 30 * DAY) is expected
