"""clickrelay's HTTP side: link token codec, click store, bot classification, aiohttp apps.

This package never imports :mod:`smtp_proxy` or the product layer :mod:`clickrelay`
(only its bottom layer :mod:`clickrelay.common`); the proxy imports it to mint tokens.
"""
