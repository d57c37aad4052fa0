"""``clickrelay check`` end to end: the real console script as a subprocess, real DNS on
loopback (tests/support/dns_server.py), real HTTP peers."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from redirector.tokens import load_keyring
from tests.support.config import preflight_config_text
from tests.support.dns_server import DnsServer
from tests.support.preflight_fixtures import healthz_app, serve_app
from tests.support.processes import CLICKRELAY, run_cli

HOST = "links.example.com"
TARGET = "track.example.net"
BASE = f"https://{HOST}"


def write_config(tmp_path: Path, key_file: Path, text_kwargs: dict[str, object]) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(preflight_config_text(key_file=key_file, **text_kwargs), encoding="utf-8")  # type: ignore[arg-type]
    return path


def run_check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("check", "-c", str(config), *extra, cwd=config.parent)


def dns_only_config(tmp_path: Path, key_file: Path, dns: DnsServer, **kwargs: object) -> Path:
    args: dict[str, object] = {
        "base_url": BASE,
        "nameserver": dns.nameserver,
        "cname_target": TARGET,
        "http_probe": False,
        "timeout": 2.0,
    }
    args.update(kwargs)
    return write_config(tmp_path, key_file, args)


def test_ok_exits_0_and_shows_dig_evidence(
    tmp_path: Path, key_file: Path, dns_server: DnsServer
) -> None:
    dns_server.add(HOST, "CNAME", TARGET, ttl=300)
    result = run_check(dns_only_config(tmp_path, key_file, dns_server))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{BASE}: ok" in result.stdout
    assert "links.example.com. 300 IN CNAME track.example.net." in result.stdout
    assert "fix" not in result.stdout


def test_wrong_target_exits_1_with_fix(
    tmp_path: Path, key_file: Path, dns_server: DnsServer
) -> None:
    dns_server.add(HOST, "CNAME", "old.example.org", ttl=600)
    result = run_check(dns_only_config(tmp_path, key_file, dns_server))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL wrong-target" in result.stdout
    assert "links.example.com. 600 IN CNAME old.example.org." in result.stdout
    assert (
        "fix    links.example.com points to old.example.org, expected track.example.net: "
        "change the record to links.example.com. CNAME track.example.net." in result.stdout
    )


def test_missing_cname_exits_1_with_record_to_add(
    tmp_path: Path, key_file: Path, dns_server: DnsServer
) -> None:
    result = run_check(dns_only_config(tmp_path, key_file, dns_server))
    assert result.returncode == 1
    assert "FAIL nxdomain" in result.stdout
    assert (
        "fix    Add this DNS record: links.example.com. CNAME track.example.net." in result.stdout
    )


def test_a_record_instead_of_cname_exits_1_with_record_to_add(
    tmp_path: Path, key_file: Path, dns_server: DnsServer
) -> None:
    dns_server.add(HOST, "A", "127.0.0.7", ttl=120)
    result = run_check(dns_only_config(tmp_path, key_file, dns_server))
    assert result.returncode == 1
    assert "FAIL no-cname" in result.stdout
    assert "links.example.com. 120 IN A 127.0.0.7" in result.stdout
    assert "Add this DNS record: links.example.com. CNAME track.example.net." in result.stdout
    assert "A 127.0.0.7" in result.stdout.split("fix", 1)[1]


def test_json_one_object_per_domain(tmp_path: Path, key_file: Path, dns_server: DnsServer) -> None:
    dns_server.add(HOST, "CNAME", TARGET, ttl=300)
    dns_server.add("links.other.example", "CNAME", "old.example.org")
    config = dns_only_config(
        tmp_path,
        key_file,
        dns_server,
        sender_domains={"other.example": "https://links.other.example"},
    )
    result = run_check(config, "--json")
    assert result.returncode == 1
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["base_url"] for o in objects] == [BASE, "https://links.other.example"]
    assert [o["verdict"] for o in objects] == ["ok", "wrong-target"]
    assert objects[0]["fix"] is None and objects[0]["ok"] is True
    assert objects[0]["dns"]["records"] == [
        {"name": "links.example.com.", "ttl": 300, "type": "CNAME", "value": "track.example.net."}
    ]
    assert "expected track.example.net" in objects[1]["fix"]


def test_servfail_and_timeout_exit_1(tmp_path: Path, key_file: Path, dns_server: DnsServer) -> None:
    dns_server.set_mode(HOST, "servfail")
    result = run_check(dns_only_config(tmp_path, key_file, dns_server, timeout=0.5))
    assert result.returncode == 1
    assert "FAIL dns-servfail" in result.stdout and "fix" in result.stdout
    dns_server.set_mode(HOST, "drop")
    result = run_check(dns_only_config(tmp_path, key_file, dns_server, timeout=0.5))
    assert result.returncode == 1
    assert "FAIL dns-timeout" in result.stdout


def test_missing_key_file_exits_2(tmp_path: Path, dns_server: DnsServer) -> None:
    config = dns_only_config(tmp_path, tmp_path / "no-such-keys", dns_server)
    result = run_check(config)
    assert result.returncode == 2
    assert "key file not found" in result.stderr


async def test_probe_ok_and_key_mismatch_end_to_end(
    tmp_path: Path, key_file: Path, dns_server: DnsServer
) -> None:
    dns_server.add(HOST, "CNAME", TARGET)
    dns_server.add(TARGET, "A", "127.0.0.1")
    keyring = load_keyring(key_file)

    async def check(key_ids: list[str]) -> tuple[int, str]:
        async with serve_app(healthz_app(key_ids)) as port:
            config = dns_only_config(
                tmp_path, key_file, dns_server, base_url=f"http://{HOST}:{port}", http_probe=True
            )
            proc = await asyncio.create_subprocess_exec(
                str(CLICKRELAY),
                "check",
                "-c",
                str(config),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            async with asyncio.timeout(60):
                out, _ = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, out.decode()

    code, out = await check([keyring.current_key_id])
    assert code == 0, out
    assert "probe  GET http://links.example.com:" in out and "via 127.0.0.1" in out
    assert "track.example.net. 300 IN A 127.0.0.1" in out
    code, out = await check(["deadbeef"])
    assert code == 1
    assert "FAIL key-mismatch" in out
    assert f"links are minted with key {keyring.current_key_id}" in out
