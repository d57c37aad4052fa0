"""How fast does the ``clickrelay`` command start? (``--help`` and ``decode`` of one link)

Runs each command line ``--runs`` times as a fresh process and prints the mean wall time
of each and its ratio to ``python -c pass`` measured in the same run (the cost of any
Python process on this machine; absolute numbers vary with the machine and its load).
The target is a ratio of at most :data:`TARGET_RATIO` for both: with ``python -c pass``
near 18 ms, that is the "under 0.1 s" a command line tool should start in, with room.
``decode`` gets a real tracked link, minted with a key file made in a temporary directory.

    .venv/bin/python bench/startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redirector.tokens import ensure_key_file

#: Start-up of ``--help`` and ``decode`` in units of ``python -c pass``, at most.
TARGET_RATIO = 3.0

#: The console script pip installed next to this interpreter (what users run), else -m.
_SCRIPT = Path(sys.executable).parent / "clickrelay"
CLICKRELAY = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "clickrelay"]


def _time_one(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "CLICKRELAY_CONFIG"}
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        keyring = ensure_key_file(keys)
        config = Path(tmp) / "clickrelay.toml"
        config.write_text(f'[tracking]\nkey_file = "{keys}"\n', encoding="utf-8")
        token = keyring.seal(
            "https://example.com/welcome", host="links.example.com", queue_id="Q1", link_index=0
        )
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "clickrelay --help": [*CLICKRELAY, "--help"],
            "clickrelay decode URL": [
                *CLICKRELAY,
                "decode",
                "-c",
                str(config),
                f"https://links.example.com/c/{token}",
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for argv in cases.values():  # warm the file cache (and .pyc files) once
            _time_one(argv, env)
        # Interleaved, so that a burst of load elsewhere hits every case alike.
        for _ in range(args.runs):
            for name, argv in cases.items():
                times[name].append(_time_one(argv, env))
    baseline = statistics.mean(times["python -c pass"])
    print(f"{'command':<24} {'mean ms':>8} {'ratio':>6}   ({args.runs} runs each)")
    for name, samples in times.items():
        mean = statistics.mean(samples)
        verdict = ""
        if name != "python -c pass":
            verdict = "ok" if mean / baseline <= TARGET_RATIO else "over target"
        print(f"{name:<24} {mean * 1000:8.1f} {mean / baseline:6.2f}   {verdict}")
    print(f"target: ratio <= {TARGET_RATIO:g} for --help and decode (vs python -c pass)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
