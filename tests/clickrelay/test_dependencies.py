"""pyproject.toml's runtime dependencies: each says why, each is bounded both ways, and
the versions installed here (the ones the suite just tested) are inside the bounds."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PROJECT = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
OPTIONAL = [Requirement(r) for r in PROJECT["optional-dependencies"]["fast"]]
#: We borrow their private names: a new minor release may move them.
MINOR_BOUND = {"aiosmtpd", "aiosmtplib"}


def _commented(requirement: str) -> bool:
    """The requirement's line in pyproject.toml has a comment line right above it."""
    lines = PYPROJECT.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == f'"{requirement}",')
    return lines[at - 1].strip().startswith("#")


def test_there_are_dependencies() -> None:
    assert {r.name for r in RUNTIME} >= {"aiosmtpd", "aiosmtplib", "aiohttp"}


@pytest.mark.parametrize("req", RUNTIME + OPTIONAL, ids=lambda r: r.name)
def test_bounded_both_ways_and_installed_inside(req: Requirement) -> None:
    operators = {spec.operator for spec in req.specifier}
    assert operators == {">=", "<"}, f"{req}: want a >= floor and a < bound"
    (upper,) = (Version(s.version) for s in req.specifier if s.operator == "<")
    (lower,) = (Version(s.version) for s in req.specifier if s.operator == ">=")
    if req.name in MINOR_BOUND:
        assert upper.release[:2] == (lower.major, lower.minor + 1), (
            f"{req}: bound below the next minor release (we borrow private names)"
        )
    installed = version(req.name)
    assert req.specifier.contains(installed), f"installed {req.name} {installed} not in {req}"


@pytest.mark.parametrize("raw", PROJECT["dependencies"])
def test_each_dependency_says_why(raw: str) -> None:
    assert _commented(raw), f"{raw}: no comment right above it in pyproject.toml"


def test_floors_carry_the_fixes_we_rely_on() -> None:
    floors = {
        r.name: Version(next(s.version for s in r.specifier if s.operator == ">=")) for r in RUNTIME
    }
    assert floors["aiosmtplib"] >= Version("5.1.3")
    assert floors["aiosmtpd"] >= Version("1.4.6")
    assert floors["aiohttp"] >= Version("3.14.4")
