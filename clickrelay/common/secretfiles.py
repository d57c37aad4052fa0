"""One permission rule for every file that holds a secret.

* Writable by group or others: refused, always — whoever can write it can swap the
  key (mint links, sign mail as the domain) or add themselves as an AUTH user.
* Readable by group or others: refused for secrets whose disclosure lets anyone forge
  what they protect (link keys, DKIM keys: ``refuse_read=GROUP_OR_OTHERS``); for the
  users file (password hashes) world-readable is refused and a group may read it
  (``refuse_read=OTHERS``, as before); a TLS key only gets a warning (``NOBODY``: some
  setups share it with a group such as ``ssl-cert`` on purpose). Readable bits that are
  not refused are logged as a warning.

Each refusal names the file, its mode and the fix (``chmod 600 FILE``). The check runs
where a file is read, on the ``stat`` of that file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from clickrelay.common.errors import ConfigError

_WRITABLE = stat.S_IWGRP | stat.S_IWOTH
_READABLE = stat.S_IRGRP | stat.S_IROTH


class SecretFileError(ConfigError):
    """A secret file whose permissions let other users read or change it."""


#: Values of ``refuse_read``: whose read access makes the file refused.
GROUP_OR_OTHERS = _READABLE
OTHERS = stat.S_IROTH
NOBODY = 0


def permission_problem(mode: int, *, refuse_read: int) -> str | None:
    """Why ``mode`` is refused (``"writable"``/``"readable"``), or None if it is not."""
    if mode & _WRITABLE:
        return "writable"
    if mode & refuse_read:
        return "readable"
    return None


def check_secret_file(
    path: Path,
    what: str,
    *,
    refuse_read: int,
    st: os.stat_result | None = None,
    error: type[Exception] = SecretFileError,
) -> None:
    """Refuse or warn about ``path``'s permissions as the module docstring says.

    ``what`` names the file in messages (``"link key file"``); ``st`` is its stat when
    the caller already has it; ``error`` is the exception type raised (a subclass of
    ClickrelayError the caller's callers expect). A missing file is the caller's to
    report: nothing is raised for it here.
    """
    if st is None:
        try:
            st = path.stat()
        except OSError:
            return
    mode = stat.S_IMODE(st.st_mode)
    problem = permission_problem(mode, refuse_read=refuse_read)
    if problem is not None:
        raise error(
            f"{path}: {what} is {problem} by other users (mode {mode:04o}); run `chmod 600 {path}`"
        )
    if mode & _READABLE:
        # Imported here: a command that reads a well-kept key file needs no logging.
        import logging

        from clickrelay.common.logfmt import log_event

        log_event(
            logging.getLogger("clickrelay"),
            logging.WARNING,
            "secret-file-readable",
            path=str(path),
            what=what,
            mode=f"{mode:04o}",
            hint=f"readable by other users: run `chmod 600 {path}` unless that is intended",
        )
