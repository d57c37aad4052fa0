"""``[redirector] tls_certificates``: PEM files (key + chain) you bring, found by glob.

Read at start and on SIGHUP. Anything unusable is a :class:`ConfigError` naming the key
and the file, so a bad file stops a start (and a reload keeps the certificates in force).
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from clickrelay.common.errors import ConfigError
from redirector.tls.certs import FILE, CertBundle, CertError, parse_bundle

KEY = "[redirector] tls_certificates"


def load_certificate_files(patterns: Sequence[Path]) -> list[CertBundle]:
    """Every bundle the globs name, in pattern then file-name order (blocking I/O).

    A plain path that does not exist is an error; a glob that matches nothing is not (an
    empty directory of certificates is a valid state while ACME covers the rest).
    """
    bundles: list[CertBundle] = []
    for pattern in patterns:
        text = str(pattern)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        for name in matches:
            path = Path(name)
            if path.is_dir():
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"{KEY}: {path}: cannot read certificate file: {exc.strerror}"
                ) from None
            try:
                bundles.append(parse_bundle(data, source=FILE, origin=str(path)))
            except CertError as exc:
                raise ConfigError(f"{KEY}: {path}: {exc}") from None
    return bundles
