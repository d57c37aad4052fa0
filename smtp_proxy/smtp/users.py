"""The SMTP AUTH users file: ``username:argon2-hash[:domains]`` per line.

Format (UTF-8)::

    # comments and blank lines are ignored
    alice:$argon2id$v=19$m=65536,t=3,p=4$...
    app@example.com:$argon2id$v=19$m=65536,t=3,p=4$...
    mailer:$argon2id$v=19$m=65536,t=3,p=4$...:example.com,example.org

* The optional third field lists the sender domains the user may have DKIM re-signed
  (``clickrelay adduser --domains``), besides the domain of a user name that is an
  address. Lines without it (every file written before it existed) mean: none.

* A username is everything before the first ``:``; it must be non-empty, without
  whitespace, control characters or ``:`` and must not start with ``#``. Names are
  compared exactly (case-sensitive), as the client sends them in AUTH.
* Hashes are argon2 (argon2-cffi, a well-kept library); ``clickrelay adduser`` writes
  argon2id with the library's default (RFC 9106 low-memory) parameters.
* The file holds password hashes, so like the key file it must not be readable or
  writable by other users (group read is allowed, e.g. ``root:clickrelay 0640``);
  :meth:`UsersFile.load` refuses it otherwise, naming the ``chmod`` to run.

:meth:`UsersFile.verify` costs one argon2 verification (~0.1 s of CPU with the default
parameters) **whether or not the user exists** — unknown users are checked against a
dummy hash of the same cost — so response time does not reveal which names exist. It
blocks: call it in a thread (``await asyncio.to_thread(users.verify, user, password)``)
or use :meth:`UsersFile.averify`.

:func:`add_user` adds or replaces one user, rewriting the file atomically (temporary
file, fsync, rename) with mode 0600, keeping the owner/group and the other lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from clickrelay.common.errors import ConfigError
from clickrelay.common.fsutil import write_atomically

#: Mode bits a users file must not have: other read/write, group write.
_UNSAFE_BITS = stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP
MAX_USERNAME = 256


class UsersFileError(ConfigError):
    """The users file is missing, unsafe or malformed, or a user name/password is invalid."""


def username_problem(user: str) -> str | None:
    """Why ``user`` cannot be a username, or None if it can."""
    if not user:
        return "a username must not be empty"
    if len(user) > MAX_USERNAME:
        return f"a username must be at most {MAX_USERNAME} characters"
    if user.startswith("#"):
        return "a username must not start with '#'"
    if ":" in user:
        return "a username must not contain ':'"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in user):
        return "a username must not contain whitespace or control characters"
    return None


def domain_problem(domain: str) -> str | None:
    """Why ``domain`` cannot be an allowed sender domain, or None if it can."""
    labels = domain.rstrip(".").split(".")
    if not domain or "@" in domain or any(not label for label in labels):
        return f"not a domain name: {domain!r}"
    if any(c.isspace() or c in ":," or ord(c) < 0x20 for c in domain):
        return f"not a domain name: {domain!r}"
    return None


def _split_domains(text: str) -> tuple[str, ...]:
    return tuple(d.strip().lower().rstrip(".") for d in text.split(",") if d.strip())


def _hash_problem(value: str) -> str | None:
    if not value.startswith("$argon2"):
        return "expected an argon2 hash ($argon2id$...) after ':'"
    try:
        argon2.extract_parameters(value)
    except InvalidHashError:
        return "malformed argon2 hash"
    return None


@dataclass(frozen=True)
class UsersFile:
    """The loaded users file: username → argon2 hash."""

    path: Path | None
    hashes: dict[str, str]
    #: The sender domains each user may have DKIM re-signed (the third field).
    domains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _hasher: argon2.PasswordHasher = field(
        default_factory=argon2.PasswordHasher, repr=False, compare=False
    )
    # Lazily made dummy hash for unknown users (a list so the frozen object can fill it).
    _dummy: list[str] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def load(cls, path: Path) -> UsersFile:
        """Read and check the users file; :class:`UsersFileError` names file:line on error."""
        try:
            st = path.stat()
            raw = path.read_bytes()
        except OSError as exc:
            raise UsersFileError(
                f"{path}: cannot read users file: {exc.strerror}"
                " (create it with `clickrelay adduser USER`)"
            ) from None
        if st.st_mode & _UNSAFE_BITS:
            raise UsersFileError(
                f"{path}: users file is readable or writable by other users"
                f" (mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsersFileError(f"{path}: users file is not UTF-8") from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: Path | None = None) -> UsersFile:
        """Parse users-file text (no permission check); errors name ``path:line``."""
        where = str(path) if path is not None else "<users>"
        hashes: dict[str, str] = {}
        domains: dict[str, tuple[str, ...]] = {}
        first_line: dict[str, int] = {}
        for number, user, field_text in _entries(text):
            if field_text is None:
                raise UsersFileError(f"{where}:{number}: expected username:argon2-hash")
            # An argon2 hash holds no ':', so a third field is unambiguous.
            value, _, domain_text = field_text.partition(":")
            allowed = _split_domains(domain_text)
            problem = username_problem(user) or _hash_problem(value)
            problem = problem or next(filter(None, map(domain_problem, allowed)), None)
            if problem:
                raise UsersFileError(f"{where}:{number}: {problem}")
            if user in hashes:
                raise UsersFileError(
                    f"{where}:{number}: user {user!r} already defined on line {first_line[user]}"
                )
            hashes[user] = value
            if allowed:
                domains[user] = allowed
            first_line[user] = number
        return cls(path, hashes, domains)

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(self.hashes)

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, user: object) -> bool:
        return user in self.hashes

    def verify(self, user: str | bytes, password: str | bytes) -> bool:
        """True if ``password`` is ``user``'s. Blocking, ~constant time (see module doc)."""
        if isinstance(user, bytes):
            try:
                user = user.decode("utf-8")
            except UnicodeDecodeError:
                user = ""
        known = self.hashes.get(user)
        target = known if known is not None else self._dummy_hash()
        try:
            ok = self._hasher.verify(target, password)
        except (VerificationError, InvalidHashError):
            return False
        return ok and known is not None

    async def averify(self, user: str | bytes, password: str | bytes) -> bool:
        """:meth:`verify` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.verify, user, password)

    def _dummy_hash(self) -> str:
        if not self._dummy:
            # Same cost as the real hashes (those of the first user), so an unknown user
            # takes as long to refuse as a wrong password.
            hasher = self._hasher
            if self.hashes:
                params = argon2.extract_parameters(next(iter(self.hashes.values())))
                hasher = argon2.PasswordHasher.from_parameters(params)
            self._dummy.append(hasher.hash(secrets.token_hex(16)))
        return self._dummy[0]


def _entries(text: str) -> Iterator[tuple[int, str, str | None]]:
    """(line number, username, hash or None if no ':') for each non-comment line."""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        user, sep, value = stripped.partition(":")
        yield number, user.strip(), (value.strip() if sep else None)


def hash_password(password: str) -> str:
    """An argon2id hash with the library's default parameters."""
    return argon2.PasswordHasher().hash(password)


@contextlib.contextmanager
def _locked_dir(directory: Path) -> Iterator[None]:
    """Serialise concurrent ``adduser`` runs on the same directory (flock)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def add_user(path: Path, user: str, password: str, domains: Sequence[str] = ()) -> bool:
    """Add ``user`` or replace their password (and allowed sender ``domains``); True if an
    existing user was replaced.

    The file is created (mode 0600, parent directories 0700) if missing. Other lines,
    comments included, are kept as they are.
    """
    allowed = _split_domains(",".join(domains))
    for domain in allowed:
        problem = domain_problem(domain)
        if problem:
            raise UsersFileError(problem)
    problem = username_problem(user)
    if problem:
        raise UsersFileError(f"{problem}: {user!r}")
    if not password:
        raise UsersFileError("the password must not be empty")
    if "\n" in password or "\r" in password:
        raise UsersFileError("the password must not contain line breaks")
    new_line = f"{user}:{hash_password(password)}"
    if allowed:
        new_line += ":" + ",".join(allowed)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked_dir(path.parent):
        try:
            st: os.stat_result | None = path.stat()
            old = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            st, old = None, ""
        except UnicodeDecodeError:
            raise UsersFileError(f"{path}: users file is not UTF-8") from None
        except OSError as exc:
            raise UsersFileError(f"{path}: cannot read users file: {exc.strerror}") from None
        # The user's lines, found as UsersFile.parse reads the file.
        theirs = {
            number for number, name, value in _entries(old) if value is not None and name == user
        }
        lines: list[str] = []
        replaced = False
        for number, line in enumerate(old.splitlines(), 1):
            if number in theirs:
                if not replaced:
                    lines.append(new_line)
                replaced = True  # later duplicates are dropped
                continue
            lines.append(line)
        if not replaced:
            lines.append(new_line)
        _write_atomically(path, ("\n".join(lines) + "\n").encode("utf-8"), st)
    return replaced


def _write_atomically(path: Path, data: bytes, old: os.stat_result | None) -> None:
    def keep_ownership(fd: int) -> None:
        if old is not None:
            # Keep the owner/group (e.g. root:clickrelay) and group read if it had it.
            os.fchmod(fd, stat.S_IMODE(old.st_mode) & 0o640 | 0o600)
            with contextlib.suppress(PermissionError):
                os.fchown(fd, old.st_uid, old.st_gid)

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    write_atomically(tmp, path, data, prepare=keep_ownership)
