"""Shared fixtures: the third-party corpus, PostgreSQL, keys, configs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from redirector.tokens import Keyring, new_key_line, parse_keys

# Helper modules whose asserts should get pytest's detailed failure output.
pytest.register_assert_rewrite("tests.support.proxy_helpers")

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    dsn = os.environ.get("CLICKRELAY_TEST_PG")
    if not dsn:
        pytest.skip(
            "PostgreSQL tests need $CLICKRELAY_TEST_PG (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        )
    return dsn


@pytest.fixture
def keyring() -> Keyring:
    return parse_keys(new_key_line())


@pytest.fixture
def key_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "keys"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(new_key_line() + "\n")
    yield path
