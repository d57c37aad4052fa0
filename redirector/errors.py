"""One exception root for everything clickrelay raises on purpose (aiosmtplib style).

It lives in :mod:`redirector` because imports go one way: ``smtp_proxy`` may import
``redirector``, never the reverse, and both need the root.
"""


class ClickrelayError(Exception):
    """Root of every error clickrelay raises deliberately."""


class ConfigError(ClickrelayError):
    """The configuration is invalid; the message names the file, the key and what was expected."""


class KeyFileError(ClickrelayError):
    """The key file is missing, malformed or has unsafe permissions."""


class TokenError(ClickrelayError):
    """A link token is not one we minted (forged, truncated, tampered, unknown key, bad target)."""
