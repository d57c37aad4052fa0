"""Build configuration beyond pyproject.toml: the optional C link scanner.

``smtp_proxy/_html_scan.c`` is a faster copy of ``smtp_proxy.html_links._scan``; the
package works without it (pure Python, same results), so a machine without a C compiler
still installs clickrelay (``optional=True``), only rewriting is slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "smtp_proxy._html_scan",
            sources=["smtp_proxy/_html_scan.c"],
            depends=["smtp_proxy/_html_scan_impl.h"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
