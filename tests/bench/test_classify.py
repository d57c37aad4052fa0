"""The classification replay (bench/classify.py) at its small size, as CI runs it.

Real requests to a real redirector; the figures it prints are the README's table at the
large size. Here it must run clean (every request answered 302, every click stored and
settled) and tell scanners from people: the bounds are loose because a loaded CI machine
stretches and squeezes the replayed gaps; the bench itself prints the exact figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Scenarios where a scanner walks the whole message: the walk rules must catch it.
WALKING = ("safelinks", "proofpoint", "mimecast", "barracuda", "unlisted-scanner", "same-second")


def test_the_replay_tells_scanners_from_people() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "classify.py"),
            "--size",
            "small",
            "--json",
            "--compress-gap",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["errors"] == 0
    scores = result["scores"]
    assert sum(s["clicks"] for s in scores.values()) == result["clicks"] > 100
    for name in WALKING:
        s = scores[name]
        assert s["bot_true"] >= 0.9 * s["bot_total"], (name, s, result["misses"])
    humans = sum(s["human_total"] for s in scores.values())
    humans_right = sum(s["human_true"] for s in scores.values())
    assert humans_right >= 0.95 * humans, result["misses"]
