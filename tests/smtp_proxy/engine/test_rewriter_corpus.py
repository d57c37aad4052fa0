"""Acceptance: the rewriter over third-party mail and templates nobody on this project wrote.

Every message in ``$CLICKRELAY_CORPUS/eml`` and every template in ``html/`` — each template
wrapped as text/html alone and in multipart/alternative with a text part, in 8bit,
quoted-printable and base64, in UTF-8 and a legacy charset where the text fits — must:

pass every check of :func:`tests.support.rewrite_checks.check_rewrite` (same text outside
href values, tracked links decoding to the original URLs, the same anchors for lxml, no
new MIME defects, signed/encrypted/DKIM-signed mail unchanged, a second rewrite a no-op).
The checks use only the email package, lxml and the token codec — not the engine's own
MIME code — so they judge the engine rather than repeat it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clickrelay.config import load_config_text
from smtp_proxy.engine.rewriter import TrackingSettings, rewrite_message
from smtp_proxy.smtp.tracking import tracking_settings
from tests.support.corpus import corpus_eml_files, corpus_html_files, wrapped
from tests.support.rewrite_checks import BASE, KEYRING, check_rewrite


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> TrackingSettings:
    base = tmp_path_factory.mktemp("cfg")
    config = load_config_text(f'[tracking]\nbase_url = "{BASE}"\n', base_dir=base)
    return tracking_settings(config, KEYRING, {})


def _ids(paths: list[Path], root: str) -> list[str]:
    return [str(p).split(f"/{root}/", 1)[-1] for p in paths]


# --- real messages -----------------------------------------------------------------------

EML = corpus_eml_files()


@pytest.mark.parametrize("path", EML, ids=_ids(EML, "eml"))
def test_corpus_message(path: Path, settings: TrackingSettings, corpus: Path) -> None:
    data = path.read_bytes()
    result = rewrite_message(data, settings, queue_id="Q1", recipient="r@example.org")
    assert not result.reason.startswith("error:"), result.reason
    if not result.changed:
        assert result.data == data
    check_rewrite(data, result, settings)


# --- templates wrapped in MIME ------------------------------------------------------------

HTML = corpus_html_files()


@pytest.mark.parametrize("path", HTML, ids=_ids(HTML, "html"))
def test_corpus_template(path: Path, settings: TrackingSettings, corpus: Path) -> None:
    html = path.read_text(encoding="utf-8")
    for name, data in wrapped(html):
        result = rewrite_message(data, settings, queue_id="Q1")
        assert not result.reason.startswith("error:"), (name, result.reason)
        try:
            check_rewrite(data, result, settings)
        except AssertionError as exc:
            raise AssertionError(f"{path.name} as {name}: {exc}") from exc


def test_corpus_templates_get_tracked(settings: TrackingSettings, corpus: Path) -> None:
    """Guard against passing by doing nothing: the templates' real links get tracked (most
    of their links are placeholders, ``#`` or a bare ``http://``, which must be skipped)."""
    tracked = skipped = 0
    reasons: dict[str, int] = {}
    for path in HTML:
        data = next(wrapped(path.read_text(encoding="utf-8")))[1]
        result = rewrite_message(data, settings, queue_id="Q1")
        for d in result.links:
            if d.action == "tracked":
                tracked += 1
            else:
                skipped += 1
                reasons[d.reason] = reasons.get(d.reason, 0) + 1
    assert tracked >= 100, (tracked, reasons)
    assert reasons.get("html-disagrees", 0) < tracked // 10, reasons
