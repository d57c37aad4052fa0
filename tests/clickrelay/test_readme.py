"""The README stays true: its configuration reference covers every key of
conf/clickrelay.toml and of the config schema, its commands are the ones CI runs, and its
snippets are valid. (tests/clickrelay/test_quickstart.py runs the walk-through itself.)"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clickrelay.cli import COMMANDS
from clickrelay.config import Config

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
INSTALL_AND_SERVE = (
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/clickrelay serve"
)


def toml_keys(table: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(section, key)`` for every leaf key; tables of user-chosen names (sender
    domains, DKIM domains) count as one key."""
    for key, value in table.items():
        if isinstance(value, dict) and key not in ("sender_domains", "domains"):
            yield from toml_keys(value, f"{prefix}{key}.")
        else:
            yield prefix.rstrip("."), key


def schema_keys(cls: type[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for fld in dataclasses.fields(cls):
        if fld.name in ("source", "base_dir"):
            continue
        default = fld.default_factory() if callable(fld.default_factory) else fld.default
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            yield from schema_keys(type(default), f"{prefix}{fld.name}.")
        else:
            yield prefix.rstrip("."), fld.name


def reference_section(section: str) -> str:
    """The README text under the ``### `[section]``` heading of the reference."""
    top = section.split(".")[0]
    match = re.search(rf"^### `\[{re.escape(top)}\]`.*?(?=^### |^## )", README, re.M | re.S)
    assert match, f"README has no reference section for [{top}]"
    return match.group(0)


CONF_KEYS = sorted(
    set(toml_keys(tomllib.loads((ROOT / "conf" / "clickrelay.toml").read_text("utf-8"))))
)
SCHEMA_KEYS = sorted(set(schema_keys(Config)))


def test_the_lists_are_not_empty() -> None:
    assert len(CONF_KEYS) > 50
    assert ("proxy", "shutdown_grace") in SCHEMA_KEYS
    assert ("tracking", "sender_domains") in SCHEMA_KEYS


@pytest.mark.parametrize(("section", "key"), CONF_KEYS, ids=[f"{s}.{k}" for s, k in CONF_KEYS])
def test_every_key_of_the_example_config_is_documented(section: str, key: str) -> None:
    assert f"`{key}`" in reference_section(section) or f"[{section}.{key}]" in README


@pytest.mark.parametrize(("section", "key"), SCHEMA_KEYS, ids=[f"{s}.{k}" for s, k in SCHEMA_KEYS])
def test_every_key_of_the_schema_is_documented(section: str, key: str) -> None:
    if section == "dkim":
        assert "[dkim.domains." in README
        return
    text = reference_section(section)
    assert f"`{key}`" in text or f"[{section}.{key}]" in text


def test_documented_defaults_match_the_schema() -> None:
    """Where the reference states one default for one key, it is the real default."""
    defaults = Config()
    checked = 0
    for section, key in SCHEMA_KEYS:
        if section == "dkim":
            continue
        pattern = rf"^\| `{re.escape(key)}` \| `([^`]*)` \|"
        row = re.search(pattern, reference_section(section), re.M)
        if row is None:
            continue
        value = getattr(getattr(defaults, section), key)
        shown = row.group(1)
        if isinstance(value, bool):
            expected = "true" if value else "false"
        elif isinstance(value, str):
            expected = f'"{value}"'
        elif isinstance(value, tuple):
            expected = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        elif value is None:
            expected = '""'
        elif isinstance(value, dict):
            expected = "{}"
        else:
            expected = str(value)
        if isinstance(value, Path):
            expected = f'"{value}"'
        assert shown == expected, f"{section}.{key}: README says {shown}, default is {expected}"
        checked += 1
    assert checked > 40


def test_the_two_commands() -> None:
    assert INSTALL_AND_SERVE in README
    assert "bash .ci/run" in README
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pytest" in ci


def test_every_command_is_listed() -> None:
    for name in COMMANDS:
        assert f"clickrelay {name}" in README, name


def test_python_snippet_compiles_and_uses_the_quickstart_port() -> None:
    (snippet,) = re.findall(r"```python\n(.*?)```", README, re.S)
    compile(snippet, "README.md", "exec")
    assert '"127.0.0.1", 2525' in snippet
    assert len(snippet.strip().splitlines()) <= 6


def test_referenced_files_exist() -> None:
    for path in re.findall(r"`((?:systemd|docs|conf|tests|bench)/[\w./-]*)`", README):
        assert (ROOT / path.rstrip("/")).exists(), path


def test_postfix_doc_shows_the_tested_filter_setup() -> None:
    """docs/postfix.md's master.cf options are the ones tests/clickrelay/test_postfix.py runs."""
    from tests.support.postfix_harness import FILTER_MASTER_CF

    doc = (ROOT / "docs" / "postfix.md").read_text(encoding="utf-8")
    options = [line.strip() for line in FILTER_MASTER_CF.splitlines() if "-o " in line]
    assert len(options) >= 10
    for option in options:
        if option.startswith("-o content_filter=clickrelay:"):
            assert "-o content_filter=clickrelay:[127.0.0.1]:10025" in doc
        else:
            assert option in doc, option
