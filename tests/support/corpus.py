"""The third-party corpus of real mail and HTML (``$CLICKRELAY_CORPUS``), when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def corpus_dir() -> Path | None:
    env = os.environ.get("CLICKRELAY_CORPUS")
    path = Path(env) if env else ROOT.parent / "shared" / "corpus"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def corpus() -> Path:
    path = corpus_dir()
    if path is None:
        if os.environ.get("CLICKRELAY_CI"):
            pytest.fail("CLICKRELAY_CORPUS is set in CI but the corpus is missing")
        pytest.skip("corpus not found: set $CLICKRELAY_CORPUS or put it at ../shared/corpus")
    return path


def corpus_eml_files() -> list[Path]:
    path = corpus_dir()
    return sorted(path.glob("eml/**/*.eml")) if path else []


def corpus_html_files() -> list[Path]:
    path = corpus_dir()
    return sorted(path.glob("html/**/*.html")) if path else []
