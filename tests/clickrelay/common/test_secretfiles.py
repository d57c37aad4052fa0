"""Secret files' permissions at the real ``clickrelay`` start, with real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from clickrelay.common.secretfiles import GROUP_OR_OTHERS, NOBODY, OTHERS, permission_problem
from redirector.tokens import new_key_line
from tests.support.config import write_config
from tests.support.net import free_ports
from tests.support.preflight_fixtures import TestCA
from tests.support.processes import ClickrelayProcess, run_cli


def test_the_rule() -> None:
    for refuse in (GROUP_OR_OTHERS, OTHERS, NOBODY):
        assert permission_problem(0o600, refuse_read=refuse) is None
        assert permission_problem(0o400, refuse_read=refuse) is None
        assert permission_problem(0o620, refuse_read=refuse) == "writable"
        assert permission_problem(0o602, refuse_read=refuse) == "writable"
    assert permission_problem(0o640, refuse_read=GROUP_OR_OTHERS) == "readable"
    assert permission_problem(0o604, refuse_read=GROUP_OR_OTHERS) == "readable"
    assert permission_problem(0o640, refuse_read=OTHERS) is None
    assert permission_problem(0o604, refuse_read=OTHERS) == "readable"
    assert permission_problem(0o644, refuse_read=NOBODY) is None


def link_key_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "clickrelay-data" / "keys"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(new_key_line() + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o660, 0o640, 0o620, 0o604])
@pytest.mark.parametrize("command", ["redirector", "proxy"])
def test_link_key_readable_or_writable_by_others_is_refused(
    tmp_path: Path, mode: int, command: str
) -> None:
    key = link_key_file(tmp_path, mode)
    (http_port,) = free_ports(1)
    config = write_config(tmp_path, http_port=http_port)
    result = run_cli(command, "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(key) in result.stderr
    assert f"chmod 600 {key}" in result.stderr
    assert "Traceback" not in result.stderr


def dkim_key(path: Path, mode: int) -> Path:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(mode)
    return path


def add_dkim_section(config: Path, key: Path) -> None:
    # Written by hand: the domain needs a quoted TOML key.
    text = f'\n[dkim.domains."example.com"]\nselector = "mail"\nkey_file = "{key}"\n'
    config.write_text(config.read_text() + text)


@pytest.mark.parametrize("mode", [0o604, 0o640, 0o660])
def test_dkim_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = dkim_key(tmp_path / "dkim.pem", mode)
    link_key_file(tmp_path, 0o600)
    (http_port,) = free_ports(1)
    config = write_config(tmp_path, http_port=http_port)
    add_dkim_section(config, key)
    result = run_cli("proxy", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(key) in result.stderr and 'dkim.domains."example.com"' in result.stderr
    assert f"chmod 600 {key}" in result.stderr


def test_private_keys_at_0600_start_and_a_readable_tls_key_is_a_warning(tmp_path: Path) -> None:
    link_key_file(tmp_path, 0o600)
    key = dkim_key(tmp_path / "dkim.pem", 0o600)
    ca = TestCA(tmp_path, ["127.0.0.1"])
    os.chmod(ca.key_file, 0o644)
    smtp_port, http_port = free_ports(2)
    config = write_config(
        tmp_path,
        smtp_port=smtp_port,
        http_port=http_port,
        proxy={"tls_cert": ca.cert_file, "tls_key": ca.key_file},
    )
    add_dkim_section(config, key)
    with ClickrelayProcess(["proxy", "-c", str(config)], cwd=tmp_path) as proc:
        proc.wait_ready()
        line = proc.wait_for_log("secret-file-readable")
        assert str(ca.key_file) in line and "chmod 600" in line
        assert proc.stop() == 0


def test_group_writable_tls_key_is_refused(tmp_path: Path) -> None:
    link_key_file(tmp_path, 0o600)
    ca = TestCA(tmp_path, ["127.0.0.1"])
    os.chmod(ca.key_file, 0o660)
    (http_port,) = free_ports(1)
    config = write_config(
        tmp_path,
        http_port=http_port,
        proxy={"tls_cert": ca.cert_file, "tls_key": ca.key_file},
    )
    result = run_cli("proxy", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"chmod 600 {ca.key_file}" in result.stderr
