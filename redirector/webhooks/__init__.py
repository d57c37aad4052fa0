"""Clicks back to the application: signed webhooks, delivered at least once from the store.

:mod:`.config` the ``[[webhooks]]`` entries, :mod:`.payload` the Standard Webhooks wire
format (pure), :mod:`.delivery` the background delivery (HTTP and the store's cursors).
"""
