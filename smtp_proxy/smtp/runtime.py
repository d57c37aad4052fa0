"""What ``reload()`` swaps: everything a connection needs that a reload may replace.

Config, keys, TLS context, users and trusted networks live in one frozen
:class:`ProxyRuntime`; connections read the current one through a callable, so a
reload affects the next command without locking.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from redirector.tokens import Keyring
from smtp_proxy.config import ProxySettings
from smtp_proxy.engine.rewriter import TrackingSettings
from smtp_proxy.preflight.monitor import normalize_base_url
from smtp_proxy.smtp.relay_policy import RelayPolicy
from smtp_proxy.smtp.users import UsersFile


@dataclass(frozen=True)
class ProxyRuntime:
    """Everything a connection needs that a reload may replace, as one immutable value."""

    config: ProxySettings
    keyring: Keyring
    relay: RelayPolicy
    users: UsersFile | None
    tls_context: ssl.SSLContext | None
    hostname: str
    #: TrackingSettings by normalised base URL.
    settings: Mapping[str, TrackingSettings] = field(default_factory=dict)

    def tracking_settings(self, base_url: str) -> TrackingSettings:
        found = self.settings.get(normalize_base_url(base_url))
        if found is not None:
            return found
        return TrackingSettings.from_config(self.config, self.keyring, base_url)


def build_settings(config: ProxySettings, keyring: Keyring) -> dict[str, TrackingSettings]:
    """The TrackingSettings of every configured base URL, built once per (re)load."""
    return {
        normalize_base_url(url): TrackingSettings.from_config(config, keyring, url)
        for url in config.tracking.base_urls()
    }
