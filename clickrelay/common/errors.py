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
    """A link token is not one we minted (forged, truncated, tampered, unknown key, bad target).

    ``reason`` is a short code for logs and metrics (the client always gets the same 404):
    ``malformed``, ``unknown-version``, ``unknown-key``, ``wrong-host`` (a version 2 token
    requested on a host it was not minted for), ``forged`` (fails authentication),
    ``bad-payload``, ``not-http``; minting refusals use ``not-http``, ``out-of-range``,
    ``no-host`` and ``too-long``. ``key_id`` is the token's key id (hex; for a version 2
    token only its first byte is known, e.g. ``0a??????``) for ``unknown-key``.
    """

    def __init__(self, message: str, reason: str = "malformed", key_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.key_id = key_id
