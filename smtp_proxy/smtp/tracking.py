"""The engine's settings from the configuration: tracking settings and DKIM keys.

The rewriting engine takes plain values and reads no file. Here the ``[tracking]`` and
``[dkim]`` sections become :class:`TrackingSettings`, and the DKIM key files are read
once — at start and on reload, like the TLS certificate and the users file — rather than
for every signed message on the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping

from clickrelay.common.errors import ConfigError
from clickrelay.common.secretfiles import GROUP_OR_OTHERS, check_secret_file
from redirector.tokens import Keyring
from smtp_proxy.config import DkimConfig, ProxySettings
from smtp_proxy.engine import sender_domains
from smtp_proxy.engine.dkim_sign import DkimKey, keys_by_domain, normalize_domain, sign_headers
from smtp_proxy.engine.linkrules import LinkPolicy
from smtp_proxy.engine.rewriter import TrackingSettings
from smtp_proxy.preflight.monitor import normalize_base_url

#: Signed once per key when it is loaded: a key dkimpy cannot sign with is a
#: configuration error at start, not a "dkim-error" on every message later.
_PROBE_MESSAGE = b"From: probe@example.invalid\r\nSubject: probe\r\n\r\nprobe\r\n"


def load_dkim_keys(config: DkimConfig) -> dict[str, DkimKey]:
    """Read and check every ``[dkim.domains]`` key file; by normalised signing domain.

    Raises :class:`ConfigError` naming the domain and the key file when one cannot be
    read or is not a key dkimpy can sign with.
    """
    keys: list[DkimKey] = []
    for domain, cfg in config.domains.items():
        where = f"dkim.domains.{domain!r}.key_file: {cfg.key_file}"
        # Whoever can read this key can sign mail as the domain.
        check_secret_file(
            cfg.key_file,
            f'DKIM key of {domain} ([dkim.domains."{domain}"] key_file)',
            refuse_read=GROUP_OR_OTHERS,
        )
        try:
            private_key = cfg.key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read DKIM key: {exc.strerror}") from None
        key = DkimKey(
            domain=normalize_domain(domain),
            selector=cfg.selector,
            private_key=private_key,
            canonicalization=cfg.canonicalization,
            headers=cfg.headers,
        )
        try:
            sign_headers(_PROBE_MESSAGE, key)
        except Exception as exc:  # dkimpy raises several types for a bad key
            raise ConfigError(
                f"{where}: not a usable DKIM private key ({type(exc).__name__}: {exc})"
            ) from None
        keys.append(key)
    return keys_by_domain(keys)


def tracking_settings(
    config: ProxySettings,
    keyring: Keyring,
    dkim_keys: Mapping[str, DkimKey],
    base_url: str | None = None,
) -> TrackingSettings:
    """Settings from ``[tracking]`` plus the loaded DKIM keys; ``base_url`` overrides the
    default (e.g. the sender's domain from :func:`sender_base_url`)."""
    tracking = config.tracking
    urls = [*tracking.base_urls(), *([base_url] if base_url else [])]
    return TrackingSettings(
        base_url=base_url or tracking.base_url,
        keyring=keyring,
        policy=LinkPolicy.from_base_urls(urls, tracking.skip_domains),
        max_link_length=tracking.max_link_length,
        max_url_length=tracking.max_url_length,
        text_links=tracking.text_links,
        track_url_text=tracking.track_url_text,
        dkim_keys=dkim_keys,
        bot_trap=tracking.bot_trap,
        max_parts=tracking.max_parts,
    )


def build_settings(
    config: ProxySettings, keyring: Keyring, dkim_keys: Mapping[str, DkimKey]
) -> dict[str, TrackingSettings]:
    """Settings for every configured tracking base URL, by normalised base URL."""
    return {
        normalize_base_url(url): tracking_settings(config, keyring, dkim_keys, url)
        for url in config.tracking.base_urls()
    }


def utm_values(config: ProxySettings, envelope_from: str, data: bytes) -> dict[str, str]:
    """``[tracking.utm]`` for a message: the defaults, with its sender domain's keys over
    them (sender domain found as for :func:`sender_base_url`); empty when off."""
    utm = config.tracking.utm
    if not utm.enabled:
        return {}
    values = utm.base()
    if utm.sender_domains:
        # The lookup maps sender domain -> itself: it answers which configured domain
        # (or parent domain) the message's sender falls under.
        domains = {d: d for d in utm.sender_domains}
        matched = sender_domains.sender_base_url(domains, "", envelope_from, data)
        if matched:
            values.update(utm.sender_domains[matched])
    return values


def sender_base_url(config: ProxySettings, envelope_from: str, data: bytes) -> str:
    """The tracking base URL for a message: by envelope sender domain, then by the From
    header's domain (``[tracking.sender_domains]``), else ``[tracking] base_url``."""
    tracking = config.tracking
    return sender_domains.sender_base_url(
        tracking.sender_domains, tracking.base_url, envelope_from, data
    )
