"""Benchmark: ``clickrelay export`` of 1,000,000 clicks from SQLite — rows/s and peak RSS.

    python bench/export.py [--clicks 1000000] [--db PATH]

Fills a SQLite click store (the real schema, rows inserted in bulk with sqlite3), then
runs, each in its own subprocess so its peak RSS is its own:

(a) baseline: a bare ``SELECT`` of the same columns over the same file, rows iterated
    and dropped (what reading costs with nothing done to the rows);
(b) ``clickrelay export --format jsonl`` to /dev/null;
(c) ``clickrelay export --format csv`` to /dev/null;
(d) ``clickrelay export`` of a tenth of the clicks (``--since``): memory must not scale
    with the count.

It prints rows/s, the ratio to the baseline, and each run's peak RSS (ru_maxrss).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/redirector.py would shadow the redirector package: the repository root goes first.
sys.path.insert(0, str(ROOT))

from redirector.clicks import CLICK_COLUMNS  # noqa: E402
from redirector.store.sqlite import SqliteStore  # noqa: E402
from redirector.store.sqlite.access import time_text  # noqa: E402

CLICKRELAY = Path(sys.executable).parent / "clickrelay"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fill(path: Path, count: int) -> None:
    asyncio.run(_create(path))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    placeholders = ", ".join("?" * len(CLICK_COLUMNS))
    sql = f"INSERT INTO clicks ({', '.join(CLICK_COLUMNS)}) VALUES ({placeholders})"
    meta = json.dumps({"user_id": "12345", "campaign": "spring"})
    batch = 50_000
    for start in range(0, count, batch):
        rows = [
            (
                f"{n:032x}",
                time_text(T0 + timedelta(seconds=n * 10)),
                f"Q{n // 5:010d}",
                n % 5,
                f"https://shop.example.com/product/{n % 997}?utm_source=news",
                f"user{n % 50_000}@example.org",
                "192.0.2.0",
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
                "GET",
                "human" if n % 7 else "bot",
                None if n % 7 else "scanner-agent",
                "spring" if n % 2 else None,
                meta if n % 2 else None,
                time_text(T0 + timedelta(seconds=n * 10 - 3600)),
            )
            for n in range(start, min(start + batch, count))
        ]
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    conn.close()


async def _create(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    await store.close()


BASELINE = """
import resource, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
n = 0
for row in conn.execute("SELECT rowid, * FROM clicks ORDER BY rowid"):
    n += 1
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_of(cmd: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in KiB) of ``cmd``, measured by a small Python parent of its own
    (RUSAGE_CHILDREN there is this one command's peak, not the largest of all runs)."""
    wrapper = (
        "import resource, subprocess, sys, time, os\n"
        "t = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True
    )
    seconds, rss = out.stdout.split()
    return float(seconds), int(rss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="reuse (or create) this SQLite file")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="crbench"))
    db = args.db or workdir / "clicks.sqlite3"
    if not db.exists():
        t = time.perf_counter()
        fill(db, args.clicks)
        print(
            f"filled {args.clicks:,} clicks in {time.perf_counter() - t:.1f}s"
            f" ({db.stat().st_size / 1e6:.0f} MB)"
        )
    config = workdir / "clickrelay.toml"
    config.write_text(f'[redirector]\nstore = "sqlite:{db}"\n')
    count = args.clicks
    tenth_since = (T0 + timedelta(seconds=count * 9)).isoformat()
    runs = [
        ("baseline SELECT", [sys.executable, "-c", BASELINE, str(db)], count),
        (
            "export jsonl",
            [str(CLICKRELAY), "export", "-c", str(config), "--format", "jsonl"],
            count,
        ),
        ("export csv", [str(CLICKRELAY), "export", "-c", str(config), "--format", "csv"], count),
        (
            "export jsonl 1/10",
            [
                str(CLICKRELAY),
                "export",
                "-c",
                str(config),
                "--format",
                "jsonl",
                "--since",
                tenth_since,
            ],
            count // 10,
        ),
    ]
    base_rate = 0.0
    print(
        f"{'run':<20} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'x baseline':>10} {'peak RSS':>9}"
    )
    for name, cmd, rows in runs:
        seconds, rss = peak_of(cmd)
        rate = rows / seconds
        if not base_rate:
            base_rate = rate
        print(
            f"{name:<20} {rows:>10,} {seconds:>8.1f} {rate:>10,.0f} {rate / base_rate:>10.2f}"
            f" {rss / 1024:>7.0f}MB"
        )


if __name__ == "__main__":
    main()
