"""Fixtures of the reliability suite and the hook that feeds ``bench/reliability.py``.

Every test here is marked ``reliability`` (module-level ``pytestmark``). When
``$CLICKRELAY_RELIABILITY_RESULTS`` names a file, each test's outcome and each
scenario's :class:`~tests.reliability.harness.Figures` are appended to it as JSON lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import RESULTS_ENV, Figures, SinkProcess, sink_process


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[list[Figures]]:
    """Append :class:`Figures` rows; they are written out when the test ends (even failed)."""
    rows: list[Figures] = []
    yield rows
    for row in rows:
        row.write(request.node.nodeid)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SinkProcess]:
    """The upstream MTA as a killable process (see ``sink_proc.py``)."""
    with sink_process(tmp_path / "sink") as proc:
        yield proc


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        reason = ""
        if getattr(report, "wasxfail", ""):
            reason = str(report.wasxfail)
        elif report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2])
        elif report.failed:
            reason = str(report.longrepr).splitlines()[-1][:300] if report.longrepr else ""
        row = {
            "kind": "outcome",
            "nodeid": report.nodeid,
            "outcome": report.outcome,
            "duration": round(report.duration, 2),
            "reason": reason,
            "xfail": bool(getattr(report, "wasxfail", "")),
        }
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
