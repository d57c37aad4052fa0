"""The bottom layer both services build on: errors, log lines, tasks, files, settings checks.

Nothing here imports :mod:`smtp_proxy`, :mod:`redirector` or the product layer.
"""

__version__ = "0.1.0"
