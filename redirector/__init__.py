"""clickrelay's HTTP side: link token codec, click store, bot classification, aiohttp app.

This package never imports :mod:`smtp_proxy`; the proxy imports it to mint tokens.
"""

__version__ = "0.1.0"
