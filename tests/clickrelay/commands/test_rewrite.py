"""``clickrelay rewrite`` and ``clickrelay decode`` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from redirector.tokens import Key, Keyring, load_keyring

HOST = "links.shop.example"

MESSAGE = (
    b"From: Shop <news@shop.example>\r\nTo: r@example.org\r\nSubject: Hi\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b'<p><a href="https://example.com/a?x=1&amp;y=2">a</a> <a href="#top">t</a></p>\r\n'
)
OTHER = (
    b"From: someone@else.example\r\nContent-Type: text/plain\r\n\r\n"
    b"Read https://example.org/post.\r\n"
)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "clickrelay.toml"
    path.write_text(
        '[tracking]\nbase_url = "https://t.example.net"\nkey_file = "data/keys"\n'
        '[tracking.sender_domains]\n"shop.example" = "https://links.shop.example"\n'
    )
    return path


def clickrelay(
    *args: str | Path, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "CLICKRELAY_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "clickrelay", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=120,
        env=env,
        cwd=cwd,
        check=False,
    )


def json_lines(out: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def test_rewrite_one_file_to_stdout_creates_key_file(config: Path, tmp_path: Path) -> None:
    source = tmp_path / "m.eml"
    source.write_bytes(MESSAGE)
    proc = clickrelay("rewrite", "-c", config, source)
    assert proc.returncode == 0, proc.stderr
    key_file = tmp_path / "data" / "keys"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    head, body = proc.stdout.split(b"\r\n\r\n", 1)
    assert head == MESSAGE.split(b"\r\n\r\n", 1)[0]
    # The sender's domain has its own tracking domain.
    assert body.startswith(b'<p><a href="https://links.shop.example/c/')
    assert body.endswith(b'">a</a> <a href="#top">t</a></p>\r\n')
    assert b"rewritten: 1 tracked, 1 skipped" in proc.stderr


def test_rewrite_stdin_and_default_config(tmp_path: Path) -> None:
    proc = clickrelay("rewrite", "-", stdin=OTHER, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(OTHER.split(b"https://")[0])
    assert b"http://127.0.0.1:8080/c/" in proc.stdout
    assert proc.stdout.endswith(b".\r\n")
    assert (tmp_path / "clickrelay-data" / "keys").exists()


def test_explain_then_decode_round_trip(config: Path, tmp_path: Path) -> None:
    source = tmp_path / "m.eml"
    source.write_bytes(MESSAGE)
    proc = clickrelay("rewrite", "-c", config, "--explain", source)
    assert proc.returncode == 0, proc.stderr
    records = json_lines(proc.stdout)
    assert [set(r) for r in records] == [
        {"file", "part", "index", "url", "action", "reason", "tracked_url"}
    ] * 2
    first, second = records
    assert (first["url"], first["action"], first["part"], first["index"]) == (
        "https://example.com/a?x=1&y=2",
        "tracked",
        "1",
        0,
    )
    assert (second["url"], second["action"], second["reason"], second["tracked_url"]) == (
        "#top",
        "skipped",
        "fragment",
        None,
    )
    tracked = str(first["tracked_url"])
    token = tracked.rsplit("/", 1)[1]
    decoded = clickrelay("decode", "-c", config, tracked, token)
    assert decoded.returncode == 0, decoded.stderr
    for record in json_lines(decoded.stdout):
        assert set(record) == {
            *("url", "queue_id", "link", "recipient", "sent_at", "key_id", "version", "host")
        }
        # The bare token too: decode tries the configured tracking hosts (this sender's
        # domain has its own).
        assert (record["version"], record["host"]) == (2, "links.shop.example")
        assert record["url"] == "https://example.com/a?x=1&y=2"
        assert record["link"] == 0
        assert record["recipient"] is None
        assert str(record["queue_id"]).startswith("rewrite-")
        assert str(record["sent_at"]).endswith("+00:00")


def test_several_files_need_outdir(config: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.eml", tmp_path / "b.eml"
    a.write_bytes(MESSAGE)
    b.write_bytes(OTHER)
    proc = clickrelay("rewrite", "-c", config, a, b)
    assert proc.returncode == 2
    assert b"--outdir" in proc.stderr
    out = tmp_path / "out"
    proc = clickrelay("rewrite", "-c", config, "--outdir", out, a, b)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    assert b"https://links.shop.example/c/" in (out / "a.eml").read_bytes()
    assert b"https://t.example.net/c/" in (out / "b.eml").read_bytes()


def test_rewrite_missing_file_is_a_clean_error(config: Path, tmp_path: Path) -> None:
    proc = clickrelay("rewrite", "-c", config, tmp_path / "nope.eml")
    assert proc.returncode == 2
    assert b"nope.eml: cannot read" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_rewrite_leaves_signed_message_alone(config: Path, tmp_path: Path) -> None:
    signed = b"DKIM-Signature: v=1; d=shop.example; s=x; h=from; b=abc; bh=def\r\n" + MESSAGE
    proc = clickrelay("rewrite", "-c", config, "-", stdin=signed)
    assert proc.returncode == 0
    assert proc.stdout == signed
    assert b"dkim-signed" in proc.stderr


def test_decode_reports_foreign_links_and_exits_1(config: Path, tmp_path: Path) -> None:
    source = tmp_path / "m.eml"
    source.write_bytes(MESSAGE)
    explained = json_lines(clickrelay("rewrite", "-c", config, "--explain", source).stdout)
    good = str(explained[0]["tracked_url"])
    assert good.startswith(f"https://{HOST}/c/")  # the sender's own tracking domain
    tampered = good[:-2] + ("00" if not good.endswith("00") else "11")  # (case is no change)
    # A key this key file does not hold, with another first byte (all a version 2 token
    # names of its key).
    ours = load_keyring(config.parent / "data" / "keys").keys[0].key_id
    stranger = Keyring([Key(bytes((ours[0] ^ 0xFF,)) + b"abc", os.urandom(32))])
    foreign = (
        good.split("/c/")[0]
        + "/c/"
        + stranger.seal("https://example.com/", host=HOST, queue_id="Q", link_index=0)
    )
    elsewhere = good.replace(f"https://{HOST}/", "https://links.other.example/")
    lines = f"{good}\n\nhttps://bit.ly/xyz\n{tampered}\n{foreign}\n{elsewhere}\n".encode()
    proc = clickrelay("decode", "-c", config, "-", stdin=lines)
    assert proc.returncode == 1
    records = json_lines(proc.stdout)
    assert len(records) == 5
    assert records[0]["url"] == "https://example.com/a?x=1&y=2"
    assert records[0]["host"] == HOST
    assert records[1] == {"input": "https://bit.ly/xyz", "error": "malformed token"}
    assert records[2]["input"] == tampered and "error" in records[2]
    # Which key is missing: the operator can look for that id in the other key files.
    hint = stranger.keys[0].id_hex[:2]
    assert records[3]["input"] == foreign
    assert str(records[3]["error"]).startswith(f"unknown key {hint}??????")
    # The same token on another host still decodes: decode tries the configured hosts
    # too, and says which one the token is bound to.
    assert records[4]["host"] == HOST


def test_decode_without_key_file_fails_cleanly(config: Path) -> None:
    proc = clickrelay("decode", "-c", config, "abc")
    assert proc.returncode == 2
    assert b"key file not found" in proc.stderr


def test_explain_names_url_text_and_the_config_key_turns_it_off(
    config: Path, tmp_path: Path
) -> None:
    source = tmp_path / "m.eml"
    source.write_bytes(
        MESSAGE.split(b"\r\n\r\n")[0]
        + b'\r\n\r\n<p><a href="https://bank.example/login">bank.example/login</a></p>\r\n'
    )
    (record,) = json_lines(clickrelay("rewrite", "-c", config, "--explain", source).stdout)
    assert (record["action"], record["reason"]) == ("skipped", "url-text")
    config.write_text(
        config.read_text().replace("[tracking]\n", "[tracking]\ntrack_url_text = true\n")
    )
    (record,) = json_lines(clickrelay("rewrite", "-c", config, "--explain", source).stdout)
    assert (record["action"], record["reason"]) == ("tracked", "tracked")


def test_tagged_message_rewritten_then_decoded_shows_tag_and_metadata(
    config: Path, tmp_path: Path
) -> None:
    source = tmp_path / "m.eml"
    source.write_bytes(
        b"X-PM-Tag: spring\r\nX-PM-Metadata-user_id: 42\r\n"
        + MESSAGE.replace(b"https://example.com/a", b"https://example.com/b")
    )
    proc = clickrelay("rewrite", "-c", config, source)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(b"\r\n\r\n", 1)[0] == MESSAGE.split(b"\r\n\r\n", 1)[0]
    start = proc.stdout.index(b"https://links.shop.example/c/")
    link = proc.stdout[start:].split(b'"', 1)[0].decode()
    decoded = json_lines(clickrelay("decode", "-c", config, link).stdout)
    assert decoded[0]["tag"] == "spring"
    assert decoded[0]["metadata"] == {"user_id": "42"}


def test_explain_shows_the_trap_link_when_it_is_on(tmp_path: Path) -> None:
    config = tmp_path / "clickrelay.toml"
    config.write_text(
        '[tracking]\nbase_url = "https://t.example.net"\nkey_file = "data/keys"\nbot_trap = true\n'
    )
    source = tmp_path / "m.eml"
    source.write_bytes(MESSAGE)
    proc = clickrelay("rewrite", "-c", config, "--explain", source)
    assert proc.returncode == 0, proc.stderr
    records = json_lines(proc.stdout)
    traps = [r for r in records if r["action"] == "trap"]
    assert len(traps) == 1
    assert traps[0]["reason"] == "trap-link"
    assert str(traps[0]["tracked_url"]).startswith("https://t.example.net/c/")
    assert b"1 trap link" in proc.stderr
    proc = clickrelay("rewrite", "-c", config, source)
    assert proc.stdout.count(b'aria-hidden="true"') == 1
