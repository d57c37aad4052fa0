"""The optional C extension ``smtp_proxy.engine._speedups``, or None.

It holds C versions of the hottest loops of the rewriting engine (the HTML link scan,
quoted-printable validation and line lookup); every caller keeps its pure-Python path
and gives the same results without it, as aiohttp and yarl do with theirs. It is built
by ``pip install`` when a C compiler is present; ``CLICKRELAY_NO_EXTENSIONS=1`` turns it
off (benchmarks and tests compare the two paths).
"""

from __future__ import annotations

import os
from types import ModuleType

speedups: ModuleType | None
if os.environ.get("CLICKRELAY_NO_EXTENSIONS"):
    speedups = None
else:
    try:
        from smtp_proxy.engine import _speedups as speedups
    except ImportError:  # installed without a C compiler
        speedups = None
