"""Tracking costs no deliverability: SpamAssassin scores each message as written and as
rewritten (branded base URL), and the rewrite may neither add a rule (nor a probe of a
hidden sub-rule, see ``tests/support/spamd.py``) nor raise the score.

Sets: a crafted one (URL-as-text anchors, bank-style notifications, short plain text,
an image-only newsletter, 100 links) and the whole corpus (in CI; a third of it in local
runs, see :func:`_corpus_share`). Exceptions must be listed in
:data:`EXCEPTIONS` with the reason; there are none. The last tests show the check can
fail: without the ``url-text`` and ``uri-only-text`` skips, rules do get added.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from clickrelay.config import load_config_text
from redirector.tokens import new_key_line, parse_keys
from smtp_proxy.engine.rewriter import TrackingSettings
from smtp_proxy.smtp.tracking import tracking_settings
from tests.support.deliverability import (
    BRANDED_BASE,
    Compared,
    compare,
    compare_all,
    corpus_messages,
    crafted,
)
from tests.support.spamd import Spamd

#: message name -> (rules it may gain, why). Empty: no rewrite adds any rule.
EXCEPTIONS: dict[str, tuple[frozenset[str], str]] = {}

CRAFTED = crafted()


@pytest.fixture(scope="module")
def branded(tmp_path_factory: pytest.TempPathFactory) -> TrackingSettings:
    base = tmp_path_factory.mktemp("cfg")
    config = load_config_text(f'[tracking]\nbase_url = "{BRANDED_BASE}"\n', base_dir=base)
    return tracking_settings(config, parse_keys(new_key_line()), {})


def _problem(row: Compared) -> str | None:
    allowed = EXCEPTIONS.get(row.name, (frozenset(), ""))[0]
    added = row.added - allowed
    if added or (row.delta > 0 and not allowed):
        return (
            f"{row.name}: {row.before.score} -> {row.after.score}, added {sorted(added)}"
            f" (before: {sorted(row.before.rules | row.before.probes)})"
        )
    return None


@pytest.mark.parametrize("name", [name for name, _ in CRAFTED])
def test_crafted_message_gains_no_rule(name: str, spamd: Spamd, branded: TrackingSettings) -> None:
    data = dict(CRAFTED)[name]
    row = compare(spamd, name, data, branded)
    assert _problem(row) is None


def test_crafted_set_is_really_rewritten(spamd: Spamd, branded: TrackingSettings) -> None:
    """Guard against passing by doing nothing: most crafted messages get tracked links."""
    rows = compare_all(spamd, CRAFTED, branded)
    changed = {r.name for r in rows if r.changed}
    assert {"bank-notification", "password-reset", "hundred-links"} <= changed
    assert len(changed) >= len(CRAFTED) - 3, changed


def _corpus_share() -> list[tuple[str, bytes]]:
    """The whole corpus in CI (70 s to 2 minutes on a shared 2-core machine), else every
    third message unless ``CLICKRELAY_DELIVERABILITY=full``: the check is slow for an
    edit-test loop, and CI runs all of it anyway."""
    messages = list(corpus_messages())
    if os.environ.get("CLICKRELAY_CI") or os.environ.get("CLICKRELAY_DELIVERABILITY") == "full":
        return messages
    return messages[::3]


def test_corpus_gains_no_rule(spamd: Spamd, branded: TrackingSettings, corpus: Path) -> None:
    messages = _corpus_share()
    rows = compare_all(spamd, messages, branded)
    problems = [p for p in map(_problem, rows) if p]
    assert not problems, "\n".join(problems)
    assert sum(r.changed for r in rows) >= len(messages) // 3  # really rewritten


def test_tracking_url_text_would_add_the_spoofed_url_rules(
    spamd: Spamd, branded: TrackingSettings
) -> None:
    """Why ``track_url_text`` is off by default (and proof the check can fail)."""
    anyway = dataclasses.replace(branded, track_url_text=True)
    row = compare(spamd, "url-text-anchor", dict(CRAFTED)["url-text-anchor"], anyway)
    assert row.changed
    assert {"CR_PROBE_SPOOFED_URL", "T_PDS_SHORT_SPOOFED_URL"} <= row.added


def test_tracking_a_signature_only_text_would_add_tvd_space_ratio(
    spamd: Spamd, branded: TrackingSettings
) -> None:
    """Why ``uri-only-text`` exists: the same message with its one link tracked by hand
    (what the rewriter would do without that rule) gains the space-ratio rules."""
    data = dict(CRAFTED)["signature-only"]
    url = "http://www.sam.example.com"
    token = branded.keyring.seal(
        url, host=branded.tracking_host, queue_id="Q1", link_index=0, sent_at=0
    )
    tracked = data.replace(url.encode(), f"{BRANDED_BASE}/c/{token}".encode())
    before, after = spamd.check(data), spamd.check(tracked)
    assert "TVD_SPACE_RATIO" in after.rules - before.rules
    assert after.score > before.score
    assert not compare(spamd, "signature-only", data, branded).changed
