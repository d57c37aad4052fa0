"""The shape of the tree: imports go down the layers only, and no module imports itself back.

Layers, top to bottom: the product layer ``clickrelay`` (CLI, config loader, supervisor),
``smtp_proxy``, ``redirector``, and the bottom layer ``clickrelay.common``. The rewriting
engine is pure: no SMTP, HTTP or settings imports. Every import counts, including those
inside functions (a lazy import is still a dependency); only ``if TYPE_CHECKING:`` blocks
are left out, since they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("clickrelay", "smtp_proxy", "redirector")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _all_modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for sub in node.orelse:
                yield from _import_nodes(ast.Module(body=[sub], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _import_nodes(node)


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_package = MODULES[module].name == "__init__.py"
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(module: str) -> set[str]:
    """Every module (ours or not) that ``module`` imports, by full dotted name."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        target = _resolve(module, node)
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            out.add(sub if sub in MODULES else target)
    return out


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _layer(name: str) -> int:
    if name == "clickrelay.common" or name.startswith("clickrelay.common."):
        return 0
    if name.split(".")[0] == "redirector":
        return 1
    if name.split(".")[0] == "smtp_proxy":
        return 2
    return 3


LAYER_NAMES = {0: "clickrelay.common", 1: "redirector", 2: "smtp_proxy", 3: "clickrelay"}


def test_the_tree_was_found() -> None:
    assert "smtp_proxy.engine.rewriter" in MODULES
    assert "redirector.tokens" in MODULES
    assert "clickrelay.common.errors" in MODULES
    assert "clickrelay.cli" in imports_of("clickrelay.__main__")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module: str) -> None:
    mine = _layer(module)
    upward = sorted(name for name in imports_of(module) if _ours(name) and _layer(name) > mine)
    assert not upward, f"{module} ({LAYER_NAMES[mine]}) imports a layer above it: {upward}"


PURE_ENGINE_MAY_NOT_IMPORT = (
    "smtp_proxy.smtp",
    "smtp_proxy.upstream",
    "smtp_proxy.preflight",
    "smtp_proxy.service",
    "smtp_proxy.config",
    "aiosmtpd",
    "aiosmtplib",
    "aiohttp",
    "asyncio",
    "dns",
)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("smtp_proxy.engine")))
def test_the_engine_is_pure(module: str) -> None:
    bad = sorted(
        name
        for name in imports_of(module)
        if any(name == p or name.startswith(p + ".") for p in PURE_ENGINE_MAY_NOT_IMPORT)
    )
    assert not bad, f"{module} is part of the pure engine but imports {bad}"


def _cycles() -> list[list[str]]:
    graph = {m: sorted(n for n in imports_of(m) if n in MODULES and n != m) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_lazy_ones_included() -> None:
    assert _cycles() == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    """The check above could fail: a planted two-module cycle is reported."""
    MODULES["smtp_proxy._planted_a"] = tmp_path / "a.py"
    MODULES["smtp_proxy._planted_b"] = tmp_path / "b.py"
    (tmp_path / "a.py").write_text("def f():\n    import smtp_proxy._planted_b\n")
    (tmp_path / "b.py").write_text("import smtp_proxy._planted_a\n")
    try:
        assert ["smtp_proxy._planted_a", "smtp_proxy._planted_b"] in _cycles()
    finally:
        del MODULES["smtp_proxy._planted_a"], MODULES["smtp_proxy._planted_b"]
