"""What tracking does to SpamAssassin's verdict: each message scored as written and as
rewritten, with the branded base URL ``https://links.example.com``.

    python bench/deliverability.py [--no-corpus]

Needs Debian's ``spamd`` and ``spamc``. Starts one ``spamd`` (offline base rules,
Bayes/auto-learning off, its own config under a temporary directory; see
``tests/support/spamd.py``), then scores the crafted set and every message and template
of ``$CLICKRELAY_CORPUS`` before and after ``rewrite_message``. A message the rewrite
leaves unchanged is not scored (same bytes, same verdict); the deltas are over the
rewritten ones. Rows:

- ``crafted`` / ``corpus``: the defaults (``url-text`` and ``uri-only-text`` links left
  untracked);
- ``crafted, track_url_text``: URL-as-text anchors tracked anyway, for comparison.

Printed per row: messages, rewritten, mean / p95 / max score delta, rules added and
removed by name (with how many messages each). ``CR_PROBE_*`` are hidden sub-rules made
visible (0 points).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clickrelay.config import load_config_text  # noqa: E402
from redirector.tokens import new_key_line, parse_keys  # noqa: E402
from smtp_proxy.smtp.tracking import tracking_settings  # noqa: E402
from tests.support.corpus import corpus_dir  # noqa: E402
from tests.support.deliverability import (  # noqa: E402
    BRANDED_BASE,
    compare_all,
    corpus_messages,
    crafted,
    summary,
)
from tests.support.spamd import Spamd, spamassassin_missing  # noqa: E402


def _names(counts: object) -> str:
    assert isinstance(counts, dict)
    return ", ".join(f"{name} ({n})" for name, n in counts.items()) or "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-corpus", action="store_true", help="crafted set only")
    args = parser.parse_args()
    missing = spamassassin_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="clickrelay-bench-") as tmp:
        config = load_config_text(f'[tracking]\nbase_url = "{BRANDED_BASE}"\n', base_dir=Path(tmp))
        settings = tracking_settings(config, parse_keys(new_key_line()), {})
        anyway = dataclasses.replace(settings, track_url_text=True)
        sets = [("crafted", crafted(), settings), ("crafted, track_url_text", crafted(), anyway)]
        if not args.no_corpus and corpus_dir() is not None:
            sets.insert(1, ("corpus", list(corpus_messages()), settings))
        work = Path(tmp) / "spamd"
        work.mkdir()
        os.chmod(tmp, 0o755)
        spamd = Spamd(work)
        spamd.start()
        try:
            print(
                "| set | messages | rewritten | mean Δ | p95 Δ | max Δ "
                "| rules added | rules removed |"
            )
            print("|---|---|---|---|---|---|---|---|")
            for name, messages, chosen in sets:
                started = time.perf_counter()
                table = summary(compare_all(spamd, messages, chosen))
                took = time.perf_counter() - started
                print(
                    f"| {name} | {table['messages']} | {table['rewritten']} "
                    f"| {table['mean_delta']:+.3f} | {table['p95_delta']:+.3f} "
                    f"| {table['max_delta']:+.3f} | {_names(table['added'])} "
                    f"| {_names(table['removed'])} |",
                    flush=True,
                )
                print(f"  ({name}: {took:.1f} s)", file=sys.stderr)
        finally:
            spamd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
