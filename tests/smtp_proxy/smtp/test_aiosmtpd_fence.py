"""aiosmtpd's private names are used in smtp_proxy/smtp/aiosmtpd_compat.py only.

Every module of clickrelay/, smtp_proxy/ and redirector/ is parsed; a use is an
attribute (``x._reset_timeout``), a definition (``def _create_session``) or a string
(``getattr(x, "_handler_coroutine")``) of a fenced name. The stream names ``_reader``,
``_writer`` and ``_limit`` are common enough that they count only in modules that import
aiosmtpd or the compat module (where they can only mean aiosmtpd's).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtp_proxy.smtp.aiosmtpd_compat import FENCED_NAMES

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("clickrelay", "smtp_proxy", "redirector")
COMPAT = ROOT / "smtp_proxy" / "smtp" / "aiosmtpd_compat.py"
STREAM_NAMES = frozenset({"_reader", "_writer", "_limit"})


def _talks_to_aiosmtpd(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        if any(n.split(".")[0] == "aiosmtpd" or n.endswith("aiosmtpd_compat") for n in names):
            return True
    return False


def fenced_uses(source: str) -> Iterator[tuple[int, str]]:
    """``(line, name)`` for every use of a fenced aiosmtpd name in ``source``."""
    tree = ast.parse(source)
    names = FENCED_NAMES if _talks_to_aiosmtpd(tree) else FENCED_NAMES - STREAM_NAMES
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            found = node.attr
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found = node.name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found = node.value
        else:
            continue
        if found in names:
            yield node.lineno, found


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_the_tree_was_found() -> None:
    modules = _modules()
    assert COMPAT in modules
    assert ROOT / "smtp_proxy" / "smtp" / "protocol.py" in modules


@pytest.mark.parametrize(
    "path", [p for p in _modules() if p != COMPAT], ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_module_but_the_compat_one_uses_aiosmtpds_private_names(path: Path) -> None:
    uses = [
        f"{path.relative_to(ROOT)}:{line} uses {name!r}"
        for line, name in fenced_uses(path.read_text(encoding="utf-8"))
    ]
    assert uses == [], "only smtp_proxy/smtp/aiosmtpd_compat.py may touch aiosmtpd's insides"


def test_the_compat_module_is_where_they_all_are() -> None:
    """The scan finds every fenced name in the one module allowed to use them."""
    found = {name for _, name in fenced_uses(COMPAT.read_text(encoding="utf-8"))}
    assert found == FENCED_NAMES


def test_the_scan_finds_a_planted_use() -> None:
    planted = (
        "from aiosmtpd.smtp import SMTP\n"
        "class P(SMTP):\n"
        "    def _create_session(self): ...\n"
        "    async def go(self):\n"
        "        self._reset_timeout(5)\n"
        "        self._reader._limit = 10\n"
        "        return getattr(self, '_handler_coroutine')\n"
    )
    assert sorted(fenced_uses(planted)) == [
        (3, "_create_session"),
        (5, "_reset_timeout"),
        (6, "_limit"),
        (6, "_reader"),
        (7, "_handler_coroutine"),
    ]
    via_compat = "from smtp_proxy.smtp import aiosmtpd_compat\nx = y._writer\n"
    assert list(fenced_uses(via_compat)) == [(2, "_writer")]


def test_stream_names_of_our_own_do_not_count_away_from_aiosmtpd() -> None:
    own = "class Pool:\n    def __init__(self):\n        self._reader = None\n"
    assert list(fenced_uses(own)) == []
    assert list(fenced_uses("def f(s):\n    s._set_post_data_state()\n")) == [
        (2, "_set_post_data_state")
    ]
