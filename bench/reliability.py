"""Run the reliability suite and print its figures as a table.

    python bench/reliability.py            # the FULL run (CLICKRELAY_FULL=1), < 15 min
    python bench/reliability.py --quick    # the quick subset that CI runs (about a minute)
    python bench/reliability.py --markdown # the same table as Markdown (for docs/reliability.md)
    python bench/reliability.py -- -k proxy   # extra arguments after -- go to pytest

It runs ``pytest -m reliability tests/reliability`` in a subprocess with
``$CLICKRELAY_RELIABILITY_RESULTS`` pointing at a JSON-lines file; each scenario appends
its counts there (``tests/reliability/harness.py: Figures``) and the suite's conftest
appends every test's outcome. The table shows, per scenario: the load, the faults
injected, messages sent/delivered/refused(4xx, retried)/lost/duplicated and clicks
served/recorded/lost, and whether the scenario's test passed. Scenarios that could not
run are listed with the reason — nothing is silently left out.

PostgreSQL scenarios need ``$CLICKRELAY_TEST_PG`` (default here:
``postgresql://postgres@127.0.0.1:5432/test``, as in ``.ci/run``), and the corpus
``$CLICKRELAY_CORPUS`` (default ``../shared/corpus``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FULL_BUDGET = 15 * 60  # seconds: the full run must stay under this

COLUMNS = [
    ("scenario", "scenario"),
    ("load", "load"),
    ("faults", "faults injected"),
    ("sent", "sent"),
    ("delivered", "delivered"),
    ("refused", "refused"),
    ("lost", "lost"),
    ("duplicated", "dup"),
    ("clicks_served", "clicks served"),
    ("clicks_recorded", "recorded"),
    ("clicks_lost", "clicks lost"),
    ("result", "result"),
]


def machine() -> str:
    uname = " ".join(platform.uname())
    return f"{os.cpu_count()} CPUs (nproc), {uname}, Python {platform.python_version()}"


def run_suite(full: bool, extra: list[str], results: Path) -> tuple[int, float]:
    env = dict(os.environ)
    env["CLICKRELAY_RELIABILITY_RESULTS"] = str(results)
    env.setdefault("CLICKRELAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    env.setdefault("CLICKRELAY_CORPUS", str(ROOT.parent / "shared" / "corpus"))
    if full:
        env["CLICKRELAY_FULL"] = "1"
    else:
        env.pop("CLICKRELAY_FULL", None)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-W",
        "error",
        "-q",
        "-m",
        "reliability",
        "-p",
        "no:cacheprovider",
        "tests/reliability",
        *extra,
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=FULL_BUDGET + 120)
    return proc.returncode, time.monotonic() - started


def load_rows(results: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    figures: list[dict[str, Any]] = []
    outcomes: dict[str, dict[str, Any]] = {}
    if not results.exists():
        return figures, outcomes
    for line in results.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["kind"] == "figures":
            figures.append(row)
        else:
            outcomes[row["nodeid"]] = row
    return figures, outcomes


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return str(value)


def table(rows: list[list[str]], markdown: bool) -> str:
    headers = [title for _, title in COLUMNS]
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
        return "\n".join(out)
    widths = [
        min(max(len(h), *(len(r[i]) for r in rows)) if rows else len(h), 48)
        for i, h in enumerate(headers)
    ]

    def fmt(row: list[str]) -> str:
        return "  ".join(c[:w].ljust(w) for c, w in zip(row, widths, strict=True))

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def report(
    figures: list[dict[str, Any]], outcomes: dict[str, dict[str, Any]], markdown: bool
) -> str:
    rows: list[list[str]] = []
    for fig in figures:
        outcome = outcomes.get(fig["nodeid"], {})
        result = outcome.get("outcome", "?")
        if outcome.get("xfail"):
            result = "xfail (known bug)"
        values = {**fig, "result": result}
        rows.append([cell(values.get(key)) for key, _ in COLUMNS])
    parts = [table(rows, markdown)]
    notes = [f"- {fig['scenario']}: {fig['notes']}" for fig in figures if fig.get("notes")]
    if notes:
        parts.append("\nNotes:\n" + "\n".join(notes))
    with_figures = {fig["nodeid"] for fig in figures}
    others = [o for nid, o in sorted(outcomes.items()) if nid not in with_figures]
    passed = [o for o in others if o["outcome"] == "passed"]
    xfailed = [o for o in outcomes.values() if o.get("xfail")]
    not_run = [o for o in outcomes.values() if o["outcome"] == "skipped" and not o.get("xfail")]
    failed = [o for o in outcomes.values() if o["outcome"] == "failed"]
    parts.append(
        f"\nTests: {sum(o['outcome'] == 'passed' for o in outcomes.values())} passed, "
        f"{len(failed)} failed, {len(xfailed)} xfailed (known bugs), {len(not_run)} skipped "
        f"({len(passed)} passing checks without a figures row, e.g. protocol attacks)."
    )
    if not_run:
        parts.append("Not run:\n" + "\n".join(f"- {o['nodeid']}: {o['reason']}" for o in not_run))
    if xfailed:
        parts.append(
            "Known bugs (xfail, strict):\n"
            + "\n".join(f"- {o['nodeid']}: {o['reason']}" for o in xfailed)
        )
    if failed:
        parts.append("FAILED:\n" + "\n".join(f"- {o['nodeid']}: {o['reason']}" for o in failed))
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the quick subset (as in CI)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--results", type=Path, help="keep the JSON-lines results here")
    parser.add_argument(
        "--render", type=Path, metavar="RESULTS", help="only print the table of an earlier run"
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    if args.render:
        figures, outcomes = load_rows(args.render)
        print(report(figures, outcomes, args.markdown))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results or Path(tmp) / "results.jsonl"
        results.unlink(missing_ok=True)
        code, elapsed = run_suite(not args.quick, args.pytest_args, results)
        figures, outcomes = load_rows(results)
    kind = "quick subset" if args.quick else "FULL run"
    print()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"clickrelay reliability suite — {kind}, {when}")
    print(f"machine: {machine()}")
    print(f"wall time: {elapsed:.0f} s (budget {FULL_BUDGET // 60} min for the full run)")
    print()
    print(report(figures, outcomes, args.markdown))
    if not args.quick and elapsed > FULL_BUDGET:
        print(f"\nOVER BUDGET: the full run took {elapsed:.0f} s > {FULL_BUDGET} s")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
