"""Strict TOML configuration → frozen, typed dataclasses.

Every key is checked: an unknown key, a wrong type or a bad value raises
:class:`~redirector.errors.ConfigError` naming the file, the key and what was expected.
Relative paths in a config file are resolved against the file's directory (so a unit
file can point at ``/etc/clickrelay/clickrelay.toml`` and keep paths next to it); the
quick-start defaults resolve against the working directory.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redirector.config import RedirectorConfig
from redirector.config import parse_hostport as parse_hostport  # shared with the redirector
from redirector.errors import ConfigError

DEFAULT_DATA_DIR = Path("clickrelay-data")
ENV_CONFIG = "CLICKRELAY_CONFIG"


# --- value checks (raise ValueError with "expected …") -------------------------------


def _check_listen(value: str) -> None:
    if value:
        parse_hostport(value)


def _check_base_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("expected a base URL without query or fragment")


def _check_networks(values: tuple[str, ...]) -> None:
    for item in values:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"expected CIDR networks like 127.0.0.0/8, got {item!r}") from None


def _check_positive(value: float) -> None:
    if value <= 0:
        raise ValueError("expected a number > 0")


def _check_non_negative(value: float) -> None:
    if value < 0:
        raise ValueError("expected a number >= 0")


def _check_upstream_url(value: str) -> None:
    if value.startswith("maildir:"):
        if not value[len("maildir:") :]:
            raise ValueError("expected maildir:PATH")
        return
    parts = urlsplit(value)
    if parts.scheme not in ("smtp", "smtp+starttls", "smtps") or not parts.hostname:
        raise ValueError(
            "expected smtp://host:port, smtp+starttls://host:port, smtps://host:port "
            "or maildir:PATH"
        )
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("expected a valid port") from None


def _one_of(*choices: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in choices:
            raise ValueError("expected one of " + ", ".join(repr(c) for c in choices))

    return check


def _check_sender_domains(value: dict[str, str]) -> None:
    for domain, url in value.items():
        if not domain or "@" in domain:
            raise ValueError(f"expected a sender domain as key, got {domain!r}")
        _check_base_url(url)


def check(fn: Callable[[Any], None]) -> dict[str, Any]:
    return {"check": fn}


# --- sections --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyConfig:
    listen: str = field(default="127.0.0.1:2525", metadata=check(_check_listen))
    #: ``/metrics`` of a standalone ``clickrelay proxy``; empty = off. (``serve`` puts
    #: every metric on ``[redirector] admin_listen``.)
    admin_listen: str = field(default="127.0.0.1:8082", metadata=check(_check_listen))
    #: Optional implicit-TLS (SMTPS) listener, e.g. ``0.0.0.0:465``; empty = off.
    tls_listen: str = field(default="", metadata=check(_check_listen))
    #: Name in the greeting and EHLO; empty = the machine's FQDN.
    hostname: str = ""
    trusted_networks: tuple[str, ...] = field(
        default=("127.0.0.0/8", "::1/128"), metadata=check(_check_networks)
    )
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: File of ``user:argon2-hash`` lines (``clickrelay adduser``); empty = no AUTH.
    users_file: Path | None = None
    #: Offer AUTH without TLS to clients on loopback (development only).
    allow_plain_auth_on_loopback: bool = False
    max_message_size: int = field(default=52_428_800, metadata=check(_check_positive))
    max_recipients: int = field(default=1000, metadata=check(_check_positive))
    max_connections: int = field(default=200, metadata=check(_check_positive))
    command_timeout: float = field(default=300.0, metadata=check(_check_positive))
    data_timeout: float = field(default=600.0, metadata=check(_check_positive))
    #: Bare LF / bare CR in DATA: ``reject`` (550 5.6.0) or ``normalize`` to CRLF.
    bare_newline: str = field(default="reject", metadata=check(_one_of("reject", "normalize")))
    #: Failed AUTH attempts allowed per client address per window before 421/454.
    auth_fail_limit: int = field(default=5, metadata=check(_check_positive))
    auth_fail_window: float = field(default=300.0, metadata=check(_check_positive))
    #: SIGTERM: seconds in-flight transactions get to finish.
    shutdown_grace: float = field(default=30.0, metadata=check(_check_non_negative))


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = field(default="maildir:clickrelay-data/outbox", metadata=check(_check_upstream_url))
    pool_size: int = field(default=4, metadata=check(_check_positive))
    connect_timeout: float = field(default=10.0, metadata=check(_check_positive))
    timeout: float = field(default=120.0, metadata=check(_check_positive))
    username: str = ""
    password: str = ""
    #: CA bundle for verifying the upstream's certificate; empty = system CAs.
    ca_file: Path | None = None
    verify_tls: bool = True
    #: EHLO name towards the upstream; empty = the proxy's hostname.
    helo: str = ""


@dataclass(frozen=True)
class TrackingConfig:
    #: Tracked links become ``<base_url>/c/<token>``.
    base_url: str = field(default="http://127.0.0.1:8080", metadata=check(_check_base_url))
    #: What every tracking host must CNAME to; empty = skip the CNAME step.
    cname_target: str = ""
    key_file: Path = DEFAULT_DATA_DIR / "keys"
    #: Also track http(s) URLs in text/plain parts.
    text_links: bool = True
    max_link_length: int = field(default=2048, metadata=check(_check_positive))
    #: Links to these domains (and their subdomains) are never tracked.
    skip_domains: tuple[str, ...] = ()
    #: Per-sender-domain tracking base URLs: ``"example.com" = "https://links.example.com"``.
    sender_domains: dict[str, str] = field(
        default_factory=dict, metadata=check(_check_sender_domains)
    )

    def base_urls(self) -> tuple[str, ...]:
        """Every tracking base URL, default first, without duplicates."""
        seen = dict.fromkeys([self.base_url, *self.sender_domains.values()])
        return tuple(seen)


@dataclass(frozen=True)
class PreflightConfig:
    enabled: bool = True
    #: ``host`` or ``host:port``; empty = the system resolver.
    nameservers: tuple[str, ...] = ()
    #: Upper bound (seconds) of a cached verdict; lower bound is 30 s.
    interval: float = field(default=300.0, metadata=check(_check_positive))
    http_probe: bool = True
    timeout: float = field(default=5.0, metadata=check(_check_positive))
    #: CA bundle for the https probe; empty = system CAs.
    ca_file: Path | None = None


@dataclass(frozen=True)
class DkimDomainConfig:
    selector: str
    key_file: Path
    canonicalization: str = field(
        default="relaxed/relaxed",
        metadata=check(
            _one_of("relaxed/relaxed", "relaxed/simple", "simple/simple", "simple/relaxed")
        ),
    )
    headers: tuple[str, ...] = (
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "list-unsubscribe",
        "list-unsubscribe-post",
    )


@dataclass(frozen=True)
class DkimConfig:
    #: Re-signing keys by signing domain (``d=``): ``[dkim.domains."example.com"]``.
    domains: dict[str, DkimDomainConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class LogConfig:
    level: str = field(default="info", metadata=check(_one_of("debug", "info", "warning", "error")))


@dataclass(frozen=True)
class Config:
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    redirector: RedirectorConfig = field(default_factory=RedirectorConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    log: LogConfig = field(default_factory=LogConfig)
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


def _describe(tp: Any) -> str:
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
        return f"an array of {_describe(typing.get_args(tp)[0])}s"
    if origin is dict:
        return "a table"
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


class _Loader:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def fail(self, key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: expected {expected}, got {value!r}")

    def convert(self, tp: Any, value: Any, key: str) -> Any:
        origin = typing.get_origin(tp)
        if origin in (types.UnionType, typing.Union):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if value == "" and Path in args:
                return None  # "" in TOML means "not set" for optional paths
            return self.convert(args[0], value, key)
        if tp is bool:
            if not isinstance(value, bool):
                raise self.fail(key, _describe(tp), value)
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(key, _describe(tp), value)
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(key, _describe(tp), value)
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise self.fail(key, _describe(tp), value)
            return value
        if tp is Path:
            if not isinstance(value, str) or not value:
                raise self.fail(key, _describe(tp), value)
            path = Path(value).expanduser()
            return path if path.is_absolute() else self.base_dir / path
        if origin is tuple:
            (item_tp, *_rest) = typing.get_args(tp)
            if not isinstance(value, list):
                raise self.fail(key, _describe(tp), value)
            return tuple(self.convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
        if origin is dict:
            _key_tp, item_tp = typing.get_args(tp)
            if not isinstance(value, dict):
                raise self.fail(key, _describe(tp), value)
            return {k: self.convert(item_tp, v, f'{key}."{k}"') for k, v in value.items()}
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if not isinstance(value, dict):
                raise self.fail(key, "a table", value)
            return self.section(tp, value, key)
        raise self.fail(key, _describe(tp), value)  # pragma: no cover - schema bug

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
            converted = self.convert(hints[name], value, key)
            checker = fld.metadata.get("check")
            if checker is not None and converted is not None:
                try:
                    checker(converted)
                except ValueError as exc:
                    raise ConfigError(f"{self.source}: {key}: {exc}, got {value!r}") from None
            kwargs[name] = converted
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
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    loader = _Loader(source, base)
    config = loader.section(Config, table, "")
    config = dataclasses.replace(config, base_dir=base)
    return _resolve_defaults(config, base)


def load_config(path: str | os.PathLike[str]) -> Config:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: config file is not UTF-8") from None
    config = load_config_text(text, str(file), file.resolve().parent)
    return dataclasses.replace(config, source=file.resolve())


def default_config(base_dir: Path | None = None) -> Config:
    """The quick-start defaults, with data under ``./clickrelay-data/``."""
    base = (base_dir or Path.cwd()).resolve()
    return _resolve_defaults(dataclasses.replace(Config(), base_dir=base), base)


def config_from_cli(path: str | None) -> Config:
    """``-c FILE``, else ``$CLICKRELAY_CONFIG``, else the quick-start defaults."""
    if path:
        return load_config(path)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return load_config(env)
    return default_config()
