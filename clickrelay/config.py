"""Strict TOML configuration → frozen, typed dataclasses.

Every key is checked: an unknown key, a wrong type or a bad value raises
:class:`~clickrelay.common.errors.ConfigError` naming the file, the key and what was expected.
Relative paths in a config file are resolved against the file's directory (so a unit
file can point at ``/etc/clickrelay/clickrelay.toml`` and keep paths next to it); the
quick-start defaults resolve against the working directory.

The sections themselves belong to the services that read them
(:mod:`smtp_proxy.config`, :mod:`redirector.config`); this module composes them and
does the file and environment I/O.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clickrelay.common.errors import ConfigError
from clickrelay.common.validators import check, one_of
from clickrelay.config_reading import ENV_CONFIG, ValueReader, config_path, parse_text, read_file
from redirector.config import AcmeConfig, RedirectorConfig
from redirector.webhooks.config import WebhookConfig, validate_webhooks
from smtp_proxy.config import (
    DEFAULT_DATA_DIR,
    DkimConfig,
    PreflightConfig,
    ProxyConfig,
    TrackingConfig,
    UpstreamConfig,
)

__all__ = ["DEFAULT_DATA_DIR", "ENV_CONFIG", "Config", "LogConfig", "config_from_cli"]


@dataclass(frozen=True)
class LogConfig:
    level: str = field(default="info", metadata=check(one_of("debug", "info", "warning", "error")))


@dataclass(frozen=True)
class Config:
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    redirector: RedirectorConfig = field(default_factory=RedirectorConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    log: LogConfig = field(default_factory=LogConfig)
    #: ``[[webhooks]]``: endpoints every click is POSTed to (signed, at least once).
    webhooks: tuple[WebhookConfig, ...] = ()
    #: The file this came from; None for the quick-start defaults.
    source: Path | None = None
    #: Directory relative paths were resolved against.
    base_dir: Path = Path(".")

    @property
    def data_dir(self) -> Path:
        return self.tracking.key_file.parent

    @property
    def maildir(self) -> Path | None:
        url = self.upstream.url
        return Path(url[len("maildir:") :]) if url.startswith("maildir:") else None


# --- the strict loader ------------------------------------------------------------------


class _Loader(ValueReader):
    def section(self, cls: type[Any], table: Mapping[str, Any], prefix: str) -> Any:
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = {}
        for name, value in table.items():
            key = f"{prefix}.{name}" if prefix else name
            fld = fields.get(name)
            if fld is None or name in ("source", "base_dir"):
                known = ", ".join(sorted(n for n in fields if n not in ("source", "base_dir")))
                raise ConfigError(f"{self.source}: {key}: unknown key (known keys: {known})")
            kwargs[name] = self.value(hints[name], value, key, fld.metadata.get("check"))
        for name, fld in fields.items():
            missing = (
                fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING
            )
            if missing and name not in kwargs:
                key = f"{prefix}.{name}" if prefix else name
                raise ConfigError(f"{self.source}: {key}: required key is missing")
        return cls(**kwargs)


def _resolve_defaults(config: Config, base_dir: Path) -> Config:
    """Resolve the built-in relative default paths against ``base_dir``."""

    def fix(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else base_dir / path

    tracking = config.tracking
    key_file = fix(tracking.key_file)
    assert key_file is not None
    upstream = config.upstream
    if upstream.url.startswith("maildir:"):
        mpath = Path(upstream.url[len("maildir:") :]).expanduser()
        upstream = dataclasses.replace(upstream, url=f"maildir:{fix(mpath)}")
    redirector = config.redirector
    if redirector.store.startswith("sqlite:"):
        spath = Path(redirector.store[len("sqlite:") :]).expanduser()
        redirector = dataclasses.replace(redirector, store=f"sqlite:{fix(spath)}")
    return dataclasses.replace(
        config,
        tracking=dataclasses.replace(tracking, key_file=key_file),
        upstream=upstream,
        redirector=redirector,
    )


def load_config_text(text: str, source: str = "<string>", base_dir: Path | None = None) -> Config:
    base = (base_dir or Path.cwd()).resolve()
    table = parse_text(text, source)
    loader = _Loader(source, base)
    config = loader.section(Config, table, "")
    try:
        validate_webhooks(config.webhooks)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    config = dataclasses.replace(config, base_dir=base)
    _check_across_sections(config, source)
    return _resolve_defaults(config, base)


def _check_across_sections(config: Config, source: str) -> None:
    """Rules that tie two sections together (each section checks its own keys)."""
    if config.acme.enabled and not config.redirector.https_listen:
        raise ConfigError(
            f"{source}: acme.enabled: ACME certificates need an HTTPS listener: set "
            '[redirector] https_listen (e.g. "0.0.0.0:443") or [acme] enabled = false'
        )


def load_config(path: str | os.PathLike[str]) -> Config:
    text, base_dir = read_file(path)
    config = load_config_text(text, str(Path(path)), base_dir)
    return dataclasses.replace(config, source=Path(path).resolve())


def default_config(base_dir: Path | None = None) -> Config:
    """The quick-start defaults, with data under ``./clickrelay-data/``."""
    base = (base_dir or Path.cwd()).resolve()
    return _resolve_defaults(dataclasses.replace(Config(), base_dir=base), base)


def config_from_cli(path: str | None) -> Config:
    """``-c FILE``, else ``$CLICKRELAY_CONFIG``, else the quick-start defaults."""
    chosen = config_path(path)
    return load_config(chosen) if chosen else default_config()
