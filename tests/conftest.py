"""Fixtures every test can ask for: PostgreSQL, keys, and (through ``pytest_plugins``) the
corpus, click stores, DNS server, SMTP sinks, proxy lab and spamd defined in ``tests/support``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Helper modules whose asserts should get pytest's detailed failure output.
pytest.register_assert_rewrite("tests.support", "tests.reliability")

from redirector.tokens import Keyring, new_key_line, parse_keys  # noqa: E402

pytest_plugins = [
    "tests.support.click_stores",
    "tests.support.corpus",
    "tests.support.dns_server",
    "tests.support.proxy_helpers",
    "tests.support.smtp_sink",
    "tests.support.spamd",
]


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
