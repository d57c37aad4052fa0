"""Reading a config file up to typed values, without the section schema.

Which file (``-c FILE``, else ``$CLICKRELAY_CONFIG``), its TOML tables, and one key's
value converted to a Python type and checked, with the messages every command gives.
:mod:`clickrelay.config` builds the whole checked configuration on this; a command that
needs a few keys only (``clickrelay decode``) reads them through it too, and so skips
importing every service's section dataclasses.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clickrelay.common.errors import ConfigError

ENV_CONFIG = "CLICKRELAY_CONFIG"


def config_path(path: str | None) -> str | None:
    """``-c FILE``, else ``$CLICKRELAY_CONFIG``, else None (the quick-start defaults)."""
    return path or os.environ.get(ENV_CONFIG) or None


def parse_text(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None


def read_file(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """The text of a config file and the directory its relative paths start from."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: config file is not UTF-8") from None
    return text, file.resolve().parent


def describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is Path:
        return "a path string"
    if origin is tuple:
        return f"an array of {describe(typing.get_args(tp)[0])}s"
    if origin is dict:
        return "a table"
    if origin in (types.UnionType, typing.Union):
        return " or ".join(describe(a) for a in typing.get_args(tp) if a is not type(None))
    if is_section(tp):
        return "a table"
    return str(tp)


def is_section(tp: Any) -> bool:
    """Whether ``tp`` is a section dataclass (what :func:`dataclasses.is_dataclass` asks,
    without importing :mod:`dataclasses` for readers that have none)."""
    return isinstance(tp, type) and hasattr(tp, "__dataclass_fields__")


class ValueReader:
    """Converts and checks the values of one config source (its name starts messages)."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def fail(self, key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: expected {expected}, got {value!r}")

    def table(self, parent: dict[str, Any], key: str) -> dict[str, Any]:
        """The sub-table ``key`` of ``parent`` (empty when absent)."""
        value = parent.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "a table", value)
        return value

    def value(
        self, tp: Any, value: Any, key: str, checker: Callable[[Any], None] | None = None
    ) -> Any:
        """``value`` as ``tp``, then passed to ``checker`` (a field's ``check``)."""
        converted = self.convert(tp, value, key)
        if checker is not None and converted is not None:
            try:
                checker(converted)
            except ValueError as exc:
                raise ConfigError(f"{self.source}: {key}: {exc}, got {value!r}") from None
        return converted

    def convert(self, tp: Any, value: Any, key: str) -> Any:
        origin = typing.get_origin(tp)
        if origin in (types.UnionType, typing.Union):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if value == "" and Path in args:
                return None  # "" in TOML means "not set" for optional paths
            return self.convert(args[0], value, key)
        if tp is bool:
            if not isinstance(value, bool):
                raise self.fail(key, describe(tp), value)
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(key, describe(tp), value)
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(key, describe(tp), value)
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise self.fail(key, describe(tp), value)
            return value
        if tp is Path:
            if not isinstance(value, str) or not value:
                raise self.fail(key, describe(tp), value)
            path = Path(value).expanduser()
            return path if path.is_absolute() else self.base_dir / path
        if origin is tuple:
            (item_tp, *_rest) = typing.get_args(tp)
            if not isinstance(value, list):
                raise self.fail(key, describe(tp), value)
            return tuple(self.convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
        if origin is dict:
            _key_tp, item_tp = typing.get_args(tp)
            if not isinstance(value, dict):
                raise self.fail(key, describe(tp), value)
            return {k: self.convert(item_tp, v, f'{key}."{k}"') for k, v in value.items()}
        if is_section(tp):
            if not isinstance(value, dict):
                raise self.fail(key, "a table", value)
            return self.section(tp, value, key)
        raise self.fail(key, describe(tp), value)  # pragma: no cover - schema bug

    def section(self, cls: type[Any], table: dict[str, Any], prefix: str) -> Any:
        raise NotImplementedError  # pragma: no cover - the schema loader's
