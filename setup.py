"""Build configuration beyond pyproject.toml: the optional C link scanner.

``smtp_proxy/engine/_speedups.c`` is a faster copy of ``smtp_proxy.engine.html_scan._scan``; the
package works without it (pure Python, same results), so a machine without a C compiler
still installs clickrelay (``optional=True``), only rewriting is slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "smtp_proxy.engine._speedups",
            sources=["smtp_proxy/engine/_speedups.c"],
            depends=["smtp_proxy/engine/_speedups_scan.h"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
