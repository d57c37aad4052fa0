"""The AUTH users file and ``clickrelay adduser``."""

from __future__ import annotations

import io
import os
import stat
import threading
from pathlib import Path

import argon2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickrelay.cli import main
from clickrelay.common.errors import ConfigError
from smtp_proxy.smtp.users import UsersFile, UsersFileError, add_user, username_problem

# Cheap parameters keep the tests fast; verification reads the parameters from the hash.
CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ALICE_HASH = CHEAP.hash("alice-pw")
BOB_HASH = CHEAP.hash("bob-pw")


def write_users(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


# --- loading ------------------------------------------------------------------------------


def test_load_and_verify(tmp_path: Path) -> None:
    path = write_users(
        tmp_path / "users",
        f"# SMTP users\n\nalice:{ALICE_HASH}\n  bob@example.com : {BOB_HASH}  \n",
    )
    users = UsersFile.load(path)
    assert users.users == ("alice", "bob@example.com")
    assert len(users) == 2 and "alice" in users and "carol" not in users
    assert users.verify("alice", "alice-pw")
    assert users.verify(b"alice", b"alice-pw")
    assert users.verify("bob@example.com", "bob-pw")
    assert not users.verify("alice", "bob-pw")
    assert not users.verify("alice", "")
    assert not users.verify("Alice", "alice-pw")  # exact names
    assert not users.verify("carol", "alice-pw")
    assert not users.verify(b"\xff", "alice-pw")


def test_unknown_user_costs_a_real_verification(tmp_path: Path) -> None:
    users = UsersFile.parse(f"alice:{ALICE_HASH}\n")
    assert not users.verify("nobody", "x")
    # the dummy hash has the same cost parameters as the real ones
    assert argon2.extract_parameters(users._dummy[0]) == argon2.extract_parameters(ALICE_HASH)


async def test_averify(tmp_path: Path) -> None:
    users = UsersFile.parse(f"alice:{ALICE_HASH}\n")
    assert await users.averify("alice", "alice-pw")
    assert not await users.averify("alice", "nope")


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o620, 0o666])
def test_unsafe_mode_refused(tmp_path: Path, mode: int) -> None:
    path = write_users(tmp_path / "users", f"alice:{ALICE_HASH}\n", mode)
    with pytest.raises(ConfigError, match=r"other users .*chmod 600"):
        UsersFile.load(path)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
def test_safe_modes_accepted(tmp_path: Path, mode: int) -> None:
    path = write_users(tmp_path / "users", f"alice:{ALICE_HASH}\n", mode)
    assert UsersFile.load(path).users == ("alice",)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read users file.*clickrelay adduser"):
        UsersFile.load(tmp_path / "nope")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_bytes(b"\xffalice:" + ALICE_HASH.encode() + b"\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not UTF-8"):
        UsersFile.load(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice", "expected username:argon2-hash"),
        (":" + "x", "must not be empty"),
        ("alice:", "expected an argon2 hash"),
        ("alice:plaintext", "expected an argon2 hash"),
        ("alice:$argon2id$garbage", "malformed argon2 hash"),
        ("al ice:" + "$argon2id$x", "whitespace"),
        ("al\x01ice:" + "$argon2id$x", "control"),
        (f"alice:{ALICE_HASH}:a@example.com", "not a domain name"),
        (f"alice:{ALICE_HASH}:example..com", "not a domain name"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_users(tmp_path / "users", f"# header\nbob:{BOB_HASH}\n{line}\n")
    with pytest.raises(ConfigError, match=message) as info:
        UsersFile.load(path)
    assert f"{path}:3:" in str(info.value)


def test_duplicate_user(tmp_path: Path) -> None:
    path = write_users(
        tmp_path / "users", f"alice:{ALICE_HASH}\nbob:{BOB_HASH}\nalice:{BOB_HASH}\n"
    )
    with pytest.raises(ConfigError, match=r":3: user 'alice' already defined on line 1"):
        UsersFile.load(path)


def test_allowed_sender_domains_are_an_optional_third_field(tmp_path: Path) -> None:
    path = write_users(
        tmp_path / "users",
        f"alice:{ALICE_HASH}:Example.com, example.org.\nbob:{BOB_HASH}\n",
    )
    users = UsersFile.load(path)
    assert users.domains == {"alice": ("example.com", "example.org")}
    assert users.verify("alice", "alice-pw") and users.verify("bob", "bob-pw")


def test_empty_file_has_no_users(tmp_path: Path) -> None:
    users = UsersFile.load(write_users(tmp_path / "users", "# nobody yet\n"))
    assert len(users) == 0
    assert not users.verify("alice", "alice-pw")


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=40))
def test_any_accepted_username_round_trips(user: str) -> None:
    problem = username_problem(user)
    if problem is not None:
        # refused, or (e.g. a "#" comment, surrounding blanks) not that user
        try:
            users = UsersFile.parse(f"{user}:{ALICE_HASH}\n")
        except UsersFileError:
            return
        assert user not in users
        return
    users = UsersFile.parse(f"{user}:{ALICE_HASH}\n")
    assert users.users == (user,)


# --- add_user -----------------------------------------------------------------------------


def test_add_user_creates_private_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "users"
    assert add_user(path, "alice", "correct horse") is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    users = UsersFile.load(path)
    assert users.verify("alice", "correct horse")
    assert users.hashes["alice"].startswith("$argon2id$")
    assert not list(path.parent.glob(".*.tmp"))


def test_add_user_replaces_and_keeps_other_lines(tmp_path: Path) -> None:
    path = write_users(
        tmp_path / "users",
        f"# keep me\nalice:{ALICE_HASH}\n\nbob:{BOB_HASH}\nalice:{BOB_HASH}\n",
        0o640,
    )
    assert add_user(path, "alice", "new-pw") is True
    lines = path.read_text().splitlines()
    assert lines[0] == "# keep me"
    assert lines[2] == ""
    assert lines[3] == f"bob:{BOB_HASH}"
    assert len(lines) == 4  # the duplicate alice line is gone
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # group read kept
    users = UsersFile.load(path)
    assert users.verify("alice", "new-pw")
    assert not users.verify("alice", "alice-pw")
    assert users.verify("bob", "bob-pw")


def test_add_user_tightens_unsafe_mode(tmp_path: Path) -> None:
    path = write_users(tmp_path / "users", f"bob:{BOB_HASH}\n", 0o666)
    add_user(path, "alice", "pw")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert UsersFile.load(path).users == ("bob", "alice")


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        ("", "pw", "empty"),
        ("a:b", "pw", "':'"),
        ("#alice", "pw", "'#'"),
        ("a b", "pw", "whitespace"),
        ("alice", "", "password must not be empty"),
        ("alice", "pw\nbob:x", "line breaks"),
    ],
)
def test_add_user_rejects_bad_input(tmp_path: Path, user: str, password: str, message: str) -> None:
    path = tmp_path / "users"
    with pytest.raises(UsersFileError, match=message):
        add_user(path, user, password)
    assert not path.exists()


def test_concurrent_add_user_loses_nobody(tmp_path: Path) -> None:
    path = tmp_path / "users"
    names = [f"user{i}" for i in range(4)]
    errors: list[BaseException] = []

    def add(name: str) -> None:
        try:
            add_user(path, name, name + "-pw")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(UsersFile.load(path).users) == names


# --- clickrelay adduser -------------------------------------------------------------------


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_adduser_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pw\r\nignored\n"))
    assert main(["adduser", "--file", str(path), "app@example.com"]) == 0
    assert "added user 'app@example.com'" in capsys.readouterr().out
    assert UsersFile.load(path).verify("app@example.com", "s3cret pw")
    monkeypatch.setattr("sys.stdin", io.StringIO("other\n"))
    assert main(["adduser", "--file", str(path), "app@example.com"]) == 0
    assert "replaced" in capsys.readouterr().out
    assert UsersFile.load(path).verify("app@example.com", "other")


def test_cli_adduser_domains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    args = ["adduser", "--file", str(path), "--domains", "example.com,Example.org", "mailer"]
    assert main(args) == 0
    assert UsersFile.load(path).domains == {"mailer": ("example.com", "example.org")}
    # Replacing the password without --domains drops them: the line is written anew.
    monkeypatch.setattr("sys.stdin", io.StringIO("pw2\n"))
    assert main(["adduser", "--file", str(path), "mailer"]) == 0
    users = UsersFile.load(path)
    assert users.domains == {} and users.verify("mailer", "pw2")
    with pytest.raises(UsersFileError, match="not a domain name"):
        add_user(path, "mailer", "pw", ["user@example.com"])


def test_cli_adduser_uses_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "clickrelay.toml"
    config.write_text('[proxy]\nusers_file = "auth/users"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert main(["adduser", "-c", str(config), "alice"]) == 0
    assert UsersFile.load(tmp_path / "auth" / "users").verify("alice", "pw")


def test_cli_adduser_without_users_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "clickrelay.toml"
    config.write_text("[proxy]\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert main(["adduser", "-c", str(config), "alice"]) == 2
    err = capsys.readouterr().err
    assert "proxy.users_file is not set" in err and "--file" in err


@pytest.mark.parametrize(
    ("stdin", "user", "message"),
    [("\n", "alice", "empty password"), ("", "alice", "empty password"), ("pw\n", "a:b", ":")],
)
def test_cli_adduser_bad_input(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdin: str,
    user: str,
    message: str,
) -> None:
    path = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(["adduser", "--file", str(path), user]) == 2
    assert message in capsys.readouterr().err
    assert not path.exists()


def test_cli_adduser_tty_asks_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users"
    answers = iter(["pw1", "pw2", "same", "same"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("sys.stdin", FakeTty())
    monkeypatch.setattr("getpass.getpass", fake_getpass)
    assert main(["adduser", "--file", str(path), "alice"]) == 2
    assert "do not match" in capsys.readouterr().err
    assert not path.exists()
    assert main(["adduser", "--file", str(path), "alice"]) == 0
    assert len(prompts) == 4
    assert UsersFile.load(path).verify("alice", "same")
    assert os.stat(path).st_mode & 0o077 == 0
