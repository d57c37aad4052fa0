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
from smtp_proxy.engine.dkim_sign import DkimKey
from smtp_proxy.engine.rewriter import TrackingSettings
from smtp_proxy.preflight.monitor import normalize_base_url
from smtp_proxy.smtp.relay_policy import RelayPolicy
from smtp_proxy.smtp.tracking import tracking_settings
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
    #: TrackingSettings by normalised base URL (smtp_proxy.smtp.tracking.build_settings).
    settings: Mapping[str, TrackingSettings] = field(default_factory=dict)
    #: DKIM re-signing keys, read when this runtime was built.
    dkim_keys: Mapping[str, DkimKey] = field(default_factory=dict)

    def tracking_settings(self, base_url: str) -> TrackingSettings:
        found = self.settings.get(normalize_base_url(base_url))
        if found is not None:
            return found
        return tracking_settings(self.config, self.keyring, self.dkim_keys, base_url)
