"""clickrelay's product layer: the ``clickrelay`` command, its config loader and supervisor.

The services live beside it in :mod:`smtp_proxy` and :mod:`redirector`; both build on the
bottom layer :mod:`clickrelay.common`. Imports go one way only:
``clickrelay.common`` ← ``redirector`` ← ``smtp_proxy`` ← the rest of ``clickrelay``.
"""

from clickrelay.common import __version__

__all__ = ["__version__"]
