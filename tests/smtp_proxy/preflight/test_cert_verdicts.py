"""Certificate verdicts (pure): every verdict from hand-made evidence, each with its own
fix line, and which of them stop link tracking."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from redirector.tls import status as st
from smtp_proxy.preflight.cert_verdicts import (
    ServedCert,
    TlsEvidence,
    blocks_tracking,
    cert_verdict,
)
from smtp_proxy.preflight.verdicts import DnsEvidence, Verdict, fix_for

HOST = "links.example.com"
NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def served(days_left: float, names: tuple[str, ...] = (HOST,), life: float = 90) -> ServedCert:
    end = NOW + datetime.timedelta(days=days_left)
    return ServedCert(names, "Test CA", end - datetime.timedelta(days=life), end)


def acme_status(**kwargs: object) -> st.HostStatus:
    values: dict[str, object] = {"host": HOST, "state": st.VALID, "managed_by": "acme"}
    values.update(kwargs)
    return st.HostStatus(**values)  # type: ignore[arg-type]


def evidence(
    cert: ServedCert | None, status: st.HostStatus | None, error: str | None = None
) -> TlsEvidence:
    return TlsEvidence(HOST, "127.0.0.1", cert, error, status, NOW)


def fix(verdict: Verdict, ev: TlsEvidence) -> str | None:
    return fix_for(
        verdict,
        host=HOST,
        expected_target=None,
        dns=DnsEvidence(qname=HOST),
        probe=None,
        current_key_id="00000000",
        tls=ev,
    )


CASES = [
    pytest.param(
        evidence(None, acme_status(state=st.PENDING, detail="order in progress")),
        Verdict.CERT_PENDING,
        "being ordered",
        id="pending",
    ),
    pytest.param(
        evidence(None, acme_status(state=st.PENDING, detail="waiting for DNS before ordering")),
        Verdict.CERT_PENDING,
        "once the DNS check passes",
        id="pending-dns",
    ),
    pytest.param(
        evidence(
            None,
            acme_status(
                state=st.FAILED,
                failures=1,
                last_error="urn:ietf:params:acme:error:caa: CAA record forbids issuance",
            ),
        ),
        Verdict.CERT_FAILED,
        "acme-challenge",
        id="failed",
    ),
    pytest.param(
        evidence(
            served(20),
            acme_status(failures=2, last_error="boom", renewal_due=NOW - DAY),
        ),
        Verdict.CERT_EXPIRING,
        "keeps failing",
        id="expiring-acme",
    ),
    pytest.param(
        evidence(served(3), acme_status(managed_by="file")),
        Verdict.CERT_EXPIRING,
        "tls_certificates",
        id="expiring-file",
    ),
    pytest.param(evidence(served(-1), None), Verdict.CERT_EXPIRED, "renewed", id="expired"),
    pytest.param(
        evidence(served(60, names=("other.example.org",)), None),
        Verdict.CERT_NAME_MISMATCH,
        "subjectAltName",
        id="name-mismatch",
    ),
]


@pytest.mark.parametrize(("ev", "verdict", "fix_words"), CASES)
def test_each_certificate_verdict_with_its_fix(
    ev: TlsEvidence, verdict: Verdict, fix_words: str
) -> None:
    judged = cert_verdict(ev)
    assert judged is not None and judged[0] is verdict
    line = fix(verdict, ev)
    assert line is not None and fix_words in line


def test_the_ca_error_is_kept_verbatim() -> None:
    error = 'urn:ietf:params:acme:error:connection: 127.0.0.1: Fetching http://x/: "refused"'
    judged = cert_verdict(evidence(None, acme_status(state=st.FAILED, last_error=error)))
    assert judged is not None and error in judged[1]


@pytest.mark.parametrize(
    ("ev", "expected"),
    [
        (evidence(served(60), acme_status(renewal_due=NOW + 30 * DAY)), None),
        # Inside the window but renewal is not failing (yet): fine.
        (evidence(served(20), acme_status(renewal_due=NOW - DAY)), None),
        # A file with weeks left: fine.
        (evidence(served(30), acme_status(managed_by="file")), None),
        # Nothing served and nothing known: the HTTP probe decides.
        (evidence(None, None, "cannot connect"), None),
    ],
)
def test_healthy_certificates_leave_the_verdict_to_the_probe(
    ev: TlsEvidence, expected: None
) -> None:
    assert cert_verdict(ev) is expected


def test_expiring_stops_tracking_only_in_the_last_week() -> None:
    failing = acme_status(failures=1, last_error="x", renewal_due=NOW - DAY)
    assert not blocks_tracking(Verdict.CERT_EXPIRING, evidence(served(20), failing))
    assert blocks_tracking(Verdict.CERT_EXPIRING, evidence(served(6.9), failing))
    for verdict in (Verdict.CERT_EXPIRED, Verdict.CERT_PENDING, Verdict.CERT_FAILED):
        assert blocks_tracking(verdict, evidence(served(20), failing))


@settings(max_examples=300, deadline=None)
@given(
    days_left=hst.floats(min_value=-400, max_value=400),
    failures=hst.integers(min_value=0, max_value=5),
    state=hst.sampled_from([st.NONE, st.PENDING, st.FAILED, st.VALID]),
    managed=hst.sampled_from(["acme", "file", None]),
    has_cert=hst.booleans(),
    matches=hst.booleans(),
)
def test_any_evidence_gives_a_verdict_or_none_never_a_crash(
    days_left: float, failures: int, state: str, managed: str | None, has_cert: bool, matches: bool
) -> None:
    names = (HOST,) if matches else ("*.example.org",)
    status = acme_status(state=state, managed_by=managed, failures=failures, last_error="e")
    ev = evidence(served(days_left, names) if has_cert else None, status)
    judged = cert_verdict(ev)
    if judged is None:
        # A certificate that is served, names the host and is not expired may pass.
        assert not has_cert or (matches and days_left > 0)
        return
    verdict, detail = judged
    assert verdict.value.startswith("cert-") and detail
    assert fix(verdict, ev)
