"""Configs for tests: one TOML writer and the config builders every suite shares.

* :func:`config_text` — TOML from ``{"proxy": {"listen": "127.0.0.1:0"}, …}``; a dict
  value becomes a sub-table (``[tracking.sender_domains]``).
* :func:`proxy_config` / :func:`proxy_config_text` — a proxy on ``127.0.0.1:0`` relaying
  to a given upstream, preflight off unless asked for.
* :func:`preflight_config` / :func:`preflight_config_text` — preflight asking a test DNS
  server.
* :func:`write_config` — a file like the quick start's, for ``clickrelay`` subprocesses;
  :func:`write_redirector_config` — one for ``clickrelay redirector`` alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clickrelay.config import Config, load_config_text

#: The tracking base URL of proxy configs (nothing listens there: links are decoded).
BASE_URL = "http://127.0.0.1:8080"
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_value(value: Any) -> str:
    """``value`` as a TOML value; anything without a TOML form is a TypeError."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def config_text(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML for ``sections``; a key whose value is a mapping becomes a sub-table."""
    out: list[str] = []

    def table(name: str, items: Mapping[str, Any]) -> None:
        out.append(f"[{name}]")
        subtables = {k: v for k, v in items.items() if isinstance(v, Mapping)}
        out.extend(
            f"{k if BARE_KEY.fullmatch(k) else toml_value(k)} = {toml_value(v)}"
            for k, v in items.items()
            if k not in subtables
        )
        for key, sub in subtables.items():
            table(f"{name}.{key if BARE_KEY.fullmatch(key) else toml_value(key)}", sub)

    for name, items in sections.items():
        table(name, items)
    return "\n".join(out) + "\n"


def proxy_config_text(
    upstream_url: str,
    key_file: Path,
    *,
    preflight: bool | Mapping[str, Any] = False,
    upstream: Mapping[str, Any] | None = None,
    tracking: Mapping[str, Any] | None = None,
    dkim: Mapping[str, Any] | None = None,
    **proxy: Any,
) -> str:
    """TOML for a proxy on 127.0.0.1:0 relaying to ``upstream_url``; ``proxy`` keys
    override the ``[proxy]`` table, ``upstream``/``tracking`` update theirs, ``dkim`` is
    the whole ``[dkim]`` table (``{"domains": {"example.com": {…}}}``).

    ``preflight=False`` (default) switches preflight off, which means "rewriting
    allowed" for a proxy without a monitor; a mapping is the whole ``[preflight]`` table.
    """
    proxy_table: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin_listen": "",
        "hostname": "proxy.test",
        "trusted_networks": ["127.0.0.1/32"],
        "command_timeout": 30,
        "data_timeout": 30,
        "shutdown_grace": 5,
        **proxy,
    }
    upstream_table = {
        "url": upstream_url,
        "pool_size": 2,
        "connect_timeout": 5,
        "timeout": 10,
        **(upstream or {}),
    }
    tracking_table = {"base_url": BASE_URL, "key_file": key_file, **(tracking or {})}
    preflight_table = preflight if isinstance(preflight, Mapping) else {"enabled": preflight}
    return config_text(
        {
            "proxy": proxy_table,
            "upstream": upstream_table,
            "tracking": tracking_table,
            "preflight": preflight_table,
            **({"dkim": dkim} if dkim else {}),
        }
    )


def proxy_config(tmp_path: Path, upstream_url: str, key_file: Path, **settings: Any) -> Config:
    """The :class:`Config` of :func:`proxy_config_text` (same keyword arguments)."""
    text = proxy_config_text(upstream_url, key_file, **settings)
    return load_config_text(text, "<test>", tmp_path)


def preflight_config_text(
    base_url: str,
    *,
    nameserver: str,
    cname_target: str = "",
    http_probe: bool = True,
    timeout: float = 2.0,
    interval: float = 300.0,
    ca_file: Path | None = None,
    sender_domains: dict[str, str] | None = None,
    key_file: Path | None = None,
    enabled: bool = True,
) -> str:
    """TOML for a config whose preflight asks ``nameserver`` (``host:port``)."""
    tracking: dict[str, Any] = {"base_url": base_url, "cname_target": cname_target}
    if key_file is not None:
        tracking["key_file"] = key_file
    if sender_domains:
        tracking["sender_domains"] = sender_domains
    preflight = {
        "enabled": enabled,
        "nameservers": [nameserver],
        "http_probe": http_probe,
        "timeout": timeout,
        "interval": interval,
        "ca_file": ca_file or "",
    }
    return config_text({"tracking": tracking, "preflight": preflight})


def preflight_config(base_url: str, *, nameserver: str, **kwargs: Any) -> Config:
    """A :class:`Config` from :func:`preflight_config_text` (same keyword arguments)."""
    text = preflight_config_text(base_url, nameserver=nameserver, **kwargs)
    return load_config_text(text, "<test>", Path.cwd())


def write_redirector_config(
    directory: Path, key_file: Path, *, port: int, **redirector: Any
) -> Path:
    """A config file for ``clickrelay redirector`` alone: public listener on
    127.0.0.1:``port``, admin on a port of its own, clicks in SQLite under ``directory``;
    ``redirector`` updates the ``[redirector]`` table."""
    path = directory / "redirector.toml"
    table = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": "127.0.0.1:0",
        "store": f"sqlite:{directory / 'clicks.sqlite3'}",
        **redirector,
    }
    path.write_text(config_text({"tracking": {"key_file": key_file}, "redirector": table}))
    return path


def write_config(
    directory: Path,
    *,
    smtp_port: int = 0,
    http_port: int,
    admin_port: int = 0,
    proxy_admin_port: int = 0,
    name: str = "clickrelay.toml",
    **sections: Mapping[str, Any],
) -> Path:
    """A config file like the quick start's (data under ``directory/clickrelay-data``) on
    the given loopback ports; ``sections`` (``proxy={...}``, ``upstream={...}``, …)
    update the tables of the same name or add tables."""
    tables: dict[str, dict[str, Any]] = {
        "proxy": {
            "listen": f"127.0.0.1:{smtp_port}",
            "admin_listen": f"127.0.0.1:{proxy_admin_port}",
        },
        "upstream": {},
        "tracking": {"base_url": f"http://127.0.0.1:{http_port}"},
        "preflight": {"timeout": 5.0},
        "redirector": {
            "listen": f"127.0.0.1:{http_port}",
            "admin_listen": f"127.0.0.1:{admin_port}",
        },
        "log": {"level": "info"},
    }
    for section, items in sections.items():
        tables.setdefault(section, {}).update(items)
    path = directory / name
    path.write_text(config_text(tables), encoding="utf-8")
    return path
