"""clickrelay's SMTP side: config, MIME/HTML/text rewriting, preflight, relay, server, CLI."""

from redirector import __version__

__all__ = ["__version__"]
